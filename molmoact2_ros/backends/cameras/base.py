"""The camera source interface every camera backend implements (synthetic, OpenCV, RealSense, sim, bag).

A source is built from one :class:`~molmoact2_ros.core.embodiment.CameraConfig` plus
:class:`CameraOptions` (source-specific settings that are node parameters, not embodiment fields) and
yields RGB frames at that config's resolution. The perception node owns the timing: for an unpaced
source (``paced`` is False: synthetic, a video file, a bag) it calls ``read()`` once per frame period;
for a paced source (hardware, a stream) ``read()`` blocks until the camera delivers the next frame and
the node simply loops.

Capture times travel on the host's wall clock (``time.time()`` seconds, CLOCK_REALTIME): that is what
librealsense's global/system timestamps and V4L2 buffer times map onto without rclpy. The node turns
them into its ROS clock (identical to the wall clock unless ``use_sim_time``). :class:`ClockMapper`
maps a device's own clock (arbitrary epoch) onto the wall clock.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
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


class CameraEndOfStream(CameraError):
    """A finite source (video file or bag without ``loop``) has no more frames. Not retried."""


class Frame(NamedTuple):
    """One captured frame.

    ``image``: H×W×3 uint8 RGB at the config's resolution, owned by the caller (the source never
    writes into it again; it may be a read-only view on the driver's buffer, kept alive by the array).
    ``capture_time_s``: capture time on the host wall clock (``time.time()`` seconds; hardware
    timestamps already mapped onto it), or None: "stamp with the node clock when read() returned".
    ``depth``: H×W uint16 depth in millimetres aligned to ``image`` (RealSense with depth on), else None.
    ``sequence``: the source's own frame counter, if it has one; a gap means frames were dropped
    before they reached us.
    """

    image: np.ndarray
    capture_time_s: float | None
    depth: np.ndarray | None = None
    sequence: int | None = None


@dataclass(frozen=True)
class CameraOptions:
    """Source settings that are node parameters (they apply to every camera of that source)."""

    fourcc: str = ""  # opencv: V4L2 pixel format to request, e.g. "MJPG" ('' = the driver's default)
    loop: bool = True  # video files and bags: start again at the end instead of ending the stream
    depth: bool = False  # realsense: also stream depth aligned to the colour image
    read_timeout_s: float = 1.0  # paced sources: one read waits at most this long for a frame
    bag_topic: str = ""  # bag: topic to replay (the node fills in /cameras/<name>/image_raw)
    restamp: bool = True  # bag: stamp with replay time (True) or keep the recorded header stamps

    def __post_init__(self) -> None:
        if not 0.01 <= self.read_timeout_s <= 60:
            raise ValueError(f"read_timeout_s must be in 0.01..60 s, got {self.read_timeout_s}")
        if self.fourcc and len(self.fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters (e.g. MJPG, YUYV), got {self.fourcc!r}")


class CameraSource(ABC):
    """A camera: ``open()``, then ``read()`` frames, then ``close()``. Also a context manager."""

    #: True if ``read()`` blocks until the camera delivers the next frame; False if the caller paces.
    paced: bool = False
    #: True if ``Frame.capture_time_s`` is already on the node's ROS clock (a bag replayed with its
    #: recorded stamps under ``use_sim_time``) rather than on the host wall clock.
    stamps_on_ros_clock: bool = False

    def __init__(self, config: CameraConfig, options: CameraOptions | None = None):
        self.config = config
        self.options = options or CameraOptions()

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

    @property
    def native_resolution(self) -> tuple[int, int] | None:
        """(width, height) the device actually delivers before any resize; None if not known yet."""
        return None

    @abstractmethod
    def open(self) -> None:
        """Acquire the device. Raises CameraOpenError with what is missing and how to fix it."""

    @abstractmethod
    def read(self) -> Frame:
        """The next frame. Raises CameraReadError for a failed read (the caller may retry) and
        CameraEndOfStream when a finite source is exhausted."""

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


class ClockMapper:
    """Maps a device clock (seconds, arbitrary epoch, the device's rate) onto the host wall clock.

    Each frame gives one sample ``arrival_wall - device_time`` = the true offset plus the transfer
    delay, which is never negative. The smallest sample over a sliding window is therefore the best
    estimate of the offset (the same minimum filter librealsense's global time uses); the window lets
    the estimate follow slow drift between the two clocks. A device clock that jumps backwards (a
    reset after reconnect) restarts the estimate.
    """

    def __init__(self, window: int = 300):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._samples: deque[float] = deque(maxlen=window)
        self._last_device_s: float | None = None

    def reset(self) -> None:
        self._samples.clear()
        self._last_device_s = None

    def to_wall(self, device_s: float, arrival_wall_s: float | None = None) -> float:
        """Wall-clock time of an event the device stamped ``device_s``, seen by us at ``arrival_wall_s``."""
        arrival = time.time() if arrival_wall_s is None else arrival_wall_s
        if self._last_device_s is not None and device_s < self._last_device_s:
            self.reset()
        self._last_device_s = device_s
        self._samples.append(arrival - device_s)
        return device_s + min(self._samples)


def monotonic_to_wall(monotonic_s: float) -> float:
    """A CLOCK_MONOTONIC time (e.g. a V4L2 buffer timestamp) on the wall clock."""
    return monotonic_s + (time.time() - time.monotonic())
