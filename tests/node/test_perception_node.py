"""Perception node with real rclpy in-process: frames, camera_info, JPEG and /diagnostics over DDS.

Each test starts the node (so101, synthetic cameras) and a probe node in their own rclpy Context,
spun by a SingleThreadedExecutor on a background thread (as in ``main``); the camera threads publish
as in production. The conftest keeps DDS on loopback in a domain of this process's own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from molmoact2_ros.backends.cameras.synthetic import frame_index_of
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.core.images import image_from_compressed_fields, image_from_msg
from molmoact2_ros.nodes.diagnostics import status_values
from molmoact2_ros.nodes.perception_node import NODE_NAME, PerceptionNode
from molmoact2_ros.nodes.qos import (
    CAMERA_QOS,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    camera_info_topic,
    camera_topic,
    compressed_topic,
)

pytestmark = pytest.mark.ros


class Harness:
    def __init__(self, **params):
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
        topics = ((camera_topic("front"), Image), (camera_topic("wrist"), Image),
                  (camera_info_topic("front"), CameraInfo), (compressed_topic("front"), CompressedImage))
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


def test_publishes_so101_frames_with_capture_stamps(harness_factory):
    h = harness_factory()
    front, wrist, info = camera_topic("front"), camera_topic("wrist"), camera_info_topic("front")
    assert h.wait_for(lambda: len(h.received[front]) >= 15 and len(h.received[wrist]) >= 5
                      and len(h.received[info]) >= 5), {k: len(v) for k, v in h.received.items()}
    msgs = h.messages(front)
    stamps = []
    for arrived_s, msg in msgs:
        assert (msg.width, msg.height, msg.encoding, msg.step) == (640, 480, "rgb8", 1920)
        assert msg.header.frame_id == "front_optical_frame"
        stamp_s = Time.from_msg(msg.header.stamp).nanoseconds * 1e-9
        # Stamped at capture on the same clock: before arrival, and only transport latency behind.
        assert arrived_s - 0.5 < stamp_s <= arrived_s + 1e-3
        stamps.append(stamp_s)
    assert all(b > a for a, b in itertools.pairwise(stamps)), "stamps must increase"
    # Paced at the configured 30 fps.
    period = np.median(np.diff(stamps))
    assert 0.8 / 30 < period < 1.25 / 30, period
    # The pixels are the synthetic pattern, frame indices increasing (best effort may drop some).
    indices = [frame_index_of(image_from_msg(m)) for _, m in msgs]
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
    assert h.wait_for(lambda: int(h.diag.get("front.frames_published", 0)) >= 10)
    assert h.wait_for(lambda: float(h.diag.get("front.rate_hz", 0)) > 20, timeout=5), h.diag
    for key in ("rate_hz", "frames_published", "read_failures", "last_frame_age_s", "publish_ms",
                "source", "resolution", "target_fps"):
        assert f"front.{key}" in h.diag and f"wrist.{key}" in h.diag
    assert h.diag["front.read_failures"] == "0" and h.diag["front.source"] == "synthetic"
    assert h.diag["cameras"] == "front,wrist"
    assert h.wait_for(lambda: h.diag_level == 0), h.diag_message

    h.node.source("front").fail_next(5)
    assert h.wait_for(lambda: int(h.diag.get("front.read_failures", 0)) == 5), h.diag
    assert "injected" in h.diag["front.last_error"]
    # It keeps publishing after the failures, and the other camera never noticed.
    published = int(h.diag["front.frames_published"])
    assert h.wait_for(lambda: int(h.diag["front.frames_published"]) > published + 5)
    assert h.diag["wrist.read_failures"] == "0"


def test_overrides_and_compressed(harness_factory):
    h = harness_factory(cameras=["front"], fps=60, width=160, height=120, publish_compressed=True,
                        jpeg_quality=80)
    raw, comp, wrist = camera_topic("front"), compressed_topic("front"), camera_topic("wrist")
    assert h.wait_for(lambda: len(h.received[raw]) >= 20 and len(h.received[comp]) >= 5)
    _, msg = h.messages(raw)[-1]
    assert (msg.width, msg.height) == (160, 120)
    stamps = [Time.from_msg(m.header.stamp).nanoseconds * 1e-9 for _, m in h.messages(raw)]
    assert 0.8 / 60 < np.median(np.diff(stamps)) < 1.25 / 60
    _, cmsg = h.messages(comp)[-1]
    assert "jpeg" in cmsg.format
    decoded = image_from_compressed_fields(cmsg.format, cmsg.data)
    assert decoded.shape == (120, 160, 3)
    raw_same = [m for _, m in h.messages(raw) if m.header.stamp == cmsg.header.stamp]
    assert raw_same, "the compressed frame shares its stamp with a raw frame"
    assert np.abs(decoded.astype(int) - image_from_msg(raw_same[0]).astype(int)).mean() < 8
    assert h.messages(wrist) == []
    assert h.node.get_parameter("cameras").value == ["front"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"cameras": ["top"]}, "not in embodiment so101's cameras"),
        ({"source": "webcam"}, "parameter source: 'webcam' is not allowed"),
        ({"source": "realsense"}, "pyrealsense2"),
        ({"embodiment": "no_such_arm"}, "unknown embodiment 'no_such_arm'"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_bad_parameters_fail_at_startup(params, match):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        with pytest.raises(ConfigError, match=match):
            PerceptionNode(context=ctx, parameter_overrides=overrides)
    finally:
        rclpy.shutdown(context=ctx)
