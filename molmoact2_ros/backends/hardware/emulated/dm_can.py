"""Emulated Damiao (DM) motors on a python-can bus: what the ``i2rt`` backend talks to with ``emulate=True``.

One ``EmulatedDMBus`` is one CAN chain (one YAM arm): a thread owns a python-can bus (``virtual`` by default,
in-process; any python-can interface works) and answers, per motor, the frames i2rt's
``DMSingleMotorCanInterface`` and its register tools send, the way the DM firmware does:

- ``FF FF FF FF FF FF FF FC`` enable, ``..FD`` disable, ``..FE`` set zero (answered with a feedback frame),
  ``..FB`` clear error (not answered; i2rt sends it three times and reads nothing back);
- any other 8-byte frame on the motor's id: an MIT command ``p(16) v(12) kp(12) kd(12) t(12)``, scaled by the
  motor type's PMAX/VMAX/TMAX and i2rt's KP/KD ranges; applied only while enabled, always answered;
- arbitration id ``0x7FF``: register read ``0x33`` / write ``0x55`` / save ``0xAA`` (``[id_lo, id_hi, cmd,
  addr, value_le32]``), answered with the request echoed and the value (TIMEOUT, CTRL_MODE, Gr, PMAX, ...).

Feedback frames go out on ``MST_ID`` = id + 16 (i2rt's ``ReceiveMode.p16``): ``data[0]`` = state nibble << 4 |
id, position (16 bits), velocity (12), torque (12), MOS and rotor temperatures (degC, one byte each). The
state nibble is 0 disabled, 1 enabled, or a DM error code (0x8 over-voltage ... 0xE overload).

Physics: each motor is an inertia driven by the MIT law ``tau = kp (p_cmd - p) + kd (v_cmd - v) + t_ff``
(clipped to TMAX), integrated on the wall clock in 1 ms steps; no gravity. Disabled: no torque (the rotor
coasts to a stop on a little friction). The command timeout is the firmware's: with ``TIMEOUT`` (register 9,
units of 50 us; 8000 = 400 ms) non-zero, an enabled motor that receives no MIT command for that long falls
into damping (``tau = -damping_kd * v``, it stops tracking), latches error 0xD (loss of communication) and
keeps answering with it until the error is cleared and the motor re-enabled. Faults are injected per motor:
an error code (``inject_error``), temperatures (``set_temperature``), a motor that stops answering
(``silence``). ``state(motor_id)`` is a snapshot for tests.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import can
import numpy as np

from molmoact2_ros.backends.hardware.emulated import run_like_hardware

# DM feedback state nibble / error codes (i2rt.motor_drivers.utils.MotorErrorCode spells the same values).
STATE_DISABLED = 0x0
STATE_ENABLED = 0x1
ERR_OVER_VOLTAGE = 0x8
ERR_UNDER_VOLTAGE = 0x9
ERR_OVER_CURRENT = 0xA
ERR_MOS_OVER_TEMPERATURE = 0xB
ERR_ROTOR_OVER_TEMPERATURE = 0xC
ERR_LOST_COMMUNICATION = 0xD
ERR_OVERLOAD = 0xE
FAULT_CODES = (ERR_OVER_VOLTAGE, ERR_UNDER_VOLTAGE, ERR_OVER_CURRENT, ERR_MOS_OVER_TEMPERATURE,
               ERR_ROTOR_OVER_TEMPERATURE, ERR_LOST_COMMUNICATION, ERR_OVERLOAD)

REGISTER_ID = 0x7FF
CMD_READ, CMD_WRITE, CMD_SAVE = 0x33, 0x55, 0xAA
SPECIAL_PREFIX = bytes([0xFF] * 7)
ENABLE, DISABLE, SET_ZERO, CLEAR_ERROR = 0xFC, 0xFD, 0xFE, 0xFB
FEEDBACK_ID_OFFSET = 16  # MST_ID = ESC_ID + 16, what i2rt's ReceiveMode.p16 expects
TIMEOUT_UNIT_S = 50e-6  # the TIMEOUT register counts 50 us periods
KP_MAX, KD_MAX = 500.0, 5.0  # MIT gain ranges (i2rt MotorConstants.KP_MAX / KD_MAX)

# Per motor type: (PMAX, VMAX, TMAX, gear ratio, rotor+link inertia kg m^2 as the emulator models it).
MOTOR_TYPES: dict[str, tuple[float, float, float, float, float]] = {
    "DM4310": (12.5, 30.0, 10.0, 10.0, 0.005),
    "DM4340": (12.5, 10.0, 28.0, 40.0, 0.02),
    "DM3507": (12.5, 50.0, 5.0, 7.0, 0.003),
    "DM6248": (12.5, 20.0, 120.0, 48.0, 0.05),
    "DM8009": (12.5, 45.0, 54.0, 9.0, 0.05),
}

# Registers the emulator holds: address -> is_float (DM manual numbering, as i2rt's dm_motor_registers).
_FLOAT_REGISTERS = {0, 1, 2, 3, 4, 5, 6, 11, 12, 17, 18, 19, 20, 21, 22, 23, 29, 30}
_UINT_REGISTERS = {7, 8, 9, 10, 13, 14, 15, 16, 35, 36}
REG_OT_VALUE, REG_MST_ID, REG_ESC_ID, REG_TIMEOUT, REG_CTRL_MODE = 2, 7, 8, 9, 10
REG_HW_VER, REG_SW_VER, REG_GR, REG_PMAX, REG_VMAX, REG_TMAX = 13, 14, 20, 21, 22, 23

SUBSTEP_S = 0.001
MAX_CATCH_UP_S = 2.0  # a starved emulator thread integrates at most this much at once (then time jumps)
COAST_FRICTION = 0.02  # N m s/rad: a disabled rotor coasts to a stop instead of spinning forever


def _to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    x = min(max(x, lo), hi)
    return int((x - lo) * ((1 << bits) - 1) / (hi - lo))


def _to_float(u: int, lo: float, hi: float, bits: int) -> float:
    return u * (hi - lo) / ((1 << bits) - 1) + lo


@dataclass
class MotorState:
    """A snapshot of one emulated motor (``EmulatedDMBus.state``)."""

    motor_id: int
    motor_type: str
    position: float
    velocity: float
    torque: float
    enabled: bool  # output stage on and tracking MIT commands
    timed_out: bool  # fell into damping for want of a command (firmware timeout), error 0xD latched
    error: int  # 0 or a DM error code
    kp: float  # the MIT command in effect
    kd: float
    target: float
    timeouts: int  # times the command timeout fired
    commands: int  # MIT frames applied
    enables: int
    disables: int
    temperature_mos_c: float
    temperature_rotor_c: float
    silent: bool

    @property
    def in_damping(self) -> bool:
        """Not holding a position: firmware damping after a timeout, or commanded damping (kp 0, kd > 0)."""
        return self.timed_out or (self.enabled and self.kp == 0.0 and self.kd > 0.0)


@dataclass
class _Motor:
    motor_id: int
    motor_type: str
    position: float
    velocity: float = 0.0
    torque: float = 0.0
    enabled: bool = False
    timed_out: bool = False
    error: int = 0
    sticky_error: bool = False
    p_cmd: float = 0.0
    v_cmd: float = 0.0
    kp: float = 0.0
    kd: float = 0.0
    t_ff: float = 0.0
    last_command_t: float = 0.0
    timeouts: int = 0
    commands: int = 0
    enables: int = 0
    disables: int = 0
    temperature_mos_c: float = 35.0
    temperature_rotor_c: float = 38.0
    silent: bool = False
    registers: dict[int, float | int] = field(default_factory=dict)

    @property
    def limits(self) -> tuple[float, float, float]:
        return float(self.registers[REG_PMAX]), float(self.registers[REG_VMAX]), float(self.registers[REG_TMAX])

    @property
    def timeout_s(self) -> float:
        return int(self.registers[REG_TIMEOUT]) * TIMEOUT_UNIT_S

    @property
    def inertia(self) -> float:
        return MOTOR_TYPES[self.motor_type][4]


class EmulatedDMBus:
    """A chain of emulated DM motors answering on one python-can channel, served by a thread.

    ``motors``: ``(can_id, motor_type, initial_position_rad)`` per motor (positions are the motor's own,
    before any direction/offset the host applies). ``timeout_s``: the command timeout each motor starts
    with (written to its TIMEOUT register; 0 disables it, as ``set_timeout.py`` would). ``damping_kd``: the
    firmware's damping after a timeout.
    """

    def __init__(self, channel: str, motors: Sequence[tuple[int, str, float]], *, interface: str = "virtual",
                 timeout_s: float = 0.4, damping_kd: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.channel = channel
        self.interface = interface
        self.damping_kd = float(damping_kd)
        self._clock = clock
        self._lock = threading.RLock()
        self._motors: dict[int, _Motor] = {}
        for motor_id, motor_type, position in motors:
            if motor_type not in MOTOR_TYPES:
                raise ValueError(f"emulated DM motor type {motor_type!r} unknown (known: {', '.join(MOTOR_TYPES)})")
            pmax, vmax, tmax, gear, _ = MOTOR_TYPES[motor_type]
            motor = _Motor(int(motor_id), motor_type, float(position))
            motor.registers = {
                REG_OT_VALUE: 80.0, REG_MST_ID: int(motor_id) + FEEDBACK_ID_OFFSET, REG_ESC_ID: int(motor_id),
                REG_TIMEOUT: round(timeout_s / TIMEOUT_UNIT_S), REG_CTRL_MODE: 1, REG_HW_VER: 1,
                REG_SW_VER: 5, REG_GR: gear, REG_PMAX: pmax, REG_VMAX: vmax, REG_TMAX: tmax,
            }
            self._motors[int(motor_id)] = motor
        self._t = clock()
        self._bus: can.BusABC | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self.frames_received = 0
        self.frames_sent = 0
        self.unknown_frames = 0
        self.thread_error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> EmulatedDMBus:
        if self._thread is not None:
            return self
        self._bus = can.Bus(interface=self.interface, channel=self.channel, receive_own_messages=False)
        self._t = self._clock()
        self._running.set()
        self._thread = threading.Thread(target=self._serve, name=f"emulated-dm-{self.channel}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EmulatedDMBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state and fault injection (tests, the demo) ---------------------------------------------------
    @property
    def motor_ids(self) -> list[int]:
        return sorted(self._motors)

    def state(self, motor_id: int) -> MotorState:
        with self._lock:
            self._advance(self._clock())
            m = self._motors[motor_id]
            return MotorState(m.motor_id, m.motor_type, m.position, m.velocity, m.torque, m.enabled, m.timed_out,
                              m.error, m.kp, m.kd, m.p_cmd, m.timeouts, m.commands, m.enables, m.disables,
                              m.temperature_mos_c, m.temperature_rotor_c, m.silent)

    def states(self) -> list[MotorState]:
        return [self.state(i) for i in self.motor_ids]

    def inject_error(self, motor_id: int, code: int, *, sticky: bool = True) -> None:
        """Put a motor in a DM error state: the output stage turns off and feedback carries ``code``.
        ``sticky``: clear-error frames do not clear it (the condition persists, e.g. still too hot)."""
        if code not in FAULT_CODES:
            raise ValueError(f"not a DM error code: {code:#x} (known: {[hex(c) for c in FAULT_CODES]})")
        with self._lock:
            self._advance(self._clock())
            m = self._motors[motor_id]
            m.error, m.sticky_error, m.enabled = int(code), bool(sticky), False

    def clear_fault(self, motor_id: int) -> None:
        """The condition behind an injected error went away: the next clear-error frame clears it."""
        with self._lock:
            self._motors[motor_id].sticky_error = False

    def set_temperature(self, motor_id: int, *, mos_c: float | None = None, rotor_c: float | None = None) -> None:
        with self._lock:
            m = self._motors[motor_id]
            if mos_c is not None:
                m.temperature_mos_c = float(mos_c)
            if rotor_c is not None:
                m.temperature_rotor_c = float(rotor_c)

    def silence(self, motor_id: int, silent: bool = True) -> None:
        """A motor that stops answering (unplugged, unpowered, wrong id)."""
        with self._lock:
            self._motors[motor_id].silent = bool(silent)

    def set_timeout_s(self, motor_id: int, timeout_s: float) -> None:
        with self._lock:
            self._motors[motor_id].registers[REG_TIMEOUT] = round(timeout_s / TIMEOUT_UNIT_S)

    def move(self, motor_id: int, position: float) -> None:
        """Someone moved the joint by hand."""
        with self._lock:
            self._advance(self._clock())
            self._motors[motor_id].position = float(position)
            self._motors[motor_id].velocity = 0.0

    # ---- the thread ---------------------------------------------------------------------------------
    def _serve(self) -> None:
        run_like_hardware()
        bus = self._bus
        assert bus is not None
        try:
            while self._running.is_set():
                msg = bus.recv(timeout=0.02)
                with self._lock:
                    self._advance(self._clock())
                    reply = self._handle(msg) if msg is not None else None
                if reply is not None:
                    bus.send(reply)
                    self.frames_sent += 1
        except BaseException as exc:  # surfaced to tests through thread_error; a dead emulator must be visible
            self.thread_error = exc
            raise

    def _handle(self, msg: can.Message) -> can.Message | None:
        if msg.is_extended_id or msg.is_remote_frame or msg.is_error_frame:
            return None
        self.frames_received += 1
        data = bytes(msg.data)
        if msg.arbitration_id == REGISTER_ID:
            return self._register(data)
        motor = self._motors.get(msg.arbitration_id)
        if motor is None or len(data) != 8:
            self.unknown_frames += 1
            return None
        if data[:7] == SPECIAL_PREFIX and data[7] in (ENABLE, DISABLE, SET_ZERO, CLEAR_ERROR):
            return self._special(motor, data[7])
        self._mit(motor, data)
        return self._feedback(motor)

    def _special(self, m: _Motor, code: int) -> can.Message | None:
        now = self._clock()
        if code == CLEAR_ERROR:
            if m.error and not m.sticky_error:
                m.error, m.timed_out = 0, False
            return None  # i2rt does not wait for an answer; the firmware sends none worth reading
        if code == ENABLE:
            if not m.error:
                if not m.enabled:
                    # A fresh enable holds no command (zero gains) until the first MIT frame arrives.
                    m.kp = m.kd = m.t_ff = m.v_cmd = 0.0
                    m.p_cmd = m.position
                    m.enables += 1
                m.enabled, m.timed_out, m.last_command_t = True, False, now
        elif code == DISABLE:
            if m.enabled or m.timed_out:
                m.disables += 1
            m.enabled, m.timed_out = False, False
            m.kp = m.kd = m.t_ff = 0.0
        elif code == SET_ZERO:
            m.position = 0.0
        return self._feedback(m)

    def _mit(self, m: _Motor, data: bytes) -> None:
        if not m.enabled or m.error:
            return  # answered, not applied
        pmax, vmax, tmax = m.limits
        p = (data[0] << 8) | data[1]
        v = (data[2] << 4) | (data[3] >> 4)
        kp = ((data[3] & 0xF) << 8) | data[4]
        kd = (data[5] << 4) | (data[6] >> 4)
        t = ((data[6] & 0xF) << 8) | data[7]
        m.p_cmd = _to_float(p, -pmax, pmax, 16)
        m.v_cmd = _to_float(v, -vmax, vmax, 12)
        m.kp = _to_float(kp, 0.0, KP_MAX, 12)
        m.kd = _to_float(kd, 0.0, KD_MAX, 12)
        m.t_ff = _to_float(t, -tmax, tmax, 12)
        m.last_command_t = self._clock()
        m.commands += 1

    def _feedback(self, m: _Motor) -> can.Message | None:
        if m.silent:
            return None
        pmax, vmax, tmax = m.limits
        state = m.error if m.error else (STATE_ENABLED if m.enabled else STATE_DISABLED)
        p = _to_uint(m.position, -pmax, pmax, 16)
        v = _to_uint(m.velocity, -vmax, vmax, 12)
        t = _to_uint(m.torque, -tmax, tmax, 12)
        data = bytes([
            ((state & 0xF) << 4) | (m.motor_id & 0xF), (p >> 8) & 0xFF, p & 0xFF, (v >> 4) & 0xFF,
            ((v & 0xF) << 4) | ((t >> 8) & 0xF), t & 0xFF,
            int(min(max(round(m.temperature_mos_c), 0), 255)), int(min(max(round(m.temperature_rotor_c), 0), 255)),
        ])
        return can.Message(arbitration_id=int(m.registers[REG_MST_ID]), data=data, is_extended_id=False)

    def _register(self, data: bytes) -> can.Message | None:
        if len(data) != 8:
            self.unknown_frames += 1
            return None
        m = self._motors.get(data[0] | (data[1] << 8))
        if m is None or m.silent:
            return None
        cmd, addr = data[2], data[3]
        is_float = addr in _FLOAT_REGISTERS
        if not is_float and addr not in _UINT_REGISTERS:
            return None  # a register the emulator does not model: silence, as a motor that ignores it
        if cmd == CMD_WRITE:
            raw = data[4:8]
            m.registers[addr] = struct.unpack("<f", raw)[0] if is_float else struct.unpack("<I", raw)[0]
        elif cmd == CMD_SAVE:
            return can.Message(arbitration_id=int(m.registers[REG_MST_ID]), data=data[:4], is_extended_id=False)
        elif cmd != CMD_READ:
            return None
        value = m.registers.get(addr, float("nan") if is_float else 0xFFFFFFFF)
        payload = struct.pack("<f", float(value)) if is_float else struct.pack("<I", int(value))
        return can.Message(arbitration_id=int(m.registers[REG_MST_ID]), data=data[:4] + payload,
                           is_extended_id=False)

    # ---- physics -------------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        """Integrate every motor from the last update to ``now``, firing command timeouts where they fall."""
        if now <= self._t:
            return
        if now - self._t > MAX_CATCH_UP_S:
            self._fire_timeouts(now - MAX_CATCH_UP_S)
            self._t = now - MAX_CATCH_UP_S
        while self._t < now:
            deadlines = [m.last_command_t + m.timeout_s for m in self._motors.values()
                         if m.enabled and m.timeout_s > 0]
            segment_end = min([now, *[d for d in deadlines if d > self._t]])
            while self._t < segment_end:
                h = segment_end - self._t
                if h > SUBSTEP_S:
                    self._step(SUBSTEP_S)
                    self._t += SUBSTEP_S
                else:
                    self._step(h)
                    self._t = segment_end
            self._fire_timeouts(self._t)

    def _fire_timeouts(self, t: float) -> None:
        for m in self._motors.values():
            if m.enabled and m.timeout_s > 0 and t - m.last_command_t >= m.timeout_s:
                m.enabled, m.timed_out, m.error = False, True, ERR_LOST_COMMUNICATION
                m.timeouts += 1

    def _step(self, h: float) -> None:
        for m in self._motors.values():
            _, vmax, tmax = m.limits
            if m.enabled:
                tau = m.kp * (m.p_cmd - m.position) + m.kd * (m.v_cmd - m.velocity) + m.t_ff
            elif m.timed_out:
                tau = -self.damping_kd * m.velocity
            else:
                tau = -COAST_FRICTION * m.velocity
            tau = min(max(tau, -tmax), tmax)
            m.torque = tau
            # Semi-implicit Euler: damping is the stiff term (kd / J up to ~1e3 /s), stable at 1 ms steps.
            m.velocity = min(max(m.velocity + h * tau / m.inertia, -vmax), vmax)
            m.position += h * m.velocity
            if not math.isfinite(m.position):  # never propagate a blow-up as a plausible reading
                m.position, m.velocity = 0.0, 0.0


def motor_positions(bus: EmulatedDMBus) -> np.ndarray:
    """Every motor's position on ``bus`` in id order (tests)."""
    return np.array([s.position for s in bus.states()])
