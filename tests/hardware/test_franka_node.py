"""A real DriverNode (rclpy in-process) with backend=franka, emulate_hardware=True: shadow mode by default,
~/enable, a chunk over DDS moves the emulated Franka (arm and hand) with no reflex, an injected collision
reflex faults the driver, ~/reset runs the robot's automatic error recovery, and shutdown ends the loop."""

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
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.safety import SafetyState
from molmoact2_ros.nodes.driver_node import DriverNode
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC

pytest.importorskip("pylibfranka")
pytestmark = pytest.mark.ros
EMB = load_embodiment("franka_droid")


def wait_for(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _call(probe: Node, srv_type, name: str, request):
    client = probe.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10.0), name
    future = client.call_async(request)
    wait_for(future.done, what=name)
    return future.result()


def test_driver_node_drives_the_emulated_franka_and_resets_a_reflex():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    driver = DriverNode(context=ctx, parameter_overrides=[
        Parameter("embodiment", value="franka_droid"), Parameter("backend", value="franka"),
        Parameter("emulate_hardware", value=True), Parameter("diagnostics_period_s", value=0.1)])
    probe = Node("franka_node_probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(driver)
    executor.add_node(probe)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    device = None
    try:
        wait_for(lambda: driver.core is not None and driver.core.hardware_ready, what="driver connected")
        device = driver.hardware.emulated_device
        assert device.controls_started == 0  # shadow mode: nothing energised
        base = driver.get_fully_qualified_name()
        assert _call(probe, SetBool, f"{base}/enable", SetBool.Request(data=True)).success
        chunks = probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        wait_for(lambda: chunks.get_subscription_count() > 0, what="chunk subscription")
        q0 = EMB.home  # where the emulated robot starts
        delta = np.zeros(EMB.dof)
        delta[0], delta[7] = 0.5, -0.08  # joint 1 and the fingers closing (8 of 30 steps run: ~28%)
        msg = JointTrajectory(joint_names=EMB.joint_names)
        msg.header.stamp = driver.get_clock().now().to_msg()
        for k, frac in enumerate(np.linspace(0, 1, 30)):
            ns = round(k * 1e9 / EMB.control_rate_hz)
            msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in q0 + frac * delta],
                                                   time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
        chunks.publish(msg)
        wait_for(lambda: device.q[0] - q0[0] > 0.05, what="joint 1 moving")
        wait_for(lambda: device.hand.width < 0.075, what="fingers closing")
        assert device.reflexes == [] and driver.stack.fault is None
        device.inject_reflex("joint_reflex")  # a collision
        wait_for(lambda: driver.stack.state is SafetyState.FAULT, what="the driver's fault")
        assert "joint_reflex" in driver.stack.fault[1]
        wait_for(lambda: _call(probe, Trigger, f"{base}/reset", Trigger.Request()).success, what="~/reset")
        assert device.recoveries == 1 and device.mode.name in ("Idle", "Move")
    finally:
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=5.0)
        driver.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
    assert device is not None and not device.control_active  # the driver's shutdown ended the 1 kHz loop
