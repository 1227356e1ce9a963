"""benchmarks/gpu_check: its model build at reduced size on the CPU (same builder, same function), the
released size table, and the clear stop on a host without CUDA."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from molmoact2_ros.core.embodiment import load_embodiment

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from molmoact2_ros.backends.policy import tiny_checkpoint as tc  # noqa: E402
from molmoact2_ros.backends.policy.model_sizes import RELEASED, RELEASED_REDUCED, TINY  # noqa: E402
from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime  # noqa: E402
from molmoact2_ros.backends.policy.tiny_tokenizer import special_tokens  # noqa: E402
from molmoact2_ros.core.chunk import Observation  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SO101 = load_embodiment("so101")


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level imports nothing heavy (P1's bench is imported in main)
    return module


def test_reduced_sizes_keep_the_released_structure():
    # What "same architecture, scaled down" means, pinned: only sizes differ.
    for field in ("adapter_vit_layers", "vocab_size", "circuit"):
        assert getattr(RELEASED_REDUCED, field) == getattr(RELEASED, field), field
    gqa = (RELEASED.text_heads // RELEASED.text_kv_heads, RELEASED_REDUCED.text_heads // RELEASED_REDUCED.text_kv_heads)
    assert gqa[0] == gqa[1]
    assert RELEASED_REDUCED.vit_layers >= -min(RELEASED.adapter_vit_layers)
    assert RELEASED_REDUCED.max_crops > 1  # multi-crop processing, as released


def test_released_sizes_make_a_5b_model():
    # MOLMOACT2.md: about 5B parameters. Built on the meta device: shapes only, no memory, no init cost.
    configuration, modeling = tc._remote_modules()
    ids = {tok: i for i, tok in enumerate(special_tokens())}  # the ids do not change the parameter count
    kwargs = tc._model_config_kwargs(SO101, ids, RELEASED.vocab_size, True, RELEASED)
    with tc.quiet_remote_code_warnings():
        config = configuration.MolmoAct2Config(**kwargs)
    with torch.device("meta"):
        model = modeling.MolmoAct2ForConditionalGeneration(config)
    n = sum(p.numel() for p in model.parameters())
    assert 4.0e9 < n < 6.5e9, n
    assert config.text_config.num_hidden_layers == 36 and config.action_expert_config.num_layers == 36
    assert config.text_config.hidden_size == 2560 and config.vit_config.hidden_size == 1152


def test_reduced_build_through_gpu_check_runs_predict_action(tmp_path):
    gpu_check = _gpu_check_module()
    out = gpu_check.build_model(tmp_path / "reduced", RELEASED_REDUCED, device="cpu")
    manifest = json.loads((out / tc.MANIFEST_NAME).read_text())
    assert manifest["sizes"] == RELEASED_REDUCED.name and manifest["think"] is True
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert config["adapter_config"]["vit_layers"] == list(RELEASED.adapter_vit_layers)
    assert config["text_config"]["vocab_size"] == RELEASED.vocab_size
    assert config["action_expert_config"]["num_layers"] == config["text_config"]["num_hidden_layers"]
    assert json.loads((out / "processor_config.json").read_text())["image_processor"]["max_crops"] == 2
    weights = safetensors_torch.load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}

    runtime = MolmoAct2Runtime(out, SO101, dtype="bf16", seed=0)
    try:
        rng = np.random.default_rng(0)
        images = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in SO101.cameras}
        obs = Observation(images=images, state=SO101.home.copy(), instruction="pick up the cube", stamp_s=0.0)
        chunk, _ = runtime.predict(obs)
        assert chunk.positions.shape == (runtime.n_action_steps, SO101.dof)
        assert np.all(np.isfinite(chunk.positions))
        # Think terminates on random weights (the <depth_end> bias is in the real-size build too).
        chunk, info = runtime.predict(obs, enable_depth_reasoning=True)
        assert info["depth_bins"].shape == (100,) and np.all(np.isfinite(chunk.positions))
    finally:
        runtime.close()


def test_tiny_sizes_are_the_tiny_checkpoint():
    # The size table did not change the tiny checkpoint (its config key and cached builds stay valid).
    assert TINY.circuit and TINY.text_hidden == 64 and TINY.text_layers == 2 and TINY.image_size == 56


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a host without CUDA")
def test_gpu_check_stops_clearly_without_cuda(tmp_path):
    # PYTHON: the interpreter running the tests (the wrapper's default is the repository's .venv).
    env = {**os.environ, "MOLMOACT2_ROS_CACHE": str(tmp_path / "cache"), "PYTHON": sys.executable}
    started = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "no CUDA device: gpu_check needs a CUDA host (torch.cuda.is_available() is False)" in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing built, nothing cached
    assert time.monotonic() - started < 60  # one torch import, on a busy machine
