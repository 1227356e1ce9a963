"""The hazards an independent review and fuzzer found (issue 8, items 1-8), each driven through the whole
per-tick path (``DriverCore.cycle`` against a MockArm) with every write audited.

Each test failed on the stack before the fix: huge finite chunks crashed the tick, foreign exceptions from a
backend escaped, NaN measurements reached ``write()``, an e-stop re-energised a relaxed arm, a shadow toggle
between tick and write moved the arm, idle DM motors timed out, stops stepped from full speed to zero, and a
chunk from another state was blended in from any distance.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from safety_rig import DT, EMB, Rig, _speeds, _with_safety, home_chunk

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ChunkRejected, HardwareError
from molmoact2_ros.core.safety import SafetyState

YAM = load_embodiment("yam_bimanual")
MOVING = 0.6 * np.array([1, -1, 1, 1, -1, 0])  # rad/s per joint, the gripper still


def _moving_rig(**kw) -> Rig:
    rig = Rig(**kw)
    rig.submit(home_chunk(rig, velocity=MOVING))
    rig.run(10)
    assert rig.results[-1].state is SafetyState.RUNNING and np.allclose(rig.stack.velocity, MOVING)
    return rig


# ---- 1. finite but huge values -------------------------------------------------------------------

@pytest.mark.parametrize("value", [1e307, -1e307, 1.7976931348623157e308, 1e30, 50.0])
def test_huge_finite_chunk_is_rejected_and_motion_continues(value):
    rig = _moving_rig()
    positions = np.tile(EMB.home, (30, 1))
    positions[:, 2] = value
    with pytest.raises(ChunkRejected) as exc:
        rig.submit(ActionChunk(EMB.joint_names, positions, rig.t, EMB.control_rate_hz))
    assert exc.value.reason == "out_of_range"
    res = rig.run(3)
    assert all(r.state is SafetyState.RUNNING for r in res)  # still following the previous chunk


def test_a_tick_that_fails_inside_still_writes_a_controlled_stop(monkeypatch):
    rig = _moving_rig()

    def broken(now_s):
        raise OverflowError("int(inf)")

    monkeypatch.setattr(rig.stack.scheduler, "target", broken)
    res = rig.run(20)  # the auditor checks each of these writes is a controlled stop
    assert res[0].state is SafetyState.FAULT and res[0].reason == "internal_error" and res[0].command is not None
    assert rig.stack.fault[0] == "internal_error" and "OverflowError" in rig.stack.fault[1]
    assert rig.stack.counters.internal_errors == 1 and rig.stack.standing_still


# ---- 2. any backend exception takes the hardware-error path -------------------------------------------

class SerialException(OSError):
    """Stands in for pyserial's own exception type."""


@pytest.mark.parametrize("exc", [OSError(5, "Input/output error"), SerialException("device reports readiness "
                                 "to read but returned no data"), ValueError("bad frame"), RuntimeError("CAN bus off")])
def test_foreign_read_exceptions_are_glitches_then_a_latched_fault(exc):
    rig = _moving_rig()
    rig.arm.faults.read_exception = exc
    first = rig.tick()
    cycle = rig.cycles[-1]
    assert cycle.positions is None and cycle.sent is not None  # the heartbeat (and the motion) go on
    assert first.state is SafetyState.RUNNING
    assert cycle.events and type(exc).__name__ in cycle.events[0][1]
    rig.run(2)
    assert rig.stack.fault[0] == "read_error" and type(exc).__name__ in rig.stack.fault[1]
    assert rig.core.read_errors == 3
    rig.run(20)  # faulted: a controlled stop, audited
    assert rig.stack.standing_still


@pytest.mark.parametrize("exc", [OSError("write failed"), TimeoutError("no ack"), KeyError("motor 3")])
def test_foreign_write_exceptions_latch_write_error(exc):
    rig = _moving_rig()
    rig.arm.faults.write_exception = exc
    rig.run(3)
    assert rig.stack.fault[0] == "write_error" and type(exc).__name__ in rig.stack.fault[1]
    assert rig.core.write_errors == 3


def test_a_write_that_reports_garbage_counts_as_a_failed_write():
    rig = _moving_rig()
    real_write = rig.arm.write
    rig.arm.write = lambda cmd: np.full(3, np.nan)  # wrong shape and NaN: nobody knows what was sent
    rig.tick()
    assert rig.core.write_errors == 1 and "backend reported sending" in rig.cycles[-1].events[0][1]
    rig.arm.write = real_write
    rig.tick()
    assert rig.core.write_streak == 0


def test_a_backend_whose_ready_raises_is_a_read_failure():
    class Flaky(Exception):
        pass

    rig = Rig()

    class NotReady:
        name = "flaky"

        @property
        def ready(self):
            raise Flaky("usb reset")

    rig.core.hardware = NotReady()
    rig.core._was_ready = False
    rig.run(3)
    assert rig.stack.fault[0] == "read_error" and "Flaky" in rig.stack.fault[1]


