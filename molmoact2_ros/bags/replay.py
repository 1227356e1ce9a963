"""``molmoact2-ros replay``: publish a rosbag2 at its recorded pace, with ``/clock``.

Messages go out as the CDR bytes stored in the bag (``publish`` of raw bytes: no deserialize/serialize
round trip), each at wall time ``start + (t - t0) / rate`` where ``t`` is its recorded (log) time. ``/clock``
carries the recorded time, so nodes started with ``use_sim_time`` see the recording's stamps as "now":
a chunk recorded at capture time ``t`` is exactly as fresh on replay as it was live. With ``--loop`` the
clock starts again at the beginning, as ``ros2 bag play --loop`` does.

The bag is checked before anything is published; every check fails with a :class:`BagError` naming the
bag and the topic: unreadable (truncated, corrupt) bag, a requested topic it lacks, a station topic of the
wrong message type, bytes that do not decode as their type, joints of another embodiment, a recorded
``/clock`` that goes back, or a jump in recorded time longer than ``max_gap_s``.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from molmoact2_ros.bags.bagfile import open_bag, recorded_embodiment, resolve_bag
from molmoact2_ros.bags.topics import (
    CLOCK_QOS,
    CLOCK_TOPIC,
    CLOCK_TYPE,
    JOINT_STATE_TYPE,
    TRAJECTORY_TYPE,
    BagError,
    QosSpec,
    message_class,
    qos_profile,
    station_topics,
)
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError

REPLAY_RELIABLE_DEPTH = 100


@dataclass(frozen=True)
class ReplayOptions:
    bag: str
    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    topics: tuple[str, ...] = ()  # () = all
    remap: dict[str, str] = field(default_factory=dict)
    embodiment: str = ""  # '' = the one recorded in the bag, if any
    clock: bool = True
    clock_hz: float = 100.0
    max_gap_s: float = 30.0
    wait_subscribers_s: float = 0.0
    progress: bool = True
    max_wall_s: float = 0.0  # stop after this long (0 = at the end, or never with loop)


def parse_remaps(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}``; BagError for a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise BagError(f"--remap {item!r}: write it as /from_topic:=/to_topic")
        out[src] = dst
    return out


@dataclass
class ReplayStats:
    published: dict[str, int] = field(default_factory=dict)  # by published (remapped) name
    clock_messages: int = 0
    loops: int = 0
    wall_s: float = 0.0

    @property
    def message_count(self) -> int:
        return sum(self.published.values())


class BagReplay:
    """Checks a bag, then publishes it (see the module docstring)."""

    def __init__(self, opts: ReplayOptions):
        if opts.rate <= 0:
            raise BagError(f"--rate must be > 0, not {opts.rate:g}")
        if opts.start_offset_s < 0:
            raise BagError(f"--start-offset must be >= 0, not {opts.start_offset_s:g}")
        if opts.clock_hz <= 0:
            raise BagError(f"--clock-hz must be > 0, not {opts.clock_hz:g}")
        if not opts.max_gap_s > 0:
            raise BagError(f"--max-gap must be > 0, not {opts.max_gap_s:g} (seconds the recorded time may jump "
                           "between two messages)")
        self.opts = opts
        self.path = resolve_bag(opts.bag)
        self.reader = open_bag(self.path)
        self.name = str(self.path)
        try:
            self._select()
            self.embodiment = self._embodiment()
            self._check_types()
            self._check_first_messages()
            self._check_recorded_clock()
        except BaseException:
            self.reader.close()
            raise
        self.stats = ReplayStats()
        self._context: Any = None
        self._node: Any = None
        self._pubs: dict[int, Any] = {}
        self._clock_pub: Any = None

    # ---- checks -------------------------------------------------------------------------------------
    def _select(self) -> None:
        by_topic: dict[str, list[Any]] = {}
        for conn in self.reader.connections:
            by_topic.setdefault(conn.topic, []).append(conn)
        wanted = list(self.opts.topics) or sorted(by_topic)
        for topic in [*wanted, *self.opts.remap]:
            if topic not in by_topic:
                raise BagError(f"bag {self.name!r} has no topic {topic} (topics in it: "
                               f"{', '.join(sorted(by_topic)) or 'none'})")
        if self.opts.clock:  # our /clock replaces a recorded one
            wanted = [t for t in wanted if t != CLOCK_TOPIC]
        self.connections = [c for t in wanted for c in by_topic[t]]
        if not self.connections or not any(c.msgcount for c in self.connections):
            raise BagError(f"bag {self.name!r} has no messages on {', '.join(wanted) or 'any topic'}")
        # rosbags' end_time is one past the last message.
        self.start_ns = self.reader.start_time
        self.end_ns = max(self.start_ns, self.reader.end_time - 1)
        offset_ns = int(self.opts.start_offset_s * 1e9)
        if self.start_ns + offset_ns >= self.end_ns and offset_ns:
            raise BagError(f"--start-offset {self.opts.start_offset_s:g} s is past the end of bag {self.name!r} "
                           f"({(self.end_ns - self.start_ns) / 1e9:.2f} s long)")

    def _embodiment(self) -> EmbodimentConfig | None:
        name = self.opts.embodiment or recorded_embodiment(self.path)
        if not name:
            return None
        try:
            return load_embodiment(name)
        except ConfigError as exc:
            if self.opts.embodiment:
                raise
            raise BagError(f"bag {self.name!r} was recorded for embodiment {name!r}, which is not known here "
                           f"({exc}); pass --embodiment") from exc

    def _check_types(self) -> None:
        expected = {s.name: s.msgtype for s in station_topics(self.embodiment, "both")} if self.embodiment else {}
        expected[CLOCK_TOPIC] = CLOCK_TYPE
        for conn in self.connections:
            want = expected.get(conn.topic)
            if want and conn.msgtype != want:
                raise BagError(f"bag {self.name!r}: topic {conn.topic} has type {conn.msgtype}, expected {want}; "
                               "remap or filter it out (--topics)")
            try:
                message_class(conn.msgtype)
            except ValueError as exc:
                raise BagError(f"bag {self.name!r}: topic {conn.topic}: {exc}") from exc

    def _check_first_messages(self) -> None:
        """Decode each topic's first message with rclpy (the bytes subscribers will get), and compare the
        joints of state and chunk topics with the embodiment's."""
        from rclpy.serialization import deserialize_message

        pending = {c.id: c for c in self.connections if c.msgcount}
        for conn, _, raw in self._messages(list(pending.values())):
            if conn.id not in pending:
                continue
            del pending[conn.id]
            try:
                msg = deserialize_message(bytes(raw), message_class(conn.msgtype))
            except Exception as exc:  # rclpy raises plain exceptions for bad CDR
                raise BagError(f"bag {self.name!r}: a message on {conn.topic} does not decode as {conn.msgtype} "
                               f"({exc}); the bag is corrupt or the type is wrong") from exc
            if self.embodiment is not None and conn.msgtype in (JOINT_STATE_TYPE, TRAJECTORY_TYPE):
                names = list(msg.name if conn.msgtype == JOINT_STATE_TYPE else msg.joint_names)
                if set(names) != set(self.embodiment.joint_names):
                    recorded = recorded_embodiment(self.path)
                    raise BagError(
                        f"bag {self.name!r}: {conn.topic} carries joints {names}, embodiment "
                        f"{self.embodiment.name!r} has {self.embodiment.joint_names}"
                        f"{f' (recorded for {recorded!r})' if recorded else ''}; replay it with the embodiment "
                        "it was recorded on (--embodiment) or filter the topic out (--topics)")
            if not pending:
                break

    def _check_recorded_clock(self) -> None:
        clocks = [c for c in self.reader.connections if c.topic == CLOCK_TOPIC and c.msgcount]
        if not clocks:
            return
        last = None
        for _conn, _, raw in self._messages(clocks):
            msg = self.reader.deserialize(raw, CLOCK_TYPE)
            now = msg.clock.sec + msg.clock.nanosec * 1e-9
            if last is not None and now < last:
                raise BagError(f"bag {self.name!r}: {CLOCK_TOPIC} goes back by {last - now:.3f} s (from {last:.3f} "
                               f"to {now:.3f}): the recording restarted its simulation; split the bag there or "
                               "replay from after it (--start-offset)")
            last = now

    def _messages(self, connections: list[Any], start_ns: int | None = None) -> Iterator[tuple[Any, int, bytes]]:
        """The bag's messages in recorded order; a read failure is a BagError naming the bag."""
        last_topic, last_ns = "", 0
        try:
            for conn, ns, raw in self.reader.messages(connections=connections, start=start_ns):
                last_topic, last_ns = conn.topic, ns
                yield conn, ns, raw
        except BagError:
            raise
        except Exception as exc:  # rosbags' reader errors: a torn chunk, a bad record
            where = (f"after {last_topic} at {(last_ns - self.start_ns) / 1e9:.2f} s" if last_topic
                     else "at its first message")
            raise BagError(f"bag {self.name!r} is corrupt {where} ({exc}); re-record it or replay only up to "
                           "there") from exc

    # ---- publishing ---------------------------------------------------------------------------------
    def start(self) -> None:
        import rclpy

        self._context = rclpy.Context()
        rclpy.init(context=self._context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self._node = rclpy.create_node("molmoact2_replay", context=self._context)
        for conn in self.connections:
            name = self.opts.remap.get(conn.topic, conn.topic)
            qos = self._offered_qos(conn)
            if qos.reliable:
                # A reliable writer keeping only the last sample overwrites one a slow reader has not yet
                # acknowledged (the live chunk topic is KEEP_LAST 1): deeper history keeps every recorded
                # message for it. Depth is local to the writer: matching is unchanged.
                qos = QosSpec(qos.reliable, qos.transient_local, max(qos.depth, REPLAY_RELIABLE_DEPTH))
            self._pubs[conn.id] = self._node.create_publisher(message_class(conn.msgtype), name, qos_profile(qos))
            self.stats.published.setdefault(name, 0)
        if self.opts.clock:
            self._clock_pub = self._node.create_publisher(message_class(CLOCK_TYPE), CLOCK_TOPIC,
                                                          qos_profile(CLOCK_QOS))

    def _offered_qos(self, conn: Any) -> QosSpec:
        """The QoS the recorded publishers offered (stored in the bag), else the station's, else reliable."""
        from rosbags.interfaces import QosDurability, QosReliability

        profiles = list(getattr(conn.ext, "offered_qos_profiles", None) or [])
        if profiles:
            q = profiles[0]
            return QosSpec(q.reliability == QosReliability.RELIABLE, q.durability == QosDurability.TRANSIENT_LOCAL,
                           max(1, int(q.depth or 10)))
        if self.embodiment is not None:
            for spec in station_topics(self.embodiment, "both"):
                if spec.name == conn.topic:
                    return spec.qos
        return QosSpec(True, False, 10)

    def wait_for_subscribers(self, timeout_s: float, should_stop: Callable[[], bool] = lambda: False,
                             topics: list[str] | None = None) -> list[str]:
        """Wait until every published topic (or each of ``topics``) has a subscriber, at most ``timeout_s``;
        returns the topics still without one."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = sorted({p.topic_name for p in self._pubs.values() if p.get_subscription_count() == 0
                              and (topics is None or p.topic_name in topics)})
            if not missing or time.monotonic() >= deadline or should_stop():
                return missing
            time.sleep(0.05)

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            on_progress: Callable[[float], None] | None = None) -> ReplayStats:
        """Publish until the end (or forever with loop) or ``should_stop()``; returns what was published."""
        if self._node is None:
            self.start()
        wall0 = time.monotonic()
        try:
            while True:
                finished = self._play_once(wall0, should_stop, on_progress)
                if not finished or not self.opts.loop:
                    break
                self.stats.loops += 1
            if finished:
                self._drain()
        finally:
            self.stats.wall_s = time.monotonic() - wall0
        return self.stats

    def _drain(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded) until the subscribers acknowledged the reliable messages: a writer destroyed with
        samples in flight loses them, and the last chunks of a bag are as much part of it as the first."""
        from rclpy.duration import Duration
        from rclpy.qos import ReliabilityPolicy

        deadline = time.monotonic() + timeout_s
        for pub in self._pubs.values():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))

    def _play_once(self, wall_deadline_origin: float, should_stop: Callable[[], bool],
                   on_progress: Callable[[float], None] | None) -> bool:
        """One pass over the bag; False if stopped before the end."""
        from rosgraph_msgs.msg import Clock

        rate = self.opts.rate
        origin_ns = self.start_ns + int(self.opts.start_offset_s * 1e9)
        clock_period = 1.0 / self.opts.clock_hz
        max_wall = self.opts.max_wall_s
        wall0 = time.monotonic()
        last_clock = [-1.0]
        clock_msg = Clock()

        def bag_now_ns() -> int:
            return origin_ns + int((time.monotonic() - wall0) * rate * 1e9)

        def publish_clock(ns: int) -> None:
            if self._clock_pub is None:
                return
            clock_msg.clock.sec, clock_msg.clock.nanosec = divmod(ns, 1_000_000_000)
            self._clock_pub.publish(clock_msg)
            self.stats.clock_messages += 1
            last_clock[0] = time.monotonic()

        def stopped() -> bool:
            return should_stop() or bool(max_wall and time.monotonic() - wall_deadline_origin >= max_wall)

        publish_clock(origin_ns)
        prev_ns = None
        prev_topic = ""
        for conn, ns, raw in self._messages(self.connections, start_ns=origin_ns):
            if prev_ns is not None and (ns - prev_ns) / 1e9 > self.opts.max_gap_s:
                raise BagError(
                    f"bag {self.name!r}: recorded time jumps by {(ns - prev_ns) / 1e9:.1f} s between {prev_topic} "
                    f"and {conn.topic} at {(prev_ns - self.start_ns) / 1e9:.2f} s into the bag; replaying it would "
                    f"stall the graph that long: replay from after it (--start-offset) or allow it (--max-gap)")
            prev_ns, prev_topic = ns, conn.topic
            target = wall0 + (ns - origin_ns) / 1e9 / rate
            while (now := time.monotonic()) < target:
                if stopped():
                    return False
                if now - last_clock[0] >= clock_period:
                    publish_clock(bag_now_ns())
                pause = min(target - now, 0.05)
                if self._clock_pub is not None:
                    pause = min(pause, max(0.0, last_clock[0] + clock_period - time.monotonic()))
                time.sleep(pause)
            if stopped():
                return False
            if time.monotonic() - last_clock[0] >= clock_period:
                publish_clock(ns)
            pub = self._pubs[conn.id]
            pub.publish(bytes(raw))
            self.stats.published[pub.topic_name] += 1
            if on_progress is not None:
                on_progress((ns - self.start_ns) / 1e9)
        if self.end_ns > origin_ns:
            # /clock is best effort (as rclpy's TimeSource subscribes): one last message can be dropped, and a
            # sim-time graph would then stop short of the bag's end. Repeat it for a few clock periods.
            for _ in range(3):
                publish_clock(self.end_ns)
                time.sleep(clock_period)
        return True

    def close(self) -> None:
        if self._node is not None:
            import rclpy

            self._node.destroy_node()
            rclpy.try_shutdown(context=self._context)
            self._node = None
        self.reader.close()


