"""An independent check of the commands a driver wrote: the invariants every write must satisfy.

The safety stack is built to keep these; this module checks them from the outside, on nothing but the
written commands and their times, so tests, fuzzers, benchmarks and recordings all judge a run the same
way. For every write:

- finite, and inside the joint envelope;
- speed ``|Δ| / dt <= max_velocity`` and acceleration ``|Δv| / dt <= max_acceleration``, with ``dt`` the time
  since the previous write capped at the nominal tick (a late tick must not excuse a bigger step; a clock
  that stood still or stepped back counts one tick: ``safety.credited_dt``);
- while stopping (e-stop, fault, watchdog, deactivation), a controlled stop: no joint speeds up or reverses.

A (re)start from the measured pose (``restart_from``) begins a new sequence at rest: the first write is
checked against that pose. Plain numpy, no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.safety import credited_dt

# Relative slack on each limit for rounding: a violation is bigger than rounding. ROS stamps are float seconds
# since the epoch (~1.8e9 s), resolved to ~0.25 us: over a 10 ms tick that is 2.5e-5 of a velocity, and
# twice that of an acceleration.
RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-9


@dataclass
class AuditCounts:
    writes: int = 0
    restarts: int = 0
    stopping_writes: int = 0
    violations: list[str] = field(default_factory=list)


class CommandAuditor:
    """Feed it every write in order (``observe``); ``counts.violations`` lists what broke an invariant."""

    def __init__(self, embodiment: EmbodimentConfig):
        self.embodiment = embodiment
        self.lower, self.upper = embodiment.lower, embodiment.upper
        self.max_velocity = embodiment.max_velocity
        self.max_acceleration = embodiment.max_acceleration
        self.nominal_dt_s = 1.0 / embodiment.tick_rate_hz
        self.counts = AuditCounts()
        self._last: np.ndarray | None = None
        self._last_t: float | None = None
        self._velocity = np.zeros(embodiment.dof)

    @property
    def ok(self) -> bool:
        return not self.counts.violations

    def forget(self) -> None:
        """Nothing is being commanded any more (relaxed, shadow): the next write must be a restart."""
        self._last, self._last_t = None, None
        self._velocity = np.zeros(self.embodiment.dof)

    def observe(self, t: float, command: np.ndarray, *, restart_from: np.ndarray | None = None,
                stopping: bool = False, context: str = "") -> list[str]:
        """Check one write at time ``t``; returns this write's violations (also kept in ``counts``)."""
        c = self.counts
        c.writes += 1
        found: list[str] = []
        where = f"write {c.writes} at t={t:.4f}{' (' + context + ')' if context else ''}"
        cmd = np.asarray(command, dtype=np.float64)
        if cmd.shape != (self.embodiment.dof,) or not np.all(np.isfinite(cmd)):
            found.append(f"{where}: not {self.embodiment.dof} finite numbers: {cmd.tolist()}")
            c.violations += found
            return found
        tol = ABSOLUTE_TOLERANCE
        outside = np.maximum(self.lower - cmd, cmd - self.upper)
        if np.any(outside > tol):
            j = int(np.argmax(outside))
            found.append(f"{where}: {self._name(j)} = {cmd[j]:.6g} outside [{self.lower[j]:.6g}, {self.upper[j]:.6g}]")
        if restart_from is not None:
            c.restarts += 1
            self._last = np.asarray(restart_from, dtype=np.float64)
            self._last_t = t - self.nominal_dt_s
            self._velocity = np.zeros(self.embodiment.dof)
        if self._last is not None and self._last_t is not None:
            dt = credited_dt(t, self._last_t, self.nominal_dt_s)
            if dt > 0:
                velocity = (cmd - self._last) / dt
                speed_excess = np.abs(velocity) - self.max_velocity * (1 + RELATIVE_TOLERANCE) - tol / dt
                if np.any(speed_excess > 0):
                    j = int(np.argmax(speed_excess))
                    found.append(f"{where}: {self._name(j)} speed {abs(velocity[j]):.6g} > {self.max_velocity[j]:.6g}")
                accel = np.abs(velocity - self._velocity) / dt
                accel_excess = accel - self.max_acceleration * (1 + RELATIVE_TOLERANCE) - tol / dt**2
                if np.any(accel_excess > 0):
                    j = int(np.argmax(accel_excess))
                    found.append(f"{where}: {self._name(j)} acceleration {accel[j]:.6g} > "
                                 f"{self.max_acceleration[j]:.6g}")
                if stopping:
                    c.stopping_writes += 1
                    speeds_up = np.abs(velocity) - np.abs(self._velocity) - RELATIVE_TOLERANCE * self.max_velocity
                    reverses = velocity * self._velocity < -(RELATIVE_TOLERANCE * self.max_velocity) ** 2
                    if np.any(speeds_up > 0) or np.any(reverses):
                        j = int(np.argmax(np.where(reverses, np.inf, speeds_up)))
                        found.append(f"{where}: {self._name(j)} is not stopping (speed {self._velocity[j]:.6g} -> "
                                     f"{velocity[j]:.6g}) during a stop")
                self._velocity = velocity
        else:
            found.append(f"{where}: a command with nothing commanded before it and no guarded (re)start")
        self._last, self._last_t = cmd, t
        c.violations += found
        return found

    def _name(self, j: int) -> str:
        return self.embodiment.joint_names[j]
