"""ChunkScheduler: time indexing, latency handling, C1 splices, starvation and counters (no rclpy)."""

from __future__ import annotations

import numpy as np
import pytest

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.core.scheduler import MAX_BLEND_DEPTH, ChunkScheduler, pchip_tangents, smoothstep

RATE = 30.0
DOF = 2
NAMES = ["a", "b"]


def ramp_chunk(stamp: float, start: float = 0.0, velocity: float = 1.0, steps: int = 30,
               rate: float = RATE) -> ActionChunk:
    """Both joints move at ``velocity`` units/s from ``start``: step k = start + velocity * k / rate."""
    k = np.arange(steps)[:, None]
    pos = start + velocity * k / rate * np.ones((1, DOF))
    return ActionChunk(NAMES, pos, stamp, rate)


def ticks(t0: float, n: int, rate: float = RATE) -> np.ndarray:
    return t0 + np.arange(n) / rate


def test_no_target_before_first_chunk():
    s = ChunkScheduler(DOF, RATE)
    assert s.target(10.0) is None
    assert not s.has_trajectory


def test_steps_hit_exactly_and_interpolation_is_between_neighbours():
    s = ChunkScheduler(DOF, RATE, blend_ticks=0)
    rng = np.random.default_rng(3)
    pos = np.cumsum(rng.normal(0, 0.05, size=(30, DOF)), axis=0)
    s.accept(ActionChunk(NAMES, pos, 5.0, RATE), now_s=5.0, executing=False)
    for k in range(30):
        np.testing.assert_allclose(s.target(5.0 + k / RATE), pos[k], atol=1e-12)
    # Monotone cubic: never outside the two neighbouring steps (no overshoot between waypoints).
    for k in range(29):
        for frac in (0.1, 0.37, 0.5, 0.81):
            p = s.target(5.0 + (k + frac) / RATE)
            lo = np.minimum(pos[k], pos[k + 1]) - 1e-12
            hi = np.maximum(pos[k], pos[k + 1]) + 1e-12
            assert np.all(p >= lo) and np.all(p <= hi), (k, frac, p, lo, hi)


def test_linear_chunk_interpolates_linearly():
    s = ChunkScheduler(DOF, RATE, blend_ticks=0)
    s.accept(ramp_chunk(1.0, velocity=0.6), now_s=1.0, executing=False)
    for t in np.linspace(1.0, 1.0 + 29 / RATE, 97):
        np.testing.assert_allclose(s.target(t), 0.6 * (t - 1.0), atol=1e-12)


def test_pchip_tangents_zero_at_extremum_and_one_sided_at_ends():
    pos = np.array([[0.0], [1.0], [0.0], [1.0], [2.0]])
    m = pchip_tangents(pos, rate_hz=10.0)
    assert m[1, 0] == 0.0 and m[2, 0] == 0.0  # local extrema
    assert m[0, 0] == pytest.approx(10.0) and m[4, 0] == pytest.approx(10.0)
    assert m[3, 0] == pytest.approx(10.0)  # harmonic mean of equal slopes


def test_executing_indexes_by_time_and_skips_past_steps():
    s = ChunkScheduler(DOF, RATE, blend_ticks=0)
    s.accept(ramp_chunk(10.0, velocity=0.0), now_s=10.0, executing=False)
    s.target(10.0)
    # Captured at 10.1, arrives 200 ms later while the robot was executing the first chunk.
    info = s.accept(ramp_chunk(10.1, start=1.0, velocity=1.0), now_s=10.3, executing=True)
    assert info.mode == "time_indexed"
    assert info.latency_s == pytest.approx(0.2)
    assert info.held_s == pytest.approx(0.0)
    assert info.anchor_s == pytest.approx(10.1)
    assert info.skipped_steps == 6
    np.testing.assert_allclose(s.target(10.3), 1.0 + 6 / RATE, atol=1e-9)
    assert s.stats.last_latency_s == pytest.approx(0.2)


def test_slow_first_inference_reanchors_and_skips_no_step():
    """LeRobot's SO-101 skipped 21 of 30 actions after a slow first inference: we must skip none."""
    s = ChunkScheduler(DOF, RATE, blend_ticks=4)
    chunk = ramp_chunk(100.0, start=0.2, velocity=0.9)
    info = s.accept(chunk, now_s=100.8, executing=False)  # 800 ms warm-up inference
    assert info.mode == "reanchored"
    assert info.skipped_steps == 0
    assert info.latency_s == pytest.approx(0.8)
    assert info.anchor_s == pytest.approx(100.8)
    targets = np.array([s.target(t) for t in ticks(100.8, 30)])
    np.testing.assert_allclose(targets, chunk.positions, atol=1e-12)  # every step, in order, from 0


