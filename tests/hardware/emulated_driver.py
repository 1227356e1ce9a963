"""A real DriverNode (rclpy in-process, DDS on loopback) on an emulated real-arm backend, with a probe node:
what tests/hardware/test_*_node.py share. Waits are on conditions, never on time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory
from waiting import wait_for

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.nodes.contract import chunk_to_msg
from molmoact2_ros.nodes.driver_node import DriverNode
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC


@dataclass
class Rig:
    driver: DriverNode
    probe: Node
    executor: SingleThreadedExecutor
    thread: threading.Thread
    released: bool = False

    def call(self, srv_type: Any, service: str, request: Any) -> Any:
        """Call the driver's ``service`` (e.g. 'enable', 'reset') and return the response."""
        client = self.probe.create_client(srv_type, f"{self.driver.get_fully_qualified_name()}/{service}")
        assert client.wait_for_service(timeout_sec=20.0), service
        future = client.call_async(request)
        wait_for(future.done, what=f"~/{service} response")
        return future.result()

    def enable(self) -> None:
        """Leave shadow mode (real backends start in it)."""
        res = self.call(SetBool, "enable", SetBool.Request(data=True))
        assert res.success, res.message

    def chunk_publisher(self) -> Any:
        pub = self.probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        wait_for(lambda: pub.get_subscription_count() > 0, what="driver chunk subscription")
        return pub

    def chunk(self, positions: np.ndarray) -> JointTrajectory:
        """A chunk stamped now (the driver's clock), in the embodiment's joint order, at its control rate."""
        emb = self.driver.embodiment
        return chunk_to_msg(ActionChunk(emb.joint_names, np.asarray(positions, dtype=np.float64),
                                        self.driver.get_clock().now().nanoseconds * 1e-9, emb.control_rate_hz))

    def stop(self) -> None:
        """Stop spinning and release the driver (brake, relax or hold, disconnect), as Ctrl-C does."""
        if self.released:
            return
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.driver.release()
        self.released = True


@contextmanager
def emulated_driver(embodiment: str, backend: str, probe_name: str) -> Iterator[Rig]:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    driver = DriverNode(context=ctx, parameter_overrides=[
        Parameter("embodiment", value=embodiment), Parameter("backend", value=backend),
        Parameter("emulate_hardware", value=True), Parameter("diagnostics_period_s", value=0.1)])
    probe = Node(probe_name, context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(driver)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    rig = Rig(driver, probe, executor, thread)
    try:
        yield rig
    finally:
        rig.stop()
        driver.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)
