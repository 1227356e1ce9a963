"""An emulated Feetech STS3215 servo bus on a pseudo-terminal, for the ``feetech`` backend's emulated mode and tests.

``Sts3215Bus`` opens a pty (``os.openpty``) and serves its master side from a thread; the slave's path
(``/dev/pts/N``) is the "port" that the real hardware library opens with pyserial, exactly like the
``/dev/ttyACM0`` of an SO-101's controller board. LeRobot's ``FeetechMotorsBus`` and ``scservo_sdk`` run
unmodified against it.

Protocol (Feetech SCS/STS "protocol 0", half duplex, little-endian words): instruction packets
``FF FF id len instr params... chk`` with ``chk = ~(id + len + instr + params) & 0xFF``; status packets
``FF FF id len error params... chk``. Instructions served: PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ
(0x82) and SYNC_WRITE (0x83); broadcast id 0xFE. Like a real servo, a packet with a bad checksum is dropped
without a reply, and ``Response_Status_Level`` 0 silences replies to everything but PING and READ. The error
byte of a status packet carries the servo's fault bits (voltage 1, sensor/angle 2, overheat 4, current 8,
overload 32), which it also reports in its ``Status`` register.

Register table: the STS3215's (addresses and sizes as in Feetech's STS manual, the same as
``lerobot.motors.feetech.tables``; a test checks they agree). A servo starts as LeRobot leaves it after
``lerobot-setup-motors`` (id 1..6, 1 Mbaud) and ``lerobot-calibrate`` (homing offset and range limits
written), with the factory values for the rest (P coefficient 32, return delay 250 us, ...), so a backend
must configure it on connect as LeRobot's SO follower does. ``Homing_Offset`` is sign-magnitude with the
sign in bit 11, and ``Present_Position = Actual_Position - Homing_Offset`` (mod 4096) as LeRobot assumes.

Physics: with torque on, a servo drives ``Present_Position`` toward ``Goal_Position`` (clamped to its
position limits, like the real firmware) as a P controller with a speed limit (``Goal_Velocity`` in steps/s,
0 = the STS3215's no-load speed), integrated exactly on the wall clock; with torque off it stays where it is
(an arm resting on its stops). ``Present_Speed``, ``Present_Load``, ``Moving`` and ``Present_Current`` follow.

Faults, injectable at any time from tests: ``servo(i).offline`` (stops answering and acting, an unplugged
cable), ``corrupt_replies(n)`` (the next n status packets leave with a bad checksum),
``servo(i).set_temperature(c)`` (above ``Max_Temperature_Limit`` the overheat bit is set and, as the
factory ``Unloading_Condition`` says, torque drops), ``servo(i).blocked`` (the horn is blocked: no motion,
full load). Tests read the servo state (``torque_enabled``, ``position``, any register) to check what
really happened on the bus.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from molmoact2_ros.backends.hardware.emulated import run_like_hardware

# ---- protocol constants (Feetech SCS/STS protocol 0) -----------------------------------------------------------
BROADCAST_ID = 0xFE
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83

ERR_VOLTAGE = 0x01
ERR_ANGLE = 0x02
ERR_OVERHEAT = 0x04
ERR_OVERCURRENT = 0x08
ERR_OVERLOAD = 0x20

STS3215_MODEL_NUMBER = 777
RESOLUTION = 4096
MAX_STEP = RESOLUTION - 1
# No-load speed of the 12 V STS3215: about 0.16 s/60 deg, i.e. ~1.5 turns/s = ~6000 steps/s at 12 V; we use a
# loaded-arm figure (~260 deg/s), still faster than any joint velocity limit the SO embodiments allow.
DEFAULT_MAX_SPEED_STEPS_S = 3000.0
# The position loop's bandwidth: error decays as exp(-GAIN * t) once below the speed limit (about 30 ms lag).
POSITION_LOOP_GAIN_PER_S = 30.0
# A real servo drops a half-received packet after a pause on the line; so do we.
PARTIAL_PACKET_TIMEOUT_S = 0.05
AMBIENT_TEMPERATURE_C = 32

# name: (address, size) -- the STS3215 control table (Feetech STS series manual).
REGISTERS: dict[str, tuple[int, int]] = {
    "Firmware_Major_Version": (0, 1),
    "Firmware_Minor_Version": (1, 1),
    "Model_Number": (3, 2),
    "ID": (5, 1),
    "Baud_Rate": (6, 1),
    "Return_Delay_Time": (7, 1),
    "Response_Status_Level": (8, 1),
    "Min_Position_Limit": (9, 2),
    "Max_Position_Limit": (11, 2),
    "Max_Temperature_Limit": (13, 1),
    "Max_Voltage_Limit": (14, 1),
    "Min_Voltage_Limit": (15, 1),
    "Max_Torque_Limit": (16, 2),
    "Phase": (18, 1),
    "Unloading_Condition": (19, 1),
    "LED_Alarm_Condition": (20, 1),
    "P_Coefficient": (21, 1),
    "D_Coefficient": (22, 1),
    "I_Coefficient": (23, 1),
    "Minimum_Startup_Force": (24, 2),
    "CW_Dead_Zone": (26, 1),
    "CCW_Dead_Zone": (27, 1),
    "Protection_Current": (28, 2),
    "Angular_Resolution": (30, 1),
    "Homing_Offset": (31, 2),
    "Operating_Mode": (33, 1),
    "Protective_Torque": (34, 1),
    "Protection_Time": (35, 1),
    "Overload_Torque": (36, 1),
    "Velocity_closed_loop_P_proportional_coefficient": (37, 1),
    "Over_Current_Protection_Time": (38, 1),
    "Velocity_closed_loop_I_integral_coefficient": (39, 1),
    "Torque_Enable": (40, 1),
    "Acceleration": (41, 1),
    "Goal_Position": (42, 2),
    "Goal_Time": (44, 2),
    "Goal_Velocity": (46, 2),
    "Torque_Limit": (48, 2),
    "Lock": (55, 1),
    "Present_Position": (56, 2),
    "Present_Velocity": (58, 2),
    "Present_Load": (60, 2),
    "Present_Voltage": (62, 1),
    "Present_Temperature": (63, 1),
    "Status": (65, 1),
    "Moving": (66, 1),
    "Present_Current": (69, 2),
    "Maximum_Acceleration": (85, 1),
}
MEMORY_SIZE = 128
_NAMES_BY_ADDRESS: dict[tuple[int, int], str] = {v: k for k, v in REGISTERS.items()}
# Addresses a WRITE cannot change (firmware, model, measurements).
_READ_ONLY = set(range(0, 5)) | set(range(56, 72))

# Factory values of an STS3215 (12 V, firmware 3.10), before LeRobot's per-connect configuration.
FACTORY_VALUES: dict[str, int] = {
    "Firmware_Major_Version": 3,
    "Firmware_Minor_Version": 10,
    "Model_Number": STS3215_MODEL_NUMBER,
    "Baud_Rate": 0,  # 1 Mbaud (lerobot-setup-motors sets it)
    "Return_Delay_Time": 250,  # 500 us; LeRobot's configure_motors writes 0
    "Response_Status_Level": 1,
    "Min_Position_Limit": 0,
    "Max_Position_Limit": MAX_STEP,
    "Max_Temperature_Limit": 70,
    "Max_Voltage_Limit": 140,
    "Min_Voltage_Limit": 40,
    "Max_Torque_Limit": 1000,
    "Phase": 12,
    "Unloading_Condition": 44,  # overheat | overcurrent | overload drop torque
    "LED_Alarm_Condition": 47,
    "P_Coefficient": 32,
    "D_Coefficient": 32,
    "I_Coefficient": 0,
    "Minimum_Startup_Force": 16,
    "CW_Dead_Zone": 1,
    "CCW_Dead_Zone": 1,
    "Protection_Current": 500,
    "Angular_Resolution": 1,
    "Homing_Offset": 0,
    "Operating_Mode": 0,
    "Protective_Torque": 20,
    "Protection_Time": 200,
    "Overload_Torque": 80,
    "Velocity_closed_loop_P_proportional_coefficient": 10,
    "Over_Current_Protection_Time": 200,
    "Velocity_closed_loop_I_integral_coefficient": 200,
    "Torque_Enable": 0,
    "Acceleration": 0,
    "Torque_Limit": 1000,
    "Lock": 0,
    "Present_Voltage": 121,  # 12.1 V supply
    "Present_Temperature": AMBIENT_TEMPERATURE_C,
    "Maximum_Acceleration": 0,
}

# Sign-magnitude registers: name -> sign bit (as LeRobot's encoding table).
SIGN_BITS: dict[str, int] = {"Homing_Offset": 11, "Goal_Position": 15, "Goal_Velocity": 15,
                             "Present_Position": 15, "Present_Velocity": 15, "Present_Load": 10}


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Feetech's sign-magnitude encoding: magnitude in the low bits, sign in ``sign_bit``."""
    magnitude = abs(int(value))
    if magnitude >= (1 << sign_bit):
        raise ValueError(f"{value} does not fit sign-magnitude with the sign in bit {sign_bit}")
    return magnitude | ((1 << sign_bit) if value < 0 else 0)


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def checksum(body: Iterable[int]) -> int:
    return ~sum(body) & 0xFF


