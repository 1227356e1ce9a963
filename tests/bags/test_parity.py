"""Parity: the live policy node (real rclpy, DDS on loopback) and the bag path build byte-identical
observations (images, state, instruction, stamps) from the same messages, and identical chunks with the same
seed. The messages the node receives are recorded (raw CDR, as a recorder would) into a real MCAP bag, which
``bags.eval`` then runs through a fresh component and runtime."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("rosbags")

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from molmoact2_ros.backends.policy.inference import PolicyInference, input_limits, load_runtime
from molmoact2_ros.bags.eval import EvalOptions, evaluate_bag
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.images import fill_image
from molmoact2_ros.nodes.contract import stamp_to_msg, trajectory_to_chunk
from molmoact2_ros.nodes.policy_node import PolicyNode
from molmoact2_ros.nodes.qos import (
    CAMERA_QOS,
    CHUNK_QOS,
    CHUNK_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATE_QOS,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    camera_topic,
)
from molmoact2_ros.nodes.runtime_env import private_domain_id

EMB = load_embodiment("so101")
ROUNDS = 4
T0 = 1_700_000_100.0
INSTRUCTION = "stack the red cube"
H, W = 60, 80


def frame(r: int, cam: int) -> np.ndarray:
    rng = np.random.default_rng(100 * r + cam)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def observed(obs) -> tuple:
    """An observation as bytes: what must be identical."""
    return (tuple((n, obs.images[n].shape, obs.images[n].tobytes()) for n in sorted(obs.images)),
            np.asarray(obs.state, np.float64).tobytes(), obs.instruction, obs.stamp_s)


class Live:
    """The policy node plus a recorder of what is published to it (raw bytes, in arrival order)."""

    def __init__(self) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=private_domain_id(os.getpid() + 911))
        params = {"checkpoint": "tiny", "instruction": "", "seed": 0, "torch_num_threads": 1,
                  "frozen_frame_limit": 0, "camera_max_skew_s": 0.001, "input_grace_s": 0.0,
                  "camera_max_age_s": 3600.0 * 24 * 365 * 60, "joint_state_max_age_s": 0.0}
        self.node = PolicyNode(context=self.ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.probe = Node("parity_probe", context=self.ctx)
        self.lock = threading.Lock()
        self.recorded: list[tuple[str, str, int, bytes]] = []
        p = self.probe
        self.topics = {camera_topic(c): ("sensor_msgs/msg/Image", Image, CAMERA_QOS) for c in EMB.camera_names}
        self.topics[JOINT_STATES_TOPIC] = ("sensor_msgs/msg/JointState", JointState, JOINT_STATE_QOS)
        self.topics[INSTRUCTION_TOPIC] = ("std_msgs/msg/String", String, LATCHED_QOS)
        self.topics[CHUNK_TOPIC] = ("trajectory_msgs/msg/JointTrajectory", JointTrajectory, CHUNK_QOS)
        self.pubs = {t: p.create_publisher(cls, t, qos) for t, (_, cls, qos) in self.topics.items() if t != CHUNK_TOPIC}
        for t, (_, cls, qos) in self.topics.items():
            p.create_subscription(cls, t, lambda raw, t=t: self._record(t, raw), qos, raw=True)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(p)
        self.spin = threading.Thread(target=self.executor.spin, daemon=True)
        self.spin.start()

    def _record(self, topic: str, raw: bytes) -> None:
        with self.lock:
            self.recorded.append((topic, self.topics[topic][0], time.time_ns(), bytes(raw)))

    def count(self, topic: str) -> int:
        with self.lock:
            return sum(1 for r in self.recorded if r[0] == topic)

    def wait(self, cond, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.spin.join(timeout=5.0)
        self.node.release()
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def test_live_node_and_bag_build_identical_observations_and_chunks(tmp_path: Path) -> None:
    live = Live()
    seen_live: list[tuple] = []
    try:
        live.wait(lambda: live.node._lifecycle == "active", "the policy node to start")
        runtime = live.node._runtime
        real = runtime.predict
        runtime.predict = lambda obs, **kw: (seen_live.append(observed(obs)), real(obs, **kw))[1]
        live.pubs[INSTRUCTION_TOPIC].publish(String(data=INSTRUCTION))
        core = live.node.inference
        live.wait(lambda: core.instruction == INSTRUCTION, "the instruction")
        for r in range(ROUNDS):
            t = T0 + 0.1 * r
            js = JointState(name=[*list(reversed(EMB.joint_names)), "extra"],
                            position=[*list(reversed((EMB.home + 0.02 * r).tolist())), 9.0])
            js.header.stamp = stamp_to_msg(t)
            live.pubs[JOINT_STATES_TOPIC].publish(js)
            # The node must hold this state before the frames that trigger the call (topics are not ordered).
            live.wait(lambda t=t, r=r: core.joint_state_stamp_s == t and live.count(JOINT_STATES_TOPIC) > r, "state")
            chunks_before = live.count(CHUNK_TOPIC)
            while live.count(CHUNK_TOPIC) == chunks_before:
                for k, cam in enumerate(EMB.camera_names):
                    msg = fill_image(Image(), frame(r, k))
                    msg.header.stamp, msg.header.frame_id = stamp_to_msg(t), cam
                    live.pubs[camera_topic(cam)].publish(msg)
                deadline = time.monotonic() + 20.0  # a best-effort frame may be lost: publish the round again
                while live.count(CHUNK_TOPIC) == chunks_before and time.monotonic() < deadline:
                    time.sleep(0.01)
        del runtime.predict
    finally:
        live.close()
    assert len(seen_live) == ROUNDS
    live_chunks = [trajectory_to_chunk(deserialize_message(raw, JointTrajectory), EMB.control_rate_hz)
                   for topic, _, _, raw in live.recorded if topic == CHUNK_TOPIC]
    assert [c.stamp_s for c in live_chunks] == [T0 + 0.1 * r for r in range(ROUNDS)]

    ts = get_typestore(Stores.ROS2_KILTED)
    bag = tmp_path / "live"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, msgtype, typestore=ts) for t, (msgtype, _, _) in live.topics.items()}
        for topic, _, log_ns, raw in live.recorded:
            w.write(conns[topic], log_ns, raw)

    loaded = load_runtime(EMB, "tiny", seed=0, torch_num_threads=1)
    seen_bag: list[tuple] = []
    real_bag = loaded.runtime.predict
    loaded.runtime.predict = lambda obs, **kw: (seen_bag.append(observed(obs)), real_bag(obs, **kw))[1]
    result = evaluate_bag(bag, EMB, lambda: PolicyInference(loaded.runtime, EMB, input_limits(EMB),
                                                            clock=lambda: 0.0), EvalOptions())
    loaded.runtime.close()
    assert not result.error, result.error
    assert len(seen_bag) == ROUNDS
    for r, (a, b) in enumerate(zip(seen_live, seen_bag, strict=True)):
        assert a == b, f"round {r}: the bag path built another observation than the live node"
    assert seen_live[1][1] != seen_live[0][1]  # the state really changed between rounds
    for live_chunk, pred in zip(live_chunks, result.predictions, strict=True):
        assert pred.stamp_s == live_chunk.stamp_s
        assert np.array_equal(pred.positions, live_chunk.positions), "same seed, same observation: same chunk"
