"""Franka's joint limits and the 1 kHz command shaper that keeps every command inside them.

The control box checks each joint position command it receives at 1 kHz by finite differences: a
command outside the position limits, or whose velocity, acceleration or jerk exceeds the limits below,
aborts the motion with a reflex (``joint_motion_generator_position_limits_violation``,
``..._velocity_limits_violation``, ``..._velocity_discontinuity`` (acceleration), ``..._acceleration_
discontinuity`` (jerk)). ``JointShaper`` turns the driver's 100 Hz targets into a 1 kHz command that
respects all four, so a target that would trip a reflex is approached along a jerk-limited path instead
of being sent raw. No pylibfranka here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONTROL_PERIOD_S = 0.001  # the robot's 1 kHz control cycle


@dataclass(frozen=True)
class JointLimits:
    """Documented joint-space limits of one Franka model, per joint (rad, rad/s, rad/s^2, rad/s^3)."""

    q_min: tuple[float, ...]
    q_max: tuple[float, ...]
    dq_max: tuple[float, ...]
    ddq_max: tuple[float, ...]
    dddq_max: tuple[float, ...]


# Source: Franka Robotics, "Robot and interface specifications" / "Limits for Panda" and "Limits for
# Franka Research 3" (frankarobotics.github.io/docs/control_parameters.html): the joint-space limits the
# control box enforces on every command (the same numbers as libfranka's rate_limiting.h).
FRANKA_LIMITS: dict[str, JointLimits] = {
    "panda": JointLimits(
        q_min=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
        q_max=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
        dq_max=(2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100),
        ddq_max=(15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0),
        dddq_max=(7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0),
    ),
    "fr3": JointLimits(
        q_min=(-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
        q_max=(2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
        dq_max=(2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26),
        ddq_max=(10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0),
        dddq_max=(5000.0, 5000.0, 5000.0, 5000.0, 5000.0, 5000.0, 5000.0),
    ),
}

# Tracking gains of the shaper: the velocity loop (1/s) is 4x the position loop, a critically damped
# double pole at -50/s near the target; far from it the braking envelope sqrt(2 a d) takes over.
POSITION_GAIN = 25.0
VELOCITY_GAIN = 100.0
# Braking (toward the target and the position limits) plans with this share of the acceleration limit,
# leaving the rest to absorb the jerk-limited lag.
BRAKING_SHARE = 0.5


class JointShaper:
    """Per-joint jerk-limited tracking of a moving reference, one 1 kHz step at a time.

    Limits are ``fraction`` of the robot's own, and the position limits are pulled in by ``margin_rad``;
    the command is integrated as jerk -> acceleration -> velocity -> position at exactly the control
    period, so the robot's finite differences see exactly the bounded values.
    """

    def __init__(self, limits: JointLimits, *, fraction: float = 0.9, margin_rad: float = 0.01):
        if not (0.0 < fraction <= 1.0):
            raise ValueError(f"limit fraction must be in (0, 1], got {fraction}")
        if not (0.0 <= margin_rad < 0.2):
            raise ValueError(f"position margin must be in [0, 0.2) rad, got {margin_rad}")
        self.limits = limits
        self.q_min = np.array(limits.q_min) + margin_rad
        self.q_max = np.array(limits.q_max) - margin_rad
        self.v_max = np.array(limits.dq_max) * fraction
        self.a_max = np.array(limits.ddq_max) * fraction
        self.j_max = np.array(limits.dddq_max) * fraction
        self.a_brake = self.a_max * BRAKING_SHARE
        self.dt = CONTROL_PERIOD_S
        self.p = np.zeros(7)
        self.v = np.zeros(7)
        self.a = np.zeros(7)

    def reset(self, q: np.ndarray) -> None:
        """Start from rest at ``q`` (the robot's commanded pose when a control starts)."""
        self.p = np.asarray(q, dtype=np.float64).copy()
        self.v = np.zeros(7)
        self.a = np.zeros(7)

    def clip_target(self, q: np.ndarray) -> np.ndarray:
        """A target inside the (margin-reduced) position limits: the robot's own hard limits."""
        return np.clip(np.asarray(q, dtype=np.float64), self.q_min, self.q_max)

    @property
    def at_rest(self) -> bool:
        """Still enough that ending the motion now (velocity and acceleration to zero) is within limits."""
        return bool(np.all(np.abs(self.v) < 1e-4) and np.all(np.abs(self.a) < 1e-2))

    def step(self, reference: np.ndarray, reference_velocity: np.ndarray) -> np.ndarray:
        """The next 1 kHz command toward ``reference`` (moving at ``reference_velocity``)."""
        ref = self.clip_target(reference)
        err = ref - self.p
        dist = np.abs(err)
        feedback = np.sign(err) * np.minimum(POSITION_GAIN * dist, np.sqrt(2.0 * self.a_brake * dist))
        v_des = np.clip(np.asarray(reference_velocity, dtype=np.float64) + feedback, -self.v_max, self.v_max)
        # Never faster than a stop before the position limits allows.
        room_up = np.sqrt(2.0 * self.a_brake * np.maximum(self.q_max - self.p, 0.0))
        room_down = np.sqrt(2.0 * self.a_brake * np.maximum(self.p - self.q_min, 0.0))
        v_des = np.clip(v_des, -room_down, room_up)
        a_des = np.clip(VELOCITY_GAIN * (v_des - self.v), -self.a_max, self.a_max)
        jerk_step = self.j_max * self.dt
        self.a = np.clip(a_des, self.a - jerk_step, self.a + jerk_step)
        self.v = self.v + self.a * self.dt
        self.p = self.p + self.v * self.dt
        return self.p.copy()


def finite_differences(commands: np.ndarray, dt: float = CONTROL_PERIOD_S) -> tuple[np.ndarray, ...]:
    """Velocity, acceleration and jerk of a (n, 7) command sequence as the robot computes them."""
    v = np.diff(commands, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt
    return v, a, j


def reference_duration(period_s: float | None, default_s: float) -> float:
    """How long the reference takes to move to a new target: the measured write period, within reason."""
    value = default_s if period_s is None or not math.isfinite(period_s) else period_s
    return float(min(max(value, 2 * CONTROL_PERIOD_S), 0.1))