def test_first_chunk_with_executing_true_still_reanchors_when_nothing_was_running():
    s = ChunkScheduler(DOF, RATE)
    info = s.accept(ramp_chunk(50.0), now_s=50.5, executing=True)
    assert info.mode == "reanchored" and info.skipped_steps == 0


def test_partial_hold_shifts_anchor_by_measured_hold_time():
    s = ChunkScheduler(DOF, RATE, blend_ticks=0)
    # Old chunk: 10 steps from t=0, so motion ends at 9/30 s = 0.3 s.
    s.accept(ramp_chunk(0.0, steps=10), now_s=0.0, executing=False)
    for t in ticks(0.0, 12):
        s.target(t)
    # New chunk captured at 0.2 s, arrives at 0.5 s: moving 0.2..0.3, holding 0.3..0.5.
    info = s.accept(ramp_chunk(0.2, start=0.2), now_s=0.5, executing=True)
    assert info.mode == "partial"
    assert info.held_s == pytest.approx(0.2)
    assert info.anchor_s == pytest.approx(0.4)
    assert info.skipped_steps == 3  # 0.1 s of the chunk really was executed-equivalent


@pytest.mark.parametrize("stamp", [5.0, 4.0])
def test_out_of_order_and_duplicate_stamps_rejected(stamp):
    s = ChunkScheduler(DOF, RATE)
    s.accept(ramp_chunk(5.0), now_s=5.1, executing=False)
    with pytest.raises(ChunkRejected) as exc:
        s.accept(ramp_chunk(stamp), now_s=5.2, executing=True)
    assert exc.value.reason == "out_of_order"
    assert s.stats.out_of_order == 1
    assert s.stats.chunks_accepted == 1


def test_chunk_entirely_in_the_past_while_executing_is_expired():
    s = ChunkScheduler(DOF, RATE)
    s.accept(ramp_chunk(0.0, steps=30, velocity=0.0), now_s=0.0, executing=False)
    s.target(0.0)
    with pytest.raises(ChunkRejected) as exc:
        s.accept(ramp_chunk(0.1, steps=5), now_s=0.5, executing=True)
    assert exc.value.reason == "expired"
    assert s.stats.expired == 1


def test_starvation_holds_last_step_and_counts_ticks():
    s = ChunkScheduler(DOF, RATE, blend_ticks=0)
    chunk = ramp_chunk(0.0, steps=10)
    s.accept(chunk, now_s=0.0, executing=False)
    out = [s.target(t) for t in ticks(0.0, 16)]
    assert s.stats.starvation_ticks == 6  # ticks 10..15 are past step 9
    for p in out[10:]:
        np.testing.assert_allclose(p, chunk.positions[-1])
    assert s.is_exhausted(15 / RATE)


def test_max_steps_truncates_chunk():
    s = ChunkScheduler(DOF, RATE, blend_ticks=0, max_steps=8)
    chunk = ramp_chunk(0.0, steps=30)
    s.accept(chunk, now_s=0.0, executing=False)
    np.testing.assert_allclose(s.target(20 / RATE), chunk.positions[7])
    assert s.is_exhausted(8 / RATE)


def _splice_run(blend_ticks: int, offset: float) -> np.ndarray:
    """Old chunk at 1 unit/s; at tick 10 a new chunk arrives offset by ``offset``; targets at each tick."""
    s = ChunkScheduler(DOF, RATE, blend_ticks=blend_ticks)
    s.accept(ramp_chunk(0.0, velocity=1.0), now_s=0.0, executing=False)
    out = []
    for i, t in enumerate(ticks(0.0, 25)):
        if i == 10:
            s.accept(ramp_chunk(t, start=1.0 * t + offset, velocity=1.0), now_s=t, executing=True)
        out.append(s.target(t)[0])
    return np.array(out)


