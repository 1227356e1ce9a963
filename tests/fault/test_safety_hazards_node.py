"""Issue 8's safety items against the live driver node over DDS (the core's own tests are in tests/unit).

Each test starts the real driver node (mock backend with injected faults) and drives it through ROS:
chunks and /estop over DDS, services, the control thread. Waits are on states and counters; nothing is
asserted about how long anything took (e-stop latencies are measured and reported, see
benchmarks/bench_estop.py for the table).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
import yaml
from estop_latency import measure_estop
from node_harness import DriverHarness, PolicyStandIn, embodiment_file, trajectory
from rclpy.parameter import Parameter
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger

from molmoact2_ros.core.embodiment import resolve_embodiment_path
from molmoact2_ros.nodes.driver_node import DriverNode

pytestmark = pytest.mark.ros


def _running(h: DriverHarness, **policy) -> PolicyStandIn:
    h.ready()
    stand_in = PolicyStandIn(h, **policy).start()
    h.wait_state("RUNNING")
    h.wait_for(lambda: h.di("chunks_executed") >= 2, what="motion under way")
    return stand_in


def _ticks_pass(h: DriverHarness, n: int) -> None:
    start = h.di("ticks")
    h.wait_for(lambda: h.di("ticks") >= start + n, what=f"{n} more ticks")


# ---- 1. huge finite values ---------------------------------------------------------------------

def test_node_huge_finite_chunk_is_rejected_and_the_loop_keeps_running(harness_factory):
    h = harness_factory()
    _running(h)
    huge = np.tile(h.latest(), (30, 1))
    huge[:, 2] = 1e307
    h.chunk_pub.publish(trajectory(h.emb, huge, h.driver.get_clock().now().nanoseconds))
    h.wait_for(lambda: h.di("rejected_out_of_range") == 1, what="out_of_range rejection")
    executed = h.di("chunks_executed")
    h.wait_for(lambda: h.di("chunks_executed") > executed + 1, what="the stream goes on")
    assert h.d("state") == "RUNNING" and h.di("tick_exceptions") == 0 and h.di("internal_errors") == 0


# ---- 2. foreign backend exceptions ---------------------------------------------------------------

@pytest.mark.parametrize("exc", [OSError(5, "Input/output error"), ValueError("bad frame")])
def test_node_foreign_read_exception_latches_read_error_and_brakes(harness_factory, exc):
    h = harness_factory()
    _running(h)
    failing = time.monotonic()
    h.driver.hardware.faults.read_exception = exc
    h.wait_state("FAULT", "read_error")
    assert type(exc).__name__ in h.d("fault_detail") and h.di("tick_exceptions") == 0
    _ticks_pass(h, 10)
    h.assert_controlled_stop(failing)  # writes (the hold) went on through the read errors


# ---- 3. NaN measurements ---------------------------------------------------------------------------

def test_node_nan_measurement_is_a_fault_and_nothing_non_finite_is_written(harness_factory):
    h = harness_factory()
    _running(h)
    n, broke = h.n_commanded(), time.monotonic()
    h.driver.hardware.faults.nan_joints = {1}
    h.wait_state("FAULT", "measurement_invalid")
    assert "shoulder_lift" in h.d("fault_detail")
    _ticks_pass(h, 10)
    cmds = h.commanded_since(n)
    assert len(cmds) > 5 and np.all(np.isfinite(cmds))
    h.assert_controlled_stop(broke)


# ---- 4. relax then e-stop ---------------------------------------------------------------------------

def test_node_estop_after_relax_writes_nothing(harness_factory, tmp_path):
    h = harness_factory(embodiment_file(tmp_path, "so101", fault_action="relax"))
    _running(h)
    h.driver.hardware.faults.over_temperature = {3}
    h.wait_for(lambda: h.d("hardware_relaxed") == "True", what="relaxed")
    h.driver.hardware.faults.over_temperature = set()
    n = h.n_commanded()
    h.wait_for(lambda: h.estop_pub.get_subscription_count() > 0, what="/estop subscription")
    h.estop_pub.publish(Bool(data=True))
    h.wait_state("ESTOP")
    _ticks_pass(h, 15)
    assert h.n_commanded() == n and h.driver.hardware.relaxed  # the sagged arm is not driven back


# ---- 5. shadow mode ---------------------------------------------------------------------------------

def test_node_leaving_shadow_starts_from_the_measured_pose_entering_it_brakes_first(harness_factory):
    h = harness_factory(shadow_mode=True)
    _running(h, amplitude=0.3)
    assert h.n_commanded() == 0 and h.driver.hardware.writes == 0  # shadow: computed, never written
    q = h.latest()
    assert h.call(h.enable_cli, SetBool.Request(data=True)).success
    h.wait_for(lambda: h.n_commanded() > 0, what="first write after ~/enable")
    first = h.commanded_since(0)[0]
    assert np.all(np.abs(first - q) <= h.emb.max_velocity / h.emb.tick_rate_hz + 0.02)  # from where the arm is
    h.wait_for(lambda: h.n_commanded() > 20, what="moving")
    asked = time.monotonic()
    assert h.call(h.enable_cli, SetBool.Request(data=False)).success
    h.wait_for(lambda: h.d("shadow_mode") == "True", what="shadow mode in effect")
    h.assert_controlled_stop(asked, then_holds=False)  # braked (audited); in shadow nothing is written
    stopped = h.n_commanded()
    _ticks_pass(h, 10)
    assert h.n_commanded() == stopped


# ---- 6. heartbeat for motors that time out ------------------------------------------------------------

def test_node_idle_dm_motors_get_their_heartbeat_before_the_first_chunk_and_after_reset(harness_factory):
    h = harness_factory("yam_bimanual")
    h.ready()
    mock = h.driver.hardware
    assert mock.needs_heartbeat and h.d("heartbeat") == "True"
    _ticks_pass(h, 45)  # 1.5 s idle at 30 Hz: the emulated DM motors time out after 0.4 s without a command
    assert h.d("state") == "IDLE" and mock.timeouts == 0 and h.n_commanded() >= 40
    assert h.call(h.estop_cli, Trigger.Request()).success
    h.wait_state("ESTOP")
    h.wait_for(lambda: h.call(h.reset_cli, Trigger.Request()).success, what="reset accepted")
    _ticks_pass(h, 30)
    assert h.d("state") == "IDLE" and mock.timeouts == 0


# ---- 7. controlled stops --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["estop_service", "deactivate_by_shadow", "policy_gone"])
def test_node_stops_from_speed_within_the_acceleration_limit(harness_factory, tmp_path, how):
    h = harness_factory(embodiment_file(tmp_path, "so101", watchdog_hold_timeout_s=0.3, watchdog_stop_timeout_s=0.8))
    policy = _running(h, amplitude=0.4, frequency_hz=0.9)
    h.wait_for(lambda: float(h.d("speed_fraction_last") or 0) > 0.2, what="moving at a fifth of the limit")
    stopping = time.monotonic()
    if how == "estop_service":
        assert h.call(h.estop_cli, Trigger.Request()).success
    elif how == "deactivate_by_shadow":
        assert h.call(h.enable_cli, SetBool.Request(data=False)).success
    else:
        policy.crash()
    h.wait_for(lambda: h.d("state") != "RUNNING" and float(h.d("speed_fraction_last") or 1) == 0.0,
               what="braked to a stop")
    h.assert_controlled_stop(stopping)


# ---- 8. entry into a new chunk ----------------------------------------------------------------------------

def test_node_chunk_far_from_the_current_command_is_rejected(harness_factory):
    h = harness_factory()
    _running(h)
    far = np.tile(h.latest() + np.array([0.0, 0.0, 0.45, 0.0, 0.0, 0.0]), (30, 1))
    h.chunk_pub.publish(trajectory(h.emb, far, h.driver.get_clock().now().nanoseconds))
    h.wait_for(lambda: h.di("rejected_entry_too_far") >= 1, what="entry_too_far rejection")
    assert h.d("state") == "RUNNING" and h.di("faults") == 0


# ---- 9. config values that disable safety --------------------------------------------------------------

@pytest.mark.parametrize(("section", "field", "value", "needle"), [
    ("joint", "max_velocity_per_s", float("inf"), "joints[0].max_velocity_per_s"),
    ("safety", "watchdog_stop_timeout_s", float("inf"), "safety.watchdog_stop_timeout_s"),
    ("joint", "offset", float("nan"), "joints[0].offset"),
    ("safety", "startup_max_distance", 0.6, "startup_max_distance was replaced"),
])
def test_node_unsafe_config_fails_configure_with_its_reason(tmp_path, section, field, value, needle):
    data = yaml.safe_load(resolve_embodiment_path("so101").read_text())
    (data["joints"][0] if section == "joint" else data["safety"])[field] = value
    path = tmp_path / "unsafe.yaml"
    path.write_text(yaml.safe_dump(data))
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = DriverNode(context=ctx, parameter_overrides=[Parameter("embodiment", value=str(path))])
        failure = node.startup_failure  # what spin_node exits non-zero with
        assert failure is not None and needle in failure and str(path) in failure, failure
        assert node.stack is None and node.hardware is None  # nothing half-started
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


# ---- 10. e-stop transport ----------------------------------------------------------------------------------

@pytest.mark.parametrize("embodiment", ["so101", "so100", "yam_bimanual", "franka_droid"])
@pytest.mark.parametrize(("reliability", "flood_steps"), [("best_effort", 0), ("reliable", 0), ("best_effort", 2000)])
def test_node_estop_topic_is_honoured_at_every_tick_rate(harness_factory, embodiment, reliability, flood_steps,
                                                         record_property, tmp_path):
    """Any publisher reliability, at every embodiment's tick rate, and while ~130 KB chunks keep the main
    executor busy: the e-stop latches, the arm brakes to a stop, and the latency is recorded."""
    if flood_steps:  # accepted (chunk.max_steps raised), so each one is decoded and followed, not refused
        data = yaml.safe_load(resolve_embodiment_path(embodiment).read_text())
        data["chunk"]["max_steps"] = flood_steps
        path = tmp_path / f"{embodiment}_long_chunks.yaml"
        path.write_text(yaml.safe_dump(data))
        embodiment = str(path)
    h = harness_factory(embodiment)
    result = measure_estop(h, reliability=reliability, flood_steps=flood_steps)
    record_property("estop_reaction_ms", round(result.reaction_s * 1e3, 2))
    record_property("estop_stopped_ms", round(result.stopped_s * 1e3, 2))
    print(f"\n{result}")
    assert h.d("estop_latched") == "True" or h.driver.stack.estop_reason is not None
    assert 0 <= result.reaction_s <= result.stopped_s
    # Latched until ~/reset: a later "false" does not clear it.
    h.estop_pub.publish(Bool(data=False))
    _ticks_pass(h, 5)
    assert h.driver.stack.estop_reason is not None


# ---- shutdown (SIGINT / SIGTERM in main) ---------------------------------------------------------------

def test_node_release_brakes_to_a_stop_before_the_loop_ends(harness_factory):
    h = harness_factory()
    _running(h, amplitude=0.4, frequency_hz=0.9)
    h.wait_for(lambda: float(h.d("speed_fraction_last") or 0) > 0.2, what="moving at a fifth of the limit")
    releasing = time.monotonic()
    mock, stack = h.driver.hardware, h.driver.stack
    h.driver.release()  # what spin_node calls after Ctrl-C; the harness audits every write at close
    assert stack is not None and stack.standing_still and not mock.connected
    h.assert_controlled_stop(releasing)
    np.testing.assert_array_equal(mock.last_written, stack.last_command)  # the final hold is the stopped pose
