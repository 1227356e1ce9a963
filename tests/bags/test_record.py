"""``molmoact2-ros record``: the CLI process recording live publishers over DDS, stopped by SIGINT/SIGTERM;
bag files read back with rosbags; splitting; an unwritable path; a full disk (a real small tmpfs)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from molmoact2_ros.bags.record import SplitBagWriter  # noqa: E402
from molmoact2_ros.bags.topics import (  # noqa: E402
    INSTRUCTION_TOPIC,
    JOINT_STATE_QOS,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    qos_profile,
)

pytestmark = pytest.mark.ros


def read_counts(bag: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(messages actually read per topic, counts the metadata claims per topic)."""
    with AnyReader([bag]) as reader:
        read: dict[str, int] = {}
        for conn, _, _ in reader.messages():
            read[conn.topic] = read.get(conn.topic, 0) + 1
        claimed: dict[str, int] = {}
        for c in reader.connections:
            claimed[c.topic] = claimed.get(c.topic, 0) + c.msgcount
    return read, {t: n for t, n in claimed.items() if n}


def joint_positions(bag: Path) -> list[int]:
    """The first joint position of every recorded /joint_states message, in recorded order."""
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == JOINT_STATES_TOPIC]
        return [int(reader.deserialize(raw, c.msgtype).position[0]) for c, _, raw in reader.messages(connections=conns)]


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molmoact2_ros.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_a_complete_readable_bag(tmp_path, sig):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("record_test_station", context=ctx)
    js = node.create_publisher(JointState, JOINT_STATES_TOPIC, qos_profile(JOINT_STATE_QOS))
    instr = node.create_publisher(String, INSTRUCTION_TOPIC, qos_profile(LATCHED_QOS))
    instr.publish(String(data="stack the cups"))  # before the recorder exists: latched, it still gets it
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    bag = tmp_path / "rec"
    proc = cli("record", "-e", "so101", "--cameras", "none", "-o", str(bag), "--quiet")
    try:
        deadline = time.monotonic() + 60
        while js.get_subscription_count() == 0:  # the recorder subscribed
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "late"
            time.sleep(0.05)
        for i in range(60):
            js.publish(JointState(name=["a"], position=[float(i)]))
            time.sleep(0.01)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert proc.returncode == 0, err
    read, claimed = read_counts(bag)
    assert read == claimed  # metadata.yaml agrees with what is in the files
    assert read[INSTRUCTION_TOPIC] == 1
    # /joint_states is best effort (as the drivers publish it): a busy machine drops some, CI once kept 22 of
    # 60. What must hold is that what was recorded is real, in order, and counted in the summary.
    positions = joint_positions(bag)
    assert 1 <= len(positions) <= 60
    assert positions == sorted(set(positions)) and set(positions) <= set(range(60))
    assert f"{read[JOINT_STATES_TOPIC] + 1} messages" in out


def test_unwritable_or_existing_output_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for target, words in ((blocker / "bag", "cannot create bag"), (blocker, "already exists")):
        proc = cli("record", "-o", str(target), "--quiet", "--duration", "1")
        _, err = proc.communicate(timeout=60)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith("molmoact2-ros: error: ") and words in lines[0] and str(target) in lines[0]


def test_split_by_size_and_by_duration(tmp_path):
    payload = bytes(range(256)) * 400  # ~100 kB, any bytes: the writer does not decode
    by_size = SplitBagWriter(tmp_path / "size", split_size_bytes=1_000_000)
    by_size.add_topic("/blob", "std_msgs/msg/String")
    for i in range(35):
        assert by_size.write("/blob", 10**18 + i * 10**7, payload)
    s = by_size.close()
    assert len(s.files) == 4 and s.counts == {"/blob": 35}  # 10+10+10+5 messages of ~0.1 MB
    assert sorted(p.name for p in (tmp_path / "size").iterdir()) == ["metadata.yaml", *s.files]
    assert read_counts(tmp_path / "size") == ({"/blob": 35}, {"/blob": 35})

    by_time = SplitBagWriter(tmp_path / "time", split_duration_ns=10**9)
    by_time.add_topic("/blob", "std_msgs/msg/String")
    for i in range(30):  # 3 s at 10 Hz
        by_time.write("/blob", 10**18 + i * 10**8, b"\x00\x01\x00\x00\x02\x00\x00\x00x\x00")
    s = by_time.close()
    assert len(s.files) == 3 and s.duration_ns == 29 * 10**8
    assert read_counts(tmp_path / "time") == ({"/blob": 30}, {"/blob": 30})


DISK_FULL_SCRIPT = textwrap.dedent("""
    import json, sys
    from molmoact2_ros.bags.record import SplitBagWriter
    from rosbags.highlevel import AnyReader
    w = SplitBagWriter(sys.argv[1] + "/bag", reserve_bytes=3_000_000)
    w.add_topic("/blob", "std_msgs/msg/String")
    n = 0
    while w.write("/blob", 10**18 + n, bytes(50_000)):
        n += 1
    s = w.close()
    with AnyReader([s.path]) as r:
        read = sum(1 for _ in r.messages())
        claimed = sum(c.msgcount for c in r.connections)
    print(json.dumps({"written": n, "read": read, "claimed": claimed, "problem": s.problem}))
""")


def test_full_disk_stops_with_a_readable_bag(tmp_path):
    """A 12 MB tmpfs in a private mount namespace: writing stops with the disk nearly full, and what was
    written is a complete bag."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) (util-linux) for a private small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(DISK_FULL_SCRIPT)
    cmd = (f"mount -t tmpfs -o size=12m none {mnt} && exec {sys.executable} {script} {mnt}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "mount" in proc.stderr and "fill.py" not in proc.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["problem"].startswith("disk full"), result
    assert 100 < result["written"] < 240, result  # ~12 MB of 50 kB messages, less the reserve
    assert result["read"] == result["claimed"] == result["written"], result


def test_station_topics_match_the_nodes_names_and_qos():
    """bags/topics.py mirrors nodes/qos.py without importing rclpy: pin them equal."""
    from molmoact2_ros.bags import topics
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.nodes import qos

    for name in ("INSTRUCTION_TOPIC", "CHUNK_TOPIC", "DEPTH_TOPIC", "JOINT_STATES_TOPIC", "ESTOP_TOPIC",
                 "DIAGNOSTICS_TOPIC"):
        assert getattr(topics, name) == getattr(qos, name), name
    for name in ("CAMERA_QOS", "JOINT_STATE_QOS", "CHUNK_QOS", "LATCHED_QOS", "DIAGNOSTICS_QOS"):
        assert topics.qos_profile(getattr(topics, name)) == getattr(qos, name), name
    specs = topics.station_topics(load_embodiment("yam_bimanual"), "both")
    assert [s.name for s in topics.by_role(specs, "camera")] == [qos.camera_topic(c) for c in ("top", "left", "right")]
    assert [s.name for s in topics.by_role(specs, "camera_compressed")] == [
        qos.compressed_topic(c) for c in ("top", "left", "right")]
    for spec in specs:
        topics.message_class(spec.msgtype)  # every type is installed
