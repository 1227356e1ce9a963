"""SO-100 / SO-101 arms (Feetech STS3215 servos on one serial bus) through LeRobot's ``FeetechMotorsBus``.

The bus, the calibration and the motor setup are LeRobot 0.6's SO follower's: motor ids 1..6 named
shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper; joints in
``MotorNormMode.DEGREES`` ("use_degrees", LeRobot >= 0.5), the gripper in ``RANGE_0_100``; on connect the
servos get the follower's configuration (return delay 0, acceleration 254, position mode, P/I/D 16/0/32, the
gripper's torque and current capped at 50 %). The calibration is LeRobot's JSON file for the robot id.

Units. Our robot space is LeRobot's degree space in radians (joints) and LeRobot's 0..100 over 100 (gripper,
``unit: normalized``), with no sign or offset of our own: the embodiment's ``sign``/``offset``/``model_scale``
(``model = sign * model_scale * robot + offset``) then give exactly what MolmoAct2's SO checkpoint was
trained on, LeRobot >= 0.5 degrees with signs [1,-1,1,1,1,1] and offsets [0,90,90,0,0,0]
(config/embodiments/so101.yaml, MOLMOACT2.md). A test pins this from a raw servo position to model space.

Torque goes on with the first ``write`` after ``connect`` or ``relax`` (goal written first, then torque),
never in ``connect``. ``relax`` turns torque off on every servo with one broadcast (SYNC_WRITE, which a
servo in a fault state still obeys) and reads ``Torque_Enable`` back to confirm it. ``torque_off_on_stop``
(default True, as LeRobot's SO follower disables torque on disconnect): an SO arm resting on its own
stops with torque off is the safe state, and a servo left holding a pose overheats over time; set it
False only when the arm must hold a pose after the driver stops (it then stays energised, so watch it).

Every tick reads ``Present_Position`` (one SYNC_READ); every ``status_every_n_ticks`` ticks one more
SYNC_READ brings load, voltage, temperature and the ``Status`` fault bits (six contiguous bytes from
address 60). Temperatures are reported every tick (the last ones read) for the safety stack's
over-temperature check; a fault bit (voltage, encoder, over-current, overload, or overheat below our own
limit) makes every read raise a HardwareError naming the motor and the fault until a later poll finds it
clear, so the driver's error policy latches it. A servo that does not answer is named (motor, id, port).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import HardwareError

try:
    import scservo_sdk as scs
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode
    from lerobot.motors.encoding_utils import decode_sign_magnitude
    from lerobot.motors.feetech import FeetechMotorsBus, OperatingMode
    from lerobot.motors.feetech.tables import MODEL_NUMBER_TABLE, MODEL_PROTOCOL, MODEL_RESOLUTION
except ImportError as exc:  # the registry turns this into "install the so100 extra"
    raise ImportError(f"the feetech backend needs LeRobot with its Feetech extra ({exc})") from exc

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The SO follower's motors, in LeRobot's order (lerobot/robots/so_follower/so_follower.py).
SO_MOTOR_IDS: dict[str, int] = {"shoulder_pan": 1, "shoulder_lift": 2, "elbow_flex": 3, "wrist_flex": 4,
                                "wrist_roll": 5, "gripper": 6}
ROBOT_TYPES = ("so101_follower", "so100_follower")
DEFAULT_STATUS_EVERY_N_TICKS = 10
# The STS3215 unloads itself (the arm drops) at its Max_Temperature_Limit, 70 C from the factory: the
# driver faults 5 C before, in control; a shoulder working hard for an hour sits around 50-60 C.
DEFAULT_MAX_TEMPERATURE_C = 65.0
# LeRobot's SO follower retries a failed position read twice (num_read_retries); a garbled reply costs
# microseconds to retry, a silent servo ~50 ms per try, so the worst tick stays ~150 ms.
DEFAULT_READ_RETRIES = 2
# SOFollowerConfig's position loop gains.
DEFAULT_PID = (16, 0, 32)
# Status register / status packet error bits (scservo_sdk ERRBIT_*), with what to check.
STATUS_BITS: dict[int, str] = {
    0x01: "input voltage out of range (check the power supply: 5 V servos on a 12 V supply or a sagging one)",
    0x02: "magnetic encoder (angle sensor) error",
    0x04: "over-temperature (let it cool; check for a joint pressing against a stop)",
    0x08: "over-current (the joint is blocked or overloaded)",
    0x20: "overload (the joint is blocked or carries too much; the servo unloads itself)",
}
OVERHEAT_BIT = 0x04
# Load (2 bytes), voltage, temperature, (unused), status: one SYNC_READ from Present_Load.
STATUS_BLOCK = (60, 6)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def calibrate_command(robot_type: str, port: str, robot_id: str) -> str:
    return f"lerobot-calibrate --robot.type={robot_type} --robot.port={port} --robot.id={robot_id}"


def default_calibration_paths(robot_type: str, robot_id: str) -> list[Path]:
    """Where LeRobot keeps the calibration of ``robot_id``: LeRobot 0.6 files every SO follower under its
    class name (``so_follower``); LeRobot < 0.5 used the robot type (``so101_follower``)."""
    from lerobot.robots.so_follower import SOFollower
    from lerobot.utils import constants

    base = Path(constants.HF_LEROBOT_CALIBRATION) / constants.ROBOTS
    dirs = [base / SOFollower.name] + ([base / robot_type] if robot_type != SOFollower.name else [])
    return [d / f"{robot_id}.json" for d in dirs]


def load_calibration_file(path: Path, motors: dict[str, int], fix: str) -> dict[str, MotorCalibration]:
    """Read and check a LeRobot calibration JSON; every problem is a HardwareError naming the file and ``fix``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HardwareError(f"feetech backend: calibration file {path} is unreadable ({describe(exc)}); "
                            f"recreate it with: {fix}") from exc
    if not isinstance(data, dict):
        raise HardwareError(f"feetech backend: calibration file {path} is not a LeRobot calibration (a JSON "
                            f"object of motors); recreate it with: {fix}")
    missing = sorted(set(motors) - set(data))
    extra = sorted(set(data) - set(motors))
    if missing or extra:
        raise HardwareError(f"feetech backend: calibration file {path} does not match this arm's motors "
                            f"(missing {missing or 'none'}, unexpected {extra or 'none'}); recreate it with: {fix}")
    out: dict[str, MotorCalibration] = {}
    for name, motor_id in motors.items():
        entry = data[name]
        try:
            cal = MotorCalibration(**{k: int(entry[k]) for k in
                                      ("id", "drive_mode", "homing_offset", "range_min", "range_max")})
        except (KeyError, TypeError, ValueError) as exc:
            raise HardwareError(f"feetech backend: calibration file {path}: entry {name!r} is malformed "
                                f"({describe(exc)}); recreate it with: {fix}") from exc
        if cal.id != motor_id:
            raise HardwareError(f"feetech backend: calibration file {path} gives {name} id {cal.id}, this arm's "
                                f"{name} is id {motor_id}; recreate it with: {fix}")
        if not 0 <= cal.range_min < cal.range_max <= 4095:
            raise HardwareError(f"feetech backend: calibration file {path}: {name} range [{cal.range_min}, "
                                f"{cal.range_max}] is not a valid range of motion; recreate it with: {fix}")
        out[name] = cal
    return out


