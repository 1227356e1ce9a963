"""A real DriverNode over DDS (loopback) with the feetech backend on its emulated STS3215 bus.

Shadow mode first (real hardware), ``~/enable``, a chunk published on the chunk topic moves the emulated
servos, and shutting the node down turns torque off on the bus.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("scservo_sdk")
pytest.importorskip("lerobot.motors.feetech")
pytest.importorskip("rclpy")

import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.backends.hardware.feetech import EMULATED_CALIBRATION
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.nodes.driver_node import DriverNode
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC

pytestmark = pytest.mark.ros

SO101 = load_embodiment("so101")


def wait_for(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def chunk_msg(driver: DriverNode, positions: np.ndarray) -> JointTrajectory:
    msg = JointTrajectory(joint_names=SO101.joint_names)
    msg.header.stamp = driver.get_clock().now().to_msg()
    for k, row in enumerate(positions):
        ns = round(k * 1e9 / SO101.control_rate_hz)
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                               time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
    return msg


def servo_radians(servo, joint: str) -> float:
    """An emulated servo's position in our robot units, from its raw steps and the emulated calibration."""
    _, lo, hi = EMULATED_CALIBRATION[joint]
    return math.radians((servo.position - (lo + hi) / 2) * 360 / 4095)


def test_driver_node_drives_the_emulated_so101_and_turns_torque_off_on_shutdown():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    driver = DriverNode(context=ctx, parameter_overrides=[
        Parameter("embodiment", value="so101"), Parameter("backend", value="feetech"),
        Parameter("emulate_hardware", value=True), Parameter("diagnostics_period_s", value=0.1)])
    probe = Node("feetech_probe", context=ctx)
    executor.add_node(driver)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    released = False
    try:
        hw = driver.hardware
        assert hw is not None and hw.name == "feetech" and hw.emulator is not None
        emu = hw.emulator
        assert not any(s.torque_enabled for s in emu.servos)  # connected, shadow mode: torque stays off

        enable = probe.create_client(SetBool, f"{driver.get_fully_qualified_name()}/enable")
        assert enable.wait_for_service(timeout_sec=20.0)
        future = enable.call_async(SetBool.Request(data=True))
        wait_for(future.done, what="~/enable response")
        assert future.result().success, future.result().message

        chunks = probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        wait_for(lambda: chunks.get_subscription_count() > 0, what="driver chunk subscription")
        q0 = SO101.home.copy()
        delta = np.array([0.2, -0.15, 0.2, 0.1, 0.0, 0.2])
        target = q0 + delta
        elbow = emu.servo(3)

        def arrived() -> bool:
            return abs(servo_radians(elbow, "elbow_flex") - target[2]) < 0.02

        # Streamed like a policy would (the stack shapes the motion); the target is within the entry distance.
        deadline = time.monotonic() + 30.0
        while not arrived() and time.monotonic() < deadline:
            chunks.publish(chunk_msg(driver, np.repeat(target[None, :], 15, axis=0)))
            time.sleep(0.2)
        assert arrived(), f"elbow at {servo_radians(elbow, 'elbow_flex'):.3f} rad, target {target[2]:.3f}"
        assert all(s.torque_enabled for s in emu.servos)
        assert abs(servo_radians(emu.servo(1), "shoulder_pan") - target[0]) < 0.05
        assert abs(servo_radians(emu.servo(2), "shoulder_lift") - target[1]) < 0.05

        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        driver.release()
        released = True
        assert not any(s.torque_enabled for s in emu.servos)  # torque_off_on_stop (default True)
        assert not emu.running
    finally:
        if not released:
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=5.0)
            driver.release()
        driver.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)
