"""The emulated STS3215 bus alone, spoken to by the real Feetech SDK (scservo_sdk) over its pty.

Every check goes through ``scs.PortHandler`` (pyserial on the pty slave) and ``scs.PacketHandler``: the
bytes on the line are the real library's, so what passes here is what LeRobot's bus will get.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from molmoact2_ros.backends.hardware.emulated.sts3215_bus import (
    INST_WRITE,
    REGISTERS,
    STS3215_MODEL_NUMBER,
    ServoCalibration,
    Sts3215Bus,
    instruction_packet,
)

scs = pytest.importorskip("scservo_sdk")

GOAL, PRESENT, TORQUE = REGISTERS["Goal_Position"][0], REGISTERS["Present_Position"][0], REGISTERS["Torque_Enable"][0]


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sts_emulator() -> Iterator[tuple[Sts3215Bus, object, object]]:
    bus = Sts3215Bus({1: (ServoCalibration(300, 500, 3500), 2000.0), 2: (None, 1000.0), 3: (None, 3000.0)})
    port = bus.start()
    handler = scs.PortHandler(port)
    assert handler.openPort()
    yield bus, handler, scs.PacketHandler(0)
    handler.closePort()
    bus.stop()


def test_register_table_matches_lerobot_and_the_sdk():
    tables = pytest.importorskip("lerobot.motors.feetech.tables")
    lerobot = tables.STS_SMS_SERIES_CONTROL_TABLE
    for name, where in REGISTERS.items():
        assert lerobot[name] == where, name
    assert tables.MODEL_NUMBER_TABLE["sts3215"] == STS3215_MODEL_NUMBER
    assert tables.STS_SMS_SERIES_ENCODINGS_TABLE["Homing_Offset"] == 11
    assert (scs.INST_SYNC_READ, scs.INST_SYNC_WRITE) == (0x82, 0x83)


def test_ping_read_write(sts_emulator):
    bus, port, ph = sts_emulator
    model, comm, err = ph.ping(port, 1)
    assert (model, comm, err) == (STS3215_MODEL_NUMBER, scs.COMM_SUCCESS, 0)
    _, comm, _ = ph.ping(port, 9)  # nobody there
    assert comm == scs.COMM_RX_TIMEOUT
    value, comm, err = ph.read1ByteTxRx(port, 2, REGISTERS["ID"][0])
    assert (value, comm, err) == (2, scs.COMM_SUCCESS, 0)
    comm, err = ph.write1ByteTxRx(port, 2, REGISTERS["P_Coefficient"][0], 16)
    assert (comm, err) == (scs.COMM_SUCCESS, 0)
    assert bus.servo(2).register("P_Coefficient") == 16
    # Read-only registers ignore writes, like the firmware.
    ph.write2ByteTxRx(port, 2, REGISTERS["Model_Number"][0], 1234)
    assert ph.read2ByteTxRx(port, 2, REGISTERS["Model_Number"][0])[0] == STS3215_MODEL_NUMBER


def test_homing_offset_shifts_present_position(sts_emulator):
    bus, port, ph = sts_emulator
    assert ph.read2ByteTxRx(port, 1, PRESENT)[0] == 2000
    # Present = Actual - Homing_Offset: offset 300 -> 500 moves the reading down by 200, the horn stays.
    ph.write2ByteTxRx(port, 1, REGISTERS["Homing_Offset"][0], 500)
    assert ph.read2ByteTxRx(port, 1, PRESENT)[0] == 1800
    ph.write2ByteTxRx(port, 1, REGISTERS["Homing_Offset"][0], (1 << 11) | 100)  # -100, sign-magnitude
    assert bus.servo(1).register("Homing_Offset") == -100
    assert ph.read2ByteTxRx(port, 1, PRESENT)[0] == 2400


def test_sync_write_goals_and_sync_read_positions(sts_emulator):
    bus, port, ph = sts_emulator
    writer = scs.GroupSyncWrite(port, ph, TORQUE, 1)
    for i in (1, 2, 3):
        writer.addParam(i, [1])
    assert writer.txPacket() == scs.COMM_SUCCESS
    wait_until(lambda: all(s.torque_enabled for s in bus.servos), what="torque on by SYNC_WRITE")
    goals = {1: 2100, 2: 1100, 3: 2900}
    writer = scs.GroupSyncWrite(port, ph, GOAL, 2)
    for i, g in goals.items():
        writer.addParam(i, [scs.SCS_LOBYTE(g), scs.SCS_HIBYTE(g)])
    assert writer.txPacket() == scs.COMM_SUCCESS
    reader = scs.GroupSyncRead(port, ph, PRESENT, 2)
    for i in goals:
        reader.addParam(i)

    def at_goals() -> bool:
        assert reader.txRxPacket() == scs.COMM_SUCCESS
        return all(abs(reader.getData(i, PRESENT, 2) - g) <= 1 for i, g in goals.items())

    wait_until(at_goals, what="servos at their goals")
    assert [bus.servo(i).goal for i in goals] == list(goals.values())


def test_goal_is_kept_inside_the_position_limits(sts_emulator):
    bus, port, ph = sts_emulator
    ph.write1ByteTxRx(port, 1, TORQUE, 1)
    ph.write2ByteTxRx(port, 1, GOAL, 4000)  # servo 1's limits are [500, 3500]
    wait_until(lambda: bus.servo(1).position == 3500, what="servo 1 stopped at its limit")


def test_bad_checksum_is_ignored_without_a_reply(sts_emulator):
    bus, port, ph = sts_emulator
    bad = bytearray(instruction_packet(1, INST_WRITE, bytes([REGISTERS["P_Coefficient"][0], 99])))
    bad[-1] ^= 0xFF
    port.ser.reset_input_buffer()
    port.writePort(bytes(bad))
    # The next valid instruction is answered, and its reply is the only thing on the line.
    model, comm, _ = ph.ping(port, 1)
    assert (model, comm) == (STS3215_MODEL_NUMBER, scs.COMM_SUCCESS)
    assert bus.checksum_errors == 1 and bus.servo(1).register("P_Coefficient") == 32
    assert port.getBytesAvailable() == 0


def test_corrupted_replies_offline_servo_and_overheat(sts_emulator):
    bus, port, ph = sts_emulator
    bus.corrupt_replies(1)
    _, comm, _ = ph.read2ByteTxRx(port, 1, PRESENT)
    assert comm == scs.COMM_RX_CORRUPT
    value, comm, _ = ph.read2ByteTxRx(port, 1, PRESENT)
    assert (value, comm) == (2000, scs.COMM_SUCCESS)

    bus.servo(2).offline = True
    reader = scs.GroupSyncRead(port, ph, PRESENT, 2)
    for i in (1, 2, 3):
        reader.addParam(i)
    assert reader.txRxPacket() == scs.COMM_RX_TIMEOUT
    assert reader.data_dict[1] and not reader.data_dict[2]  # the SDK stops at the silent servo
    bus.servo(2).offline = False
    port.ser.reset_input_buffer()
    assert reader.txRxPacket() == scs.COMM_SUCCESS

    ph.write1ByteTxRx(port, 3, TORQUE, 1)
    bus.servo(3).set_temperature(75.0)  # above Max_Temperature_Limit (70)
    temp, comm, err = ph.read1ByteTxRx(port, 3, REGISTERS["Present_Temperature"][0])
    assert (temp, comm) == (75, scs.COMM_SUCCESS) and err & scs.ERRBIT_OVERHEAT
    assert ph.read1ByteTxRx(port, 3, REGISTERS["Status"][0])[0] & scs.ERRBIT_OVERHEAT
    assert not bus.servo(3).torque_enabled  # Unloading_Condition: the servo drops torque by itself


def test_reg_write_waits_for_action(sts_emulator):
    bus, port, ph = sts_emulator
    comm, _ = ph.regWriteTxRx(port, 2, REGISTERS["D_Coefficient"][0], 1, [7])
    assert comm == scs.COMM_SUCCESS and bus.servo(2).register("D_Coefficient") == 32
    ph.action(port, scs.BROADCAST_ID)
    wait_until(lambda: bus.servo(2).register("D_Coefficient") == 7, what="ACTION applied")


def test_restart_keeps_servo_state_and_stop_is_idempotent():
    bus = Sts3215Bus([1])
    first = bus.start()
    bus.servo(1).set_register("P_Coefficient", 20)
    bus.stop()
    bus.stop()
    second = bus.start()
    try:
        handler = scs.PortHandler(second)
        assert handler.openPort()
        assert scs.PacketHandler(0).read1ByteTxRx(handler, 1, REGISTERS["P_Coefficient"][0])[0] == 20
        handler.closePort()
    finally:
        bus.stop()
    assert first and second


def test_lerobot_setup_motor_gives_a_lone_servo_its_id():
    """`lerobot-setup-motors`' path: broadcast ping, torque off, write ID (answered as the old id), baud."""
    feetech = pytest.importorskip("lerobot.motors.feetech")
    motors = pytest.importorskip("lerobot.motors")
    bus = Sts3215Bus([1])
    port = bus.start()
    try:
        lerobot_bus = feetech.FeetechMotorsBus(port, {"wrist_flex": motors.Motor(4, "sts3215",
                                                                                  motors.MotorNormMode.DEGREES)})
        lerobot_bus.setup_motor("wrist_flex")
        lerobot_bus.port_handler.closePort()
    finally:
        bus.stop()
    assert [s.id for s in bus.servos] == [4] and bus.servos[0].register("Baud_Rate") == 0
