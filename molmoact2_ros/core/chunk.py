"""Plain-data types that cross layer boundaries: an observation in, an action chunk out.

Both live in the robot's joint space (see ``core.embodiment``) and carry ROS time as float seconds,
so the core and backends never import rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Observation:
    """What the policy sees at one instant."""

    images: dict[str, np.ndarray]  # camera name -> HxWx3 uint8 (rgb)
    state: np.ndarray  # (dof,) robot-space joint positions, the embodiment's joint order
    instruction: str
    stamp_s: float  # capture time (ROS time, seconds) of the observation


@dataclass
class ActionChunk:
    """A time-indexed sequence of joint targets: step k is meant for ``stamp_s + k / rate_hz``."""

    joint_names: list[str]
    positions: np.ndarray  # (steps, dof) robot space
    stamp_s: float  # capture time of the observation it came from
    rate_hz: float
    received_s: float | None = None  # when the driver got it (ROS time), filled on receipt
    meta: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.positions.shape[0])

    @property
    def duration_s(self) -> float:
        return (self.steps - 1) / self.rate_hz if self.steps else 0.0

    def time_of(self, k: int) -> float:
        return self.stamp_s + k / self.rate_hz
