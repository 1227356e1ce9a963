"""Decode an action chunk straight from its serialized ``trajectory_msgs/JointTrajectory`` bytes (CDR).

Why not ``rclpy`` deserialisation: turning a message into Python objects runs in C while holding the GIL,
one object per point and per array, and the driver's control thread needs the GIL every tick. A 20,000-step
chunk held it for tens of milliseconds (issue 13: tick gaps of 2–3 periods). The driver subscribes with
``raw=True`` and calls :func:`decode_chunk`, which reads the point count first and refuses a chunk longer
than the embodiment's ``chunk.max_steps`` before touching its points, then reads the points it accepts
directly into numpy. The result equals :func:`molmoact2_ros.nodes.contract.trajectory_to_chunk` on the
deserialised message (tests/node/test_chunk_cdr.py checks both on the same bytes). No rclpy here.

Layout (XCDR1 as rmw_fastrtps writes it: a 4-byte encapsulation header, then fields aligned to their size
relative to the end of that header): header.stamp (int32 sec, uint32 nanosec), header.frame_id (string),
joint_names (sequence<string>), points (sequence<JointTrajectoryPoint>: positions, velocities,
accelerations, effort as sequence<float64>, then time_from_start as int32 sec, uint32 nanosec).
"""

from __future__ import annotations

import struct

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.chunk_validation import (
    REJECT_EMPTY,
    REJECT_MALFORMED,
    REJECT_NO_STAMP,
    REJECT_SHAPE,
    REJECT_TOO_LONG,
    infer_rate_hz,
)
from molmoact2_ros.core.errors import ChunkRejected

ENCAPSULATION_BYTES = 4
MAX_JOINT_NAMES = 1024
MAX_NAME_BYTES = 4096
# The smallest serialized point: four empty float64 sequences (4 × uint32 length) + time_from_start (8 bytes).
MIN_POINT_BYTES = 4 * 4 + 8


class _Reader:
    """Aligned little- or big-endian reads over the serialized bytes; any overrun is ``ChunkRejected``."""

    def __init__(self, data: bytes | memoryview):
        self.buf = memoryview(data)
        if len(self.buf) < ENCAPSULATION_BYTES:
            raise ChunkRejected(REJECT_MALFORMED, f"{len(self.buf)} bytes is not a serialized JointTrajectory")
        kind = self.buf[1]
        if self.buf[0] != 0 or kind not in (0, 1):
            raise ChunkRejected(REJECT_MALFORMED, f"unsupported CDR encapsulation {bytes(self.buf[:2]).hex()}")
        self.order = "<" if kind == 1 else ">"
        self.pos = ENCAPSULATION_BYTES
        self.u32 = struct.Struct(self.order + "I")
        self.stamp = struct.Struct(self.order + "iI")

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def align(self, n: int) -> None:
        self.pos += (-(self.pos - ENCAPSULATION_BYTES)) % n

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ChunkRejected(REJECT_MALFORMED, f"message truncated in {what}")

    def uint32(self, what: str) -> int:
        self.align(4)
        self._need(4, what)
        (value,) = self.u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return value

    def sec_nanosec(self, what: str) -> tuple[int, int]:
        self.align(4)
        self._need(8, what)
        sec, nanosec = self.stamp.unpack_from(self.buf, self.pos)
        self.pos += 8
        return sec, nanosec

    def string(self, what: str) -> str:
        n = self.uint32(what)
        if n > MAX_NAME_BYTES:
            raise ChunkRejected(REJECT_MALFORMED, f"{what}: a {n}-byte string")
        self._need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ChunkRejected(REJECT_MALFORMED, f"{what} is not UTF-8") from exc

    def doubles(self, what: str) -> np.ndarray:
        n = self.uint32(what)
        if n == 0:
            return np.empty(0)
        self.align(8)
        self._need(8 * n, what)
        out = np.frombuffer(self.buf, dtype=self.order + "f8", count=n, offset=self.pos)
        self.pos += 8 * n
        return out

    def skip_doubles(self, what: str) -> None:
        n = self.uint32(what)
        if n:
            self.align(8)
            self._need(8 * n, what)
            self.pos += 8 * n


def point_count(data: bytes | memoryview) -> int:
    """How many points a serialized JointTrajectory holds, reading only its header and joint names."""
    reader = _Reader(data)
    _read_head(reader)
    return reader.uint32("points")


def _read_head(reader: _Reader) -> tuple[tuple[int, int], list[str]]:
    stamp = reader.sec_nanosec("header.stamp")
    reader.string("header.frame_id")
    n_names = reader.uint32("joint_names")
    if n_names > MAX_JOINT_NAMES:
        raise ChunkRejected(REJECT_MALFORMED, f"{n_names} joint names")
    return stamp, [reader.string("joint_names") for _ in range(n_names)]


def decode_chunk(data: bytes | memoryview, default_rate_hz: float, max_steps: int) -> ActionChunk:
    """The chunk in serialized JointTrajectory ``data``, or ChunkRejected: ``too_long`` (more than
    ``max_steps`` points, decided before any point is read), ``malformed`` (bytes that are not a
    JointTrajectory), and the same parse rejections as ``trajectory_to_chunk`` (no stamp, empty, ragged)."""
    reader = _Reader(data)
    (sec, nanosec), names = _read_head(reader)
    n_points = reader.uint32("points")
    if n_points > max_steps:
        raise ChunkRejected(REJECT_TOO_LONG, f"{n_points} steps; this driver accepts at most {max_steps} "
                                             "(chunk.max_steps)")
    if n_points * MIN_POINT_BYTES > reader.remaining:
        raise ChunkRejected(REJECT_MALFORMED, f"{n_points} points cannot fit in {reader.remaining} bytes")
    if sec == 0 and nanosec == 0:
        raise ChunkRejected(REJECT_NO_STAMP, "header.stamp is zero; set it to the observation's capture time")
    if n_points == 0:
        raise ChunkRejected(REJECT_EMPTY, "trajectory has no points")
    positions = np.empty((n_points, len(names)))
    times = []
    for k in range(n_points):
        row = reader.doubles("points.positions")
        if len(row) != len(names):
            raise ChunkRejected(REJECT_SHAPE, f"point {k} has {len(row)} positions for {len(names)} joint names")
        positions[k] = row
        for field in ("velocities", "accelerations", "effort"):
            reader.skip_doubles(f"points.{field}")
        t_sec, t_nanosec = reader.sec_nanosec("points.time_from_start")
        times.append(t_sec + t_nanosec * 1e-9)
    rate = infer_rate_hz(times, default_rate_hz)
    return ActionChunk(joint_names=names, positions=positions, stamp_s=sec + nanosec * 1e-9, rate_hz=rate)
