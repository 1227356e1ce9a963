"""The Think fast path (think_fast_path.py) against the remote code run as shipped: bit-identical chunks,
depth codes, re-predicted counts and caches over a sequence of scenes, and the fast path really taken."""

from __future__ import annotations

import numpy as np
import pytest

from molmoact2_ros.core.chunk import Observation
from molmoact2_ros.core.embodiment import load_embodiment

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime  # noqa: E402
from molmoact2_ros.backends.policy.think_fast_path import EarlyRule  # noqa: E402
from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint  # noqa: E402

SO101 = load_embodiment("so101")


@pytest.fixture(scope="module")
def runtimes():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads make single calls take seconds
    ckpt = ensure_tiny_checkpoint(SO101, think=True)
    fast = MolmoAct2Runtime(ckpt, SO101, seed=0)
    reference = MolmoAct2Runtime(ckpt, SO101, seed=0, think_fast_path=False)
    yield fast, reference
    fast.close()
    reference.close()
    torch.set_num_threads(threads)


def _background(seed: int) -> np.ndarray:
    cam = SO101.cameras[0]
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:cam.height, 0:cam.width].astype(np.float32)
    img = np.stack([90 + 60 * np.sin(x / 70.0 + seed), 80 + 50 * np.cos(y / 55.0), 120 + 40 * np.sin((x + y) / 90)], -1)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _frames() -> list[tuple[str, dict[str, np.ndarray], str]]:
    """(what, images, instruction): the cases a Think buffer meets, in order."""
    a, b = _background(0), _background(1)
    square = a.copy()
    square[300:340, 330:370] = (230, 30, 30)
    band = a.copy()
    band[:120] = np.random.default_rng(7).integers(0, 256, band[:120].shape, dtype=np.uint8)
    noisy = np.clip(a.astype(np.int16) + np.random.default_rng(3).integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    task, other = "pick up the red cube", "open the drawer"
    return [
        ("fresh", {"front": a, "wrist": b}, task),
        ("same frame", {"front": a, "wrist": b}, task),
        ("same content, new array", {"front": a.copy(), "wrist": b}, task),
        ("sensor noise", {"front": noisy, "wrist": b}, task),
        ("small object moves", {"front": square, "wrist": b}, task),
        ("a band changes", {"front": band, "wrist": b}, task),
        ("new instruction (longer prompt)", {"front": band, "wrist": b}, other),
        ("back to the scene", {"front": a, "wrist": b}, other),
    ]


def test_fast_path_outputs_equal_the_shipped_code(runtimes):
    fast, reference = runtimes
    caches: dict[str, dict | None] = {"fast": None, "ref": None}
    builds = {"fast": 0, "ref": 0}
    originals = {name: rt._bias_memo.build for name, rt in (("fast", fast), ("ref", reference))}
    for name, rt in (("fast", fast), ("ref", reference)):
        def counting(*args, _name=name, **kwargs):
            builds[_name] += 1
            return originals[_name](*args, **kwargs)
        rt._bias_memo.build = counting
    try:
        for i, (what, images, task) in enumerate(_frames()):
            obs = Observation(images=images, state=SO101.home.copy(), instruction=task, stamp_s=float(i))
            out = {}
            for name, rt in (("fast", fast), ("ref", reference)):
                chunk, info = rt.predict(obs, enable_depth_reasoning=True, depth_cache=caches[name])
                caches[name] = info["depth_cache"]
                out[name] = (chunk, info)
                # A continuous call in between: the seeded noise streams must stay in step too.
                cont, _ = rt.predict(obs)
                out[name + " continuous"] = cont
            (fc, fi), (rc, ri) = out["fast"], out["ref"]
            assert np.array_equal(fc.positions, rc.positions), what
            assert np.array_equal(out["fast continuous"].positions, out["ref continuous"].positions), what
            np.testing.assert_array_equal(fi["depth_bins"], ri["depth_bins"], err_msg=what)
            assert fi["depth_cells_repredicted"] == ri["depth_cells_repredicted"], what
            np.testing.assert_array_equal(fi["depth_cache"]["image"], ri["depth_cache"]["image"], err_msg=what)
            np.testing.assert_array_equal(fi["depth_cache"]["depth_bins"], ri["depth_cache"]["depth_bins"])
            if what == "same frame":
                assert fi["depth_cells_repredicted"] == 0
            if what in ("small object moves", "a band changes"):
                assert 0 < fi["depth_cells_repredicted"] < 100, what
    finally:
        fast._bias_memo.build, reference._bias_memo.build = originals["fast"], originals["ref"]
    n = len(_frames())
    # The fast path was taken: one bias per prompt length (two instructions), the rule on the worker.
    assert builds["fast"] == 2 and builds["ref"] == n
    assert fast._rule_worker is not None and reference._rule_worker is None


def test_rule_result_is_used_only_for_the_inputs_it_was_computed_on(runtimes):
    fast, _ = runtimes
    probe = fast._depth_probe
    a, b = _background(0), _background(1)
    small_a = probe.resize(a, 320)
    early = EarlyRule(future=fast._rule_worker.submit(probe.compute, a, small_a, 100), current=a, previous=small_a,
                      num_depth_codes=100)
    assert early.matches(a, small_a, 100) and early.matches(a.copy(), small_a.copy(), 100)
    assert not early.matches(b, small_a, 100) and not early.matches(a, small_a, 64)
    from molmoact2_ros.backends.policy.think_fast_path import depth_call

    depth_call.early = early  # stale for these inputs: the probe must compute the mask afresh
    try:
        mask = probe(b, small_a, num_depth_codes=100)
    finally:
        depth_call.early = None
    np.testing.assert_array_equal(mask, probe.original(b, a, num_depth_codes=100))
    assert np.count_nonzero(mask) > 0