def status_packet(servo_id: int, error: int, params: bytes = b"") -> bytes:
    body = bytes([servo_id, len(params) + 2, error]) + params
    return b"\xff\xff" + body + bytes([checksum(body)])


def instruction_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """Build an instruction packet (tests use it to speak to the bus directly)."""
    body = bytes([servo_id, len(params) + 2, instruction]) + params
    return b"\xff\xff" + body + bytes([checksum(body)])


@dataclass(frozen=True)
class ServoCalibration:
    """What ``lerobot-calibrate`` writes into one servo (and into its JSON file)."""

    homing_offset: int
    range_min: int
    range_max: int


class EmulatedServo:
    """One STS3215: its memory, its motion and its injectable faults. Thread-safe through the bus lock."""

    def __init__(self, bus: Sts3215Bus, servo_id: int, calibration: ServoCalibration | None = None,
                 position: float = 2047.0):
        self._bus = bus
        self.mem = bytearray(MEMORY_SIZE)
        for name, value in FACTORY_VALUES.items():
            self._store(name, value)
        self._store("ID", servo_id)
        if calibration is not None:
            self._store("Homing_Offset", calibration.homing_offset)
            self._store("Min_Position_Limit", calibration.range_min)
            self._store("Max_Position_Limit", calibration.range_max)
        self._pos = float(position) % RESOLUTION  # Present_Position frame (after the homing offset)
        self._vel = 0.0
        self._t = time.monotonic()
        self._registered: tuple[int, bytes] | None = None  # REG_WRITE waiting for ACTION
        self._store("Goal_Position", round(self._pos) % RESOLUTION)
        self.temperature_c = float(AMBIENT_TEMPERATURE_C)
        # ---- injectable faults (plain attributes; flip them at any time) ----
        self.offline = False  # does not answer nor act on anything (unplugged, dead)
        self.blocked = False  # the horn cannot move (a blocked joint): full load, no motion
        self.voltage_fault = False  # supply out of range: voltage bit in Status
        self.received = 0  # instruction packets addressed to this servo (incl. broadcast / sync)
        # Every write that reached this servo over the bus, oldest first: (register name or address, value).
        self.history: deque[tuple[str, int]] = deque(maxlen=2000)

    # ---- memory ---------------------------------------------------------------------------------------
    def _store(self, name: str, value: int) -> None:
        addr, size = REGISTERS[name]
        if name in SIGN_BITS:
            value = encode_sign_magnitude(value, SIGN_BITS[name])
        self.mem[addr:addr + size] = int(value).to_bytes(size, "little")

    def _load(self, name: str) -> int:
        addr, size = REGISTERS[name]
        raw = int.from_bytes(self.mem[addr:addr + size], "little")
        return decode_sign_magnitude(raw, SIGN_BITS[name]) if name in SIGN_BITS else raw

    @property
    def id(self) -> int:
        return self.mem[REGISTERS["ID"][0]]

    def register(self, name: str) -> int:
        """A register's value (decoded if sign-magnitude), measurements brought up to now."""
        with self._bus.lock:
            self._update(time.monotonic())
            return self._load(name)

    def set_register(self, name: str, value: int) -> None:
        """Change a register as if written on the bus (tests: e.g. a calibration that differs from the file)."""
        with self._bus.lock:
            self._update(time.monotonic())
            addr, size = REGISTERS[name]
            if name in SIGN_BITS:
                value = encode_sign_magnitude(value, SIGN_BITS[name])
            self._write_memory(addr, int(value).to_bytes(size, "little"), force=True)

    @property
    def torque_enabled(self) -> bool:
        return self.register("Torque_Enable") == 1

    @property
    def position(self) -> int:
        """Present_Position, raw steps."""
        return self.register("Present_Position")

    @property
    def goal(self) -> int:
        return self.register("Goal_Position")

    def set_position(self, steps: float) -> None:
        """Move the horn by hand (Present_Position frame, raw steps)."""
        with self._bus.lock:
            self._update(time.monotonic())
            self._pos = float(steps) % RESOLUTION
            self._vel = 0.0
            self._refresh()

    def set_temperature(self, celsius: float) -> None:
        with self._bus.lock:
            self.temperature_c = float(celsius)
            self._update(time.monotonic())

    @property
    def status_bits(self) -> int:
        return self.register("Status")

    # ---- bus side -------------------------------------------------------------------------------------
    def _read_memory(self, addr: int, length: int) -> bytes:
        self._update(time.monotonic())
        return bytes(self.mem[addr:addr + length]).ljust(length, b"\x00")

    def _write_memory(self, addr: int, data: bytes, *, force: bool = False) -> None:
        if not force:
            name = _NAMES_BY_ADDRESS.get((addr, len(data)), str(addr))
            raw = int.from_bytes(data, "little")
            self.history.append((name, decode_sign_magnitude(raw, SIGN_BITS[name]) if name in SIGN_BITS else raw))
        old_offset = self._load("Homing_Offset")
        for i, byte in enumerate(data):
            a = addr + i
            if a >= MEMORY_SIZE or (a in _READ_ONLY and not force):
                continue  # the firmware ignores writes to read-only bytes
            self.mem[a] = byte
        new_offset = self._load("Homing_Offset")
        if new_offset != old_offset:
            # The encoder has not moved: Present_Position shifts by the change of offset.
            self._pos = (self._pos + old_offset - new_offset) % RESOLUTION
        if self._load("Torque_Enable") not in (0, 1):
            self._store("Torque_Enable", 1)
        self._refresh()

    # ---- physics -----------------------------------------------------------------------------------------
    def _goal_clamped(self) -> float:
        goal = float(self._load("Goal_Position"))
        lo, hi = self._load("Min_Position_Limit"), self._load("Max_Position_Limit")
        if lo < hi:  # the firmware keeps the goal inside its position limits
            goal = min(max(goal, lo), hi)
        return goal

    def _max_speed(self) -> float:
        speed = abs(self._load("Goal_Velocity"))
        return float(speed) if speed > 0 else DEFAULT_MAX_SPEED_STEPS_S

    def _update(self, now: float) -> None:
        dt = now - self._t
        self._t = now
        torque = self._load("Torque_Enable") == 1
        if dt > 0 and torque and not self.blocked:
            err = self._goal_clamped() - self._pos
            vmax, k = self._max_speed(), POSITION_LOOP_GAIN_PER_S
            before = self._pos
            # Exact solution of dx/dt = clip(k * err, +-vmax): linear while saturated, then exponential.
            remaining = dt
            sat = vmax / k
            if abs(err) > sat:
                t_sat = (abs(err) - sat) / vmax
                step_t = min(t_sat, remaining)
                self._pos += math.copysign(vmax * step_t, err)
                remaining -= step_t
                err = self._goal_clamped() - self._pos
            if remaining > 0:
                self._pos += err * (1.0 - math.exp(-k * remaining))
            self._vel = (self._pos - before) / dt
        elif dt > 0:
            self._vel = 0.0
        self._refresh()

    def _refresh(self) -> None:
        """Measurement registers and fault bits from the state."""
        status = 0
        if self.voltage_fault:
            status |= ERR_VOLTAGE
        if self.temperature_c >= self._load("Max_Temperature_Limit"):
            status |= ERR_OVERHEAT
        torque = self._load("Torque_Enable") == 1
        if status & self._load("Unloading_Condition") and torque:
            self._store("Torque_Enable", 0)  # the firmware unloads on the faults it is told to
            torque = False
        err = self._goal_clamped() - self._pos if torque else 0.0
        if torque and self.blocked:
            load = 1000 if abs(err) > 5 else 0
        else:
            load = int(min(1000.0, abs(err) * 4.0)) if torque else 0
        self._store("Present_Position", round(self._pos) % RESOLUTION)
        self._store("Present_Velocity", int(max(-32767, min(32767, round(self._vel)))))
        self._store("Present_Load", int(math.copysign(min(load, 1023), err)) if load else 0)
        self._store("Present_Temperature", int(max(0, min(255, round(self.temperature_c)))))
        self._store("Status", status)
        self._store("Moving", 1 if torque and abs(err) > 2 else 0)
        self._store("Present_Current", load // 2)  # 6.5 mA units; a loaded STS3215 draws ~3 A

    def error_byte(self) -> int:
        return self.mem[REGISTERS["Status"][0]] & 0x7F


class Sts3215Bus:
    """A bus of emulated STS3215 servos served on a pty. ``start()`` / ``stop()``; ``port`` is the path."""

    def __init__(self, servos: Mapping[int, tuple[ServoCalibration | None, float]] | Iterable[int] = range(1, 7)):
        """``servos``: ids, or id -> (calibration written in the servo, initial Present_Position in steps)."""
        self.lock = threading.RLock()
        self._servos: dict[int, EmulatedServo] = {}
        items = servos.items() if isinstance(servos, Mapping) else ((i, (None, 2047.0)) for i in servos)
        for servo_id, (cal, pos) in items:
            self._servos[int(servo_id)] = EmulatedServo(self, int(servo_id), cal, pos)
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port: str | None = None
        self._corrupt = 0
        self.packets = 0  # valid instruction packets received
        self.checksum_errors = 0  # instruction packets dropped for a bad checksum
        self.corrupted_replies = 0

    # ---- servos and faults -------------------------------------------------------------------------------
    def servo(self, servo_id: int) -> EmulatedServo:
        return self._servos[servo_id]

    @property
    def servos(self) -> list[EmulatedServo]:
        return list(self._servos.values())

    def corrupt_replies(self, n: int) -> None:
        """The next ``n`` status packets leave with a wrong checksum (line noise)."""
        with self.lock:
            self._corrupt = int(n)

    @property
    def pending_corruptions(self) -> int:
        with self.lock:
            return self._corrupt

    # ---- lifecycle --------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        """Open a fresh pty and serve it; returns the port path for pyserial."""
        if self.running:
            assert self.port is not None
            return self.port
        self._master, self._slave = os.openpty()
        # Raw from the start: no echo, no line discipline, before any client configures it.
        tty.setraw(self._slave)
        # The slave stays open here too, so the master never sees EIO while the client reconnects.
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"sts3215-bus {self.port}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and close the pty. Safe to call twice; the servo state remains for inspection."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            if self._wake_w is not None:
                os.write(self._wake_w, b"x")
            thread.join(timeout=5.0)
        self._thread = None
        for name in ("_master", "_slave", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    def __enter__(self) -> Sts3215Bus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- serving ---------------------------------------------------------------------------------------------
    def _serve(self) -> None:
        run_like_hardware()
        master, wake = self._master, self._wake_r
        assert master is not None and wake is not None
        buf = bytearray()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master, wake], [], [], PARTIAL_PACKET_TIMEOUT_S)
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            if not ready:
                buf.clear()  # a pause on the line: a real servo drops a half-received packet
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            buf.extend(data)
            replies = self._consume(buf)
            if replies:
                try:
                    os.write(master, replies)
                except OSError:
                    return

    def _consume(self, buf: bytearray) -> bytes:
        """Parse whole packets off the front of ``buf``; return the status packets to send back."""
        out = bytearray()
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:
                del buf[: max(0, len(buf) - 1)]  # keep a trailing 0xFF that may start a header
                return bytes(out)
            del buf[:start]
            if len(buf) >= 3 and buf[2] == 0xFF:  # FF FF FF ...: the header starts one byte later
                del buf[0]
                continue
            if len(buf) < 4:
                return bytes(out)
            total = buf[3] + 4
            if buf[3] < 2:
                del buf[:2]
                continue
            if len(buf) < total:
                return bytes(out)
            packet = bytes(buf[:total])
            del buf[:total]
            if checksum(packet[2:-1]) != packet[-1]:
                self.checksum_errors += 1  # a real servo drops it silently
                continue
            with self.lock:
                self.packets += 1
                out += self._execute(packet[2], packet[4], packet[5:-1])

    def _reply(self, servo: EmulatedServo, params: bytes = b"", servo_id: int | None = None) -> bytes:
        """A status packet; ``servo_id``: the id the instruction was addressed to (a servo whose ID was just
        rewritten still answers that write as its old id, which is what LeRobot's setup_motor expects)."""
        sid = servo.id if servo_id is None else servo_id
        packet = bytearray(status_packet(sid, servo.error_byte(), params))
        if self._corrupt > 0:
            self._corrupt -= 1
            self.corrupted_replies += 1
            packet[-1] ^= 0x5A
        return bytes(packet)

    def _addressed(self, servo_id: int) -> list[EmulatedServo]:
        if servo_id == BROADCAST_ID:
            targets = sorted(self._servos.values(), key=lambda s: s.id)
        else:
            targets = [s for s in self._servos.values() if s.id == servo_id]
        live = [s for s in targets if not s.offline]
        for s in live:
            s.received += 1
        return live

    def _execute(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        now = time.monotonic()
        out = bytearray()
        if instruction == INST_SYNC_WRITE:
            if len(params) < 2:
                return b""
            addr, length = params[0], params[1]
            body = params[2:]
            for i in range(0, len(body) - length, length + 1):
                for servo in self._addressed(body[i]):
                    servo._update(now)
                    servo._write_memory(addr, body[i + 1:i + 1 + length])
            return b""
        if instruction == INST_SYNC_READ:
            if len(params) < 2:
                return b""
            addr, length = params[0], params[1]
            for target in params[2:]:  # each servo answers in the order the ids were asked
                for servo in self._addressed(target):
                    out += self._reply(servo, servo._read_memory(addr, length))
            return bytes(out)
        broadcast = servo_id == BROADCAST_ID
        for servo in self._addressed(servo_id):
            servo._update(now)
            own_id = servo.id
            quiet = servo.mem[REGISTERS["Response_Status_Level"][0]] == 0
            if instruction == INST_PING:
                out += self._reply(servo)  # a broadcast ping is answered by every servo
            elif instruction == INST_READ and len(params) >= 2 and not broadcast:
                out += self._reply(servo, servo._read_memory(params[0], params[1]))
            elif instruction == INST_WRITE and len(params) >= 1:
                servo._write_memory(params[0], params[1:])
                if not broadcast and not quiet:
                    out += self._reply(servo, servo_id=own_id)
            elif instruction == INST_REG_WRITE and len(params) >= 1:
                servo._registered = (params[0], bytes(params[1:]))
                if not broadcast and not quiet:
                    out += self._reply(servo)
            elif instruction == INST_ACTION:
                if servo._registered is not None:
                    servo._write_memory(*servo._registered)
                    servo._registered = None
                if not broadcast and not quiet:
                    out += self._reply(servo)
            # Anything else: unknown instruction, no reply (the client times out).
        return bytes(out)
