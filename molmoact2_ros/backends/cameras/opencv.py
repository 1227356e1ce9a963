"""OpenCV camera source: V4L2/USB devices, RTSP/HTTP streams and video files through cv2.VideoCapture.

``device`` in the camera config: ``""`` (index 0), an index (``"2"``), a device path (``/dev/video0``),
a URL (``rtsp://...``) or a video file. Devices open through the V4L2 backend so that the requested
FOURCC (``CameraOptions.fourcc``, e.g. MJPG to get 30 fps at 1280×720 over USB 2), resolution and fps
apply; live devices and streams are read as fast as they deliver (``read()`` blocks). Video files are
paced by the node at the config's fps and loop at the end unless ``CameraOptions.loop`` is off, in
which case the stream ends (CameraEndOfStream). Frames are converted to RGB and resized to the
configured resolution when the device ignores the requested mode; ``native_resolution`` reports what it
actually delivers, so the node's preflight can refuse a wrong aspect ratio.

Capture times: for V4L2 devices the driver's buffer timestamp (CLOCK_MONOTONIC, taken when the frame
was captured, before USB transfer and decoding) mapped onto the wall clock; for streams and files the
node stamps the frame when ``read()`` returns.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from molmoact2_ros.backends.cameras.base import (
    CameraEndOfStream,
    CameraOpenError,
    CameraOptions,
    CameraReadError,
    CameraSource,
    Frame,
    monotonic_to_wall,
)
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.images import resize

try:
    import cv2
except ImportError:  # pragma: no cover - the registry reports this before constructing the source
    cv2 = None  # type: ignore[assignment]

# A V4L2 timestamp further than this from "now" is not on CLOCK_MONOTONIC (some drivers use the
# realtime clock or nothing): fall back to stamping at read().
MAX_PLAUSIBLE_DRIVER_AGE_S = 1.0


def parse_device(device: str) -> int | str:
    """Config ``device`` to what cv2.VideoCapture takes: an int index, or a path/URL string."""
    d = device.strip()
    if d == "":
        return 0
    if d.isdigit():
        return int(d)
    return d


def is_v4l2_device(target: int | str) -> bool:
    return sys.platform.startswith("linux") and (isinstance(target, int) or str(target).startswith("/dev/video"))


def driver_capture_time(pos_msec: float, now_monotonic: float | None = None) -> float | None:
    """A V4L2 buffer timestamp (ms on CLOCK_MONOTONIC) on the wall clock; None if it is implausible."""
    if pos_msec <= 0:
        return None
    t = pos_msec / 1000.0
    now = time.monotonic() if now_monotonic is None else now_monotonic
    if not 0.0 <= now - t < MAX_PLAUSIBLE_DRIVER_AGE_S:
        return None
    return monotonic_to_wall(t)


class OpenCVCamera(CameraSource):
    """A cv2.VideoCapture: devices and streams (paced by the device) or video files (paced by the node)."""

    def __init__(self, config: CameraConfig, options: CameraOptions | None = None):
        if cv2 is None:
            raise CameraOpenError(
                f"camera {config.name!r}: source 'opencv' needs OpenCV: pip install opencv-python-headless")
        super().__init__(config, options)
        self._target: int | str = parse_device(config.device)
        self.is_file = isinstance(self._target, str) and Path(self._target).is_file()
        self.is_v4l2 = is_v4l2_device(self._target)
        # A device delivers frames at its own rate (read blocks); a file would be read at disk speed.
        self.paced = not self.is_file
        self._cap: Any = None
        self._native: tuple[int, int] | None = None

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    @property
    def native_resolution(self) -> tuple[int, int] | None:
        return self._native

    def open(self) -> None:
        if self._cap is not None:
            return
        cap = cv2.VideoCapture(self._target, cv2.CAP_V4L2) if self.is_v4l2 else cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            hint = ("check that the file exists and is a video OpenCV can decode" if self.is_file else
                    "check that it exists (v4l2-ctl --list-devices), that you may read it (video group), "
                    "and that no other process holds it")
            raise CameraOpenError(f"camera {self.name!r}: OpenCV cannot open {self._target!r}: {hint}")
        if not self.is_file:
            if self.options.fourcc:
                # Set before the size: V4L2 picks the frame sizes offered for the requested format.
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.options.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            # Keep the driver queue short so a read returns the newest frame, not one from the past.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._native = (w, h) if w > 0 and h > 0 else None
        self._cap = cap

    def read(self) -> Frame:
        if self._cap is None:
            raise CameraReadError(f"camera {self.name!r} (opencv) is not open: call open() first")
        ok, bgr = self._cap.read()
        if not ok and self.is_file:
            if not self.options.loop:
                raise CameraEndOfStream(f"camera {self.name!r}: end of video file {self._target!r}")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraReadError(f"camera {self.name!r}: no frame from {self._target!r}")
        captured = driver_capture_time(self._cap.get(cv2.CAP_PROP_POS_MSEC)) if self.is_v4l2 else None
        self._native = (bgr.shape[1], bgr.shape[0])
        conversion = cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB
        rgb = cv2.cvtColor(bgr, conversion)
        return Frame(resize(rgb, self.width, self.height), captured)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
