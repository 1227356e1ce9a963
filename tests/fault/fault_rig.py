"""A driver in simulated time for fault injection: SafetyStack + DriverCore + MockArm on one clock.

``FaultRig.tick`` runs exactly what the driver node's control thread runs (``DriverCore.cycle``) and
checks every command that reaches the arm on the spot with ``core.command_audit.CommandAuditor``:

- finite and inside the joint envelope;
- within the speed and acceleration limits against the previous command the arm accepted, or, on a
  (re)start, against the measured pose it ramps from (which must be the measurement of that tick);
- a controlled stop (no joint speeding up or reversing) while e-stopped, faulted, stopped or held by the
  watchdog / a clock jump / deactivation; nothing at all once a fault relaxed the arm.

A violation raises AssertionError at the tick it happens. ``Policy`` plays a policy node: chunks
computed from an observation ``latency_s`` before they arrive, following a smooth reference motion
with a per-chunk disagreement, as a real VLA's successive chunks do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from molmoact2_ros.backends.hardware import MockArm
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.command_audit import CommandAuditor
from molmoact2_ros.core.driver_core import CycleResult, DriverCore
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.core.safety import SafetyStack, SafetyState

T0 = 1000.0
EPS = 1e-9


def embodiment(name: str = "so101", **safety: Any) -> EmbodimentConfig:
    """A built-in embodiment with some safety settings overridden."""
    emb = load_embodiment(name)
    if safety:
        emb = emb.model_copy(update={"safety": emb.safety.model_copy(update=safety)})
    return emb


class RecordingArm(MockArm):
    """MockArm that keeps every command it accepted, with the simulated time it arrived."""

    def __init__(self, emb: EmbodimentConfig, clock: Callable[[], float]):
        super().__init__(emb, clock=clock, sleep=lambda s: None)
        self.accepted: list[tuple[float, np.ndarray]] = []
        self.never_ready = False

    @property
    def ready(self) -> bool:
        return self.connected and not self.never_ready

    def write(self, positions: np.ndarray) -> np.ndarray:
        sent = super().write(positions)
        self.accepted.append((self._clock(), sent.copy()))
        return sent


@dataclasses.dataclass
class TickLog:
    t: float
    state: SafetyState
    reason: str
    sent: np.ndarray | None
    measured: np.ndarray | None
    ramp_base: np.ndarray | None


class FaultRig:
    def __init__(self, emb: EmbodimentConfig | str = "so101", *, error_limit: int = 3,
                 ready_timeout_ticks: int | None = None, shadow: bool = False):
        self.emb = load_embodiment(emb) if isinstance(emb, str) else emb
        self.dt = 1.0 / self.emb.tick_rate_hz
        self.step_limit = self.emb.max_velocity * self.dt
        self.t = T0
        self.arm = RecordingArm(self.emb, clock=lambda: self.t)
        self.arm.connect()
        self.stack = SafetyStack(self.emb, max_temperature_c=self.arm.max_temperature_c, shadow=shadow,
                                 heartbeat=self.arm.needs_heartbeat)
        self.core = DriverCore(self.stack, self.arm, error_limit=error_limit,
                               ready_timeout_ticks=ready_timeout_ticks)
        self.stack.enable()
        self.log: list[TickLog] = []
        self.rejections: list[str] = []
        self.audit = CommandAuditor(self.emb)
        self._relaxed = False

    # ---- chunks ---------------------------------------------------------------------------------
    def chunk(self, start: Any, velocity: Any = 0.0, *, stamp: float | None = None, steps: int = 30,
              names: list[str] | None = None) -> ActionChunk:
        start = np.broadcast_to(np.asarray(start, dtype=float), (self.emb.dof,))
        velocity = np.broadcast_to(np.asarray(velocity, dtype=float), (self.emb.dof,))
        k = np.arange(steps)[:, None] / self.emb.control_rate_hz
        return ActionChunk(list(names or self.emb.joint_names), start + velocity * k,
                           self.t if stamp is None else stamp, self.emb.control_rate_hz)

    def submit(self, chunk: ActionChunk) -> str | None:
        """Deliver a chunk now (as the driver's subscription does); return the rejection reason or None."""
        try:
            self.stack.submit(chunk, self.t)
        except ChunkRejected as exc:
            self.rejections.append(exc.reason)
            return exc.reason
        return None

    # ---- ticks ----------------------------------------------------------------------------------
    def tick(self) -> CycleResult:
        n_before = len(self.arm.accepted)
        cycle = self.core.cycle(self.t)
        res = cycle.tick
        wrote = len(self.arm.accepted) > n_before
        sent = self.arm.accepted[-1][1] if wrote else None
        if wrote:
            assert sent is not None
            self._check_command(sent, cycle)
        elif res.relax or res.shadow:
            self.audit.forget()
        if res.relax:
            self._relaxed = True
        self.log.append(TickLog(self.t, res.state, res.reason, sent, cycle.positions, res.ramp_base))
        self.t += self.dt
        return cycle

    def _check_command(self, sent: np.ndarray, cycle: CycleResult) -> None:
        res = cycle.tick
        where = f"t={self.t - T0:.4f} s, state {res.state.value} ({res.reason})"
        if res.ramp_base is not None:
            assert cycle.positions is not None, f"ramp without a measurement at {where}"
            np.testing.assert_allclose(res.ramp_base, np.clip(cycle.positions, self.emb.lower, self.emb.upper),
                                       atol=EPS, err_msg=f"ramp base is not the measured pose at {where}")
            self._relaxed = False
        assert not self._relaxed, f"wrote to a relaxed arm at {where}: {sent}"
        following = res.state is SafetyState.RUNNING or (res.state is SafetyState.HOLD and res.reason == "starved")
        bad = self.audit.observe(self.t, sent, restart_from=res.ramp_base, stopping=not following, context=where)
        assert not bad, bad

    def run(self, seconds: float, policy: Policy | None = None,
            each_tick: Callable[[FaultRig], None] | None = None) -> None:
        for _ in range(round(seconds / self.dt)):
            if each_tick is not None:
                each_tick(self)
            if policy is not None:
                policy.maybe_publish(self)
            self.tick()

    def run_until(self, pred: Callable[[FaultRig], bool], max_seconds: float, policy: Policy | None = None) -> None:
        for _ in range(round(max_seconds / self.dt)):
            if pred(self):
                return
            if policy is not None:
                policy.maybe_publish(self)
            self.tick()
        raise AssertionError(f"condition not reached within {max_seconds} s of simulated time; "
                             f"state {self.stack.state.value} ({self.stack.reason})")

    # ---- views ----------------------------------------------------------------------------------
    def transitions(self) -> list[tuple[str, str]]:
        """(state, reason) each time it changed, from the first tick."""
        out: list[tuple[str, str]] = []
        for entry in self.log:
            key = (entry.state.value, entry.reason)
            if not out or out[-1] != key:
                out.append(key)
        return out

    def states(self) -> list[str]:
        out: list[str] = []
        for entry in self.log:
            if not out or out[-1] != entry.state.value:
                out.append(entry.state.value)
        return out

    def sent_since(self, t: float) -> np.ndarray:
        rows = [c for (ts, c) in self.arm.accepted if ts >= t - EPS]
        return np.array(rows).reshape(-1, self.emb.dof)

    def mark(self) -> int:
        """A bookmark into the commands written so far (for clocks that jump)."""
        return len(self.arm.accepted)

    def sent_after(self, mark: int) -> np.ndarray:
        return np.array([c for _, c in self.arm.accepted[mark:]]).reshape(-1, self.emb.dof)

    def measured_at(self, t: float) -> np.ndarray:
        """The measurement the driver had at simulated time ``t`` (what a policy's observation saw)."""
        for entry in reversed(self.log):
            if entry.t <= t + EPS and entry.measured is not None:
                return entry.measured.copy()
        return self.arm.true_positions

    def first_tick(self, state: SafetyState, reason: str | None = None) -> TickLog:
        for entry in self.log:
            if entry.state is state and (reason is None or entry.reason == reason):
                return entry
        raise AssertionError(f"never in {state.value} ({reason}); transitions {self.transitions()}")


@dataclasses.dataclass
class Policy:
    """A policy node in simulated time: one chunk every ``period_s``, computed from the observation
    taken ``latency_s`` before it arrives. A chunk starts at the observed joint state and continues the
    ``reference`` motion (a smooth swing away from home into the envelope) from there, plus a per-chunk
    offset: the chunk-to-chunk disagreement of a real VLA. With ``closed_loop=False`` chunks follow the
    reference itself, wherever the robot is: a policy chasing a goal in the image while a joint is
    blocked keeps asking for the goal."""

    period_s: float = 0.2
    latency_s: float = 0.1
    steps: int = 30
    amplitude: float = 0.25
    frequency_hz: float = 0.4
    disagreement: float = 0.02
    seed: int = 0
    closed_loop: bool = True
    active: bool = True
    first_latency_s: float | None = None  # the first chunk's latency (warm-up), default latency_s
    published: list[ActionChunk] = dataclasses.field(default_factory=list)
    mutate: Callable[[ActionChunk], ActionChunk] | None = None  # applied to the next chunk only

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._next_s: float | None = None

    def reference(self, emb: EmbodimentConfig, t: float) -> np.ndarray:
        # Move from home toward the roomier side of each joint's range (YAM's home sits on a limit).
        direction = np.where(emb.upper - emb.home >= emb.home - emb.lower, 1.0, -1.0)
        phase = np.linspace(0.0, 0.5, emb.dof)
        s = 1.0 - np.cos(2 * np.pi * self.frequency_hz * max(t - T0, 0.0) + phase) + (np.cos(phase) - 1.0)
        return emb.home + direction * self.amplitude * s

    def make_chunk(self, rig: FaultRig, stamp: float) -> ActionChunk:
        emb = rig.emb
        times = stamp + np.arange(self.steps) / emb.control_rate_hz
        positions = np.stack([self.reference(emb, t) for t in times])
        if self.closed_loop:
            positions = rig.measured_at(stamp) + positions - positions[0]
        positions = positions + self._rng.normal(0.0, self.disagreement, emb.dof)
        return ActionChunk(list(emb.joint_names), np.clip(positions, emb.lower, emb.upper), stamp,
                           emb.control_rate_hz)

    def maybe_publish(self, rig: FaultRig) -> None:
        if not self.active:
            return
        if self._next_s is None:
            self._next_s = rig.t + (self.first_latency_s if self.first_latency_s is not None else self.latency_s)
            self._first_stamp = rig.t
        if rig.t + EPS < self._next_s:
            return
        latency = self.latency_s
        stamp = self._first_stamp if not self.published else rig.t - latency
        chunk = self.make_chunk(rig, stamp)
        if self.mutate is not None:
            chunk, self.mutate = self.mutate(chunk), None
        self.published.append(chunk)
        rig.submit(chunk)
        self._next_s = rig.t + self.period_s

    def restart(self, first_latency_s: float) -> None:
        """The policy process came back: its first chunk takes ``first_latency_s`` (warm-up)."""
        self.active = True
        self.published.clear()
        self.first_latency_s = first_latency_s
        self._next_s = None
