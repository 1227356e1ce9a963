"""A real DriverNode over DDS (loopback) with the feetech backend on its emulated STS3215 bus.

Shadow mode first (real hardware), ``~/enable``, a chunk published on the chunk topic moves the emulated
servos, and shutting the node down turns torque off on the bus.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("scservo_sdk")
pytest.importorskip("lerobot.motors.feetech")
pytest.importorskip("rclpy")

from emulated_driver import emulated_driver

from molmoact2_ros.backends.hardware.feetech import EMULATED_CALIBRATION
from molmoact2_ros.core.embodiment import load_embodiment

pytestmark = pytest.mark.ros

SO101 = load_embodiment("so101")


def servo_radians(servo, joint: str) -> float:
    """An emulated servo's position in our robot units, from its raw steps and the emulated calibration."""
    _, lo, hi = EMULATED_CALIBRATION[joint]
    return math.radians((servo.position - (lo + hi) / 2) * 360 / 4095)


def test_driver_node_drives_the_emulated_so101_and_turns_torque_off_on_shutdown():
    with emulated_driver("so101", "feetech", "feetech_probe") as rig:
        hw = rig.driver.hardware
        assert hw is not None and hw.name == "feetech" and hw.emulator is not None
        emu = hw.emulator
        assert not any(s.torque_enabled for s in emu.servos)  # connected, shadow mode: torque stays off
        rig.enable()
        chunks = rig.chunk_publisher()
        target = SO101.home + np.array([0.2, -0.15, 0.2, 0.1, 0.0, 0.2])
        elbow = emu.servo(3)

        def arrived() -> bool:
            return abs(servo_radians(elbow, "elbow_flex") - target[2]) < 0.02

        # Streamed like a policy would (the stack shapes the motion); the target is within the entry distance.
        deadline = time.monotonic() + 30.0
        while not arrived() and time.monotonic() < deadline:
            chunks.publish(rig.chunk(np.repeat(target[None, :], 15, axis=0)))
            time.sleep(0.2)
        assert arrived(), f"elbow at {servo_radians(elbow, 'elbow_flex'):.3f} rad, target {target[2]:.3f}"
        assert all(s.torque_enabled for s in emu.servos)
        assert abs(servo_radians(emu.servo(1), "shoulder_pan") - target[0]) < 0.05
        assert abs(servo_radians(emu.servo(2), "shoulder_lift") - target[1]) < 0.05
        rig.stop()
        assert not any(s.torque_enabled for s in emu.servos)  # torque_off_on_stop (default True)
        assert not emu.running
