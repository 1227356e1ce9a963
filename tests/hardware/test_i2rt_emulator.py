"""The emulated DM motors alone, driven by i2rt's own DMSingleMotorCanInterface and register tools over
python-can's virtual bus: enable/disable, MIT frames, feedback, registers, the command timeout, faults."""

from __future__ import annotations

import itertools
import time

import pytest
from i2rt.motor_config_tool.dm_motor_registers import read_register, write_register
from i2rt.motor_config_tool.utils import RawCanInterface
from i2rt.motor_drivers.dm_driver import ControlMode, DMSingleMotorCanInterface
from i2rt.motor_drivers.utils import ReceiveMode
from waiting import wait_for

from molmoact2_ros.backends.hardware.emulated.dm_can import (
    ERR_LOST_COMMUNICATION,
    ERR_OVER_VOLTAGE,
    EmulatedDMBus,
)

_CHANNELS = itertools.count()
DISABLE = [0xFF] * 7 + [0xFD]


@pytest.fixture
def chain():
    channel = f"emu_dm_test_{next(_CHANNELS)}"
    bus = EmulatedDMBus(channel, [(1, "DM4340", 0.2), (7, "DM4310", -1.0)], timeout_s=0.4).start()
    iface = DMSingleMotorCanInterface(channel=channel, bustype="virtual", control_mode=ControlMode.MIT,
                                      receive_mode=ReceiveMode.p16)
    yield bus, iface
    iface.close()
    bus.stop()
    assert bus.thread_error is None


def test_registers_answer_i2rt_register_tools(chain):
    bus, _ = chain
    raw = RawCanInterface(channel=bus.channel, bustype="virtual")
    try:
        assert read_register(raw, 1, "TIMEOUT") == 8000  # 400 ms in 50 us units
        assert read_register(raw, 1, "CTRL_MODE") == 1
        assert read_register(raw, 1, "Gr") == pytest.approx(40.0)
        assert read_register(raw, 7, "Gr") == pytest.approx(10.0)
        assert read_register(raw, 7, "TMAX") == pytest.approx(10.0)
        write_register(raw, 7, "TIMEOUT", 0)
        assert read_register(raw, 7, "TIMEOUT") == 0
    finally:
        raw.close()


def test_disable_frame_answers_feedback_and_enable_then_mit_tracks(chain):
    bus, iface = chain
    msg = iface._send_message_get_response(1, 1, DISABLE)
    fb = iface.parse_recv_message(msg, "DM4340", ignore_error=True)
    assert fb.error_code == "0x0" and fb.position == pytest.approx(0.2, abs=1e-3) and fb.temperature_rotor == 38
    assert not bus.state(1).enabled
    # An MIT frame to a disabled motor is answered (i2rt raises on the "disabled" state) and not applied.
    with pytest.raises(RuntimeError, match="disabled"):
        iface.set_control(1, "DM4340", 1.0, 0.0, 80.0, 5.0, 0.0)
    assert bus.state(1).commands == 0
    assert iface.motor_on(1, "DM4340").error_code == "0x1"
    assert bus.state(1).enabled and bus.state(1).enables == 1

    def tracked() -> bool:
        fb = iface.set_control(1, "DM4340", 1.0, 0.0, 80.0, 5.0, 0.0)
        return abs(fb.position - 1.0) < 0.01

    wait_for(tracked, what="motor 1 at 1.0 rad")
    state = bus.state(1)
    assert state.kp == pytest.approx(80.0, abs=0.2) and state.kd == pytest.approx(5.0, abs=0.01)
    assert bus.state(7).position == pytest.approx(-1.0, abs=1e-6)  # the other motor never moved


def test_command_timeout_falls_into_damping_and_latches_lost_communication(chain):
    bus, iface = chain
    iface.motor_on(1, "DM4340")
    iface.set_control(1, "DM4340", 0.2, 0.0, 80.0, 5.0, 0.0)
    wait_for(lambda: bus.state(1).timed_out, what="the firmware timeout")
    state = bus.state(1)
    assert state.timeouts == 1 and state.in_damping and not state.enabled and state.error == ERR_LOST_COMMUNICATION
    with pytest.raises(RuntimeError, match="loss communication"):  # feedback keeps coming, with the code
        iface.set_control(1, "DM4340", 0.2, 0.0, 80.0, 5.0, 0.0)
    iface.clean_error(1)
    wait_for(lambda: bus.state(1).error == 0, what="error cleared")
    assert iface.motor_on(1, "DM4340").error_code == "0x1" and bus.state(1).enabled


def test_motor_fed_faster_than_its_timeout_never_times_out(chain):
    bus, iface = chain
    iface.motor_on(1, "DM4340")
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        iface.set_control(1, "DM4340", 0.2, 0.0, 80.0, 5.0, 0.0)
        time.sleep(0.03)
    assert bus.state(1).timeouts == 0 and bus.state(1).enabled


def test_injected_error_and_silent_motor(chain):
    bus, iface = chain
    bus.inject_error(7, ERR_OVER_VOLTAGE)
    fb = iface.parse_recv_message(iface._send_message_get_response(7, 7, DISABLE), "DM4310", ignore_error=True)
    assert fb.error_code == "0x8" and fb.error_message == "over voltage"
    iface.clean_error(7)  # sticky: the condition persists
    fb = iface.parse_recv_message(iface._send_message_get_response(7, 7, DISABLE), "DM4310", ignore_error=True)
    assert fb.error_code == "0x8"
    bus.silence(1)
    with pytest.raises(AssertionError, match="fail to communicate"):
        iface._send_message_get_response(1, 1, DISABLE)
