"""Driver node with real rclpy in-process: chunks in over DDS, /joint_states and /diagnostics out.

Each test starts the driver (mock backend, autostart) and a probe node in their own rclpy Context,
spun by a SingleThreadedExecutor on a background thread (as in ``main``); the driver's control loop
runs on its own thread as in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.safety import SafetyState
from molmoact2_ros.nodes.diagnostics import status_values
from molmoact2_ros.nodes.driver_node import DriverNode
from molmoact2_ros.nodes.qos import (
    CHUNK_QOS,
    CHUNK_TOPIC,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    ESTOP_TOPIC,
    JOINT_STATE_QOS,
    JOINT_STATES_TOPIC,
)

pytestmark = pytest.mark.ros

EMB = load_embodiment("so101")
RATE = EMB.control_rate_hz


class Harness:
    def __init__(self, **params):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        overrides = [Parameter("diagnostics_period_s", value=0.1)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.driver = DriverNode(context=self.ctx, parameter_overrides=overrides)
        self.probe = Node("driver_test_probe", context=self.ctx)
        self._lock = threading.Lock()
        self.joint_states: list[tuple[float, np.ndarray]] = []
        self.commanded: list[np.ndarray] = []
        self.diag: dict[str, str] = {}
        self.diag_level = -1
        self.chunk_pub = self.probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        self.estop_pub = self.probe.create_publisher(Bool, ESTOP_TOPIC, 10)
        self.probe.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_js, JOINT_STATE_QOS)
        self.probe.create_subscription(JointState, "/molmoact2_driver/commanded", self._on_cmd,
                                       JOINT_STATE_QOS)
        self.probe.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diag, DIAGNOSTICS_QOS)
        self.estop_cli = self.probe.create_client(Trigger, "/molmoact2_driver/estop")
        self.reset_cli = self.probe.create_client(Trigger, "/molmoact2_driver/reset")
        self.enable_cli = self.probe.create_client(SetBool, "/molmoact2_driver/enable")
        # As in driver_node.main: rclpy's MultiThreadedExecutor busy-spins and starves the control thread.
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.driver)
        self.executor.add_node(self.probe)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    # ---- probe callbacks ------------------------------------------------------------------------
    def _on_js(self, msg: JointState) -> None:
        order = [list(msg.name).index(n) for n in EMB.joint_names]
        with self._lock:
            self.joint_states.append((time.monotonic(), np.asarray(msg.position)[order]))

    def _on_cmd(self, msg: JointState) -> None:
        with self._lock:
            self.commanded.append(np.asarray(msg.position))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.driver.get_fully_qualified_name():
                with self._lock:
                    self.diag = status_values(status)
                    self.diag_level = status.level[0]

    # ---- helpers ------------------------------------------------------------------------------------
    def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; diagnostics: {self.diag}")

    def ready(self) -> np.ndarray:
        self.wait_for(lambda: self.chunk_pub.get_subscription_count() > 0, what="driver chunk subscription")
        self.wait_for(lambda: len(self.joint_states) > 3, what="/joint_states")
        self.wait_for(lambda: "state" in self.diag, what="/diagnostics")
        return self.latest()

    def latest(self) -> np.ndarray:
        with self._lock:
            return self.joint_states[-1][1].copy()

    def diag_int(self, key: str) -> int:
        with self._lock:
            return int(self.diag.get(key, "-1"))

    def diag_str(self, key: str) -> str:
        with self._lock:
            return self.diag.get(key, "")

    def publish_chunk(self, positions: np.ndarray, names: list[str] | None = None,
                      stamp_ns: int | None = None) -> None:
        msg = JointTrajectory()
        msg.header.stamp = (self.driver.get_clock().now().to_msg() if stamp_ns is None
                            else rclpy.time.Time(nanoseconds=stamp_ns).to_msg())
        msg.joint_names = names or EMB.joint_names
        for k, row in enumerate(positions):
            ns = round(k * 1e9 / RATE)
            when = Duration(sec=ns // 10**9, nanosec=ns % 10**9)
            msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row], time_from_start=when))
        self.chunk_pub.publish(msg)

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=5.0), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.wait_for(future.done, what=f"{client.srv_name} response")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._spin.join(timeout=2.0)
        self.driver.release()
        self.driver.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def ramp(start: np.ndarray, delta: np.ndarray, steps: int) -> np.ndarray:
    return start + np.linspace(0.0, 1.0, steps)[:, None] * delta


def test_joint_states_follow_a_chunk_in_any_joint_order(harness):
    h = harness
    q0 = h.ready()
    np.testing.assert_allclose(q0, EMB.home, atol=1e-6)
    assert h.driver.stack.state is SafetyState.IDLE
    delta = np.array([0.3, -0.2, 0.25, 0.0, 0.1, 0.2])
    target = q0 + delta
    positions = ramp(q0, delta, 10)  # 0.3 s at 30 Hz: done before the 0.5 s watchdog
    perm = [3, 0, 5, 1, 4, 2]
    h.publish_chunk(positions[:, perm], names=[EMB.joint_names[i] for i in perm])
    h.wait_for(lambda: np.max(np.abs(h.latest() - target)) < 0.01, timeout=3.0, what="arm at the target")
    # ~/commanded, what was written, settles exactly on the chunk's last step (no overshoot past it).
    h.wait_for(lambda: h.commanded and np.allclose(h.commanded[-1], target, atol=1e-9), what="command on target")
    with h._lock:
        commanded = np.array(h.commanded)
    assert np.all((commanded - q0) / np.where(delta == 0, 1, delta) <= 1 + 1e-9)
    h.wait_for(lambda: h.diag_int("chunks_executed") == 1, what="diagnostics chunks_executed")
    assert h.diag_int("chunks_received") == 1 and h.diag_int("chunks_rejected") == 0
    assert h.diag_int("ticks") > 10
    # How fast is for benchmarks/bench_control_loop.py; here: the keys the demo summary parses exist.
    assert float(h.diag_str("latency_last_ms")) >= 0.0
    for key in ("period_error_p50_ms", "period_error_p99_ms", "period_error_max_ms"):
        assert float(h.diag_str(key)) >= 0.0, key
    assert h.diag_str("backend") == "mock" and h.diag_str("shadow_mode") == "False"
    assert h.diag_str("hardware_ready") == "True" and h.diag_str("joint_states_published") == "True"
    with h._lock:
        assert len(h.joint_states) > 10  # measured joint states stream every tick


def test_invalid_chunks_are_rejected_counted_and_ignored(harness):
    h = harness
    q0 = h.ready()
    bad_names = [*EMB.joint_names[:5], "claw"]
    h.publish_chunk(ramp(q0, np.full(6, 0.3), 10), names=bad_names)
    h.wait_for(lambda: h.diag_int("rejected_joint_names") == 1, what="joint_names rejection")
    h.publish_chunk(ramp(q0, np.full(6, 0.3), 10), stamp_ns=1)  # ~epoch: far too old
    h.wait_for(lambda: h.diag_int("rejected_too_old") == 1, what="too_old rejection")
    jump = ramp(q0, np.full(6, 0.3), 10)
    jump[5:, 0] += 1.0  # 1 rad between two steps: impossible at 3 rad/s
    h.publish_chunk(jump)
    h.wait_for(lambda: h.diag_int("rejected_step_jump") == 1, what="step_jump rejection")
    assert h.diag_int("chunks_received") == 3 and h.diag_int("chunks_rejected") == 3
    assert h.diag_int("chunks_executed") == 0
    time.sleep(0.2)
    np.testing.assert_allclose(h.latest(), q0, atol=1e-9)  # nothing moved
    assert h.driver.hardware.writes == 0  # not even a first command reached the motors


def test_watchdog_holds_then_stops_when_chunks_stop(harness):
    h = harness
    q0 = h.ready()
    h.publish_chunk(ramp(q0, np.full(6, 0.4), 30))  # 1 s of motion at 0.4 rad/s
    h.wait_for(lambda: h.diag_str("state") == "RUNNING", what="RUNNING")
    # (When, in simulated time, is tests/fault's business: here, that the node goes through the states.)
    h.wait_for(lambda: h.diag_str("state") == "HOLD", timeout=3.0, what="watchdog HOLD")
    assert h.diag_str("state_reason") == "watchdog" and h.diag_int("watchdog_holds") == 1
    time.sleep(0.1)
    with h._lock:
        n = len(h.commanded)
    a = h.latest()
    time.sleep(0.3)
    b = h.latest()
    with h._lock:
        held = np.array(h.commanded[n:])
    assert len(held) >= 5 and np.all(held == held[0])  # holding: the very same command every tick
    assert np.max(np.abs(b - a)) < 5e-3  # the arm settles instead of following the chunk
    assert np.max(np.abs(b - q0)) < 0.4 * 0.6  # and stopped well short of the chunk's end (0.4)
    h.wait_for(lambda: h.diag_str("state") == "STOPPED", timeout=3.0, what="watchdog STOPPED")
    assert h.diag_int("watchdog_stops") == 1 and h.diag_level == 1  # WARN


def test_estop_service_latches_until_reset(harness):
    h = harness
    q0 = h.ready()
    resp = h.call(h.estop_cli, Trigger.Request())
    assert resp.success
    h.wait_for(lambda: h.diag_str("state") == "ESTOP", what="ESTOP")
    assert h.diag_level == 2  # ERROR
    h.publish_chunk(ramp(q0, np.full(6, 0.3), 10))
    h.wait_for(lambda: h.diag_int("rejected_estop") == 1, what="chunk rejected while e-stopped")
    time.sleep(0.5)
    assert h.diag_str("state") == "ESTOP"  # still latched
    np.testing.assert_allclose(h.latest(), q0, atol=1e-9)
    resp = h.call(h.reset_cli, Trigger.Request())
    assert resp.success
    h.wait_for(lambda: h.diag_str("state") == "IDLE", what="IDLE after reset")
    target = q0 + 0.2
    h.publish_chunk(ramp(q0, np.full(6, 0.2), 10))
    h.wait_for(lambda: np.max(np.abs(h.latest() - target)) < 0.01, timeout=3.0, what="motion after reset")


def test_estop_topic_trips_the_driver(harness):
    h = harness
    h.ready()
    h.wait_for(lambda: h.estop_pub.get_subscription_count() > 0, what="/estop subscription")
    h.estop_pub.publish(Bool(data=True))
    h.wait_for(lambda: h.diag_str("state") == "ESTOP", what="ESTOP from /estop")
    assert h.diag_int("estops") == 1


def test_deactivate_holds_and_rejects_chunks(harness):
    h = harness
    q0 = h.ready()
    h.publish_chunk(ramp(q0, np.full(6, 0.1), 5))
    h.wait_for(lambda: h.diag_int("chunks_executed") == 1, what="first chunk executed")
    h.driver.trigger_deactivate()
    h.wait_for(lambda: h.diag_str("state") == "HOLD" and h.diag_str("state_reason") == "inactive",
               what="HOLD (inactive)")
    h.publish_chunk(ramp(h.latest(), np.full(6, 0.1), 5))
    h.wait_for(lambda: h.diag_int("rejected_inactive") == 1, what="inactive rejection")
    h.driver.trigger_activate()
    h.wait_for(lambda: h.driver.stack.enabled, what="re-activated")


def test_enable_service_toggles_shadow_mode(harness):
    h = harness
    q0 = h.ready()
    resp = h.call(h.enable_cli, SetBool.Request(data=False))
    assert resp.success
    writes = h.driver.hardware.writes
    h.publish_chunk(ramp(q0, np.full(6, 0.2), 10))
    h.wait_for(lambda: h.diag_int("chunks_executed") == 1, what="shadow execution")
    time.sleep(0.3)
    assert h.driver.hardware.writes == writes  # shadow: computed, nothing written
    np.testing.assert_allclose(h.latest(), q0, atol=1e-9)
    assert h.diag_str("shadow_mode") == "True"


def test_configure_failure_is_reported_not_half_started():
    h = Harness(embodiment="no_such_arm")
    try:
        h.wait_for(lambda: h.diag_str("state") == "UNCONFIGURED", what="UNCONFIGURED diagnostics")
        assert h.diag_level == 2
        assert h.driver.hardware is None and h.driver.stack is None
        assert h.chunk_pub.get_subscription_count() == 0
    finally:
        h.close()
