"""CameraFrameReceiver (nodes/image_cdr.py): real rclpy publishers over DDS, frames decoded from raw CDR.

A publisher node sends sensor_msgs/Image frames on the camera topics; the receiver (its own node, executor
and thread) must hand over the very pixels, stamp and frame_id that were sent, per camera, on its own
thread; an undecodable frame must reach ``on_error`` with a message naming the topic; SCHED_FIFO is either
granted (and then in effect on the receiving thread) or refused with a one-line reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from molmoact2_ros.core.errors import ObservationError
from molmoact2_ros.core.images import fill_image
from molmoact2_ros.nodes.image_cdr import CameraFrameReceiver, set_thread_fifo
from molmoact2_ros.nodes.qos import CAMERA_QOS, camera_topic

pytestmark = pytest.mark.ros

TIMEOUT_S = 30.0  # generous: discovery on a busy 2-core machine


def wait_for(cond: Callable[[], bool], timeout: float = TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture
def ctx() -> Iterator[rclpy.Context]:
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def frame(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def image_msg(pixels: np.ndarray, sec: int, frame_id: str, encoding: str = "rgb8") -> Image:
    msg = fill_image(Image(), pixels)
    msg.encoding = encoding
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, 250_000_000, frame_id
    return msg


def publish_until(pub, msg: Image, cond: Callable[[], bool]) -> bool:
    """Best effort, keep-last 1: publish again until the receiver has what it needs (discovery takes a while)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        pub.publish(msg)
        if wait_for(cond, 0.2):
            return True
    return False


def test_frames_arrive_decoded_per_camera_on_the_receiver_thread(ctx):
    pub_node = rclpy.create_node("test_image_cdr_pub", context=ctx)
    pubs = {cam: pub_node.create_publisher(Image, camera_topic(cam), CAMERA_QOS) for cam in ("top", "wrist")}
    got: dict[str, list] = {"top": [], "wrist": []}
    threads: set[str] = set()

    def on_frame(camera, decoded, info):
        threads.add(threading.current_thread().name)
        got[camera].append((decoded, info))

    receiver = CameraFrameReceiver(["top", "wrist"], on_frame, node_name="test_image_cdr_rx", context=ctx)
    try:
        sent = {"top": frame(1), "wrist": frame(2, 30, 40)}
        for i, cam in enumerate(("top", "wrist")):
            msg = image_msg(sent[cam], 1700000000 + i, f"{cam}_optical")
            assert publish_until(pubs[cam], msg, lambda c=cam: bool(got[c])), f"no frame on {camera_topic(cam)}"
        for i, cam in enumerate(("top", "wrist")):
            decoded, info = got[cam][-1]
            np.testing.assert_array_equal(decoded.image, sent[cam])
            assert decoded.stamp_sec == 1700000000 + i and decoded.stamp_nanosec == 250_000_000
            assert decoded.frame_id == f"{cam}_optical"
            assert info["source_timestamp"] > 0 and info["received_timestamp"] >= info["source_timestamp"]
        assert threads == {"test_image_cdr_rx_spin"}  # never the publisher's or pytest's thread
        assert receiver.frames["top"] >= 1 and receiver.errors == {"top": 0, "wrist": 0}
    finally:
        receiver.close()
        receiver.close()  # idempotent
        pub_node.destroy_node()


def test_undecodable_frame_goes_to_on_error_naming_the_topic(ctx):
    pub_node = rclpy.create_node("test_image_cdr_pub_bad", context=ctx)
    pub = pub_node.create_publisher(Image, camera_topic("top"), CAMERA_QOS)
    errors: list[tuple[str, ObservationError]] = []
    frames: list = []
    receiver = CameraFrameReceiver(["top"], lambda c, f, i: frames.append(f), lambda c, e: errors.append((c, e)),
                                   node_name="test_image_cdr_rx_bad", context=ctx)
    try:
        bad = image_msg(frame(3), 5, "top_optical", encoding="yuv422")
        assert publish_until(pub, bad, lambda: bool(errors)), "the undecodable frame never reached on_error"
        camera, exc = errors[0]
        assert camera == "top" and not frames
        assert camera_topic("top") in str(exc) and "yuv422" in str(exc) and "\n" not in str(exc)
        assert receiver.errors["top"] >= 1
    finally:
        receiver.close()
        pub_node.destroy_node()


def test_priority_is_granted_on_the_receiving_thread_or_refused_with_a_reason(ctx):
    seen: dict[str, int] = {}
    receiver = CameraFrameReceiver(["top"], lambda c, f, i: None, node_name="test_image_cdr_rx_rt", context=ctx,
                                   priority=5)
    try:
        # The spin thread's policy, read from the receiving side: publish one frame and look from its callback.
        pub_node = rclpy.create_node("test_image_cdr_pub_rt", context=ctx)
        pub = pub_node.create_publisher(Image, camera_topic("top"), CAMERA_QOS)
        receiver._on_frame = lambda c, f, i: seen.setdefault("policy", os.sched_getscheduler(0))
        assert publish_until(pub, image_msg(frame(4), 1, "top_optical"), lambda: "policy" in seen)
        if receiver.priority_error:
            assert "SCHED_FIFO 5 refused" in receiver.priority_error and "CAP_SYS_NICE" in receiver.priority_error
            assert seen["policy"] == os.SCHED_OTHER
        else:
            assert seen["policy"] == os.SCHED_FIFO
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is left alone
        pub_node.destroy_node()
    finally:
        receiver.close()


def test_bad_arguments_are_refused_with_one_line(ctx):
    with pytest.raises(ValueError, match="priority must be 0"):
        CameraFrameReceiver(["top"], lambda c, f, i: None, context=ctx, priority=100)
    with pytest.raises(ValueError, match="at least one camera"):
        CameraFrameReceiver([], lambda c, f, i: None, context=ctx)
    assert "must be 1-99" in set_thread_fifo(0)


def test_receiver_keeps_up_while_the_caller_spins_its_own_executor(ctx):
    """The receiver's executor is its own: another executor spinning in the same process does not take its
    subscriptions (the policy node keeps its executor for everything else)."""
    other = rclpy.create_node("test_image_cdr_other", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(other)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    got: list = []
    receiver = CameraFrameReceiver(["top"], lambda c, f, i: got.append(threading.current_thread().name),
                                   node_name="test_image_cdr_rx_mix", context=ctx)
    pub = other.create_publisher(Image, camera_topic("top"), CAMERA_QOS)
    try:
        assert publish_until(pub, image_msg(frame(5), 1, "top_optical"), lambda: bool(got))
        assert set(got) == {"test_image_cdr_rx_mix_spin"}
    finally:
        receiver.close()
        executor.shutdown()
        spinner.join(5)
        other.destroy_node()
