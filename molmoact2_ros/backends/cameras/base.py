"""The camera source interface every camera backend implements (synthetic, OpenCV, RealSense, sim, bag).

A source is built from one :class:`~molmoact2_ros.core.embodiment.CameraConfig` and yields RGB frames
at that config's resolution. The perception node owns the timing: for an unpaced source (``paced`` is
False: synthetic, a video file) it calls ``read()`` once per frame period; for a paced source
(hardware) ``read()`` blocks until the camera delivers the next frame and the node simply loops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.core.images import PinholeIntrinsics


class CameraError(HardwareError):
    """A camera failed to open or to deliver a frame."""


class CameraOpenError(CameraError):
    """A camera could not be opened (missing device, busy, no permission, missing library)."""


class CameraReadError(CameraError):
    """One read failed (timeout, dropped frame, device gone). The caller counts it and retries."""


class Frame(NamedTuple):
    """One captured frame.

    ``image``: H×W×3 uint8 RGB at the config's resolution, owned by the caller (the source never
    writes into it again). ``capture_time_s``: capture time in seconds on the node's ROS clock (for
    hardware timestamps already mapped to that clock), or None: "stamp with the host clock now".
    """

    image: np.ndarray
    capture_time_s: float | None


class CameraSource(ABC):
    """A camera: ``open()``, then ``read()`` frames, then ``close()``. Also a context manager."""

    #: True if ``read()`` blocks until the camera delivers the next frame; False if the caller paces.
    paced: bool = False

    def __init__(self, config: CameraConfig):
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def height(self) -> int:
        return self.config.height

    @property
    def fps(self) -> float:
        return self.config.fps

    @abstractmethod
    def open(self) -> None:
        """Acquire the device. Raises CameraOpenError with what is missing and how to fix it."""

    @abstractmethod
    def read(self) -> Frame:
        """The next frame. Raises CameraReadError for a failed read (the caller may retry)."""

    @abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice and on a source that never opened."""

    def intrinsics(self) -> PinholeIntrinsics | None:
        """Calibrated intrinsics if the camera reports them; None lets the node use a nominal model."""
        return None

    def __enter__(self) -> CameraSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        return f"{type(self).__name__}({c.name!r}, {c.width}x{c.height}@{c.fps:g}, device={c.device!r})"
