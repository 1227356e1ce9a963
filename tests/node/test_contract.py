"""The message contract (nodes/contract.py): ActionChunk -> JointTrajectory -> CDR bytes -> JointTrajectory ->
ActionChunk loses nothing the contract carries: names, positions (bit for bit, huge and non-finite values
included: validation is the driver's job, not the wire's), the capture stamp to the nanosecond, the rate
to a nanosecond of its period. Serialised with rclpy's own CDR code, as on the wire between processes."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rclpy.serialization import deserialize_message, serialize_message
from trajectory_msgs.msg import JointTrajectory

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.nodes.contract import (
    MAX_STAMP_S,
    ChunkMessages,
    chunk_to_msg,
    stamp_ns,
    stamp_to_msg,
    trajectory_to_chunk,
)

pytestmark = pytest.mark.ros

# Joint names: any text a ROS string carries (no NUL, no lone surrogates).
NAME = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=24)
STAMP = st.one_of(
    st.floats(min_value=1e-9, max_value=100.0),  # sim time: floats finer than a nanosecond
    st.floats(min_value=1e6, max_value=float(MAX_STAMP_S)),  # wall clock, up to the int32 seconds limit
    st.builds(lambda s, ns: s + ns * 1e-9, st.integers(1, MAX_STAMP_S - 1), st.integers(0, 999_999_999)),
    st.sampled_from([1.0, 1_700_000_000.123456789, float(MAX_STAMP_S), 2.0**31 - 1e-6]),
)
RATE = st.one_of(st.floats(min_value=0.5, max_value=2000.0), st.sampled_from([15.0, 30.0, 100.0, 1000.0, 7.0]))
VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e307, -1e307, 1.7976931348623157e308, 5e-324, -0.0]),
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chunks(draw: st.DrawFn) -> ActionChunk:
    dof = draw(st.integers(1, 12))
    names = draw(st.lists(NAME, min_size=dof, max_size=dof, unique=True))
    steps = draw(st.integers(1, 100))
    positions = draw(hnp.arrays(np.float64, (steps, dof), elements=VALUE))
    return ActionChunk(joint_names=names, positions=positions, stamp_s=draw(STAMP), rate_hz=draw(RATE))


def _wire(msg: JointTrajectory) -> JointTrajectory:
    return deserialize_message(serialize_message(msg), JointTrajectory)


def _fields(msg: JointTrajectory) -> tuple:
    """Everything a JointTrajectory carries, positions as raw bytes (NaN == NaN, -0.0 != 0.0). Not the CDR
    bytes: their alignment padding is uninitialised memory."""
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id, list(msg.joint_names),
            [(p.time_from_start.sec, p.time_from_start.nanosec, np.asarray(p.positions, np.float64).tobytes(),
              len(p.velocities), len(p.accelerations), len(p.effort)) for p in msg.points])


def _assert_round_trip(chunk: ActionChunk, back: ActionChunk) -> None:
    assert back.joint_names == chunk.joint_names
    assert back.positions.dtype == np.float64 and back.positions.shape == chunk.positions.shape
    # Bit for bit (NaN payloads aside): huge finite values must arrive as sent for validation to see them.
    np.testing.assert_array_equal(back.positions, chunk.positions)
    assert np.array_equal(np.signbit(back.positions), np.signbit(chunk.positions))
    assert stamp_ns(back.stamp_s) == stamp_ns(chunk.stamp_s)
    if math.ulp(chunk.stamp_s) >= 1e-9:
        assert back.stamp_s == chunk.stamp_s  # floats coarser than 1 ns: the very same float comes back
    else:
        assert abs(back.stamp_s - chunk.stamp_s) <= 0.5e-9 + 4 * math.ulp(chunk.stamp_s)
    if chunk.steps == 1:
        assert back.rate_hz == chunk.rate_hz  # one point has no spacing: the receiver's default
    else:
        assert abs(1.0 / back.rate_hz - 1.0 / chunk.rate_hz) <= 1e-9  # the period, to the nanosecond


@SETTINGS
@given(chunk=chunks())
def test_chunk_message_chunk_round_trip(chunk):
    msg = chunk_to_msg(chunk)
    # The stamp on the wire is the correctly rounded nanosecond of the capture time (exact arithmetic).
    ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    assert abs(Fraction(ns) - Fraction(chunk.stamp_s) * 10**9) <= Fraction(1, 2) + Fraction(1, 10**6)
    assert list(msg.joint_names) == chunk.joint_names and len(msg.points) == chunk.steps
    for k, point in enumerate(msg.points):
        t_ns = point.time_from_start.sec * 1_000_000_000 + point.time_from_start.nanosec
        assert abs(Fraction(t_ns) - Fraction(k) * 10**9 / Fraction(chunk.rate_hz)) <= Fraction(1, 2)
    back = trajectory_to_chunk(_wire(msg), default_rate_hz=chunk.rate_hz)
    _assert_round_trip(chunk, back)


@SETTINGS
@given(sequence=st.lists(chunks(), min_size=1, max_size=6), repeat=st.integers(1, 3))
def test_refilled_message_is_the_fresh_message(sequence, repeat):
    """ChunkMessages reuses one message while names, steps and rate stay: every fill must carry exactly
    what a freshly built message carries, and round-trip like it."""
    builder = ChunkMessages()
    for chunk in sequence:
        for i in range(repeat):  # the same shape again: the refill path
            shifted = ActionChunk(joint_names=chunk.joint_names, positions=chunk.positions[::-1].copy() if i else
                                  chunk.positions, stamp_s=chunk.stamp_s, rate_hz=chunk.rate_hz)
            msg = builder.fill(shifted)
            assert _fields(msg) == _fields(chunk_to_msg(shifted))
            _assert_round_trip(shifted, trajectory_to_chunk(_wire(msg), default_rate_hz=shifted.rate_hz))


def test_stamp_conversion_is_exact_where_float_multiplication_is_not():
    # 1.7e9 s: stamp * 1e9 is itself rounded to a multiple of 256 ns; splitting off the seconds is exact.
    stamp = 1_700_000_000.123456789
    exact = round(Fraction(stamp) * 10**9)
    assert stamp_ns(stamp) == exact
    msg = stamp_to_msg(stamp)
    assert msg.sec * 1_000_000_000 + msg.nanosec == exact
    assert msg.sec + msg.nanosec * 1e-9 == stamp


@pytest.mark.parametrize("stamp", [-1.0, float(MAX_STAMP_S) + 1.0, float("nan"), float("inf")])
def test_stamps_outside_the_message_type_are_refused(stamp):
    with pytest.raises(ValueError, match="stamp"):
        stamp_to_msg(stamp)


def test_unparseable_trajectories_are_rejected_with_a_reason():
    good = chunk_to_msg(ActionChunk(joint_names=["a", "b"], positions=np.zeros((3, 2)), stamp_s=5.0, rate_hz=10.0))
    no_stamp = _wire(good)
    no_stamp.header.stamp.sec = no_stamp.header.stamp.nanosec = 0
    ragged = _wire(good)
    ragged.points[1].positions = [0.0]
    empty = _wire(good)
    empty.points = []
    uneven = _wire(good)
    uneven.points[2].time_from_start.sec = 7
    for msg, reason in ((no_stamp, "no_stamp"), (ragged, "shape"), (empty, "empty"), (uneven, "time_from_start")):
        with pytest.raises(ChunkRejected) as info:
            trajectory_to_chunk(msg, default_rate_hz=10.0)
        assert info.value.reason == reason
