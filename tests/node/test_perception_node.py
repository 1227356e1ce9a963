"""Perception node with real rclpy in-process: frames, camera_info, JPEG, depth and /diagnostics over DDS;
lifecycle and preflight; frozen, dropping and unplugged cameras; OpenCV, RealSense and bag sources.

Each test starts the node and a probe node in their own rclpy Context, spun by a SingleThreadedExecutor
on a background thread (as in ``main``); the camera threads publish as in production. Faults are
injected through the cameras' own interfaces (the synthetic camera's hooks, a RealSense recording, a
bag). The conftest keeps DDS on loopback in a domain of this process's own. No test asserts a time.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from molmoact2_ros.backends.cameras.synthetic import SyntheticCamera, frame_index_of
from molmoact2_ros.bringup import MALLOC_TUNABLES, BringupOptions, dds_environment, describe, node_environment
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.core.images import image_from_compressed_fields, image_from_msg
from molmoact2_ros.nodes.diagnostics import status_values
from molmoact2_ros.nodes.perception_node import NODE_NAME, PerceptionNode, depth_topic
from molmoact2_ros.nodes.qos import (
    CAMERA_QOS,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    camera_info_topic,
    camera_topic,
    compressed_topic,
)

pytestmark = pytest.mark.ros
OK_LEVEL, WARN_LEVEL, ERROR_LEVEL = 0, 1, 2
DEFAULT_TOPICS = ((camera_topic("front"), Image), (camera_topic("wrist"), Image),
                  (camera_info_topic("front"), CameraInfo), (compressed_topic("front"), CompressedImage))


class Harness:
    def __init__(self, topics=DEFAULT_TOPICS, **params):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        overrides = [Parameter("diagnostics_period_s", value=0.2)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.probe = Node("perception_test_probe", context=self.ctx)
        self._lock = threading.Lock()
        self.received: dict[str, list[tuple[float, object]]] = {}
        self.diag: dict[str, str] = {}
        self.diag_level = -1
        self.diag_message = ""
        for topic, mtype in topics:
            self.received[topic] = []
            self.probe.create_subscription(mtype, topic, self._collector(topic), CAMERA_QOS)
        self.probe.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diag, DIAGNOSTICS_QOS)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.probe)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        # Subscriptions exist before the node starts publishing, so the first frames are not lost.
        self.node = PerceptionNode(context=self.ctx, parameter_overrides=overrides)
        self.executor.add_node(self.node)

    def _collector(self, topic: str) -> Callable[[object], None]:
        def on_msg(msg: object) -> None:
            now = self.node_clock_now_s()
            with self._lock:
                self.received[topic].append((now, msg))
        return on_msg

    def node_clock_now_s(self) -> float:
        return self.probe.get_clock().now().nanoseconds * 1e-9

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(NODE_NAME):
                with self._lock:
                    self.diag = status_values(status)
                    level = status.level
                    self.diag_level = level[0] if isinstance(level, bytes) else int(level)
                    self.diag_message = status.message

    def messages(self, topic: str) -> list[tuple[float, object]]:
        with self._lock:
            return list(self.received[topic])

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.received[topic])

    def diag_int(self, key: str) -> int:
        return int(float(self.diag.get(key, "0")))

    def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if cond():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.node.destroy_node()
        self.executor.shutdown()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self._spin.join(timeout=5)


@pytest.fixture
def harness_factory():
    made: list[Harness] = []

    def make(**params) -> Harness:
        h = Harness(**params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _indices(h: Harness, topic: str) -> list[int]:
    return [frame_index_of(image_from_msg(m)) for _, m in h.messages(topic)]


# ---- publishing --------------------------------------------------------------------------------------

def test_publishes_so101_frames_with_capture_stamps(harness_factory):
    h = harness_factory()
    assert h.node.lifecycle_state == "active"
    front, wrist, info = camera_topic("front"), camera_topic("wrist"), camera_info_topic("front")
    assert h.wait_for(lambda: len(h.received[front]) >= 15 and len(h.received[wrist]) >= 5
                      and len(h.received[info]) >= 5), {k: len(v) for k, v in h.received.items()}
    msgs = h.messages(front)
    stamps = []
    for arrived_s, msg in msgs:
        assert (msg.width, msg.height, msg.encoding, msg.step) == (640, 480, "rgb8", 1920)
        assert msg.header.frame_id == "front_optical_frame"
        stamp_s = Time.from_msg(msg.header.stamp).nanoseconds * 1e-9
        # Stamped at capture on the same clock: before arrival.
        assert stamp_s <= arrived_s + 1e-3
        stamps.append(stamp_s)
    assert all(b > a for a, b in itertools.pairwise(stamps)), "stamps must increase"
    # The pixels are the synthetic pattern, frame indices increasing (best effort may drop some).
    indices = _indices(h, front)
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    front_img = image_from_msg(msgs[-1][1])
    wrist_img = image_from_msg(h.messages(wrist)[-1][1])
    assert front_img.shape == wrist_img.shape == (480, 640, 3)
    assert np.abs(front_img.astype(int) - wrist_img.astype(int)).mean() > 10  # distinct cameras

    _, ci = h.messages(info)[-1]
    assert (ci.width, ci.height, ci.distortion_model) == (640, 480, "plumb_bob")
    assert ci.header.frame_id == "front_optical_frame"
    assert 300 < ci.k[0] < 700 and ci.k[0] == ci.k[4] and ci.k[8] == 1.0
    # camera_info carries the stamp of an image that was published.
    assert ci.header.stamp in [m.header.stamp for _, m in h.messages(front)]
    # No compressed stream unless asked for.
    assert h.messages(compressed_topic("front")) == []


def test_diagnostics_report_rates_counts_and_read_failures(harness_factory):
    h = harness_factory()
    assert h.wait_for(lambda: h.diag_int("front.frames_published") >= 10)
    assert h.wait_for(lambda: float(h.diag.get("front.rate_hz", 0)) > 0, timeout=5), h.diag
    for key in ("state", "rate_hz", "frames_published", "drops", "read_failures", "reopens", "reconnects",
                "frozen", "frozen_frames", "last_frame_age_s", "capture_to_publish_ms", "publish_ms",
                "jpeg_ms", "preflight", "source", "resolution", "target_fps", "last_error"):
        assert f"front.{key}" in h.diag and f"wrist.{key}" in h.diag, key
    assert h.diag["front.read_failures"] == "0" and h.diag["front.source"] == "synthetic"
    assert h.diag["front.preflight"] == "passed" and h.diag["front.frozen"] == "False"
    assert h.diag["cameras"] == "front,wrist" and h.diag["state"] == "active"
    assert "dds_profile" in h.diag
    assert float(h.diag["front.capture_to_publish_ms"]) > 0

    h.node.source("front").fail_next(5)
    assert h.wait_for(lambda: h.diag_int("front.read_failures") == 5), h.diag
    assert "injected" in h.diag["front.last_error"]
    # It keeps publishing after the failures, and the other camera never noticed.
    published = h.diag_int("front.frames_published")
    assert h.wait_for(lambda: h.diag_int("front.frames_published") > published + 5)
    assert h.diag["wrist.read_failures"] == "0"


def test_overrides_and_compressed(harness_factory):
    h = harness_factory(cameras=["front"], fps=60, width=160, height=120, publish_compressed=True,
                        jpeg_quality=80)
    raw, comp, wrist = camera_topic("front"), compressed_topic("front"), camera_topic("wrist")
    assert h.wait_for(lambda: len(h.received[raw]) >= 20 and len(h.received[comp]) >= 5)
    _, msg = h.messages(raw)[-1]
    assert (msg.width, msg.height) == (160, 120)
    _, cmsg = h.messages(comp)[-1]
    assert "jpeg" in cmsg.format
    decoded = image_from_compressed_fields(cmsg.format, cmsg.data)
    assert decoded.shape == (120, 160, 3)
    raw_same = [m for _, m in h.messages(raw) if m.header.stamp == cmsg.header.stamp]
    assert raw_same, "the compressed frame shares its stamp with a raw frame"
    assert np.abs(decoded.astype(int) - image_from_msg(raw_same[0]).astype(int)).mean() < 8
    assert frame_index_of(decoded) == frame_index_of(image_from_msg(raw_same[0]))
    assert h.messages(wrist) == []
    assert h.node.get_parameter("cameras").value == ["front"]
    assert h.wait_for(lambda: float(h.diag.get("front.jpeg_ms", 0)) > 0)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"cameras": ["top"]}, "not in embodiment so101's cameras"),
        ({"source": "webcam"}, "parameter source: 'webcam' is not allowed"),
        ({"embodiment": "no_such_arm"}, "unknown embodiment 'no_such_arm'"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"devices": ["front"]}, "'front' is not 'camera=device'"),
        ({"devices": ["top=/dev/video0"]}, "devices names \\['top'\\]"),
        ({"freeze_timeout_s": -1.0}, "freeze_timeout_s out of range"),
        ({"opencv_fourcc": "MJPEG", "source": "opencv"}, "fourcc must be 4 characters"),
    ],
)
def test_bad_parameters_fail_at_startup(params, match):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        # Ranges are enforced by rclpy (the descriptors); the rest by the node. main() reports both.
        with pytest.raises((ConfigError, ParameterException), match=match):
            PerceptionNode(context=ctx, parameter_overrides=overrides)
    finally:
        rclpy.shutdown(context=ctx)


# ---- lifecycle and preflight -------------------------------------------------------------------------

def test_lifecycle_without_autostart(harness_factory):
    h = harness_factory(autostart=False)
    front = camera_topic("front")
    assert h.wait_for(lambda: h.diag.get("state") == "unconfigured")
    assert h.diag_level == WARN_LEVEL and h.count(front) == 0
    assert not h.node.source("front").is_open
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.source("front").is_open and h.node.lifecycle_state == "inactive"
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert h.wait_for(lambda: len(h.received[front]) >= 5)
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    time.sleep(0.3)  # let frames already on the wire arrive
    n = h.count(front)
    assert not h.wait_for(lambda: len(h.received[front]) > n, timeout=0.6), "published while inactive"
    assert h.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert not h.node.source("front").is_open and h.node.lifecycle_state == "unconfigured"


@pytest.mark.parametrize(("pattern", "problem"), [("blank", "front: blank (black"), ("saturated", "front: saturated")])
def test_preflight_refuses_a_useless_camera(harness_factory, pattern, problem):
    h = harness_factory(autostart=False, preflight_timeout_s=0.5)
    cam = h.node.source("front")
    assert isinstance(cam, SyntheticCamera)
    cam.set_pattern(pattern)
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_activate() == TransitionCallbackReturn.FAILURE
    assert problem in h.node.transition_error and "wrist" not in h.node.transition_error
    assert h.node.lifecycle_state == "inactive" and h.count(camera_topic("wrist")) == 0
    assert h.wait_for(lambda: h.diag_level == ERROR_LEVEL and "preflight failed" in h.diag_message), h.diag_message
    cam.set_pattern("moving")  # lens cap off: activating again works
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert h.wait_for(lambda: len(h.received[camera_topic("front")]) >= 3)


@pytest.fixture(scope="module")
def video_64x48(tmp_path_factory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    cam = SyntheticCamera(CameraConfig(name="front", width=64, height=48, fps=30))
    for i in range(6):
        writer.write(cv2.cvtColor(cam.render(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_opencv_video_file_through_the_node(harness_factory, video_64x48):
    h = harness_factory(cameras=["front"], source="opencv", devices=[f"front={video_64x48}"], width=64, height=48)
    front = camera_topic("front")
    assert h.wait_for(lambda: len(h.received[front]) >= 10)
    indices = _indices(h, front)
    assert set(indices) <= set(range(6)) and len(set(indices)) >= 3  # the file's frames, looping
    assert h.diag.get("front.source", "opencv") == "opencv"


def test_preflight_refuses_a_distorting_resolution(harness_factory, video_64x48):
    # A 4:3 video configured as 1:1 would be squashed: activation fails and says why.
    h = harness_factory(cameras=["front"], source="opencv", devices=[f"front={video_64x48}"], width=48, height=48,
                        preflight_timeout_s=0.5)
    assert h.node.lifecycle_state == "inactive"
    assert "delivers 64x48, which has another aspect ratio than the configured 48x48" in h.node.transition_error


# ---- health: frozen, drops, unplugged ------------------------------------------------------------------

def test_frozen_camera_is_withheld_reported_and_recovers(harness_factory):
    h = harness_factory(freeze_timeout_s=0.3, reopen_after_s=0.3)
    front, wrist = camera_topic("front"), camera_topic("wrist")
    assert h.wait_for(lambda: len(h.received[front]) >= 3)
    cam = h.node.source("front")
    cam.freeze()
    assert h.wait_for(lambda: h.diag.get("front.state") == "frozen" and h.diag_level == ERROR_LEVEL), h.diag
    assert "front frozen" in h.diag_message
    assert h.wait_for(lambda: h.diag_int("front.reopens") >= 1), h.diag  # a hung driver gets restarted
    withheld = h.diag_int("front.frozen_frames")
    time.sleep(0.3)  # frames already on the wire
    n_front, n_wrist = h.count(front), h.count(wrist)
    assert h.wait_for(lambda: h.diag_int("front.frozen_frames") > withheld + 3)
    assert h.count(front) == n_front, "a frozen camera's repeats must not be published"
    assert h.wait_for(lambda: len(h.received[wrist]) > n_wrist + 3), "the other camera keeps going"
    # The repeats published before the freeze was declared are identical images.
    frozen_imgs = [image_from_msg(m) for _, m in h.messages(front)[-3:]]
    assert all(np.array_equal(frozen_imgs[0], f) for f in frozen_imgs[1:])
    cam.freeze(False)
    assert h.wait_for(lambda: len(h.received[front]) > n_front + 3)
    assert h.wait_for(lambda: h.diag.get("front.state") == "ok" and h.diag_level == OK_LEVEL), h.diag


def test_dropped_frames_are_counted(harness_factory):
    h = harness_factory(cameras=["front"])
    assert h.wait_for(lambda: h.diag_int("front.frames_published") >= 5)
    h.node.source("front").drop_next(7)  # lost upstream: the camera's frame counter jumps by 8
    assert h.wait_for(lambda: h.diag_int("front.drops") >= 7), h.diag
    assert h.diag["front.read_failures"] == "0"


def test_unplugged_camera_is_retried_without_stopping_the_others(harness_factory):
    h = harness_factory(reopen_after_s=0.2)
    front, wrist = camera_topic("front"), camera_topic("wrist")
    assert h.wait_for(lambda: len(h.received[front]) >= 3 and len(h.received[wrist]) >= 3)
    cam = h.node.source("front")
    assert isinstance(cam, SyntheticCamera)
    cam.unplug()
    assert h.wait_for(lambda: h.diag.get("front.state") == "disconnected" and h.diag_level == ERROR_LEVEL), h.diag
    assert "front disconnected, retrying" in h.diag_message and "not connected" in h.diag["front.last_error"]
    n_wrist = h.count(wrist)
    assert h.wait_for(lambda: len(h.received[wrist]) > n_wrist + 10), "wrist must not notice"
    assert h.diag["wrist.state"] == "ok"
    opens = cam.opens
    n_front = h.count(front)
    cam.plug()
    assert h.wait_for(lambda: len(h.received[front]) > n_front + 3)
    assert cam.opens > opens
    assert h.wait_for(lambda: h.diag.get("front.state") == "ok" and h.diag_int("front.reconnects") >= 1), h.diag
    assert h.diag_int("front.reopens") > h.diag_int("front.reconnects")  # failed attempts while unplugged


# ---- RealSense recording and bag replay through the node -------------------------------------------------

def test_realsense_recording_with_aligned_depth(harness_factory, tmp_path):
    pytest.importorskip("pyrealsense2")
    from molmoact2_ros.backends.cameras.realsense import record_software_camera

    cam = SyntheticCamera(CameraConfig(name="wrist", width=64, height=48, fps=30))
    frames = [cam.render(i) for i in range(30)]
    depth = [np.full((48, 64), 700 + i, np.uint16) for i in range(30)]
    rec = record_software_camera(tmp_path / "wrist.db3", frames, depth_mm=depth)
    wrist, wdepth, winfo = camera_topic("wrist"), depth_topic("wrist"), camera_info_topic("wrist")
    h = harness_factory(topics=((wrist, Image), (wdepth, Image), (winfo, CameraInfo)), cameras=["wrist"],
                        source="realsense", devices=[f"wrist={rec}"], width=64, height=48, realsense_depth=True)
    assert h.node.lifecycle_state == "active", h.node.transition_error
    assert h.wait_for(lambda: len(h.received[wrist]) >= 10 and len(h.received[wdepth]) >= 5)
    images = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for _, m in h.messages(wrist)}
    for _, d in h.messages(wdepth):
        assert (d.encoding, d.width, d.height, d.step) == ("16UC1", 64, 48, 128)
        img = images.get(d.header.stamp.sec * 10**9 + d.header.stamp.nanosec)
        if img is None:
            continue  # its colour frame was lost on the way (best effort)
        index = frame_index_of(image_from_msg(img))
        assert 700 <= int(np.frombuffer(d.data, "<u2").reshape(48, 64)[24, 32]) <= 700 + index
    _, info = h.messages(winfo)[-1]
    assert info.k[0] == pytest.approx(0.5 * 64 / np.tan(np.radians(69.0) / 2), rel=1e-4)  # the recording's
    assert h.wait_for(lambda: h.diag.get("wrist.source") == "realsense" and h.diag_int("wrist.drops") >= 0)


def _record_bag(path: Path, frames: int) -> list[int]:
    """Record /cameras/front/image_raw from a live synthetic node as ros2 bag does: raw CDR, rosbags writer."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    recorded: list[tuple[int, bytes]] = []
    done = threading.Event()
    probe = Node("bag_recorder", context=ctx)

    def on_raw(data: bytes) -> None:
        if len(recorded) < frames:
            recorded.append((time.time_ns(), data))
        else:
            done.set()

    # raw=True: the CDR bytes as they came off the wire (serialize_message may add padding rosbags rejects).
    probe.create_subscription(Image, camera_topic("front"), on_raw, CAMERA_QOS, raw=True)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(probe)
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter("cameras", value=["front"]), Parameter("width", value=160), Parameter("height", value=120)])
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        assert done.wait(15), f"recorded only {len(recorded)} frames"
    finally:
        node.destroy_node()
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
        spin.join(timeout=5)
    ts = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(camera_topic("front"), "sensor_msgs/msg/Image", typestore=ts)
        for t_ns, data in recorded:
            writer.write(conn, t_ns, data)
    return [frame_index_of(image_from_msg(ts.deserialize_cdr(d, "sensor_msgs/msg/Image"))) for _, d in recorded]


