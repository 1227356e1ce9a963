"""What the driver node does with a backend's stop and recovery capabilities, over DDS (issue 9).

``relax_on_stop`` (a real servo arm's ``torque_off_on_stop``): deactivate and shutdown brake to a stop and
then relax the robot instead of holding, nothing is written while inactive (no heartbeat re-energises it),
and re-activation re-engages at the measured pose through the startup guard. ``recover``: ``~/reset``
clears the robot's own latched error first (a Franka reflex) and refuses when the robot cannot recover.
The mock backend stands in for the real arm families here; tests/hardware drives the real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from node_harness import DriverHarness, PolicyStandIn
from std_srvs.srv import Trigger

from molmoact2_ros.core.embodiment import resolve_embodiment_path

pytestmark = pytest.mark.ros


def _embodiment(tmp_path: Path, name: str = "so101", **mock: object) -> Path:
    data = yaml.safe_load(resolve_embodiment_path(name).read_text())
    data["hardware"]["params"]["mock"].update(mock)
    path = tmp_path / f"{name}_stop.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _running(h: DriverHarness) -> PolicyStandIn:
    h.ready()
    stand_in = PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    h.wait_for(lambda: h.di("chunks_executed") >= 2, what="motion under way")
    return stand_in


@pytest.mark.parametrize("heartbeat", [False, True])
def test_deactivate_brakes_then_relaxes_and_reactivation_reengages_from_the_measured_pose(
        harness_factory, tmp_path, heartbeat):
    mock = {"torque_off_on_stop": True} | ({"command_timeout_s": 0.4} if heartbeat else {})
    h = harness_factory(str(_embodiment(tmp_path, **mock)))
    arm = h.driver.hardware
    assert arm.relax_on_stop and arm.needs_heartbeat is heartbeat
    stand_in = _running(h)
    h.driver.trigger_deactivate()
    assert arm.relaxes == 1 and arm.relaxed, "deactivate did not relax the arm"
    writes = arm.writes
    # Someone moves the relaxed arm by hand; nothing may be written while inactive (not even a heartbeat).
    moved = arm.true_positions.copy()
    moved[0] += 0.1
    arm.set_positions(moved)
    seen = h.diag_count
    h.wait_for(lambda: h.diag_count >= seen + 5, what="the inactive node going on")  # 0.05 s diagnostics
    assert arm.writes == writes and arm.relaxed
    h.driver.trigger_activate()
    h.wait_for(lambda: arm.writes > writes + 5, what="writing again after activate")
    first_after = next(cycle for (_, _, cycle) in h.ticks.since(0.0)[::-1] if cycle.tick.ramp_base is not None)
    np.testing.assert_allclose(first_after.tick.ramp_base[0], moved[0], atol=0.02)
    stand_in.stop()
    # close() audits every write: nothing to the relaxed arm, the re-engagement ramps from the measured pose.


def test_shutdown_relaxes_instead_of_a_final_hold(harness_factory, tmp_path):
    h = harness_factory(str(_embodiment(tmp_path, torque_off_on_stop=True)))
    arm = h.driver.hardware
    _running(h)
    h.driver.release()
    assert arm.relaxes == 1 and arm.relaxed and not arm.connected


def test_shutdown_holds_without_relax_on_stop(harness_factory):
    h = harness_factory()
    arm = h.driver.hardware
    _running(h)
    h.driver.release()
    assert arm.relaxes == 0 and not arm.relaxed


def test_reset_recovers_the_robot_first_and_refuses_when_it_cannot(harness_factory):
    h = harness_factory()
    arm = h.driver.hardware
    _running(h)
    arm.faults.read_error = True
    h.wait_state("FAULT", "read_error")
    arm.faults.read_error = False
    h.wait_for(lambda: h.driver.stack.standing_still, what="standing still")
    arm.recover_error = True
    res = h.call(h.reset_cli, Trigger.Request())
    assert not res.success and "recovery failed" in res.message and h.d("state") == "FAULT"
    arm.recover_error = False
    res = h.call(h.reset_cli, Trigger.Request())
    assert res.success, res.message
    assert arm.recoveries == 1
