"""Robot hardware backends and the registry the driver picks one from (``make_hardware``).

Built in: ``mock`` and ``ros_topic`` (a ros2_control controller over ROS topics). The others named by
the embodiment schema (mujoco, feetech, i2rt, franka) fail with a clear HardwareError until their
modules land; a backend module registers a factory with ``register_backend``.

``ros_topic`` needs rclpy and the driver node's handle: it is imported only when asked for (this
package stays importable without ROS) and built with ``make_hardware(..., ros_node=node)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.backends.hardware.mock import MockArm, MockFaults
from molmoact2_ros.core.embodiment import EmbodimentConfig, HardwareBackend
from molmoact2_ros.core.errors import HardwareError

__all__ = [
    "HardwareInterface", "HardwareReading", "MockArm", "MockFaults", "available_backends", "make_hardware",
    "register_backend",
]

Factory = Callable[..., HardwareInterface]


def _ros_topic(embodiment: EmbodimentConfig, **params: Any) -> HardwareInterface:
    try:
        from molmoact2_ros.backends.hardware.ros_topic import RosTopicArm
    except ImportError as exc:
        raise HardwareError(f"the ros_topic backend needs rclpy and the ROS message packages ({exc})") from exc
    return RosTopicArm(embodiment, **params)


# Names the embodiment schema allows; the registry holds the ones this build can construct.
KNOWN_BACKENDS: tuple[str, ...] = get_args(HardwareBackend)
_REGISTRY: dict[str, Factory] = {"mock": MockArm, "ros_topic": _ros_topic}
_NEEDS_ROS_NODE: set[str] = {"ros_topic"}


def register_backend(name: str, factory: Factory, *, needs_ros_node: bool = False) -> None:
    """Make ``name`` constructible: ``factory(embodiment, **params)`` returns a HardwareInterface.

    With ``needs_ros_node`` the factory also gets ``node=`` (the driver node) from ``make_hardware``."""
    _REGISTRY[name] = factory
    if needs_ros_node:
        _NEEDS_ROS_NODE.add(name)
    else:
        _NEEDS_ROS_NODE.discard(name)


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def make_hardware(embodiment: EmbodimentConfig, backend: str | None = None, *,
                  ros_node: Any | None = None) -> HardwareInterface:
    """Build (not connect) the backend ``backend`` (default: the embodiment's ``hardware.backend``).

    The backend gets ``embodiment.hardware.params_for(backend)`` as keyword arguments, and backends
    that talk to ROS (``needs_ros_node``) get ``node=ros_node``, the driver node that owns them.
    """
    name = backend or embodiment.hardware.backend
    factory = _REGISTRY.get(name)
    if factory is None:
        if name in KNOWN_BACKENDS:
            raise HardwareError(
                f"hardware backend {name!r} is not available in this build (available: "
                f"{', '.join(available_backends())}); use backend 'mock' or install a build that ships it"
            )
        raise HardwareError(
            f"unknown hardware backend {name!r}: known backends are {', '.join(KNOWN_BACKENDS)}"
        )
    params = embodiment.hardware.params_for(name)
    if name in _NEEDS_ROS_NODE:
        if ros_node is None:
            raise HardwareError(
                f"hardware backend {name!r} talks to ROS topics and is created by the driver node with its "
                "node handle (make_hardware(..., ros_node=node)); run it through molmoact2_driver"
            )
        params["node"] = ros_node
    try:
        return factory(embodiment, **params)
    except TypeError as exc:
        raise HardwareError(
            f"{embodiment.source_path or embodiment.name}: hardware.params.{name} has a parameter the "
            f"{name} backend does not take ({exc})"
        ) from exc
