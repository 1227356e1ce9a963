"""Motion shaper: velocity, acceleration and envelope braking hold for any target, including hostile ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact2_ros.core.motion_limits import MotionShaper, braking_speed, clamp_to_envelope

LOWER, UPPER = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
VMAX, AMAX = np.array([3.0, 1.0]), np.array([12.0, 4.0])
DT = 1.0 / 30.0
EPS = 1e-9


def shaper() -> MotionShaper:
    return MotionShaper(LOWER, UPPER, VMAX, AMAX)


def test_clamp_to_envelope_reports_clipping():
    c, hit = clamp_to_envelope(np.array([2.0, -2.0, 0.1]), np.array([-1.0] * 3), np.array([1.0] * 3))
    np.testing.assert_allclose(c, [1.0, -1.0, 0.1])
    assert hit
    assert not clamp_to_envelope(np.array([0.0]), np.array([-1.0]), np.array([1.0]))[1]


def test_braking_speed_leaves_room_to_stop_for_any_tick_lengths():
    a = np.array([12.0])
    rng = np.random.default_rng(0)
    for distance in np.linspace(0.0, 1.0, 97):
        # Move at the bound this tick, then brake at a with ticks of random length: never past the distance.
        dt = float(rng.uniform(0.1, 1.0) * DT)
        speed = float(braking_speed(np.array([distance]), a, dt)[0])
        travelled = speed * dt
        assert travelled + speed**2 / (2 * a[0]) <= distance + 1e-12
        while speed > 0:
            dt = float(rng.uniform(0.01, 1.0) * DT)
            speed = max(speed - a[0] * dt, 0.0)
            travelled += speed * dt
        assert travelled <= distance + 1e-12
    assert braking_speed(np.array([0.0]), a, DT)[0] == pytest.approx(0.0)
    assert braking_speed(np.array([-1.0]), a, DT)[0] == pytest.approx(0.0)  # past the obstacle: stand still


def test_stop_from_full_speed_is_controlled():
    s = shaper()
    q, v = np.zeros(2), VMAX.copy()
    speeds = []
    for _ in range(40):
        out = s.brake(q, v, DT)
        assert np.all(np.abs(out.velocity - v) <= AMAX * DT + EPS)
        q, v = out.command, out.velocity
        speeds.append(np.abs(v))
    speeds = np.array(speeds)
    assert np.all(np.diff(speeds, axis=0) <= EPS)  # never speeds up while stopping
    assert np.all(speeds[-1] == 0.0)
    ticks_to_stop = int(np.argmax(speeds[:, 0] == 0.0))
    assert ticks_to_stop == pytest.approx(VMAX[0] / (AMAX[0] * DT), abs=1)  # 0.25 s, not one tick


def test_feasible_trajectory_is_followed_exactly():
    s = shaper()
    t = np.arange(60) * DT
    traj = np.stack([0.3 * np.sin(2 * t), 0.2 * np.cos(t)], axis=1)  # well inside every limit
    q, v, prev = traj[0].copy(), np.zeros(2), None
    v = np.array([0.6, 0.0])  # moving with the trajectory already
    prev = traj[0]
    for k in range(1, len(traj)):
        out = s.follow(q, v, traj[k], prev, DT)
        np.testing.assert_allclose(out.command, traj[k], atol=1e-12)
        assert not out.shaped
        q, v, prev = out.command, out.velocity, traj[k]


def test_jump_in_the_target_is_approached_without_overshoot():
    s = shaper()
    q, v, prev = np.zeros(2), np.zeros(2), None
    target = np.array([0.5, -0.5])
    cmds = []
    for _ in range(90):
        out = s.follow(q, v, target, prev, DT)
        q, v, prev = out.command, out.velocity, target
        cmds.append(q)
    cmds = np.array(cmds)
    np.testing.assert_allclose(cmds[-1], target, atol=1e-9)
    assert np.all(cmds[:, 0] <= target[0] + 1e-9) and np.all(cmds[:, 1] >= target[1] - 1e-9)


def test_approach_speed_caps_only_the_closing_not_the_plan():
    s = shaper()
    q, v, prev = np.zeros(2), np.zeros(2), None
    plan_v = np.array([0.9, 0.3])
    cap = np.array([0.2, 0.1])
    for k in range(1, 120):
        target = 0.3 + plan_v * k * DT  # starts 0.3 away and keeps moving faster than the cap
        out = s.follow(q, v, np.minimum(target, UPPER - 0.1), prev, DT, approach_speed=cap)
        q, v, prev = out.command, out.velocity, np.minimum(target, UPPER - 0.1)
    np.testing.assert_allclose(q, prev, atol=1e-6)  # caught up with a plan that never stopped


def test_envelope_braking_stops_at_the_limit_within_the_acceleration():
    s = shaper()
    q, v = np.array([0.0, 0.0]), VMAX.copy()
    for _ in range(60):
        out = s.follow(q, v, UPPER + 5.0, None, DT)  # a target beyond the limit, approached at full speed
        assert np.all(out.command <= UPPER + EPS)
        assert np.all(np.abs(out.velocity - v) <= AMAX * DT + EPS)
        q, v = out.command, out.velocity
    assert q[0] == pytest.approx(UPPER[0], abs=1e-6)


_vectors = st.lists(st.floats(-1e307, 1e307, allow_nan=False), min_size=2, max_size=2).map(np.array)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_vectors, st.floats(0.0, 3 * DT)), min_size=1, max_size=40),
       st.floats(-1, 1), st.floats(-1, 1))
def test_any_target_sequence_respects_every_limit(steps, q0, v0):
    s = shaper()
    q = np.clip(np.array([q0, 2 * q0]), LOWER, UPPER)
    # A consistent start: a speed from which the limits ahead can still be braked for.
    v = np.clip(np.array([v0, v0]) * VMAX, -np.sqrt(2 * AMAX * (q - LOWER)), np.sqrt(2 * AMAX * (UPPER - q)))
    prev = None
    for target, dt in steps:
        dt = min(dt, DT)
        clamped, _ = clamp_to_envelope(target, LOWER, UPPER)
        out = s.follow(q, v, clamped, prev, dt)
        assert np.all(np.isfinite(out.command))
        assert np.all(out.command >= LOWER - EPS) and np.all(out.command <= UPPER + EPS)
        if dt >= 1e-6:
            assert np.all(np.abs(out.velocity) <= VMAX + EPS)
            assert np.all(np.abs(out.velocity - v) <= AMAX * dt + 1e-6)
        q, v, prev = out.command, out.velocity, clamped
