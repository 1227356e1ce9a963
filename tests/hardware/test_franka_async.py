"""FrankaArm with ``control_mode: async`` (libfranka's AsyncPositionControlHandler) against the stand-in robot: the
option is validated, the robot's own generator tracks the driver's moving targets inside the limits, a reflex
is a HardwareError until ``recover()`` (the driver's FAULT and ~/reset), relax and disconnect bring the motion
to rest before ending it, as in the callback mode. Paced by the emulated robot's ticks, never by sleeps."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

pytest.importorskip("pylibfranka")

from waiting import wait_for as _wait_for

from molmoact2_ros.backends.hardware.franka import FrankaArm
from molmoact2_ros.backends.hardware.franka_shaping import FRANKA_LIMITS
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.driver_core import DriverCore
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.core.safety import SafetyStack, SafetyState

EMB = load_embodiment("franka_droid")
TIMEOUT_S = 60.0  # generous: a busy 2-core machine
TICKS_PER_WRITE = 10  # the driver's 100 Hz against the robot's 1 kHz


def async_arm(**params) -> FrankaArm:
    return FrankaArm(EMB, robot_model="fr3", control_mode="async", emulate=True, **params)


@pytest.fixture
def arm():
    a = async_arm()
    a.connect()
    yield a
    a.disconnect()


wait_for = functools.partial(_wait_for, timeout=TIMEOUT_S, interval=0.002)


def tick(arm, target) -> np.ndarray:
    """One driver tick (read, write), then wait until the robot ran a driver period: returns the reading."""
    dev = arm.emulated_device
    reading = arm.read().positions
    arm.write(target)
    start = dev.ticks
    wait_for(lambda: dev.ticks >= start + TICKS_PER_WRITE or not dev.control_active, "the robot's next ticks")
    return reading


def test_control_mode_is_validated():
    with pytest.raises(HardwareError, match=r"control_mode must be 'callback' or 'async', not 'fast'"):
        FrankaArm(EMB, control_mode="fast", emulate=True)
    with pytest.raises(HardwareError, match=r"Franka Research 3.*control_mode: callback"):
        FrankaArm(EMB, robot_model="panda", control_mode="async", emulate=True)
    assert FrankaArm(EMB, emulate=True).control_mode == "callback"  # the default


def test_velocity_cap_is_the_embodiments_never_above_frankas(arm):
    dq_max = np.array(FRANKA_LIMITS["fr3"].dq_max)
    np.testing.assert_allclose(arm._async_max_velocity, np.minimum(EMB.max_velocity[:7], 0.9 * dq_max))
    fast = EMB.joints[0].model_copy(update={"max_velocity_per_s": 9.0})  # above Franka's 2.62
    emb = EMB.model_copy(update={"joints": [fast, *EMB.joints[1:]]})
    a = FrankaArm(emb, robot_model="fr3", control_mode="async", emulate=True)
    assert a._async_max_velocity[0] == pytest.approx(0.9 * dq_max[0])


def test_connect_does_not_energise_and_the_first_write_configures(arm):
    dev = arm.emulated_device
    assert dev.controls_started == 0 and not arm.control_running
    home = arm.read().positions
    np.testing.assert_allclose(home[:7], EMB.home[:7], atol=1e-9)
    arm.write(home)
    assert arm.control_running and dev.controls_started == 1 and dev.mode.name == "Move"
    np.testing.assert_allclose(arm.read().positions[:7], home[:7], atol=1e-6)


def test_tracks_a_moving_target_within_the_limits(arm):
    dev = arm.emulated_device
    start = arm.read().positions
    ramp = np.zeros(EMB.dof)
    ramp[[0, 3, 6]] = (0.5, 0.3, -0.8)  # rad/s
    errors = []
    for k in range(150):  # 1.5 s of targets moving at the driver's rate
        target = start + ramp * (k * TICKS_PER_WRITE / 1000.0)
        measured = tick(arm, target)
        errors.append(np.max(np.abs(measured[:7] - target[:7])))
    assert max(errors[20:]) < 0.1  # a small lag behind the moving target, bounded
    wait_for(lambda: np.allclose(arm.read().positions[:7], target[:7], atol=2e-3), "the arm at the last target")
    assert dev.reflexes == [] and arm.control_running
    cap_fraction = np.max(arm._async_max_velocity / np.array(FRANKA_LIMITS["fr3"].dq_max))
    assert dev.peak_fraction["velocity"] <= cap_fraction + 1e-9
    assert dev.peak_fraction["acceleration"] <= 1.0 and dev.peak_fraction["jerk"] <= 1.0


def test_a_far_target_is_approached_at_the_velocity_cap(arm):
    dev = arm.emulated_device
    target = arm.read().positions.copy()
    target[0] += 1.2  # a step: the robot's generator, not the backend, makes the path
    arm.write(target)
    wait_for(lambda: np.allclose(arm.read().positions[:7], target[:7], atol=2e-3), "the arm at the target")
    cap = arm._async_max_velocity[0] / FRANKA_LIMITS["fr3"].dq_max[0]
    assert cap * 0.9 < dev.peak_fraction["velocity"] <= cap + 1e-9
    assert dev.reflexes == []


def test_target_beyond_the_position_limits_is_held_inside_them(arm):
    target = arm.read().positions.copy()
    target[3] = 0.5  # joint 4 of an FR3 must stay below -0.1518
    sent = arm.write(target)
    assert sent[3] == pytest.approx(-0.1518 - 0.01)
    wait_for(lambda: arm.read().positions[3] > -0.1518 - 0.012, "joint 4 at its limit")
    assert arm.emulated_device.reflexes == []


def test_reflex_is_a_hardware_error_until_recovered(arm):
    dev = arm.emulated_device
    arm.write(arm.read().positions)
    dev.inject_reflex("joint_reflex")
    wait_for(lambda: dev.mode.name == "Reflex", "the reflex")
    with pytest.raises(HardwareError, match=r"joint_reflex.*~/reset"):
        arm.read()
    assert not arm.control_running and dev.async_client is None  # the handler was released
    with pytest.raises(HardwareError, match=r"joint_reflex.*~/reset"):
        arm.write(EMB.home)
    arm.recover()
    assert dev.recoveries == 1 and dev.mode.name == "Idle"
    arm.write(arm.read().positions)  # motion restarts: a new handler
    assert dev.controls_started == 2 and arm.control_running


def test_user_stop_is_reported_and_recovery_needs_it_released(arm):
    dev = arm.emulated_device
    arm.write(arm.read().positions)
    dev.press_user_stop()
    wait_for(lambda: dev.mode.name == "UserStopped", "the user stop")
    with pytest.raises(HardwareError, match="user stop"):
        arm.read()
    with pytest.raises(HardwareError, match="recovery failed"):
        arm.recover()
    dev.release_user_stop()
    arm.recover()
    arm.write(arm.read().positions)
    assert arm.control_running


def test_driver_faults_on_a_reflex_and_reset_recovers_the_robot(arm):
    dev = arm.emulated_device
    stack = SafetyStack(EMB, max_temperature_c=arm.max_temperature_c)
    core = DriverCore(stack, arm, error_limit=3)
    stack.enable()

    def cycle():  # one driver tick, then the robot's 10 ms
        start = dev.ticks
        core.cycle(time.monotonic())
        wait_for(lambda: dev.ticks >= start + TICKS_PER_WRITE or not dev.control_active, "the robot's ticks")

    for _ in range(3):
        cycle()
    start = arm.read().positions
    k = np.arange(30)[:, None] / EMB.control_rate_hz
    vel = np.zeros(EMB.dof)
    vel[0] = 0.3

    def follow():  # a chunk from where the arm is, again if a stall on a busy machine let the last one run out
        if stack.state is not SafetyState.RUNNING:
            now = time.monotonic()
            stack.submit(ActionChunk(EMB.joint_names, arm.read().positions + vel * k, now, EMB.control_rate_hz), now)
        cycle()

    wait_for(lambda: arm.read().positions[0] > start[0] + 0.05, "the driver moving joint 1", poll=follow)
    assert dev.controls_started == 1 and dev.reflexes == []
    dev.inject_reflex("cartesian_reflex")
    wait_for(lambda: stack.state is SafetyState.FAULT, "the driver's fault", poll=cycle)
    assert "cartesian_reflex" in stack.fault[1]
    arm.recover()  # the driver's ~/reset: the backend first, then the stack
    assert dev.recoveries == 1
    wait_for(lambda: stack.reset()[0], "the stack reset", poll=cycle)
    core.clear_errors()
    for _ in range(5):
        cycle()
    assert stack.state is not SafetyState.FAULT


def test_relax_while_moving_comes_to_rest_then_ends_the_motion(arm):
    dev = arm.emulated_device
    target = arm.read().positions.copy()
    target[0] += 1.0
    arm.write(target)
    wait_for(lambda: abs(arm.read().velocities[0]) > 0.5, "joint 1 moving fast")
    arm.relax()  # held at the generator's command, reached at rest, then motion_finished
    assert not arm.control_running and not dev.control_active and dev.async_client is None
    assert dev.mode.name == "Idle" and dev.controls_finished == 1 and dev.reflexes == []
    assert dev.motion_stops == 0  # finished at rest, not cut short by Robot.stop()
    arm.write(arm.read().positions)  # the next write re-energises
    assert dev.controls_started == 2


def test_disconnect_while_moving_ends_the_motion_without_a_reflex():
    a = async_arm()
    a.connect()
    dev = a.emulated_device
    target = a.read().positions.copy()
    target[[0, 5]] += (0.8, 0.4)
    a.write(target)
    wait_for(lambda: abs(a.read().velocities[0]) > 0.3, "joint 1 moving")
    a.disconnect()
    assert not dev.control_active and dev.controls_finished == 1 and dev.reflexes == [] and dev.motion_stops == 0
    a.disconnect()  # twice: fine
    with pytest.raises(HardwareError, match="not connected"):
        a.read()
