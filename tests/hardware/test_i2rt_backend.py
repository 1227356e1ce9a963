"""The i2rt backend (YAM bimanual, 14 joints) against emulated DM motors on python-can's virtual bus, through
i2rt unmodified: connect/read/write, enable only on the first write, the firmware command timeout, the driver's
heartbeat keeping it fed in every state, faults reaching the driver's FAULT state, gripper direction, shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from waiting import wait_for

from molmoact2_ros.backends.hardware import make_hardware
from molmoact2_ros.backends.hardware.emulated.dm_can import ERR_OVER_VOLTAGE
from molmoact2_ros.backends.hardware.i2rt import I2rtArm
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.driver_core import DriverCore
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.core.safety import SafetyStack, SafetyState

EMB = load_embodiment("yam_bimanual")
GRIPPER_CLOSED, GRIPPER_OPEN = EMB.hardware.params_for("i2rt")["gripper_limits"]
LEFT_GRIPPER, RIGHT_GRIPPER = EMB.joint_names.index("left_gripper"), EMB.joint_names.index("right_gripper")


def all_states(hw):
    return {arm: bus.states() for arm, bus in hw.emulators.items()}


@pytest.fixture
def yam():
    hw = make_hardware(EMB, "i2rt", emulate=True)
    hw.connect()
    yield hw
    hw.disconnect()


def test_connect_reads_home_and_motors_stay_off_until_the_first_write(yam):
    assert yam.needs_heartbeat and yam.supports_relax and yam.relax_on_stop and yam.max_temperature_c == 70.0
    reading = yam.read()
    np.testing.assert_allclose(reading.positions, EMB.home, atol=2e-3)
    assert reading.temperatures_c.shape == (14,) and np.all(reading.temperatures_c == 38.0)
    for _ in range(3):
        yam.read()
    assert not any(s.enabled or s.enables for states in all_states(yam).values() for s in states)
    yam.write(EMB.home)
    assert all(s.enabled and s.enables == 1 for states in all_states(yam).values() for s in states)


def test_write_reaches_the_goal_on_both_arms(yam):
    goal = EMB.home.copy()
    goal[[0, 1, 2, 3, 4, 5]] = [0.3, 0.5, 0.4, -0.2, 0.3, -0.3]
    goal[[7, 8, 9, 10, 11, 12]] = [-0.3, 0.6, 0.2, 0.2, -0.3, 0.4]
    goal[[LEFT_GRIPPER, RIGHT_GRIPPER]] = [0.25, 0.75]

    def there() -> bool:
        yam.write(goal)
        return bool(np.max(np.abs(yam.read().positions - goal)) < 0.01)

    wait_for(there, what="both arms at the goal")
    assert sum(s.timeouts for states in all_states(yam).values() for s in states) == 0


def test_gripper_one_is_open(yam):
    left = yam.emulators["left"]
    assert left.state(7).position == pytest.approx(GRIPPER_OPEN, abs=1e-6)  # home 1.0 = open
    cmd = EMB.home.copy()
    cmd[LEFT_GRIPPER] = 0.0

    def closed() -> bool:
        yam.write(cmd)
        return abs(left.state(7).position - GRIPPER_CLOSED) < 0.01

    wait_for(closed, what="left gripper motor at the closed limit")
    assert yam.read().positions[LEFT_GRIPPER] == pytest.approx(0.0, abs=0.01)
    cmd[LEFT_GRIPPER] = 1.7  # beyond the stroke: clipped, and reported as sent
    assert yam.write(cmd)[LEFT_GRIPPER] == 1.0


def test_no_write_for_longer_than_the_timeout_falls_into_damping(yam):
    yam.write(EMB.home)
    left = yam.emulators["left"]
    wait_for(lambda: all(s.timed_out for states in all_states(yam).values() for s in states),
             what="firmware timeout on both arms")
    assert all(s.timeouts == 1 and s.in_damping and not s.enabled for s in left.states())
    with pytest.raises(HardwareError, match=r"left arm \(emulated_left\) motor 0x01 .*0xd \(loss communication\)"):
        yam.read()
    # Each arm reports its lapse once (the driver counts it); the command after that clears the latched
    # loss of communication and re-enables: the left arm (whose error read() saw) now, the right arm next.
    with pytest.raises(HardwareError, match=r"right arm .*0xd \(loss communication\)"):
        yam.write(EMB.home)
    yam.write(EMB.home)
    assert all(s.enabled and s.enables == 2 for states in all_states(yam).values() for s in states)


def driver(hw, **stack_kwargs):
    stack = SafetyStack(EMB, max_temperature_c=hw.max_temperature_c, heartbeat=hw.needs_heartbeat, **stack_kwargs)
    stack.enable()
    return stack, DriverCore(stack, hw)


def run(core, seconds: float, until: Callable[[], bool] | None = None) -> list:
    """Tick the driver at the embodiment's rate on the wall clock (paced, never assuming speed)."""
    period = 1.0 / EMB.tick_rate_hz
    results, end, next_t = [], time.monotonic() + seconds, time.monotonic()
    while time.monotonic() < end:
        results.append(core.cycle(time.monotonic()))
        if until is not None and until():
            break
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    return results


