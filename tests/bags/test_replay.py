"""``molmoact2-ros replay``: real bags (written through rosbags), real rclpy publishers and subscribers.

Timing checks: messages leave at their recorded pace divided by the rate, /clock carries the recorded
time; loop, start offset, topic filter and remap; the live driver node on use_sim_time executes chunks
from a replayed bag; bad bags fail with one line naming the bag (and topic).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from builtin_interfaces.msg import Duration  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from molmoact2_ros.bags.record import SplitBagWriter, rosbags_qos  # noqa: E402
from molmoact2_ros.bags.replay import BagReplay, ReplayOptions  # noqa: E402
from molmoact2_ros.bags.topics import (  # noqa: E402
    BAG_EMBODIMENT_KEY,
    CHUNK_QOS,
    CHUNK_TOPIC,
    JOINT_STATE_QOS,
    JOINT_STATES_TOPIC,
    BagError,
    qos_profile,
)
from molmoact2_ros.core.embodiment import load_embodiment  # noqa: E402

pytestmark = pytest.mark.ros

EMB = load_embodiment("so101")
T0_NS = 1_700_000_000 * 10**9  # a recording "from another day"


def stamp(ns: int):
    return rclpy.time.Time(nanoseconds=ns).to_msg()


def joint_state(ns: int, names=None, value: float = 0.0) -> bytes:
    msg = JointState(name=list(names or EMB.joint_names), position=[value] * len(names or EMB.joint_names))
    msg.header.stamp = stamp(ns)
    return serialize_message(msg)


def chunk(ns: int, start: np.ndarray, delta: np.ndarray, steps: int) -> bytes:
    msg = JointTrajectory(joint_names=EMB.joint_names)
    msg.header.stamp = stamp(ns)
    for k, row in enumerate(start + np.linspace(0.0, 1.0, steps)[:, None] * delta):
        t = round(k * 1e9 / EMB.control_rate_hz)
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                               time_from_start=Duration(sec=t // 10**9, nanosec=t % 10**9)))
    return serialize_message(msg)


def make_bag(path: Path, seconds: float = 2.0, hz: float = 20.0, embodiment: str = "so101",
             gap_at_s: float = 0.0, gap_s: float = 0.0) -> Path:
    """A bag of /joint_states at ``hz`` (stamp = record time) and a chunk every 0.5 s."""
    w = SplitBagWriter(path, custom_data={BAG_EMBODIMENT_KEY: embodiment})
    w.add_topic(JOINT_STATES_TOPIC, "sensor_msgs/msg/JointState", [rosbags_qos(JOINT_STATE_QOS)])
    w.add_topic(CHUNK_TOPIC, "trajectory_msgs/msg/JointTrajectory", [rosbags_qos(CHUNK_QOS)])
    for i in range(round(seconds * hz)):
        ns = T0_NS + round(i * 1e9 / hz)
        if gap_s and i / hz >= gap_at_s:
            ns += round(gap_s * 1e9)
        w.write(JOINT_STATES_TOPIC, ns, joint_state(ns, value=i))
        if i % round(hz / 2) == 0:
            w.write(CHUNK_TOPIC, ns, chunk(ns, EMB.home, np.zeros(EMB.dof), 5))
    assert not w.close().problem
    return path


class Listener:
    """Subscribes to topics and /clock in its own context; records (wall time, value) per topic."""

    def __init__(self, topics: dict[str, type]):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("replay_listener", context=self.ctx)
        self.lock = threading.Lock()
        self.got: dict[str, list[tuple[float, int]]] = {t: [] for t in [*topics, "/clock"]}
        deep = qos_profile(_qs(False, 200))
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._cb(topic), deep)
        self.node.create_subscription(Clock, "/clock", self._cb("/clock"), deep)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _cb(self, topic):
        def on(msg):
            t = msg.clock if topic == "/clock" else msg.header.stamp
            with self.lock:
                self.got[topic].append((time.monotonic(), t.sec * 10**9 + t.nanosec))
        return on

    def wait_for(self, topic, value: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if any(v == value for _, v in self.got[topic]):
                    return True
            time.sleep(0.02)
        return False

    def stamps(self, topic) -> np.ndarray:
        with self.lock:
            return np.array([s for _, s in self.got[topic]], dtype=np.int64)

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def _qs(reliable: bool, depth: int):
    from molmoact2_ros.bags.topics import QosSpec

    return QosSpec(reliable, False, depth)


def replay(opts: ReplayOptions, listener: Listener | None = None):
    r = BagReplay(opts)
    try:
        r.start()
        wanted = None if listener is None else [t for t in listener.got if t != "/clock"]
        missing = r.wait_for_subscribers(10.0, topics=wanted)
        assert not missing, f"no subscriber on {missing}"
        time.sleep(0.3)  # discovery completes both ways (the listener's reader matched the writer)
        return r.run()
    finally:
        r.close()


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return make_bag(tmp_path_factory.mktemp("replay") / "b", seconds=2.0, hz=20.0)


def test_replays_at_real_time_times_rate_with_clock(bag):
    # Both of the bag's topics: --wait-subscribers waits for a subscriber on each (a missing one costs 20 s).
    lis = Listener({JOINT_STATES_TOPIC: JointState, CHUNK_TOPIC: JointTrajectory})
    try:
        # The CLI in its own process: the listener's callbacks must not share a GIL with the publisher.
        proc = cli("replay", str(bag), "--rate", "2", "--quiet", "--wait-subscribers", "20")
        # The listener's executor may still be behind on a busy machine: wait for the bag's end on /clock.
        lis.wait_for("/clock", T0_NS + round(39 * 1e9 / 20), timeout_s=10.0)
    finally:
        lis.close()
    assert proc.returncode == 0, proc.stderr
    assert "published 44 messages on 2 topics" in proc.stdout, proc.stdout
    assert "no subscriber yet" not in proc.stderr, proc.stderr
    with lis.lock:
        got = list(lis.got[JOINT_STATES_TOPIC])
        clock = list(lis.got["/clock"])
    assert len(got) >= 36, f"lost too many of 40 joint states: {len(got)}"
    # Pace: arrival (wall) time is linear in recorded time with slope 1/rate. A callback can run late (the
    # listener shares this process's GIL), so fit and bound the residuals instead of comparing spacings.
    walls = np.array([w for w, _ in got])
    stamps = (np.array([s for _, s in got]) - T0_NS) / 1e9
    slope, intercept = np.polyfit(stamps, walls, 1)
    assert 0.4 <= slope <= 0.6, f"wall s per recorded s: {slope:.3f}, want 0.5 at rate 2"
    assert np.max(np.abs(walls - (slope * stamps + intercept))) < 0.25
    # /clock carries recorded time: monotone, from the bag's start to its end, and near each message's stamp.
    cw, cv = np.array([w for w, _ in clock]), np.array([v for _, v in clock])
    assert np.all(np.diff(cv) >= 0)
    assert cv[0] == T0_NS and cv[-1] == T0_NS + round(39 * 1e9 / 20)
    assert len(cv) > 50  # ~100 Hz for ~1 s
    # At any wall time /clock reads what the messages published then were stamped: the same line.
    c_slope, c_intercept = np.polyfit((cv - T0_NS) / 1e9, cw, 1)
    assert 0.4 <= c_slope <= 0.6, c_slope
    assert abs(c_intercept - intercept) < 0.1, f"/clock is {c_intercept - intercept:+.3f} s (wall) off the messages"


def test_loop_offset_filter_and_remap(bag):
    lis = Listener({"/replayed/joint_states": JointState, CHUNK_TOPIC: JointTrajectory})
    try:
        stats = replay(ReplayOptions(bag=str(bag), rate=4.0, loop=True, start_offset_s=1.0, max_wall_s=0.65,
                                     topics=(JOINT_STATES_TOPIC,), remap={JOINT_STATES_TOPIC: "/replayed/joint_states"},
                                     progress=False), lis)
        time.sleep(0.2)
        got = lis.stamps("/replayed/joint_states")
    finally:
        lis.close()
    assert set(stats.published) == {"/replayed/joint_states"}
    assert not lis.got[CHUNK_TOPIC], "a filtered-out topic was published"
    assert stats.loops >= 1  # 0.95 s from the offset at 4x = 0.24 s a pass: >= 2 passes in 0.65 s
    assert stats.published["/replayed/joint_states"] > 20
    assert len(got) > 20 and got.min() >= T0_NS + 1_000_000_000  # nothing before the offset
    assert np.sum(got == got.min()) >= 2  # the first message after the offset came again: it looped


def test_live_driver_on_sim_time_executes_replayed_chunks(tmp_path):
    """The driver node (mock arm) with use_sim_time runs on the replay's /clock and executes its chunks,
    though their stamps are from another day: sim time makes them fresh."""
    from rclpy.parameter import Parameter

    from molmoact2_ros.nodes.diagnostics import status_values
    from molmoact2_ros.nodes.driver_node import DriverNode

    path = tmp_path / "chunks"
    w = SplitBagWriter(path, custom_data={BAG_EMBODIMENT_KEY: "so101"})
    w.add_topic(CHUNK_TOPIC, "trajectory_msgs/msg/JointTrajectory", [rosbags_qos(CHUNK_QOS)])
    delta = np.array([0.2, -0.15, 0.2, 0.0, 0.1, 0.1])
    n = 6
    for i in range(n):  # a chunk every 0.2 s, each continuing the motion a little further
        ns = T0_NS + i * 200_000_000
        w.write(CHUNK_TOPIC, ns, chunk(ns, EMB.home + delta * i / n, delta / n, 10))
    w.close()

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    driver = DriverNode(context=ctx, parameter_overrides=[
        Parameter("use_sim_time", value=True), Parameter("diagnostics_period_s", value=0.1)])
    probe = rclpy.create_node("driver_probe", context=ctx)
    diag: dict[str, str] = {}
    commanded: list[np.ndarray] = []
    from diagnostic_msgs.msg import DiagnosticArray

    def on_diag(msg):
        for s in msg.status:
            if s.name == driver.get_fully_qualified_name():
                diag.update(status_values(s))
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    probe.create_subscription(JointState, "/molmoact2_driver/commanded",
                              lambda m: commanded.append(np.asarray(m.position)), qos_profile(_qs(False, 100)))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(driver)
    executor.add_node(probe)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        replay(ReplayOptions(bag=str(path), progress=False))  # waits for the driver's chunk subscription
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and int(diag.get("chunks_executed", "0")) < 1:
            time.sleep(0.05)
        assert int(diag.get("chunks_executed", "0")) >= 1, f"no replayed chunk executed; diagnostics: {diag}"
        assert int(diag.get("chunks_rejected", "0")) == 0, diag
        assert commanded and np.max(np.abs(np.array(commanded) - EMB.home)) > 0.05, "the arm was not commanded"
        assert abs(driver.get_clock().now().nanoseconds - (T0_NS + (n - 1) * 200_000_000)) < 1e9  # on bag time
    finally:
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=2.0)
        driver.release()
        driver.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)


# ---- bad input ------------------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molmoact2_ros.cli", *args], capture_output=True, text=True,
                          timeout=120)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("molmoact2-ros: error: "), proc.stderr
    return lines[0]


def test_truncated_bag_is_a_clear_error_naming_the_bag(bag, tmp_path):
    broken = tmp_path / "torn"
    broken.mkdir()
    (broken / "metadata.yaml").write_text((bag / "metadata.yaml").read_text())
    data = (bag / "b_0.mcap").read_bytes()
    (broken / "b_0.mcap").write_bytes(data[: len(data) // 2])  # the recorder died mid-file
    err = one_line_error(cli("replay", str(broken), "--quiet"))
    assert str(broken) in err and "truncated or corrupt" in err


def test_bad_bags_name_the_bag_and_topic(bag, tmp_path):
    with pytest.raises(BagError, match=rf"{bag}.*no topic /nope.*/joint_states"):
        BagReplay(ReplayOptions(bag=str(bag), topics=("/nope",)))
    with pytest.raises(BagError, match=rf"{bag}.*{JOINT_STATES_TOPIC} carries joints.*'yam_bimanual'"):
        BagReplay(ReplayOptions(bag=str(bag), embodiment="yam_bimanual"))
    wrong = tmp_path / "wrong"
    w = SplitBagWriter(wrong, custom_data={BAG_EMBODIMENT_KEY: "so101"})
    w.add_topic(JOINT_STATES_TOPIC, "std_msgs/msg/String")
    w.write(JOINT_STATES_TOPIC, T0_NS, serialize_message(String(data="x")))
    w.close()
    with pytest.raises(BagError, match=rf"{wrong}.*{JOINT_STATES_TOPIC} has type std_msgs/msg/String, expected "
                                       "sensor_msgs/msg/JointState"):
        BagReplay(ReplayOptions(bag=str(wrong)))
    jump = make_bag(tmp_path / "jump", seconds=1.0, hz=20.0, gap_at_s=0.5, gap_s=3600.0)
    r = BagReplay(ReplayOptions(bag=str(jump), rate=4.0, progress=False))
    try:
        with pytest.raises(BagError, match=rf"{jump}.*jumps by 3600.1 s .*{JOINT_STATES_TOPIC}"):
            r.run()
    finally:
        r.close()
    err = one_line_error(cli("replay", str(tmp_path / "missing"), "--quiet"))
    assert "not found" in err and str(tmp_path / "missing") in err
