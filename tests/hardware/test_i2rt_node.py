"""A real DriverNode (rclpy in-process) with backend=i2rt, emulate_hardware=True: shadow mode by default,
~/enable, a chunk published over DDS, both emulated YAM arms move, no command timeout fires."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.nodes.driver_node import DriverNode
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC

pytestmark = pytest.mark.ros
EMB = load_embodiment("yam_bimanual")


def wait_for(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_driver_node_drives_both_emulated_yam_arms():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    driver = DriverNode(context=ctx, parameter_overrides=[
        Parameter("embodiment", value="yam_bimanual"), Parameter("backend", value="i2rt"),
        Parameter("emulate_hardware", value=True), Parameter("diagnostics_period_s", value=0.1)])
    probe = Node("i2rt_node_probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(driver)
    executor.add_node(probe)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        wait_for(lambda: driver.core is not None and driver.core.hardware_ready, what="driver connected")
        buses = dict(driver.hardware.emulators)
        assert set(buses) == {"left", "right"}
        enable = probe.create_client(SetBool, f"{driver.get_fully_qualified_name()}/enable")
        assert enable.wait_for_service(timeout_sec=10.0)
        future = enable.call_async(SetBool.Request(data=True))
        wait_for(future.done, what="~/enable")
        assert future.result().success
        # Out of shadow mode the heartbeat energises the motors before any chunk.
        wait_for(lambda: all(s.enabled for b in buses.values() for s in b.states()), what="motors enabled")
        before = {arm: b.state(2).position for arm, b in buses.items()}
        chunks = probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        wait_for(lambda: chunks.get_subscription_count() > 0, what="chunk subscription")
        delta = np.zeros(EMB.dof)
        delta[[1, 8]] = 0.25
        q0 = EMB.home
        msg = JointTrajectory(joint_names=EMB.joint_names)
        msg.header.stamp = driver.get_clock().now().to_msg()
        for k, frac in enumerate(np.linspace(0, 1, 30)):
            ns = round(k * 1e9 / EMB.control_rate_hz)
            msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in q0 + frac * delta],
                                                   time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
        chunks.publish(msg)
        wait_for(lambda: all(b.state(2).position - before[arm] > 0.05 for arm, b in buses.items()),
                 what="both arms' joint 2 moving")
        assert sum(s.timeouts for b in buses.values() for s in b.states()) == 0
        assert driver.stack.fault is None
    finally:
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=5.0)
        driver.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
