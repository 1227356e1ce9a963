"""Scenes of every embodiment: built from the installed model packages, cameras, limits, tracking, objects."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.sim.scenes import SimError, build_scene

NAMES = ("so101", "so100", "yam_bimanual", "franka_droid")


@pytest.fixture(scope="module", params=NAMES)
def scene(request):
    s = build_scene(load_embodiment(request.param))
    yield s
    s.close()


def test_cameras_render_configured_size(scene):
    for cam in scene.embodiment.cameras:
        img = scene.render(cam.name)
        assert img.shape == (cam.height, cam.width, 3) and img.dtype == np.uint8
        assert img.std() > 5, f"{cam.name} image is blank"
    with pytest.raises(SimError, match="no camera"):
        scene.render("nope")


def test_home_inside_limits_and_held(scene):
    emb = scene.embodiment
    scene.reset(seed=0)
    assert np.all(emb.home >= emb.lower) and np.all(emb.home <= emb.upper)
    scene.step(0.5)
    q = scene.joint_positions()
    revolute = np.array([j.unit == "rad" for j in emb.joints])
    assert np.max(np.abs(q - emb.home)[revolute]) < 0.03


def test_commanded_joints_are_tracked(scene):
    emb = scene.embodiment
    scene.reset(seed=0)
    revolute = np.array([j.unit == "rad" for j in emb.joints])
    target = emb.home + np.where(revolute, 0.25, 0.0) * np.sign(0.5 * (emb.lower + emb.upper) - emb.home + 1e-9)
    target = np.clip(target, emb.lower, emb.upper)
    dt = 1.0 / emb.control_rate_hz
    start = scene.joint_positions()
    for k in range(1, int(emb.control_rate_hz) + 1):  # a 1 s ramp at the control rate, then settle
        scene.set_command(start + (target - start) * min(1.0, k / (0.5 * emb.control_rate_hz)))
        scene.step(dt)
    err = np.abs(scene.joint_positions() - target)[revolute]
    assert err.max() < 0.03, f"tracking error {err.round(3)}"
    with pytest.raises(SimError, match="needs"):
        scene.set_command(np.zeros(emb.dof + 1))


def test_objects_randomise_with_seed(scene):
    scene.reset(seed=1)
    a = scene.object_poses()
    scene.reset(seed=1)
    b = scene.object_poses()
    scene.reset(seed=2)
    c = scene.object_poses()
    for name in a:
        assert a[name].shape == (7,)
        np.testing.assert_allclose(a[name], b[name], atol=1e-9)
    assert max(np.linalg.norm(a[n][:2] - c[n][:2]) for n in a) > 0.005


def test_compiled_model_cache_gives_the_same_physics(tmp_path, monkeypatch):
    """A scene loaded from the .mjb cache steps exactly like the freshly built one."""
    monkeypatch.setenv("MOLMOACT2_ROS_CACHE", str(tmp_path))
    emb = load_embodiment("so101")
    fresh = build_scene(emb, render=False)
    cached = build_scene(emb, render=False)
    assert not fresh.from_cache and cached.from_cache
    assert list((tmp_path / "sim").glob("so101-*.mjb"))
    assert cached.arms == fresh.arms and cached.layout.objects == fresh.layout.objects
    rng = np.random.default_rng(0)
    for scene in (fresh, cached):
        scene.reset(seed=4)
    for _ in range(20):
        target = rng.uniform(emb.lower, emb.upper) * 0.3 + emb.home * 0.7
        for scene in (fresh, cached):
            scene.set_command(target)
            scene.step(0.05)
        np.testing.assert_array_equal(fresh.data.qpos, cached.data.qpos)
    monkeypatch.setenv("MOLMOACT2_ROS_CACHE", "off")
    assert not build_scene(emb, render=False).from_cache


def _anchor(scene, joint: str) -> np.ndarray:
    return scene.data.joint(joint).xanchor.copy()


def test_so100_joint_mapping_matches_so101():
    """SO100_MAP: the same robot-space pose puts the SO-100's elbow and wrist where the SO-101's are.

    The two arms share their link lengths, so a wrong sign or offset in the map moves a joint by several cm."""
    import mujoco

    a = build_scene(load_embodiment("so101"), render=False)
    b = build_scene(load_embodiment("so100"), render=False)
    rng = np.random.default_rng(7)
    emb = a.embodiment
    worst = 0.0
    for _ in range(40):
        q = rng.uniform(emb.lower, emb.upper) * 0.6
        for s in (a, b):
            s.data.qpos[s._qadr] = s.robot_to_qpos(q)
            mujoco.mj_kinematics(s.model, s.data)
        base_a, base_b = _anchor(a, "shoulder_lift"), _anchor(b, "so_arm100_left/Pitch")
        for ja, jb in (("elbow_flex", "so_arm100_left/Elbow"), ("wrist_flex", "so_arm100_left/Wrist_Pitch")):
            worst = max(worst, float(np.linalg.norm((_anchor(a, ja) - base_a) - (_anchor(b, jb) - base_b))))
    assert worst < 0.03, f"SO-100 and SO-101 joints disagree by up to {worst:.3f} m"
