"""Fault injection in simulated time: every scenario through the real SafetyStack, DriverCore and MockArm.

Each test is one named scenario. ``FaultRig`` checks every command that reaches the arm (envelope, per-
tick rate limit, no motion while stopped) at the tick it is written; the tests assert the state
transitions, the counters and what the arm did. Simulated time makes each one deterministic and fast.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fault_rig import T0, FaultRig, Policy, embodiment

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.safety import SafetyState

RUNNING, HOLD, STOPPED = SafetyState.RUNNING, SafetyState.HOLD, SafetyState.STOPPED
ESTOP, FAULT, IDLE = SafetyState.ESTOP, SafetyState.FAULT, SafetyState.IDLE


def started_rig(emb="so101", seconds: float = 1.0, **policy_kw) -> tuple[FaultRig, Policy]:
    """A rig that has been following a healthy policy for ``seconds``."""
    rig, policy = FaultRig(emb), Policy(**policy_kw)
    rig.run(seconds, policy)
    assert rig.stack.state is RUNNING, rig.transitions()
    return rig, policy


def moved(rig: FaultRig, since: float) -> float:
    """How far any joint of the (noise-free) arm moved since the first command written after ``since``."""
    sent = rig.sent_since(since)
    return float(np.max(np.abs(sent - sent[0]))) if len(sent) else 0.0


# ---- the policy misbehaves -------------------------------------------------------------------

def test_policy_stops():
    """The policy stops publishing: keep executing, hold after the hold timeout, stop after the stop timeout."""
    rig, policy = started_rig()
    last_rx = policy.published[-1].stamp_s + policy.latency_s  # when the last chunk arrived
    policy.active = False
    cfg = rig.emb.safety
    rig.run(cfg.watchdog_stop_timeout_s + 0.5)
    assert rig.transitions()[-3:] == [("RUNNING", "following"), ("HOLD", "watchdog"), ("STOPPED", "watchdog")]
    hold = rig.first_tick(HOLD, "watchdog")
    stop = rig.first_tick(STOPPED, "watchdog")
    # Simulated time: the watchdog fires on the first tick past each timeout, counted from the arrival.
    assert 0 < hold.t - last_rx - cfg.watchdog_hold_timeout_s <= rig.dt + 1e-9
    assert 0 < stop.t - last_rx - cfg.watchdog_stop_timeout_s <= rig.dt + 1e-9
    held = rig.sent_since(hold.t)
    assert len(held) > 50 and np.all(held == held[0])  # the very same command every tick until the end
    np.testing.assert_allclose(rig.arm.true_positions, held[0], atol=1e-6)  # and the arm settled on it
    c = rig.stack.counters
    assert c.watchdog_holds == 1 and c.watchdog_stops == 1 and c.faults == 0


def test_policy_crashes_and_restarts_after_slow_warmup():
    """The policy process dies mid-motion and comes back 1 s later with a 0.9 s warm-up inference:
    brake to a hold while it is gone; its first chunk is re-anchored at arrival and skips no step. It
    starts from the observation taken when the policy came back, which need not be where the arm came to
    rest: the blend and the shaper make the difference a smooth start, not a jump."""
    rig, policy = started_rig()
    rig.stack.count_unparsed("shape")  # the half-written message it died on
    policy.active = False
    rig.run(1.0)
    assert rig.stack.state is HOLD and rig.stack.reason == "watchdog"
    held = rig.stack.last_command
    policy.restart(first_latency_s=0.9)
    rig.run(0.9 + rig.dt, policy)
    assert rig.stack.state is RUNNING
    stats = rig.stack.scheduler.stats
    assert stats.last_anchor_mode == "reanchored" and stats.last_skipped_steps == 0
    assert stats.last_latency_s == pytest.approx(0.9, abs=rig.dt)
    # Resuming starts from the held command: no jump (the auditor checks speed and acceleration too).
    resumed = rig.sent_since(rig.t - rig.dt)[0]
    assert np.all(np.abs(resumed - held) <= rig.step_limit + 1e-9)
    rig.run(0.5, policy)
    assert rig.stack.counters.faults == 0 and rig.stack.snapshot()["rejected_shape"] == 1
    assert ("HOLD", "watchdog") in rig.transitions() and rig.transitions()[-1] == ("RUNNING", "following")


def test_policy_hangs_then_sends_a_stale_chunk():
    """Inference hangs for 3 s (longer than the stop timeout), then emits the chunk of the observation it
    started from: too old, rejected; fresh chunks then restart motion through the startup guard."""
    rig, policy = started_rig()
    policy.active = False
    stale = policy.make_chunk(rig, rig.t)
    rig.run(3.0)
    assert rig.stack.state is STOPPED
    held = rig.stack.last_command
    assert rig.submit(stale) == "too_old"
    rig.run(0.2)
    assert rig.stack.state is STOPPED  # a rejected chunk does not wake the driver
    policy.active = True
    policy.restart(first_latency_s=0.1)
    rig.run(1.0, policy)
    assert rig.transitions()[-3:] == [("HOLD", "watchdog"), ("STOPPED", "watchdog"), ("RUNNING", "following")]
    t_resume = next(e.t for e in reversed(rig.log) if e.state is STOPPED) + rig.dt
    first = rig.sent_since(t_resume)[0]
    assert np.all(np.abs(first - held) <= rig.step_limit + 1e-9)  # from the held pose, no jump
    assert rig.stack.snapshot()["rejected_too_old"] == 1


def test_policy_slower_than_a_chunk():
    """Each chunk covers 0.23 s but arrives every 0.45 s, 0.4 s after its observation: hold on the last step
    between chunks (counted as starvation), never skip the steps the robot did not execute."""
    rig = FaultRig()
    policy = Policy(steps=8, period_s=0.45, latency_s=0.4)
    modes, skipped = [], []
    for _ in range(round(3.0 / rig.dt)):
        n = len(policy.published)
        policy.maybe_publish(rig)
        rig.tick()
        if len(policy.published) > n and rig.stack.scheduler.stats.chunks_accepted > 1:
            stats = rig.stack.scheduler.stats
            modes.append(stats.last_anchor_mode)
            skipped.append((stats.last_skipped_steps, stats.last_held_s, stats.last_latency_s))
    c, s = rig.stack.counters, rig.stack.scheduler.stats
    assert c.watchdog_holds == 0 and c.faults == 0
    assert s.starvation_ticks > 20
    assert ("HOLD", "starved") in rig.transitions()
    assert set(modes) <= {"partial", "reanchored"} and modes
    for n_skipped, held_s, latency in skipped:
        # Only the part of the latency the robot spent moving may be skipped.
        assert n_skipped <= round((latency - held_s) * rig.emb.control_rate_hz) + 1


def test_slow_first_inference_skips_nothing():
    """LeRobot's SO-101 skipped 21 of 30 actions after a slow first inference: ours skips none."""
    rig = FaultRig(embodiment(watchdog_hold_timeout_s=1.5, watchdog_stop_timeout_s=3.0))
    policy = Policy(first_latency_s=0.8, period_s=10.0)  # one chunk only
    rig.run(0.8 + 30 * rig.dt, policy)
    chunk = policy.published[0]
    sent = rig.sent_since(T0)
    assert len(sent) == 30
    # Steps 0..29, in order, none skipped: from step 0, and once the arm has accelerated from rest to the
    # chunk's speed (a few ticks, within the acceleration limit) exactly the chunk's own steps.
    assert np.max(np.abs(sent[0] - chunk.positions[0])) < np.max(rig.step_limit)
    # The chunk ends at speed: the last few commands brake to stop on its last step instead of overshooting.
    np.testing.assert_allclose(sent[10:-6], chunk.positions[10:-6], atol=1e-9)
    assert rig.stack.scheduler.stats.last_skipped_steps == 0


