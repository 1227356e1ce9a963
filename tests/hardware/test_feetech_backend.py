"""The ``feetech`` backend through LeRobot's FeetechMotorsBus (unmodified) against the emulated STS3215 bus.

Assertions are on the emulated servos' registers (torque really off, goals really written), and the safety
checks run through the driver's own per-tick path (``DriverCore`` + ``SafetyStack``) on the wall clock,
because the emulated servos move on the wall clock.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scservo_sdk")
pytest.importorskip("lerobot.motors.feetech")

from molmoact2_ros.backends.hardware import make_hardware
from molmoact2_ros.backends.hardware.emulated.sts3215_bus import Sts3215Bus
from molmoact2_ros.backends.hardware.feetech import (
    EMULATED_CALIBRATION,
    EMULATED_TIMEOUT_SLACK_MS,
    FeetechArm,
    make_emulated_bus,
    write_calibration_json,
)
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.driver_core import DriverCore
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.core.safety import SafetyStack

SO101 = load_embodiment("so101")
IDS = {"shoulder_pan": 1, "shoulder_lift": 2, "elbow_flex": 3, "wrist_flex": 4, "wrist_roll": 5, "gripper": 6}


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def torques(arm: FeetechArm) -> list[bool]:
    return [s.torque_enabled for s in arm.emulator.servos]


@pytest.fixture
def feetech_arm() -> Iterator[FeetechArm]:
    arm = make_hardware(SO101, "feetech", emulate=True)
    assert isinstance(arm, FeetechArm)
    arm.connect()
    yield arm
    arm.disconnect()


def with_safety(emb, **safety):
    return emb.model_copy(update={"safety": emb.safety.model_copy(update=safety)})


class WallDriver:
    """SafetyStack + DriverCore on the wall clock at the embodiment's tick rate (what the driver node runs)."""

    def __init__(self, arm: FeetechArm, emb=SO101):
        self.arm, self.emb = arm, emb
        self.stack = SafetyStack(emb, max_temperature_c=arm.max_temperature_c, fault_action=emb.safety.fault_action)
        self.core = DriverCore(self.stack, arm)
        self.stack.enable()
        self.dt = 1.0 / emb.tick_rate_hz

    def run_until(self, pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.core.cycle(time.monotonic())
            if pred():
                return
            time.sleep(self.dt)
        raise AssertionError(f"timed out waiting for {what}; stack {self.stack.state} {self.stack.fault}")

    def ramp(self, start: np.ndarray, delta: np.ndarray, steps: int = 30) -> None:
        k = np.linspace(0.0, 1.0, steps)[:, None]
        now = time.monotonic()
        self.stack.submit(ActionChunk(self.emb.joint_names, start + k * delta, now, self.emb.control_rate_hz), now)


# ---- connect, configure, torque conventions --------------------------------------------------------------------

def test_connect_configures_like_lerobot_and_leaves_torque_off(feetech_arm):
    arm = feetech_arm
    assert arm.connected and arm.ready and arm.port.startswith("/dev/")
    assert arm.supports_relax and arm.relax_on_stop and arm.max_temperature_c == 65.0
    for servo in arm.emulator.servos:
        assert servo.register("P_Coefficient") == 16 and servo.register("D_Coefficient") == 32
        assert servo.register("Return_Delay_Time") == 0 and servo.register("Acceleration") == 254
        assert servo.register("Operating_Mode") == 0
    gripper = arm.emulator.servo(6)
    assert gripper.register("Max_Torque_Limit") == 500 and gripper.register("Protection_Current") == 250
    assert arm.emulator.servo(1).register("Max_Torque_Limit") == 1000
    assert not any(torques(arm)) and not arm.torque_enabled
    reading = arm.read()
    np.testing.assert_allclose(reading.positions, SO101.home, atol=math.radians(0.2))
    assert reading.temperatures_c is not None and np.all(reading.temperatures_c < 40)


def test_torque_on_with_the_first_write_goal_first_and_off_on_relax(feetech_arm):
    arm = feetech_arm
    target = SO101.home + np.array([0.1, -0.1, 0.1, 0.1, 0.1, 0.2])
    sent = arm.write(target)
    np.testing.assert_array_equal(sent, target)
    assert all(torques(arm)) and arm.torque_enabled
    for servo in arm.emulator.servos:
        history = list(servo.history)
        torque_on = history.index(("Torque_Enable", 1))
        assert ("Torque_Enable", 1) not in history[:torque_on]  # connect never turned it on
        assert any(name == "Goal_Position" for name, _ in history[:torque_on])  # goal set before torque on
    wait_until(lambda: np.max(np.abs(arm.read().positions - target)) < 0.01, what="arm at the target")
    arm.relax()
    assert not any(torques(arm)) and not arm.torque_enabled
    here = arm.read().positions
    arm.write(here)  # torque back on with the next write
    assert all(torques(arm))


def test_disconnect_turns_torque_off_stops_the_emulator_and_is_idempotent():
    arm = make_hardware(SO101, "feetech", emulate=True)
    arm.disconnect()  # never connected: fine
    arm.connect()
    arm.write(SO101.home)
    assert all(torques(arm))
    arm.disconnect()
    assert not any(torques(arm)) and not arm.emulator.running and not arm.connected
    arm.disconnect()
    with pytest.raises(HardwareError, match="not connected"):
        arm.read()


def test_torque_off_on_stop_false_keeps_holding_after_disconnect():
    arm = FeetechArm(SO101, emulate=True, torque_off_on_stop=False)
    assert not arm.relax_on_stop
    arm.connect()
    arm.write(SO101.home)
    arm.disconnect()
    assert all(torques(arm))
    # Reconnecting to an arm that holds does not drop it: the servos are configured already.
    arm.connect()
    assert all(torques(arm))
    arm.relax()
    arm.disconnect()
    assert not any(torques(arm))


# ---- units: raw servo steps -> LeRobot degrees -> robot radians -> model space ----------------------------------

def test_units_and_signs_pinned_from_raw_steps_to_model_space(feetech_arm):
    arm = feetech_arm
    emu = arm.emulator
    # shoulder_lift (id 2): LeRobot degrees = (raw - mid) * 360 / 4095, mid = middle of the calibrated range.
    _, lo, hi = EMULATED_CALIBRATION["shoulder_lift"]
    mid = (lo + hi) / 2
    raw = round(mid + 1024)  # a quarter turn up from the middle of the range
    emu.servo(2).set_position(raw)
    lerobot_deg = (raw - mid) * 360 / 4095
    q = arm.read().positions
    assert q[1] == pytest.approx(math.radians(lerobot_deg), abs=1e-9)
    model = SO101.robot_to_model(q)
    # MolmoAct2's SO tag: model = sign * LeRobot degrees + offset, sign -1 and offset 90 for shoulder_lift.
    assert model[1] == pytest.approx(-lerobot_deg + 90.0, abs=1e-4)
    assert model[0] == pytest.approx(arm.read().positions[0] * 180 / math.pi, abs=1e-4)
    # The gripper: the calibrated range is 0..100 in LeRobot, 0..1 here, 0..100 in the model.
    _, g_lo, g_hi = EMULATED_CALIBRATION["gripper"]
    emu.servo(6).set_position(g_lo + 0.25 * (g_hi - g_lo))
    q = arm.read().positions
    assert q[5] == pytest.approx(0.25, abs=1e-3) and SO101.robot_to_model(q)[5] == pytest.approx(25.0, abs=0.1)

    # And back: a model-space action -> robot radians -> the goal register, in the right direction.
    action = SO101.robot_to_model(q)
    action[1] -= 10.0  # shoulder_lift 10 model degrees down is +10 LeRobot degrees (sign -1)
    action[2] += 10.0  # elbow_flex +10 LeRobot degrees
    before = (emu.servo(2).position, emu.servo(3).position)
    arm.write(SO101.model_to_robot(action))
    goal2 = int(math.degrees(SO101.model_to_robot(action)[1]) * 4095 / 360 + mid)  # LeRobot's own rounding
    assert emu.servo(2).goal == goal2 and goal2 > before[0]
    assert emu.servo(3).goal == pytest.approx(before[1] + 10 * 4095 / 360, abs=2)


def test_a_command_beyond_the_calibrated_range_is_reported_as_sent_at_the_limit(feetech_arm):
    arm = feetech_arm
    target = SO101.home.copy()
    target[3] = math.radians(150.0)  # wrist_flex: far past its calibrated range (about +-99 deg)
    target[5] = 1.3  # gripper beyond fully open
    sent = arm.write(target)
    _, lo, hi = EMULATED_CALIBRATION["wrist_flex"]
    assert sent[3] == pytest.approx(math.radians((hi - lo) / 2 * 360 / 4095))
    assert sent[5] == 1.0 and arm.emulator.servo(6).goal == EMULATED_CALIBRATION["gripper"][2]
    np.testing.assert_array_equal(sent[:3], target[:3])


# ---- calibration errors ----------------------------------------------------------------------------------------

def test_missing_calibration_file_names_it_and_the_calibrate_command(tmp_path):
    missing = tmp_path / "nope.json"
    arm = FeetechArm(SO101, emulate=True, calibration_file=str(missing), robot_id="my_follower")
    with pytest.raises(HardwareError) as info:
        arm.connect()
    text = str(info.value)
    assert str(missing) in text
    assert f"lerobot-calibrate --robot.type=so101_follower --robot.port={arm.port} --robot.id=my_follower" in text
    assert not arm.connected and not arm.emulator.running


def test_default_calibration_location_is_lerobots(tmp_path, monkeypatch):
    constants = pytest.importorskip("lerobot.utils.constants")
    monkeypatch.setattr(constants, "HF_LEROBOT_CALIBRATION", tmp_path)
    bus = make_emulated_bus(SO101, IDS)
    port = bus.start()
    try:
        arm = FeetechArm(SO101, port=port, robot_id="lab_arm")  # the real, non-emulated path on a pty
        with pytest.raises(HardwareError) as info:
            arm.connect()
        expected = tmp_path / "robots" / "so_follower" / "lab_arm.json"
        assert str(expected) in str(info.value) and "--robot.id=lab_arm" in str(info.value)
        expected.parent.mkdir(parents=True)
        write_calibration_json(expected, IDS)
        arm.connect()
        assert arm.read().positions.shape == (6,)
        arm.disconnect()
        assert not any(s.torque_enabled for s in bus.servos)
    finally:
        bus.stop()


def test_calibration_file_for_another_arm_is_refused(tmp_path):
    arm = FeetechArm(SO101, emulate=True, calibration_file=str(tmp_path / "cal.json"))
    good = {n: {"id": i, "drive_mode": 0, "homing_offset": c[0], "range_min": c[1], "range_max": c[2]}
            for (n, i), c in zip(IDS.items(), EMULATED_CALIBRATION.values(), strict=True)}
    cases = {
        "missing": {k: v for k, v in good.items() if k != "gripper"},
        "id": {**good, "elbow_flex": {**good["elbow_flex"], "id": 7}},
        "json": None,
    }
    for case, data in cases.items():
        (tmp_path / "cal.json").write_text("{not json" if data is None else json.dumps(data))
        with pytest.raises(HardwareError, match=r"cal\.json.*lerobot-calibrate --robot\.type=so101_follower"):
            arm.connect()
        assert not arm.connected, case


def test_calibration_in_the_servos_differing_from_the_file_is_refused():
    arm = FeetechArm(SO101, emulate=True)
    arm.emulator.servo(3).set_register("Homing_Offset", EMULATED_CALIBRATION["elbow_flex"][0] + 40)
    with pytest.raises(HardwareError) as info:
        arm.connect()
    text = str(info.value)
    assert "elbow_flex homing_offset" in text and "differs from" in text and "lerobot-calibrate" in text
    assert not any(torques(arm))


# ---- bus faults -----------------------------------------------------------------------------------------------

def test_a_servo_that_stops_answering_is_named(feetech_arm):
    arm = feetech_arm
    arm.read()
    arm.emulator.servo(3).offline = True
    start = time.monotonic()
    with pytest.raises(HardwareError) as info:
        arm.read()
    text = str(info.value)
    assert "'elbow_flex' (id 3) did not answer" in text and arm.port in text
    # Three tries of ~50 ms on a real bus; the emulated bus adds 0.25 s per try for a busy host's scheduling.
    # Bounded either way, not LeRobot's retry loop.
    assert time.monotonic() - start < 3 * (0.05 + EMULATED_TIMEOUT_SLACK_MS / 1e3) + 1.0
    arm.emulator.servo(3).offline = False
    arm.read()


def test_checksum_error_burst_recovered_if_short_an_error_if_persistent(feetech_arm):
    arm = feetech_arm
    arm.emulator.corrupt_replies(2)  # read_retries 2: three tries
    q = arm.read().positions
    assert arm.emulator.corrupted_replies == 2
    np.testing.assert_allclose(q, SO101.home, atol=0.01)
    arm.emulator.corrupt_replies(10_000)
    with pytest.raises(HardwareError, match="garbled reply"):
        arm.read()
    arm.emulator.corrupt_replies(0)
    np.testing.assert_allclose(arm.read().positions, SO101.home, atol=0.01)


def test_status_fault_bits_raise_naming_motor_and_fault_until_clear():
    arm = FeetechArm(SO101, emulate=True, status_every_n_ticks=3)
    arm.connect()
    try:
        arm.read()
        arm.emulator.servo(4).voltage_fault = True
        with pytest.raises(HardwareError, match=r"wrist_flex \(id 4\): input voltage"):
            for _ in range(3):  # the next status poll (every 3 ticks) sees it
                arm.read()
        with pytest.raises(HardwareError, match="wrist_flex"):  # every tick, so the driver's policy latches
            arm.read()
        with pytest.raises(HardwareError, match="wrist_flex"):  # a reset is refused while the fault is on
            arm.recover()
        arm.emulator.servo(4).voltage_fault = False
        arm.recover()
        arm.read()
    finally:
        arm.disconnect()


def test_over_temperature_latches_the_safety_stacks_fault(feetech_arm):
    arm = feetech_arm
    driver = WallDriver(arm)
    driver.run_until(lambda: driver.core.hardware_ready, what="first reading")
    arm.emulator.servo(2).set_temperature(75.0)  # past the servo's own 70 C: overheat bit, torque drops
    driver.run_until(lambda: driver.stack.fault is not None, what="a latched fault")
    assert driver.stack.fault[0] == "over_temperature" and "shoulder_lift" in driver.stack.fault[1]
    assert arm.status["shoulder_lift"]["temperature_c"] == 75.0


def test_a_blocked_joint_latches_tracking_error_and_relax_really_turns_torque_off(feetech_arm):
    arm = feetech_arm
    # One chunk, no policy behind it: a watchdog long enough for the whole ramp.
    driver = WallDriver(arm, with_safety(SO101, fault_action="relax", watchdog_hold_timeout_s=5.0,
                                         watchdog_stop_timeout_s=6.0))
    driver.run_until(lambda: driver.core.hardware_ready, what="first reading")
    arm.emulator.servo(3).blocked = True  # elbow_flex cannot move
    start = arm.read().positions
    delta = np.zeros(6)
    delta[2] = 0.55  # within the startup guard (0.6 rad), beyond max_tracking_error (0.35 rad)
    driver.ramp(start, delta)
    driver.run_until(lambda: any(torques(arm)), what="torque on with the first command")
    driver.run_until(lambda: driver.stack.fault is not None, what="a latched fault")
    assert driver.stack.fault[0] == "tracking_error" and "elbow_flex" in driver.stack.fault[1]
    driver.run_until(lambda: driver.core.relaxes == 1, what="the driver relaxing the arm")
    assert not any(torques(arm))
    assert arm.emulator.servo(1).position == pytest.approx(arm.emulator.servo(1).goal, abs=3)


def test_tick_cost_on_the_emulated_bus(feetech_arm):
    arm = feetech_arm
    q = arm.read().positions
    n = 60
    start = time.perf_counter()
    for _ in range(n):
        arm.write(q)
        arm.read()
    per_tick_ms = (time.perf_counter() - start) / n * 1e3
    print(f"feetech emulated tick (sync write 6 goals + sync read 6 positions): {per_tick_ms:.2f} ms")
    assert per_tick_ms < 33.0  # a 30 Hz tick; typically ~1 ms
    assert isinstance(arm.emulator, Sts3215Bus) and Path(arm.port).exists()