# ---- 3. NaN / inf measurements ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_measurement_before_the_first_write_writes_nothing(bad):
    rig = Rig()
    rig.arm.faults.nan_joints = {1}
    rig.arm.faults.noise_std = 0.0
    rig.submit(home_chunk(rig))
    if not np.isnan(bad):
        rig.arm.read = (lambda orig: (lambda: _replace_joint(orig(), 1, bad)))(rig.arm.read)
    res = rig.run(5)
    assert all(r.command is None for r in res) and rig.arm.writes == 0
    assert rig.stack.fault[0] == "measurement_invalid" and "shoulder_lift" in rig.stack.fault[1]


def _replace_joint(reading, j, value):
    reading.positions[j] = value
    return reading


def test_nan_measurement_in_motion_is_a_fault_and_a_controlled_stop():
    rig = _moving_rig()
    rig.arm.faults.nan_joints = {0}
    res = rig.run(20)
    assert res[0].state is SafetyState.FAULT and res[0].reason == "measurement_invalid"
    assert all(np.all(np.isfinite(s)) for s in rig.sent)
    assert rig.stack.standing_still


@pytest.mark.parametrize("temperature", [np.nan, np.inf])
def test_non_finite_temperature_is_a_fault(temperature):
    rig = _moving_rig()
    rig.arm.faults.bad_temperature = temperature
    r = rig.tick()
    assert r.state is SafetyState.FAULT and r.reason == "temperature_invalid"


def test_a_reading_of_the_wrong_size_is_a_fault():
    rig = _moving_rig()
    orig = rig.arm.read

    def short():
        reading = orig()
        reading.positions = reading.positions[:4]
        return reading

    rig.arm.read = short
    r = rig.tick()
    assert r.state is SafetyState.FAULT and r.reason == "measurement_invalid"


# ---- 4. relax then e-stop ----------------------------------------------------------------------------------

@pytest.mark.parametrize("heartbeat", [False, True])
def test_estop_after_relax_stays_relaxed_until_reset(heartbeat):
    arm_kwargs = {"command_timeout_s": 0.4} if heartbeat else {}
    rig = _moving_rig(emb=_with_safety(fault_action="relax"), arm_kwargs=arm_kwargs)
    rig.arm.faults.over_temperature = {2}
    r = rig.tick()
    assert r.relax and r.command is None and rig.arm.relaxes == 1
    rig.arm.faults.over_temperature = set()
    sagged = rig.arm.true_positions - np.array([0, 0.3, 0, 0, 0, 0])  # gravity pulls the relaxed arm down
    rig.arm.set_positions(sagged)
    writes = rig.arm.writes
    rig.stack.estop("button")
    res = rig.run(30)
    assert all(r.state is SafetyState.ESTOP and r.command is None for r in res)
    assert rig.arm.writes == writes  # nothing drives the sagged arm back
    ok, _ = rig.stack.reset()
    assert ok
    r = rig.tick()
    if heartbeat:  # re-engages where the arm is, not where it was
        np.testing.assert_allclose(r.command, sagged)
        np.testing.assert_allclose(r.ramp_base, sagged)
    else:
        assert r.command is None


# ---- 5. shadow toggles -------------------------------------------------------------------------------------

def test_shadow_is_decided_inside_the_tick_a_toggle_after_it_writes_nothing():
    rig = Rig(shadow=True)
    rig.submit(home_chunk(rig, offset=0.2, velocity=0.5 * np.array([1, 1, 1, 1, 1, 0])))
    rig.run(5)
    assert rig.arm.writes == 0
    real_tick = rig.stack.tick

    def tick_then_enable(*args, **kwargs):
        result = real_tick(*args, **kwargs)
        rig.stack.set_shadow(False)  # ~/enable arrives right after the tick released the lock
        return result

    rig.stack.tick = tick_then_enable
    rig.tick()
    rig.stack.tick = real_tick
    assert rig.arm.writes == 0  # the command was computed against the unwritten shadow trajectory
    measured = rig.arm.read().positions
    rig.submit(rig.chunk(measured + 0.1, 0.2 * np.array([1, 1, 1, 1, 1, 0])))
    r = rig.tick()
    np.testing.assert_allclose(r.ramp_base, measured)  # re-anchored on the measured pose
    assert rig.arm.writes == 1


def test_entering_shadow_while_moving_brakes_to_a_stop_first():
    rig = _moving_rig()
    rig.stack.set_shadow(True)
    res = rig.run(15)  # audited: a controlled stop, then nothing written
    assert res[0].state is SafetyState.HOLD and res[0].reason == "entering_shadow" and not res[0].shadow
    assert rig.stack.shadow and res[-1].shadow
    writes = rig.arm.writes
    rig.run(5)
    assert rig.arm.writes == writes


