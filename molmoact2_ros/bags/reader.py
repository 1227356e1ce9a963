"""Read a station's rosbag2 (MCAP or sqlite3, through ``rosbags``; no rclpy) into what the inference
component takes: camera frames as their CDR bytes, joint states, the instruction, and the recorded chunks
and commands to compare with.

Every problem is a :class:`BagError` naming the bag and the topic: a camera, ``/joint_states`` or the
chunk topic missing or of the wrong type, joint states without the embodiment's joints (another arm's
bag), a header clock that jumps (backwards, or forward by more than ``max_clock_jump_s``), and a
truncated or corrupt file (raised while iterating, so whatever was read before it is kept by the caller).
Topic names and types come from ``bags.topics`` (the list recorders and replayers share).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.bags import topics
from molmoact2_ros.bags.bagfile import not_a_bag_directory, typestore
from molmoact2_ros.bags.topics import (
    CHUNK_TOPIC,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    INSTRUCTION_TOPIC,
    JOINT_STATE_TYPE,
    JOINT_STATES_TOPIC,
    STRING_TYPE,
    TRAJECTORY_TYPE,
    camera_topic,
    commanded_topic,
    compressed_topic,
    shadow_commanded_topic,
)
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.chunk_validation import infer_rate_hz
from molmoact2_ros.core.embodiment import EmbodimentConfig

# A header stamp further ahead of the previous one on the same topic than this is a clock jump, not a pause.
DEFAULT_MAX_CLOCK_JUMP_S = 5.0
# Stamps going back by less than this are reordering noise between publishers, not a jump.
BACKWARDS_TOLERANCE_S = 1e-6


class BagError(topics.BagError):
    """What is wrong with a bag, naming the bag and (when it concerns one) the topic (``bags.topics.BagError``
    with the bag and topic as fields)."""

    def __init__(self, bag: str | Path, topic: str, problem: str):
        self.bag, self.topic, self.problem = str(bag), topic, problem
        where = f"{self.bag}: topic {topic}: " if topic else f"{self.bag}: "
        super().__init__(where + problem)


@dataclass(frozen=True)
class CameraStream:
    camera: str
    topic: str
    compressed: bool


@dataclass
class RecordedChunk:
    """A chunk as recorded: the contract's stamp (capture time) and the time the recorder got it."""

    chunk: ActionChunk  # in the embodiment's joint order
    log_s: float


@dataclass
class Series:
    """A joint-position series (joint_states or commands) in the embodiment's joint order, by header stamp."""

    topic: str
    t: np.ndarray  # (n,) seconds
    positions: np.ndarray  # (n, dof)


@dataclass
class Event:
    """One input message in log order: ``kind`` image | compressed | joint_state | instruction."""

    kind: str
    topic: str
    log_s: float
    camera: str = ""
    data: Any = None  # CDR bytes (image) or the deserialized message