# ---- the emulated arm (emulate=True) ----------------------------------------------------------------------------
# What `lerobot-calibrate` could have written for a real SO-101 (offsets and ranges differ per servo, the ranges
# are not centred on 2047, wrist_roll spans the full turn as LeRobot records it).
EMULATED_CALIBRATION: dict[str, tuple[int, int, int]] = {  # name: (homing_offset, range_min, range_max)
    "shoulder_pan": (-1470, 758, 3292),
    "shoulder_lift": (1205, 612, 3389),
    "elbow_flex": (-1099, 850, 3110),
    "wrist_flex": (812, 942, 3200),
    "wrist_roll": (-412, 0, 4095),
    "gripper": (1123, 2037, 3490),
}


def lerobot_to_raw(value: float, cal: tuple[int, int, int], degrees: bool, resolution: int = 4096) -> float:
    """LeRobot's normalisation inverted (motors_bus._unnormalize, without its rounding): degrees about the
    range's middle, or 0..100 over the range, to raw Present_Position steps."""
    _, lo, hi = cal
    if degrees:
        return value * (resolution - 1) / 360.0 + (lo + hi) / 2.0
    return value / 100.0 * (hi - lo) + lo


# A servo answers within its return delay; the emulator is a Python thread that a busy host may not schedule for
# tens of milliseconds, past scservo_sdk's packet timeout (2 x 16 ms + the bytes' time). Emulated buses only.
EMULATED_TIMEOUT_SLACK_MS = 250.0


