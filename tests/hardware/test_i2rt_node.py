"""A real DriverNode (rclpy in-process) with backend=i2rt, emulate_hardware=True: shadow mode by default,
~/enable, a chunk published over DDS, both emulated YAM arms move, no command timeout fires."""

from __future__ import annotations

import numpy as np
import pytest
from emulated_driver import emulated_driver, wait_for

from molmoact2_ros.core.embodiment import load_embodiment

pytestmark = pytest.mark.ros
EMB = load_embodiment("yam_bimanual")


def test_driver_node_drives_both_emulated_yam_arms():
    with emulated_driver("yam_bimanual", "i2rt", "i2rt_node_probe") as rig:
        driver = rig.driver
        wait_for(lambda: driver.core is not None and driver.core.hardware_ready, what="driver connected")
        buses = dict(driver.hardware.emulators)
        assert set(buses) == {"left", "right"}
        rig.enable()
        # Out of shadow mode the heartbeat energises the motors before any chunk.
        wait_for(lambda: all(s.enabled for b in buses.values() for s in b.states()), what="motors enabled")
        before = {arm: b.state(2).position for arm, b in buses.items()}
        chunks = rig.chunk_publisher()
        delta = np.zeros(EMB.dof)
        delta[[1, 8]] = 0.25
        chunks.publish(rig.chunk(EMB.home + np.linspace(0, 1, 30)[:, None] * delta))
        wait_for(lambda: all(b.state(2).position - before[arm] > 0.05 for arm, b in buses.items()),
                 what="both arms' joint 2 moving")
        assert sum(s.timeouts for b in buses.values() for s in b.states()) == 0
        assert driver.stack.fault is None
