"""Gymnasium envs pass gymnasium's checker; the scripted expert approaches (and for SO-101 lifts) its object."""

from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

import molmoact2_ros.sim  # noqa: E402,F401  (registers the ids)
from molmoact2_ros.sim.envs import ENV_IDS  # noqa: E402
from molmoact2_ros.sim.expert import ScriptedExpert  # noqa: E402


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_check_env_and_expert(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, render_size=(48, 64))
    try:
        check_env(env.unwrapped, skip_render_check=True)
        obs, _ = env.reset(seed=3)
        assert set(obs["images"]) == set(env.unwrapped.embodiment.camera_names)
        assert all(img.shape == (48, 64, 3) for img in obs["images"].values())
        scene = env.unwrapped.scene
        expert = ScriptedExpert(scene)
        expert.reset()
        arm = scene.arms[0]
        start = np.linalg.norm(scene.site_pose(arm.tcp_site)[0] - scene.object_poses()[arm.target_object][:3])
        for _ in range(int(3.0 / expert.control_dt)):  # hover + part of the descent
            obs, *_ = env.step(expert.act())
        end = np.linalg.norm(scene.site_pose(arm.tcp_site)[0] - scene.object_poses()[arm.target_object][:3])
        assert end < 0.5 * start, f"expert tcp went from {start:.3f} to {end:.3f} m of its object"
    finally:
        env.close()
