"""Embodiment configs: one typed schema, validated at load, for every arm we drive.

An embodiment YAML holds everything that changes between arms: joint order (the model's order),
limits, signs/offsets between the robot's joint space and the model's action space, control rate,
chunking, cameras and their order for the model, the model's norm tag, safety settings and the
hardware backend. A bad file fails at load with the file, the field, the value and what is allowed.

Joint spaces. Chunks, ``/joint_states`` and everything in the driver use the *robot* space: radians
for revolute joints, the gripper's own unit (metres of finger width, or 0..1) for grippers. The model
sees the *model* space of its training data (LeRobot degrees for SO-100/101, DROID's closed=1 gripper,
...). Per joint: ``model = sign * model_scale * robot + offset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from molmoact2_ros.core.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "embodiments"
_PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "embodiments"

CameraSource = Literal["synthetic", "opencv", "realsense", "sim", "bag"]
HardwareBackend = Literal["mock", "mujoco", "ros_topic", "feetech", "i2rt", "franka"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JointConfig(_Strict):
    """One actuated joint, in the model's order."""

    name: str = Field(min_length=1, description="joint name as it appears in /joint_states")
    type: Literal["revolute", "prismatic", "gripper"] = "revolute"
    unit: Literal["rad", "m", "normalized"] = Field(
        "rad", description="robot-space unit: rad (revolute), m (finger width), normalized (0..1)"
    )
    position_limits: tuple[float, float] = Field(description="[lower, upper] in the robot unit")
    max_velocity_per_s: float = Field(gt=0, description="robot units per second the driver allows")
    sign: Literal[-1, 1] = 1
    model_scale: float = Field(1.0, description="model units per robot unit, e.g. 57.29578 for deg/rad")
    offset: float = Field(0.0, description="model-space offset (model units)")
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
        if v == 0 or not np.isfinite(v):
            raise ValueError("must be a finite, non-zero number of model units per robot unit")
        return v

    @model_validator(mode="after")
    def _home_inside(self) -> JointConfig:
        if self.home is not None and not (self.position_limits[0] <= self.home <= self.position_limits[1]):
            raise ValueError(f"home {self.home} is outside position_limits {list(self.position_limits)}")
        return self

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

    @model_validator(mode="after")
    def _steps_le_horizon(self) -> ChunkConfig:
        if self.n_action_steps > self.action_horizon:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) cannot exceed action_horizon ({self.action_horizon})"
            )
        return self


class SafetyConfig(_Strict):
    watchdog_hold_timeout_s: float = Field(0.5, gt=0, description="no valid chunk for this long: hold")
    watchdog_stop_timeout_s: float = Field(2.0, gt=0, description="no valid chunk for this long: stop")
    chunk_max_age_s: float = Field(1.5, gt=0, description="reject chunks whose stamp is older than this")
    future_stamp_tolerance_s: float = Field(0.1, ge=0, description="accept stamps at most this far ahead")
    max_step_jump_factor: float = Field(
        3.0, gt=0, description="reject a chunk whose step-to-step change exceeds factor × max velocity / rate"
    )
    startup_max_distance: float = Field(
        0.6, gt=0, description="refuse to enable if the first target is farther than this (robot units)"
    )
    max_tracking_error: float = Field(0.5, gt=0, description="measured vs commanded, robot units")
    tracking_error_grace_s: float = Field(
        0.25, ge=0, le=10, description="tracking error above max_tracking_error for this long latches a fault"
    )
    max_temperature_c: float | None = Field(
        None, gt=0, le=200,
        description="fault above this reported motor temperature; the lower of this and the backend's own "
                    "limit (hardware.params.<backend>.max_temperature_c) applies; null: the backend's",
    )
    fault_action: Literal["hold", "relax"] = Field(
        "hold",
        description="on a latched fault: hold = keep writing the last command (no motion, motor heartbeat "
                    "kept); relax = stop commanding and let the backend go compliant where it can "
                    "(backends that cannot relax hold)",
    )

    @model_validator(mode="after")
    def _stop_after_hold(self) -> SafetyConfig:
        if self.watchdog_stop_timeout_s < self.watchdog_hold_timeout_s:
            raise ValueError("watchdog_stop_timeout_s must be >= watchdog_hold_timeout_s")
        return self


class HardwareConfig(_Strict):
    backend: HardwareBackend = "mock"
    shadow_mode_default: bool = Field(
        True, description="start in shadow mode (compute, never write); forced off only for mock/mujoco"
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per backend name: that backend's parameters"
    )

    def params_for(self, backend: str | None = None) -> dict[str, Any]:
        return dict(self.params.get(backend or self.backend, {}) or {})


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
    def home(self) -> np.ndarray:
        return np.array([j.home_position for j in self.joints], dtype=np.float64)

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
    """Where built-in embodiment files live: the source tree, then the installed share copy."""
    return [d for d in (CONFIG_DIR, _PACKAGED_CONFIG_DIR) if d.is_dir()]


def list_embodiments() -> list[str]:
    names: set[str] = set()
    for d in embodiment_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_embodiment_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
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
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        # Pydantic reports some errors on a union/tuple member index; name the field the user wrote.
        value = err.get("input", _lookup(data, loc))
        if err.get("type") == "missing":
            detail = "is required but missing"
        else:
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            detail = f"value {value!r} is not allowed: {msg}"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_format_loc(loc)}: {detail}{more}") from None
    return cfg.model_copy(update={"source_path": source})


def load_embodiment(name_or_path: str | Path) -> EmbodimentConfig:
    """Load a built-in embodiment by name (``so101``) or any YAML file by path."""
    path = resolve_embodiment_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_embodiment(data, str(path))