def _allow_emulator_scheduling(port_handler: Any) -> None:
    """Give this port handler's packet timeouts the emulator's slack (an instance attribute: the library and
    every real bus are unchanged)."""
    base = port_handler.setPacketTimeout

    def set_packet_timeout(packet_length: int) -> None:
        base(packet_length)
        port_handler.packet_timeout += EMULATED_TIMEOUT_SLACK_MS

    port_handler.setPacketTimeout = set_packet_timeout


def make_emulated_bus(embodiment: EmbodimentConfig, motors: dict[str, int], resolution: int = 4096) -> Any:
    """An emulated STS3215 bus with the SO follower's servos, calibrated, the arm at the embodiment's home."""
    from molmoact2_ros.backends.hardware.emulated.sts3215_bus import ServoCalibration, Sts3215Bus

    servos = {}
    for joint, home in zip(embodiment.joints, embodiment.home, strict=True):
        cal = EMULATED_CALIBRATION[joint.name]
        degrees = joint.unit == "rad"
        value = math.degrees(home) if degrees else home * 100.0
        servos[motors[joint.name]] = (ServoCalibration(*cal), lerobot_to_raw(value, cal, degrees, resolution))
    return Sts3215Bus(servos)


def write_calibration_json(path: Path, motors: dict[str, int]) -> Path:
    """The LeRobot calibration file of the emulated arm (``EMULATED_CALIBRATION``, as lerobot-calibrate
    writes it): what the emulated servos hold unless a test changes them."""
    data = {name: {"id": motor_id, "drive_mode": 0, "homing_offset": EMULATED_CALIBRATION[name][0],
                   "range_min": EMULATED_CALIBRATION[name][1], "range_max": EMULATED_CALIBRATION[name][2]}
            for name, motor_id in motors.items()}
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    return path