# ---- malformed chunks: rejected, counted, and the robot does exactly what it did without them ---------

def _mutations(rig: FaultRig, policy: Policy) -> dict[str, tuple[ActionChunk, str]]:
    good = Policy(seed=99).make_chunk(rig, rig.t - 0.05)
    newest = policy.published[-1]
    pos = good.positions.copy()
    nan, inf = pos.copy(), pos.copy()
    nan[5, 2], inf[3, 0] = np.nan, np.inf
    jump = pos.copy()
    jump[10:, 1] += 1.0  # 1 rad between two steps: 10 x what 3 rad/s allows at 30 Hz
    names = list(good.joint_names)
    return {
        "nan": (dataclasses.replace(good, positions=nan), "non_finite"),
        "inf": (dataclasses.replace(good, positions=inf), "non_finite"),
        "wrong_joint_names": (dataclasses.replace(good, joint_names=[*names[:5], "claw"]), "joint_names"),
        "wrong_dimension": (dataclasses.replace(good, positions=pos[:, :5]), "shape"),
        "empty_chunk": (dataclasses.replace(good, positions=np.zeros((0, rig.emb.dof))), "empty"),
        "out_of_order": (dataclasses.replace(good, stamp_s=newest.stamp_s - 0.05), "out_of_order"),
        "duplicate": (newest, "out_of_order"),
        "stamp_from_the_future": (dataclasses.replace(good, stamp_s=rig.t + 0.5), "future_stamp"),
        "stamp_from_the_far_past": (dataclasses.replace(good, stamp_s=rig.t - 30.0), "too_old"),
        "huge_jump_inside_chunk": (dataclasses.replace(good, positions=jump), "step_jump"),
    }


