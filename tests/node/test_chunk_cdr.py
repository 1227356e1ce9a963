"""The driver's byte-level chunk decoder (nodes/chunk_cdr.py) against rclpy's own deserialisation.

Every chunk is serialised by rclpy (the bytes the driver receives with ``raw=True``) and decoded both
ways: ``decode_chunk`` must give what ``trajectory_to_chunk`` gives on the deserialised message, for
hostile values too; truncated or corrupted bytes may only ever be ``ChunkRejected``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.errors import ChunkRejected
from molmoact2_ros.nodes.chunk_cdr import decode_chunk, point_count
from molmoact2_ros.nodes.contract import chunk_to_msg, trajectory_to_chunk

pytestmark = pytest.mark.ros

RATE = 30.0
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([1e307, -1e307, 0.0, -0.0, 5e-324]))
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=12)


def both(msg: JointTrajectory, max_steps: int = 1000) -> tuple[object, object]:
    """(trajectory_to_chunk result or its rejection reason, decode_chunk result or its rejection reason)."""
    def run(fn):
        try:
            return fn()
        except ChunkRejected as exc:
            return exc.reason
    return (run(lambda: trajectory_to_chunk(msg, RATE)),
            run(lambda: decode_chunk(serialize_message(msg), RATE, max_steps)))


def assert_same(a: object, b: object) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert isinstance(a, ActionChunk) and isinstance(b, ActionChunk)
    assert list(a.joint_names) == list(b.joint_names)
    assert a.stamp_s == b.stamp_s and a.rate_hz == b.rate_hz
    np.testing.assert_array_equal(a.positions, b.positions)  # NaN == NaN here, bit-level otherwise


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dof=st.integers(1, 14), steps=st.integers(1, 40),
       rate=st.sampled_from([15.0, 30.0, 100.0, 7.0]), stamp=st.floats(1.0, 2.0e9))
def test_decode_equals_rclpy_deserialisation(data, dof, steps, rate, stamp):
    joint_names = data.draw(st.lists(names, min_size=dof, max_size=dof))
    positions = np.array(data.draw(st.lists(values, min_size=dof * steps, max_size=dof * steps))).reshape(steps, dof)
    msg = chunk_to_msg(ActionChunk(joint_names=joint_names, positions=positions, stamp_s=stamp, rate_hz=rate))
    msg.header.frame_id = data.draw(st.text(max_size=20).filter(lambda s: "\0" not in s))
    if data.draw(st.booleans()):  # the other arrays of a point are skipped, whatever they hold
        for p in msg.points:
            p.velocities = [1.0] * data.draw(st.integers(0, 3))
            p.effort = [2.0] * data.draw(st.integers(0, 2))
    assert_same(*both(msg))


def _msg(rows: list[list[float]], stamp_sec: int = 100) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp.sec = stamp_sec
    msg.joint_names = [f"j{i}" for i in range(len(rows[0]) if rows and rows[0] else 2)]
    for k, row in enumerate(rows):
        msg.points.append(JointTrajectoryPoint(positions=row, time_from_start=Duration(nanosec=k * 33_333_333)))
    return msg


@pytest.mark.parametrize(("msg", "reason"), [
    (_msg([[0.0, 0.0]], stamp_sec=0), "no_stamp"),
    (_msg([]), "empty"),
    (_msg([[0.0, 0.0], [0.0]]), "shape"),
])
def test_parse_rejections_are_the_same_both_ways(msg, reason):
    a, b = both(msg)
    assert a == b == reason


def test_a_chunk_longer_than_max_steps_is_refused_before_its_points_are_read():
    rows = np.zeros((20_000, 6))
    msg = chunk_to_msg(ActionChunk(joint_names=[f"j{i}" for i in range(6)], positions=rows, stamp_s=5.0,
                                   rate_hz=RATE))
    data = serialize_message(msg)
    assert point_count(data) == 20_000
    with pytest.raises(ChunkRejected) as exc:
        decode_chunk(data, RATE, max_steps=120)
    assert exc.value.reason == "too_long" and "120" in str(exc.value)
    # Refused from the head alone: the same answer with every point cut off.
    with pytest.raises(ChunkRejected) as cut:
        decode_chunk(data[:200], RATE, max_steps=120)
    assert cut.value.reason == "too_long"


def test_truncated_and_corrupted_bytes_are_only_ever_rejections():
    rng = np.random.default_rng(0)
    msg = chunk_to_msg(ActionChunk(joint_names=["a", "b", "c"], positions=rng.normal(size=(30, 3)), stamp_s=9.5,
                                   rate_hz=RATE))
    data = serialize_message(msg)
    full = decode_chunk(data, RATE, 1000)
    decoded = []
    for cut in range(len(data)):
        try:
            got = decode_chunk(data[:cut], RATE, 1000)
        except ChunkRejected:
            continue
        decoded.append(cut)
        assert_same(full, got)
    # rclpy's serialized buffer can end in bytes past the message (EMBODIMENTS_AND_PEERS.md): cutting those
    # loses nothing; cutting into the message is always a rejection.
    assert decoded and decoded == list(range(decoded[0], len(data)))
    assert decoded[0] >= 30 * 3 * 8
    for _ in range(2000):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), size=rng.integers(1, 6)):
            bad[i] = int(rng.integers(0, 256))
        with contextlib.suppress(ChunkRejected):
            decode_chunk(bytes(bad), RATE, 1000)
