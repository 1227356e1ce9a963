"""Tiny MolmoAct2 checkpoints: files, norm stats, token ids, exact reload, determinism, atomicity, cache."""

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
from molmoact2_ros.backends.policy.hf_env import (  # noqa: E402
    ensure_writable_module_cache,
    hub_offline,
    quiet_remote_code_warnings,
)
from molmoact2_ros.backends.policy.tiny_tokenizer import special_tokens  # noqa: E402

SO101 = load_embodiment("so101")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tc.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "so101", SO101, seed=0)


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


def test_same_seed_gives_identical_bytes_other_seed_differs(ckpt, tmp_path):
    again = tc.build_tiny_checkpoint(tmp_path / "again", SO101, seed=0)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "norm_stats.json"):
        assert (again / name).read_bytes() == (ckpt / name).read_bytes(), name
    other = tc.build_tiny_checkpoint(tmp_path / "other", SO101, seed=1)
    assert (other / "model.safetensors").read_bytes() != (ckpt / "model.safetensors").read_bytes()


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