MALFORMED = ["nan", "inf", "wrong_joint_names", "wrong_dimension", "empty_chunk", "out_of_order", "duplicate",
             "stamp_from_the_future", "stamp_from_the_far_past", "huge_jump_inside_chunk"]


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_chunk_is_rejected_and_changes_nothing(kind):
    clean, clean_policy = FaultRig(), Policy()
    faulty, faulty_policy = FaultRig(), Policy()
    clean.run(0.6, clean_policy)
    faulty.run(0.6, faulty_policy)
    bad, reason = _mutations(faulty, faulty_policy)[kind]
    assert faulty.submit(bad) == reason
    clean.run(1.0, clean_policy)
    faulty.run(1.0, faulty_policy)
    # What reached the arm is identical, command for command, to the run that never saw the bad chunk.
    a = np.array([c for _, c in clean.arm.accepted])
    b = np.array([c for _, c in faulty.arm.accepted])
    assert a.shape == b.shape and np.array_equal(a, b)
    assert faulty.transitions() == clean.transitions() == [("IDLE", "waiting_for_chunk"), ("RUNNING", "following")]
    snap = faulty.stack.snapshot()
    assert snap[f"rejected_{reason}"] == 1 and snap["chunks_rejected"] == 1
    assert snap["chunks_received"] == clean.stack.snapshot()["chunks_received"] + 1


def test_chunk_outside_the_envelope_is_clamped():
    rig = FaultRig()
    start = rig.emb.home.copy()
    start[5] = 0.95  # gripper near its upper limit, driven to 1.095 (within the margin: clamped, not garbage)
    rig.arm.set_positions(start)
    vel = np.zeros(rig.emb.dof)
    vel[5] = 0.15
    rig.submit(rig.chunk(start, vel))
    rig.run(1.0)
    assert rig.stack.counters.clamp_events > 0
    assert rig.sent_since(T0)[:, 5].max() == pytest.approx(rig.emb.upper[5])


def test_chunk_faster_than_the_arm_is_rate_limited():
    rig = FaultRig()
    vel = 2.5 * rig.emb.max_velocity  # passes validation (3x), the limiter must slow it to 1x
    rig.submit(rig.chunk(rig.emb.home, vel * np.array([1, -1, 0.5, -0.5, 0.2, 0.1]), steps=8))
    rig.run(0.3)
    steps = np.abs(np.diff(rig.sent_since(T0), axis=0))
    assert np.max(steps[:, 0]) == pytest.approx(rig.step_limit[0])
    assert rig.stack.counters.rate_limit_events >= 5


def test_first_target_far_from_the_robot_is_refused():
    rig = FaultRig()
    offset = np.zeros(rig.emb.dof)
    offset[1] = 0.9  # beyond startup_max_distance 0.6
    rig.submit(rig.chunk(rig.emb.home + offset))
    rig.run(0.3)
    assert rig.arm.writes == 0 and rig.arm.accepted == []  # not a single command reached the servos
    assert rig.transitions() == [("FAULT", "startup_too_far")]
    assert rig.stack.counters.startup_refusals == 1


# ---- e-stop ------------------------------------------------------------------------------------

def test_estop_during_motion_and_reset():
    rig, policy = started_rig()
    rig.stack.estop("/estop topic")
    t_stop = rig.t
    rig.run(1.0, policy)  # the policy keeps publishing: every chunk is refused
    assert rig.transitions()[-1] == ("ESTOP", "/estop topic")
    held = rig.sent_since(t_stop)
    assert np.all(held == held[0])
    assert rig.rejections.count("estop") >= 4
    # Someone pushes the arm aside while it is stopped; reset must not snap it back.
    pushed = np.clip(rig.arm.true_positions + 0.15, rig.emb.lower, rig.emb.upper)
    rig.arm.set_positions(pushed)
    ok, message = rig.stack.reset()
    assert ok and "/estop topic" in message
    t_reset = rig.t
    policy.restart(first_latency_s=0.1)
    rig.run(1.0, policy)
    first = next(e for e in rig.log if e.t >= t_reset and e.ramp_base is not None)
    np.testing.assert_allclose(first.ramp_base, pushed, atol=1e-9)  # restarts from the measured pose
    assert np.all(np.abs(first.sent - pushed) <= rig.step_limit + 1e-9)
    assert rig.states()[-3:] == ["ESTOP", "IDLE", "RUNNING"]
    assert rig.stack.counters.estops == 1