# ---- 6. heartbeat while idle ---------------------------------------------------------------------------------

def _yam_rig(heartbeat: bool | None = None, **kw) -> Rig:
    extra = {} if heartbeat is None else {"heartbeat": heartbeat}
    return Rig(YAM, arm_kwargs={"command_timeout_s": 0.4}, **extra, **kw)


def test_idle_dm_motors_get_a_heartbeat_and_never_fall_into_damping():
    rig = _yam_rig()
    assert rig.arm.needs_heartbeat and rig.stack.heartbeat
    res = rig.run(int(2.0 / DT))  # waiting for the first chunk (a slow first inference)
    assert all(r.state is SafetyState.IDLE and r.command is not None for r in res)
    np.testing.assert_allclose(res[0].ramp_base, YAM.home)
    assert rig.arm.timeouts == 0 and not rig.arm.relaxed


def test_without_the_heartbeat_the_emulated_dm_motors_do_fall_into_damping():
    rig = _yam_rig(heartbeat=False)
    rig.run(int(2.0 / DT))
    assert rig.arm.writes == 0
    rig.arm.write(YAM.home)
    rig.t += 0.5
    rig.arm.read()
    assert rig.arm.timeouts == 1  # so the test above can fail


def test_heartbeat_after_reset_and_after_leaving_shadow():
    rig = _yam_rig(shadow=True)
    rig.run(10)
    assert rig.arm.writes == 0  # shadow: nothing written, by design
    rig.stack.set_shadow(False)
    rig.run(int(1.0 / DT))
    assert rig.arm.timeouts == 0 and rig.arm.writes == int(1.0 / DT)
    rig.stack.estop("test")
    rig.run(5)
    assert rig.stack.reset()[0]
    rig.run(int(1.0 / DT))
    assert rig.arm.timeouts == 0 and rig.results[-1].state is SafetyState.IDLE


# ---- 7. controlled stops -------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["watchdog", "estop", "deactivate", "fault"])
def test_every_stop_from_speed_decelerates_within_the_acceleration_limit(how):
    rig = Rig()
    fast = 2.8 * np.array([1, -1, 1, -1, 1, 0])  # 93% of the velocity limit
    rig.submit(home_chunk(rig, velocity=fast, steps=14))
    rig.run(13)
    assert np.all(np.abs(rig.stack.velocity[:5]) >= 2.5)
    if how == "estop":
        rig.stack.estop("test")
    elif how == "deactivate":
        rig.stack.disable(rig.t)
    elif how == "fault":
        rig.stack.latch_fault("read_error", "test")
    ticks = rig.run(30)  # watchdog: the chunk ends and no new one comes
    speeds = _speeds(rig.sent[-32:])
    assert np.all(np.abs(np.diff(speeds, axis=0)) <= EMB.max_acceleration * DT * (1 + 1e-9))
    assert rig.stack.standing_still and any(r.state is not SafetyState.RUNNING for r in ticks)
    # It took about v / a to stop, not one tick.
    moving = np.flatnonzero(speeds[:, 0] > 0)
    assert len(moving) >= int(2.5 / EMB.max_acceleration[0] / DT) - 1


# ---- 8. entry into a new chunk --------------------------------------------------------------------------------

def test_a_chunk_whose_step_for_now_is_far_from_the_command_is_rejected():
    rig = _moving_rig()
    here = rig.stack.last_command
    far = rig.chunk(here + np.array([0, 0.35, 0, 0, 0, 0]), MOVING)  # entry_max_distance_rad 0.3
    rig.submit(far)
    r = rig.tick()
    assert rig.stack.counters.rejections["entry_too_far"] == 1 and r.state is SafetyState.RUNNING
    near = rig.chunk(rig.stack.last_command + np.array([0, 0.2, 0, 0, 0, 0]) + MOVING * DT, MOVING)
    rig.submit(near)
    rig.run(20)
    assert rig.stack.counters.chunks_accepted == 2


def test_a_gripper_may_open_or_close_fully_between_chunks():
    rig = _moving_rig()
    flip = rig.stack.last_command.copy()
    flip[5] = 0.0 if flip[5] > 0.5 else 1.0
    rig.submit(rig.chunk(flip + MOVING * DT, MOVING))
    rig.tick()
    assert rig.stack.counters.chunks_accepted == 2


def test_huge_magnitudes_never_raise_through_submit_or_tick():
    rig = _moving_rig()
    for value in (1e307, -1e307, np.inf, np.nan, 1e-320):
        positions = np.tile(EMB.home, (30, 1)) + value
        with contextlib.suppress(ChunkRejected):
            rig.submit(ActionChunk(EMB.joint_names, positions, rig.t, EMB.control_rate_hz))
        rig.tick()
    with pytest.raises(HardwareError):
        rig.arm.write(np.full(EMB.dof, np.nan))  # the mock's own check, never reached by the stack
