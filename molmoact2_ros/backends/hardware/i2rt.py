"""I2RT YAM bimanual station: two YAM arms (6 DM joints + a DM gripper each) on two CAN channels, one backend.

Talks through i2rt (``dreamscale-i2rt``) at the level of its ``DMSingleMotorCanInterface``: MIT frames built
and feedback parsed by i2rt, on a bus opened by i2rt. Why not ``get_yam_robot`` / ``MotorChainRobot`` /
``DMChainCanInterface``, which MolmoAct2's own YAM client uses:

- ``DMChainCanInterface`` hard-codes ``bustype="socketcan"`` and *enables every motor in its constructor*;
  our convention is that nothing is energised before the driver's first write.
- ``MotorChainRobot`` (and the chain's own thread) command the motors at 250 Hz from a background thread,
  forever, whatever our driver does. That thread would keep feeding the DM firmware's command timeout after
  our driver stalled or died, defeating the one safety net that needs no software to work. Here there is no
  background thread: every CAN frame is sent from a driver tick (``read``/``write``), so when the driver loop
  stops (crash, hang, Ctrl-C, cable out) the motors fall into damping ~400 ms later, as the firmware intends.
  The motor timeout stays on (checked at connect, ``require_motor_timeout``); ``needs_heartbeat`` is True.
- ``DMSingleMotorCanInterface`` takes ``bustype``: the real path opens ``socketcan`` unchanged, the emulated
  path ``virtual`` (python-can's in-process bus) -- no patching of i2rt anywhere.

Each tick: ``read`` exchanges one frame per motor and ``write`` one more. While the motors are off (after
connect, before the first write) ``read`` sends the DM disable frame, which is answered with feedback and
keeps them off; while holding it re-sends the last MIT position command; after ``relax`` a damping command
(kp 0, kd ``relax_kd``). The first ``write`` after connect or relax enables the motors (clearing a latched
loss-of-communication error first) and sends the command right after. The MIT gains are i2rt's own for the
arm type (``yam_v1.yml``: kp 80/80/80/10/10/10, kd 5/5/5/1.5/1.5/1.5) and gripper type (``linear_4310``:
kp 20, kd 0.5), overridable with ``kp``/``kd``. No gravity compensation is added (i2rt's MotorChainRobot does
that with MuJoCo): the kp above holds the arm with a small static droop, which the driver sees as tracking
error well under ``max_tracking_error_rad``.

Units: arm joints in radians, joint = motor position * direction - offset (offset 0 unless the motor reads
beyond +-pi at connect, i2rt's own 2 pi unwrap). Gripper normalized 0 = closed, 1 = open (the model's and
i2rt's convention: i2rt's ``JointMapper`` maps ``gripper_limits = (closed, open)`` onto 0..1). The gripper
command is clipped to 0..1, its stroke; nothing else is clipped (the safety stack owns joint limits).

Faults: a motor whose feedback carries a DM error code (over/under-voltage, over-current, MOS or rotor
over-temperature, loss of communication, overload) or that does not answer is a HardwareError naming the
arm, channel, motor, joint and code; the driver then faults the whole 14-joint station. Temperatures (the
hotter of MOS and rotor, per joint) come with every reading; ``max_temperature_c`` is the driver's limit.

``torque_off_on_stop`` (default True): when the driver stops it relaxes the arms into damping (a YAM arm in
damping sags slowly, usually acceptable) rather than holding: holding is impossible anyway once nothing
commands the motors (timeout). ``disconnect`` sends the damping command last and closes the bus; the
firmware then keeps damping after its timeout.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import HardwareError

try:
    import can
    from i2rt.motor_config_tool.dm_motor_registers import read_register
    from i2rt.motor_config_tool.utils import RawCanInterface
    from i2rt.motor_drivers.dm_driver import ControlMode, DMSingleMotorCanInterface
    from i2rt.motor_drivers.utils import FeedbackFrameInfo, MotorErrorCode, MotorType, ReceiveMode
    from i2rt.robots.utils import ArmType, GripperType, _load_arm_config
except ImportError as exc:  # the registry turns this into "install the yam extra"
    raise ImportError(f"the i2rt backend needs dreamscale-i2rt and python-can ({exc})") from exc

DEFAULT_MAX_TEMPERATURE_C = 70.0
DEFAULT_RELAX_KD = (2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.2)
DEFAULT_EMULATED_TIMEOUT_S = 0.4
GRIPPER_MOTOR_ID = 0x07
DISABLE_FRAME = [0xFF] * 7 + [0xFD]
ENABLE_FRAME = [0xFF] * 7 + [0xFC]
LOST_COMMUNICATION = MotorErrorCode.loss_communication
OK_STATES = (MotorErrorCode.disabled, MotorErrorCode.normal)
# What each DM error code means for the operator (docs/arms/yam_bimanual.md has the recovery steps).
ERROR_HINTS: dict[int, str] = {
    0x8: "supply voltage too high: check the PSU setting (24 V)",
    0x9: "supply voltage too low: check the PSU, its current limit and the power cable",
    0xA: "over-current: the joint was blocked or hit something; free it",
    0xB: "driver (MOS) over-temperature: let the motor cool down",
    0xC: "rotor over-temperature: let the motor cool down and lower the load",
    0xD: "loss of communication: no command within the motor's timeout (driver stalled or CAN cable)",
    0xE: "overload: the joint was held against a load too long",
}
BUS_ERRORS = (can.CanError, OSError, ValueError, AssertionError, RuntimeError)


def _error_name_to_code() -> dict[str, int]:
    return {name: code for code, name in MotorErrorCode.motor_error_code_dict.items()}


@dataclass
class _Arm:
    """One YAM arm on one CAN channel: 6 joints and the gripper, in motor id order."""

    name: str
    channel: str
    indices: np.ndarray  # embodiment joint index of each motor
    motors: list[tuple[int, str]]  # (CAN id, DM motor type)
    direction: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    relax_kd: np.ndarray
    gripper_closed: float
    gripper_open: float
    joint_names: list[str]
    offset: np.ndarray = field(default_factory=lambda: np.zeros(7))
    iface: Any = None
    mode: str = "off"  # off: disabled, never commanded since connect/relax; hold: tracking; damp: relaxed
    target: np.ndarray = field(default_factory=lambda: np.zeros(7))  # motor positions last commanded
    enabled: np.ndarray = field(default_factory=lambda: np.zeros(7, dtype=bool))
    emulator: Any = None


class I2rtArm(HardwareInterface):
    """The YAM bimanual station (14 joints: left arm + gripper, right arm + gripper) over two CAN chains."""

    name = "i2rt"

    def __init__(self, embodiment: EmbodimentConfig, *, left_channel: str = "can_left",
                 right_channel: str = "can_right", arm_type: str = "yam", gripper_type: str = "linear_4310",
                 gripper_limits: Any = None, kp: Any = None, kd: Any = None, relax_kd: Any = None,
                 max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C, torque_off_on_stop: bool = True,
                 require_motor_timeout: bool = True, check_motor_registers: bool = True, bitrate: int = 1_000_000,
                 emulate: bool = False, emulated_timeout_s: float = DEFAULT_EMULATED_TIMEOUT_S,
                 motor_timeout_enabled: bool | None = None):
        super().__init__(embodiment)
        if motor_timeout_enabled is False:
            raise HardwareError(
                "i2rt backend: motor_timeout_enabled: false is not supported: the DM motors' command timeout is "
                "the station's last safety net (motors fall into damping when nothing commands them); keep it "
                "on (set_timeout.py --timeout) and leave hardware.params.i2rt.require_motor_timeout true"
            )
        self._emulate = bool(emulate)
        self._bustype = "virtual" if self._emulate else "socketcan"
        self._bitrate = int(bitrate)
        self._max_temp = float(max_temperature_c)
        self._torque_off_on_stop = bool(torque_off_on_stop)
        self._require_timeout = bool(require_motor_timeout)
        self._check_registers = bool(check_motor_registers)
        self._emulated_timeout_s = float(emulated_timeout_s)
        self._error_codes = _error_name_to_code()
        try:
            self._arm_type = ArmType.from_string_name(str(arm_type))
            self._gripper_type = GripperType.from_string_name(str(gripper_type))
            hw = _load_arm_config(self._arm_type)
            g_type = self._gripper_type.get_motor_type(self._arm_type)
            g_kp, g_kd = self._gripper_type.get_motor_kp_kd(self._arm_type)
            g_dir = self._gripper_type.get_motor_direction(self._arm_type)
            g_limits = gripper_limits if gripper_limits is not None else \
                self._gripper_type.get_gripper_limits(self._arm_type)
        except (ValueError, OSError, KeyError) as exc:
            raise HardwareError(f"i2rt backend: arm_type {arm_type!r} / gripper_type {gripper_type!r}: {exc}") from exc
        motors = [(int(i), str(t)) for i, t in hw.motor_list] + [(GRIPPER_MOTOR_ID, g_type)]
        direction = np.array([*hw.directions, g_dir], dtype=np.float64)
        gains_kp = self._vector("kp", kp, np.append(hw.kp, g_kp))
        gains_kd = self._vector("kd", kd, np.append(hw.kd, g_kd))
        damp_kd = self._vector("relax_kd", relax_kd, np.array(DEFAULT_RELAX_KD))
        groups = embodiment.arms or {}
        channels = {"left": str(left_channel), "right": str(right_channel)}
        if sorted(groups) != ["left", "right"]:
            raise HardwareError(
                f"i2rt backend: {embodiment.name} must group its joints as arms: left and right (7 joints each, "
                f"6 arm joints then the gripper); it has arms: {sorted(groups)}"
            )
        self._arms: list[_Arm] = []
        for arm_name in ("left", "right"):
            names = list(groups[arm_name])
            if len(names) != len(motors):
                raise HardwareError(
                    f"i2rt backend: arm {arm_name} has {len(names)} joints in {embodiment.name}, the {arm_type} arm "
                    f"with a {gripper_type} gripper has {len(motors)} motors"
                )
            idx = np.array([embodiment.joint_names.index(n) for n in names])
            gripper_joint = embodiment.joints[int(idx[-1])]
            if gripper_joint.type != "gripper" or gripper_joint.unit != "normalized":
                raise HardwareError(
                    f"i2rt backend: the last joint of arm {arm_name} ({gripper_joint.name}) must be the gripper "
                    "with unit: normalized (0 closed .. 1 open)"
                )
            closed, opened = self._gripper_limits(arm_name, g_limits)
            self._arms.append(_Arm(arm_name, channels[arm_name], idx, motors, direction.copy(), gains_kp, gains_kd,
                                   damp_kd, closed, opened, names))
        if channels["left"] == channels["right"]:
            raise HardwareError(f"i2rt backend: left_channel and right_channel are both {channels['left']!r}")
        self._temps = np.full(embodiment.dof, np.nan)
        self._vel = np.zeros(embodiment.dof)
        self._pos = np.full(embodiment.dof, np.nan)

    # ---- capabilities ---------------------------------------------------------------------------------
    @property
    def supports_relax(self) -> bool:
        return True

    @property
    def needs_heartbeat(self) -> bool:
        return True

    @property
    def relax_on_stop(self) -> bool:
        return self._torque_off_on_stop

    @property
    def max_temperature_c(self) -> float | None:
        return self._max_temp

    @property
    def emulators(self) -> dict[str, Any]:
        """The emulated CAN chains by arm name (``emulate=True`` only; tests inspect them)."""
        return {arm.name: arm.emulator for arm in self._arms if arm.emulator is not None}

    @property
    def arm_modes(self) -> dict[str, str]:
        return {arm.name: arm.mode for arm in self._arms}

    # ---- interface ----------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._connected:
            return
        try:
            if self._emulate:
                self._start_emulators()
            for arm in self._arms:
                if self._check_registers:
                    self._check_motor_registers(arm)
                arm.iface = self._open(arm)
                arm.mode, arm.enabled[:] = "off", False
                self._connect_arm(arm)
        except BaseException:
            self._close_all()
            raise
        self._connected = True

    def disconnect(self) -> None:
        try:
            if self._connected and self._torque_off_on_stop:
                for arm in self._arms:
                    if arm.mode != "off":
                        # A failure here changes nothing: the firmware's timeout puts the motors into damping.
                        with contextlib.suppress(HardwareError):
                            self._relax_arm(arm)
        finally:
            self._close_all()
            self._connected = False

    def read(self) -> HardwareReading:
        self._require_connected()
        for arm in self._arms:
            for k in range(len(arm.motors)):
                if arm.mode == "off":
                    fb = self._disable_exchange(arm, k)
                elif arm.mode == "damp":
                    fb = self._command(arm, k, arm.target[k], 0.0, float(arm.relax_kd[k]))
                else:
                    fb = self._command(arm, k, arm.target[k], float(arm.kp[k]), float(arm.kd[k]))
                self._record(arm, k, fb)
        return HardwareReading(positions=self._pos.copy(), temperatures_c=self._temps.copy(),
                               velocities=self._vel.copy())

    def write(self, positions: np.ndarray) -> np.ndarray:
        self._require_connected()
        cmd = self._check_command(positions)
        sent = cmd.copy()
        targets = []
        for arm in self._arms:
            q = cmd[arm.indices].copy()
            q[-1] = min(max(q[-1], 0.0), 1.0)  # the gripper's stroke is its hard limit
            sent[arm.indices[-1]] = q[-1]
            targets.append(self._to_motor(arm, q))
        for arm, target in zip(self._arms, targets, strict=True):
            if arm.mode != "hold" or not arm.enabled.all():
                self._enable(arm)
            arm.target = target
            arm.mode = "hold"
            for k in range(len(arm.motors)):
                fb = self._command(arm, k, target[k], float(arm.kp[k]), float(arm.kd[k]))
                self._record(arm, k, fb)
        return sent

    def relax(self) -> None:
        self._require_connected()
        for arm in self._arms:
            self._relax_arm(arm)

    # ---- internals: conversions ---------------------------------------------------------------------
    def _to_motor(self, arm: _Arm, q: np.ndarray) -> np.ndarray:
        joint = q.astype(np.float64).copy()
        joint[-1] = arm.gripper_closed + q[-1] * (arm.gripper_open - arm.gripper_closed)
        return (joint + arm.offset) * arm.direction

    def _to_joint(self, arm: _Arm, k: int, motor_value: float, rate: bool = False) -> float:
        value = motor_value * arm.direction[k] - (0.0 if rate else arm.offset[k])
        if k == len(arm.motors) - 1:
            span = arm.gripper_open - arm.gripper_closed
            value = value / span if rate else (value - arm.gripper_closed) / span
        return float(value)

    def _record(self, arm: _Arm, k: int, fb: FeedbackFrameInfo) -> None:
        j = int(arm.indices[k])
        self._pos[j] = self._to_joint(arm, k, fb.position)
        self._vel[j] = self._to_joint(arm, k, fb.velocity, rate=True)
        self._temps[j] = max(float(fb.temperature_mos), float(fb.temperature_rotor))

    # ---- internals: the bus ---------------------------------------------------------------------------
    def _where(self, arm: _Arm, k: int) -> str:
        motor_id, motor_type = arm.motors[k]
        return f"i2rt {arm.name} arm ({arm.channel}) motor {motor_id:#04x} {motor_type} ({arm.joint_names[k]})"

    def _fault(self, arm: _Arm, k: int, code: int) -> HardwareError:
        name = MotorErrorCode.get_error_message(code)
        hint = ERROR_HINTS.get(code, "see docs/arms/yam_bimanual.md")
        return HardwareError(f"{self._where(arm, k)} reports DM error {code:#x} ({name}): {hint}; "
                             "fix the cause, then ~/reset the driver")

    def _open(self, arm: _Arm) -> Any:
        try:
            return DMSingleMotorCanInterface(channel=arm.channel, bustype=self._bustype, bitrate=self._bitrate,
                                             receive_mode=ReceiveMode.p16, control_mode=ControlMode.MIT,
                                             name=f"molmoact2_{arm.name}")
        except BUS_ERRORS as exc:
            raise HardwareError(
                f"i2rt {arm.name} arm: cannot open CAN channel {arm.channel!r} ({self._bustype}): {exc}. Check the "
                f"adapter is plugged in and the link is up: sudo ip link set {arm.channel} up type can bitrate "
                f"{self._bitrate} (ip -details link show {arm.channel})"
            ) from exc

    def _no_answer(self, arm: _Arm, k: int, exc: BaseException) -> HardwareError:
        return HardwareError(
            f"{self._where(arm, k)} did not answer ({exc}): check the arm's power (24 V) and E-stop, the CAN "
            f"cable and termination, and that {arm.channel} is up (ip -details link show {arm.channel})"
        )

    def _exchange_special(self, arm: _Arm, k: int, frame: list[int]) -> FeedbackFrameInfo:
        motor_id, motor_type = arm.motors[k]
        try:
            msg = arm.iface._send_message_get_response(motor_id, motor_id, frame)
            return arm.iface.parse_recv_message(msg, motor_type, ignore_error=True)
        except AssertionError as exc:
            raise self._no_answer(arm, k, exc) from exc
        except BUS_ERRORS as exc:
            raise HardwareError(f"{self._where(arm, k)}: CAN error on {arm.channel}: {exc}") from exc

    def _disable_exchange(self, arm: _Arm, k: int) -> FeedbackFrameInfo:
        fb = self._exchange_special(arm, k, DISABLE_FRAME)
        code = int(fb.error_code, 16)
        if code not in OK_STATES:
            raise self._fault(arm, k, code)
        arm.enabled[k] = False
        return fb

    def _command(self, arm: _Arm, k: int, pos: float, kp: float, kd: float) -> FeedbackFrameInfo:
        motor_id, motor_type = arm.motors[k]
        try:
            fb = arm.iface.set_control(motor_id=motor_id, motor_type=motor_type, pos=float(pos), vel=0.0,
                                       kp=kp, kd=kd, torque=0.0)
        except AssertionError as exc:
            raise self._no_answer(arm, k, exc) from exc
        except RuntimeError as exc:
            # i2rt raises "Motor error detected: motor id: N, error: <name>" for any state other than 1.
            arm.enabled[k] = False
            name = str(exc).rsplit("error: ", 1)[-1].strip()
            code = self._error_codes.get(name)
            if code is None:
                raise HardwareError(f"{self._where(arm, k)}: {exc}") from exc
            if code == MotorErrorCode.disabled:
                raise HardwareError(f"{self._where(arm, k)} is disabled while commanded (power cycled?): "
                                    "~/reset the driver to re-enable") from exc
            raise self._fault(arm, k, code) from exc
        except BUS_ERRORS as exc:
            raise HardwareError(f"{self._where(arm, k)}: CAN error on {arm.channel}: {exc}") from exc
        return fb

    def _enable(self, arm: _Arm) -> None:
        """Enable every motor of ``arm`` that is not (clearing a latched loss of communication first)."""
        for k, (motor_id, _) in enumerate(arm.motors):
            fb = self._exchange_special(arm, k, ENABLE_FRAME)
            code = int(fb.error_code, 16)
            if code == LOST_COMMUNICATION:
                arm.iface.clean_error(motor_id)
                arm.iface.try_receive_message(timeout=0.002)
                fb = self._exchange_special(arm, k, ENABLE_FRAME)
                code = int(fb.error_code, 16)
            if code != MotorErrorCode.normal:
                raise self._fault(arm, k, code)
            arm.enabled[k] = True

    def _relax_arm(self, arm: _Arm) -> None:
        if arm.mode == "off":
            return  # never energised since connect/relax: nothing to let go of
        for k in range(len(arm.motors)):
            if not arm.enabled[k]:
                continue
            fb = self._command(arm, k, arm.target[k], 0.0, float(arm.relax_kd[k]))
            self._record(arm, k, fb)
        arm.mode = "damp"

    def _connect_arm(self, arm: _Arm) -> None:
        """Poll every motor with the disable frame (they stay off), clear a loss-of-communication error left by
        a previous session, refuse any other error code, and take i2rt's 2 pi unwrap offsets."""
        for k, (motor_id, _) in enumerate(arm.motors):
            fb = self._exchange_special(arm, k, DISABLE_FRAME)
            code = int(fb.error_code, 16)
            if code == LOST_COMMUNICATION:
                arm.iface.clean_error(motor_id)
                arm.iface.try_receive_message(timeout=0.002)
                fb = self._exchange_special(arm, k, DISABLE_FRAME)
                code = int(fb.error_code, 16)
            if code not in OK_STATES:
                raise self._fault(arm, k, code)
            if k < len(arm.motors) - 1:
                joint = fb.position * arm.direction[k]
                arm.offset[k] = -2 * math.pi if joint < -math.pi else (2 * math.pi if joint > math.pi else 0.0)
            self._record(arm, k, fb)

    def _check_motor_registers(self, arm: _Arm) -> None:
        """Read CTRL_MODE, TIMEOUT and Gr of every motor before the chain is driven: MIT mode, the command
        timeout on, and the motor type the MIT scaling assumes (a wrong type silently rescales every command)."""
        try:
            raw = RawCanInterface(channel=arm.channel, bustype=self._bustype, bitrate=self._bitrate,
                                  name=f"molmoact2_{arm.name}_registers")
        except BUS_ERRORS as exc:
            raise HardwareError(
                f"i2rt {arm.name} arm: cannot open CAN channel {arm.channel!r} ({self._bustype}): {exc}. Check the "
                f"adapter and bring the link up: sudo ip link set {arm.channel} up type can bitrate {self._bitrate}"
            ) from exc
        try:
            for k, (motor_id, motor_type) in enumerate(arm.motors):
                tool = f"python -m i2rt.motor_config_tool.dm_motor_registers read-all --motor-id {motor_id} " \
                       f"--channel {arm.channel}"
                try:
                    mode = read_register(raw, motor_id, "CTRL_MODE")
                    timeout = read_register(raw, motor_id, "TIMEOUT")
                    gear = read_register(raw, motor_id, "Gr")
                except BUS_ERRORS as exc:
                    raise self._no_answer(arm, k, exc) from exc
                if int(mode) != 1:
                    raise HardwareError(f"{self._where(arm, k)} is in control mode {mode}, not MIT (1): "
                                        f"write CTRL_MODE 1 and save it ({tool})")
                if self._require_timeout and int(timeout) == 0:
                    raise HardwareError(
                        f"{self._where(arm, k)} has its command timeout disabled (TIMEOUT 0): without it a stalled "
                        f"driver leaves the arm energised. Turn it back on: python -m "
                        f"i2rt.motor_config_tool.set_timeout --channel {arm.channel} --timeout --motor_id {motor_id}"
                    )
                expected = MotorType.get_gear_ratio(motor_type)
                if not math.isclose(float(gear), expected, rel_tol=0.01):
                    raise HardwareError(f"{self._where(arm, k)} reports gear ratio {gear}, a {motor_type} has "
                                        f"{expected}: wrong arm_type/gripper_type or wiring ({tool})")
        finally:
            raw.close()

    def _start_emulators(self) -> None:
        from molmoact2_ros.backends.hardware.emulated.dm_can import EmulatedDMBus

        home = self.embodiment.home
        for arm in self._arms:
            arm.channel = f"emulated_{arm.name}"
            start = self._to_motor(arm, home[arm.indices])
            motors = [(mid, mtype, float(p)) for (mid, mtype), p in zip(arm.motors, start, strict=True)]
            arm.emulator = EmulatedDMBus(arm.channel, motors, timeout_s=self._emulated_timeout_s).start()

    def _close_all(self) -> None:
        for arm in self._arms:
            if arm.iface is not None:
                with contextlib.suppress(*BUS_ERRORS):
                    arm.iface.close()
                arm.iface = None
            arm.mode, arm.enabled[:] = "off", False
            if arm.emulator is not None:
                arm.emulator.stop()
                arm.emulator = None

    # ---- internals: parameters ------------------------------------------------------------------------
    @staticmethod
    def _vector(name: str, value: Any, default: np.ndarray) -> np.ndarray:
        if value is None:
            return np.asarray(default, dtype=np.float64).copy()
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        if arr.shape != default.shape or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise HardwareError(f"i2rt backend: {name} must be {default.size} non-negative numbers (6 joints, "
                                f"then the gripper), not {value!r}")
        return arr

    @staticmethod
    def _gripper_limits(arm_name: str, limits: Any) -> tuple[float, float]:
        if isinstance(limits, dict):
            limits = limits.get(arm_name)
        if limits is None:
            raise HardwareError(
                f"i2rt backend: no gripper_limits for the {arm_name} gripper and i2rt has none for this gripper "
                "(it calibrates it): set hardware.params.i2rt.gripper_limits to [closed, open] motor radians "
                "(see docs/arms/yam_bimanual.md, 'Gripper')"
            )
        closed, opened = (float(v) for v in limits)
        if not (math.isfinite(closed) and math.isfinite(opened)) or abs(opened - closed) < 0.1:
            raise HardwareError(f"i2rt backend: gripper_limits for {arm_name} must be [closed, open] motor radians "
                                f"at least 0.1 rad apart, not {limits!r}")
        return closed, opened
