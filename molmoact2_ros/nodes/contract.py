"""The message contract between the policy and the drivers, in one place: ActionChunk <-> JointTrajectory.

``/molmoact2/action_chunk`` is a ``trajectory_msgs/JointTrajectory`` whose ``header.stamp`` is the capture
time of the observation the chunk came from, whose ``joint_names`` are the embodiment's action names,
and whose ``points[k].time_from_start`` is ``k / rate`` (ARCHITECTURE.md, message contract). The policy
node encodes with :func:`chunk_to_msg` / :class:`ChunkMessages`, the driver decodes with
:func:`trajectory_to_chunk`; recorders and evaluators use the same two, so the directions cannot drift
apart (tests/node/test_contract.py checks the round trip).

Stamps are converted exactly: float seconds -> integer nanoseconds by splitting off the whole seconds
first (``round(stamp_s * 1e9)`` loses up to 128 ns at today's epoch times, because the product itself is
rounded to a float), and back by ``sec + nanosec * 1e-9``, which returns the same float whenever floats
are coarser than a nanosecond (every wall-clock stamp) and is within half a nanosecond otherwise.
"""

from __future__ import annotations

import array
import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.chunk_validation import REJECT_EMPTY, REJECT_NO_STAMP, REJECT_SHAPE, infer_rate_hz
from molmoact2_ros.core.errors import ChunkRejected

NS_PER_S = 1_000_000_000
# builtin_interfaces/Time.sec is an int32.
MAX_STAMP_S = 2**31 - 1

__all__ = ["ChunkMessages", "chunk_to_msg", "stamp_from_msg", "stamp_ns", "stamp_to_msg", "trajectory_to_chunk"]


def stamp_ns(stamp_s: float) -> int:
    """ROS time in float seconds as integer nanoseconds, correctly rounded (see the module docstring)."""
    if not math.isfinite(stamp_s):
        raise ValueError(f"stamp {stamp_s!r} s is not finite")
    whole = math.floor(stamp_s)
    # Exact: a float minus its integer part loses nothing; the fraction times 1e9 is off by < 1e-7 ns.
    return int(whole) * NS_PER_S + round((stamp_s - whole) * NS_PER_S)


def stamp_to_msg(stamp_s: float) -> Time:
    ns = stamp_ns(stamp_s)
    if not 0 <= ns <= MAX_STAMP_S * NS_PER_S + NS_PER_S - 1:
        raise ValueError(f"stamp {stamp_s!r} s is outside builtin_interfaces/Time (0 .. 2^31 s)")
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def stamp_from_msg(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def chunk_to_msg(chunk: ActionChunk) -> JointTrajectory:
    """An ActionChunk as the contract's JointTrajectory: stamp = capture time, step k at k/rate."""
    msg = JointTrajectory()
    msg.header.stamp = stamp_to_msg(chunk.stamp_s)
    msg.joint_names = list(chunk.joint_names)
    for k, row in enumerate(np.asarray(chunk.positions, dtype=np.float64)):
        t_ns = round(k * NS_PER_S / chunk.rate_hz)
        msg.points.append(JointTrajectoryPoint(
            positions=row.tolist(),
            time_from_start=Duration(sec=t_ns // NS_PER_S, nanosec=t_ns % NS_PER_S),
        ))
    return msg


class ChunkMessages:
    """Builds the JointTrajectory for each chunk by refilling one message: only the stamp and the positions
    change between chunks. Constructing 30 points with their Durations costs ~0.4 ms a chunk (1% of a
    tiny-checkpoint inference); refilling costs ~0.1 ms. Safe because ``publish`` serialises at once."""

    def __init__(self) -> None:
        self._msg: JointTrajectory | None = None
        self._key: tuple[tuple[str, ...], int, float] | None = None

    def fill(self, chunk: ActionChunk) -> JointTrajectory:
        key = (tuple(chunk.joint_names), chunk.steps, float(chunk.rate_hz))
        if key != self._key or self._msg is None:
            self._msg, self._key = chunk_to_msg(chunk), key
            return self._msg
        msg = self._msg
        msg.header.stamp = stamp_to_msg(chunk.stamp_s)
        rows = np.ascontiguousarray(chunk.positions, dtype=np.float64)
        for point, row in zip(msg.points, rows, strict=True):
            point.positions = array.array("d", row.tobytes())
        return msg


def trajectory_to_chunk(msg: JointTrajectory, default_rate_hz: float) -> ActionChunk:
    """A JointTrajectory (message contract) as an ActionChunk in the message's own joint order.

    ``default_rate_hz`` (the receiver's control rate) is the rate of a one-point trajectory, which has no
    spacing to read it from. Raises ChunkRejected for what cannot be parsed (no stamp, no points, ragged
    points, bad time_from_start); everything else is checked by ``core.safety.validate_chunk``.
    """
    stamp = msg.header.stamp
    if stamp.sec == 0 and stamp.nanosec == 0:
        raise ChunkRejected(REJECT_NO_STAMP, "header.stamp is zero; set it to the observation's capture time")
    if not msg.points:
        raise ChunkRejected(REJECT_EMPTY, "trajectory has no points")
    names = list(msg.joint_names)
    rows = []
    for k, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise ChunkRejected(
                REJECT_SHAPE, f"point {k} has {len(point.positions)} positions for {len(names)} joint names"
            )
        rows.append(np.asarray(point.positions, dtype=np.float64))
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    rate = infer_rate_hz(times, default_rate_hz)
    return ActionChunk(joint_names=names, positions=np.stack(rows), stamp_s=stamp_from_msg(stamp), rate_hz=rate)