# ---- hardware faults ----------------------------------------------------------------------------

def test_hardware_read_error_glitch_is_ridden_through():
    rig, policy = started_rig()
    rig.arm.faults.read_error = True
    rig.run(2 * rig.dt, policy)  # two failed reads: fewer than hardware_error_limit
    rig.arm.faults.read_error = False
    rig.run(0.5, policy)
    assert rig.core.read_errors == 2 and rig.stack.fault is None
    assert rig.states()[-1] == "RUNNING"


def test_hardware_read_error_latches_fault_and_holds():
    rig, policy = started_rig()
    rig.arm.faults.read_error = True
    t_fail = rig.t
    rig.run(1.0, policy)
    assert rig.stack.fault is not None and rig.stack.fault[0] == "read_error"
    fault = rig.first_tick(FAULT)
    assert fault.t == pytest.approx(t_fail + 2 * rig.dt)  # the third failed read in a row
    held = rig.sent_since(fault.t)
    assert len(held) > 20 and np.all(held == held[0])  # still writing the hold: it is the heartbeat
    assert "fault" in rig.rejections
    rig.arm.faults.read_error = False
    rig.stack.reset()
    rig.core.clear_errors()
    policy.restart(first_latency_s=0.1)
    rig.run(0.6, policy)
    assert rig.states()[-2:] == ["IDLE", "RUNNING"]


def test_hardware_write_error_latches_fault():
    rig, policy = started_rig()
    last_good = rig.arm.accepted[-1][1]
    writes = rig.arm.writes
    rig.arm.faults.write_error = True
    rig.run(0.5, policy)
    assert rig.stack.fault is not None and rig.stack.fault[0] == "write_error"
    assert rig.arm.writes == writes
    # The command held is the last one the arm actually got, not the ones it never received.
    np.testing.assert_array_equal(rig.stack.last_command, last_good)
    rig.arm.faults.write_error = False  # the bus comes back: the hold resumes, no motion
    rig.run(0.3, policy)
    resumed = rig.sent_since(rig.t - 0.3)
    assert len(resumed) > 5 and np.all(resumed == last_good)
    assert rig.core.write_errors >= 3


def test_stuck_joint_latches_tracking_fault_and_holds():
    """A blocked shoulder while the policy keeps reaching for its goal: the arm must not keep pushing."""
    rig, policy = started_rig(closed_loop=False)
    rig.arm.faults.stuck_joints = {1}
    rig.run(2.0, policy)
    assert rig.stack.fault is not None and rig.stack.fault[0] == "tracking_error"
    assert "shoulder_lift" in rig.stack.fault[1]
    fault = rig.first_tick(FAULT)
    held = rig.sent_since(fault.t)  # a controlled stop (audited), then the same command
    assert len(held) > 10 and np.all(held[-5:] == held[-1])
    assert rig.stack.counters.tracking_error_max > rig.emb.max_tracking_error[1]


def test_over_temperature_latches_fault_and_holds():
    rig, policy = started_rig()
    rig.arm.faults.over_temperature = {2}
    rig.run(0.3, policy)
    fault = rig.first_tick(FAULT)
    assert fault.reason == "over_temperature" and "elbow_flex" in rig.stack.fault[1]
    assert np.all(rig.sent_since(fault.t) == rig.sent_since(fault.t)[0])


def test_over_temperature_relaxes_when_configured():
    rig = FaultRig(embodiment(fault_action="relax"))
    policy = Policy()
    rig.run(1.0, policy)
    writes = rig.arm.writes
    rig.arm.faults.over_temperature = {0}
    rig.run(0.5, policy)
    assert rig.stack.state is FAULT and rig.core.relaxed
    assert rig.arm.relaxes == 1 and rig.arm.relaxed
    assert rig.arm.writes == writes  # nothing written after the fault
    # The relaxed arm sags (here: is moved) before reset: motion restarts from where it is.
    sagged = rig.arm.true_positions - 0.1
    rig.arm.set_positions(sagged)
    rig.arm.faults.over_temperature = set()
    rig.stack.reset()
    policy.restart(first_latency_s=0.1)
    rig.run(0.5, policy)
    first = [e for e in rig.log if e.ramp_base is not None][-1]
    np.testing.assert_allclose(first.ramp_base, sagged, atol=1e-9)