def test_bag_recorded_from_a_live_node_replays_through_the_bag_source(harness_factory, tmp_path):
    pytest.importorskip("rosbags")
    bag = tmp_path / "session"
    recorded = _record_bag(bag, frames=12)
    h = harness_factory(cameras=["front"], source="bag", devices=[f"front={bag}"], width=160, height=120,
                        loop=False, fps=60)
    front = camera_topic("front")
    assert h.wait_for(lambda: h.diag.get("front.state") == "ended"), h.diag
    replayed = _indices(h, front)
    assert replayed == [i for i in recorded if i in replayed]  # in recorded order
    assert len(replayed) >= len(recorded) - 2  # best effort in one process: nearly all arrive
    assert h.wait_for(lambda: h.diag_level == WARN_LEVEL and "end of /cameras/front/image_raw" in h.diag_message)


# ---- process: main() and the DDS profile ------------------------------------------------------------------

def test_main_exits_1_when_autostart_fails():
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    proc = subprocess.run(
        [sys.executable, "-c", "from molmoact2_ros.nodes.perception_node import main; raise SystemExit(main())",
         "--ros-args", "-p", "source:=realsense", "-p", "devices:=[front=/nonexistent/front.db3]"],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "did not start" in out and "front.db3" in out and "not found" in out


def test_bringup_applies_the_shipped_dds_profile(monkeypatch):
    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        monkeypatch.delenv(key, raising=False)
    env = dds_environment("local_large_data")
    profile = Path(env["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(profile) and profile.is_file()
    ns = {"dds": "http://www.eprosima.com"}
    root = ET.parse(profile).getroot()
    shm = [t for t in root.iterfind(".//dds:transport_descriptor", ns)
           if t.findtext("dds:type", namespaces=ns) == "SHM"]
    assert int(shm[0].findtext("dds:segment_size", namespaces=ns)) >= 16 * 2**20  # many 640x480 frames
    participant = root.find(".//dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for spec in describe(BringupOptions(embodiment="so101", checkpoint="tiny")):
        assert spec.env == {**env, "GLIBC_TUNABLES": MALLOC_TUNABLES}, spec.name
    assert node_environment("local_large_data", {"GLIBC_TUNABLES": "mine"}) == env
    assert all(s.env == {} for s in describe(BringupOptions(checkpoint="tiny", dds_profile="")))
    # An explicit choice in the environment wins.
    assert dds_environment("local_large_data", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}) == {}
    with pytest.raises(ConfigError, match="unknown DDS profile"):
        dds_environment("fast_please", {})


def test_the_real_time_dds_variant_is_chosen_only_where_the_host_grants_it(monkeypatch):
    from molmoact2_ros.bringup import realtime_allowed

    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        monkeypatch.delenv(key, raising=False)
    plain = Path(dds_environment("local_large_data", realtime=False)["FASTDDS_DEFAULT_PROFILES_FILE"])
    rt = Path(dds_environment("local_large_data", realtime=True)["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert plain.name == "fastdds_local_large_data.xml" and rt.name == "fastdds_local_large_data_rt.xml"
    ns = {"dds": "http://www.eprosima.com"}
    priorities = [int(e.text) for e in ET.parse(rt).getroot().iterfind(".//dds:scheduling_policy/../dds:priority", ns)]
    assert priorities and all(0 < p < 49 for p in priorities)  # below the driver's control and executor threads
    # Without a choice, what this host really grants decides.
    auto = Path(dds_environment("local_large_data")["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert auto == (rt if realtime_allowed() else plain)