class FeetechArm(HardwareInterface):
    """An SO-100 / SO-101 follower arm through LeRobot's Feetech bus (see the module docstring)."""

    name = "feetech"

    def __init__(self, embodiment: EmbodimentConfig, *, port: str = "/dev/ttyACM0", robot_id: str | None = None,
                 robot_type: str | None = None, calibration_file: str | None = None, motor_model: str = "sts3215",
                 status_every_n_ticks: int = DEFAULT_STATUS_EVERY_N_TICKS, torque_off_on_stop: bool = True,
                 max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C, read_retries: int = DEFAULT_READ_RETRIES,
                 p_coefficient: int = DEFAULT_PID[0], i_coefficient: int = DEFAULT_PID[1],
                 d_coefficient: int = DEFAULT_PID[2], emulate: bool = False):
        super().__init__(embodiment)
        where = embodiment.source_path or embodiment.name
        self.port = str(port)
        self.robot_type = robot_type or ("so100_follower" if embodiment.name.startswith("so100") else "so101_follower")
        if self.robot_type not in ROBOT_TYPES:
            raise HardwareError(f"{where}: hardware.params.feetech.robot_type {self.robot_type!r} is not one of "
                                f"{', '.join(ROBOT_TYPES)}")
        self.robot_id = str(robot_id or self.robot_type)
        if motor_model not in MODEL_NUMBER_TABLE or MODEL_PROTOCOL.get(motor_model) != 0:
            raise HardwareError(f"{where}: hardware.params.feetech.motor_model {motor_model!r} is not a Feetech "
                                "STS/SMS model LeRobot knows (sts3215 for SO-100/101)")
        self.motor_model = motor_model
        self._resolution = MODEL_RESOLUTION[motor_model]
        if int(status_every_n_ticks) < 1:
            raise HardwareError(f"{where}: hardware.params.feetech.status_every_n_ticks must be >= 1")
        self.status_every_n_ticks = int(status_every_n_ticks)
        self.torque_off_on_stop = bool(torque_off_on_stop)
        if not (0 < float(max_temperature_c) <= 100):
            raise HardwareError(f"{where}: hardware.params.feetech.max_temperature_c {max_temperature_c} is not a "
                                "servo temperature in C (the STS3215 itself cuts out at 70)")
        self._max_temp = float(max_temperature_c)
        self.read_retries = max(0, int(read_retries))
        self.pid = (int(p_coefficient), int(i_coefficient), int(d_coefficient))
        self.calibration_file = Path(calibration_file).expanduser() if calibration_file else None
        # Joint -> motor: every embodiment joint must be one of the SO follower's motors.
        self._motors: dict[str, int] = {}
        self._degrees: list[bool] = []
        for joint in embodiment.joints:
            if joint.name not in SO_MOTOR_IDS:
                raise HardwareError(f"{where}: joint {joint.name!r} is not an SO follower motor "
                                    f"({', '.join(SO_MOTOR_IDS)}); the feetech backend drives SO-100/101 arms")
            if joint.unit == "rad" and joint.type == "revolute":
                self._degrees.append(True)
            elif joint.unit == "normalized":
                self._degrees.append(False)
            else:
                raise HardwareError(f"{where}: joint {joint.name} has unit {joint.unit!r}; the feetech backend "
                                    "drives revolute joints in rad and the gripper as unit: normalized (0..1)")
            self._motors[joint.name] = SO_MOTOR_IDS[joint.name]
        self._bus: FeetechMotorsBus | None = None
        self._calibration: dict[str, MotorCalibration] = {}
        self._torque_on = False  # set by the first write after connect / relax
        self._ticks = 0
        self._temps: np.ndarray | None = None
        self._status_fault: str | None = None
        self.status: dict[str, dict[str, float]] = {}  # per motor: load_percent, voltage_v, temperature_c, bits
        self.emulate = bool(emulate)
        self.emulator: Any = None
        self._tmpdir: str | None = None
        if self.emulate:
            if motor_model != "sts3215":
                raise HardwareError(f"{where}: the emulated Feetech bus emulates sts3215 servos, not {motor_model}")
            self.emulator = make_emulated_bus(embodiment, self._motors, self._resolution)

    # ---- capabilities -----------------------------------------------------------------------------------
    @property
    def supports_relax(self) -> bool:
        return True

    @property
    def relax_on_stop(self) -> bool:
        return self.torque_off_on_stop

    @property
    def max_temperature_c(self) -> float | None:
        return self._max_temp

    @property
    def torque_enabled(self) -> bool:
        """Whether this backend has turned torque on since connect / the last relax."""
        return self._torque_on

    # ---- connect ------------------------------------------------------------------------------------------
    def _fix(self) -> str:
        return calibrate_command(self.robot_type, self.port, self.robot_id)

    def _resolve_calibration(self) -> Path:
        if self.calibration_file is not None:
            if not self.calibration_file.is_file():
                raise HardwareError(f"feetech backend: calibration file {self.calibration_file} (calibration_file) "
                                    f"does not exist; calibrate the arm with: {self._fix()} and point "
                                    "calibration_file at the file it writes (or drop calibration_file to use "
                                    "LeRobot's default location)")
            return self.calibration_file
        candidates = default_calibration_paths(self.robot_type, self.robot_id)
        for path in candidates:
            if path.is_file():
                return path
        raise HardwareError(f"feetech backend: no calibration for robot id {self.robot_id!r}: looked for "
                            f"{' and '.join(str(p) for p in candidates)}; calibrate the arm with: {self._fix()} "
                            "(or set hardware.params.feetech.calibration_file)")

    def connect(self) -> None:
        if self._connected:
            return
        if self.emulator is not None:
            self.port = self.emulator.start()
            if self.calibration_file is None:
                self._tmpdir = tempfile.mkdtemp(prefix="molmoact2_feetech_cal_")
                self.calibration_file = write_calibration_json(Path(self._tmpdir) / f"{self.robot_id}.json",
                                                               self._motors)
        try:
            self._connect()
        except BaseException:
            self._close_bus()
            self._stop_emulator()
            raise

    def _connect(self) -> None:
        path = self._resolve_calibration()
        self._calibration = load_calibration_file(path, self._motors, self._fix())
        norm = {name: MotorNormMode.DEGREES if deg else MotorNormMode.RANGE_0_100
                for name, deg in zip(self._motors, self._degrees, strict=True)}
        motors = {name: Motor(motor_id, self.motor_model, norm[name]) for name, motor_id in self._motors.items()}
        try:
            bus = FeetechMotorsBus(port=self.port, motors=motors, calibration=self._calibration)
        except Exception as exc:
            raise HardwareError(f"feetech backend: cannot set up the bus on {self.port}: {describe(exc)}") from exc
        self._bus = bus
        if self.emulator is not None:
            _allow_emulator_scheduling(bus.port_handler)
        try:
            bus.connect()
        except Exception as exc:
            raise HardwareError(
                f"feetech backend: cannot talk to the servos on {self.port} ({describe(exc)}): check the port "
                "(`lerobot-find-port`), that you may open it (dialout group), the USB cable, and the servo power "
                "supply; every servo must answer with its id (1..6, `lerobot-setup-motors`)") from exc
        self._check_calibration(path)
        self._configure()
        self._torque_on = False
        self._ticks = 0
        self._temps = None
        self._status_fault = None
        self._connected = True
        logger.info("feetech: %s connected on %s (calibration %s)", self.robot_id, self.port, path)

    def _check_calibration(self, path: Path) -> None:
        in_motors = self._lib("reading the calibration in the servos", self._require_bus().read_calibration)
        diffs = []
        for name, cal in self._calibration.items():
            have = in_motors[name]
            for field in ("homing_offset", "range_min", "range_max"):
                if getattr(have, field) != getattr(cal, field):
                    diffs.append(f"{name} {field} {getattr(have, field)} in the servo vs {getattr(cal, field)} "
                                 "in the file")
        if diffs:
            raise HardwareError(
                f"feetech backend: the calibration in the servos on {self.port} differs from {path}: "
                f"{'; '.join(diffs[:4])}{' ...' if len(diffs) > 4 else ''}. Another arm, a servo swapped, or a "
                f"stale file: recalibrate with {self._fix()} (it can also write the file's calibration back to "
                "the servos)")

    def _configure(self) -> None:
        """The SO follower's motor setup (LeRobot's configure_motors + configure), written only where a servo
        differs, so reconnecting to an arm that holds a pose does not drop it."""
        bus = self._require_bus()
        p, i, d = self.pid
        common = {"Return_Delay_Time": 0, "Maximum_Acceleration": 254, "Acceleration": 254,
                  "Operating_Mode": OperatingMode.POSITION.value, "P_Coefficient": p, "I_Coefficient": i,
                  "D_Coefficient": d}
        gripper = {"Max_Torque_Limit": 500, "Protection_Current": 250, "Overload_Torque": 25}
        wanted: dict[str, dict[str, int]] = {}
        for name in self._motors:
            wanted[name] = dict(common, **(gripper if name == "gripper" else {}))
        current: dict[str, dict[str, int]] = {name: {} for name in self._motors}
        for reg in [*common, "Phase", *gripper]:
            names = [n for n in self._motors if reg in wanted[n] or reg == "Phase"]
            values = self._lib(f"reading {reg}", bus.sync_read, reg, names, normalize=False,
                               num_retry=self.read_retries)
            for n, v in values.items():
                current[n][reg] = int(v)
        for name in self._motors:
            if self.motor_model == "sts3215" and current[name]["Phase"] & 0x10:
                # Angle feedback mode 0: positions stay in [0, 4095] (LeRobot's configure_motors does the same).
                wanted[name]["Phase"] = current[name]["Phase"] & ~0x10
        writes = [(n, reg, v) for n, regs in wanted.items() for reg, v in regs.items() if current[n].get(reg) != v]
        if not writes:
            return
        torque = self._lib("reading Torque_Enable", bus.sync_read, "Torque_Enable", normalize=False,
                           num_retry=self.read_retries)
        if any(torque.values()):
            logger.warning("feetech: configuring the servos on %s: torque goes off for a moment (support the arm)",
                           self.port)
        self._lib("turning torque off to configure the servos", bus.disable_torque)
        for name, reg, value in writes:
            self._lib(f"writing {reg} on {name}", bus.write, reg, name, value, normalize=False, num_retry=2)

    # ---- read / write ---------------------------------------------------------------------------------------
    def read(self) -> HardwareReading:
        self._require_connected()
        bus = self._require_bus()
        values = self._sync_read("Present_Position")
        q = np.array([math.radians(values[n]) if deg else values[n] / 100.0
                      for n, deg in zip(self._motors, self._degrees, strict=True)], dtype=np.float64)
        if self._ticks % self.status_every_n_ticks == 0:
            self._poll_status(bus)
        self._ticks += 1
        if self._status_fault is not None:
            raise HardwareError(self._status_fault)
        temps = None if self._temps is None else self._temps.copy()
        return HardwareReading(positions=q, temperatures_c=temps)

    def write(self, positions: np.ndarray) -> np.ndarray:
        self._require_connected()
        bus = self._require_bus()
        cmd = self._check_command(positions)
        goals: dict[str, float] = {}
        sent = cmd.copy()
        for j, (name, deg) in enumerate(zip(self._motors, self._degrees, strict=True)):
            cal = self._calibration[name]
            if deg:
                # The servo keeps its goal inside its position limits (the calibrated range): say so here.
                mid = (cal.range_min + cal.range_max) / 2
                lo = (cal.range_min - mid) * 360.0 / (self._resolution - 1)
                hi = (cal.range_max - mid) * 360.0 / (self._resolution - 1)
                value = min(max(math.degrees(cmd[j]), lo), hi)
                sent[j] = math.radians(value) if value != math.degrees(cmd[j]) else cmd[j]
            else:
                value = min(max(cmd[j] * 100.0, 0.0), 100.0)  # LeRobot's own RANGE_0_100 bound
                sent[j] = value / 100.0 if value != cmd[j] * 100.0 else cmd[j]
            goals[name] = value
        self._flush_input()
        self._lib("writing Goal_Position", bus.sync_write, "Goal_Position", goals)
        if not self._torque_on:
            # Goal first (above), then torque: a servo enabled with a stale goal would jump to it.
            self._lib("turning torque on", bus.enable_torque, num_retry=2)
            self._torque_on = True
        return sent

    def relax(self) -> None:
        """Torque off on every servo (one broadcast that even a servo in a fault state obeys), confirmed."""
        self._require_connected()
        bus = self._require_bus()
        self._flush_input()
        self._lib("turning torque off", bus.sync_write, "Torque_Enable", 0, normalize=False)
        self._lib("unlocking the servos", bus.sync_write, "Lock", 0, normalize=False)
        self._torque_on = False
        torque = self._sync_read("Torque_Enable", normalize=False, what="confirming torque off")
        still = [n for n, v in torque.items() if v]
        if still:
            raise HardwareError(f"feetech backend on {self.port}: torque is still on in {', '.join(still)} after "
                                "torque off; cut the servo power if the arm must go limp")

    def recover(self) -> None:
        """Before a reset: the servos' fault bits must be clear again (re-read now)."""
        if not self._connected:
            return
        self._flush_input()
        self._poll_status(self._require_bus())
        if self._status_fault is not None:
            raise HardwareError(self._status_fault)

    def disconnect(self) -> None:
        errors: list[str] = []
        if self._connected and self._bus is not None and self.torque_off_on_stop:
            try:
                self.relax()
            except HardwareError as exc:
                errors.append(str(exc))
        self._connected = False
        self._torque_on = False
        self._close_bus()
        self._stop_emulator()
        if errors:
            raise HardwareError(f"feetech backend: disconnected from {self.port}, but torque off failed: {errors[0]}")

    # ---- internals -------------------------------------------------------------------------------------------
    def _require_bus(self) -> FeetechMotorsBus:
        if self._bus is None:
            raise HardwareError("feetech backend: not connected (call connect() first)")
        return self._bus

    def _close_bus(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                if bus.is_connected:
                    bus.disconnect(disable_torque=False)  # torque handled above, per torque_off_on_stop
            except Exception as exc:
                logger.warning("feetech: closing %s failed: %s", self.port, describe(exc))

    def _stop_emulator(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.calibration_file = None

    def _flush_input(self) -> None:
        """Drop stale bytes (a reply that came after a timeout) so they are not taken for the next answer."""
        ser = getattr(self._require_bus().port_handler, "ser", None)
        if ser is not None:
            try:
                ser.reset_input_buffer()
            except Exception as exc:
                raise HardwareError(f"feetech backend: serial port {self.port} failed ({describe(exc)}): "
                                    "USB cable unplugged?") from exc

    def _lib(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call into LeRobot / the SDK; any of their exceptions becomes a HardwareError naming the port."""
        try:
            return fn(*args, **kwargs)
        except HardwareError:
            raise
        except Exception as exc:
            raise HardwareError(f"feetech backend on {self.port}: {what} failed ({describe(exc)}); check the "
                                "USB cable and the servo power supply") from exc

    def _silent_motor(self, reader: Any) -> str:
        """After a failed SYNC_READ: the first servo whose reply is missing (the SDK stops at it)."""
        for motor_id, data in getattr(reader, "data_dict", {}).items():
            if not data:
                name = next((n for n, i in self._motors.items() if i == motor_id), "?")
                return f"servo {name!r} (id {motor_id})"
        return "a servo"

    def _sync_read(self, register: str, *, normalize: bool = True, what: str | None = None) -> dict[str, float]:
        """LeRobot's sync_read, retried here rather than inside LeRobot so that every try starts on an empty
        input buffer: the rest of a failed try's replies must not be taken for the next try's answers."""
        bus = self._require_bus()
        for attempt in range(self.read_retries + 1):
            self._flush_input()
            try:
                return bus.sync_read(register, normalize=normalize, num_retry=0)
            except Exception as exc:
                if attempt == self.read_retries:
                    raise self._read_error(what or f"reading {register}", exc, bus.sync_reader) from exc
        raise AssertionError("unreachable")

    def _read_error(self, what: str, exc: BaseException, reader: Any) -> HardwareError:
        text = str(exc)
        who = self._silent_motor(reader)
        tries = self.read_retries + 1
        if "no status packet" in text.lower():
            return HardwareError(f"feetech backend on {self.port}: {who} did not answer ({what}, {tries} tries): "
                                 "check its 3-pin cable and the daisy chain up to it, and the servo power supply")
        if "incorrect status packet" in text.lower():
            return HardwareError(f"feetech backend on {self.port}: garbled reply from {who} ({what}, {tries} "
                                 "tries): check the cables and connectors for noise, and that nothing else uses "
                                 "the port")
        return HardwareError(f"feetech backend on {self.port}: {what} failed ({describe(exc)}): check the USB cable "
                             "and the servo power supply")

    def _poll_status(self, bus: FeetechMotorsBus) -> None:
        """Load, voltage, temperature and fault bits of every servo in one SYNC_READ (six bytes from 60)."""
        addr, length = STATUS_BLOCK
        reader = scs.GroupSyncRead(bus.port_handler, bus.packet_handler, addr, length)
        for motor_id in self._motors.values():
            reader.addParam(motor_id)
        comm = scs.COMM_RX_FAIL
        for _ in range(self.read_retries + 1):
            self._flush_input()
            try:
                comm = reader.txRxPacket()
            except Exception as exc:
                raise self._read_error("reading servo status", exc, reader) from exc
            if comm == scs.COMM_SUCCESS and not all(len(reader.data_dict[i]) == length for i in self._motors.values()):
                comm = scs.COMM_RX_CORRUPT  # a reply of the wrong size: a stale answer to another request
            if comm == scs.COMM_SUCCESS:
                break
        if comm != scs.COMM_SUCCESS:
            raise self._read_error("reading servo status", RuntimeError(bus.packet_handler.getTxRxResult(comm)),
                                   reader)
        temps = []
        faults = []
        for name, motor_id in self._motors.items():
            load = decode_sign_magnitude(reader.getData(motor_id, 60, 2), 10) / 10.0
            volts = reader.getData(motor_id, 62, 1) / 10.0
            temp = float(reader.getData(motor_id, 63, 1))
            bits = int(reader.getData(motor_id, 65, 1))
            temps.append(temp)
            self.status[name] = {"load_percent": load, "voltage_v": volts, "temperature_c": temp, "bits": bits}
            for bit, meaning in STATUS_BITS.items():
                if not bits & bit:
                    continue
                if bit == OVERHEAT_BIT and temp >= self._max_temp:
                    continue  # reported as a temperature: the safety stack latches over_temperature
                faults.append(f"{name} (id {motor_id}): {meaning} [Status 0x{bits:02x}]")
        self._temps = np.array(temps, dtype=np.float64)
        self._status_fault = (f"feetech backend on {self.port}: servo fault: {'; '.join(faults)}" if faults else None)
