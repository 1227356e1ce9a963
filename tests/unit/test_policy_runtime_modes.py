"""MolmoAct2Runtime additions for the policy node: action-mode checks and the depth-rule probe."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from molmoact2_ros.core.chunk import Observation
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ConfigError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime  # noqa: E402
from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint  # noqa: E402

SO101 = load_embodiment("so101")


@pytest.fixture(scope="module")
def think_runtime():
    # One torch thread: on a shared 2-core machine more threads make single calls take seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runtime = MolmoAct2Runtime(ensure_tiny_checkpoint(SO101, think=True), SO101, seed=0)
    yield runtime
    runtime.close()
    torch.set_num_threads(threads)


@pytest.fixture
def no_heavy_load(monkeypatch):
    def refuse(self):
        raise AssertionError("the model was loaded before the options were checked")
    monkeypatch.setattr(MolmoAct2Runtime, "_load", refuse)


def test_unknown_action_mode(no_heavy_load):
    with pytest.raises(ConfigError, match="action mode 'tokens'"):
        MolmoAct2Runtime(ensure_tiny_checkpoint(SO101), SO101, action_mode="tokens")


def test_discrete_needs_a_fast_tokenizer_directory(tmp_path, no_heavy_load):
    ckpt = ensure_tiny_checkpoint(SO101)
    with pytest.raises(ConfigError, match="MolmoAct2-FAST-Tokenizer"):
        MolmoAct2Runtime(ckpt, SO101, action_mode="discrete")
    with pytest.raises(ConfigError, match="not found"):
        MolmoAct2Runtime(ckpt, SO101, action_mode="discrete", action_tokenizer_dir=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        MolmoAct2Runtime(ckpt, SO101, action_mode="discrete", action_tokenizer_dir=tmp_path)


def _scene(square_x: int) -> np.ndarray:
    h, w = SO101.cameras[0].height, SO101.cameras[0].width
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    img[200:260, square_x:square_x + 60] = (250, 20, 20)
    return img


def _obs(square_x: int) -> Observation:
    images = {c.name: _scene(square_x) for c in SO101.cameras}
    return Observation(images=images, state=SO101.home.copy(), instruction="pick", stamp_s=1.0)


def test_depth_probe_reports_the_models_own_decision_once(think_runtime):
    rt = think_runtime
    module = sys.modules[type(rt._model).__module__]
    rule = module._compute_depth_update_mask
    calls = []
    original = rule.original

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    before, after = _obs(100), _obs(130)
    _, first = rt.predict(before, enable_depth_reasoning=True)
    small = first["depth_cache"]
    assert small["image"].shape == (320, 320, 3)  # stored at the rule's resolution
    full = {"image": before.images["front"], "depth_bins": first["depth_bins"]}
    rule.original = counting
    try:
        _, with_small = rt.predict(after, enable_depth_reasoning=True, depth_cache=small)
        _, with_full = rt.predict(after, enable_depth_reasoning=True, depth_cache=full)
    finally:
        rule.original = original
    assert len(calls) == 2  # once per call: the runtime no longer runs the rule beside the model
    expected = int(np.count_nonzero(original(after.images["front"], before.images["front"], num_depth_codes=100)))
    assert 0 < expected < 100
    # A pre-resized cache image gives exactly the decision and codes of the full-resolution one.
    assert with_small["depth_cells_repredicted"] == with_full["depth_cells_repredicted"] == expected
    assert with_small["depth_repredicted_fraction"] == expected / 100
    np.testing.assert_array_equal(with_small["depth_bins"], with_full["depth_bins"])
    _, unchanged = rt.predict(after, enable_depth_reasoning=True, depth_cache=with_small["depth_cache"])
    assert unchanged["depth_cells_repredicted"] == 0
