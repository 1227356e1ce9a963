"""Camera backends behind one interface, chosen by the camera config's ``source`` through a registry.

Built in: ``synthetic`` (deterministic moving pattern), ``opencv`` (V4L2/USB/RTSP/video files),
``realsense`` (pyrealsense2: devices by serial number, or a recording) and ``bag`` (frames from a
rosbag2 through the ``rosbags`` package). A backend that needs more than a config to build (the MuJoCo
``sim`` render shares the simulation) registers a factory with :func:`register_camera` from the code
that owns that context. Asking for a source whose library is missing, or that has no registered
factory, raises ConfigError naming what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from molmoact2_ros.backends.cameras.base import (
    CameraEndOfStream,
    CameraError,
    CameraOpenError,
    CameraOptions,
    CameraReadError,
    CameraSource,
    ClockMapper,
    Frame,
)
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import ConfigError

CameraFactory = Callable[[CameraConfig, CameraOptions], CameraSource]


def _synthetic(config: CameraConfig, options: CameraOptions) -> CameraSource:
    from molmoact2_ros.backends.cameras.synthetic import SyntheticCamera

    return SyntheticCamera(config, options=options)


def _require(config: CameraConfig, module: str, what: str, install: str) -> None:
    # Imported here so that a host without one camera library can still use every other source.
    try:
        __import__(module)
    except ImportError as exc:
        raise ConfigError(
            f"camera {config.name!r}: source {config.source!r} needs {what}, which is not importable "
            f"({exc}): {install}") from exc


def _opencv(config: CameraConfig, options: CameraOptions) -> CameraSource:
    _require(config, "cv2", "OpenCV", "pip install opencv-python-headless")
    from molmoact2_ros.backends.cameras.opencv import OpenCVCamera

    return OpenCVCamera(config, options)


def _realsense(config: CameraConfig, options: CameraOptions) -> CameraSource:
    _require(config, "pyrealsense2", "pyrealsense2",
             "pip install 'molmoact2_ros[realsense]' (on Debian/Ubuntu also apt-get install libusb-1.0-0)")
    from molmoact2_ros.backends.cameras.realsense import RealSenseCamera

    return RealSenseCamera(config, options)


def _bag(config: CameraConfig, options: CameraOptions) -> CameraSource:
    _require(config, "rosbags", "the rosbags package (bag replay)", "pip install 'molmoact2_ros[bags]'")
    from molmoact2_ros.backends.cameras.bag import BagCamera

    return BagCamera(config, options)


_FACTORIES: dict[str, CameraFactory] = {
    "synthetic": _synthetic, "opencv": _opencv, "realsense": _realsense, "bag": _bag,
}

# What a source without a registered factory is waiting for, to make the error actionable.
_MISSING_HINTS = {
    "sim": "a running MuJoCo simulation that registers its renderer with register_camera('sim', factory)",
}


def register_camera(source: str, factory: CameraFactory) -> None:
    """Make ``make_camera`` build ``factory(config, options)`` for cameras whose source is ``source``."""
    if not source or not callable(factory):
        raise ValueError("register_camera needs a non-empty source name and a callable factory")
    _FACTORIES[source] = factory


def unregister_camera(source: str) -> None:
    """Remove a registered factory (no error if there is none)."""
    _FACTORIES.pop(source, None)


def available_sources() -> list[str]:
    return sorted(_FACTORIES)


def make_camera(config: CameraConfig, options: CameraOptions | None = None) -> CameraSource:
    """A (not yet opened) CameraSource for ``config``; ConfigError if its source is unavailable."""
    factory = _FACTORIES.get(config.source)
    if factory is None:
        needs = _MISSING_HINTS.get(config.source, "a camera backend for it")
        raise ConfigError(
            f"camera {config.name!r}: source {config.source!r} is not available in this process; it needs "
            f"{needs}. Available sources: {', '.join(available_sources())}")
    return factory(config, options or CameraOptions())


__all__ = [
    "CameraEndOfStream",
    "CameraError",
    "CameraFactory",
    "CameraOpenError",
    "CameraOptions",
    "CameraReadError",
    "CameraSource",
    "ClockMapper",
    "Frame",
    "available_sources",
    "make_camera",
    "register_camera",
    "unregister_camera",
]
