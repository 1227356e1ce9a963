"""``molmoact2-ros record``: a station's topics into a rosbag2 (MCAP or sqlite3) through ``rosbags``.

Two parts:

- :class:`SplitBagWriter` (no rclpy): one bag directory holding one or more files (``<name>_0.mcap``,
  ``<name>_1.mcap``, ... split by size or duration) and one ``metadata.yaml`` covering them all, as
  ``ros2 bag record`` lays a split bag out. Each file is written by a rosbags ``Writer`` in a directory of
  its own and moved into the bag when it is complete, so every file listed in the metadata has its index.
  It watches free space and stops writing while enough is left to close the current file properly:
  a full disk ends the recording with a complete, readable bag instead of a torn file.
- :class:`StationRecorder` (rclpy): raw subscriptions (the CDR bytes go into the bag untouched; a
  deserialize/serialize round trip could append bytes that rosbags rejects) with QoS matched to the
  publishers it discovers, re-matched while recording when publishers come or change.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from molmoact2_ros.bags.topics import (
    BAG_CAMERAS_KEY,
    BAG_EMBODIMENT_KEY,
    BAG_JOINTS_KEY,
    BagError,
    QosSpec,
    TopicSpec,
    message_class,
    qos_profile,
    station_topics,
)
from molmoact2_ros.core.embodiment import load_embodiment

# rosbags' MCAP writer holds up to 1 MiB of messages in memory and writes them as one chunk; closing
# writes that chunk, the summary and metadata.yaml. Stop writing while this much is still free.
DEFAULT_RESERVE_BYTES = 8 << 20
FREE_SPACE_CHECK_BYTES = 256 << 10  # statvfs at most once per this much data written
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

RECORD_DRAIN_S = 0.3  # at stop: take what the subscriptions already hold


@dataclass
class BagSummary:
    """What a closed bag holds: per-topic message counts, files, span."""

    path: Path
    counts: dict[str, int]
    files: list[str]
    start_ns: int
    duration_ns: int
    bytes_written: int
    problem: str = ""  # why recording stopped early ('' = it did not)

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


class SplitBagWriter:
    """A rosbag2 directory written through rosbags, split into files by size and/or duration.

    ``write`` never raises on a full disk: it stops, closes what it has (readable), and sets ``problem``;
    callers poll ``problem`` and end the recording."""

    def __init__(self, path: str | Path, storage: str = "mcap", split_size_bytes: int = 0,
                 split_duration_ns: int = 0, custom_data: dict[str, str] | None = None,
                 reserve_bytes: int = DEFAULT_RESERVE_BYTES):
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if storage not in ("mcap", "sqlite3"):
            raise BagError(f"bag storage must be 'mcap' or 'sqlite3', not {storage!r}")
        self.storage = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.split_size_bytes = int(split_size_bytes)
        self.split_duration_ns = int(split_duration_ns)
        self.custom_data = dict(custom_data or {})
        self.reserve_bytes = int(reserve_bytes)
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.topics: dict[str, tuple[str, list[Any]]] = {}  # topic -> (msgtype, offered QoS)
        self.counts: dict[str, int] = {}
        self.problem = ""
        self.bytes_written = 0
        self._lock = threading.Lock()  # writes may come from several executor threads
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self._part_dir: Path | None = None
        self._part_start_ns = 0
        self._part_bytes = 0
        self._since_check = 0
        self._parts: list[dict[str, Any]] = []  # metadata of each closed file
        self._files: list[str] = []
        self._closed = False
        self._create_dir()

    def _create_dir(self) -> None:
        if self.path.exists():
            raise BagError(f"bag {str(self.path)!r} already exists; choose a new output path or delete it")
        try:
            self.path.mkdir(parents=True)
            probe = self.path / ".write_probe"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            raise BagError(f"cannot create bag {str(self.path)!r}: {exc.strerror or exc}; choose a writable "
                           "output path (--output)") from exc

    # ---- topics -----------------------------------------------------------------------------------
    def add_topic(self, topic: str, msgtype: str, offered_qos: list[Any] | None = None) -> None:
        """Register a topic (before or while writing). Raises BagError if rosbags does not know the type."""
        with self._lock:
            if topic in self.topics:
                return
            try:
                self.typestore.generate_msgdef(msgtype, ros_version=2)
            except Exception as exc:  # rosbags raises its own TypesysError
                raise BagError(f"bag {str(self.path)!r}: cannot record {topic} of type {msgtype}: rosbags "
                               f"has no definition for it ({exc}); record only standard message types") from exc
            self.topics[topic] = (msgtype, list(offered_qos or []))
            self.counts.setdefault(topic, 0)
            if self._writer is not None:
                self._add_connection(topic)

    def _add_connection(self, topic: str) -> None:
        msgtype, qos = self.topics[topic]
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                         offered_qos_profiles=qos)

    # ---- writing ----------------------------------------------------------------------------------
    def write(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Append one serialized message; False if it was not written (closed, or stopped by ``problem``)."""
        with self._lock:
            if self._closed or self.problem:
                return False
            if topic not in self.topics:
                raise BagError(f"bag {str(self.path)!r}: topic {topic} was not added before writing")
            try:
                if self._writer is None:
                    self._open_part(timestamp_ns)
                elif self._should_split(timestamp_ns):
                    self._close_part()
                    self._open_part(timestamp_ns)
                self._since_check += len(data)
                if self._since_check >= FREE_SPACE_CHECK_BYTES:
                    self._since_check = 0
                    free = shutil.disk_usage(self.path).free
                    if free < self.reserve_bytes + len(data):
                        self._stop(f"disk full: {free / 1e6:.1f} MB left on the bag's file system (recording "
                                   f"stops with {self.reserve_bytes / 1e6:.0f} MB left to close the bag)")
                        return False
                self._writer.write(self._conns[topic], timestamp_ns, data)
            except OSError as exc:
                what = "disk full" if exc.errno in DISK_FULL_ERRNOS else "write failed"
                self._stop(f"{what}: {exc.strerror or exc}")
                return False
            self.counts[topic] += 1
            self.bytes_written += len(data)
            self._part_bytes += len(data)
            return True

    def _should_split(self, timestamp_ns: int) -> bool:
        if self.split_size_bytes and self._part_bytes >= self.split_size_bytes:
            return True
        return bool(self.split_duration_ns and timestamp_ns - self._part_start_ns >= self.split_duration_ns)

    def _open_part(self, timestamp_ns: int) -> None:
        from rosbags.rosbag2 import Writer

        name = f"{self.path.name}_{len(self._parts)}"
        self._part_dir = self.path / name
        writer = Writer(self._part_dir, version=Writer.VERSION_LATEST, storage_plugin=self.storage)
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, value)
        writer.open()
        self._writer, self._conns = writer, {}
        for topic in self.topics:
            self._add_connection(topic)
        self._part_start_ns, self._part_bytes = timestamp_ns, 0

    def _close_part(self) -> None:
        """Close the current file (index + its metadata) and move it into the bag directory."""
        import yaml

        writer, part_dir = self._writer, self._part_dir
        self._writer, self._part_dir = None, None
        if writer is None or part_dir is None:
            return
        writer.close()
        meta = yaml.safe_load((part_dir / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        for rel in meta["relative_file_paths"]:
            os.replace(part_dir / rel, self.path / rel)
            self._files.append(rel)
        (part_dir / "metadata.yaml").unlink()
        part_dir.rmdir()
        self._parts.append(meta)

    def _stop(self, problem: str) -> None:
        """Called with the lock held: end writing, keep what was written readable."""
        self.problem = problem
        try:
            self._close_part()
        except OSError as exc:
            # The current file could not be finished: it stays in its own directory, unlisted, and the
            # files closed before it remain a complete bag.
            self.problem += (f"; the last file in {str(self._part_dir or self.path)!r} could not be closed "
                             f"({exc.strerror or exc}) and is not part of the bag")
            self._abort_part()
        self._closed = True
        self._write_metadata()

    def _abort_part(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError):  # nothing more can be done for a file the disk refuses
                writer.abort()

    # ---- closing ----------------------------------------------------------------------------------
    def close(self) -> BagSummary:
        """Close the current file and write the bag's metadata.yaml (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    if self._writer is None and not self._parts:
                        self._open_part(0)  # an empty bag is still a valid bag, with its topics
                    self._close_part()
                except OSError as exc:
                    self.problem = self.problem or f"closing the bag failed: {exc.strerror or exc}"
                    self._abort_part()
                self._write_metadata()
            return self.summary()

    def summary(self) -> BagSummary:
        start = min((p["starting_time"]["nanoseconds_since_epoch"] for p in self._parts if p["message_count"]),
                    default=0)
        end = max((p["starting_time"]["nanoseconds_since_epoch"] + p["duration"]["nanoseconds"]
                   for p in self._parts if p["message_count"]), default=start)
        return BagSummary(self.path, dict(self.counts), list(self._files), start, end - start, self.bytes_written,
                          self.problem)

    def _write_metadata(self) -> None:
        """One metadata.yaml for all files, in the layout rosbag2 (and rosbags' reader) expects."""
        from ruamel.yaml import YAML

        if not self._parts:
            return
        info = dict(self._parts[0])
        totals: dict[str, int] = {}
        topic_meta: dict[str, dict[str, Any]] = {}
        for part in self._parts:
            for entry in part["topics_with_message_count"]:
                name = entry["topic_metadata"]["name"]
                topic_meta.setdefault(name, entry["topic_metadata"])
                totals[name] = totals.get(name, 0) + entry["message_count"]
        summary = self.summary()
        info.update({
            "relative_file_paths": list(self._files),
            "files": [f for part in self._parts for f in part["files"]],
            "message_count": sum(totals.values()),
            "topics_with_message_count": [{"topic_metadata": topic_meta[n], "message_count": totals[n]}
                                          for n in topic_meta],
            "starting_time": {"nanoseconds_since_epoch": summary.start_ns},
            "duration": {"nanoseconds": summary.duration_ns},
        })
        yaml = YAML(typ="safe")
        yaml.default_flow_style = False
        text = StringIO()
        yaml.dump({"rosbag2_bagfile_information": info}, text)
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(text.getvalue())
        os.replace(tmp, self.path / "metadata.yaml")


# ---- the ROS side -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordOptions:
    output: str
    embodiment: str = "so101"
    cameras: str = "raw"
    extra_topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    storage: str = "mcap"
    duration_s: float = 0.0  # 0 = until stopped
    split_size_mb: float = 0.0
    split_duration_s: float = 0.0
    use_sim_time: bool = False
    progress: bool = True
    driver_node: str = "molmoact2_driver"
    reserve_bytes: int = DEFAULT_RESERVE_BYTES


def matched_qos(spec: QosSpec, publishers: list[Any]) -> QosSpec:
    """QoS a recorder needs to hear every publisher of a topic (as rosbag2's recorder adapts).

    Reliable only if every publisher is reliable (a reliable reader never matches a best-effort writer);
    transient local only if every publisher is (so a latched instruction is delivered on joining), else
    volatile. With no publisher yet, the station's own QoS for the topic. The depth is deeper than the
    publishers': a recorder that falls behind for a moment must not drop what it was sent."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    depth = max(spec.depth, 10 if not spec.reliable else 100)
    if not publishers:
        return QosSpec(spec.reliable, spec.transient_local, depth)
    profiles = [p.qos_profile for p in publishers]
    reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in profiles)
    latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in profiles)
    return QosSpec(reliable, latched, depth)


def rosbags_qos(spec: QosSpec) -> Any:
    """The offered QoS written into the bag's metadata (replay publishes with it)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, spec.depth,
               QosReliability.RELIABLE if spec.reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if spec.transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


@dataclass
class _Sub:
    spec: TopicSpec
    qos: QosSpec | None = None
    handle: Any = None


@dataclass
class RecordStats:
    received: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)


class StationRecorder:
    """Records a station's topics into a :class:`SplitBagWriter` from raw subscriptions.

    Owns its own rclpy context (so it can run next to other nodes in one process) and does not install
    rclpy's signal handlers: the caller decides what stops it."""

    DISCOVERY_PERIOD_S = 0.5

    def __init__(self, opts: RecordOptions):
        emb = load_embodiment(opts.embodiment)
        self.opts = opts
        self.embodiment = emb
        try:
            specs = station_topics(emb, opts.cameras, opts.driver_node)
        except ValueError as exc:
            raise BagError(f"record: {exc}") from exc
        self.wanted = [s for s in specs if s.name not in set(opts.exclude)]
        self.extra = [t for t in opts.extra_topics if t not in {s.name for s in self.wanted}]
        self.writer = SplitBagWriter(
            opts.output, opts.storage, split_size_bytes=int(opts.split_size_mb * 1e6),
            split_duration_ns=int(opts.split_duration_s * 1e9), reserve_bytes=opts.reserve_bytes,
            custom_data={BAG_EMBODIMENT_KEY: emb.name, BAG_JOINTS_KEY: ",".join(emb.joint_names),
                         BAG_CAMERAS_KEY: ",".join(emb.camera_names)})
        self._subs: dict[str, _Sub] = {s.name: _Sub(s) for s in self.wanted}
        self.stats = RecordStats()
        self._context: Any = None
        self._node: Any = None
        self._executor: Any = None
        self.started_monotonic = 0.0

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        self._context = rclpy.Context()
        rclpy.init(context=self._context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if self.opts.use_sim_time else []
        self._node = rclpy.create_node("molmoact2_recorder", context=self._context,
                                       parameter_overrides=overrides)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._discover()
        self._node.create_timer(self.DISCOVERY_PERIOD_S, self._discover)
        self.started_monotonic = time.monotonic()

    @property
    def node(self) -> Any:
        """The recorder's rclpy node (after :meth:`start`), e.g. to publish an instruction alongside."""
        return self._node

    def spin_once(self, timeout_s: float = 0.1) -> None:
        self._executor.spin_once(timeout_sec=timeout_s)

    def run(self, should_stop: Callable[[], bool], on_tick: Callable[[], None] | None = None) -> BagSummary:
        """Spin until ``should_stop()``, the duration, or a write problem; then close the bag."""
        deadline = self.started_monotonic + self.opts.duration_s if self.opts.duration_s > 0 else None
        try:
            while not should_stop() and not self.writer.problem:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.spin_once(0.1)
                if on_tick is not None:
                    on_tick()
        finally:
            summary = self.stop()
        return summary

    def stop(self) -> BagSummary:
        """Stop listening and close the bag (safe to call twice)."""
        if self._executor is not None:
            import rclpy

            # Messages already delivered to the subscriptions (a replay's last chunks, frames in flight at
            # Ctrl-C) are taken and written first: a short, bounded drain.
            drain_end = time.monotonic() + RECORD_DRAIN_S
            while time.monotonic() < drain_end and self._context.ok():
                self.spin_once(0.02)

            self._executor.shutdown()
            self._node.destroy_node()
            rclpy.shutdown(context=self._context)
            self._executor = None
        return self.writer.close()

    def never_seen(self) -> list[str]:
        """Required station topics with no message recorded (a node of the station was not running)."""
        return [s.name for s in self.wanted if s.required and not self.writer.counts.get(s.name)]

    # ---- discovery and subscriptions -----------------------------------------------------------------
    def _discover(self) -> None:
        node = self._node
        if self.extra:
            types = dict(node.get_topic_names_and_types())
            for topic in list(self.extra):
                if types.get(topic):
                    msgtype = types[topic][0]
                    # A type we do not know is still recorded as bytes, with the QoS its publishers offer.
                    self._subs[topic] = _Sub(TopicSpec(topic, msgtype, "extra", QosSpec(True, False, 10)))
                    self.extra.remove(topic)
        for topic, sub in self._subs.items():
            qos = matched_qos(sub.spec.qos, node.get_publishers_info_by_topic(topic))
            if qos == sub.qos:
                continue
            if sub.handle is not None:
                node.destroy_subscription(sub.handle)
            if topic not in self.writer.topics:
                # What the publishers offer, at the station's depth: what replay publishes with.
                offered = QosSpec(qos.reliable, qos.transient_local, sub.spec.qos.depth)
                self.writer.add_topic(topic, sub.spec.msgtype, [rosbags_qos(offered)])
            try:
                cls = message_class(sub.spec.msgtype)
            except ValueError as exc:
                raise BagError(f"record: {topic}: {exc}") from exc
            sub.handle = node.create_subscription(cls, topic, self._callback(topic), qos_profile(qos), raw=True)
            sub.qos = qos

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        clock = self._node.get_clock()

        def on_message(data: bytes) -> None:
            if self.writer.write(topic, clock.now().nanoseconds, data):
                self.stats.received += 1
        return on_message


def format_summary(summary: BagSummary) -> str:
    mb = summary.bytes_written / 1e6
    topics = ", ".join(f"{t} {n}" for t, n in summary.counts.items() if n)
    with_messages = sum(1 for n in summary.counts.values() if n)
    # "recording N topics" counted every topic subscribed; say how many of them actually carried messages.
    return (f"wrote {summary.path}: {summary.message_count} messages on {with_messages} of {len(summary.counts)} "
            f"topics, {mb:.1f} MB, {summary.duration_ns / 1e9:.1f} s in {len(summary.files)} file(s) "
            f"({topics or 'no messages'})")


def run_record_cli(opts: RecordOptions) -> int:
    """The ``record`` command: record until Ctrl-C / SIGTERM / --duration; one-line error on a problem."""
    from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults

    apply_local_ros_defaults()
    stop = {"now": False}
    # Set a flag instead of raising: a KeyboardInterrupt inside the writer could tear the file it writes.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    recorder = StationRecorder(opts)
    recorder.start()
    print(f"recording {len(recorder.wanted) + len(recorder.extra)} topics of {recorder.embodiment.name} to "
          f"{opts.output}; Ctrl-C stops", flush=True)
    bar = None
    if opts.progress:
        from tqdm import tqdm

        bar = tqdm(total=None, unit="msg", desc="recording", file=sys.stderr, mininterval=0.5)
    last = [0]

    def tick() -> None:
        if bar is not None and recorder.stats.received != last[0]:
            bar.update(recorder.stats.received - last[0])
            last[0] = recorder.stats.received
            bar.set_postfix_str(f"{recorder.writer.bytes_written / 1e6:.1f} MB", refresh=False)

    summary = recorder.run(lambda: stop["now"], tick)
    if bar is not None:
        bar.close()
    print(format_summary(summary), flush=True)
    missing = recorder.never_seen()
    if missing:
        print(f"warning: nothing recorded on {', '.join(missing)} (is the station running, on this "
              "ROS_DOMAIN_ID?)", file=sys.stderr, flush=True)
    if recorder.extra:  # --topic names that never appeared in the graph: not recorded at all
        print(f"warning: --topic {', '.join(recorder.extra)} never appeared in the ROS graph, so it is not in "
              "the bag (topic names are absolute, e.g. /name)", file=sys.stderr, flush=True)
    if summary.problem:
        raise BagError(f"recording to {str(summary.path)!r} stopped: {summary.problem}; the bag holds the "
                       f"{summary.message_count} messages written before and is readable")
    return 0
