"""Scenario fuzzer for the whole per-tick path: ``DriverCore.cycle`` against a MockArm in simulated time.

A ``Scenario`` (drawn by hypothesis) fixes the structure and a seed; numpy generates the bulk from the seed
so one example stays fast. Every tick may bring a chunk (plausible, too fast, far away, huge finite, NaN/inf
anywhere, malformed, stale, from the future), an e-stop, a reset, lifecycle and shadow toggles, NaN or
infinite measurements, foreign exceptions from the backend's read and write, stalls, early ticks and ROS
clock jumps either way; every fault action and the heartbeat capability are covered.

Every write is checked by ``CommandAuditor`` on the ROS time it was issued at (the stamp a recording of the
driver's commands carries; a clock jump credits one tick, as the stack does): finite, inside the envelope,
speed and acceleration within the limits, and a controlled stop in every state that does not follow a plan;
nothing at all is written while a relaxed arm is e-stopped or faulted. ``run_scenario`` raises
AssertionError at the first violation and returns counts. Used by tests/unit/test_safety_property.py and by
benchmarks/bench_safety_property.py (the 20,000-example run).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
from hypothesis import strategies as st

from molmoact2_ros.backends.hardware import MockArm
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.command_audit import CommandAuditor
from molmoact2_ros.core.driver_core import DriverCore
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.core.safety import SafetyStack, SafetyState

EMBODIMENTS = {name: load_embodiment(name) for name in ("so101", "yam_bimanual", "franka_droid")}
HOSTILE_KINDS = ("nan", "inf", "huge", "max_float", "tiny_denormal", "wrong_name", "stale", "future", "scaled",
                 "one_step", "empty", "ragged_rate")


@dataclasses.dataclass
class Scenario:
    embodiment: str
    seed: int
    ticks: int
    fault_action: str
    heartbeat: bool
    chunk_every: int  # mean ticks between chunk arrivals
    jitter: float  # relative tick period jitter (real time)
    p_stall: float  # a tick comes 2-6 periods late
    offset_scale: float  # how far chunks start from the robot, in units of the joint range
    speed_scale: float  # chunk speed in units of max velocity (validation rejects beyond 3x)
    max_latency_s: float
    p_hostile: float
    p_read_fault: float  # per tick: start a burst of read exceptions
    p_write_fault: float
    p_nan_reading: float
    p_estop: float
    p_reset: float
    p_toggle: float  # deactivate/activate or shadow on/off
    p_clock_jump: float
    noise_std: float


scenarios = st.builds(
    Scenario,
    embodiment=st.sampled_from(sorted(EMBODIMENTS)),
    seed=st.integers(0, 2**32 - 1),
    ticks=st.integers(60, 400),
    fault_action=st.sampled_from(["hold", "relax"]),
    heartbeat=st.booleans(),
    chunk_every=st.integers(1, 25),
    jitter=st.floats(0.0, 0.9),
    p_stall=st.floats(0.0, 0.05),
    offset_scale=st.floats(0.0, 0.8),
    speed_scale=st.floats(0.0, 3.5),
    max_latency_s=st.floats(0.0, 1.8),
    p_hostile=st.floats(0.0, 0.3),
    p_read_fault=st.floats(0.0, 0.02),
    p_write_fault=st.floats(0.0, 0.02),
    p_nan_reading=st.floats(0.0, 0.005),
    p_estop=st.floats(0.0, 0.01),
    p_reset=st.floats(0.0, 0.3),
    p_toggle=st.floats(0.0, 0.02),
    p_clock_jump=st.floats(0.0, 0.01),
    noise_std=st.floats(0.0, 0.01),
)


@dataclasses.dataclass
class FuzzCounts:
    ticks: int = 0
    writes: int = 0
    chunks: int = 0
    rejected: Counter[str] = dataclasses.field(default_factory=Counter)
    states: Counter[str] = dataclasses.field(default_factory=Counter)
    violations: int = 0


class SerialError(OSError):
    """Stands in for a hardware library's own exception type."""


