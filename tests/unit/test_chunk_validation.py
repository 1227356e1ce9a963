"""Chunk validation: every rejection reason, its tolerances, and magnitudes far outside the envelope (no rclpy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.chunk_validation import infer_rate_hz, validate_chunk
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ChunkRejected

EMB = load_embodiment("so101")
T0 = 1000.0


# ---- validation reasons ------------------------------------------------------------------

def _valid(steps=10) -> ActionChunk:
    k = np.arange(steps)[:, None] / EMB.control_rate_hz
    return ActionChunk(EMB.joint_names, EMB.home + 0.5 * k, T0, EMB.control_rate_hz)


def _reason(chunk: ActionChunk, now=T0) -> str:
    with pytest.raises(ChunkRejected) as exc:
        validate_chunk(chunk, EMB, now)
    return exc.value.reason


def test_valid_chunk_is_reordered_to_embodiment_order():
    c = _valid()
    perm = [5, 3, 1, 0, 2, 4]
    shuffled = dataclasses.replace(c, joint_names=[c.joint_names[i] for i in perm],
                                   positions=c.positions[:, perm])
    out = validate_chunk(shuffled, EMB, T0 + 0.05)
    assert out.joint_names == EMB.joint_names
    np.testing.assert_allclose(out.positions, c.positions)
    assert out.received_s == T0 + 0.05


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: dataclasses.replace(c, positions=np.zeros((0, 6))), "empty"),
        (lambda c: dataclasses.replace(c, positions=c.positions[:, :5]), "shape"),
        (lambda c: dataclasses.replace(c, joint_names=[*c.joint_names[:5], "elbow"]), "joint_names"),
        (lambda c: dataclasses.replace(c, joint_names=[*c.joint_names[:5], c.joint_names[0]]), "joint_names"),
        (lambda c: dataclasses.replace(c, joint_names=c.joint_names[:5], positions=c.positions[:, :5]),
         "joint_names"),
        (lambda c: dataclasses.replace(c, positions=np.where(np.eye(10, 6, 2) > 0, np.nan, c.positions)),
         "non_finite"),
        (lambda c: dataclasses.replace(c, positions=np.where(np.eye(10, 6) > 0, np.inf, c.positions)),
         "non_finite"),
        (lambda c: dataclasses.replace(c, rate_hz=15.0), "rate"),
        (lambda c: dataclasses.replace(c, stamp_s=T0 + 0.2), "future_stamp"),
        (lambda c: dataclasses.replace(c, stamp_s=T0 - 1.6), "too_old"),
        (lambda c: dataclasses.replace(c, stamp_s=float("nan")), "no_stamp"),
        (lambda c: dataclasses.replace(c, positions=c.positions + 1e307), "out_of_range"),
        (lambda c: dataclasses.replace(c, positions=np.full_like(c.positions, -1e307)), "out_of_range"),
        (lambda c: dataclasses.replace(c, positions=c.positions * 1e3), "out_of_range"),
        (lambda c: dataclasses.replace(c, positions=np.full((10, 6), 1.7976931348623157e308)), "out_of_range"),
        (lambda c: dataclasses.replace(c, rate_hz=float("inf")), "rate"),
        (lambda c: dataclasses.replace(c, stamp_s=1e300), "future_stamp"),
        (lambda c: dataclasses.replace(c, stamp_s=-1e300), "too_old"),
    ],
)
def test_each_validation_reason(mutate, reason):
    assert _reason(mutate(_valid())) == reason


def test_step_jump_limit_is_factor_times_velocity_over_rate():
    limit = EMB.safety.max_step_jump_factor * EMB.max_velocity[2] / EMB.control_rate_hz  # 0.3 rad
    c = _valid()
    ok = c.positions.copy()
    ok[5:, 2] += 0.95 * limit - 0.5 / EMB.control_rate_hz
    validate_chunk(dataclasses.replace(c, positions=ok), EMB, T0)
    bad = c.positions.copy()
    bad[5:, 2] += 1.05 * limit
    assert _reason(dataclasses.replace(c, positions=bad)) == "step_jump"


def test_tolerances_are_inclusive_of_small_errors():
    validate_chunk(dataclasses.replace(_valid(), stamp_s=T0 + 0.09), EMB, T0)  # within future tolerance
    validate_chunk(dataclasses.replace(_valid(), stamp_s=T0 - 1.4), EMB, T0)  # within age limit
    validate_chunk(dataclasses.replace(_valid(), rate_hz=30.2), EMB, T0)  # within rate tolerance


def test_infer_rate_from_time_from_start():
    assert infer_rate_hz([0.0, 1 / 30, 2 / 30, 3 / 30], 99.0) == pytest.approx(30.0)
    assert infer_rate_hz([0.0], 15.0) == 15.0
    for bad in ([0.1, 0.2, 0.3], [0.0, 0.1, 0.15, 0.3], [0.0, 0.0, 0.0], [0.0, -0.1]):
        with pytest.raises(ChunkRejected) as exc:
            infer_rate_hz(bad, 30.0)
        assert exc.value.reason == "time_from_start"
    with pytest.raises(ChunkRejected) as exc:
        infer_rate_hz([], 30.0)
    assert exc.value.reason == "empty"


def test_slightly_past_a_limit_is_accepted_far_past_is_rejected():
    margin = EMB.safety.chunk_limit_margin_fraction * (EMB.upper - EMB.lower)
    c = _valid(steps=1)
    near = c.positions.copy()
    near[0, 0] = EMB.upper[0] + 0.9 * margin[0]
    validate_chunk(dataclasses.replace(c, positions=near), EMB, T0)  # clamped later, not garbage
    far = c.positions.copy()
    far[0, 0] = EMB.upper[0] + 1.1 * margin[0]
    with pytest.raises(ChunkRejected, match=r"shoulder_pan .* outside its limits") as exc:
        validate_chunk(dataclasses.replace(c, positions=far), EMB, T0)
    assert exc.value.reason == "out_of_range"


def test_non_numeric_positions_are_a_shape_rejection():
    c = _valid()
    assert _reason(dataclasses.replace(c, positions=np.array([["a"] * 6] * 3, dtype=object))) == "shape"
