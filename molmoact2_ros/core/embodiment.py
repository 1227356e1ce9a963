"""Embodiment configs: one typed schema, validated at load, for every arm we drive.

An embodiment YAML holds everything that changes between arms: joint order (the model's order),
limits, signs/offsets between the robot's joint space and the model's action space, control rate,
chunking, cameras and their order for the model, the model's norm tag, safety settings and the
hardware backend. A bad file fails at load with the file, the field, the value and what is allowed.

Joint spaces. Chunks, ``/joint_states`` and everything in the driver use the *robot* space: radians
for revolute joints, the gripper's own unit (metres of finger width, or 0..1) for grippers. The model
sees the *model* space of its training data (LeRobot degrees for SO-100/101, DROID's closed=1 gripper,
...). Per joint: ``model = sign * model_scale * robot + offset``.

Every number is finite and inside a physically meaningful range for its unit (``UNIT_RANGES``): a
``.inf`` velocity limit, a ``1e308`` joint limit or a ``.nan`` offset would silently disable the safety
stack, so they fail at load like any other bad value. Distances that the safety stack compares per joint
(startup, chunk entry, tracking error) are given per unit (``_rad``, ``_m``, ``_normalized``) with an
optional per-joint override, because one scalar cannot serve radians and metres alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from molmoact2_ros.core.errors import ConfigError

CameraSource = Literal["synthetic", "opencv", "realsense", "sim", "bag"]
HardwareBackend = Literal["mock", "mujoco", "ros_topic", "feetech", "i2rt", "franka"]
JointUnit = Literal["rad", "m", "normalized"]
UNITS: tuple[str, ...] = get_args(JointUnit)

# A config file is a page of YAML: anything bigger is not one (and would only cost memory to parse).
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class UnitRange:
    """The largest magnitudes that still describe a real joint in one unit."""

    position: float  # |joint limit|
    velocity: float  # units / s
    acceleration: float  # units / s^2
    distance: float  # a safety distance (startup, entry, tracking error)


# rad: 8 turns either way, ~480 rpm, 1000 rad/s^2 (beyond any arm joint); m: a 10 m rail at 10 m/s;
# normalized: a 0..1 quantity (grippers) with room for scaled variants.
UNIT_RANGES: dict[str, UnitRange] = {
    "rad": UnitRange(position=50.0, velocity=50.0, acceleration=1000.0, distance=math.pi),
    "m": UnitRange(position=10.0, velocity=10.0, acceleration=100.0, distance=1.0),
    "normalized": UnitRange(position=10.0, velocity=50.0, acceleration=1000.0, distance=10.0),
}
# Without an explicit max_acceleration_per_s2 a joint may reach its velocity limit in this long.
DEFAULT_TIME_TO_MAX_VELOCITY_S = 0.2
# Field names that were replaced by per-unit ones: a file that still uses them gets told the new names.
RENAMED_SAFETY_FIELDS = {
    "startup_max_distance": "startup_max_distance_rad / _m / _normalized (or per joint: startup_max_distance)",
    "max_tracking_error": "max_tracking_error_rad / _m / _normalized",
}


class _Strict(BaseModel):
    # allow_inf_nan=False: .inf / .nan are rejected for every float field, nested ones included.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class JointConfig(_Strict):
    """One actuated joint, in the model's order."""

    name: str = Field(min_length=1, description="joint name as it appears in /joint_states")
    type: Literal["revolute", "prismatic", "gripper"] = "revolute"
    unit: JointUnit = Field(
        "rad", description="robot-space unit: rad (revolute), m (finger width), normalized (0..1)"
    )
    position_limits: tuple[float, float] = Field(description="[lower, upper] in the robot unit")
    max_velocity_per_s: float = Field(gt=0, description="robot units per second the driver allows")
    max_acceleration_per_s2: float | None = Field(
        None, gt=0,
        description="robot units per second squared the driver allows on every command (stops included); "
                    f"default: max_velocity_per_s / {DEFAULT_TIME_TO_MAX_VELOCITY_S} s",
    )
    startup_max_distance: float | None = Field(
        None, gt=0, description="per-joint override of safety.startup_max_distance_<unit> (robot units)")
    entry_max_distance: float | None = Field(
        None, gt=0, description="per-joint override of safety.entry_max_distance_<unit> (robot units)")
    sign: Literal[-1, 1] = 1
    model_scale: float = Field(1.0, description="model units per robot unit, e.g. 57.29578 for deg/rad")
    offset: float = Field(0.0, ge=-1e6, le=1e6, description="model-space offset (model units)")
    home: float | None = Field(None, description="rest position in robot units; default mid-range")

    @field_validator("position_limits")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (np.isfinite(v[0]) and np.isfinite(v[1])) or v[0] >= v[1]:
            raise ValueError("must be two finite numbers [lower, upper] with lower < upper")
        return v

    @field_validator("model_scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0 or not np.isfinite(v) or abs(v) > 1e6 or abs(v) < 1e-6:
            raise ValueError("must be a finite, non-zero number of model units per robot unit (1e-6..1e6)")
        return v

    @model_validator(mode="after")
    def _physical(self) -> JointConfig:
        rng = UNIT_RANGES[self.unit]
        lo, hi = self.position_limits
        if max(abs(lo), abs(hi)) > rng.position:
            raise ValueError(f"position_limits {[lo, hi]} reach beyond ±{rng.position:g} {self.unit}: not a real "
                             "joint's range")
        checks = (("max_velocity_per_s", self.max_velocity_per_s, rng.velocity),
                  ("max_acceleration_per_s2", self.max_acceleration_per_s2, rng.acceleration),
                  ("startup_max_distance", self.startup_max_distance, rng.distance),
                  ("entry_max_distance", self.entry_max_distance, rng.distance))
        for field_name, value, limit in checks:
            if value is not None and value > limit:
                raise ValueError(f"{field_name} {value:g} is above {limit:g} {self.unit}-based units: not physical "
                                 "for this unit (a typo, or a limit meant to disable safety?)")
        if self.home is not None and not (lo <= self.home <= hi):
            raise ValueError(f"home {self.home} is outside position_limits {[lo, hi]}")
        return self

    @property
    def max_acceleration(self) -> float:
        """The acceleration limit in effect (robot units / s^2)."""
        if self.max_acceleration_per_s2 is not None:
            return self.max_acceleration_per_s2
        return self.max_velocity_per_s / DEFAULT_TIME_TO_MAX_VELOCITY_S

    @property
    def home_position(self) -> float:
        return self.home if self.home is not None else 0.5 * (self.position_limits[0] + self.position_limits[1])


class CameraConfig(_Strict):
    """One camera, in the model's camera order."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    source: CameraSource = "synthetic"
    device: str = Field("", description="source-specific: serial number, /dev/videoN, URL, file, bag")
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    fps: float = Field(gt=0, le=1000)
    max_age_s: float = Field(0.5, gt=0, description="frames older than this are stale for the policy")


class ChunkConfig(_Strict):
    action_horizon: int = Field(gt=0, le=1000, description="steps the model predicts per chunk")
    n_action_steps: int = Field(gt=0, le=1000, description="steps of each chunk the driver may execute")
    blend_ticks: int = Field(4, ge=0, le=1000, description="ticks over which a new chunk is blended in")
    max_steps: int | None = Field(
        None, gt=0, le=100_000,
        description="longest chunk (steps) the driver accepts; longer ones are rejected before their points are "
                    "decoded, so a huge message cannot hold up the control loop. Default: 4 × action_horizon",
    )

    @model_validator(mode="after")
    def _steps_le_horizon(self) -> ChunkConfig:
        if self.n_action_steps > self.action_horizon:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) cannot exceed action_horizon ({self.action_horizon})"
            )
        if self.max_steps is not None and self.max_steps < self.action_horizon:
            raise ValueError(f"max_steps ({self.max_steps}) is below action_horizon ({self.action_horizon}): "
                             "the policy's own chunks would be rejected")
        return self

    @property
    def max_steps_accepted(self) -> int:
        return self.max_steps if self.max_steps is not None else 4 * self.action_horizon


class SafetyConfig(_Strict):
    watchdog_hold_timeout_s: float = Field(0.5, gt=0, le=10, description="no valid chunk for this long: hold")
    watchdog_stop_timeout_s: float = Field(2.0, gt=0, le=60, description="no valid chunk for this long: stop")
    chunk_max_age_s: float = Field(1.5, gt=0, le=10, description="reject chunks whose stamp is older than this")
    future_stamp_tolerance_s: float = Field(0.1, ge=0, le=5,
                                            description="accept stamps at most this far ahead")
    max_step_jump_factor: float = Field(
        3.0, gt=0, le=20,
        description="reject a chunk whose step-to-step change exceeds factor × max velocity / rate",
    )
    chunk_limit_margin_fraction: float = Field(
        0.1, ge=0, le=1,
        description="reject (not clamp) a chunk with a position beyond a joint limit by more than this fraction "
                    "of the joint's range: such a chunk is garbage, not a policy asking for the limit",
    )
    startup_max_distance_rad: float = Field(
        0.6, gt=0, le=math.pi, description="refuse to start if the first target is farther than this from the "
                                           "measured pose (revolute joints, rad)")
    startup_max_distance_m: float = Field(0.05, gt=0, le=1, description="the same for joints in metres")
    startup_max_distance_normalized: float = Field(0.6, gt=0, le=10,
                                                   description="the same for normalized joints (0..1 grippers)")
    startup_ramp_speed_fraction: float = Field(
        0.25, gt=0, le=1, description="the startup ramp from the measured pose moves at this fraction of each "
                                      "joint's max_velocity_per_s")
    entry_max_distance_rad: float = Field(
        0.3, gt=0, le=math.pi,
        description="reject a new chunk whose step for now is farther than this from the current command (rad)",
    )
    entry_max_distance_m: float = Field(0.05, gt=0, le=1, description="the same for joints in metres")
    entry_max_distance_normalized: float = Field(
        1.0, gt=0, le=10, description="the same for normalized joints (a gripper may open or close fully)")
    max_tracking_error_rad: float = Field(0.5, gt=0, le=math.pi,
                                          description="measured vs commanded, revolute joints (rad)")
    max_tracking_error_m: float = Field(0.05, gt=0, le=1, description="measured vs commanded, joints in metres")
    max_tracking_error_normalized: float = Field(0.5, gt=0, le=10,
                                                 description="measured vs commanded, normalized joints")
    tracking_error_grace_s: float = Field(
        0.25, ge=0, le=10, description="tracking error above max_tracking_error_<unit> for this long latches a fault"
    )
    max_temperature_c: float | None = Field(
        None, gt=0, le=200,
        description="fault above this reported motor temperature; the lower of this and the backend's own "
                    "limit (hardware.params.<backend>.max_temperature_c) applies; null: the backend's",
    )
    fault_action: Literal["hold", "relax"] = Field(
        "hold",
        description="on a latched fault: hold = brake to a stop and keep commanding that pose (motor heartbeat "
                    "kept); relax = stop commanding and let the backend go compliant where it can "
                    "(backends that cannot relax hold)",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in RENAMED_SAFETY_FIELDS.items():
                if old in data:
                    raise ValueError(f"{old} was replaced by {new}: distances are per unit now")
        return data

    @model_validator(mode="after")
    def _stop_after_hold(self) -> SafetyConfig:
        if self.watchdog_stop_timeout_s < self.watchdog_hold_timeout_s:
            raise ValueError("watchdog_stop_timeout_s must be >= watchdog_hold_timeout_s")
        return self

    def for_unit(self, prefix: str, unit: str) -> float:
        """``<prefix>_<unit>``, e.g. ``for_unit("startup_max_distance", "m")``."""
        return float(getattr(self, f"{prefix}_{unit}"))


class HardwareConfig(_Strict):
    backend: HardwareBackend = "mock"
    shadow_mode_default: bool = Field(
        True, description="start in shadow mode (compute, never write); forced off only for mock/mujoco"
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per backend name: that backend's parameters"
    )

    @field_validator("params")
    @classmethod
    def _finite_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        bad = _non_finite_paths(v)
        if bad:
            raise ValueError(f"non-finite number at {', '.join(bad[:3])}: every backend parameter must be finite")
        return v

    def params_for(self, backend: str | None = None) -> dict[str, Any]:
        return dict(self.params.get(backend or self.backend, {}) or {})


def _non_finite_paths(value: Any, path: str = "params") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite_paths(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _non_finite_paths(v, f"{path}[{i}]")]
    return []


class PolicyConfig(_Strict):
    norm_tag: str = Field(min_length=1)
    default_checkpoint: str = Field(min_length=1, description="Hugging Face id or local directory")
    setup_type: str = ""
    control_mode: str = "absolute joint position"


class EmbodimentConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    description: str = ""
    control_rate_hz: float = Field(gt=0, le=2000, description="chunk step rate: step k is at stamp + k/rate")
    driver_rate_hz: float | None = Field(
        None, gt=0, le=2000, description="driver tick rate (interpolates between steps); default control_rate_hz"
    )
    policy: PolicyConfig
    chunk: ChunkConfig
    joints: tuple[JointConfig, ...] = Field(min_length=1)
    cameras: tuple[CameraConfig, ...] = Field(min_length=1)
    arms: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="optional grouping of joint names per arm (bimanual)"
    )
    safety: SafetyConfig = SafetyConfig()
    hardware: HardwareConfig = HardwareConfig()
    source_path: str = Field("", exclude=True, description="filled in by the loader")

    @model_validator(mode="after")
    def _consistent(self) -> EmbodimentConfig:
        names = [j.name for j in self.joints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"joint names must be unique; repeated: {dupes}")
        cams = [c.name for c in self.cameras]
        if len(set(cams)) != len(cams):
            raise ValueError(f"camera names must be unique; got {cams}")
        if self.hardware.params:
            unknown_backends = sorted(set(self.hardware.params) - set(get_args(HardwareBackend)))
            if unknown_backends:
                raise ValueError(f"hardware.params names unknown backends {unknown_backends}")
        for arm, members in self.arms.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"arms.{arm} names joints that are not in joints: {unknown}")
        # A new chunk's step for now is compared with the current command, which moves up to one tick of
        # the velocity limit per tick: an entry distance below two ticks of it rejects every splice in motion.
        entry = self.entry_max_distance
        one_tick = self.max_velocity / self.tick_rate_hz
        too_small = np.flatnonzero(entry < 2.0 * one_tick)
        if too_small.size:
            j = int(too_small[0])
            raise ValueError(
                f"entry_max_distance for {names[j]} ({entry[j]:g}) is below two ticks at its velocity limit "
                f"({2.0 * one_tick[j]:g}): every chunk would be rejected while the arm moves")
        return self

    # ---- derived views used by every layer -------------------------------------------------
    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.position_limits[0] for j in self.joints], dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.position_limits[1] for j in self.joints], dtype=np.float64)

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([j.max_velocity_per_s for j in self.joints], dtype=np.float64)

    @property
    def max_acceleration(self) -> np.ndarray:
        return np.array([j.max_acceleration for j in self.joints], dtype=np.float64)

    @property
    def home(self) -> np.ndarray:
        return np.array([j.home_position for j in self.joints], dtype=np.float64)

    def per_joint_distance(self, prefix: str) -> np.ndarray:
        """A per-unit safety distance (``startup_max_distance``, ``entry_max_distance``,
        ``max_tracking_error``) for every joint: the joint's own override where it has one."""
        out = []
        for j in self.joints:
            own = getattr(j, prefix, None)
            out.append(float(own) if own is not None else self.safety.for_unit(prefix, j.unit))
        return np.array(out, dtype=np.float64)

    @property
    def startup_max_distance(self) -> np.ndarray:
        return self.per_joint_distance("startup_max_distance")

    @property
    def entry_max_distance(self) -> np.ndarray:
        return self.per_joint_distance("entry_max_distance")

    @property
    def max_tracking_error(self) -> np.ndarray:
        return self.per_joint_distance("max_tracking_error")

    @property
    def tick_rate_hz(self) -> float:
        return self.driver_rate_hz or self.control_rate_hz

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        gain = np.array([j.sign * j.model_scale for j in self.joints], dtype=np.float64)
        offset = np.array([j.offset for j in self.joints], dtype=np.float64)
        return gain, offset

    def robot_to_model(self, q: np.ndarray) -> np.ndarray:
        """Robot-space positions (..., dof) to the model's state/action space."""
        gain, offset = self._affine()
        return np.asarray(q, dtype=np.float64) * gain + offset

    def model_to_robot(self, a: np.ndarray) -> np.ndarray:
        """Model-space actions (..., dof) to robot-space positions."""
        gain, offset = self._affine()
        return (np.asarray(a, dtype=np.float64) - offset) / gain

    def model_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint limits expressed in model space (lower, upper), sorted per joint."""
        a, b = self.robot_to_model(self.lower), self.robot_to_model(self.upper)
        return np.minimum(a, b), np.maximum(a, b)


# ---- loading ------------------------------------------------------------------------------

def embodiment_dirs() -> list[Path]:
    """Where built-in embodiment files live: the source tree, then the installed share copies (wheel, pip
    install, colcon install: ``molmoact2_ros.resources``)."""
    from molmoact2_ros.resources import data_dirs

    return data_dirs("config", "embodiments")


def list_embodiments() -> list[str]:
    names: set[str] = set()
    for d in embodiment_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_embodiment_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory; pass an embodiment YAML file (or a built-in name)")
        if not p.is_file():
            raise ConfigError(f"{p}: embodiment file not found")
        return p
    for d in embodiment_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    raise ConfigError(
        f"unknown embodiment {str(name_or_path)!r}: built-in ones are {', '.join(list_embodiments())}; "
        "or pass a path to a .yaml file"
    )


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def parse_embodiment(data: Any, source: str = "<memory>") -> EmbodimentConfig:
    """Validate a parsed YAML mapping; raise ConfigError naming file, field, value and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    try:
        cfg = EmbodimentConfig.model_validate(data)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be an embodiment config") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        # Pydantic reports some errors on a union/tuple member index; name the field the user wrote.
        value = err.get("input", _lookup(data, loc))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            detail = "is required but missing"
        elif isinstance(value, dict):
            # A cross-field rule (a model validator) gets the whole section as its value: the reason names
            # the fields; repeating the section would bury it at the end of a very long line.
            detail = msg
        else:
            detail = f"value {value!r} is not allowed: {msg}"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_format_loc(loc)}: {detail}{more}") from None
    return cfg.model_copy(update={"source_path": source})


def load_embodiment(name_or_path: str | Path) -> EmbodimentConfig:
    """Load a built-in embodiment by name (``so101``) or any YAML file by path."""
    path = resolve_embodiment_path(name_or_path)
    return parse_embodiment(read_yaml_file(path), str(path))


def read_yaml_file(path: Path) -> Any:
    """Parse a YAML config file; every way it can be unreadable is one ConfigError line, never a traceback."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: is UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless: accept it
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 (binary file, or text in another "
            "encoding such as Latin-1): save it as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: contains NUL bytes; not a YAML text file")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a config file") from None