def test_backend_never_ready():
    """A ROS robot whose joint states never come: nothing is written and a clear fault latches."""
    rig = FaultRig(ready_timeout_ticks=30)
    rig.arm.never_ready = True
    rig.run(1.5, Policy())
    assert rig.arm.writes == 0 and rig.arm.reads == 0
    assert rig.stack.fault is not None and rig.stack.fault[0] == "hardware_not_ready"
    assert rig.core.not_ready_ticks >= 30


# ---- the clock ----------------------------------------------------------------------------------

def test_clock_jump_backward():
    """Bag loop / sim reset: the ROS clock jumps back 50 s. Hold; chunks stamped in the new time base
    resume motion (older stamps are no longer 'out of order')."""
    rig, policy = started_rig()
    rig.t -= 50.0
    mark = rig.mark()
    rig.run(0.3)
    assert rig.transitions()[-1] == ("HOLD", "clock_jump")
    assert rig.stack.counters.clock_jumps == 1
    held = rig.sent_after(mark)
    assert np.all(held == held[0])
    policy._next_s = None  # the policy's timer lives on the same (jumped) clock
    policy.published.clear()
    rig.run(1.0, policy)
    assert rig.transitions()[-1] == ("RUNNING", "following")
    assert rig.stack.snapshot()["rejected_out_of_order"] == 0


def test_clock_jump_forward():
    """A stepped clock (or a control thread stalled for seconds): the plan belongs to the old time base.
    Hold instead of racing to catch up; chunks from before the jump are too old; fresh ones resume."""
    rig, policy = started_rig()
    in_flight = policy.make_chunk(rig, rig.t - 0.1)
    rig.t += 30.0
    mark = rig.mark()
    rig.run(0.3)
    assert rig.transitions()[-1] == ("HOLD", "clock_jump")
    held = rig.sent_after(mark)
    assert np.all(held == held[0])
    assert rig.submit(in_flight) == "too_old"
    policy._next_s = None
    policy.published.clear()
    rig.run(1.0, policy)
    assert rig.transitions()[-1] == ("RUNNING", "following")
    assert rig.stack.counters.clock_jumps == 1 and rig.stack.counters.faults == 0


def test_clock_jump_with_no_chunk_afterwards_stops():
    rig, _ = started_rig()
    rig.t += 30.0
    rig.run(rig.emb.safety.watchdog_stop_timeout_s + 0.2)
    assert rig.transitions()[-2:] == [("HOLD", "clock_jump"), ("STOPPED", "watchdog")]


# ---- bimanual ------------------------------------------------------------------------------------

def test_bimanual_stuck_right_arm_holds_both_arms():
    rig, policy = started_rig("yam_bimanual", closed_loop=False)
    names = rig.emb.joint_names
    right3 = names.index("right_joint3")
    rig.arm.faults.stuck_joints = {right3}
    rig.run(2.0, policy)
    assert rig.stack.fault is not None and rig.stack.fault[0] == "tracking_error"
    assert "right_joint3" in rig.stack.fault[1] and "right arm" in rig.stack.fault[1]
    assert rig.stack.snapshot()["fault_arms"] == "right"
    fault = rig.first_tick(FAULT)
    held = rig.sent_since(fault.t)
    assert len(held) > 20 and np.all(held == held[0])  # all 14 joints: the left arm holds too
    left = [i for i, n in enumerate(names) if n.startswith("left_")]
    q_then = rig.arm.true_positions[left]
    rig.run(0.5, policy)
    np.testing.assert_allclose(rig.arm.true_positions[left], q_then, atol=1e-3)  # left arm stays put
    assert rig.stack.state is FAULT


def test_bimanual_one_estop_and_one_watchdog_for_both_arms():
    rig, policy = started_rig("yam_bimanual")
    policy.active = False
    rig.run(rig.emb.safety.watchdog_hold_timeout_s + 0.1)
    assert rig.stack.state is HOLD and rig.stack.counters.watchdog_holds == 1
    rig.stack.estop("button")
    rig.run(0.2)
    held = rig.sent_since(rig.t - 0.2)
    assert held.shape[1] == 14 and np.all(held == held[0])
    assert rig.stack.counters.estops == 1
