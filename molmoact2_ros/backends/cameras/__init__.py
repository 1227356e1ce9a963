"""Camera backends behind one interface, chosen by the camera config's ``source`` through a registry.

Built in: ``synthetic`` (deterministic moving pattern) and ``opencv`` (V4L2/USB/RTSP/video files).
Backends that need more than a CameraConfig to build (the MuJoCo ``sim`` render shares the
simulation; ``bag`` replay shares a reader) register a factory with :func:`register_camera` from the
code that owns that context. Asking for a source with no registered factory raises ConfigError naming
what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from molmoact2_ros.backends.cameras.base import (
    CameraError,
    CameraOpenError,
    CameraReadError,
    CameraSource,
    Frame,
)
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import ConfigError

CameraFactory = Callable[[CameraConfig], CameraSource]


def _synthetic(config: CameraConfig) -> CameraSource:
    from molmoact2_ros.backends.cameras.synthetic import SyntheticCamera

    return SyntheticCamera(config)


def _opencv(config: CameraConfig) -> CameraSource:
    # Imported here so that a host without OpenCV can still use every other source.
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"camera {config.name!r}: source 'opencv' needs OpenCV, which is not importable ({exc}): "
            "pip install opencv-python-headless") from exc
    from molmoact2_ros.backends.cameras.opencv import OpenCVCamera

    return OpenCVCamera(config)


_FACTORIES: dict[str, CameraFactory] = {"synthetic": _synthetic, "opencv": _opencv}

# What a source without a registered factory is waiting for, to make the error actionable.
_MISSING_HINTS = {
    "realsense": "a RealSense backend (pyrealsense2, pip install 'molmoact2_ros[realsense]') registered "
                 "with register_camera('realsense', factory)",
    "sim": "a running MuJoCo simulation that registers its renderer with register_camera('sim', factory)",
    "bag": "a bag replay that registers its reader with register_camera('bag', factory)",
}


def register_camera(source: str, factory: CameraFactory) -> None:
    """Make ``make_camera`` build ``factory(config)`` for cameras whose source is ``source``."""
    if not source or not callable(factory):
        raise ValueError("register_camera needs a non-empty source name and a callable factory")
    _FACTORIES[source] = factory


def unregister_camera(source: str) -> None:
    """Remove a registered factory (no error if there is none)."""
    _FACTORIES.pop(source, None)


def available_sources() -> list[str]:
    return sorted(_FACTORIES)


def make_camera(config: CameraConfig) -> CameraSource:
    """A (not yet opened) CameraSource for ``config``; ConfigError if its source is unavailable."""
    factory = _FACTORIES.get(config.source)
    if factory is None:
        needs = _MISSING_HINTS.get(config.source, "a camera backend for it")
        raise ConfigError(
            f"camera {config.name!r}: source {config.source!r} is not available in this process; it needs "
            f"{needs}. Available sources: {', '.join(available_sources())}")
    return factory(config)


__all__ = [
    "CameraError",
    "CameraFactory",
    "CameraOpenError",
    "CameraReadError",
    "CameraSource",
    "Frame",
    "available_sources",
    "make_camera",
    "register_camera",
    "unregister_camera",
]
