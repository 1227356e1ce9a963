"""Property test: whatever chunks arrive and however ticks are timed, every command the safety stack
hands to the hardware is inside the joint envelope and within the per-tick rate limit.

500 examples x 20-30 chunks (>= 10,000 chunks) with random positions (in and out of the envelope, fast
and too fast), stamps (fresh, late, future, stale), malformed chunks, tick jitter and stalls, write
failures, e-stops and resets, deactivation and shadow toggles, driving a MockArm in simulated time.
Hypothesis draws the scenario's structure and a seed; numpy generates the bulk data from the seed so
one example stays fast.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmoact2_ros.backends.hardware import MockArm
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.core.safety import SafetyStack, SafetyState

EMBODIMENTS = {name: load_embodiment(name) for name in ("so101", "yam_bimanual", "franka_droid")}
EPS = 1e-9
MIN_CHUNKS = 20


@dataclasses.dataclass
class Scenario:
    embodiment: str
    seed: int
    n_chunks: int
    max_gap_ticks: int  # ticks between chunk arrivals: 1..max_gap_ticks
    jitter: float  # relative tick period jitter
    p_stall: float  # probability a tick comes 2-6 periods late
    offset_scale: float  # how far chunks start from the robot, in units of the joint range
    speed_scale: float  # chunk speed in units of max velocity (validation rejects beyond 3x)
    max_latency_s: float
    p_malformed: float
    p_write_fail: float
    p_estop: float
    p_reset: float
    p_toggle: float  # deactivate/activate or shadow on/off
    noise_std: float


scenarios = st.builds(
    Scenario,
    embodiment=st.sampled_from(sorted(EMBODIMENTS)),
    seed=st.integers(0, 2**32 - 1),
    n_chunks=st.integers(MIN_CHUNKS, 30),
    max_gap_ticks=st.integers(1, 25),
    jitter=st.floats(0.0, 0.9),
    p_stall=st.floats(0.0, 0.1),
    offset_scale=st.floats(0.0, 0.8),
    speed_scale=st.floats(0.0, 3.5),
    max_latency_s=st.floats(0.0, 1.8),
    p_malformed=st.floats(0.0, 0.2),
    p_write_fail=st.floats(0.0, 0.1),
    p_estop=st.floats(0.0, 0.01),
    p_reset=st.floats(0.0, 0.3),
    p_toggle=st.floats(0.0, 0.02),
    noise_std=st.floats(0.0, 0.01),
)


def _make_chunk(rng: np.random.Generator, emb, sc: Scenario, measured: np.ndarray, now: float) -> ActionChunk:
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
    if rng.random() < sc.p_malformed:
        kind = int(rng.integers(4))
        if kind == 0:
            positions[int(rng.integers(steps)), int(rng.integers(emb.dof))] = np.nan
        elif kind == 1:
            names[int(rng.integers(emb.dof))] = "bogus_joint"
        elif kind == 2:
            stamp = now - 10.0
        else:
            positions = positions * 1e3
    perm = rng.permutation(emb.dof)  # publishers may use any joint order
    return ActionChunk([names[i] for i in perm], positions[:, perm], stamp, emb.control_rate_hz)


def _run(sc: Scenario) -> int:
    emb = EMBODIMENTS[sc.embodiment]
    rng = np.random.default_rng(sc.seed)
    nominal = 1.0 / emb.tick_rate_hz
    clock = [5000.0]
    arm = MockArm(emb, clock=lambda: clock[0], sleep=lambda s: None, seed=sc.seed)
    arm.connect()
    arm.faults.noise_std = sc.noise_std
    stack = SafetyStack(emb, max_temperature_c=arm.max_temperature_c)
    stack.enable()
    last_sent: np.ndarray | None = None  # what the stack rate-limits against
    ticks = 0
    rejected: Counter[str] = Counter()
    for _ in range(sc.n_chunks):
        measured = arm.true_positions
        chunk = _make_chunk(rng, emb, sc, measured, clock[0])
        try:
            stack.submit(chunk, clock[0])
        except ChunkRejected as exc:
            rejected[exc.reason] += 1
        for _ in range(int(rng.integers(1, sc.max_gap_ticks + 1))):
            dt = nominal * (1.0 + rng.uniform(-sc.jitter, sc.jitter))
            if rng.random() < sc.p_stall:
                dt = nominal * rng.uniform(2.0, 6.0)
            clock[0] += dt
            ticks += 1
            if rng.random() < sc.p_estop:
                stack.estop("property")
            if stack.state in (SafetyState.ESTOP, SafetyState.FAULT) and rng.random() < sc.p_reset:
                stack.reset()
            if rng.random() < sc.p_toggle:
                if rng.random() < 0.5:
                    stack.set_shadow(not stack.shadow)
                elif stack.enabled:
                    stack.disable(clock[0])
                else:
                    stack.enable()
            reading = arm.read()
            res = stack.tick(clock[0], reading.positions, reading.temperatures_c)
            cmd = res.command
            if cmd is None:
                continue
            # 1. envelope
            assert np.all(cmd >= emb.lower - EPS) and np.all(cmd <= emb.upper + EPS), (res, cmd)
            # 2. per-tick rate limit against the last command (or the measured pose when (re)starting)
            limit = emb.max_velocity * min(dt, nominal) + EPS
            if res.ramp_base is not None:
                assert np.all(np.abs(cmd - res.ramp_base) <= emb.max_velocity * nominal + EPS)
                assert np.all(np.abs(res.ramp_base - reading.positions) <= emb.max_velocity * nominal + EPS)
            else:
                assert last_sent is not None, "a command without a guarded start"
                assert np.all(np.abs(cmd - last_sent) <= limit), (res.state, res.reason, cmd - last_sent)
            # 3. no motion while e-stopped, faulted, held by the watchdog or stopped
            if res.state in (SafetyState.ESTOP, SafetyState.FAULT, SafetyState.STOPPED) or (
                    res.state is SafetyState.HOLD and res.reason == "watchdog"):
                np.testing.assert_array_equal(cmd, last_sent)
            if stack.shadow:
                last_sent = cmd.copy()  # the stack limits against its own (unwritten) command
            elif rng.random() < sc.p_write_fail:
                stack.record_sent(None)
            else:
                last_sent = arm.write(cmd)
                stack.record_sent(last_sent)
        # After reset or leaving shadow mode the stack forgets its last command: so must we.
        if stack.last_command is None:
            last_sent = None
    assert stack.counters.chunks_received == sc.n_chunks
    for reason, n in rejected.items():  # every rejection on receipt is counted under its reason
        assert stack.counters.rejections[reason] >= n, reason
    return ticks


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_every_command_in_envelope_and_rate_limited(sc: Scenario):
    assert sc.n_chunks >= MIN_CHUNKS  # 500 examples x >= 20 chunks = >= 10,000 chunks
    _run(sc)