def test_splice_blend_keeps_position_and_velocity_continuous():
    per_tick_limit = 3.0 / RATE  # SO-101 joints: 3 rad/s
    offset = 0.15
    blended = _splice_run(blend_ticks=4, offset=offset)
    hard = _splice_run(blend_ticks=0, offset=offset)
    steps_blended, steps_hard = np.diff(blended), np.diff(hard)
    # A hard switch jumps by more than the rate limit allows; the blend stays within it.
    assert np.max(np.abs(steps_hard)) > per_tick_limit
    assert np.max(np.abs(steps_blended)) <= per_tick_limit
    # Velocity continuity: the per-tick change of velocity stays well below the hard switch's.
    assert np.max(np.abs(np.diff(steps_hard))) == pytest.approx(offset, rel=1e-6)
    assert np.max(np.abs(np.diff(steps_blended))) < 0.5 * offset
    # The blend ends on the new trajectory exactly.
    np.testing.assert_allclose(blended[15:], hard[15:], atol=1e-12)


def test_splice_derivative_matches_old_at_start_and_new_at_end():
    s = ChunkScheduler(DOF, RATE, blend_ticks=4)
    s.accept(ramp_chunk(0.0, velocity=1.0), now_s=0.0, executing=False)
    ts = 10 / RATE
    s.target(ts)
    s.accept(ramp_chunk(ts, start=ts + 0.1, velocity=-0.5), now_s=ts, executing=True)
    assert s.target(ts)[0] == pytest.approx(ts)  # position continuous at the splice tick
    eps = 1e-6
    v_start = (s.target(ts + eps)[0] - s.target(ts)[0]) / eps
    assert v_start == pytest.approx(1.0, abs=1e-3)
    te = ts + s.blend_duration_s
    v_end = (s.target(te + eps)[0] - s.target(te)[0]) / eps
    assert v_end == pytest.approx(-0.5, abs=1e-3)


def test_smoothstep_is_c1():
    assert smoothstep(0.0) == 0.0 and smoothstep(1.0) == 1.0 and smoothstep(0.5) == 0.5
    eps = 1e-6
    assert (smoothstep(eps) - smoothstep(0)) / eps < 1e-5
    assert (smoothstep(1) - smoothstep(1 - eps)) / eps < 1e-5


def test_chunks_executed_counts_only_chunks_that_drove_a_tick():
    s = ChunkScheduler(DOF, RATE, blend_ticks=2)
    s.accept(ramp_chunk(0.0), now_s=0.0, executing=False)
    s.target(0.0)
    s.target(1 / RATE)
    assert s.stats.chunks_executed == 1
    t = 2 / RATE
    s.accept(ramp_chunk(0.05), now_s=t, executing=True)
    s.accept(ramp_chunk(0.06), now_s=t, executing=True)  # supersedes before any tick used it
    s.target(t)  # splice tick: the new chunk's weight is still 0
    assert s.stats.chunks_executed == 1
    s.target(t + 1 / RATE)
    assert s.stats.chunks_executed == 2
    assert s.stats.chunks_accepted == 3


def test_hold_then_new_chunk_blends_out_of_the_hold():
    s = ChunkScheduler(DOF, RATE, blend_ticks=4)
    s.accept(ramp_chunk(0.0), now_s=0.0, executing=False)
    s.target(0.2)
    held = np.array([0.3, 0.3])
    s.hold(held, now_s=0.2)
    np.testing.assert_allclose(s.target(0.5), held)
    assert not s.is_exhausted(5.0) and s.stats.starvation_ticks == 0
    info = s.accept(ramp_chunk(0.6, start=0.3), now_s=0.9, executing=False)
    assert info.mode == "reanchored" and info.skipped_steps == 0
    np.testing.assert_allclose(s.target(0.9), held)  # no jump at the splice tick
    assert s.held_time_s(0.2, 0.9) == pytest.approx(0.7)


def test_chunk_flood_bounds_blend_depth_and_stays_finite():
    s = ChunkScheduler(DOF, RATE, blend_ticks=20)
    s.accept(ramp_chunk(0.0), now_s=0.0, executing=False)
    for i in range(1, 50):
        t = i * 0.001
        s.accept(ramp_chunk(t, start=0.01 * i), now_s=t, executing=True)
    depth = s._traj.depth()  # the flood must not grow an unbounded chain
    assert depth <= MAX_BLEND_DEPTH
    assert np.all(np.isfinite(s.target(0.05)))


def test_clear_keeps_last_stamp_and_forget_stamps_resets():
    s = ChunkScheduler(DOF, RATE)
    s.accept(ramp_chunk(3.0), now_s=3.0, executing=False)
    s.clear(3.1)
    assert s.target(3.2) is None
    with pytest.raises(ChunkRejected):
        s.accept(ramp_chunk(2.0), now_s=3.2, executing=False)
    s.forget_stamps()
    s.accept(ramp_chunk(2.0), now_s=2.0, executing=False)
    assert s.stats.chunks_accepted == 2


