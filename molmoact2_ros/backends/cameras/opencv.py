"""OpenCV camera source: V4L2/USB devices, RTSP/HTTP streams and video files through cv2.VideoCapture.

``device`` in the camera config: ``""`` (index 0), an index (``"2"``), a device path (``/dev/video0``),
a URL (``rtsp://...``) or a video file. Video files loop at the end and are paced by the node at the
config's fps; live devices and streams are read as fast as they deliver (``read()`` blocks). Frames are
converted to RGB and resized to the configured resolution when the device ignores the requested mode.
Capture times come from the host clock: V4L2's buffer timestamps are on CLOCK_MONOTONIC, not ROS time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molmoact2_ros.backends.cameras.base import CameraOpenError, CameraReadError, CameraSource, Frame
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.images import resize

try:
    import cv2
except ImportError:  # pragma: no cover - the registry reports this before constructing the source
    cv2 = None  # type: ignore[assignment]


def parse_device(device: str) -> int | str:
    """Config ``device`` to what cv2.VideoCapture takes: an int index, or a path/URL string."""
    d = device.strip()
    if d == "":
        return 0
    if d.isdigit():
        return int(d)
    return d


class OpenCVCamera(CameraSource):
    """A cv2.VideoCapture: devices and streams (paced by the device) or video files (looped)."""

    def __init__(self, config: CameraConfig):
        if cv2 is None:
            raise CameraOpenError(
                f"camera {config.name!r}: source 'opencv' needs OpenCV: pip install opencv-python-headless")
        super().__init__(config)
        self._target: int | str = parse_device(config.device)
        self.is_file = isinstance(self._target, str) and Path(self._target).is_file()
        # A device delivers frames at its own rate (read blocks); a file would be read at disk speed.
        self.paced = not self.is_file
        self._cap: Any = None

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def open(self) -> None:
        if self._cap is not None:
            return
        cap = cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            hint = ("check that the file exists and is a video OpenCV can decode" if self.is_file else
                    "check that it exists (v4l2-ctl --list-devices), that you may read it (video group), "
                    "and that no other process holds it")
            raise CameraOpenError(f"camera {self.name!r}: OpenCV cannot open {self._target!r}: {hint}")
        if not self.is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            # Keep the driver queue short so a read returns the newest frame, not one from the past.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> Frame:
        if self._cap is None:
            raise CameraReadError(f"camera {self.name!r} (opencv) is not open: call open() first")
        ok, bgr = self._cap.read()
        if not ok and self.is_file:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the file
            ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraReadError(f"camera {self.name!r}: no frame from {self._target!r}")
        conversion = cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB
        rgb = cv2.cvtColor(bgr, conversion)
        return Frame(resize(rgb, self.width, self.height), None)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
