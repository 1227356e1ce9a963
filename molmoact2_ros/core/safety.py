"""The driver's safety stack: everything that reaches a motor passes through here first.

Order, as ARCHITECTURE.md gives it: chunk validation (on receipt, ``validate_chunk``) -> scheduler
target -> joint envelope clamp -> per-tick rate limit against the last command -> startup guard / ramp
from the measured pose -> hardware write (done by the caller with the command ``SafetyStack.tick``
returns). Around it: a watchdog (no valid chunk for ``watchdog_hold_timeout_s``: hold; for
``watchdog_stop_timeout_s``: stop), a latched e-stop, a tracking-error monitor (arm joints only:
grippers stall on purpose when they grasp), latched hardware faults (read/write failures reported by
the driver, over-temperature from the backend's readings) and ROS clock jumps (sim reset, bag loop,
a stepped system clock).

Holding means writing the last command again: it is where the robot already is (within one tick of
motion), it never jumps, and motor firmware that falls into damping without commands (YAM) keeps
getting its heartbeat. A latched fault holds or, with ``safety.fault_action: relax`` and a backend that
can, stops commanding so the backend goes compliant. Nothing is written before the first guarded
command: an unguarded first command stripped an SO-101 gear (EMBODIMENTS_AND_PEERS.md).

A bimanual station is one stack: one watchdog, one e-stop, and a fault on either arm holds both (the
fault detail and ``fault_arms`` name the arm). ``DriverCore`` wraps one control tick against a hardware
backend (read -> tick -> write -> record) so the driver node, the fault-injection suite and the
benchmarks run the very same code.

Plain Python and numpy; thread-safe (chunks arrive on executor threads, ticks run on the control
thread, e-stop and reset on service threads). Times are ROS time in float seconds.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import ChunkRejected, HardwareError
from molmoact2_ros.core.scheduler import ChunkScheduler

# Short, stable rejection tags (diagnostics keys are ``rejected_<tag>``).
REJECT_EMPTY = "empty"
REJECT_SHAPE = "shape"
REJECT_JOINT_NAMES = "joint_names"
REJECT_NON_FINITE = "non_finite"
REJECT_RATE = "rate"
REJECT_TIME_FROM_START = "time_from_start"
REJECT_NO_STAMP = "no_stamp"
REJECT_FUTURE_STAMP = "future_stamp"
REJECT_TOO_OLD = "too_old"
REJECT_STEP_JUMP = "step_jump"
REJECT_OUT_OF_ORDER = "out_of_order"
REJECT_EXPIRED = "expired"
REJECT_INACTIVE = "inactive"
REJECT_ESTOP = "estop"
REJECT_FAULT = "fault"
REJECT_REASONS = (
    REJECT_EMPTY, REJECT_SHAPE, REJECT_JOINT_NAMES, REJECT_NON_FINITE, REJECT_RATE, REJECT_TIME_FROM_START,
    REJECT_NO_STAMP, REJECT_FUTURE_STAMP, REJECT_TOO_OLD, REJECT_STEP_JUMP, REJECT_OUT_OF_ORDER,
    REJECT_EXPIRED, REJECT_INACTIVE, REJECT_ESTOP, REJECT_FAULT,
)

# A chunk's step rate must match the embodiment's control rate to this relative tolerance: a policy
# configured for another embodiment or rate is a misconfiguration, not something to resample silently.
RATE_TOLERANCE = 0.02
# time_from_start spacing may deviate this much (relative) from uniform (message rounding to ns).
TIME_SPACING_TOLERANCE = 1e-3
# A ROS clock that jumps back by more than this (sim reset, bag loop) forgets stamps and holds.
CLOCK_JUMP_BACK_S = 1.0
# A gap this long between two ticks is a clock jump too (a stepped system clock, /clock resuming far
# ahead, or a control thread stalled that long): the plan belongs to another time base, so hold.
CLOCK_JUMP_FORWARD_S = 1.0
FAULT_ACTIONS = ("hold", "relax")


class SafetyState(StrEnum):
    IDLE = "IDLE"  # nothing to execute (not started, waiting for the first chunk, after a reset)
    RUNNING = "RUNNING"  # following the scheduler
    HOLD = "HOLD"  # holding the last command (watchdog, starved chunk, deactivated)
    STOPPED = "STOPPED"  # watchdog stop: trajectory dropped, next chunk goes through the startup guard
    ESTOP = "ESTOP"  # latched until reset
    FAULT = "FAULT"  # latched until reset: startup refused, tracking error, hardware fault


# ---- validation on receipt ----------------------------------------------------------------

def infer_rate_hz(times_from_start_s: Sequence[float], default_rate_hz: float) -> float:
    """Step rate from a trajectory's ``time_from_start`` values (k / rate by contract).

    One point carries no spacing: ``default_rate_hz`` is used. Raises ChunkRejected
    (``time_from_start``) when the first point is not at 0 or the spacing is not uniform and positive.
    """
    times = np.asarray(times_from_start_s, dtype=np.float64)
    if times.size == 0:
        raise ChunkRejected(REJECT_EMPTY, "trajectory has no points")
    if times.size == 1:
        return float(default_rate_hz)
    dts = np.diff(times)
    dt = float(np.mean(dts))
    if abs(times[0]) > TIME_SPACING_TOLERANCE * max(dt, 1e-3) or not (dt > 0 and np.isfinite(dt)):
        raise ChunkRejected(
            REJECT_TIME_FROM_START,
            f"points must be at time_from_start = k / rate starting at 0; got first {times[0]:.6f} s, "
            f"mean spacing {dt:.6f} s",
        )
    if np.max(np.abs(dts - dt)) > TIME_SPACING_TOLERANCE * dt + 2e-9:
        raise ChunkRejected(
            REJECT_TIME_FROM_START,
            f"time_from_start spacing is not uniform (min {np.min(dts):.6f} s, max {np.max(dts):.6f} s)",
        )
    return 1.0 / dt


def validate_chunk(chunk: ActionChunk, embodiment: EmbodimentConfig, now_s: float) -> ActionChunk:
    """Check a received chunk against the embodiment and the clock; return it in embodiment joint order.

    Raises ChunkRejected with one of the ``REJECT_*`` tags. ``now_s`` is the receipt time (ROS time);
    the returned copy carries it in ``received_s``.
    """
    names = list(chunk.joint_names)
    positions = np.asarray(chunk.positions, dtype=np.float64)
    if positions.ndim == 0 or positions.size == 0:
        raise ChunkRejected(REJECT_EMPTY, "chunk has no steps")
    if positions.ndim != 2 or positions.shape[1] != len(names):
        raise ChunkRejected(
            REJECT_SHAPE, f"positions shape {positions.shape} does not match {len(names)} joint names"
        )
    expected = embodiment.joint_names
    if len(set(names)) != len(names) or set(names) != set(expected):
        missing = [n for n in expected if n not in names]
        unexpected = [n for n in names if n not in expected]
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ChunkRejected(
            REJECT_JOINT_NAMES,
            f"joint names must be exactly {expected} in any order; missing {missing}, "
            f"unexpected {unexpected}, repeated {repeated}",
        )
    if not np.all(np.isfinite(positions)):
        bad = sorted({names[j] for j in np.argwhere(~np.isfinite(positions))[:, 1]})
        raise ChunkRejected(REJECT_NON_FINITE, f"non-finite positions for joints {bad}")
    rate = float(chunk.rate_hz)
    want = embodiment.control_rate_hz
    if not (math.isfinite(rate) and rate > 0) or abs(rate - want) > RATE_TOLERANCE * want:
        raise ChunkRejected(REJECT_RATE, f"step rate {rate:.4g} Hz does not match control_rate_hz {want:g}")
    if not math.isfinite(chunk.stamp_s):
        raise ChunkRejected(REJECT_NO_STAMP, f"stamp {chunk.stamp_s} is not a time")
    safety = embodiment.safety
    ahead = chunk.stamp_s - now_s
    if ahead > safety.future_stamp_tolerance_s:
        raise ChunkRejected(
            REJECT_FUTURE_STAMP,
            f"stamp is {ahead * 1e3:.0f} ms in the future (tolerance "
            f"{safety.future_stamp_tolerance_s * 1e3:.0f} ms): clocks out of sync?",
        )
    age = now_s - chunk.stamp_s
    if age > safety.chunk_max_age_s:
        raise ChunkRejected(
            REJECT_TOO_OLD, f"stamp is {age * 1e3:.0f} ms old (limit {safety.chunk_max_age_s * 1e3:.0f} ms)"
        )
    order = [names.index(n) for n in expected]
    positions = positions[:, order]
    if positions.shape[0] > 1:
        limit = safety.max_step_jump_factor * embodiment.max_velocity / rate  # (dof,)
        jumps = np.abs(np.diff(positions, axis=0))  # (steps-1, dof)
        ratio = jumps / limit
        worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[worst] > 1.0:
            k, j = int(worst[0]), int(worst[1])
            raise ChunkRejected(
                REJECT_STEP_JUMP,
                f"joint {expected[j]} jumps {jumps[k, j]:.4g} between steps {k} and {k + 1} "
                f"(limit {limit[j]:.4g} = {safety.max_step_jump_factor:g} x max velocity / rate)",
            )
    return replace(chunk, joint_names=list(expected), positions=positions, received_s=now_s,
                   meta=dict(chunk.meta))


# ---- per-tick limits --------------------------------------------------------------------------

def clamp_to_envelope(target: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, bool]:
    """Clip to the joint limits; also say whether anything was clipped."""
    clipped = np.clip(target, lower, upper)
    return clipped, bool(np.any(clipped != target))


def rate_limit(target: np.ndarray, last: np.ndarray, max_step: np.ndarray) -> tuple[np.ndarray, bool]:
    """Move from ``last`` toward ``target`` by at most ``max_step`` per joint; say whether it limited."""
    delta = target - last
    limited = np.clip(delta, -max_step, max_step)
    return last + limited, bool(np.any(limited != delta))


# ---- the stack ---------------------------------------------------------------------------------

@dataclass
class SafetyCounters:
    ticks: int = 0
    chunks_received: int = 0
    chunks_accepted: int = 0
    chunks_superseded: int = 0  # valid, but replaced by a newer one before a tick spliced it
    clamp_events: int = 0  # ticks whose target was clipped to the envelope
    rate_limit_events: int = 0  # ticks whose command was rate limited (includes startup ramps)
    watchdog_holds: int = 0
    watchdog_stops: int = 0
    startup_refusals: int = 0
    estops: int = 0
    faults: int = 0
    clock_jumps: int = 0
    tracking_error_max: float = 0.0
    tracking_error_last: float = 0.0
    rejections: Counter[str] = field(default_factory=Counter)

    @property
    def chunks_rejected(self) -> int:
        return sum(self.rejections.values())


@dataclass
class TickResult:
    """What one tick decided. ``command`` is what to write (None: write nothing this tick)."""

    command: np.ndarray | None
    state: SafetyState
    reason: str
    target: np.ndarray | None = None  # scheduler target before the clamp
    clamped: bool = False
    rate_limited: bool = False
    ramp_base: np.ndarray | None = None  # set on the tick that (re)started motion from the measured pose
    relax: bool = False  # a latched fault with fault_action relax: stop commanding, let the backend relax


def effective_max_temperature_c(*limits: float | None) -> float | None:
    """The strictest of the configured over-temperature limits (None where none is set)."""
    given = [float(x) for x in limits if x is not None]
    return min(given) if given else None


class SafetyStack:
    """Scheduler + safety limits for one driver; ``submit`` chunks on receipt, ``tick`` every period."""

    def __init__(self, embodiment: EmbodimentConfig, *, scheduler: ChunkScheduler | None = None,
                 tracking_error_grace_s: float | None = None, max_temperature_c: float | None = None,
                 fault_action: str | None = None, shadow: bool = False):
        """``tracking_error_grace_s`` and ``fault_action`` default to the embodiment's safety config;
        ``max_temperature_c`` (the backend's limit) is combined with ``safety.max_temperature_c``: the
        lower one applies. Pass ``fault_action="hold"`` for a backend that cannot relax."""
        cfg = embodiment.safety
        self.embodiment = embodiment
        self.scheduler = scheduler or ChunkScheduler.for_embodiment(embodiment)
        self.lower = embodiment.lower
        self.upper = embodiment.upper
        self.max_velocity = embodiment.max_velocity
        self.nominal_dt_s = 1.0 / embodiment.tick_rate_hz
        self.tracking_error_grace_s = (cfg.tracking_error_grace_s if tracking_error_grace_s is None
                                       else float(tracking_error_grace_s))
        self.max_temperature_c = effective_max_temperature_c(cfg.max_temperature_c, max_temperature_c)
        action = cfg.fault_action if fault_action is None else fault_action
        if action not in FAULT_ACTIONS:
            raise ValueError(f"fault_action must be one of {FAULT_ACTIONS}, got {action!r}")
        self.fault_action = action
        self._arm_of_joint = {embodiment.joint_names.index(j): arm
                              for arm, joints in embodiment.arms.items() for j in joints}
        # Grippers stall on purpose: closing on an object leaves them short of their command for as long
        # as they hold it (their force is the gripper's own current limit). The monitor watches the rest.
        self._tracked = np.flatnonzero([j.type != "gripper" for j in embodiment.joints])
        self.counters = SafetyCounters()
        self.last_latency_s = float("nan")  # receipt - stamp of the last chunk received
        self._cfg = embodiment.safety
        self._lock = threading.RLock()
        self._pending: ActionChunk | None = None
        self._enabled = False
        self._shadow = shadow
        self._estop_reason: str | None = None
        self._fault: tuple[str, str] | None = None
        self._fault_arms: list[str] = []
        self._jump_hold_since: float | None = None  # holding after a clock jump, since (new time base)
        self._last_command: np.ndarray | None = None
        self._prev_command: np.ndarray | None = None
        self._last_sent: np.ndarray | None = None
        self._guard_pending = True
        self._last_tick_s: float | None = None
        self._last_valid_rx_s: float | None = None
        self._watchdog_level = 0  # 0 fresh, 1 hold, 2 stop
        self._tracking_bad_since: float | None = None
        self._state = SafetyState.IDLE
        self._reason = "not_enabled"

    # ---- status -------------------------------------------------------------------------------
    @property
    def state(self) -> SafetyState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def shadow(self) -> bool:
        return self._shadow

    @property
    def last_command(self) -> np.ndarray | None:
        with self._lock:
            return None if self._last_command is None else self._last_command.copy()

    @property
    def fault(self) -> tuple[str, str] | None:
        return self._fault

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    def max_step(self, dt_s: float | None = None) -> np.ndarray:
        """Per-joint rate limit for a tick of ``dt_s`` (capped at the nominal period)."""
        dt = self.nominal_dt_s if dt_s is None else min(max(dt_s, 0.0), self.nominal_dt_s)
        return self.max_velocity * dt

    def snapshot(self) -> dict[str, Any]:
        """Counters and state as flat key-values for /diagnostics."""
        with self._lock:
            c, s = self.counters, self.scheduler.stats
            out: dict[str, Any] = {
                "state": self._state.value,
                "state_reason": self._reason,
                "enabled": self._enabled,
                "shadow_mode": self._shadow,
                "estop_latched": self._estop_reason is not None,
                "fault": self._fault[0] if self._fault else "",
                "fault_detail": self._fault[1] if self._fault else "",
                "fault_arms": ",".join(self._fault_arms),
                "fault_action": self.fault_action,
                "max_temperature_c": self.max_temperature_c if self.max_temperature_c is not None else "",
                "ticks": c.ticks,
                "chunks_received": c.chunks_received,
                "chunks_accepted": c.chunks_accepted,
                "chunks_rejected": c.chunks_rejected,
                "chunks_superseded": c.chunks_superseded,
                "chunks_executed": s.chunks_executed,
                "starvation_ticks": s.starvation_ticks,
                "clamp_events": c.clamp_events,
                "rate_limit_events": c.rate_limit_events,
                "watchdog_holds": c.watchdog_holds,
                "watchdog_stops": c.watchdog_stops,
                "startup_refusals": c.startup_refusals,
                "estops": c.estops,
                "faults": c.faults,
                "clock_jumps": c.clock_jumps,
                "tracking_error_max": c.tracking_error_max,
                "tracking_error_last": c.tracking_error_last,
                "latency_last_ms": self.last_latency_s * 1e3,
                "splice_latency_last_ms": s.last_latency_s * 1e3,
                "splice_skipped_steps_last": s.last_skipped_steps,
                "splice_anchor_last": s.last_anchor_mode,
                "splice_blends_stretched": s.stretched_blends,
            }
            for reason in REJECT_REASONS:
                out[f"rejected_{reason}"] = c.rejections.get(reason, 0)
            return out

    # ---- inputs from other threads ------------------------------------------------------------
    def submit(self, chunk: ActionChunk, now_s: float) -> ActionChunk:
        """Validate a chunk on receipt and queue it for the next tick's splice.

        Returns the validated chunk (embodiment joint order). Raises ChunkRejected, counted by reason.
        """
        with self._lock:
            self.counters.chunks_received += 1
            if math.isfinite(chunk.stamp_s):
                self.last_latency_s = now_s - chunk.stamp_s
        try:
            valid = validate_chunk(chunk, self.embodiment, now_s)
        except ChunkRejected as exc:
            self._count_rejection(exc.reason)
            raise
        with self._lock:
            try:
                if self._estop_reason is not None:
                    raise ChunkRejected(REJECT_ESTOP, f"e-stop latched ({self._estop_reason}); call reset")
                if self._fault is not None:
                    raise ChunkRejected(REJECT_FAULT, f"fault latched ({self._fault[0]}); call reset")
                if not self._enabled:
                    raise ChunkRejected(REJECT_INACTIVE, "driver is not active")
                pending = self._pending
                candidates = (self.scheduler.last_stamp_s, None if pending is None else pending.stamp_s)
                stamps = [t for t in candidates if t is not None]
                newest = max(stamps) if stamps else None
                if newest is not None and valid.stamp_s <= newest:
                    raise ChunkRejected(
                        REJECT_OUT_OF_ORDER, f"stamp {valid.stamp_s:.6f} is not newer than {newest:.6f}"
                    )
            except ChunkRejected as exc:
                self.counters.rejections[exc.reason] += 1
                raise
            if pending is not None:
                self.counters.chunks_superseded += 1
            self._pending = valid
        return valid

    def count_unparsed(self, reason: str) -> None:
        """Count a chunk message that could not even be turned into an ActionChunk (bad stamp, ragged)."""
        with self._lock:
            self.counters.chunks_received += 1
            self.counters.rejections[reason] += 1

    def estop(self, reason: str = "requested") -> None:
        """Latch the e-stop: hold the last command, drop the trajectory, refuse chunks until reset."""
        with self._lock:
            if self._estop_reason is None:
                self.counters.estops += 1
                self._estop_reason = reason
            self._drop_motion(None)
            self._state, self._reason = SafetyState.ESTOP, reason

    def latch_fault(self, reason: str, detail: str = "", joints: Sequence[int] = ()) -> None:
        """Latch a fault (hardware read/write failure, over-temperature, ...): hold (or relax) until reset.

        ``joints`` (embodiment indices) name the arm(s) it concerns on a bimanual station; every arm
        stops either way."""
        with self._lock:
            self._latch_fault(reason, detail, joints)

    def arms_of(self, joints: Sequence[int]) -> list[str]:
        """The arms (``embodiment.arms``) the given joint indices belong to, in joint order."""
        out: list[str] = []
        for j in joints:
            arm = self._arm_of_joint.get(int(j))
            if arm is not None and arm not in out:
                out.append(arm)
        return out

    def reset(self) -> tuple[bool, str]:
        """Clear a latched e-stop or fault. Motion restarts from the measured pose, guarded."""
        with self._lock:
            was = self._estop_reason or (self._fault[0] if self._fault else None)
            self._estop_reason = None
            self._fault = None
            self._fault_arms = []
            self._tracking_bad_since = None
            self._disarm()
            self._state, self._reason = SafetyState.IDLE, "reset"
            return True, f"cleared {was}" if was else "nothing latched"

    def enable(self) -> None:
        """Allow motion (lifecycle activate). The first motion after it is guarded."""
        with self._lock:
            if not self._enabled:
                self._enabled = True
                self._guard_pending = True

    def disable(self, now_s: float | None = None) -> None:
        """Stop following chunks and hold (lifecycle deactivate)."""
        with self._lock:
            self._enabled = False
            self._drop_motion(now_s)

    def set_shadow(self, shadow: bool) -> None:
        """Enter or leave shadow mode. Leaving it restarts motion from the measured pose, guarded."""
        with self._lock:
            if self._shadow and not shadow:
                self._disarm()
            self._shadow = shadow

    def record_sent(self, sent: np.ndarray | None) -> None:
        """Tell the stack what the hardware actually got this tick; None: the write failed."""
        with self._lock:
            if sent is None:
                # The robot never got this command: keep rate limiting against what it did get.
                self._last_command = None if self._prev_command is None else self._prev_command.copy()
            else:
                sent = np.asarray(sent, dtype=np.float64)
                self._last_command = sent.copy()
                self._last_sent = sent.copy()

    # ---- the tick -------------------------------------------------------------------------------
    def tick(self, now_s: float, measured: np.ndarray | None,
             temperatures_c: np.ndarray | None = None) -> TickResult:
        """Run one control tick at ROS time ``now_s`` with the measured pose (None: read failed)."""
        with self._lock:
            c = self.counters
            c.ticks += 1
            if self._last_tick_s is not None and not (
                    -CLOCK_JUMP_BACK_S <= now_s - self._last_tick_s <= CLOCK_JUMP_FORWARD_S):
                self._clock_jumped(now_s)
            dt = self.nominal_dt_s if self._last_tick_s is None else now_s - self._last_tick_s
            self._last_tick_s = now_s
            meas = None if measured is None else np.asarray(measured, dtype=np.float64)

            if temperatures_c is not None and self.max_temperature_c is not None:
                temps = np.asarray(temperatures_c, dtype=np.float64)
                hot = np.flatnonzero(temps > self.max_temperature_c)
                if hot.size:
                    hot = hot[hot < self.embodiment.dof]
                    names = [self.embodiment.joint_names[i] for i in hot]
                    self._latch_fault("over_temperature",
                                      f"{names} above {self.max_temperature_c:g} C (max {temps.max():.1f} C)",
                                      hot.tolist())
            self._check_tracking(now_s, meas)

            pending, self._pending = self._pending, None
            if pending is not None:
                self._splice(pending, now_s)

            self._prev_command = None if self._last_command is None else self._last_command.copy()
            state, reason = self._resolve_state(now_s)
            if state is SafetyState.RUNNING or (state is SafetyState.HOLD and reason == "starved"):
                result = self._follow(now_s, meas, dt, state, reason)
            elif state is SafetyState.FAULT and self.fault_action == "relax":
                result = TickResult(None, state, reason, relax=True)
            else:
                result = TickResult(self._hold_command(), state, reason)
            self._state, self._reason = result.state, result.reason
            return result

    # ---- internals (lock held) ----------------------------------------------------------------------
    def _count_rejection(self, reason: str) -> None:
        with self._lock:
            self.counters.rejections[reason] += 1

    def _hold_command(self) -> np.ndarray | None:
        return None if self._last_command is None else self._last_command.copy()

    def _drop_motion(self, now_s: float | None) -> None:
        self._pending = None
        self._jump_hold_since = None
        self.scheduler.clear(now_s)

    def _disarm(self) -> None:
        """Forget the last command: the next motion ramps from the measured pose, after the guard."""
        self._drop_motion(None)
        self._last_command = None
        self._prev_command = None
        self._last_sent = None
        self._guard_pending = True
        self._watchdog_level = 0
        self._last_valid_rx_s = None

    def _latch_fault(self, reason: str, detail: str, joints: Sequence[int] = ()) -> None:
        if self._fault is None:
            self.counters.faults += 1
            arms = self.arms_of(joints)
            if arms and len(self.embodiment.arms) > 1:
                detail = f"{detail} [{' + '.join(arms)} arm; every arm holds]"
            self._fault = (reason, detail)
            self._fault_arms = arms
        self._drop_motion(None)
        self._state, self._reason = SafetyState.FAULT, reason

    def _clock_jumped(self, now_s: float) -> None:
        """The ROS clock jumped (either way): forget the plan and its time base, hold the last command."""
        self.counters.clock_jumps += 1
        self.scheduler.forget_stamps()
        self._drop_motion(None)
        self._last_valid_rx_s = None
        self._last_tick_s = None
        self._tracking_bad_since = None
        if self._last_command is not None and self._watchdog_level < 2:
            # Resume needs a fresh chunk in the new time base, blended out of the hold; the watchdog
            # counts from the jump.
            self.scheduler.hold(self._last_command, now_s)
            self._jump_hold_since = now_s
            self._watchdog_level = 1

    def _splice(self, chunk: ActionChunk, now_s: float) -> None:
        if self._estop_reason is not None or self._fault is not None or not self._enabled:
            tag = REJECT_ESTOP if self._estop_reason else REJECT_FAULT if self._fault else REJECT_INACTIVE
            self.counters.rejections[tag] += 1
            return
        executing = self._state is SafetyState.RUNNING or (
            self._state is SafetyState.HOLD and self._reason == "starved"
        )
        try:
            self.scheduler.accept(chunk, now_s, executing=executing)
        except ChunkRejected as exc:
            self.counters.rejections[exc.reason] += 1
            return
        self.counters.chunks_accepted += 1
        self._last_valid_rx_s = chunk.received_s if chunk.received_s is not None else now_s
        if self._watchdog_level == 2:
            self._guard_pending = True
        self._watchdog_level = 0
        self._jump_hold_since = None

    def _resolve_state(self, now_s: float) -> tuple[SafetyState, str]:
        if self._estop_reason is not None:
            return SafetyState.ESTOP, self._estop_reason
        if self._fault is not None:
            return SafetyState.FAULT, self._fault[0]
        if not self._enabled:
            return (SafetyState.HOLD if self._last_command is not None else SafetyState.IDLE), "inactive"
        if self._watchdog_level == 2:
            return SafetyState.STOPPED, "watchdog"
        if self._jump_hold_since is not None:
            if now_s - self._jump_hold_since > self._cfg.watchdog_stop_timeout_s:
                # No chunk in the new time base for the stop timeout: the same stop as the watchdog's.
                self._jump_hold_since = None
                self.counters.watchdog_stops += 1
                self._watchdog_level = 2
                self.scheduler.clear(now_s)
                return SafetyState.STOPPED, "watchdog"
            return SafetyState.HOLD, "clock_jump"
        if not self.scheduler.has_trajectory or self._last_valid_rx_s is None:
            return SafetyState.IDLE, "waiting_for_chunk"
        age = now_s - self._last_valid_rx_s
        if age > self._cfg.watchdog_stop_timeout_s:
            self.counters.watchdog_stops += 1
            if self._watchdog_level < 1:
                self.counters.watchdog_holds += 1
            self._watchdog_level = 2
            self.scheduler.clear(now_s)
            return SafetyState.STOPPED, "watchdog"
        if age > self._cfg.watchdog_hold_timeout_s:
            if self._watchdog_level < 1:
                self.counters.watchdog_holds += 1
                self._watchdog_level = 1
                if self._last_command is not None:
                    self.scheduler.hold(self._last_command, now_s)
                else:
                    self.scheduler.clear(now_s)
            return SafetyState.HOLD, "watchdog"
        if self.scheduler.is_exhausted(now_s):
            return SafetyState.HOLD, "starved"
        return SafetyState.RUNNING, "following"

    def _follow(self, now_s: float, meas: np.ndarray | None, dt: float, state: SafetyState,
                reason: str) -> TickResult:
        target = self.scheduler.target(now_s)
        if target is None:  # cannot happen with a trajectory; hold rather than guess
            return TickResult(self._hold_command(), SafetyState.HOLD, "no_target")
        clamped_target, clamped = clamp_to_envelope(target, self.lower, self.upper)
        ramp_base = None
        if self._last_command is None or self._guard_pending:
            if meas is None:
                return TickResult(self._hold_command(), SafetyState.HOLD, "no_measurement", target)
            refusal = self._startup_guard(meas, clamped_target)
            if refusal is not None:
                self.counters.startup_refusals += 1
                self._latch_fault(*refusal)
                return TickResult(self._hold_command(), SafetyState.FAULT, refusal[0], target)
            self._guard_pending = False
            if self._last_command is None:
                ramp_base = np.clip(meas, self.lower, self.upper)
                self._last_command = ramp_base.copy()
                dt = self.nominal_dt_s
        command, limited = rate_limit(clamped_target, self._last_command, self.max_step(dt))
        # The limit is a convex step between two in-envelope points; clip anyway against rounding.
        command = np.clip(command, self.lower, self.upper)
        self.counters.clamp_events += int(clamped)
        self.counters.rate_limit_events += int(limited)
        self._last_command = command.copy()
        return TickResult(command, state, reason, target, clamped, limited, ramp_base)

    def _startup_guard(self, meas: np.ndarray, first_target: np.ndarray) -> tuple[str, str] | None:
        names = self.embodiment.joint_names
        outside = np.maximum(self.lower - meas, meas - self.upper)
        tol = self.max_step()
        if np.any(outside > tol):
            j = int(np.argmax(outside - tol))
            return ("outside_envelope", f"measured {names[j]} = {meas[j]:.4g} is outside "
                                        f"[{self.lower[j]:.4g}, {self.upper[j]:.4g}]")
        dist = np.abs(first_target - meas)
        if np.max(dist) > self._cfg.startup_max_distance:
            j = int(np.argmax(dist))
            return ("startup_too_far",
                    f"first target for {names[j]} is {dist[j]:.3g} from the measured pose "
                    f"(startup_max_distance {self._cfg.startup_max_distance:g})")
        return None

    def _check_tracking(self, now_s: float, meas: np.ndarray | None) -> None:
        if meas is None or self._last_sent is None or self._shadow or self._fault is not None or (
                self._tracked.size == 0):
            self._tracking_bad_since = None
            return
        errors = np.abs(meas - self._last_sent)[self._tracked]
        err = float(np.max(errors))
        self.counters.tracking_error_last = err
        self.counters.tracking_error_max = max(self.counters.tracking_error_max, err)
        if err <= self._cfg.max_tracking_error:
            self._tracking_bad_since = None
            return
        if self._tracking_bad_since is None:
            self._tracking_bad_since = now_s
        elif now_s - self._tracking_bad_since >= self.tracking_error_grace_s:
            j = int(self._tracked[int(np.argmax(errors))])
            self._latch_fault(
                "tracking_error",
                f"{self.embodiment.joint_names[j]} is {err:.3g} from its command for "
                f"{now_s - self._tracking_bad_since:.2f} s "
                f"(max_tracking_error {self._cfg.max_tracking_error:g}): stalled, blocked or overloaded",
                [j],
            )


# ---- one control tick against a hardware backend ------------------------------------------------

class HardwarePort(Protocol):
    """What ``DriverCore`` needs from a hardware backend (``backends.hardware.HardwareInterface``)."""

    name: str

    @property
    def ready(self) -> bool: ...

    def read(self) -> Any: ...  # an object with ``positions`` and ``temperatures_c`` (HardwareReading)

    def write(self, positions: np.ndarray) -> np.ndarray: ...

    def relax(self) -> None: ...


@dataclass
class CycleResult:
    """One control tick: the stack's decision, what was measured and what the hardware accepted."""

    tick: TickResult
    positions: np.ndarray | None  # measured this tick (None: not ready or the read failed)
    sent: np.ndarray | None  # what the backend accepted (None: nothing written this tick)
    events: list[tuple[str, str]]  # (level, line) for the caller's log: this class never logs


class DriverCore:
    """read -> ``SafetyStack.tick`` -> write -> ``record_sent``, with hardware-error policy, no threads.

    - A backend that is connected but not ``ready`` (no joint states yet from a ROS robot) is not read;
      the stack ticks without a measurement (writes nothing before the guarded start). Not ready for
      ``ready_timeout_ticks`` latches ``hardware_not_ready``.
    - ``error_limit`` consecutive read or write failures latch ``read_error`` / ``write_error``; a
      single failure is a glitch: the stack keeps its limits against what the robot really got.
    - A FAULT tick with ``relax`` calls ``hardware.relax()`` once, if anything was ever written.
    - Shadow mode: everything is computed, nothing is written or relaxed.
    """

    def __init__(self, stack: SafetyStack, hardware: HardwarePort, *, error_limit: int = 3,
                 ready_timeout_ticks: int | None = None):
        if error_limit < 1:
            raise ValueError(f"error_limit must be >= 1, got {error_limit}")
        self.stack = stack
        self.hardware = hardware
        self.error_limit = int(error_limit)
        self.ready_timeout_ticks = (int(5.0 * stack.embodiment.tick_rate_hz) if ready_timeout_ticks is None
                                    else int(ready_timeout_ticks))
        self.read_errors = 0
        self.write_errors = 0
        self.relaxes = 0
        self.not_ready_ticks = 0
        self.read_streak = 0
        self.write_streak = 0
        self.relaxed = False  # the backend was relaxed and nothing was written since
        self._was_ready = False
        self._wrote = False  # anything written since connect (relaxing a robot we never drove is not ours)

    @property
    def hardware_ready(self) -> bool:
        return self._was_ready

    def clear_errors(self) -> None:
        """After a reset: failure streaks start over."""
        self.read_streak = self.write_streak = 0

    def cycle(self, now_s: float) -> CycleResult:
        stack, hw = self.stack, self.hardware
        events: list[tuple[str, str]] = []
        positions = temperatures = None
        if not self._was_ready and not hw.ready:
            self.not_ready_ticks += 1
            if self.not_ready_ticks == self.ready_timeout_ticks:
                stack.latch_fault("hardware_not_ready",
                                  f"{hw.name} backend connected but gave no measurement for "
                                  f"{self.not_ready_ticks} ticks")
        else:
            self._was_ready = True
            try:
                reading = hw.read()
                positions, temperatures = reading.positions, reading.temperatures_c
                self.read_streak = 0
            except HardwareError as exc:
                self.read_errors += 1
                self.read_streak += 1
                if self.read_streak == 1:
                    events.append(("warning", f"hardware read failed: {exc}"))
                if self.read_streak == self.error_limit:
                    stack.latch_fault("read_error", f"{self.read_streak} reads failed in a row: {exc}")
        result = stack.tick(now_s, positions, temperatures)
        sent = None
        if stack.shadow:
            pass
        elif result.command is not None:
            try:
                sent = hw.write(result.command)
                self.write_streak = 0
                self._wrote, self.relaxed = True, False
            except HardwareError as exc:
                self.write_errors += 1
                self.write_streak += 1
                if self.write_streak == 1:
                    events.append(("warning", f"hardware write failed: {exc}"))
                if self.write_streak == self.error_limit:
                    stack.latch_fault("write_error", f"{self.write_streak} writes failed in a row: {exc}")
            stack.record_sent(sent)
        elif result.relax and self._wrote and not self.relaxed:
            self.relaxed = True  # one attempt per fault: a backend that failed to relax is not retried
            try:
                hw.relax()
                self.relaxes += 1
                events.append(("warning", f"fault {result.reason}: {hw.name} backend relaxed (fault_action relax)"))
            except HardwareError as exc:
                events.append(("error", f"fault {result.reason}: relaxing the {hw.name} backend failed: {exc}"))
        return CycleResult(result, positions, sent, events)