def run_replay_cli(opts: ReplayOptions) -> int:
    """The ``replay`` command: check the bag, publish it; one-line error on bad input."""
    from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults

    apply_local_ros_defaults()
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    replay = BagReplay(opts)
    try:
        replay.start()
        span = (replay.end_ns - replay.start_ns) / 1e9
        print(f"replaying {replay.name} ({span:.1f} s, {len(replay.connections)} topics) at {opts.rate:g}x"
              f"{' with /clock' if opts.clock else ''}{', looping' if opts.loop else ''}; Ctrl-C stops", flush=True)
        if opts.wait_subscribers_s > 0:
            missing = replay.wait_for_subscribers(opts.wait_subscribers_s, lambda: stop["now"])
            if missing:
                print(f"warning: no subscriber yet on {', '.join(missing)}", file=sys.stderr, flush=True)
        bar = None
        if opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=round(span, 1), unit="s", desc="replay", file=sys.stderr, mininterval=0.5,
                       bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s")

        def progress(t: float) -> None:
            if bar is not None and round(t, 1) > bar.n:
                bar.update(round(t, 1) - bar.n)
        stats = replay.run(lambda: stop["now"], progress)
        if bar is not None:
            bar.close()
        print(f"published {stats.message_count} messages on {len(stats.published)} topics in {stats.wall_s:.1f} s"
              f"{f' ({stats.loops} loops)' if stats.loops else ''}", flush=True)
    finally:
        replay.close()
    return 0
