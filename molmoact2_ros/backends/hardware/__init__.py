"""Robot hardware backends and the registry the driver picks one from (``make_hardware``).

Only ``mock`` is implemented in this build; the others named by the embodiment schema (mujoco,
ros_topic, feetech, i2rt, franka) fail with a clear HardwareError until their modules land. A backend
module registers a factory with ``register_backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.backends.hardware.mock import MockArm, MockFaults
from molmoact2_ros.core.embodiment import EmbodimentConfig, HardwareBackend
from molmoact2_ros.core.errors import HardwareError

__all__ = [
    "HardwareInterface", "HardwareReading", "MockArm", "MockFaults", "available_backends", "make_hardware",
    "register_backend",
]

Factory = Callable[..., HardwareInterface]

# Names the embodiment schema allows; the registry holds the ones this build can construct.
KNOWN_BACKENDS: tuple[str, ...] = get_args(HardwareBackend)
_REGISTRY: dict[str, Factory] = {"mock": MockArm}


def register_backend(name: str, factory: Factory) -> None:
    """Make ``name`` constructible: ``factory(embodiment, **params)`` returns a HardwareInterface."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def make_hardware(embodiment: EmbodimentConfig, backend: str | None = None) -> HardwareInterface:
    """Build (not connect) the backend ``backend`` (default: the embodiment's ``hardware.backend``).

    The backend gets ``embodiment.hardware.params_for(backend)`` as keyword arguments.
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
    try:
        return factory(embodiment, **params)
    except TypeError as exc:
        raise HardwareError(
            f"{embodiment.source_path or embodiment.name}: hardware.params.{name} has a parameter the "
            f"{name} backend does not take ({exc})"
        ) from exc
