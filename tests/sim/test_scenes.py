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
