"""MolmoAct2Runtime on tiny checkpoints: checks before loading, observation checks, the real predict path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from molmoact2_ros.core.chunk import Observation
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import CheckpointError, ConfigError, ObservationError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from molmoact2_ros.backends.policy import molmoact2_runtime as rt_mod  # noqa: E402
from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime, is_hub_id  # noqa: E402
from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint, motion_design  # noqa: E402
from molmoact2_ros.backends.policy.tiny_motion import image_feature, matches  # noqa: E402

SO101 = load_embodiment("so101")
TAG = SO101.policy.norm_tag


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("molmoact2_cache")


def _tiny(name: str, cache_root: Path, think: bool = False) -> Path:
    return ensure_tiny_checkpoint(load_embodiment(name), think=think, cache_root=cache_root)


@pytest.fixture(scope="module")
def so101_runtime(cache_root):
    runtime = MolmoAct2Runtime(_tiny("so101", cache_root), SO101, seed=0)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def think_runtime(cache_root):
    runtime = MolmoAct2Runtime(_tiny("so101", cache_root, think=True), SO101, seed=0)
    yield runtime
    runtime.close()


def _observation(emb, seed: int = 0, **overrides) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in emb.cameras}
    fields = {"images": images, "state": emb.home.copy(), "instruction": "Pick up the red cube.",
              "stamp_s": 12.5}
    fields.update(overrides)
    return Observation(**fields)


def _copy(cache_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(_tiny("so101", cache_root), dst)
    return dst


def _edit_norm_stats(ckpt: Path, edit) -> None:
    path = ckpt / "norm_stats.json"
    stats = json.loads(path.read_text())
    edit(stats["metadata_by_tag"])
    path.write_text(json.dumps(stats))


@pytest.fixture
def no_heavy_load(monkeypatch):
    """Checkpoint checks must fail before transformers loads anything."""

    def refuse(self):
        raise AssertionError("the model was loaded before the checkpoint was checked")

    monkeypatch.setattr(MolmoAct2Runtime, "_load", refuse)


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ---- checkpoint checks (before loading) ---------------------------------------------------

def test_missing_directory(tmp_path, no_heavy_load):
    with pytest.raises(CheckpointError) as err:
        MolmoAct2Runtime(tmp_path / "nope", SO101)
    msg = _one_line(err)
    assert "nope" in msg and "not found" in msg
    assert "make-tiny-checkpoint" in msg and "--embodiment so101" in msg


def test_directory_without_norm_stats(cache_root, tmp_path, no_heavy_load):
    ckpt = _copy(cache_root, tmp_path)
    (ckpt / "norm_stats.json").unlink()
    with pytest.raises(CheckpointError) as err:
        MolmoAct2Runtime(ckpt, SO101)
    assert "norm_stats.json" in _one_line(err)


def test_tag_not_in_norm_stats_lists_the_tags_present(cache_root, tmp_path, no_heavy_load):
    ckpt = _copy(cache_root, tmp_path)
    _edit_norm_stats(ckpt, lambda tags: tags.update(franka_droid=tags.pop(TAG)))
    with pytest.raises(CheckpointError) as err:
        MolmoAct2Runtime(ckpt, SO101)
    msg = _one_line(err)
    assert TAG in msg and "franka_droid" in msg
    with pytest.raises(CheckpointError, match="'other_tag'"):
        MolmoAct2Runtime(_tiny("so101", cache_root), SO101, norm_tag="other_tag")


def test_camera_count_mismatch(cache_root, tmp_path, no_heavy_load):
    ckpt = _copy(cache_root, tmp_path)
    _edit_norm_stats(ckpt, lambda tags: tags[TAG].update(camera_keys=["top", "left", "right"]))
    with pytest.raises(CheckpointError) as err:
        MolmoAct2Runtime(ckpt, SO101)
    msg = _one_line(err)
    assert "camera" in msg and "3" in msg and "2" in msg and "so101" in msg


def test_state_dim_mismatch(cache_root, tmp_path, no_heavy_load):
    ckpt = _copy(cache_root, tmp_path)

    def drop_gripper(tags):
        for key, value in list(tags[TAG]["state_stats"].items()):
            tags[TAG]["state_stats"][key] = value[:5]

    _edit_norm_stats(ckpt, drop_gripper)
    with pytest.raises(CheckpointError) as err:
        MolmoAct2Runtime(ckpt, SO101)
    msg = _one_line(err)
    assert "state dim" in msg and "5" in msg and "6" in msg


def test_embodiment_of_another_robot(cache_root, no_heavy_load):
    # An so101 checkpoint for the 14-joint YAM: its tag is not in the checkpoint.
    with pytest.raises(CheckpointError, match="yam_dual_molmoact2"):
        MolmoAct2Runtime(_tiny("so101", cache_root), load_embodiment("yam_bimanual"))


def test_missing_remote_code_or_auto_map(cache_root, tmp_path, no_heavy_load):
    ckpt = _copy(cache_root, tmp_path)
    (ckpt / "inference.py").unlink()  # not named in auto_map: imported by modeling_molmoact2.py
    with pytest.raises(CheckpointError, match=r"inference\.py"):
        MolmoAct2Runtime(ckpt, SO101)
    (ckpt / "modeling_molmoact2.py").unlink()
    with pytest.raises(CheckpointError, match=r"modeling_molmoact2\.py"):
        MolmoAct2Runtime(ckpt, SO101)
    config = json.loads((ckpt / "config.json").read_text())
    del config["auto_map"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="auto_map"):
        MolmoAct2Runtime(ckpt, SO101)


def test_n_action_steps_beyond_the_horizon(cache_root, no_heavy_load):
    with pytest.raises(CheckpointError, match="n_action_steps 31"):
        MolmoAct2Runtime(_tiny("so101", cache_root), SO101, n_action_steps=31)


def test_bad_dtype_is_a_config_error(cache_root):
    with pytest.raises(ConfigError, match="fp16"):
        MolmoAct2Runtime(_tiny("so101", cache_root), SO101, dtype="fp16")


def test_hub_ids_versus_paths(tmp_path):
    assert is_hub_id("allenai/MolmoAct2-SO100_101")
    assert not is_hub_id(str(tmp_path / "ckpt"))
    assert not is_hub_id("./ckpt/x") and not is_hub_id("a/b/c") and not is_hub_id(tmp_path)


def test_unreachable_hub_id_is_a_checkpoint_error(monkeypatch, no_heavy_load):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests, ever
    with pytest.raises(CheckpointError) as err:
        MolmoAct2Runtime("allenai/MolmoAct2-DoesNotExist", SO101)
    assert "allenai/MolmoAct2-DoesNotExist" in _one_line(err)


# ---- observation checks ---------------------------------------------------------------------

def test_missing_camera(so101_runtime):
    obs = _observation(SO101)
    del obs.images["wrist"]
    with pytest.raises(ObservationError) as err:
        so101_runtime.predict(obs)
    assert "wrist" in _one_line(err)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda o: o.images.update(front=o.images["front"].astype(np.float32)), "front"),
        (lambda o: o.images.update(front=o.images["front"][:, :, 0]), "HxWx3"),
        (lambda o: setattr(o, "state", np.zeros(5)), "(6,)"),
        (lambda o: o.state.__setitem__(2, np.nan), "elbow_flex"),
        (lambda o: setattr(o, "instruction", "  "), "instruction"),
    ],
    ids=["float-image", "gray-image", "short-state", "nan-state", "empty-instruction"],
)
def test_bad_observation(so101_runtime, change, needle):
    obs = _observation(SO101)
    change(obs)
    with pytest.raises(ObservationError) as err:
        so101_runtime.predict(obs)
    assert needle in _one_line(err)


# ---- the real inference path --------------------------------------------------------------

def _scripted(runtime, obs):
    """What the tiny checkpoint is built to return for ``obs`` (tiny_motion, the numpy reference)."""
    emb = runtime.embodiment
    feature = image_feature(runtime._processor, [obs.images[c] for c in emb.camera_names])
    return motion_design(emb).chunk(obs.state, feature)


def _check_chunk(chunk, emb, obs, runtime, rtol=0.02):
    assert chunk.positions.shape == (emb.chunk.n_action_steps, emb.dof)
    assert chunk.positions.dtype == np.float64 and np.all(np.isfinite(chunk.positions))
    assert chunk.joint_names == emb.joint_names
    assert chunk.stamp_s == obs.stamp_s and chunk.rate_hz == emb.control_rate_hz
    # The tiny checkpoint's scripted motion: inside the limits, starting at the state (to within half a
    # state-token bin), and exactly the chunk the reference computes for this state and these images.
    assert np.all(chunk.positions >= emb.lower - 1e-6) and np.all(chunk.positions <= emb.upper + 1e-6)
    assert np.abs(chunk.positions[0] - obs.state).max() < 0.02
    scripted = _scripted(runtime, obs)
    assert matches(chunk.positions, scripted, rtol=rtol).all(), np.abs(chunk.positions - scripted).max()


def test_predict_so101(so101_runtime):
    assert so101_runtime.warmup() > 0
    obs = _observation(SO101)
    chunk, info = so101_runtime.predict(obs)
    _check_chunk(chunk, SO101, obs, so101_runtime)
    assert 0 < info["latency_s"] < 10


@pytest.mark.parametrize("name", ["yam_bimanual", "franka_droid"])
def test_predict_other_embodiments(cache_root, name):
    emb = load_embodiment(name)
    with MolmoAct2Runtime(_tiny(name, cache_root), emb) as runtime:
        obs = _observation(emb)
        chunk, _ = runtime.predict(obs)
        _check_chunk(chunk, emb, obs, runtime)
    assert chunk.positions.shape == {"yam_bimanual": (25, 14), "franka_droid": (8, 8)}[name]


def test_predict_wires_spaces_order_and_arguments(so101_runtime, monkeypatch):
    """What the runtime hands predict_action, and what it does with the answer, checked exactly."""
    seen = {}
    target = SO101.lower + 0.25 * (SO101.upper - SO101.lower)

    def fake_predict_action(**kwargs):
        seen.update(kwargs)
        model_space = SO101.robot_to_model(np.tile(target, (SO101.chunk.n_action_steps, 1)))
        return SimpleNamespace(actions=torch.tensor(model_space[None], dtype=torch.float32),
                               depth_bins=None, depth_cache=None)

    monkeypatch.setattr(so101_runtime._model, "predict_action", fake_predict_action)
    obs = _observation(SO101, state=SO101.lower + 0.1)
    chunk, _ = so101_runtime.predict(obs)
    assert [id(i) for i in seen["images"]] == [id(obs.images[c]) for c in SO101.camera_names]
    np.testing.assert_allclose(seen["state"], SO101.robot_to_model(obs.state))
    assert seen["norm_tag"] == TAG and seen["inference_action_mode"] == "continuous"
    assert seen["n_action_steps"] == SO101.chunk.n_action_steps
    assert seen["processor"] is so101_runtime._processor
    assert isinstance(seen["generator"], torch.Generator) and seen["task"] == obs.instruction
    np.testing.assert_allclose(chunk.positions, np.tile(target, (SO101.chunk.n_action_steps, 1)), atol=1e-5)


def test_bf16_on_cpu(cache_root, so101_runtime):
    obs = _observation(SO101)
    with MolmoAct2Runtime(_tiny("so101", cache_root), SO101, dtype="bf16", num_steps=8) as runtime:
        chunk, _ = runtime.predict(obs)
    assert np.all(np.isfinite(chunk.positions))
    # bf16 keeps 8 bits of mantissa: at home (state terms near zero) the tiny checkpoint's circuit gives the
    # fp32 chunk to within 0.05 (measured 0.006); away from home its state routing loses ~5 % (fp32 is the
    # tiny checkpoint's dtype, as for every test and the demo).
    reference, _ = so101_runtime.predict(obs)
    np.testing.assert_allclose(chunk.positions, reference.positions, atol=0.05)


def test_depth_buffer_replays_unchanged_cells(think_runtime):
    assert think_runtime.supports_depth_reasoning
    obs = _observation(SO101)
    chunk, first = think_runtime.predict(obs, enable_depth_reasoning=True)
    _check_chunk(chunk, SO101, obs, think_runtime, rtol=0.04)  # 100 depth tokens dilute attention a bit more
    bins = first["depth_bins"]
    assert bins.dtype == np.int64 and bins.shape == (100,) and bins.min() >= 0 and bins.max() < 128
    assert first["depth_cells_repredicted"] == 100 and first["depth_repredicted_fraction"] == 1.0
    cache = first["depth_cache"]
    assert set(cache) == {"image", "depth_bins"}

    _, second = think_runtime.predict(obs, enable_depth_reasoning=True, depth_cache=cache)
    assert second["depth_cells_repredicted"] < first["depth_cells_repredicted"]
    assert second["depth_repredicted_fraction"] == 0.0
    np.testing.assert_array_equal(second["depth_bins"], bins)

    moved = _observation(SO101, seed=1)
    _, third = think_runtime.predict(moved, enable_depth_reasoning=True, depth_cache=second["depth_cache"])
    assert third["depth_cells_repredicted"] > 0


def test_depth_on_a_plain_checkpoint_is_refused(so101_runtime):
    with pytest.raises(CheckpointError, match="Think"):
        so101_runtime.predict(_observation(SO101), enable_depth_reasoning=True)


def test_closed_runtime_refuses_to_predict(cache_root):
    runtime = MolmoAct2Runtime(_tiny("so101", cache_root), SO101)
    runtime.close()
    with pytest.raises(RuntimeError, match="closed"):
        runtime.predict(_observation(SO101))


def test_policy_package_stays_import_light():
    import subprocess
    import sys

    code = ("import sys, molmoact2_ros.backends.policy, molmoact2_ros.backends.policy.molmoact2_runtime, "
            "molmoact2_ros.backends.policy.tiny_checkpoint; "
            "print(sorted(m for m in ('torch', 'transformers', 'rclpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert rt_mod.InferenceError.__mro__[1].__name__ == "MolmoAct2RosError"
