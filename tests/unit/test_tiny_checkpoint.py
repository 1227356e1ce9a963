"""Tiny MolmoAct2 checkpoints: files, norm stats, token ids, exact reload, determinism, atomicity, cache,
and the scripted motion they compute (the real model against the numpy reference in tiny_motion)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import CheckpointError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from molmoact2_ros.backends.policy import tiny_checkpoint as tc  # noqa: E402
from molmoact2_ros.backends.policy import tiny_motion as tm  # noqa: E402
from molmoact2_ros.backends.policy.hf_env import (  # noqa: E402
    ensure_writable_module_cache,
    hub_offline,
    quiet_remote_code_warnings,
)
from molmoact2_ros.backends.policy.tiny_tokenizer import special_tokens  # noqa: E402
from molmoact2_ros.core.chunk import Observation  # noqa: E402

SO101 = load_embodiment("so101")
EMBODIMENTS = ("so101", "so100", "yam_bimanual", "franka_droid")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tc.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "so101", SO101, seed=0)


@pytest.fixture(scope="module")
def seed1_ckpt(tmp_path_factory) -> Path:
    return tc.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "so101-s1", SO101, seed=1)


@pytest.fixture(scope="module")
def think_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "so101-think"
    return tc.build_tiny_checkpoint(out, SO101, think=True, seed=0)


def _json(path: Path):
    return json.loads(path.read_text())


def test_checkpoint_has_the_files_of_a_hub_snapshot(ckpt):
    for name in tc.REMOTE_CODE_FILES:
        assert (ckpt / name).read_bytes() == (tc.remote_code_dir() / name).read_bytes()
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "norm_stats.json", tc.MANIFEST_NAME):
        assert (ckpt / name).is_file(), name
    config = _json(ckpt / "config.json")
    assert config["auto_map"] == tc.MODEL_AUTO_MAP
    processor = _json(ckpt / "processor_config.json")
    assert set(processor["auto_map"]) == {"AutoProcessor", "AutoImageProcessor", "AutoVideoProcessor"}
    assert config["n_obs_steps"] == 1 and config["num_depth_codes"] == 100
    assert config["action_expert_config"]["num_layers"] == config["text_config"]["num_hidden_layers"]
    assert not any(p.name.startswith(".") for p in ckpt.parent.iterdir()), "staging directory left behind"


def test_norm_stats_span_the_joint_limits_in_model_space(ckpt):
    stats = _json(ckpt / "norm_stats.json")
    assert stats["format"] == "molmoact2_norm_stats.v1" and stats["norm_mode"] == "q01_q99"
    meta = stats["metadata_by_tag"][SO101.policy.norm_tag]
    low, high = SO101.model_limits()
    for kind in ("action_stats", "state_stats"):
        block = meta[kind]
        np.testing.assert_allclose(block["q01"], low)
        np.testing.assert_allclose(block["q99"], high)
        assert block["names"] == SO101.joint_names
        assert set(block) >= {"q01", "q99", "min", "max", "mean", "std", "mask"}
    # Model space, not robot space: the SO-101 shoulder_lift has a 90 degree offset and a sign flip.
    assert low[1] == pytest.approx(90 - 1.74533 * 57.29578)
    assert meta["camera_keys"] == SO101.camera_names
    assert meta["action_horizon"] == 30 and meta["n_action_steps"] == SO101.chunk.n_action_steps
    assert meta["control_mode"] == SO101.policy.control_mode and meta["setup_type"] == SO101.policy.setup_type
    assert meta["normalize_gripper"] is True


def test_special_tokens_are_contiguous_and_inside_the_text_vocab(ckpt):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    ids = [tok.token_to_id(t) for t in special_tokens()]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "special tokens must follow each other in order"
    config = _json(ckpt / "config.json")
    vocab = config["text_config"]["vocab_size"]
    id_fields = {k: v for k, v in config.items() if k.endswith("_id") and isinstance(v, int)}
    assert len(id_fields) >= 20
    assert all(v < vocab for v in id_fields.values()), id_fields
    assert config["depth_end_token_id"] == tok.token_to_id("<depth_end>")
    assert config["state_token_start_id"] + 255 == tok.token_to_id("<state_255>")
    # Special tokens inside text stay single tokens (the processor splices image tokens at <|image|>).
    encoded = tok.encode("Image 1<|image|><|im_start|>user<state_start><state_7><state_end>").ids
    for token in ("<|image|>", "<|im_start|>", "<state_start>", "<state_7>", "<state_end>"):
        assert tok.token_to_id(token) in encoded, token


def test_reload_through_auto_classes_gives_the_saved_weights_exactly(ckpt):
    from transformers import AutoModelForImageTextToText

    saved = safetensors_torch.load_file(str(ckpt / "model.safetensors"))
    with hub_offline(), quiet_remote_code_warnings():
        model = AutoModelForImageTextToText.from_pretrained(
            ckpt, trust_remote_code=True, dtype=torch.float32, local_files_only=True
        )
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    different = [k for k in saved if not torch.equal(saved[k], loaded[k])]
    assert not different, f"re-initialised on load: {different[:5]}"


def test_same_seed_gives_identical_bytes_other_seed_differs(ckpt, seed1_ckpt, tmp_path):
    again = tc.build_tiny_checkpoint(tmp_path / "again", SO101, seed=0)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "norm_stats.json"):
        assert (again / name).read_bytes() == (ckpt / name).read_bytes(), name
    assert (seed1_ckpt / "model.safetensors").read_bytes() != (ckpt / "model.safetensors").read_bytes()


def test_think_checkpoint_biases_depth_end_only_there(ckpt, think_ckpt):
    config = _json(think_ckpt / "config.json")
    assert config["enable_depth_reasoning"] is True
    assert _json(ckpt / "config.json")["enable_depth_reasoning"] is False
    head = safetensors_torch.load_file(str(think_ckpt / "model.safetensors"))["lm_head.weight"]
    row = head[config["depth_end_token_id"]]
    assert int((row != 0).sum()) == 1 and float(row.max()) > 1.0
    depth_rows = head[config["depth_token_start_id"]: config["depth_token_start_id"] + 128]
    assert torch.all(depth_rows[:, int(row.argmax())] == 0), "depth codes must not read the constant feature"


def test_refuses_a_non_empty_directory_unless_overwrite(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(CheckpointError, match="not empty"):
        tc.build_tiny_checkpoint(out, SO101)
    assert (out / "keep.txt").exists()
    tc.build_tiny_checkpoint(out, SO101, overwrite=True)
    assert tc.is_complete(out) and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_crashed_build_leaves_no_checkpoint(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tc, "_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        tc.build_tiny_checkpoint(tmp_path / "ckpt", SO101)
    assert list(tmp_path.iterdir()) == [], "a half-written build is visible"


def test_ensure_builds_once_and_caches(tmp_path, monkeypatch):
    calls = []
    real_build = tc.build_tiny_checkpoint

    def counting_build(*args, **kwargs):
        calls.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(tc, "build_tiny_checkpoint", counting_build)
    results: list[Path] = []
    def call():
        results.append(tc.ensure_tiny_checkpoint(SO101, cache_root=tmp_path))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1 and len(calls) == 1
    path = results[0]
    assert path.parent == tmp_path / "tiny" and path.name.startswith("so101-s0-")
    assert tc.is_complete(path)
    assert tc.ensure_tiny_checkpoint(SO101, cache_root=tmp_path) == path and len(calls) == 1


def test_ensure_replaces_an_incomplete_directory(tmp_path):
    path = tc.tiny_checkpoint_path(SO101, cache_root=tmp_path)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"truncated")
    assert tc.ensure_tiny_checkpoint(SO101, cache_root=tmp_path) == path
    assert tc.is_complete(path) and (path / "model.safetensors").stat().st_size > 1000


def test_cache_key_follows_what_the_checkpoint_depends_on(tmp_path, monkeypatch):
    base = tc.tiny_checkpoint_path(SO101, cache_root=tmp_path)
    assert tc.tiny_checkpoint_path(SO101, think=True, cache_root=tmp_path).name.startswith("so101-think-s0-")
    assert tc.tiny_checkpoint_path(SO101, seed=3, cache_root=tmp_path).name.startswith("so101-s3-")
    shorter = SO101.model_copy(update={"chunk": SO101.chunk.model_copy(update={"n_action_steps": 10})})
    assert tc.tiny_checkpoint_path(shorter, cache_root=tmp_path) != base
    monkeypatch.setenv("MOLMOACT2_ROS_CACHE", str(tmp_path / "env"))
    assert tc.tiny_checkpoint_path(SO101).parent == tmp_path / "env" / "tiny"


def test_hub_offline_is_scoped(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with hub_offline():
        assert hub_constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub_constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def test_unwritable_module_cache_moves_under_the_cache_root(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HF_MODULES_CACHE", str(blocker / "modules"))  # cannot be created
    target = ensure_writable_module_cache(tmp_path / "cache")
    assert target == tmp_path / "cache" / "hf_modules" and target.is_dir()
    assert os.environ["HF_MODULES_CACHE"] == str(target)
    writable = tmp_path / "mine"
    monkeypatch.setenv("HF_MODULES_CACHE", str(writable))
    assert ensure_writable_module_cache(tmp_path / "cache") == writable


# ---- the scripted motion ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime(ckpt):
    from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime

    rt = MolmoAct2Runtime(ckpt, SO101, seed=0)
    yield rt
    rt.close()


def _images(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    from molmoact2_ros.backends.cameras.synthetic import SyntheticCamera

    rng = np.random.default_rng(seed)
    out = {}
    for cam in SO101.cameras:
        shape = (cam.height, cam.width, 3)
        if kind == "noise":
            out[cam.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif kind == "synthetic":
            out[cam.name] = SyntheticCamera(cam).render(seed)
        else:
            out[cam.name] = np.full(shape, {"black": 0, "white": 255, "grey": 128}[kind], np.uint8)
    return out


def _predict(rt, state, images):
    obs = Observation(images=images, state=np.asarray(state, dtype=np.float64), instruction="pick up the cube",
                      stamp_s=1.0)
    chunk, _ = rt.predict(obs)
    return chunk.positions


def _reference(rt, state, images):
    feature = tm.image_feature(rt._processor, [images[c] for c in SO101.camera_names])
    return tc.motion_design(SO101).chunk(np.asarray(state, dtype=np.float64), feature)


@pytest.mark.parametrize("kind", ["noise", "synthetic", "black", "white"])
def test_the_real_model_computes_the_scripted_motion(runtime, kind):
    rng = np.random.default_rng(7)
    states = [SO101.home, SO101.home + rng.uniform(-0.4, 0.4, SO101.dof),
              SO101.lower + 0.05 * (SO101.upper - SO101.lower), SO101.upper - 0.02]
    for i, state in enumerate(states):
        state = np.clip(state, SO101.lower, SO101.upper)
        images = _images(kind, seed=i)
        got, ref = _predict(runtime, state, images), _reference(runtime, state, images)
        assert tm.matches(got, ref).all(), f"state {i}: max |got - ref| {np.abs(got - ref).max():.4f}"
        assert np.abs(ref[-1] - ref[0]).max() > 0.01  # and the script moves: the match is not trivial


def test_chunks_start_at_the_state_and_move_with_it(runtime):
    images = _images("synthetic")
    design = tc.motion_design(SO101)
    moving = design.moving_joints()
    assert len(moving) >= 4
    a = SO101.home.copy()
    b = SO101.home.copy()
    b[moving] += np.array([0.25, -0.2, 0.15, -0.25])[: len(moving)]
    chunk_a, chunk_b = _predict(runtime, a, images), _predict(runtime, b, images)
    for state, chunk in ((a, chunk_a), (b, chunk_b)):
        assert np.abs(chunk[0] - state).max() < 0.012  # half a state-token bin of the widest joint
    motion_a, motion_b = chunk_a[-1] - chunk_a[0], chunk_b[-1] - chunk_b[0]
    assert np.abs(motion_a[moving]).max() > 0.02 and np.abs(motion_b[moving]).max() > 0.02
    assert np.abs(motion_a - motion_b)[moving].max() > 0.02, "the direction of motion depends on the state"
    held = [j for j in range(SO101.dof) if j not in moving]
    assert np.abs(chunk_a[:, held] - chunk_a[0, held]).max() < 1e-3  # the other joints hold


def test_chunks_depend_on_the_images(runtime):
    state = SO101.home.copy()
    dark, bright = _predict(runtime, state, _images("black")), _predict(runtime, state, _images("white"))
    np.testing.assert_allclose(dark[0], bright[0], atol=1e-3)  # both start at the state ...
    moving = tc.motion_design(SO101).moving_joints()
    assert np.abs(dark[-1] - bright[-1])[moving].max() > 0.02  # ... and the images steer the motion
    noise_a, noise_b = _predict(runtime, state, _images("noise", 1)), _predict(runtime, state, _images("noise", 2))
    assert not np.array_equal(noise_a, noise_b)


def test_another_seed_changes_the_random_weights_not_the_motion(runtime, seed1_ckpt):
    from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime

    images, state = _images("synthetic"), SO101.home + 0.1
    with MolmoAct2Runtime(seed1_ckpt, SO101, seed=0) as rt:
        # Only through the RMS norms (the random dims are part of every norm): well below a state bin.
        np.testing.assert_allclose(_predict(rt, state, images), _predict(runtime, state, images), atol=2e-4)


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_every_scripted_chunk_is_safe_to_execute(name):
    """Any state inside the limits, any image: chunks a driver can follow without a safety layer acting."""
    emb = load_embodiment(name)
    design = tc.motion_design(emb)
    rate = emb.control_rate_hz
    rng = np.random.default_rng(0)
    half_bin = (emb.upper - emb.lower) / (tm.NUM_STATE_BINS - 1) / 2
    for i in range(2000):
        if i % 2:
            state = rng.uniform(emb.lower, emb.upper)
        else:
            state = np.clip(emb.home + rng.uniform(-0.6, 0.6, emb.dof), emb.lower, emb.upper)
        chunk = design.chunk(state, rng.uniform(-0.45, 0.45, 3))
        assert np.all(np.abs(chunk[0] - state) <= half_bin + 1e-9), "step 0 is the state, to half a bin"
        assert np.all(chunk >= emb.lower - 1e-9) and np.all(chunk <= emb.upper + 1e-9)
        speed = np.abs(np.diff(chunk, axis=0)) * rate
        assert np.all(speed <= 0.3 * emb.max_velocity), speed.max(axis=0) / emb.max_velocity
        accel = np.abs(np.diff(chunk, 2, axis=0)) * rate ** 2
        assert accel.max() <= 2.0, accel.max()
    assert half_bin.max() < 0.05


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_in_a_closed_loop_the_arm_keeps_moving_inside_the_limits(name):
    """Each chunk starts from the measured pose (first-order tracking, irregular inference periods)."""
    emb = load_embodiment(name)
    design = tc.motion_design(emb)
    rng = np.random.default_rng(1)
    state, travel, t = emb.home.copy(), np.zeros(emb.dof), 0.0
    dt, margin = 1.0 / emb.tick_rate_hz, (emb.upper - emb.lower) * 0.05
    moving = design.moving_joints()
    inside = (emb.home > emb.lower + margin) & (emb.home < emb.upper - margin)
    while t < 20.0:
        chunk = design.chunk(state, np.array([0.05, -0.02, 0.03]))
        ticks = int(rng.uniform(0.1, 0.4) / dt)
        for k in range(ticks):
            step = k * dt * emb.control_rate_hz
            i0 = min(int(step), len(chunk) - 1)
            i1 = min(i0 + 1, len(chunk) - 1)
            command = chunk[i0] + (chunk[i1] - chunk[i0]) * (step - int(step))
            new = state + (command - state) * min(1.0, dt / 0.05)
            travel += np.abs(new - state)
            state = new
            assert np.all(state[inside] > emb.lower[inside] + margin[inside])
            assert np.all(state[inside] < emb.upper[inside] - margin[inside])
        t += ticks * dt
    assert np.all(travel[moving] > 0.5), travel
    assert len(moving) >= 4