def test_for_embodiment_reads_rates_and_blend():
    from molmoact2_ros.core.embodiment import load_embodiment

    emb = load_embodiment("franka_droid")
    s = ChunkScheduler.for_embodiment(emb)
    assert s.tick_rate_hz == 100.0 and s.blend_ticks == 10 and s.max_steps == 8 and s.dof == 8


def test_large_disagreement_stretches_the_blend_within_the_velocity_limit():
    vmax = np.array([3.0, 3.0])
    limit = vmax / RATE

    def run(max_velocity) -> tuple[np.ndarray, ChunkScheduler]:
        s = ChunkScheduler(DOF, RATE, blend_ticks=4, max_velocity=max_velocity)
        s.accept(ramp_chunk(0.0, velocity=1.0), now_s=0.0, executing=False)
        out = []
        for i, t in enumerate(ticks(0.0, 30)):
            if i == 10:  # the new plan is 0.25 ahead: a 4-tick blend would peak at 1 + 2.8 rad/s
                s.accept(ramp_chunk(t, start=t + 0.25, velocity=1.0), now_s=t, executing=True)
            out.append(s.target(t)[0])
        return np.array(out), s

    fixed, s_fixed = run(None)
    stretched, s_stretched = run(vmax)
    assert np.max(np.abs(np.diff(fixed))) > limit[0]  # 4 ticks are too short for this disagreement
    assert np.max(np.abs(np.diff(stretched))) <= limit[0]
    # The blend's own speed is capped at a third of the limit, on top of the plan's 1 rad/s.
    assert np.max(np.abs(np.diff(stretched))) * RATE <= 1.0 + vmax[0] / 3 + 1e-9
    assert s_stretched.stats.stretched_blends == 1 and s_fixed.stats.stretched_blends == 0
    np.testing.assert_allclose(stretched[10 + 12:], fixed[10 + 12:], atol=1e-12)  # both end on the new plan


def test_small_disagreement_keeps_the_configured_blend():
    s = ChunkScheduler(DOF, RATE, blend_ticks=4, max_velocity=np.array([3.0, 3.0]))
    s.accept(ramp_chunk(0.0), now_s=0.0, executing=False)
    s.accept(ramp_chunk(0.1, start=0.1 + 0.02), now_s=0.1, executing=True)
    assert s.stats.stretched_blends == 0
    assert s._traj.duration_s == pytest.approx(4 / RATE)


def test_small_disagreement_at_a_high_tick_rate_stretches_the_blend_within_the_acceleration_limit():
    """Franka at 100 Hz: successive chunks that start 0.011 rad apart (the model's 256-bin state rounding)
    would be blended over 10 ticks at 6 d / T^2 = 6.6 rad/s^2, above panda_joint2's 3.75."""
    from molmoact2_ros.core.embodiment import load_embodiment

    emb = load_embodiment("franka_droid")

    def run(stretch: bool) -> tuple[np.ndarray, ChunkScheduler]:
        s = ChunkScheduler(emb.dof, emb.tick_rate_hz, blend_ticks=emb.chunk.blend_ticks,
                           max_acceleration=emb.max_acceleration if stretch else None)
        still = ActionChunk(emb.joint_names, np.tile(emb.home, (15, 1)), 0.0, emb.control_rate_hz)
        s.accept(still, now_s=0.0, executing=False)
        out = []
        for i in range(60):
            t = i / emb.tick_rate_hz
            if i == 5:
                shifted = emb.home.copy()
                shifted[1] += 0.011
                s.accept(ActionChunk(emb.joint_names, np.tile(shifted, (15, 1)), t, emb.control_rate_hz),
                         now_s=t, executing=True)
            out.append(s.target(t)[1])
        return np.array(out), s

    fixed, _ = run(False)
    stretched, s = run(True)
    accel = lambda x: np.max(np.abs(np.diff(x, 2))) * emb.tick_rate_hz**2  # noqa: E731
    assert accel(fixed) > emb.max_acceleration[1]
    assert accel(stretched) <= emb.max_acceleration[1] / 3 * 1.05  # a third of the limit, discretised
    assert s.stats.stretched_blends == 1 and stretched[-1] == pytest.approx(emb.home[1] + 0.011)
