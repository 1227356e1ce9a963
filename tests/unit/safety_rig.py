"""A driver in simulated time for unit tests: SafetyStack + DriverCore + MockArm, every write audited."""

from __future__ import annotations

import numpy as np

from molmoact2_ros.backends.hardware import MockArm
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.command_audit import CommandAuditor
from molmoact2_ros.core.driver_core import CycleResult, DriverCore
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.safety import SafetyStack, SafetyState, TickResult

EMB = load_embodiment("so101")
DT = 1.0 / EMB.tick_rate_hz
STEP = EMB.max_velocity * DT  # per-tick speed limit, per joint
ACC_STEP = EMB.max_acceleration * DT  # per-tick change of velocity, per joint
T0 = 1000.0
FOLLOWING = (SafetyState.RUNNING,)


def is_stopping(res: TickResult) -> bool:
    """Every tick that does not follow a plan is a controlled stop (or the hold after it)."""
    return not (res.state in FOLLOWING or (res.state is SafetyState.HOLD and res.reason == "starved"))


class Rig:
    """SafetyStack + DriverCore + MockArm on one simulated clock; every write is audited on the spot."""

    def __init__(self, emb=EMB, shadow: bool = False, arm_kwargs=None, error_limit: int = 3,
                 ready_timeout_ticks: int | None = None, **stack_kwargs):
        self.emb = emb
        self.t = T0
        self.arm = MockArm(emb, clock=lambda: self.t, sleep=lambda s: None, **(arm_kwargs or {}))
        self.arm.connect()
        stack_kwargs.setdefault("heartbeat", self.arm.needs_heartbeat)
        self.stack = SafetyStack(emb, max_temperature_c=self.arm.max_temperature_c, shadow=shadow,
                                 **stack_kwargs)
        self.core = DriverCore(self.stack, self.arm, error_limit=error_limit, ready_timeout_ticks=ready_timeout_ticks)
        self.stack.enable()
        self.audit = CommandAuditor(emb)
        self.results: list[TickResult] = []
        self.cycles: list[CycleResult] = []
        self.sent: list[np.ndarray] = []

    def chunk(self, start, velocity=0.0, stamp=None, steps=30, names=None) -> ActionChunk:
        start = np.broadcast_to(np.asarray(start, dtype=float), (self.emb.dof,))
        velocity = np.broadcast_to(np.asarray(velocity, dtype=float), (self.emb.dof,))
        k = np.arange(steps)[:, None] / self.emb.control_rate_hz
        return ActionChunk(names or self.emb.joint_names, start + velocity * k,
                           self.t if stamp is None else stamp, self.emb.control_rate_hz)

    def submit(self, chunk: ActionChunk) -> ActionChunk:
        return self.stack.submit(chunk, self.t)

    def tick(self) -> TickResult:
        cycle = self.core.cycle(self.t)
        res = cycle.tick
        if cycle.sent is not None:
            bad = self.audit.observe(self.t, cycle.sent, restart_from=res.ramp_base, stopping=is_stopping(res),
                                     context=f"{res.state.value} {res.reason}")
            assert not bad, bad
            self.sent.append(cycle.sent)
        elif res.relax or res.shadow:
            self.audit.forget()
        self.results.append(res)
        self.cycles.append(cycle)
        self.t += DT
        return res

    def run(self, n: int) -> list[TickResult]:
        return [self.tick() for _ in range(n)]

    def run_until_still(self, max_ticks: int = 200) -> list[TickResult]:
        out = []
        while not self.stack.standing_still and len(out) < max_ticks:
            out.append(self.tick())
        assert self.stack.standing_still
        return out


def home_chunk(rig: Rig, offset=0.0, velocity=0.0, **kw) -> ActionChunk:
    return rig.chunk(EMB.home + offset, velocity, **kw)


def _with_safety(emb=EMB, **safety):
    return emb.model_copy(update={"safety": emb.safety.model_copy(update=safety)})


def _speeds(cmds: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(np.asarray(cmds), axis=0)) / DT
