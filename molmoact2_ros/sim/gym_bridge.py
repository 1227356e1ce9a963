"""Any gymnasium environment as the sim node's simulation: joint-position actions in, images and joints out.

A small mapping file (``config/gym/<name>.yaml``, schema :class:`GymMapping`) says how the env's vectors
and observation keys line up with an embodiment:

```yaml
env_id: gym_aloha/AlohaTransferCube-v0   # what gymnasium.make gets
import: gym_aloha                        # module(s) whose import registers the env id
make_kwargs: {obs_type: pixels_agent_pos}
embodiment: aloha_transfer_cube.embodiment.yaml   # built-in name, or a path relative to this file
rate_hz: 50                              # simulated seconds per env.step = 1 / rate_hz
joint_order: [left_waist, ...]           # the env's action vector, by embodiment joint name
state_key: agent_pos                     # observation entry with the measured joints, same order
camera_keys: {top: pixels.top}           # embodiment camera -> observation entry (dots go into dicts)
scale: null                              # optional per env-order joint: env = scale * robot + offset
offset: null
```

:class:`GymBridge` then offers what the sim node drives (``set_command``, ``step``, ``joint_positions``,
``joint_velocities``, ``render``, ``sim_time_s``, ``physics_dt``), so the driver, its scheduler and its
safety stack run against the env exactly as against the MuJoCo scenes. The env is stepped with the last
commanded joint positions, one ``env.step`` per ``1 / rate_hz`` simulated seconds; an env slower than
real time makes the sim node run it slower than the wall clock (reported as its ``real_time_factor``).
A terminated or truncated episode is not reset (that would teleport the arm under a running driver):
the bridge keeps stepping and counts it in ``episode_ends``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molmoact2_ros.core.embodiment import CameraConfig, EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.sim.rendering import select_gl_backend

# Before any env imports mujoco or dm_control: headless EGL/OSMesa, never a display (dm_control's default is GLFW).
select_gl_backend()

# The shipped mappings: in the source tree, or the installed share copy (molmoact2_ros.resources).
GYM_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "gym"


def gym_config_dirs() -> list[Path]:
    from molmoact2_ros.resources import data_dirs

    return data_dirs("config", "gym")


class GymMapping(BaseModel):
    """How one gymnasium env maps onto an embodiment (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    env_id: str = Field(min_length=1, description="gymnasium id passed to gymnasium.make")
    import_modules: list[str] = Field(default_factory=list, alias="import",
                                      description="modules to import first (they register the env id)")
    make_kwargs: dict[str, Any] = Field(default_factory=dict)
    embodiment: str = Field(min_length=1, description="built-in embodiment name or YAML path (relative to this file)")
    rate_hz: float = Field(gt=0, le=10_000, description="env steps per simulated second")
    joint_order: list[str] = Field(min_length=1, description="embodiment joint names in the env's action order")
    state_key: str = Field(min_length=1, description="observation entry holding the joint positions")
    camera_keys: dict[str, str] = Field(min_length=1, description="embodiment camera -> observation entry")
    scale: list[float] | None = None
    offset: list[float] | None = None
    source_path: str = ""

    def embodiment_ref(self) -> str:
        ref = self.embodiment
        if ref.endswith((".yaml", ".yml")) and self.source_path and not Path(ref).is_absolute():
            return str(Path(self.source_path).parent / ref)
        return ref

    def embodiment_name(self) -> str:
        return load_embodiment(self.embodiment_ref()).name


def load_gym_mapping(ref: str) -> GymMapping:
    """A mapping file by path, or by name from ``config/gym/`` (``aloha_transfer_cube``)."""
    path = Path(ref)
    name = ref if ref.endswith((".yaml", ".yml")) else f"{ref}.yaml"
    for d in ([] if path.is_file() else gym_config_dirs()):
        if (d / name).is_file():
            path = d / name
            break
    if not path.is_file():
        shipped = sorted({p.stem for d in gym_config_dirs() for p in d.glob("*.yaml")
                          if not p.stem.endswith(".embodiment")})
        raise ConfigError(f"gym mapping {ref!r}: no such file, and not one of the shipped mappings {shipped}")
    try:
        data = yaml.safe_load(path.read_text())
        mapping = GymMapping.model_validate({**(data or {}), "source_path": str(path)})
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a YAML mapping ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return mapping


def _lookup(obs: Any, key: str, where: str) -> Any:
    value = obs
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            have = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ConfigError(f"{where}: observation has no entry {key!r} (at {part!r}: found {have})")
        value = value[part]
    return value


class GymBridge:
    """A gymnasium env driven by joint position targets, seen as a simulation scene by the sim node."""

    def __init__(self, mapping: GymMapping, embodiment: EmbodimentConfig, *,
                 camera_configs: list[CameraConfig] | None = None):
        import gymnasium

        self.mapping = mapping
        self.embodiment = embodiment
        where = mapping.source_path or mapping.env_id
        if sorted(mapping.joint_order) != sorted(embodiment.joint_names):
            raise ConfigError(f"{where}: joint_order must list exactly the embodiment's joints "
                              f"{embodiment.joint_names}, got {mapping.joint_order}")
        cameras = camera_configs or list(embodiment.cameras)
        missing = [c.name for c in cameras if c.name not in mapping.camera_keys]
        if missing:
            raise ConfigError(f"{where}: camera_keys has no entry for camera(s) {missing}")
        n = len(mapping.joint_order)
        self._scale = np.asarray(mapping.scale if mapping.scale is not None else [1.0] * n, dtype=np.float64)
        self._offset = np.asarray(mapping.offset if mapping.offset is not None else [0.0] * n, dtype=np.float64)
        if self._scale.shape != (n,) or self._offset.shape != (n,) or np.any(self._scale == 0):
            raise ConfigError(f"{where}: scale and offset need {n} values each (scale non-zero)")
        for module in mapping.import_modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"{where}: cannot import {module!r} ({exc}); install the package that "
                                  "provides the env") from None
        try:
            self.env = gymnasium.make(mapping.env_id, **mapping.make_kwargs)
        except gymnasium.error.Error as exc:
            raise ConfigError(f"{where}: gymnasium.make({mapping.env_id!r}) failed: {exc}") from None
        shape = getattr(self.env.action_space, "shape", None)
        if shape != (n,):
            self.env.close()
            raise ConfigError(f"{where}: the env's action space has shape {shape}, joint_order names {n} joints; "
                              "the bridge needs a joint-position action vector")
        # env index of each embodiment joint
        self._env_index = np.array([mapping.joint_order.index(name) for name in embodiment.joint_names])
        self._cameras = {c.name: (mapping.camera_keys[c.name], c.width, c.height) for c in cameras}
        self.physics_dt = 1.0 / mapping.rate_hz
        self.steps = 0
        self.episode_ends = 0
        self._obs: Any = None
        self._q: np.ndarray = np.zeros(embodiment.dof)
        self._v: np.ndarray = np.zeros(embodiment.dof)
        self._action: np.ndarray = np.zeros(n)

    # ---- robot <-> env ----
    def _to_robot(self, env_vector: np.ndarray) -> np.ndarray:
        robot_env_order = (np.asarray(env_vector, dtype=np.float64) - self._offset) / self._scale
        return robot_env_order[self._env_index]

    def _to_env(self, q: np.ndarray) -> np.ndarray:
        env_order = np.empty(len(self._env_index))
        env_order[self._env_index] = q
        return self._scale * env_order + self._offset

    def _observe(self, obs: Any) -> None:
        where = self.mapping.source_path or self.mapping.env_id
        state = np.asarray(_lookup(obs, self.mapping.state_key, where), dtype=np.float64).reshape(-1)
        if state.shape != (len(self._env_index),):
            raise ConfigError(f"{where}: observation {self.mapping.state_key!r} has {state.size} values, "
                              f"joint_order names {len(self._env_index)}")
        q = self._to_robot(state)
        if self._obs is not None:
            self._v = (q - self._q) / self.physics_dt
        self._q = q
        self._obs = obs

    # ---- what the sim node drives ----
    def reset(self, seed: int | None = None) -> None:
        obs, _info = self.env.reset(seed=seed)
        self._obs = None
        self._observe(obs)
        for name, (key, _, _) in self._cameras.items():
            image = np.asarray(_lookup(obs, key, self.mapping.source_path or self.mapping.env_id))
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ConfigError(f"{self.mapping.source_path}: camera {name}: observation {key!r} is "
                                  f"{image.dtype} {image.shape}, need an HxWx3 uint8 image")
        self._v = np.zeros(self.embodiment.dof)
        self._action = self._to_env(self._q)
        self.steps = 0

    def set_command(self, q: np.ndarray) -> None:
        q = np.clip(np.asarray(q, dtype=np.float64), self.embodiment.lower, self.embodiment.upper)
        self._action = self._to_env(q)

    def step(self, duration_s: float) -> None:
        for _ in range(max(1, round(duration_s / self.physics_dt))):
            obs, _reward, terminated, truncated, _info = self.env.step(self._action.astype(np.float32))
            self.steps += 1
            if terminated or truncated:
                self.episode_ends += 1
            self._observe(obs)

    def joint_positions(self) -> np.ndarray:
        return self._q.copy()

    def joint_velocities(self) -> np.ndarray:
        return self._v.copy()

    def render(self, camera: str) -> np.ndarray:
        key, width, height = self._cameras[camera]
        image = np.asarray(_lookup(self._obs, key, self.mapping.env_id))
        h, w = image.shape[:2]
        if (h, w) != (height, width):  # nearest-neighbour to the configured size (the policy resizes anyway)
            image = image[(np.arange(height) * h // height)[:, None], np.arange(width) * w // width]
        return np.ascontiguousarray(image, dtype=np.uint8)

    @property
    def sim_time_s(self) -> float:
        return self.steps * self.physics_dt

    def close(self) -> None:
        self.env.close()
