"""The driver's safety stack: everything that reaches a motor passes through here first.

Order, as ARCHITECTURE.md gives it: chunk validation (on receipt, ``core.chunk_validation``) -> scheduler
target -> joint envelope clamp -> velocity / acceleration / envelope-braking shaper against the last
command (``core.motion_limits``) -> startup guard / ramp from the measured pose -> hardware write (done by
``core.driver_core.DriverCore`` with the command ``SafetyStack.tick`` returns). Around it: a watchdog (no
valid chunk for ``watchdog_hold_timeout_s``: hold; for ``watchdog_stop_timeout_s``: stop), a latched
e-stop, a tracking-error monitor (arm joints only: grippers stall on purpose when they grasp), latched
hardware faults (read/write failures reported by the driver, non-finite or malformed measurements,
over-temperature) and ROS clock jumps (sim reset, bag loop, a stepped system clock).

Every stop is a controlled one: holding, e-stop, watchdog and faults brake from the current velocity
within each joint's acceleration limit, then keep commanding the pose where the arm stopped (ISO 10218's
category 2; motor firmware that falls into damping without commands keeps getting its heartbeat). With
``safety.fault_action: relax`` a fault instead stops commanding and forgets the last command, so that
nothing (an e-stop included) drives a relaxed, sagged arm back; only ``reset`` re-engages it, at the
measured pose. Nothing is written before the first guarded command, except the heartbeat of a backend
that needs one: the measured pose, latched once. An unguarded first command stripped an SO-101 gear
(EMBODIMENTS_AND_PEERS.md).

A bimanual station is one stack: one watchdog, one e-stop, and a fault on either arm holds both (the
fault detail and ``fault_arms`` name the arm).

``tick`` cannot raise: validated chunks keep the arithmetic finite, and anything unexpected latches an
``internal_error`` fault and still returns the controlled stop. Plain Python and numpy; thread-safe
(chunks arrive on executor threads, ticks run on the control thread, e-stop and reset on service threads).
Times are ROS time in float seconds.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.chunk_validation import (
    REJECT_ENTRY_TOO_FAR,
    REJECT_ESTOP,
    REJECT_FAULT,
    REJECT_INACTIVE,
    REJECT_OUT_OF_ORDER,
    REJECT_REASONS,
    validate_chunk,
)
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.core.motion_limits import MotionShaper, Shaped, clamp_to_envelope
from molmoact2_ros.core.scheduler import ChunkScheduler

# A ROS clock that jumps back by more than this (sim reset, bag loop) forgets stamps and holds.
CLOCK_JUMP_BACK_S = 1.0
# A gap this long between two ticks is a clock jump too (a stepped system clock, /clock resuming far
# ahead, or a control thread stalled that long): the plan belongs to another time base, so hold.
CLOCK_JUMP_FORWARD_S = 1.0
FAULT_ACTIONS = ("hold", "relax")
# The startup ramp is over once the command is within this many ramp-speed ticks of the target.
RAMP_DONE_TICKS = 1.0
# A plan's end is braked for from this many ticks before the stopping time from the current speed.
STOP_LOOKAHEAD_TICKS = 2.0


class SafetyState(StrEnum):
    IDLE = "IDLE"  # nothing to execute (not started, waiting for the first chunk, after a reset)
    RUNNING = "RUNNING"  # following the scheduler
    HOLD = "HOLD"  # braking to / holding a stop (watchdog, starved chunk, deactivated, entering shadow)
    STOPPED = "STOPPED"  # watchdog stop: trajectory dropped, next chunk goes through the startup guard
    ESTOP = "ESTOP"  # latched until reset
    FAULT = "FAULT"  # latched until reset: startup refused, tracking error, hardware fault


@dataclass
class SafetyCounters:
    ticks: int = 0
    chunks_received: int = 0
    chunks_accepted: int = 0
    chunks_superseded: int = 0  # valid, but replaced by a newer one before a tick spliced it
    clamp_events: int = 0  # ticks whose target was clipped to the envelope
    rate_limit_events: int = 0  # ticks whose motion the shaper bounded (velocity, acceleration, braking, ramp)
    watchdog_holds: int = 0
    watchdog_stops: int = 0
    startup_refusals: int = 0
    estops: int = 0
    faults: int = 0
    clock_jumps: int = 0
    internal_errors: int = 0
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
    rate_limited: bool = False  # the shaper bounded this tick's motion
    ramp_base: np.ndarray | None = None  # set on the tick that (re)started commanding from the measured pose
    relax: bool = False  # a latched fault with fault_action relax: stop commanding, let the backend relax
    shadow: bool = False  # decided inside the tick: compute, never write
    velocity: np.ndarray | None = None  # of ``command`` (robot units / s of credited tick time)


def credited_dt(now_s: float, last_s: float | None, nominal_s: float) -> float:
    """The time a tick is credited for motion since the last command: the ROS-time interval, capped at the
    nominal period (a late tick must not make a bigger step). No previous command, or a clock that stood
    still or stepped back: one period, because the control loop still ticked once in real time (freezing the
    command then would be an instant stop)."""
    if last_s is None:
        return nominal_s
    elapsed = now_s - last_s
    return nominal_s if elapsed <= 0.0 else min(elapsed, nominal_s)


def effective_max_temperature_c(*limits: float | None) -> float | None:
    """The strictest of the configured over-temperature limits (None where none is set)."""
    given = [float(x) for x in limits if x is not None]
    return min(given) if given else None


class SafetyStack:
    """Scheduler + safety limits for one driver; ``submit`` chunks on receipt, ``tick`` every period."""

    def __init__(self, embodiment: EmbodimentConfig, *, scheduler: ChunkScheduler | None = None,
                 tracking_error_grace_s: float | None = None, max_temperature_c: float | None = None,
                 fault_action: str | None = None, shadow: bool = False, heartbeat: bool = False):
        """``tracking_error_grace_s`` and ``fault_action`` default to the embodiment's safety config;
        ``max_temperature_c`` (the backend's limit) is combined with ``safety.max_temperature_c``: the
        lower one applies. Pass ``fault_action="hold"`` for a backend that cannot relax, ``heartbeat=True``
        for one whose motors need a command every tick even while nothing moves."""
        cfg = embodiment.safety
        self.embodiment = embodiment
        self.scheduler = scheduler or ChunkScheduler.for_embodiment(embodiment)
        self.lower = embodiment.lower
        self.upper = embodiment.upper
        self.max_velocity = embodiment.max_velocity
        self.max_acceleration = embodiment.max_acceleration
        self.startup_max_distance = embodiment.startup_max_distance
        self.entry_max_distance = embodiment.entry_max_distance
        self.max_tracking_error = embodiment.max_tracking_error
        self.ramp_speed = cfg.startup_ramp_speed_fraction * self.max_velocity
        self.shaper = MotionShaper(self.lower, self.upper, self.max_velocity, self.max_acceleration)
        self.nominal_dt_s = 1.0 / embodiment.tick_rate_hz
        self.heartbeat = bool(heartbeat)
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
        self._cfg = cfg
        self._lock = threading.RLock()
        self._pending: ActionChunk | None = None
        self._enabled = False
        self._shadow = bool(shadow)  # in effect: nothing is written
        self._shadow_requested = bool(shadow)  # asked for: takes effect once the arm stands still
        self._estop_reason: str | None = None
        self._fault: tuple[str, str] | None = None
        self._fault_arms: list[str] = []
        self._jump_hold_since: float | None = None  # holding after a clock jump, since (new time base)
        zero = np.zeros(embodiment.dof)
        self._last_command: np.ndarray | None = None
        self._velocity = zero.copy()  # of the last command
        self._last_target: np.ndarray | None = None  # the previous following tick's clamped target
        self._last_command_s: float | None = None  # ROS time the last command was issued
        self._prev_command: np.ndarray | None = None  # before this tick (what a failed write leaves)
        self._prev_velocity = zero.copy()
        self._prev_command_s: float | None = None
        self._last_sent: np.ndarray | None = None
        self._guard_pending = True
        self._ramping = False
        self._relaxed = False  # a relax fault forgot the last command: nothing drives the arm until reset
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
        """Shadow mode in effect (nothing is written)."""
        return self._shadow

    @property
    def shadow_requested(self) -> bool:
        """Shadow mode asked for; it takes effect once the arm has braked to a stop."""
        return self._shadow_requested

    @property
    def last_command(self) -> np.ndarray | None:
        with self._lock:
            return None if self._last_command is None else self._last_command.copy()

    @property
    def velocity(self) -> np.ndarray:
        """Velocity of the last command (robot units / s)."""
        with self._lock:
            return self._velocity.copy()

    @property
    def standing_still(self) -> bool:
        """No command in motion: braked to a stop, relaxed, or never commanded."""
        with self._lock:
            return self._last_command is None or not np.any(self._velocity)

    @property
    def fault(self) -> tuple[str, str] | None:
        return self._fault

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    def snapshot(self) -> dict[str, Any]:
        """Counters and state as flat key-values for /diagnostics."""
        with self._lock:
            c, s = self.counters, self.scheduler.stats
            out: dict[str, Any] = {
                "state": self._state.value,
                "state_reason": self._reason,
                "enabled": self._enabled,
                "shadow_mode": self._shadow,
                "shadow_requested": self._shadow_requested,
                "estop_latched": self._estop_reason is not None,
                "fault": self._fault[0] if self._fault else "",
                "fault_detail": self._fault[1] if self._fault else "",
                "fault_arms": ",".join(self._fault_arms),
                "fault_action": self.fault_action,
                "relaxed": self._relaxed,
                "heartbeat": self.heartbeat,
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
                "internal_errors": c.internal_errors,
                "tracking_error_max": c.tracking_error_max,
                "tracking_error_last": c.tracking_error_last,
                "speed_fraction_last": float(np.max(np.abs(self._velocity) / self.max_velocity)),
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
            if math.isfinite(chunk.stamp_s) and math.isfinite(now_s):
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
        """Latch the e-stop: brake to a stop and hold it, drop the trajectory, refuse chunks until reset."""
        with self._lock:
            if self._estop_reason is None:
                self.counters.estops += 1
                self._estop_reason = reason
            self._drop_motion(None)
            self._state, self._reason = SafetyState.ESTOP, reason

    def latch_fault(self, reason: str, detail: str = "", joints: Sequence[int] = ()) -> None:
        """Latch a fault (hardware read/write failure, over-temperature, ...): brake and hold (or relax) until
        reset. ``joints`` (embodiment indices) name the arm(s) it concerns on a bimanual station; every arm
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
        """Clear a latched e-stop or fault. Motion restarts from the measured pose, guarded.

        Refused while the arm is still braking to its stop (a reset then would forget the command it is
        decelerating from): retry once ``standing_still``.
        """
        with self._lock:
            if not self._shadow and self._last_command is not None and np.any(self._velocity):
                speed = float(np.max(np.abs(self._velocity) / self.max_velocity))
                return False, (f"still braking to a stop ({speed:.0%} of the velocity limit); retry in a moment")
            was = self._estop_reason or (self._fault[0] if self._fault else None)
            self._estop_reason = None
            self._fault = None
            self._fault_arms = []
            self._tracking_bad_since = None
            self._relaxed = False
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
        """Stop following chunks: brake to a stop and hold it (lifecycle deactivate)."""
        with self._lock:
            self._enabled = False
            self._drop_motion(now_s)

    def forget_command(self) -> None:
        """The driver stopped driving and relaxed the robot (``relax_on_stop``): forget the last command, as
        a relax fault does, so that the next motion re-engages at the measured pose through the startup
        guard instead of driving the sagged arm back to where it was."""
        with self._lock:
            self._disarm()

    def set_shadow(self, shadow: bool) -> None:
        """Enter or leave shadow mode.

        Entering brakes the arm to a stop first (the last written command must not be a moving one);
        shadow mode takes effect on the tick it stands still. Leaving forgets the unwritten shadow
        trajectory: motion restarts from the measured pose, through the startup guard.
        """
        with self._lock:
            self._shadow_requested = bool(shadow)
            if not shadow and self._shadow:
                self._disarm()
                self._shadow = False

    def record_sent(self, sent: np.ndarray | None) -> None:
        """Tell the stack what the hardware actually got this tick; None: the write failed."""
        with self._lock:
            if sent is None:
                # The robot never got this command: keep shaping against what it did get.
                self._last_command = None if self._prev_command is None else self._prev_command.copy()
                self._velocity = self._prev_velocity.copy()
                self._last_command_s = self._prev_command_s
                self._last_target = None
            else:
                sent = np.asarray(sent, dtype=np.float64)
                if self._last_command is not None and self._prev_command is not None and not np.allclose(
                        sent, self._last_command, rtol=0.0, atol=1e-12):
                    # The backend clipped the command: its motion is what the next tick continues from.
                    self._velocity = (sent - self._prev_command) / self.nominal_dt_s
                self._last_command = sent.copy()
                self._last_sent = sent.copy()

    # ---- the tick -------------------------------------------------------------------------------
    def tick(self, now_s: float, measured: np.ndarray | None, temperatures_c: np.ndarray | None = None,
             velocities: np.ndarray | None = None) -> TickResult:
        """Run one control tick at ROS time ``now_s`` with the measured pose (None: read failed).

        Never raises: an unexpected error latches ``internal_error`` and the result is a controlled stop."""
        with self._lock:
            try:
                result = self._tick(now_s, measured, temperatures_c, velocities)
            except Exception as exc:  # the last line of defence: a dead tick would write nothing at all
                self.counters.internal_errors += 1
                self._latch_fault("internal_error", f"{type(exc).__name__}: {exc}")
                result = self._safe_stop()
            result.shadow = self._shadow
            self._state, self._reason = result.state, result.reason
            return result

    # ---- internals (lock held) ----------------------------------------------------------------------
    def _tick(self, now_s: float, measured: Any, temperatures_c: Any, velocities: Any) -> TickResult:
        c = self.counters
        c.ticks += 1
        if not math.isfinite(now_s):
            raise ValueError(f"tick time {now_s} is not a time")
        if self._last_tick_s is not None and not (
                -CLOCK_JUMP_BACK_S <= now_s - self._last_tick_s <= CLOCK_JUMP_FORWARD_S):
            self._clock_jumped(now_s)
        dt = credited_dt(now_s, self._last_command_s, self.nominal_dt_s)
        self._last_tick_s = now_s
        meas = self._checked_measurement(measured, temperatures_c, velocities)
        self._check_tracking(now_s, meas)

        pending, self._pending = self._pending, None
        if pending is not None:
            self._splice(pending, now_s)

        self._prev_command = None if self._last_command is None else self._last_command.copy()
        self._prev_velocity = self._velocity.copy()
        self._prev_command_s = self._last_command_s
        if self._shadow_requested and not self._shadow and (
                self._last_command is None or not np.any(self._velocity)):
            self._shadow = True
        state, reason = self._resolve_state(now_s)
        if state is SafetyState.RUNNING or (state is SafetyState.HOLD and reason == "starved"):
            return self._follow(now_s, meas, dt, state, reason)
        if state is SafetyState.FAULT and self.fault_action == "relax":
            return self._relax(state, reason)
        return self._stand(now_s, meas, dt, state, reason)

    def _safe_stop(self) -> TickResult:
        """The controlled stop by the shortest path, for a tick that failed unexpectedly."""
        try:
            return self._stand(None, None, self.nominal_dt_s, SafetyState.FAULT, "internal_error")
        except Exception:  # nothing left to compute with: hold the last command still
            self._velocity = np.zeros(self.embodiment.dof)
            return TickResult(self._last_command.copy() if self._last_command is not None else None,
                              SafetyState.FAULT, "internal_error")

    def _count_rejection(self, reason: str) -> None:
        with self._lock:
            self.counters.rejections[reason] += 1

    def _drop_motion(self, now_s: float | None) -> None:
        self._pending = None
        self._jump_hold_since = None
        self.scheduler.clear(now_s)

    def _disarm(self) -> None:
        """Forget the last command: the next motion ramps from the measured pose, after the guard."""
        self._drop_motion(None)
        self._last_command = None
        self._last_command_s = None
        self._prev_command = None
        self._velocity = np.zeros(self.embodiment.dof)
        self._prev_velocity = self._velocity.copy()
        self._last_target = None
        self._last_sent = None
        self._guard_pending = True
        self._ramping = False
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

    def _checked_measurement(self, measured: Any, temperatures_c: Any, velocities: Any) -> np.ndarray | None:
        """The measured pose if it is usable. A malformed or non-finite reading is a hardware fault decided
        here, for every backend alike (``NaN > limit`` is False: it would pass every later check)."""
        dof = self.embodiment.dof
        names = self.embodiment.joint_names
        meas = _as_vector(measured, dof)
        if measured is not None:
            if meas is None:
                self._latch_fault("measurement_invalid", f"joint positions {_describe(measured)} are not {dof} "
                                                         "numbers")
            elif not np.all(np.isfinite(meas)):
                bad = np.flatnonzero(~np.isfinite(meas))
                self._latch_fault("measurement_invalid", f"non-finite measured position for "
                                                         f"{[names[i] for i in bad]}", bad.tolist())
                meas = None
        if velocities is not None:
            vel = _as_vector(velocities, dof)
            if vel is None or not np.all(np.isfinite(vel)):
                self._latch_fault("measurement_invalid", f"measured velocities {_describe(velocities)} are not "
                                                         f"{dof} finite numbers")
        if temperatures_c is not None:
            temps = _as_vector(temperatures_c, None)
            if temps is None or temps.size > dof or not np.all(np.isfinite(temps)):
                self._latch_fault("temperature_invalid", f"motor temperatures {_describe(temperatures_c)} are "
                                                         f"not up to {dof} finite numbers")
            elif self.max_temperature_c is not None:
                hot = np.flatnonzero(temps > self.max_temperature_c)
                if hot.size:
                    self._latch_fault("over_temperature",
                                      f"{[names[i] for i in hot]} above {self.max_temperature_c:g} C "
                                      f"(max {temps.max():.1f} C)", hot.tolist())
        return meas

    def _clock_jumped(self, now_s: float) -> None:
        """The ROS clock jumped (either way): forget the plan and its time base, brake and hold."""
        self.counters.clock_jumps += 1
        self.scheduler.forget_stamps()
        self._drop_motion(None)
        self._last_valid_rx_s = None
        self._last_tick_s = None
        self._last_command_s = None  # its time belongs to the old time base: the next tick is credited a period
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
        # After a watchdog stop the next motion starts over through the startup guard (against the
        # measured pose) instead of the entry check against the held command.
        guarded = self._guard_pending or self._watchdog_level == 2
        try:
            placement = self.scheduler.plan(chunk, now_s, executing=executing)
            if self._last_command is not None and not guarded:
                # Where the new plan wants the arm now vs where it is being commanded: a chunk from a policy
                # that saw another state (or another arm) is refused rather than blended in.
                entry = np.clip(placement.position(now_s), self.lower, self.upper)
                gap = np.abs(entry - self._last_command)
                over = gap / self.entry_max_distance
                if np.any(over > 1.0):
                    j = int(np.argmax(over))
                    raise ChunkRejected(
                        REJECT_ENTRY_TOO_FAR,
                        f"its step for now puts {self.embodiment.joint_names[j]} {gap[j]:.3g} from the current "
                        f"command (entry_max_distance {self.entry_max_distance[j]:g})")
        except ChunkRejected as exc:
            self.counters.rejections[exc.reason] += 1
            return
        self.scheduler.commit(placement)
        self.counters.chunks_accepted += 1
        self._last_valid_rx_s = chunk.received_s if chunk.received_s is not None else now_s
        self._guard_pending = guarded
        self._watchdog_level = 0
        self._jump_hold_since = None

    def _resolve_state(self, now_s: float) -> tuple[SafetyState, str]:
        if self._estop_reason is not None:
            return SafetyState.ESTOP, self._estop_reason
        if self._fault is not None:
            return SafetyState.FAULT, self._fault[0]
        if not self._enabled:
            return (SafetyState.HOLD if self._last_command is not None else SafetyState.IDLE), "inactive"
        if self._shadow_requested and not self._shadow:
            return SafetyState.HOLD, "entering_shadow"
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

    def _commit(self, shaped: Shaped, now_s: float | None) -> None:
        self._last_command = shaped.command.copy()
        self._last_command_s = now_s
        self._velocity = shaped.velocity.copy()
        self.counters.rate_limit_events += int(shaped.shaped)

    def _stand(self, now_s: float | None, meas: np.ndarray | None, dt: float, state: SafetyState,
               reason: str) -> TickResult:
        """Every state that does not follow a chunk: brake to a stop and hold it; where the backend needs a
        heartbeat and nothing was commanded yet (IDLE, HOLD), latch the measured pose and command it."""
        self._last_target = None
        self._ramping = False
        if self._last_command is not None:
            shaped = self.shaper.brake(self._last_command, self._velocity, dt)
            self._commit(shaped, now_s)
            if now_s is not None and reason in ("watchdog", "clock_jump") and state is SafetyState.HOLD:
                # The next chunk blends out of where the arm really stops, not where the stop began.
                self.scheduler.hold(shaped.command, now_s)
            return TickResult(shaped.command.copy(), state, reason, rate_limited=shaped.shaped,
                              velocity=shaped.velocity.copy())
        if (self.heartbeat and not self._relaxed and meas is not None
                and state in (SafetyState.IDLE, SafetyState.HOLD) and self._inside_envelope(meas)):
            base = np.clip(meas, self.lower, self.upper)
            self._last_command = base.copy()
            self._last_command_s = now_s
            self._velocity = np.zeros(self.embodiment.dof)
            return TickResult(base.copy(), state, reason, ramp_base=base.copy(), velocity=self._velocity.copy())
        return TickResult(None, state, reason)

    def _relax(self, state: SafetyState, reason: str) -> TickResult:
        """fault_action relax: stop commanding and forget the last command, so that nothing (an e-stop or a
        hold included) drives the relaxed arm back to it; ``reset`` re-engages at the measured pose."""
        if not self._relaxed:
            self._disarm()
            self._relaxed = True
        return TickResult(None, state, reason, relax=True)

    def _follow(self, now_s: float, meas: np.ndarray | None, dt: float, state: SafetyState,
                reason: str) -> TickResult:
        target = self.scheduler.target(now_s)
        if target is None:  # cannot happen with a trajectory; hold rather than guess
            return self._stand(now_s, meas, dt, SafetyState.HOLD, "no_target")
        clamped_target, clamped = clamp_to_envelope(target, self.lower, self.upper)
        ramp_base = None
        if self._last_command is None or self._guard_pending:
            if meas is None:
                return self._stand(now_s, meas, dt, SafetyState.HOLD, "no_measurement")
            refusal = self._startup_guard(meas, clamped_target)
            if refusal is not None:
                self.counters.startup_refusals += 1
                self._latch_fault(*refusal)
                return self._stand(now_s, meas, dt, SafetyState.FAULT, refusal[0])
            self._guard_pending = False
            self._ramping = True
            self._last_target = None
            if self._last_command is None:
                ramp_base = np.clip(meas, self.lower, self.upper)
                self._last_command = ramp_base.copy()
                self._velocity = np.zeros(self.embodiment.dof)
                dt = self.nominal_dt_s
        shaped = self.shaper.follow(self._last_command, self._velocity, clamped_target, self._last_target, dt,
                                    approach_speed=self.ramp_speed if self._ramping else None,
                                    stop_at=self._plan_stop(now_s))
        self._commit(shaped, now_s)
        self._last_target = clamped_target
        if self._ramping and np.all(np.abs(clamped_target - shaped.command)
                                    <= RAMP_DONE_TICKS * self.ramp_speed * self.nominal_dt_s + 1e-12):
            self._ramping = False  # caught up with the plan: corrections at full speed from here
        self.counters.clamp_events += int(clamped)
        return TickResult(shaped.command.copy(), state, reason, target, clamped, shaped.shaped, ramp_base,
                          velocity=shaped.velocity.copy())

    def _plan_stop(self, now_s: float) -> np.ndarray | None:
        """The plan's last step once its end is within a stopping distance: a plan that ends in motion (a
        starved policy) is stopped at its end, not overshot and returned to."""
        end = self.scheduler.plan_end()
        if end is None:
            return None
        position, end_s = end
        stopping_s = float(np.max(np.abs(self._velocity) / self.max_acceleration)) + STOP_LOOKAHEAD_TICKS * (
            self.nominal_dt_s)
        if end_s - now_s > stopping_s:
            return None
        return np.clip(position, self.lower, self.upper)

    def _inside_envelope(self, meas: np.ndarray) -> bool:
        """Within one tick at the velocity limit of the envelope (sensor noise at a limit is not a fault)."""
        tol = self.max_velocity * self.nominal_dt_s
        return bool(np.all((meas >= self.lower - tol) & (meas <= self.upper + tol)))

    def _startup_guard(self, meas: np.ndarray, first_target: np.ndarray) -> tuple[str, str] | None:
        names = self.embodiment.joint_names
        outside = np.maximum(self.lower - meas, meas - self.upper)
        tol = self.max_velocity * self.nominal_dt_s
        if np.any(outside > tol):
            j = int(np.argmax(outside - tol))
            return ("outside_envelope", f"measured {names[j]} = {meas[j]:.4g} is outside "
                                        f"[{self.lower[j]:.4g}, {self.upper[j]:.4g}]")
        dist = np.abs(first_target - meas)
        over = dist / self.startup_max_distance
        if np.any(over > 1.0):
            j = int(np.argmax(over))
            unit = self.embodiment.joints[j].unit
            return ("startup_too_far",
                    f"first target for {names[j]} is {dist[j]:.3g} {unit} from the measured pose "
                    f"(startup_max_distance {self.startup_max_distance[j]:g} {unit})")
        return None

    def _check_tracking(self, now_s: float, meas: np.ndarray | None) -> None:
        if meas is None or self._last_sent is None or self._shadow or self._fault is not None or (
                self._tracked.size == 0):
            self._tracking_bad_since = None
            return
        errors = np.abs(meas - self._last_sent)[self._tracked]
        limits = self.max_tracking_error[self._tracked]
        err = float(np.max(errors))
        self.counters.tracking_error_last = err
        self.counters.tracking_error_max = max(self.counters.tracking_error_max, err)
        if np.all(errors <= limits):
            self._tracking_bad_since = None
            return
        if self._tracking_bad_since is None:
            self._tracking_bad_since = now_s
        elif now_s - self._tracking_bad_since >= self.tracking_error_grace_s:
            k = int(np.argmax(errors / limits))
            j = int(self._tracked[k])
            self._latch_fault(
                "tracking_error",
                f"{self.embodiment.joint_names[j]} is {errors[k]:.3g} from its command for "
                f"{now_s - self._tracking_bad_since:.2f} s "
                f"(max_tracking_error {limits[k]:g}): stalled, blocked or overloaded",
                [j],
            )


def _as_vector(value: Any, size: int | None) -> np.ndarray | None:
    """``value`` as a flat float array of ``size`` (any size if None); None if it is not one."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if arr.ndim != 1 or (size is not None and arr.shape[0] != size):
        return None
    return arr


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
