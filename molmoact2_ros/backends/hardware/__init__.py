"""Robot hardware backends and the registry the driver picks one from (``make_hardware``).

Built in: ``mock``, ``ros_topic`` (a ros2_control controller over ROS topics) and the real arm
families ``feetech`` (SO-100/101 through LeRobot's Feetech bus), ``i2rt`` (YAM bimanual, DM motors on
CAN) and ``franka`` (pylibfranka). Each real family module is imported only when asked for, so a robot
PC installs only its own arm's extra (``so100``, ``yam``, ``franka``) and this package stays importable
without any of them. A missing library is a HardwareError naming the extra to install.

``emulate=True`` (driver parameter ``emulate_hardware``, ``--hardware emulated`` in the demo) builds a
real family's backend against an emulated device in the same process (a Feetech servo bus on a
pseudo-terminal, DM motors on python-can's ``virtual`` bus, a stand-in at the pylibfranka boundary): the
real hardware library runs unmodified, nothing physical is touched.

``ros_topic`` needs rclpy and the driver node's handle: it is built with
``make_hardware(..., ros_node=node)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, get_args

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.backends.hardware.mock import MockArm, MockFaults
from molmoact2_ros.core.embodiment import EmbodimentConfig, HardwareBackend
from molmoact2_ros.core.errors import HardwareError

__all__ = [
    "EMULATABLE", "REAL_FAMILIES", "HardwareInterface", "HardwareReading", "MockArm", "MockFaults",
    "available_backends", "emulated_backend_for", "make_hardware", "register_backend",
]

Factory = Callable[..., HardwareInterface]


def _ros_topic(embodiment: EmbodimentConfig, **params: Any) -> HardwareInterface:
    try:
        from molmoact2_ros.backends.hardware.ros_topic import RosTopicArm
    except ImportError as exc:
        raise HardwareError(f"the ros_topic backend needs rclpy and the ROS message packages ({exc})") from exc
    return RosTopicArm(embodiment, **params)


def _mujoco(embodiment: EmbodimentConfig, **params: Any) -> HardwareInterface:
    from molmoact2_ros.backends.hardware.mujoco import MujocoArm  # rclpy: imported on use, like ros_topic

    return MujocoArm(embodiment, **params)


# Real arm families: backend name -> (module, class, the setup.py extra that installs its library).
REAL_FAMILIES: dict[str, tuple[str, str, str]] = {
    "feetech": ("molmoact2_ros.backends.hardware.feetech", "FeetechArm", "so100"),
    "i2rt": ("molmoact2_ros.backends.hardware.i2rt", "I2rtArm", "yam"),
    "franka": ("molmoact2_ros.backends.hardware.franka", "FrankaArm", "franka"),
}


def _family(name: str) -> Factory:
    module, cls, extra = REAL_FAMILIES[name]

    def factory(embodiment: EmbodimentConfig, **params: Any) -> HardwareInterface:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise HardwareError(
                f"the {name} backend needs its hardware library ({exc}); install the extra: "
                f"pip install 'molmoact2_ros[{extra}]'"
            ) from exc
        return getattr(mod, cls)(embodiment, **params)

    return factory


# Names the embodiment schema allows; the registry holds the ones this build can construct.
KNOWN_BACKENDS: tuple[str, ...] = get_args(HardwareBackend)
_REGISTRY: dict[str, Factory] = {"mock": MockArm, "ros_topic": _ros_topic, "mujoco": _mujoco,
                                 **{name: _family(name) for name in REAL_FAMILIES}}
_NEEDS_ROS_NODE: set[str] = {"ros_topic", "mujoco"}
# Backends that can run against an emulated device (make_hardware(..., emulate=True)).
EMULATABLE: frozenset[str] = frozenset(REAL_FAMILIES)


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


def emulated_backend_for(embodiment: EmbodimentConfig) -> str:
    """The real arm family whose emulated device stands in for ``embodiment``'s hardware: the embodiment's
    own backend if it is one, else the one real family it has parameters for."""
    if embodiment.hardware.backend in EMULATABLE:
        return embodiment.hardware.backend
    families = [name for name in REAL_FAMILIES if name in embodiment.hardware.params]
    if len(families) != 1:
        raise HardwareError(
            f"{embodiment.source_path or embodiment.name}: no single real hardware family to emulate "
            f"(hardware.params names {', '.join(families) or 'none'} of {', '.join(REAL_FAMILIES)}); "
            "add hardware.params.<family> or pick the backend explicitly"
        )
    return families[0]


def make_hardware(embodiment: EmbodimentConfig, backend: str | None = None, *,
                  ros_node: Any | None = None, emulate: bool = False) -> HardwareInterface:
    """Build (not connect) the backend ``backend`` (default: the embodiment's ``hardware.backend``).

    The backend gets ``embodiment.hardware.params_for(backend)`` as keyword arguments, and backends
    that talk to ROS (``needs_ros_node``) get ``node=ros_node``, the driver node that owns them. With
    ``emulate`` a real arm family runs against its emulated device (``emulate=True`` to the backend).
    """
    name = backend or embodiment.hardware.backend
    if emulate and name not in EMULATABLE:
        raise HardwareError(
            f"hardware backend {name!r} has no emulated device (emulated: {', '.join(sorted(EMULATABLE))}); "
            "drop the emulate option or pick one of those backends"
        )
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
    if emulate:
        params["emulate"] = True
    try:
        return factory(embodiment, **params)
    except TypeError as exc:
        raise HardwareError(
            f"{embodiment.source_path or embodiment.name}: hardware.params.{name} has a parameter the "
            f"{name} backend does not take ({exc})"
        ) from exc
