"""Synthetic camera: a deterministic moving pattern for tests, the demo and transport benchmarks.

Frame ``i`` of a camera depends only on ``i``, the resolution and the seed (by default derived from the
camera name, so ``front`` and ``wrist`` differ): a smooth per-seed gradient background, a static
"object" rectangle, and a coloured square moving along a Lissajous path. The top-left corner carries
the frame index as a barcode of 8×8 black/white blocks (aligned to JPEG's 8×8 blocks, so it survives
compression): :func:`frame_index_of` reads it back, which lets tests and benchmarks count lost frames
and match frames across a transport.

Cheap by construction: the background is rendered once; each frame is one copy of it plus the square
and the barcode (~0.1 ms at 640×480).

Fault injection for tests speaks the same interface a failing camera would: ``fail_next`` (reads
raise CameraReadError), ``drop_next`` (frames silently skipped: a gap in ``Frame.sequence``),
``freeze`` (the same pixels over and over, as a hung driver delivers), ``unplug``/``plug`` (reads fail
and ``open`` raises CameraOpenError until plugged back) and ``pattern`` ``blank``/``saturated`` (what a
capped lens or a blown-out exposure delivers, for the node's preflight).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from molmoact2_ros.backends.cameras.base import (
    CameraOpenError,
    CameraOptions,
    CameraReadError,
    CameraSource,
    Frame,
)
from molmoact2_ros.core.embodiment import CameraConfig

BARCODE_BLOCK = 8  # pixels per barcode bit, each side
BARCODE_MAX_BITS = 32
PATTERNS = ("moving", "blank", "saturated")


def barcode_bits(width: int, height: int) -> int:
    """How many index bits a frame of this size carries (0 if it is too small for any)."""
    if height < BARCODE_BLOCK:
        return 0
    return min(BARCODE_MAX_BITS, width // BARCODE_BLOCK)


def frame_index_of(frame: np.ndarray) -> int:
    """The frame index a SyntheticCamera wrote into ``frame`` (modulo 2**bits for narrow frames).

    Reads the block centres with a mid-grey threshold, so it survives JPEG. Raises ValueError for a
    frame too small to carry a barcode.
    """
    h, w = frame.shape[:2]
    bits = barcode_bits(w, h)
    if bits == 0:
        raise ValueError(f"a {w}x{h} frame is too small to carry a frame index barcode")
    c = BARCODE_BLOCK // 2
    centres = frame[c, c::BARCODE_BLOCK][:bits].astype(np.int32).mean(axis=1)
    return int(sum(1 << b for b, v in enumerate(centres) if v >= 128))


class SyntheticCamera(CameraSource):
    """Deterministic moving pattern at ``config``'s resolution; ``read()`` returns frames 0, 1, 2, ..."""

    paced = False  # renders instantly; the node paces it at config.fps

    def __init__(self, config: CameraConfig, seed: int | None = None, start_index: int = 0,
                 options: CameraOptions | None = None):
        super().__init__(config, options)
        # crc32, not hash(): Python salts str hashes per process, and the pattern must match across runs.
        self.seed = zlib.crc32(config.name.encode()) if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._next_index = int(start_index)
        self._is_open = False
        self._fail_next = 0
        self._drop_next = 0
        self._frozen: np.ndarray | None = None
        self._freeze_requested = False
        self._unplugged = False
        self.pattern = "moving"
        self.opens = 0
        h, w = config.height, config.width
        self._side = max(2, min(h, w) // 6)
        self._square_colour = self._rng.integers(40, 256, size=3).astype(np.uint8)
        self._square_colour[self._rng.integers(0, 3)] = 255  # at least one saturated channel: visible
        self._periods = (float(self._rng.uniform(60, 120)), float(self._rng.uniform(40, 90)))
        self._phase = float(self._rng.uniform(0, 2 * math.pi))
        self._background = self._render_background()
        self._bits = barcode_bits(w, h)

    # ---- CameraSource ----------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def next_index(self) -> int:
        return self._next_index

    def open(self) -> None:
        if self._unplugged:
            raise CameraOpenError(f"camera {self.name!r} (synthetic): not connected (unplugged by a test)")
        self._is_open = True
        self.opens += 1

    def close(self) -> None:
        self._is_open = False

    def read(self) -> Frame:
        if not self._is_open:
            raise CameraReadError(f"camera {self.name!r} (synthetic) is not open: call open() first")
        if self._unplugged:
            raise CameraReadError(f"camera {self.name!r} (synthetic): device disconnected")
        if self._fail_next > 0:
            self._fail_next -= 1
            self._next_index += 1  # the frame is lost, as with a real camera
            raise CameraReadError(f"camera {self.name!r} (synthetic): injected read failure")
        if self._drop_next > 0:
            self._next_index += self._drop_next  # lost upstream: only the sequence shows it
            self._drop_next = 0
        index = self._next_index
        self._next_index += 1
        if self._freeze_requested:
            if self._frozen is None:
                self._frozen = self.render(index)
            # A hung driver hands out the same buffer: same pixels, and (as many do) no new counter.
            return Frame(self._frozen.copy(), None)
        return Frame(self.render(index), None, sequence=index)

    # ---- test hooks ----------------------------------------------------------------------------
    def fail_next(self, count: int = 1) -> None:
        """Make the next ``count`` reads raise CameraReadError (fault injection for tests)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._fail_next = int(count)

    def drop_next(self, count: int = 1) -> None:
        """Skip ``count`` frames before the next read, as frames lost on the USB bus would be."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._drop_next = int(count)

    def freeze(self, frozen: bool = True) -> None:
        """Deliver the same image on every read until ``freeze(False)`` (a hung driver)."""
        self._freeze_requested = bool(frozen)
        if not frozen:
            self._frozen = None

    def unplug(self) -> None:
        """Reads fail and open() raises CameraOpenError until :meth:`plug`."""
        self._unplugged = True

    def plug(self) -> None:
        self._unplugged = False

    def set_pattern(self, pattern: str) -> None:
        """``moving`` (default), ``blank`` (uniform black) or ``saturated`` (uniform white)."""
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
        self.pattern = pattern

    # ---- rendering -----------------------------------------------------------------------------
    def square_position(self, index: int) -> tuple[int, int]:
        """Top-left (row, col) of the moving square in frame ``index``."""
        h, w, s = self.config.height, self.config.width, self._side
        px, py = self._periods
        u = 0.5 + 0.5 * math.sin(2 * math.pi * index / px + self._phase)
        v = 0.5 + 0.5 * math.sin(2 * math.pi * index / py)
        return round(v * (h - s)), round(u * (w - s))

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as a new H×W×3 uint8 RGB array (a pure function of index and seed)."""
        if self.pattern != "moving":
            value = 0 if self.pattern == "blank" else 255
            return np.full((self.config.height, self.config.width, 3), value, np.uint8)
        frame = self._background.copy()
        r, c = self.square_position(index)
        frame[r:r + self._side, c:c + self._side] = self._square_colour
        if self._bits:
            values = ((index >> np.arange(self._bits)) & 1).astype(np.uint8) * 255
            strip = np.repeat(values, BARCODE_BLOCK)  # one row of the barcode
            frame[:BARCODE_BLOCK, :strip.size] = strip[None, :, None]
        return frame

    def _render_background(self) -> np.ndarray:
        h, w = self.config.height, self.config.width
        base = self._rng.uniform(30, 200, size=3)
        slope_x = self._rng.uniform(-60, 60, size=3)
        slope_y = self._rng.uniform(-60, 60, size=3)
        x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        bg = base.astype(np.float32) + slope_x.astype(np.float32) * x + slope_y.astype(np.float32) * y
        bg = np.clip(bg, 0, 255).astype(np.uint8)
        # A static "object" on the "table": gives the policy something fixed to look at.
        oh, ow = max(1, h // 5), max(1, w // 4)
        r0 = int(self._rng.integers(h // 2, max(h // 2 + 1, h - oh)))
        c0 = int(self._rng.integers(0, max(1, w - ow)))
        bg[r0:r0 + oh, c0:c0 + ow] = self._rng.integers(0, 256, size=3).astype(np.uint8)
        return np.ascontiguousarray(bg)
