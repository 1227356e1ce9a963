"""Per-tick motion limits: the joint envelope, and a shaper that bounds velocity and acceleration.

Every command the driver writes goes through ``MotionShaper.step``: from the last command and its
velocity it moves toward a desired velocity with

- ``|v| <= max_velocity``,
- ``|v - v_last| <= max_acceleration * dt``: every change of speed, stops included, is a controlled one
  (a stop from full speed decelerates over ``v / a`` seconds, as ISO 10218's category 2 stop; Franka's
  reflexes trip on a one-tick step from full velocity to zero),
- envelope braking: never faster toward a joint limit than a stop at ``max_acceleration`` can absorb, so
  the command never has to be clipped at a limit (which would be an infinite deceleration).

Velocities are per second of the tick's credited time ``dt`` (the tick's real interval, capped at the
nominal period by the caller: a late tick must not make a bigger step). Plain numpy, no state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this credited time a tick moves nothing (two ticks at one instant): no velocity can be derived.
MIN_DT_S = 1e-6
# A shaped velocity within this of the desired one counts as unshaped (floating-point noise).
SHAPING_TOLERANCE = 1e-9


def clamp_to_envelope(target: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, bool]:
    """Clip to the joint limits; also say whether anything was clipped."""
    clipped = np.clip(target, lower, upper)
    return clipped, bool(np.any(clipped != target))


def braking_speed(distance: np.ndarray, max_acceleration: np.ndarray, dt: float) -> np.ndarray:
    """The largest speed for this tick (of ``dt`` s) toward something ``distance`` away that still leaves room
    to stop before it.

    The invariant kept is "the remaining distance holds a continuous stop, ``v^2 / (2a)``": a stop made of
    ticks of any length loses ``a dt`` of speed per tick of ``dt`` and covers no more than that (a right
    Riemann sum of a falling speed). Solving ``v dt + v^2 / (2a) <= d`` gives ``-a dt + sqrt((a dt)^2 + 2 a d)``.
    If the invariant held before a tick, braking at ``a`` satisfies this bound again whatever the tick's length,
    so a shaper that respects it never faces a stop it cannot make, even with jittering ticks.
    """
    d = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    step = max_acceleration * dt  # speed lost in this tick
    return -step + np.sqrt(step * step + 2.0 * max_acceleration * d)


@dataclass
class Shaped:
    command: np.ndarray
    velocity: np.ndarray  # (command - last) / dt
    shaped: bool  # the limits changed the desired velocity


class MotionShaper:
    """Velocity / acceleration / envelope limits for one embodiment (robot units, per joint)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray,
                 max_acceleration: np.ndarray):
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.max_velocity = np.asarray(max_velocity, dtype=np.float64)
        self.max_acceleration = np.asarray(max_acceleration, dtype=np.float64)

    def step(self, last: np.ndarray, velocity: np.ndarray, desired_velocity: np.ndarray, dt: float) -> Shaped:
        """One tick from ``last`` moving at ``velocity``, aiming for ``desired_velocity``."""
        if dt < MIN_DT_S:
            return Shaped(last.copy(), velocity.copy(), False)
        a = self.max_acceleration
        v = np.clip(desired_velocity, velocity - a * dt, velocity + a * dt)
        v = np.clip(v, -self.max_velocity, self.max_velocity)
        # Envelope braking last: if a state ever made it conflict with the acceleration bound, the limit wins.
        v = np.minimum(v, braking_speed(self.upper - last, a, dt))
        v = np.maximum(v, -braking_speed(last - self.lower, a, dt))
        unclipped = last + v * dt
        command = np.clip(unclipped, self.lower, self.upper)
        # The shaped velocity itself where nothing was clipped: (last + v dt - last) / dt would carry rounding
        # noise, and a stop must end at exactly zero.
        actual = np.where(command == unclipped, v, (command - last) / dt)
        shaped = bool(np.any(np.abs(actual - desired_velocity) > SHAPING_TOLERANCE * (1.0 + np.abs(desired_velocity))))
        return Shaped(command, actual, shaped)

    def follow(self, last: np.ndarray, velocity: np.ndarray, target: np.ndarray, previous_target: np.ndarray | None,
               dt: float, approach_speed: np.ndarray | None = None, stop_at: np.ndarray | None = None) -> Shaped:
        """Track a moving target: its own velocity plus a correction of the lag that brakes onto it.

        On a feasible trajectory the command is the target itself (the correction is the whole lag). A lag
        too large to close in one tick is closed at the speed from which the relative motion can still
        stop at the target (``braking_speed``), so a target that jumps (or stops dead) is approached
        without overshoot beyond what the acceleration limit forces. ``approach_speed`` caps how fast the
        lag is closed (the startup ramp) without slowing the target's own motion, so a ramp always catches
        up with a plan that keeps moving. ``stop_at`` is where the plan ends (its last step): the desired speed
        toward it is capped so the stop ends there, instead of overshooting a plan that ends in motion and
        coming back. Both caps shape the desired velocity only: the acceleration limit stays the law.
        """
        if dt < MIN_DT_S:
            return Shaped(last.copy(), velocity.copy(), False)
        if previous_target is None:
            target_velocity = np.zeros_like(target)
            lag = target - last
        else:
            target_velocity = (target - previous_target) / dt
            lag = previous_target - last
        distance = np.abs(lag)
        closing = np.minimum(distance / dt, braking_speed(distance, self.max_acceleration, dt))
        if approach_speed is not None:
            closing = np.minimum(closing, approach_speed)
        desired = target_velocity + np.sign(lag) * closing
        if stop_at is not None:
            ahead = stop_at - last
            desired = np.clip(desired, -braking_speed(-ahead, self.max_acceleration, dt),
                              braking_speed(ahead, self.max_acceleration, dt))
        return self.step(last, velocity, desired, dt)

    def brake(self, last: np.ndarray, velocity: np.ndarray, dt: float) -> Shaped:
        """A controlled stop: lose at most ``max_acceleration * dt`` of speed per tick, then stand still."""
        return self.step(last, velocity, np.zeros_like(velocity), dt)
