"""Chunk scheduler: turns stamped action chunks into a continuous, time-indexed joint target.

The driver asks ``target(now_s)`` every tick and gets the position meant for *now*: chunks are indexed
by time (step k of a chunk is for ``anchor + k / rate``), never by a step counter, so a late tick or a
slow inference never shifts the plan. Between steps the scheduler interpolates with a monotone cubic
(PCHIP-style) Hermite spline: C1 inside a chunk and no overshoot beyond neighbouring steps.

Splicing. A new chunk replaces the old one at the current tick, not at its start. The switch is a
blend ``(1 - w) * old(t) + w * new(t)`` over ``blend_ticks`` ticks with the smoothstep weight
``w = 3s^2 - 2s^3``: w and w' vanish at both ends, so position and velocity are continuous across the
splice (peers jump here: EMBODIMENTS_AND_PEERS.md). The blend adds ``w' * (new - old)`` to the
velocity, at most ``1.5 * |d| / T`` for a disagreement d over a blend of T seconds, and ``6 |d| / T^2`` to
the acceleration; given the joints' velocity and acceleration limits, a splice whose plans disagree so
much that either would exceed a third of a joint's limit (``BLEND_VELOCITY_FRACTION``,
``BLEND_ACCELERATION_FRACTION``) is blended over longer (up to ``MAX_BLEND_FACTOR`` x ``blend_ticks``), so
the driver's shaper downstream rarely has to step in.

Latency. ``chunk.stamp_s`` is the capture time of the observation the chunk came from. Where the
chunk is anchored is decided by the *measured* latency ``now - stamp`` and by what the robot did
during it:

- executing a previous chunk the whole time: anchor at the stamp, i.e. skip the steps whose time
  has passed (the robot kept moving along the old plan while the policy thought);
- holding the whole time (first chunk after start, after starvation or a watchdog hold): the robot
  did not move, so the chunk is re-anchored at now and starts from step 0. A slow first inference
  (warm-up, CUDA graph capture) therefore skips nothing;
- moving for part of it (the old chunk ran out mid-latency): the anchor moves by the time spent
  holding, which is the general rule the two cases above are the ends of.

The scheduler keeps the intervals during which it drove motion to compute that held time. It imports
no rclpy; times are ROS time in float seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.errors import ChunkRejected

if TYPE_CHECKING:
    from molmoact2_ros.core.embodiment import EmbodimentConfig

# Chunks arriving faster than one blend window nest blends; past this depth the oldest blend is
# collapsed into its newer side. Only a chunk flood reaches it, and the rate limiter bounds the result.
MAX_BLEND_DEPTH = 8
# The blend's own velocity (w' x disagreement) may use this share of a joint's velocity limit, the rest
# is left to the motion itself; a larger disagreement stretches the blend, up to MAX_BLEND_FACTOR x.
BLEND_VELOCITY_FRACTION = 1.0 / 3.0
MAX_BLEND_FACTOR = 3.0
SMOOTHSTEP_PEAK_SLOPE = 1.5  # max of d/ds (3s^2 - 2s^3), at s = 1/2
SMOOTHSTEP_PEAK_CURVATURE = 6.0  # max of |d2/ds2 (3s^2 - 2s^3)|, at s = 0 and 1
# The same share of a joint's acceleration limit for the blend's own acceleration (6 d / T^2).
BLEND_ACCELERATION_FRACTION = 1.0 / 3.0
# Motion intervals older than this many entries cannot matter: a chunk older than chunk_max_age_s is
# rejected long before, and each interval spans at least one chunk.
_MAX_INTERVALS = 32


def smoothstep(s: float) -> float:
    """C1 blend weight on [0, 1]: 0 -> 0, 1 -> 1, zero slope at both ends."""
    s = min(max(s, 0.0), 1.0)
    return s * s * (3.0 - 2.0 * s)


def pchip_tangents(positions: np.ndarray, rate_hz: float) -> np.ndarray:
    """Per-step tangents (units/s) for a monotone cubic Hermite through equally spaced steps.

    Interior tangents are the harmonic mean of the neighbouring slopes (zero at a local extremum),
    which keeps each segment within its two end values; end tangents are the one-sided slopes.
    """
    n = positions.shape[0]
    tangents = np.zeros_like(positions, dtype=np.float64)
    if n < 2:
        return tangents
    slopes = np.diff(positions, axis=0) * rate_hz  # (n-1, dof)
    tangents[0] = slopes[0]
    tangents[-1] = slopes[-1]
    if n > 2:
        left, right = slopes[:-1], slopes[1:]
        same_sign = (left * right) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            harmonic = np.where(same_sign, 2.0 * left * right / (left + right), 0.0)
        tangents[1:-1] = np.where(same_sign, harmonic, 0.0)
    return tangents


class _Trajectory:
    def position(self, t: float) -> np.ndarray:
        raise NotImplementedError


class _Hold(_Trajectory):
    def __init__(self, position: np.ndarray):
        self.pos = np.array(position, dtype=np.float64)

    def position(self, t: float) -> np.ndarray:
        return self.pos.copy()


class _ChunkTrajectory(_Trajectory):
    """One chunk anchored in time: step k at ``anchor_s + k / rate_hz``; holds its ends outside."""

    def __init__(self, chunk: ActionChunk, anchor_s: float, max_steps: int | None):
        positions = np.asarray(chunk.positions, dtype=np.float64)
        if max_steps is not None:
            positions = positions[:max_steps]
        self.positions = positions
        self.rate_hz = float(chunk.rate_hz)
        self.anchor_s = float(anchor_s)
        self.stamp_s = float(chunk.stamp_s)
        self.tangents = pchip_tangents(positions, self.rate_hz)
        self.end_s = self.anchor_s + (positions.shape[0] - 1) / self.rate_hz
        self.executed = False

    def position(self, t: float) -> np.ndarray:
        n = self.positions.shape[0]
        u = (t - self.anchor_s) * self.rate_hz
        if u <= 0.0 or n == 1:
            return self.positions[0].copy()
        if u >= n - 1:
            return self.positions[-1].copy()
        k = math.floor(u)
        s = u - k
        h = 1.0 / self.rate_hz
        s2, s3 = s * s, s * s * s
        h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
        p = self.positions
        m = self.tangents
        return h00 * p[k] + h10 * h * m[k] + h01 * p[k + 1] + h11 * h * m[k + 1]


class _Blend(_Trajectory):
    def __init__(self, old: _Trajectory, new: _Trajectory, start_s: float, duration_s: float):
        self.old, self.new = old, new
        self.start_s, self.duration_s = start_s, duration_s

    def weight(self, t: float) -> float:
        return smoothstep((t - self.start_s) / self.duration_s)

    def position(self, t: float) -> np.ndarray:
        w = self.weight(t)
        if w <= 0.0:
            return self.old.position(t)
        if w >= 1.0:
            return self.new.position(t)
        return (1.0 - w) * self.old.position(t) + w * self.new.position(t)

    def depth(self) -> int:
        return 1 + (self.old.depth() if isinstance(self.old, _Blend) else 0)


@dataclass
class SpliceInfo:
    """How one accepted chunk was placed in time (for logs and diagnostics)."""

    latency_s: float  # now - stamp at the splice tick: measured, not guessed
    anchor_s: float  # time of step 0 after latency handling
    held_s: float  # part of the latency the robot spent holding (shifts the anchor)
    mode: str  # "time_indexed" | "reanchored" | "partial"
    skipped_steps: int  # steps whose time had already passed at the splice
    blended: bool  # whether an old trajectory was blended out


@dataclass
class Placement:
    """A chunk placed in time by ``ChunkScheduler.plan``, not spliced yet."""

    trajectory: _ChunkTrajectory
    stamp_s: float
    now_s: float
    info: SpliceInfo

    def position(self, t: float) -> np.ndarray:
        """The new chunk's own position at ``t`` (before any blend)."""
        return self.trajectory.position(t)


