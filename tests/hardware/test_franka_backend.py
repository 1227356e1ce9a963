"""FrankaArm through pylibfranka's API against the stand-in robot (``emulate=True``): the 1 kHz loop shapes
what would trip a reflex, maps joints and the hand, reports reflexes as HardwareError (-> the driver's
FAULT -> ``recover()`` on reset), and shuts down cleanly. Waits are on conditions, never fixed sleeps."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("pylibfranka")

from waiting import wait_for

from molmoact2_ros.backends.hardware import make_hardware
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.driver_core import DriverCore
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.core.safety import SafetyStack, SafetyState

EMB = load_embodiment("franka_droid")
TIMEOUT_S = 30.0  # generous: a busy 2-core machine


@pytest.fixture
def franka_arm():
    arm = make_hardware(EMB, "franka", emulate=True)
    arm.connect()
    yield arm
    arm.disconnect()


def test_connect_configures_but_does_not_energise(franka_arm):
    dev = franka_arm.emulated_device
    assert dev.collision_behavior is not None and dev.joint_impedance is not None
    assert dev.controls_started == 0 and not dev.control_active
    reading = franka_arm.read()
    np.testing.assert_allclose(reading.positions[:7], EMB.home[:7], atol=1e-9)
    assert reading.positions[7] == pytest.approx(0.08)  # hand open, metres like the yaml
    assert reading.velocities.shape == (8,) and reading.temperatures_c is None
    assert franka_arm.supports_relax and franka_arm.relax_on_stop


def test_raw_step_is_shaped_and_trips_no_reflex(franka_arm):
    dev = franka_arm.emulated_device
    start = franka_arm.read().positions
    target = start.copy()
    target[0] += 0.6
    target[3] -= 0.4
    target[6] += 1.0
    sent = franka_arm.write(target)  # a step the robot would refuse raw
    np.testing.assert_allclose(sent, target)
    assert dev.controls_started == 1
    wait_for(lambda: np.allclose(franka_arm.read().positions[:7], target[:7], atol=2e-3), "the arm at the target")
    assert dev.reflexes == [] and dev.mode.name == "Move"
    assert 0.5 < dev.peak_fraction["velocity"] <= 0.9 + 1e-9
    assert dev.peak_fraction["acceleration"] <= 0.9 + 1e-9 and dev.peak_fraction["jerk"] <= 0.9 + 1e-9


def test_target_beyond_the_position_limits_is_held_inside_them(franka_arm):
    start = franka_arm.read().positions
    target = start.copy()
    target[3] = 0.5  # joint 4 must stay below -0.0698
    sent = franka_arm.write(target)
    assert sent[3] == pytest.approx(-0.0698 - 0.01)
    wait_for(lambda: franka_arm.read().positions[3] > -0.0698 - 0.012, "joint 4 at its limit")
    time.sleep(0.05)
    assert franka_arm.emulated_device.reflexes == []
    assert franka_arm.read().positions[3] < -0.0698


def test_joint_order_and_hand_mapping(franka_arm):
    dev = franka_arm.emulated_device
    with dev.lock:  # someone else moved the robot: each joint reads back in the embodiment's order
        dev.q = np.array([0.1, -0.2, 0.3, -1.4, 0.5, 1.6, 0.7])
    reading = franka_arm.read()
    np.testing.assert_allclose(reading.positions[:7], [0.1, -0.2, 0.3, -1.4, 0.5, 1.6, 0.7])
    cmd = reading.positions.copy()
    cmd[7] = 0.03  # close to 3 cm: a grasp (force), in metres
    assert franka_arm.write(cmd)[7] == pytest.approx(0.03)
    wait_for(lambda: abs(franka_arm.read().positions[7] - 0.03) < 1e-4, "fingers at 3 cm")
    assert dev.hand.commands[-1][:2] == ("grasp", pytest.approx(0.03))
    n = len(dev.hand.commands)
    cmd[7] = 0.031  # inside the deadband: nothing sent
    franka_arm.write(cmd)
    cmd[7] = 0.2  # wider than the hand: its own stroke
    assert franka_arm.write(cmd)[7] == pytest.approx(0.08)
    wait_for(lambda: franka_arm.read().positions[7] > 0.0799, "fingers open")
    assert [c[0] for c in dev.hand.commands[n:]] == ["move"]


def test_normalized_gripper_unit():
    hand = EMB.joints[7].model_copy(update={"unit": "normalized", "position_limits": (0.0, 1.0)})
    emb = EMB.model_copy(update={"joints": [*EMB.joints[:7], hand]})
    arm = make_hardware(emb, "franka", emulate=True)
    arm.connect()
    try:
        assert arm.read().positions[7] == pytest.approx(1.0)
        cmd = arm.read().positions.copy()
        cmd[7] = 0.25
        assert arm.write(cmd)[7] == pytest.approx(0.25)
        wait_for(lambda: abs(arm.emulated_device.hand.width - 0.02) < 1e-4, "fingers at 2 cm")
        wait_for(lambda: abs(arm.read().positions[7] - 0.25) < 2e-3, "the reading at a quarter open")
    finally:
        arm.disconnect()


def test_reflex_is_a_hardware_error_until_recovered(franka_arm):
    dev = franka_arm.emulated_device
    franka_arm.write(franka_arm.read().positions)
    wait_for(lambda: dev.commands_received > 5, "the 1 kHz loop running")
    dev.inject_reflex("joint_reflex")
    wait_for(lambda: not franka_arm.control_running, "the loop ending on the reflex")
    for call in (franka_arm.read, lambda: franka_arm.write(EMB.home)):
        with pytest.raises(HardwareError, match=r"joint_reflex.*~/reset"):
            call()
    franka_arm.recover()
    assert dev.recoveries == 1 and dev.mode.name == "Idle"
    franka_arm.read()
    franka_arm.write(franka_arm.read().positions)  # motion restarts
    assert dev.controls_started == 2


def test_driver_faults_on_a_reflex_and_reset_recovers_the_robot(franka_arm):
    dev = franka_arm.emulated_device
    stack = SafetyStack(EMB, max_temperature_c=franka_arm.max_temperature_c)
    core = DriverCore(stack, franka_arm, error_limit=3)
    stack.enable()
    dt = 1.0 / EMB.tick_rate_hz

    def cycles(n):
        out = []
        for _ in range(n):
            out.append(core.cycle(time.monotonic()))
            time.sleep(dt)
        return out

    cycles(3)
    start = franka_arm.read().positions
    k = np.arange(30)[:, None] / EMB.control_rate_hz
    vel = np.zeros(EMB.dof)
    vel[0] = 0.3
    stack.submit(ActionChunk(EMB.joint_names, start + vel * k, time.monotonic(), EMB.control_rate_hz),
                 time.monotonic())
    wait_for(lambda: franka_arm.read().positions[0] > start[0] + 0.05, "the driver moving joint 1",
             poll=lambda: cycles(1))
    assert dev.controls_started == 1 and dev.reflexes == []
    dev.inject_reflex("cartesian_reflex")  # a collision
    wait_for(lambda: stack.state is SafetyState.FAULT, "the driver's fault", poll=lambda: cycles(1))
    assert "cartesian_reflex" in stack.fault[1]
    # The driver's ~/reset: the backend's recover() first (automatic error recovery), then the stack.
    franka_arm.recover()
    assert dev.recoveries == 1
    wait_for(lambda: stack.reset()[0], "the stack reset", poll=lambda: cycles(1))
    core.clear_errors()
    cycles(5)
    assert stack.state is not SafetyState.FAULT


def test_relax_ends_the_loop_and_the_robot_holds(franka_arm):
    dev = franka_arm.emulated_device
    franka_arm.write(franka_arm.read().positions)
    wait_for(lambda: dev.commands_received > 5, "the 1 kHz loop running")
    franka_arm.relax()
    assert not franka_arm.control_running and not dev.control_active
    assert dev.controls_finished == 1 and dev.mode.name == "Idle" and dev.reflexes == []
    franka_arm.write(franka_arm.read().positions)  # the next write re-energises
    assert dev.controls_started == 2


def test_clean_shutdown_stops_loop_and_hand():
    arm = make_hardware(EMB, "franka", emulate=True)
    arm.disconnect()  # never connected: fine
    arm.connect()
    dev = arm.emulated_device
    cmd = arm.read().positions.copy()
    cmd[0] += 0.3
    cmd[7] = 0.0
    arm.write(cmd)
    wait_for(lambda: dev.hand.commands, "a hand command in flight")
    arm.disconnect()
    assert not dev.control_active and dev.controls_finished == 1 and dev.reflexes == []
    assert ("stop",) in dev.hand.commands
    assert dev.hand._thread is None or not dev.hand._thread.is_alive()
    arm.disconnect()  # twice: fine
    with pytest.raises(HardwareError, match="not connected"):
        arm.read()


def test_unreachable_robot_names_the_ip():
    from molmoact2_ros.backends.hardware.emulated.franka_robot import EmulatedFrankaDevice, EmulatedPylibfranka
    from molmoact2_ros.backends.hardware.franka import FrankaArm

    dev = EmulatedFrankaDevice()
    dev.unreachable = True
    arm = FrankaArm(EMB, robot_ip="172.16.0.9", emulate=True, library=EmulatedPylibfranka(dev))
    try:
        with pytest.raises(HardwareError, match=r"172\.16\.0\.9.*ping"):
            arm.connect()
        dev.unreachable = False
        arm.connect()
        dev.press_user_stop()
        with pytest.raises(HardwareError, match="user stop"):
            arm.read()
        with pytest.raises(HardwareError, match="recovery failed"):
            arm.recover()
        dev.release_user_stop()
        arm.recover()
        arm.read()
    finally:
        arm.disconnect()


def test_a_panda_control_box_is_named_as_such():
    """libfranka 0.21 refuses a Panda's (FER) protocol version: the error says what to use instead."""
    from molmoact2_ros.backends.hardware.emulated.franka_robot import EmulatedFrankaDevice, EmulatedPylibfranka
    from molmoact2_ros.backends.hardware.franka import FrankaArm

    dev = EmulatedFrankaDevice()
    dev.server_version = 5
    arm = FrankaArm(EMB, emulate=True, library=EmulatedPylibfranka(dev))
    try:
        with pytest.raises(HardwareError, match=r"Incompatible library version.*Franka Research 3.*Panda.*ros_topic"):
            arm.connect()
        assert not arm.connected
    finally:
        arm.disconnect()