def test_driver_heartbeat_keeps_the_motors_fed_in_idle_running_and_hold(yam):
    stack, core = driver(yam)
    idle = run(core, 0.8)  # connected, enabled, no chunk yet
    assert {c.tick.state for c in idle} == {SafetyState.IDLE} and all(c.sent is not None for c in idle[1:])
    q0 = yam.read().positions
    delta = np.zeros(14)
    delta[[1, 8]] = 0.3
    steps = np.linspace(0, 1, 30)[:, None] * delta + q0
    stack.submit(ActionChunk(EMB.joint_names, steps, time.monotonic(), EMB.control_rate_hz), time.monotonic())
    running = run(core, 3.0, until=lambda: stack.state is SafetyState.STOPPED)  # runs, then the watchdog stops it
    states = {c.tick.state for c in running}
    assert SafetyState.RUNNING in states and SafetyState.HOLD in states
    run(core, 0.6)  # and keeps feeding while stopped
    moved = yam.read().positions
    assert moved[1] - q0[1] > 0.05 and moved[8] - q0[8] > 0.05  # both arms followed the chunk
    assert all(s.timeouts == 0 and s.enabled for states in all_states(yam).values() for s in states)


@pytest.mark.parametrize("fault_action", ["hold", "relax"])
def test_a_motor_error_on_one_arm_faults_the_driver_and_stops_both_arms(yam, fault_action):
    stack, core = driver(yam, fault_action=fault_action)
    run(core, 0.3)
    yam.emulators["right"].inject_error(3, ERR_OVER_VOLTAGE)
    run(core, 3.0, until=lambda: stack.fault is not None)
    assert stack.state is SafetyState.FAULT and stack.fault[0] in ("read_error", "write_error")
    assert "right arm (emulated_right) motor 0x03" in stack.fault[1] and "0x8 (over voltage)" in stack.fault[1]
    before = all_states(yam)
    run(core, 0.5)
    after = all_states(yam)
    left_after = after["left"]
    if fault_action == "hold":  # the healthy arm holds still, fed
        assert all(s.enabled and not s.in_damping and s.timeouts == 0 for s in left_after)
        assert all(a.target == b.target for a, b in zip(after["left"], before["left"], strict=True))
    else:  # both arms relaxed into damping
        assert all(s.in_damping for s in left_after)
        assert all(s.in_damping for s in after["right"] if s.motor_id != 3)


def test_over_temperature_reaches_the_driver(yam):
    stack, core = driver(yam)
    run(core, 0.2)
    yam.emulators["left"].set_temperature(5, rotor_c=82.0)
    run(core, 1.0, until=lambda: stack.fault is not None)
    assert stack.state is SafetyState.FAULT and "temperature" in stack.fault[0]
    assert yam.read().temperatures_c[4] == 82.0


def test_a_silent_motor_is_named():
    hw = make_hardware(EMB, "i2rt", emulate=True)
    hw.connect()
    try:
        hw.emulators["left"].silence(6)
        with pytest.raises(HardwareError, match=r"left arm \(emulated_left\) motor 0x06 DM4310 \(left_joint6\) "
                                                r"did not answer"):
            hw.read()
    finally:
        hw.disconnect()


def test_refuses_motors_with_the_command_timeout_disabled():
    hw = I2rtArm(EMB, **EMB.hardware.params_for("i2rt"), emulate=True, emulated_timeout_s=0.0)
    with pytest.raises(HardwareError, match="command timeout disabled"):
        hw.connect()
    assert not hw.connected and hw.emulators == {}  # the emulators were stopped again


def test_clean_shutdown_leaves_the_motors_damping():
    hw = make_hardware(EMB, "i2rt", emulate=True)
    hw.disconnect()  # never connected: fine
    hw.connect()
    hw.write(EMB.home)
    buses = dict(hw.emulators)
    hw.disconnect()
    hw.disconnect()  # twice: fine
    assert all(not bus.running for bus in buses.values())
    assert all(s.in_damping and s.kp == 0.0 for bus in buses.values() for s in bus.states())


def test_relax_puts_both_arms_into_damping_and_the_next_write_re_energises(yam):
    yam.write(EMB.home)
    yam.relax()
    assert yam.arm_modes == {"left": "damp", "right": "damp"}
    assert all(s.in_damping for states in all_states(yam).values() for s in states)
    yam.read()  # reads keep the damping command fed
    yam.write(EMB.home)
    assert all(s.enabled and not s.in_damping for states in all_states(yam).values() for s in states)