def _stamp_s(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class BagReader:
    """One bag, checked against one embodiment. Use as a context manager."""

    def __init__(self, path: str | Path, emb: EmbodimentConfig, *, max_clock_jump_s: float = DEFAULT_MAX_CLOCK_JUMP_S):
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        self.emb = emb
        self.max_clock_jump_s = float(max_clock_jump_s)
        if not self.path.exists():
            raise BagError(self.path, "", "does not exist; pass a rosbag2 directory or its .mcap/.db3 file")
        problem = not_a_bag_directory(self.path)
        if problem:
            raise BagError(self.path, "", problem)
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises its own errors, OSError, KeyError, struct errors, ...
            raise BagError(self.path, "", f"cannot be opened as a rosbag2 ({type(exc).__name__}: {exc}); "
                                          "is it truncated or not a bag?") from exc
        self._by_topic: dict[str, Any] = {}
        for conn in self._reader.connections:
            self._by_topic.setdefault(conn.topic, conn)
        self.cameras = [self._camera_stream(c) for c in emb.camera_names]
        self.joint_states = self._need(JOINT_STATES_TOPIC, JOINT_STATE_TYPE, "record the driver's /joint_states")
        self.instruction = self._optional(INSTRUCTION_TOPIC, STRING_TYPE)
        self.chunk_topic = self._optional(CHUNK_TOPIC, TRAJECTORY_TYPE)
        self.commanded = (self._optional(commanded_topic(), JOINT_STATE_TYPE)
                          or self._optional(shadow_commanded_topic(), JOINT_STATE_TYPE))

    # ---- topics ------------------------------------------------------------------------------
    def _wrong_type(self, topic: str, want: str) -> BagError:
        return BagError(self.path, topic, f"has type {self._by_topic[topic].msgtype}, expected {want}")

    def _need(self, topic: str, msgtype: str, hint: str) -> str:
        if topic not in self._by_topic:
            raise BagError(self.path, topic, f"is not in the bag (topics: {sorted(self._by_topic)}); {hint}")
        if self._by_topic[topic].msgtype != msgtype:
            raise self._wrong_type(topic, msgtype)
        return topic

    def _optional(self, topic: str, msgtype: str) -> str | None:
        if topic not in self._by_topic:
            return None
        if self._by_topic[topic].msgtype != msgtype:
            raise self._wrong_type(topic, msgtype)
        return topic

    def _camera_stream(self, camera: str) -> CameraStream:
        raw, jpeg = camera_topic(camera), compressed_topic(camera)
        if raw in self._by_topic:
            if self._by_topic[raw].msgtype != IMAGE_TYPE:
                raise self._wrong_type(raw, IMAGE_TYPE)
            return CameraStream(camera, raw, compressed=False)
        if jpeg in self._by_topic:
            if self._by_topic[jpeg].msgtype != COMPRESSED_TYPE:
                raise self._wrong_type(jpeg, COMPRESSED_TYPE)
            return CameraStream(camera, jpeg, compressed=True)
        raise BagError(self.path, raw, f"is not in the bag (nor {jpeg}): embodiment {self.emb.name!r} needs camera "
                                       f"{camera!r}; topics in the bag: {sorted(self._by_topic)}")

    @property
    def duration_s(self) -> float:
        return (self._reader.end_time - self._reader.start_time) * 1e-9

    def message_count(self, topics: list[str]) -> int:
        return sum(c.msgcount for c in self._reader.connections if c.topic in topics)

    @property
    def input_topics(self) -> list[str]:
        topics = [c.topic for c in self.cameras] + [self.joint_states]
        return topics + ([self.instruction] if self.instruction else [])

    # ---- reading -----------------------------------------------------------------------------
    def _messages(self, topics: list[str]) -> Iterator[tuple[str, int, Any]]:
        """(topic, log time ns, raw bytes) in log order; a read failure is a BagError naming the last topic."""
        conns = [c for c in self._reader.connections if c.topic in topics]
        last = topics[0] if len(topics) == 1 else ""
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_ns, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:
                where = f" after a message on {last}" if last else ""
                raise BagError(self.path, last, f"cannot be read further{where}: the bag is truncated or corrupt "
                                                f"({type(exc).__name__}: {exc})") from exc
            last = conn.topic
            yield conn.topic, log_ns, raw

    def _deserialize(self, topic: str, raw: Any) -> Any:
        try:
            return self._reader.deserialize(raw, self._by_topic[topic].msgtype)
        except Exception as exc:
            raise BagError(self.path, topic, f"has a message that does not decode as "
                                             f"{self._by_topic[topic].msgtype} ({type(exc).__name__}: {exc})") from exc

    def _joint_index(self, topic: str, names: list[str]) -> list[int]:
        where = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.emb.joint_names if n not in where]
        if missing:
            raise BagError(self.path, topic, f"has no joint(s) {missing} of embodiment {self.emb.name!r} (names in "
                                             f"the message: {names}); is this another arm's bag? Pass its "
                                             "--embodiment")
        return [where[n] for n in self.emb.joint_names]

    def recorded_chunks(self) -> list[RecordedChunk]:
        """The chunks the live policy published, in the embodiment's joint order (empty without the topic)."""
        if self.chunk_topic is None:
            return []
        out = []
        rate = self.emb.control_rate_hz
        for topic, log_ns, raw in self._messages([self.chunk_topic]):
            msg = self._deserialize(topic, raw)
            if not msg.points:
                continue
            index = self._joint_index(topic, list(msg.joint_names))
            rows = np.array([np.asarray(p.positions, dtype=np.float64) for p in msg.points])
            times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
            chunk = ActionChunk(list(self.emb.joint_names), rows[:, index], _stamp_s(msg.header.stamp),
                                infer_rate_hz(times, rate))
            out.append(RecordedChunk(chunk, log_ns * 1e-9))
        return out

    def series(self, topic: str) -> Series:
        """A JointState topic as positions by header stamp, checked for clock jumps."""
        t: list[float] = []
        rows: list[np.ndarray] = []
        index: list[int] | None = None
        names: tuple[str, ...] = ()
        for _, _, raw in self._messages([topic]):
            msg = self._deserialize(topic, raw)
            if index is None or tuple(msg.name) != names:
                names = tuple(msg.name)
                index = self._joint_index(topic, list(names))
            stamp = _stamp_s(msg.header.stamp)
            self._check_clock(topic, t[-1] if t else None, stamp)
            t.append(stamp)
            rows.append(np.asarray(msg.position, dtype=np.float64)[index])
        dof = self.emb.dof
        return Series(topic, np.asarray(t), np.asarray(rows).reshape(-1, dof))

    def _check_clock(self, topic: str, previous: float | None, stamp: float) -> None:
        if previous is None:
            return
        if stamp < previous - BACKWARDS_TOLERANCE_S:
            raise BagError(self.path, topic, f"header clock jumps backwards by {previous - stamp:.3f} s "
                                             f"(stamp {stamp:.6f} after {previous:.6f}); split the bag at the jump")
        if stamp - previous > self.max_clock_jump_s:
            raise BagError(self.path, topic, f"header clock jumps forward by {stamp - previous:.3f} s (more than "
                                             f"{self.max_clock_jump_s:g} s); split the bag at the jump")

    def events(self) -> Iterator[Event]:
        """The policy's inputs in log order. Camera frames stay CDR bytes (decoded only if used); header
        clocks are checked per topic, and a joint-state message must carry the embodiment's joints."""
        cameras = {c.topic: c for c in self.cameras}
        last_stamp: dict[str, float] = {}
        checked_names: tuple[str, ...] | None = None
        for topic, log_ns, raw in self._messages(self.input_topics):
            log_s = log_ns * 1e-9
            cam = cameras.get(topic)
            if cam is not None and not cam.compressed:
                stamp = _cdr_stamp(raw)
                if stamp is not None:
                    self._check_clock(topic, last_stamp.get(topic), stamp)
                    last_stamp[topic] = stamp
                yield Event("image", topic, log_s, cam.camera, raw)
                continue
            msg = self._deserialize(topic, raw)
            if cam is not None:
                stamp = _stamp_s(msg.header.stamp)
                self._check_clock(topic, last_stamp.get(topic), stamp)
                last_stamp[topic] = stamp
                yield Event("compressed", topic, log_s, cam.camera, msg)
            elif topic == self.joint_states:
                if tuple(msg.name) != checked_names:
                    self._joint_index(topic, list(msg.name))
                    checked_names = tuple(msg.name)
                stamp = _stamp_s(msg.header.stamp)
                self._check_clock(topic, last_stamp.get(topic), stamp)
                last_stamp[topic] = stamp
                yield Event("joint_state", topic, log_s, data=msg)
            else:
                yield Event("instruction", topic, log_s, data=msg.data)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cdr_stamp(raw: Any) -> float | None:
    """The header stamp of a CDR-serialized message with a std_msgs/Header first (None if too short)."""
    buf = memoryview(raw).cast("B")
    if len(buf) < 12 or buf[0] != 0 or buf[1] not in (0, 1):
        return None
    order = "little" if buf[1] == 1 else "big"
    sec = int.from_bytes(buf[4:8], order, signed=True)
    nanosec = int.from_bytes(buf[8:12], order)
    return sec + nanosec * 1e-9