@dataclass
class SchedulerStats:
    chunks_accepted: int = 0
    chunks_executed: int = 0  # chunks whose steps drove at least one tick
    out_of_order: int = 0  # stamp older than or equal to the current chunk's
    expired: int = 0  # every step already in the past at the splice
    starvation_ticks: int = 0  # ticks spent holding the last target of an exhausted chunk
    stretched_blends: int = 0  # splices blended over longer than blend_ticks (large disagreement)
    last_latency_s: float = float("nan")
    last_skipped_steps: int = 0
    last_anchor_mode: str = ""
    last_held_s: float = 0.0


class ChunkScheduler:
    """Time-indexed chunk execution with C1 splices; see the module docstring for the rules."""

    def __init__(self, dof: int, tick_rate_hz: float, blend_ticks: int = 4, max_steps: int | None = None,
                 max_velocity: np.ndarray | None = None, max_acceleration: np.ndarray | None = None):
        """``max_velocity`` / ``max_acceleration`` (per joint, units/s, units/s^2): stretch blends whose
        disagreement would use more than ``BLEND_VELOCITY_FRACTION`` / ``BLEND_ACCELERATION_FRACTION`` of them
        (None: that limit does not stretch blends; neither given: always ``blend_ticks``)."""
        if dof <= 0:
            raise ValueError(f"dof must be positive, got {dof}")
        if not tick_rate_hz > 0:
            raise ValueError(f"tick_rate_hz must be positive, got {tick_rate_hz}")
        if blend_ticks < 0:
            raise ValueError(f"blend_ticks must be >= 0, got {blend_ticks}")
        self.dof = dof
        self.tick_rate_hz = float(tick_rate_hz)
        self.blend_ticks = int(blend_ticks)
        self.max_steps = max_steps
        self.max_velocity = None if max_velocity is None else np.asarray(max_velocity, dtype=np.float64)
        self.max_acceleration = None if max_acceleration is None else np.asarray(max_acceleration, dtype=np.float64)
        self.stats = SchedulerStats()
        self._traj: _Trajectory | None = None
        self._newest: _ChunkTrajectory | None = None
        self._last_stamp_s: float | None = None
        # [start, end] intervals (ROS time) during which the scheduler drove motion.
        self._moving: list[list[float]] = []

    @classmethod
    def for_embodiment(cls, embodiment: EmbodimentConfig) -> ChunkScheduler:
        return cls(
            dof=embodiment.dof,
            tick_rate_hz=embodiment.tick_rate_hz,
            blend_ticks=embodiment.chunk.blend_ticks,
            max_steps=embodiment.chunk.n_action_steps,
            max_velocity=embodiment.max_velocity,
            max_acceleration=embodiment.max_acceleration,
        )

    # ---- state ------------------------------------------------------------------------------
    @property
    def blend_duration_s(self) -> float:
        return self.blend_ticks / self.tick_rate_hz

    @property
    def has_trajectory(self) -> bool:
        return self._traj is not None

    @property
    def last_stamp_s(self) -> float | None:
        return self._last_stamp_s

    def plan_end(self) -> tuple[np.ndarray, float] | None:
        """The newest chunk's last step and its time: where the plan stops if no chunk follows it."""
        newest = self._newest
        if newest is None:
            return None
        return newest.positions[-1].copy(), newest.end_s

    def is_exhausted(self, now_s: float) -> bool:
        """True when the newest chunk has no step left for ``now_s`` (the scheduler is starving)."""
        return self._newest is not None and now_s > self._newest.end_s

    def held_time_s(self, start_s: float, end_s: float) -> float:
        """How long within [start_s, end_s] the scheduler was not driving motion."""
        if end_s <= start_s:
            return 0.0
        moving = 0.0
        for a, b in self._moving:
            moving += max(0.0, min(b, end_s) - max(a, start_s))
        return max(0.0, (end_s - start_s) - moving)

    # ---- commands ---------------------------------------------------------------------------
    def accept(self, chunk: ActionChunk, now_s: float, executing: bool) -> SpliceInfo:
        """Splice ``chunk`` in at ``now_s`` (the current tick): ``commit(plan(...))``."""
        return self.commit(self.plan(chunk, now_s, executing))

    def plan(self, chunk: ActionChunk, now_s: float, executing: bool) -> Placement:
        """Where ``chunk`` would go if spliced at ``now_s``, without changing anything (see ``commit``).

        ``executing`` says whether the robot was following this scheduler up to now; False (start,
        e-stop reset, watchdog hold) forces a re-anchor at now. Raises ChunkRejected with reason
        ``shape``, ``non_finite``, ``out_of_order`` (stamp not newer than the current chunk's) or
        ``expired`` (every step of a time-indexed chunk is already in the past).
        """
        positions = np.asarray(chunk.positions)
        if positions.ndim != 2 or positions.shape[1] != self.dof or chunk.steps == 0:
            raise ChunkRejected("shape", f"positions {positions.shape} are not (steps > 0, {self.dof})")
        # The scheduler's arithmetic (tangents, blends) assumes finite numbers and times.
        if not (np.all(np.isfinite(positions)) and math.isfinite(chunk.stamp_s) and math.isfinite(now_s)
                and math.isfinite(chunk.rate_hz) and chunk.rate_hz > 0):
            raise ChunkRejected("non_finite", "positions, stamp and rate must be finite numbers")
        if self._last_stamp_s is not None and chunk.stamp_s <= self._last_stamp_s:
            self.stats.out_of_order += 1
            raise ChunkRejected(
                "out_of_order",
                f"stamp {chunk.stamp_s:.6f} is not newer than the current chunk's {self._last_stamp_s:.6f}",
            )
        latency = now_s - chunk.stamp_s
        if not executing or self._traj is None:
            # The robot did not move during the latency: step 0 is still where it is.
            held = max(latency, 0.0)
            anchor, mode = max(now_s, chunk.stamp_s), "reanchored"
        else:
            held = self.held_time_s(chunk.stamp_s, now_s)
            anchor = chunk.stamp_s + held
            if held <= 1e-9:
                mode = "time_indexed"
            elif anchor >= now_s - 1e-9:
                anchor, mode = max(anchor, now_s), "reanchored"
            else:
                mode = "partial"
        new = _ChunkTrajectory(chunk, anchor, self.max_steps)
        if new.end_s < now_s and new.positions.shape[0] > 1:
            self.stats.expired += 1
            raise ChunkRejected(
                "expired",
                f"all {new.positions.shape[0]} steps are in the past "
                f"(latency {latency * 1e3:.0f} ms while executing)",
            )
        elapsed_steps = (now_s - anchor) * new.rate_hz
        skipped = max(0, math.ceil(elapsed_steps - 1e-9)) if elapsed_steps > 1e-9 else 0
        info = SpliceInfo(latency_s=latency, anchor_s=anchor, held_s=held, mode=mode, skipped_steps=skipped,
                          blended=self._traj is not None and self.blend_ticks > 0)
        return Placement(new, chunk.stamp_s, now_s, info)

    def commit(self, placement: Placement) -> SpliceInfo:
        """Splice a ``plan`` in: blend out of the current trajectory, make it the newest chunk."""
        new, now_s, info = placement.trajectory, placement.now_s, placement.info
        if self._traj is not None and self.blend_ticks > 0:
            old = self._traj
            if isinstance(old, _Blend) and old.depth() >= MAX_BLEND_DEPTH:
                old = _collapse_deepest(old)
            duration = self._blend_duration_for(old.position(now_s) - new.position(now_s))
            self._traj = _Blend(old, new, now_s, duration)
        else:
            self._traj = new
        self._newest = new
        self._last_stamp_s = placement.stamp_s
        self._extend_motion(now_s, new.end_s)

        st = self.stats
        st.chunks_accepted += 1
        st.last_latency_s = info.latency_s
        st.last_skipped_steps = info.skipped_steps
        st.last_anchor_mode = info.mode
        st.last_held_s = info.held_s
        return info

    def target(self, now_s: float) -> np.ndarray | None:
        """The joint target for ``now_s`` (robot space), or None before the first chunk."""
        traj = self._traj
        if traj is None:
            return None
        # Finished blends collapse to their new side so evaluation stays O(1) in steady state.
        if isinstance(traj, _Blend):
            traj = _drop_finished(traj, now_s)
            self._traj = traj
        newest = self._newest
        if newest is not None and not newest.executed and _weight_of(traj, newest, now_s) > 0.0:
            newest.executed = True
            self.stats.chunks_executed += 1
        if self.is_exhausted(now_s):
            self.stats.starvation_ticks += 1
        return traj.position(now_s)

    def hold(self, position: np.ndarray, now_s: float) -> None:
        """The robot is being held at ``position`` from ``now_s``: stop driving, blend out of it later."""
        self._traj = _Hold(np.asarray(position, dtype=np.float64))
        self._newest = None
        if self._moving and self._moving[-1][1] > now_s:
            self._moving[-1][1] = max(self._moving[-1][0], now_s)

    def clear(self, now_s: float | None = None) -> None:
        """Forget the trajectory (e-stop, watchdog stop). The last stamp is kept: older chunks stay stale."""
        self._traj = None
        self._newest = None
        if now_s is not None and self._moving and self._moving[-1][1] > now_s:
            self._moving[-1][1] = max(self._moving[-1][0], now_s)

    def forget_stamps(self) -> None:
        """Accept any stamp again (a ROS clock that jumped backwards: sim reset, bag loop)."""
        self._last_stamp_s = None
        self._moving.clear()

    # ---- internals --------------------------------------------------------------------------
    def _blend_duration_for(self, disagreement: np.ndarray) -> float:
        base = self.blend_duration_s
        if self.max_velocity is None and self.max_acceleration is None:
            return base
        d = np.abs(disagreement)
        needed = np.zeros_like(d)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.max_velocity is not None:
                needed = SMOOTHSTEP_PEAK_SLOPE * d / (BLEND_VELOCITY_FRACTION * self.max_velocity)
            if self.max_acceleration is not None:
                # A small disagreement over a short blend is a large acceleration (6 d / T^2): the driver's
                # shaper would cut it, so blend long enough that it does not have to.
                needed = np.maximum(needed, np.sqrt(SMOOTHSTEP_PEAK_CURVATURE * d
                                                    / (BLEND_ACCELERATION_FRACTION * self.max_acceleration)))
        # A joint without a velocity limit (0) or a non-finite disagreement asks for the longest blend.
        needed = np.where(np.isfinite(needed), needed, np.inf)
        needed_s = float(np.max(needed)) if needed.size else 0.0
        if needed_s >= MAX_BLEND_FACTOR * base:
            if base > 0:
                self.stats.stretched_blends += 1
            return MAX_BLEND_FACTOR * base
        # Whole ticks, so a stretched blend ends on a tick as the configured one does.
        ticks = math.ceil(needed_s * self.tick_rate_hz - 1e-9)
        if ticks <= self.blend_ticks:
            return base
        self.stats.stretched_blends += 1
        return min(ticks / self.tick_rate_hz, MAX_BLEND_FACTOR * base)

    def _extend_motion(self, now_s: float, end_s: float) -> None:
        end_s = max(end_s, now_s)
        if self._moving and self._moving[-1][1] >= now_s:
            self._moving[-1][1] = end_s
        else:
            self._moving.append([now_s, end_s])
            del self._moving[:-_MAX_INTERVALS]


def _drop_finished(traj: _Trajectory, now_s: float) -> _Trajectory:
    if isinstance(traj, _Blend):
        if traj.weight(now_s) >= 1.0:
            return traj.new
        traj.old = _drop_finished(traj.old, now_s)
    return traj


def _collapse_deepest(traj: _Blend) -> _Trajectory:
    if isinstance(traj.old, _Blend):
        traj.old = _collapse_deepest(traj.old)
        return traj
    return traj.new


def _weight_of(traj: _Trajectory, leaf: _Trajectory, t: float) -> float:
    """The weight ``leaf`` has in ``traj``'s output at t (1 when traj is leaf)."""
    if traj is leaf:
        return 1.0
    if isinstance(traj, _Blend):
        w = traj.weight(t)
        return w * _weight_of(traj.new, leaf, t) + (1.0 - w) * _weight_of(traj.old, leaf, t)
    return 0.0
