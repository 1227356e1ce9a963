"""Synthetic camera: a deterministic moving pattern for tests, the demo and transport benchmarks.

Frame ``i`` of a camera depends only on ``i``, the resolution and the seed (by default derived from the
camera name, so ``front`` and ``wrist`` differ): a smooth per-seed gradient background, a static
"object" rectangle, and a coloured square moving along a Lissajous path. The top-left corner carries
the frame index as a barcode of 8×8 black/white blocks (aligned to JPEG's 8×8 blocks, so it survives
compression): :func:`frame_index_of` reads it back, which lets tests and benchmarks count lost frames
and match frames across a transport.

Cheap by construction: the background is rendered once; each frame is one copy of it plus the square
and the barcode (~0.1 ms at 640×480).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from molmoact2_ros.backends.cameras.base import CameraReadError, CameraSource, Frame
from molmoact2_ros.core.embodiment import CameraConfig

BARCODE_BLOCK = 8  # pixels per barcode bit, each side
BARCODE_MAX_BITS = 32


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

    def __init__(self, config: CameraConfig, seed: int | None = None, start_index: int = 0):
        super().__init__(config)
        # crc32, not hash(): Python salts str hashes per process, and the pattern must match across runs.
        self.seed = zlib.crc32(config.name.encode()) if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._next_index = int(start_index)
        self._is_open = False
        self._fail_next = 0
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
        self._is_open = True

    def close(self) -> None:
        self._is_open = False

    def read(self) -> Frame:
        if not self._is_open:
            raise CameraReadError(f"camera {self.name!r} (synthetic) is not open: call open() first")
        if self._fail_next > 0:
            self._fail_next -= 1
            self._next_index += 1  # the frame is lost, as with a real camera
            raise CameraReadError(f"camera {self.name!r} (synthetic): injected read failure")
        frame = self.render(self._next_index)
        self._next_index += 1
        return Frame(frame, None)

    # ---- test hooks ----------------------------------------------------------------------------
    def fail_next(self, count: int = 1) -> None:
        """Make the next ``count`` reads raise CameraReadError (fault injection for tests)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._fail_next = int(count)

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
