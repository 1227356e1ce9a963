"""A real DriverNode (rclpy in-process) with backend=franka, emulate_hardware=True: shadow mode by default,
~/enable, a chunk over DDS moves the emulated Franka (arm and hand) with no reflex, an injected collision
reflex faults the driver, ~/reset runs the robot's automatic error recovery, and shutdown ends the loop."""

from __future__ import annotations

import numpy as np
import pytest
from emulated_driver import emulated_driver, wait_for
from std_srvs.srv import Trigger

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.safety import SafetyState

pytest.importorskip("pylibfranka")
pytestmark = pytest.mark.ros
EMB = load_embodiment("franka_droid")


def test_driver_node_drives_the_emulated_franka_and_resets_a_reflex():
    device = None
    with emulated_driver("franka_droid", "franka", "franka_node_probe") as rig:
        driver = rig.driver
        wait_for(lambda: driver.core is not None and driver.core.hardware_ready, what="driver connected")
        device = driver.hardware.emulated_device
        assert device.controls_started == 0  # shadow mode: nothing energised
        rig.enable()
        chunks = rig.chunk_publisher()
        q0 = EMB.home  # where the emulated robot starts
        delta = np.zeros(EMB.dof)
        delta[0], delta[7] = 0.5, -0.08  # joint 1 and the fingers closing (8 of 30 steps run: ~28%)
        chunks.publish(rig.chunk(q0 + np.linspace(0, 1, 30)[:, None] * delta))
        wait_for(lambda: device.q[0] - q0[0] > 0.05, what="joint 1 moving")
        wait_for(lambda: device.hand.width < 0.075, what="fingers closing")
        assert device.reflexes == [] and driver.stack.fault is None
        device.inject_reflex("joint_reflex")  # a collision
        wait_for(lambda: driver.stack.state is SafetyState.FAULT, what="the driver's fault")
        assert "joint_reflex" in driver.stack.fault[1]
        wait_for(lambda: rig.call(Trigger, "reset", Trigger.Request()).success, what="~/reset")
        assert device.recoveries == 1 and device.mode.name in ("Idle", "Move")
    assert device is not None and not device.control_active  # the driver's shutdown ended the 1 kHz loop
