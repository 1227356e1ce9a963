"""Fault scenarios through the real driver node over rclpy: messages over DDS, services, /estop, the
control thread, the mock arm with injected faults. (The full list runs in simulated time in
test_fault_scenarios.py; these prove the node wires the same behaviour to ROS.)
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from node_harness import DriverHarness, PolicyStandIn, embodiment_file, trajectory
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

pytestmark = pytest.mark.ros

SHORT_WATCHDOG = {"watchdog_hold_timeout_s": 0.3, "watchdog_stop_timeout_s": 0.8}


def _step_limit(h: DriverHarness) -> np.ndarray:
    return h.emb.max_velocity / h.emb.tick_rate_hz


def test_node_policy_crash_holds_then_stops(harness_factory, tmp_path):
    h = harness_factory(embodiment_file(tmp_path, "so101", **SHORT_WATCHDOG))
    h.ready()
    policy = PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    h.wait_for(lambda: h.di("chunks_executed") >= 3, what="a few chunks executed")
    crashed = time.monotonic()
    policy.crash()
    h.wait_state("HOLD", "watchdog")
    h.wait_state("STOPPED", "watchdog")
    h.assert_controlled_stop(crashed)  # brakes within the acceleration limit, then no motion until the stop
    assert h.di("watchdog_holds") == 1 and h.di("watchdog_stops") == 1 and h.diag_level == 1
    assert h.states_seen[-3:] == ["RUNNING", "HOLD", "STOPPED"]


def test_node_nan_chunk_rejected_motion_continues(harness_factory):
    h = harness_factory()
    h.ready()
    PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    executed = h.di("chunks_executed")
    bad = np.tile(h.latest(), (30, 1))
    bad[4, 1] = np.nan
    now_ns = h.driver.get_clock().now().nanoseconds
    h.chunk_pub.publish(trajectory(h.emb, bad, now_ns))
    h.wait_for(lambda: h.di("rejected_non_finite") == 1, what="non_finite rejection")
    h.wait_for(lambda: h.di("chunks_executed") > executed + 2, what="the stream goes on")
    assert h.d("state") == "RUNNING" and "FAULT" not in h.states_seen and "HOLD" not in h.states_seen
    assert h.di("chunks_rejected") == 1


def test_node_estop_topic_during_motion_then_reset(harness_factory):
    h = harness_factory()
    h.ready()
    PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    h.wait_for(lambda: h.estop_pub.get_subscription_count() > 0, what="/estop subscription")
    tripped = time.monotonic()
    h.estop_pub.publish(Bool(data=True))
    h.wait_state("ESTOP")
    assert h.diag_level == 2
    h.wait_for(lambda: h.di("rejected_estop") >= 3, what="chunks refused while e-stopped")
    h.wait_for(lambda: float(h.d("speed_fraction_last") or 1) == 0.0, what="braked to a stop")
    h.assert_controlled_stop(tripped)
    h.estop_pub.publish(Bool(data=False))  # releasing a button does not clear the latch
    time.sleep(0.2)
    assert h.d("state") == "ESTOP"
    q = h.latest()
    n = h.n_commanded()
    assert h.call(h.reset_cli, Trigger.Request()).success
    h.wait_state("RUNNING")
    first = h.commanded_since(n)[0]
    assert np.all(np.abs(first - q) <= _step_limit(h) + 1e-6)  # restarted from the measured pose
    assert h.di("estops") == 1 and h.d("estop_latched") == "False"


def test_node_hardware_write_error_latches_fault(harness_factory):
    h = harness_factory()
    h.ready()
    PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    writes = h.driver.hardware.writes
    h.driver.hardware.faults.write_error = True
    h.wait_state("FAULT", "write_error")
    assert h.diag_level == 2 and h.d("fault") == "write_error" and "writes failed" in h.d("fault_detail")
    assert h.di("hardware_write_errors") >= 3
    assert h.driver.hardware.writes == writes  # nothing got through while the bus was down
    h.wait_for(lambda: h.di("rejected_fault") >= 1, what="chunks refused while faulted")


def test_node_bimanual_stuck_right_arm_holds_both(harness_factory):
    h = harness_factory("yam_bimanual")
    h.ready()
    PolicyStandIn(h, closed_loop=False, amplitude=0.3).start()
    h.wait_state("RUNNING")
    right3 = h.emb.joint_names.index("right_joint3")
    stuck = time.monotonic()
    h.driver.hardware.faults.stuck_joints = {right3}
    h.wait_state("FAULT", "tracking_error")
    assert h.d("fault_arms") == "right" and "right_joint3" in h.d("fault_detail")
    h.wait_for(lambda: float(h.d("speed_fraction_last") or 1) == 0.0, what="braked to a stop")
    held = h.assert_controlled_stop(stuck)
    assert held[-1].shape == (14,)  # both arms brake and hold


def test_node_over_temperature_relaxes_when_configured(harness_factory, tmp_path):
    h = harness_factory(embodiment_file(tmp_path, "so101", fault_action="relax"))
    h.ready()
    PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    h.driver.hardware.faults.over_temperature = {3}
    h.wait_state("FAULT", "over_temperature")
    h.wait_for(lambda: h.d("hardware_relaxed") == "True", what="relaxed")
    assert h.d("fault_action") == "relax" and "wrist_flex" in h.d("fault_detail")
    n = h.n_commanded()
    time.sleep(0.3)
    assert h.n_commanded() == n  # nothing written to a relaxed arm
    assert h.driver.hardware.relaxes == 1 and h.driver.hardware.relaxed
