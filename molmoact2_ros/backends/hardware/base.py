"""The robot hardware interface every backend implements (mock, mujoco, ros_topic, feetech, ...).

Small on purpose, like LeRobot's robot classes: connect, read the measured joints, write a command and
get back what was actually sent, disconnect. Everything is in the embodiment's joint order and robot
units (``core.embodiment``). Backends raise ``HardwareError`` with an actionable message; the driver
counts failures and latches a fault in the safety stack. No rclpy here.

Torque (or the motors' enable) goes on with the first ``write`` after ``connect`` or ``relax``, so a
robot is energised only once the driver really commands it (active, out of shadow mode), never by
``connect``. Optional capabilities: ``ready`` (False while a connected backend has nothing to measure
yet, e.g. before a ROS robot's first joint states), ``relax`` (stop holding: torque off or damping, for
``safety.fault_action: relax``), ``relax_on_stop`` (relax instead of holding when the driver stops),
``recover`` (clear the robot's own latched error on ``~/reset``) and ``needs_heartbeat`` (the motors fall
into damping without a command every few hundred ms, like YAM's DM motors: the driver then commands the
measured or last commanded pose every tick even while idle or holding). A backend returns what it
measures as it comes; malformed or non-finite values are judged by the safety stack, the same for
every backend. Backends that talk to ROS topics (``ros_topic``) set ``needs_ros_node`` and get the
driver node's handle from ``make_hardware(..., ros_node=node)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import HardwareError


@dataclass
class HardwareReading:
    """One measurement: positions (dof,) in robot units; per-joint velocities (robot units / s) and
    temperatures where the hardware reports them."""

    positions: np.ndarray
    temperatures_c: np.ndarray | None = None
    velocities: np.ndarray | None = None


class HardwareInterface(ABC):
    """One robot (or one bimanual station) behind the driver's safety stack."""

    #: registry name of the backend ("mock", "feetech", ...)
    name: str = "abstract"
    #: constructed with ``node=<rclpy node>`` by ``make_hardware`` (the driver node's handle)
    needs_ros_node: bool = False

    def __init__(self, embodiment: EmbodimentConfig):
        self.embodiment = embodiment
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def ready(self) -> bool:
        """Connected and able to measure. Backends that wait for their first data override this."""
        return self._connected

    @property
    def supports_relax(self) -> bool:
        """Whether ``relax`` can make the robot compliant; the driver holds on faults otherwise."""
        return False

    @property
    def needs_heartbeat(self) -> bool:
        """Whether the motors need a command every tick even when nothing moves (damping otherwise)."""
        return False

    @property
    def relax_on_stop(self) -> bool:
        """Whether the driver relaxes the robot (torque off) when it stops driving it: lifecycle deactivate,
        shutdown, Ctrl-C, SIGTERM (after braking to a stop), instead of holding the last command. Real
        servo arms make it configurable (``torque_off_on_stop``); requires ``supports_relax``."""
        return False

    @property
    def state_topic(self) -> str | None:
        """The ROS topic this backend reads joint states from, if any (the driver then does not
        republish its measurement on that topic)."""
        return None

    def relax(self) -> None:
        """Stop holding position (torque off / damping). Raises HardwareError where unsupported."""
        raise HardwareError(f"{self.name} backend cannot relax; the driver holds on faults instead")

    def recover(self) -> None:
        """Clear the robot's own latched error (Franka: automatic error recovery) so that motion can resume.
        The driver calls it on ``~/reset`` before clearing its own fault; raises HardwareError if the robot
        cannot recover. Default: nothing latched in the hardware to clear."""
        return None

    @property
    def max_temperature_c(self) -> float | None:
        """Above this reported temperature the driver latches an over-temperature fault (None: unchecked)."""
        return None

    @abstractmethod
    def connect(self) -> None:
        """Open the bus / session. Raises HardwareError naming what to check (port, IP, power)."""

    @abstractmethod
    def read(self) -> HardwareReading:
        """Measured joint positions (and temperatures if the hardware reports them)."""

    @abstractmethod
    def write(self, positions: np.ndarray) -> np.ndarray:
        """Send joint position targets; return what was actually sent (after any backend clipping)."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the hardware. Safe to call when not connected."""

    def _require_connected(self) -> None:
        if not self._connected:
            raise HardwareError(f"{self.name} backend: not connected (call connect() first)")

    def _check_command(self, positions: np.ndarray) -> np.ndarray:
        cmd = np.asarray(positions, dtype=np.float64)
        if cmd.shape != (self.embodiment.dof,):
            raise HardwareError(
                f"{self.name} backend: command shape {cmd.shape} does not match {self.embodiment.dof} joints"
            )
        if not np.all(np.isfinite(cmd)):
            raise HardwareError(f"{self.name} backend: refusing a non-finite command {cmd.tolist()}")
        return cmd
