"""Gymnasium environments, one per embodiment, over ``SimScene``.

Action: joint positions in the embodiment's robot space (Box = joint limits), applied for one control period
(``1 / control_rate_hz``). Observation: ``{"images": {camera: HxWx3 uint8}, "joint_state": float64 positions}``.
``reset(seed=...)`` puts the arm at home and draws the object poses from the seed. Reward: 0 (the envs are for
rollouts and data collection; success is read from ``info["object_poses"]``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from molmoact2_ros.core.embodiment import load_embodiment

ENV_IDS: dict[str, str] = {
    "MolmoAct2Ros/SO101-v0": "so101",
    "MolmoAct2Ros/SO100-v0": "so100",
    "MolmoAct2Ros/YAMBimanual-v0": "yam_bimanual",
    "MolmoAct2Ros/FrankaDROID-v0": "franka_droid",
}


class MolmoAct2SimEnv(gym.Env):
    """A pick scene of one embodiment; ``render_size=(height, width)`` overrides every camera's size."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, embodiment: str = "so101", render_size: tuple[int, int] | None = None,
                 render_mode: str | None = None, max_episode_steps: int | None = None) -> None:
        from molmoact2_ros.sim.scenes import build_scene

        self.embodiment = load_embodiment(embodiment)
        self.scene = build_scene(self.embodiment, render=True)
        self.control_dt = 1.0 / self.embodiment.control_rate_hz
        self.metadata = {**self.metadata, "render_fps": self.embodiment.control_rate_hz}
        self.render_mode = render_mode
        self._sizes = {c.name: (render_size or (c.height, c.width)) for c in self.embodiment.cameras}
        for name, (h, w) in self._sizes.items():
            cam = next(c for c in self.embodiment.cameras if c.name == name)
            if h > cam.height or w > cam.width:
                raise ValueError(f"render_size {render_size} is larger than camera {name}'s {cam.height}x{cam.width}")
        low, high = self.embodiment.lower, self.embodiment.upper
        self.action_space = spaces.Box(low=low, high=high, dtype=np.float64)
        span = high - low
        self.observation_space = spaces.Dict({
            "images": spaces.Dict({name: spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
                                   for name, (h, w) in self._sizes.items()}),
            # measured positions may overshoot a limit slightly (contacts, servo compliance)
            "joint_state": spaces.Box(low=low - 0.1 * span, high=high + 0.1 * span, dtype=np.float64),
        })

    def _observation(self) -> dict[str, Any]:
        images = {name: self.scene.render_size(name, w, h) for name, (h, w) in self._sizes.items()}
        low, high = self.observation_space["joint_state"].low, self.observation_space["joint_state"].high
        return {"images": images, "joint_state": np.clip(self.scene.joint_positions(), low, high)}

    def _info(self) -> dict[str, Any]:
        return {"object_poses": self.scene.object_poses(), "sim_time_s": self.scene.sim_time_s}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        # the object poses come from gymnasium's seeded generator, so reset() without a seed still varies
        self.scene.reset(seed=int(self.np_random.integers(0, 2**31 - 1)))
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.scene.set_command(np.asarray(action, dtype=np.float64))
        self.scene.step(self.control_dt)
        return self._observation(), 0.0, False, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return np.concatenate([self.scene.render_size(n, w, h) for n, (h, w) in self._sizes.items()], axis=1)

    def close(self) -> None:
        self.scene.close()


def register_envs() -> None:
    """Register every id in ``ENV_IDS`` with gymnasium (idempotent)."""
    for env_id, name in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="molmoact2_ros.sim.envs:MolmoAct2SimEnv",
                         kwargs={"embodiment": name}, max_episode_steps=600)
