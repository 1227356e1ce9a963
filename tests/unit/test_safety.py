"""Safety stack through the real per-tick path (``DriverCore.cycle`` against a MockArm in simulated time).

Every write is checked by ``CommandAuditor`` as it happens (envelope, speed, acceleration, controlled stops),
so each test also proves the invariants on its own scenario. No rclpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from safety_rig import ACC_STEP, DT, EMB, STEP, T0, Rig, _speeds, _with_safety, home_chunk

from molmoact2_ros.backends.hardware import MockArm, make_hardware
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ChunkRejected, HardwareError
from molmoact2_ros.core.safety import SafetyStack, SafetyState

# ---- rejections on receipt and at the splice ----------------------------------------------------

def test_stack_counts_rejections_by_reason():
    rig = Rig()
    with pytest.raises(ChunkRejected):
        rig.submit(home_chunk(rig, stamp=rig.t - 5.0))
    with pytest.raises(ChunkRejected):
        rig.submit(home_chunk(rig, names=[*EMB.joint_names[:5], "x"]))
    rig.stack.count_unparsed("no_stamp")
    snap = rig.stack.snapshot()
    assert snap["chunks_received"] == 3
    assert snap["chunks_rejected"] == 3
    assert snap["rejected_too_old"] == 1 and snap["rejected_joint_names"] == 1
    assert snap["rejected_no_stamp"] == 1


def test_stack_rejects_out_of_order_against_pending_and_accepted():
    rig = Rig()
    rig.submit(home_chunk(rig, stamp=rig.t - 0.1))
    with pytest.raises(ChunkRejected) as exc:
        rig.submit(home_chunk(rig, stamp=rig.t - 0.2))  # older than the pending one
    assert exc.value.reason == "out_of_order"
    rig.run(2)
    with pytest.raises(ChunkRejected) as exc:
        rig.submit(home_chunk(rig, stamp=rig.t - 0.1 - 2 * DT))  # equal to the accepted one
    assert exc.value.reason == "out_of_order"
    assert rig.stack.snapshot()["rejected_out_of_order"] == 2


def test_superseded_pending_chunk_is_counted_not_rejected():
    rig = Rig()
    rig.submit(home_chunk(rig, stamp=rig.t - 0.1))
    rig.submit(home_chunk(rig, stamp=rig.t - 0.05))
    rig.run(1)
    snap = rig.stack.snapshot()
    assert snap["chunks_superseded"] == 1 and snap["chunks_accepted"] == 1 and snap["chunks_rejected"] == 0


def test_expired_chunk_rejected_at_splice():
    rig = Rig()
    rig.submit(home_chunk(rig))
    rig.run(9)
    # Captured 0.29 s ago while the robot kept moving; its 5 steps span 0.13 s: all in the past.
    rig.submit(home_chunk(rig, stamp=T0 + 0.01, steps=5))
    rig.run(1)
    assert rig.stack.snapshot()["rejected_expired"] == 1


def test_inactive_stack_rejects_chunks():
    rig = Rig()
    rig.stack.disable(rig.t)
    with pytest.raises(ChunkRejected) as exc:
        rig.submit(home_chunk(rig))
    assert exc.value.reason == "inactive"


# ---- per-tick limits ------------------------------------------------------------------------

def test_envelope_clamp_and_count():
    rig = Rig()
    upper = EMB.upper
    # Start near the gripper's upper limit and drive past it (0.95 -> 1.095 over the chunk, within the
    # 0.1 x range margin that separates "asking for the limit" from garbage).
    start = EMB.home.copy()
    start[5] = 0.95
    rig.arm.set_positions(start)
    vel = np.zeros(6)
    vel[5] = 0.15
    rig.submit(rig.chunk(start, vel))
    rig.run(40)
    cmds = np.array(rig.sent)
    assert np.all(cmds <= upper + 1e-12) and np.all(cmds >= EMB.lower - 1e-12)
    assert cmds[-1, 5] == pytest.approx(upper[5])
    assert rig.stack.counters.clamp_events > 0


def test_speed_and_acceleration_are_limited_against_the_last_command():
    rig = Rig()
    # 2.5x max velocity: accepted by validation (factor 3), must be slowed by the shaper.
    v = 2.5 * EMB.max_velocity * np.array([1, -1, 1, -1, 0.2, 0.1])
    rig.submit(home_chunk(rig, velocity=v, steps=6))
    rig.run(20)
    speeds = _speeds(rig.sent)
    assert np.all(speeds <= EMB.max_velocity + 1e-9)
    accels = np.abs(np.diff(speeds, axis=0)) / DT
    assert np.all(accels <= EMB.max_acceleration * (1 + 1e-9))
    assert np.max(speeds[:, 0]) == pytest.approx(EMB.max_velocity[0])  # reaches the limit, never more
    assert rig.stack.counters.rate_limit_events >= 10


def test_shaping_uses_actual_dt_capped_at_nominal():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.25 * EMB.max_velocity))
    rig.run(20)  # ramped up, following at a quarter of the limit
    last = rig.stack.last_command
    # A late tick (3 periods) must not get a bigger step; a fast one (a third) gets a smaller one.
    rig.t += 2 * DT
    r = rig.tick()
    assert np.max(np.abs(r.command - last) / STEP) <= 1.0 + 1e-9
    last = r.command
    rig.t -= DT - DT / 3
    r = rig.tick()
    assert np.max(np.abs(r.command - last) / STEP) <= 1 / 3 + 1e-9


def test_write_failure_keeps_limit_against_what_was_sent():
    rig = Rig()
    rig.submit(home_chunk(rig, offset=0.3))
    rig.run(2)
    sent_before = rig.sent[-1]
    reading = rig.arm.read()
    res = rig.stack.tick(rig.t, reading.positions)
    rig.stack.record_sent(None)  # the write failed: the robot never got res.command
    rig.t += DT
    res2 = rig.tick()
    assert np.max(np.abs(res2.command - sent_before) - STEP) <= 1e-12
    assert res.command is not None


# ---- watchdog ------------------------------------------------------------------------------

def test_watchdog_holds_then_stops_then_resumes_guarded():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.3))
    states = [r.state for r in rig.run(int(0.45 / DT))]
    assert all(s is SafetyState.RUNNING for s in states)
    rig.run(int(0.2 / DT))
    assert rig.results[-1].state is SafetyState.HOLD and rig.results[-1].reason == "watchdog"
    hold_cmd = rig.results[-1].command
    rig.run(int(1.0 / DT))
    for r in rig.results[-int(1.0 / DT):]:
        assert r.state is SafetyState.HOLD
        np.testing.assert_array_equal(r.command, hold_cmd)  # holding = same command, no drift
    rig.run(int(0.5 / DT))
    assert rig.results[-1].state is SafetyState.STOPPED
    np.testing.assert_array_equal(rig.results[-1].command, hold_cmd)
    c = rig.stack.counters
    assert c.watchdog_holds == 1 and c.watchdog_stops == 1
    # A fresh chunk near the robot resumes, from the held pose, without a jump.
    rig.submit(rig.chunk(rig.arm.read().positions, 0.1))
    r = rig.tick()
    assert r.state is SafetyState.RUNNING
    assert np.all(np.abs(r.command - hold_cmd) <= STEP + 1e-12)


def test_watchdog_hold_then_new_chunk_reanchors_at_step_zero():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.3))
    rig.run(int(0.7 / DT))
    assert rig.results[-1].state is SafetyState.HOLD
    pose = rig.stack.last_command
    # The policy took 0.4 s to answer; the robot was holding, so no step may be skipped.
    chunk = rig.chunk(pose, 0.3, stamp=rig.t - 0.4)
    rig.submit(chunk)
    rig.run(1)
    stats = rig.stack.scheduler.stats
    assert stats.last_anchor_mode == "reanchored" and stats.last_skipped_steps == 0


# ---- startup guard -------------------------------------------------------------------------

def test_startup_guard_refuses_far_first_target_and_writes_nothing():
    rig = Rig()
    rig.submit(home_chunk(rig, offset=np.array([0, 0.9, 0, 0, 0, 0])))
    res = rig.run(5)
    assert all(r.state is SafetyState.FAULT and r.reason == "startup_too_far" for r in res)
    assert all(r.command is None for r in res)
    assert rig.sent == [] and rig.arm.writes == 0
    assert rig.stack.counters.startup_refusals == 1
    with pytest.raises(ChunkRejected) as exc:
        rig.submit(home_chunk(rig))
    assert exc.value.reason == "fault"
    ok, _ = rig.stack.reset()
    assert ok
    rig.submit(home_chunk(rig, offset=0.05))
    assert rig.tick().state is SafetyState.RUNNING


def test_startup_ramps_from_measured_pose_at_the_ramp_speed():
    rig = Rig(_with_safety(watchdog_hold_timeout_s=2.0, watchdog_stop_timeout_s=4.0))  # one chunk, a long ramp
    measured = rig.arm.read().positions
    target = measured + np.array([0.5, -0.5, 0.4, 0.0, 0.2, 0.3])  # within startup_max_distance 0.6
    rig.submit(rig.chunk(target))
    first = rig.tick()
    np.testing.assert_allclose(first.ramp_base, measured)
    # From rest: the first step is one tick of acceleration, not one tick of full speed.
    np.testing.assert_allclose(np.abs(first.command - measured), np.minimum(np.abs(target - measured),
                                                                           ACC_STEP * DT), atol=1e-12)
    rig.run(90)
    np.testing.assert_allclose(rig.sent[-1], target, atol=1e-9)  # arrives
    ramp = EMB.safety.startup_ramp_speed_fraction * EMB.max_velocity
    assert np.all(_speeds(rig.sent) <= ramp + 1e-9)  # never faster than the ramp speed
    assert np.max(_speeds(rig.sent)[:, 0]) == pytest.approx(ramp[0])
    over = (np.array(rig.sent) - measured) / np.where(target == measured, 1, target - measured)
    assert np.all(over <= 1 + 1e-9)  # no overshoot past the target


def test_startup_refuses_when_measured_outside_envelope():
    rig = Rig()
    pose = EMB.home.copy()
    pose[0] = EMB.upper[0] + 0.3
    rig.arm.set_positions(pose)
    rig.submit(home_chunk(rig))
    r = rig.tick()
    assert r.state is SafetyState.FAULT and r.reason == "outside_envelope" and r.command is None


def test_no_measurement_on_first_tick_writes_nothing():
    rig = Rig()
    rig.submit(home_chunk(rig))
    r = rig.stack.tick(rig.t, None)
    assert r.command is None and r.state is SafetyState.HOLD and r.reason == "no_measurement"


# ---- e-stop and faults -------------------------------------------------------------------------

def test_estop_brakes_to_a_stop_latches_until_reset_then_restarts_from_measured_pose():
    rig = Rig()
    v = 0.4 * np.array([1, 1, -1, 1, 1, 0])
    rig.submit(home_chunk(rig, velocity=v))
    rig.run(15)
    moving = rig.stack.velocity
    assert np.allclose(moving, v)
    rig.stack.estop("test")
    for _ in range(int(1.0 / DT)):
        r = rig.tick()  # the auditor checks every write is part of a controlled stop
        assert r.state is SafetyState.ESTOP and r.command is not None
        with pytest.raises(ChunkRejected) as exc:
            rig.submit(home_chunk(rig, velocity=0.4))
        assert exc.value.reason == "estop"
    stop_ticks = int(np.ceil(np.max(np.abs(v) / EMB.max_acceleration) / DT))
    assert np.all(rig.sent[-1] == rig.sent[-stop_ticks - 1 + int(1.0 / DT) - stop_ticks - 1])  # standing still
    assert rig.stack.standing_still
    held = rig.stack.last_command
    assert rig.stack.counters.estops == 1
    assert rig.stack.snapshot()["rejected_estop"] == int(1.0 / DT)
    # Someone moves the arm while stopped; reset must not snap back to the old command.
    moved = held + 0.2
    rig.arm.set_positions(moved)
    ok, msg = rig.stack.reset()
    assert ok and "test" in msg
    r = rig.tick()
    assert r.state is SafetyState.IDLE and r.command is None
    rig.submit(rig.chunk(moved + 0.3))
    r = rig.tick()
    np.testing.assert_allclose(r.ramp_base, moved)
    assert np.all(np.abs(r.command - moved) <= STEP + 1e-12)


def test_reset_is_refused_while_the_arm_is_still_braking():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.8 * np.array([1, 1, 1, 1, 1, 0])))
    rig.run(10)
    rig.stack.estop("test")
    rig.tick()
    ok, msg = rig.stack.reset()
    assert not ok and "braking" in msg and rig.stack.estop_reason == "test"
    rig.run_until_still()
    assert rig.stack.reset()[0]


def test_tracking_error_latches_fault_on_stuck_joint():
    rig = Rig()
    rig.arm.faults.stuck_joints = {1}
    vel = np.zeros(6)
    vel[1] = 1.0
    fault_at = None
    for i in range(int(1.5 / DT)):
        if i % 10 == 0 and rig.stack.fault is None:  # fresh chunks keep the watchdog quiet
            rig.submit(rig.chunk(EMB.home + vel * (rig.t - T0), vel))
        if rig.tick().state is SafetyState.FAULT and fault_at is None:
            fault_at = rig.t - T0
    assert rig.stack.fault is not None and rig.stack.fault[0] == "tracking_error"
    # Error passes 0.35 at ~0.35 s; the 0.25 s grace puts the fault at ~0.6 s, not earlier.
    assert 0.55 <= fault_at <= 0.75
    assert rig.stack.counters.tracking_error_max > EMB.max_tracking_error[1]


def test_tracking_monitor_quiet_during_normal_tracking():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.9 * EMB.max_velocity * np.array([1, 1, 1, 1, 1, 0]), steps=15))
    rig.run(25)
    assert rig.stack.fault is None
    assert 0 < rig.stack.counters.tracking_error_max < EMB.max_tracking_error[0]


def test_over_temperature_latches_fault():
    rig = Rig()
    rig.submit(home_chunk(rig))
    rig.run(3)
    rig.arm.faults.over_temperature = {2}
    r = rig.tick()
    assert r.state is SafetyState.FAULT and r.reason == "over_temperature"
    assert "elbow_flex" in rig.stack.fault[1]


def test_latch_fault_holds_and_reset_clears():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.2))
    rig.run(5)
    held = rig.stack.last_command
    rig.stack.latch_fault("read_error", "bus timeout")
    r = rig.run(3)[-1]
    assert r.state is SafetyState.FAULT
    np.testing.assert_array_equal(r.command, held)
    assert rig.stack.snapshot()["fault"] == "read_error"
    rig.stack.reset()
    assert rig.tick().state is SafetyState.IDLE


# ---- splices and latency through the whole stack ------------------------------------------------

def test_splice_through_stack_is_continuous():
    rig = Rig()
    v = np.array([1.0, -1.0, 0.8, 0.5, 1.0, 0.3])
    rig.submit(home_chunk(rig, velocity=v))
    rig.run(10)
    splice_tick = len(rig.sent)
    shaped_before = rig.stack.counters.rate_limit_events  # the start from rest accelerates within the limit
    # The new plan disagrees by 0.12 (a hard switch would be a 0.15 step > the 0.1 limit) and is slower.
    rig.submit(rig.chunk(EMB.home + v * (rig.t - T0) + 0.12, 0.5 * v, stamp=rig.t))
    rig.run(15)
    cmds = np.array(rig.sent)
    steps = np.diff(cmds, axis=0)
    assert np.all(np.abs(steps) <= STEP + 1e-12)
    assert rig.stack.counters.rate_limit_events == shaped_before  # continuity came from the blend, not the limiter
    dv = np.abs(np.diff(steps, axis=0))[splice_tick - 2: splice_tick + 6]
    assert np.max(dv) < 0.06  # per-tick velocity change at the splice (a hard switch: 0.12 + 0.017)


def test_slow_first_inference_does_not_skip_steps_through_stack():
    # A watchdog longer than the chunk, so all 30 steps run off one chunk.
    safety = EMB.safety.model_copy(update={"watchdog_hold_timeout_s": 1.5})
    patient = EMB.model_copy(update={"safety": safety})
    rig = Rig(patient)
    rig.run(int(0.8 / DT))  # robot idle while the first inference warms up
    q = rig.arm.read().positions
    chunk = rig.chunk(q, 0.5 * np.array([1, 1, -1, 1, 1, 0.2]), stamp=rig.t - 0.8)
    rig.submit(chunk)
    rig.run(30)
    cmds = np.array(rig.sent)
    # Step 0, 1, 2, ... in order: after the few ticks the arm needs to accelerate from rest to the chunk's
    # speed (within the acceleration limit), the commands are the chunk's own steps.
    lag = np.max(np.abs(cmds - chunk.positions), axis=1)
    assert lag[0] < 0.5 * STEP.max() and np.all(lag <= 0.02)
    # The chunk ends at speed: the last few commands brake to stop on its last step instead of overshooting.
    np.testing.assert_allclose(cmds[10:-6], chunk.positions[10:-6], atol=1e-9)
    assert rig.stack.scheduler.stats.last_skipped_steps == 0
    assert rig.stack.snapshot()["latency_last_ms"] == pytest.approx(800.0)


def test_executing_splice_skips_exactly_the_elapsed_steps():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.3))
    rig.run(10)
    stamp = rig.t - 0.2
    rig.submit(rig.chunk(EMB.home + 0.3 * (stamp - T0), 0.3, stamp=stamp))
    rig.run(1)
    assert rig.stack.scheduler.stats.last_anchor_mode == "time_indexed"
    assert rig.stack.scheduler.stats.last_skipped_steps == 6


def test_shadow_mode_computes_and_leaving_it_restarts_from_measured():
    rig = Rig(shadow=True)
    rig.submit(home_chunk(rig, velocity=0.5))
    res = rig.run(10)
    assert all(r.command is not None for r in res) and rig.arm.writes == 0
    rig.stack.set_shadow(False)
    rig.submit(rig.chunk(rig.arm.read().positions + 0.2, stamp=rig.t))
    r = rig.tick()
    np.testing.assert_allclose(r.ramp_base, EMB.home)
    assert rig.arm.writes == 1


def test_clock_jump_back_forgets_stamps():
    rig = Rig()
    rig.submit(home_chunk(rig))
    rig.run(3)
    rig.t -= 100.0
    rig.run(1)
    assert rig.stack.counters.clock_jumps == 1
    rig.submit(home_chunk(rig))  # an old stamp is fine after the jump
    assert rig.tick().state is SafetyState.RUNNING


# ---- hardware registry and mock -------------------------------------------------------------------

def test_make_hardware_mock_and_unavailable_backends(monkeypatch):
    import molmoact2_ros.backends.hardware as registry

    hw = make_hardware(EMB)
    assert isinstance(hw, MockArm) and hw.time_constant_s == 0.05
    monkeypatch.delitem(registry._REGISTRY, "franka")  # a build without one of the schema's backends
    with pytest.raises(HardwareError, match="not available in this build"):
        make_hardware(EMB, "franka")
    with pytest.raises(HardwareError, match="created by the driver node"):
        make_hardware(EMB, "mujoco")  # the sim's topics: it needs the driver node's handle
    with pytest.raises(HardwareError, match="has no emulated device"):
        make_hardware(EMB, "mock", emulate=True)
    with pytest.raises(HardwareError, match="unknown hardware backend"):
        make_hardware(EMB, "warp_drive")


def test_mock_first_order_tracking_and_faults():
    t = [0.0]
    arm = MockArm(EMB, clock=lambda: t[0], sleep=lambda s: None)
    with pytest.raises(HardwareError):
        arm.read()
    arm.connect()
    np.testing.assert_allclose(arm.read().positions, EMB.home)
    target = EMB.home + 0.2
    arm.write(target)
    t[0] = 0.05  # one time constant
    np.testing.assert_allclose(arm.read().positions, EMB.home + 0.2 * (1 - np.exp(-1)), atol=1e-12)
    arm.faults.latency_s = 0.1
    arm.write(EMB.home)
    t[0] = 0.1
    assert np.all(arm.read().positions > EMB.home + 0.1)  # still following the old command
    arm.faults.read_error = True
    with pytest.raises(HardwareError):
        arm.read()
    arm.faults.read_error = False
    arm.faults.write_error = True
    with pytest.raises(HardwareError):
        arm.write(EMB.home)
    with pytest.raises(HardwareError):
        MockArm(EMB, time_constant_s=0.0)


# ---- safety config: fault action, temperature limit, tracking grace ----------------------------------

def test_safety_config_defaults_and_validation():
    from molmoact2_ros.core.embodiment import SafetyConfig, parse_embodiment
    from molmoact2_ros.core.errors import ConfigError

    cfg = SafetyConfig()
    assert cfg.fault_action == "hold" and cfg.max_temperature_c is None and cfg.tracking_error_grace_s == 0.25
    data = EMB.model_dump(exclude={"source_path"})
    data["safety"]["fault_action"] = "panic"
    with pytest.raises(ConfigError, match=r"safety\.fault_action.*panic"):
        parse_embodiment(data, "lab.yaml")


def test_stack_takes_fault_action_grace_and_strictest_temperature_from_config():
    from molmoact2_ros.core.safety import effective_max_temperature_c

    emb = _with_safety(fault_action="relax", max_temperature_c=60.0, tracking_error_grace_s=0.5)
    stack = SafetyStack(emb, max_temperature_c=70.0)
    assert stack.fault_action == "relax" and stack.tracking_error_grace_s == 0.5
    assert stack.max_temperature_c == 60.0  # the lower of config and backend
    assert SafetyStack(_with_safety(max_temperature_c=80.0), max_temperature_c=70.0).max_temperature_c == 70.0
    assert SafetyStack(emb, fault_action="hold").fault_action == "hold"  # a backend that cannot relax
    assert effective_max_temperature_c(None, None) is None
    with pytest.raises(ValueError, match="fault_action"):
        SafetyStack(EMB, fault_action="explode")


def test_config_temperature_limit_below_the_backend_faults_earlier():
    rig = Rig(_with_safety(max_temperature_c=30.0))  # the mock reports 35 C at ambient
    rig.submit(home_chunk(rig))
    r = rig.tick()
    assert r.state is SafetyState.FAULT and r.reason == "over_temperature" and r.command is None


def test_fault_relax_returns_no_command_and_reset_restarts_from_measured():
    rig = Rig(_with_safety(fault_action="relax"))
    rig.submit(home_chunk(rig, velocity=0.2))
    rig.run(5)
    rig.stack.latch_fault("write_error", "bus down")
    r = rig.tick()
    assert r.state is SafetyState.FAULT and r.relax and r.command is None
    rig.stack.reset()
    rig.arm.set_positions(EMB.home + 0.1)
    rig.submit(home_chunk(rig, offset=0.1))
    r = rig.tick()
    np.testing.assert_allclose(r.ramp_base, EMB.home + 0.1)


def test_tracking_monitor_ignores_a_gripper_holding_an_object():
    rig = Rig()
    rig.arm.faults.stuck_joints = {5}  # the gripper closed on a cube: it stops short of "closed"
    target = EMB.home.copy()
    target[5] = 0.0
    for i in range(int(2.0 / DT)):
        if i % 10 == 0:
            rig.submit(rig.chunk(np.where(np.arange(6) == 5, np.maximum(0.5 - 2.0 * (rig.t - T0), 0.0), EMB.home)))
        rig.tick()
    assert rig.stack.fault is None
    assert abs(rig.arm.true_positions[5] - 0.5) < 1e-9 and rig.stack.last_command[5] < 0.1


def test_grace_from_config_delays_the_tracking_fault():
    def fault_time(grace: float) -> float:
        rig = Rig(_with_safety(tracking_error_grace_s=grace))
        rig.arm.faults.stuck_joints = {1}
        vel = np.zeros(6)
        vel[1] = 1.0
        for i in range(int(2.0 / DT)):
            if i % 10 == 0 and rig.stack.fault is None:
                rig.submit(rig.chunk(EMB.home + vel * (rig.t - T0), vel))
            if rig.tick().state is SafetyState.FAULT:
                return rig.t - T0
        raise AssertionError("no fault")

    assert fault_time(0.5) - fault_time(0.1) == pytest.approx(0.4, abs=1.5 * DT)


def test_clock_jump_forward_holds_until_a_fresh_chunk():
    rig = Rig()
    rig.submit(home_chunk(rig, velocity=0.3))
    rig.run(5)
    held = rig.stack.last_command
    rig.t += 20.0
    r = rig.tick()
    assert (r.state, r.reason) == (SafetyState.HOLD, "clock_jump")
    np.testing.assert_array_equal(r.command, held)
    assert rig.stack.counters.clock_jumps == 1
    rig.submit(rig.chunk(held, 0.3))
    assert rig.tick().state is SafetyState.RUNNING


def test_bimanual_fault_names_the_arm():
    yam = load_embodiment("yam_bimanual")
    stack = SafetyStack(yam)
    assert stack.arms_of([0, 8, 9]) == ["left", "right"]
    stack.latch_fault("over_temperature", "hot", [yam.joint_names.index("right_joint2")])
    snap = stack.snapshot()
    assert snap["fault_arms"] == "right" and "right arm; every arm holds" in snap["fault_detail"]


# ---- DriverCore: one tick against the hardware -----------------------------------------------------

def _core(emb=EMB, **kw):
    rig = Rig(emb, **kw)
    return rig, rig.core


def test_core_latches_after_error_limit_and_clears_on_reset():
    rig, core = _core(error_limit=2)
    rig.submit(home_chunk(rig, velocity=0.2))
    core.cycle(rig.t)
    rig.arm.faults.read_error = True
    rig.t += DT
    out = core.cycle(rig.t)
    assert out.positions is None and out.events[0][0] == "warning" and rig.stack.fault is None
    rig.t += DT
    core.cycle(rig.t)
    assert rig.stack.fault[0] == "read_error" and core.read_errors == 2
    core.clear_errors()
    assert core.read_streak == 0


def test_core_relaxes_once_and_never_in_shadow_mode():
    rig, core = _core(_with_safety(fault_action="relax"))
    rig.submit(home_chunk(rig, velocity=0.2))
    for _ in range(3):
        core.cycle(rig.t)
        rig.t += DT
    rig.arm.faults.over_temperature = {0}
    for _ in range(5):
        core.cycle(rig.t)
        rig.t += DT
    assert rig.arm.relaxes == 1 and core.relaxes == 1 and core.relaxed
    shadow_rig, shadow_core = _core(_with_safety(fault_action="relax"))
    shadow_rig.stack.set_shadow(True)
    shadow_rig.submit(home_chunk(shadow_rig))
    shadow_core.cycle(shadow_rig.t)
    shadow_rig.arm.faults.over_temperature = {0}
    shadow_core.cycle(shadow_rig.t + DT)
    assert shadow_rig.arm.relaxes == 0 and shadow_rig.arm.writes == 0


def test_core_does_not_relax_a_robot_it_never_commanded():
    rig, core = _core(_with_safety(fault_action="relax"))
    rig.arm.faults.over_temperature = {0}
    out = core.cycle(rig.t)
    assert out.tick.state is SafetyState.FAULT and rig.arm.relaxes == 0


def test_core_waits_for_a_backend_that_is_not_ready():
    rig, core = _core(ready_timeout_ticks=3)
    rig.arm.disconnect()  # the mock is ready when connected: this stands in for "no data yet"
    rig.submit(home_chunk(rig))
    outs = [core.cycle(rig.t + i * DT) for i in range(3)]
    assert all(o.positions is None and o.sent is None for o in outs)
    assert rig.stack.fault[0] == "hardware_not_ready" and core.not_ready_ticks == 3
