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


def _pick(scene, expert, seed: int) -> tuple[float, float, np.ndarray]:
    """Run the SO-101 expert through its pick; (lift, worst tcp-cube distance over 1 s of hold, trajectory)."""
    scene.reset(seed=seed)
    expert.reset()
    arm = scene.arms[0]
    z0 = scene.object_poses()["cube"][2]
    lift_end = 2.0 + 1.5 + 1.2 + 1.5  # hover + descend + close + lift (expert.PHASE_S)
    trajectory, held = [], []
    for k in range(int((lift_end + 1.0) / expert.control_dt)):
        scene.set_command(expert.act())
        scene.step(expert.control_dt)
        trajectory.append(scene.joint_positions())
        if (k + 1) * expert.control_dt >= lift_end:
            held.append(np.linalg.norm(scene.site_pose(arm.tcp_site)[0] - scene.object_poses()["cube"][:3]))
    return scene.object_poses()["cube"][2] - z0, max(held), np.array(trajectory)


def test_so101_expert_grasps_and_lifts_the_cube():
    """The scripted expert picks the cube up on several seeds (cube > 3 cm up, in the jaws for a second of hold)
    and is deterministic per seed."""
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.sim.scenes import build_scene

    scene = build_scene(load_embodiment("so101"), render=False)
    expert = ScriptedExpert(scene)
    first = None
    for seed in (0, 4, 7):
        lift, held, trajectory = _pick(scene, expert, seed)
        assert lift > 0.03, f"seed {seed}: the cube rose only {lift:.3f} m"
        assert held < 0.03, f"seed {seed}: the cube left the jaws (tcp {held:.3f} m away)"
        first = first if first is not None else trajectory
    _, _, again = _pick(scene, expert, 0)
    np.testing.assert_array_equal(first, again)