def _chunk(rng: np.random.Generator, emb: EmbodimentConfig, sc: Scenario, measured: np.ndarray,
           now: float) -> ActionChunk:
    span = emb.upper - emb.lower
    steps = int(rng.integers(1, emb.chunk.action_horizon + 1))
    if rng.random() < 0.7:  # near the robot, like a policy that sees the state
        start = measured + rng.normal(0.0, 0.05, emb.dof) * span * sc.offset_scale
    else:  # anywhere, including outside the envelope
        start = emb.lower - 0.2 * span + rng.random(emb.dof) * 1.4 * span
    step_max = sc.speed_scale * emb.max_velocity / emb.control_rate_hz
    deltas = rng.uniform(-1.0, 1.0, (steps, emb.dof)) * step_max
    deltas[0] = 0.0
    positions = start + np.cumsum(deltas, axis=0)
    stamp = now - rng.uniform(-0.15, sc.max_latency_s)
    names = list(emb.joint_names)
    rate = emb.control_rate_hz
    if rng.random() < sc.p_hostile:
        kind = HOSTILE_KINDS[int(rng.integers(len(HOSTILE_KINDS)))]
        k, j = int(rng.integers(steps)), int(rng.integers(emb.dof))
        if kind == "nan":
            positions[k, j] = np.nan
        elif kind == "inf":
            positions[k, j] = np.inf * (1 if rng.random() < 0.5 else -1)
        elif kind == "huge":
            positions[k:, j] = 1e307 * (1 if rng.random() < 0.5 else -1)
        elif kind == "max_float":
            positions[:] = np.finfo(np.float64).max
        elif kind == "tiny_denormal":
            positions = positions + 5e-324
        elif kind == "wrong_name":
            names[j] = "bogus_joint"
        elif kind == "stale":
            stamp = now - 10.0
        elif kind == "future":
            stamp = now + 5.0
        elif kind == "scaled":
            positions = positions * 1e3
        elif kind == "one_step":
            positions = positions[:1]
        elif kind == "empty":
            positions = positions[:0]
        elif kind == "ragged_rate":
            rate = rate * float(rng.uniform(0.5, 2.0))
    perm = rng.permutation(emb.dof)  # publishers may use any joint order
    return ActionChunk([names[i] for i in perm], positions[:, perm], stamp, rate)


def run_scenario(sc: Scenario) -> FuzzCounts:
    emb = EMBODIMENTS[sc.embodiment]
    if sc.fault_action != emb.safety.fault_action:
        emb = emb.model_copy(update={"safety": emb.safety.model_copy(update={"fault_action": sc.fault_action})})
    rng = np.random.default_rng(sc.seed)
    nominal = 1.0 / emb.tick_rate_hz
    real = [5000.0]  # monotonic time: what the motors live in
    ros_offset = 0.0  # ROS time = real + offset; clock jumps move the offset
    arm = MockArm(emb, clock=lambda: real[0], sleep=lambda s: None, seed=sc.seed,
                  command_timeout_s=0.4 if sc.heartbeat else None)
    arm.connect()
    arm.faults.noise_std = sc.noise_std
    stack = SafetyStack(emb, max_temperature_c=arm.max_temperature_c, fault_action=sc.fault_action,
                        heartbeat=arm.needs_heartbeat)
    core = DriverCore(stack, arm, error_limit=3)
    stack.enable()
    audit = CommandAuditor(emb)
    counts = FuzzCounts()
    relaxed = False  # a relax result was seen and no reset since: nothing may be written
    fault_ticks = {"read": 0, "write": 0, "nan": 0}
    for _ in range(sc.ticks):
        dt = nominal * (1.0 + rng.uniform(-sc.jitter, sc.jitter))
        if rng.random() < sc.p_stall:
            dt = nominal * rng.uniform(2.0, 6.0)
        real[0] += dt
        if rng.random() < sc.p_clock_jump:
            ros_offset += float(rng.choice([-100.0, -0.5, 0.5, 20.0]))
        now = real[0] + ros_offset
        if rng.random() < 1.0 / sc.chunk_every:
            counts.chunks += 1
            try:
                stack.submit(_chunk(rng, emb, sc, arm.true_positions, now), now)
            except ChunkRejected as exc:
                counts.rejected[exc.reason] += 1
        if rng.random() < sc.p_estop:
            stack.estop("fuzz")
        if stack.state in (SafetyState.ESTOP, SafetyState.FAULT) and rng.random() < sc.p_reset:
            ok, _ = stack.reset()
            if ok:
                core.clear_errors()
                relaxed = False
        if rng.random() < sc.p_toggle:
            if rng.random() < 0.5:
                stack.set_shadow(not stack.shadow_requested)
            elif stack.enabled:
                stack.disable(now)
            else:
                stack.enable()
        for kind, p in (("read", sc.p_read_fault), ("write", sc.p_write_fault), ("nan", sc.p_nan_reading)):
            if rng.random() < p:
                fault_ticks[kind] = int(rng.integers(1, 6))
        arm.faults.read_exception = SerialError("read timeout") if fault_ticks["read"] > 0 else None
        arm.faults.write_exception = ValueError("bad frame") if fault_ticks["write"] > 0 else None
        arm.faults.nan_joints = {int(rng.integers(emb.dof))} if fault_ticks["nan"] > 0 else set()
        for kind in fault_ticks:
            fault_ticks[kind] = max(0, fault_ticks[kind] - 1)

        cycle = core.cycle(now)  # must never raise
        res = cycle.tick
        counts.ticks += 1
        counts.states[res.state.value] += 1
        if res.relax:
            relaxed = True
        if cycle.sent is not None:
            counts.writes += 1
            assert not (relaxed and res.state in (SafetyState.ESTOP, SafetyState.FAULT)), (
                f"wrote {cycle.sent} to a relaxed arm in {res.state}")
            stopping = not (res.state is SafetyState.RUNNING or (res.state is SafetyState.HOLD
                                                                  and res.reason == "starved"))
            bad = audit.observe(now, cycle.sent, restart_from=res.ramp_base, stopping=stopping,
                                context=f"{res.state.value} {res.reason}")
            assert not bad, (sc, bad)
        elif res.relax or res.shadow:
            audit.forget()
    return counts
