"""The real driver node over rclpy, with a policy stand-in, for the fault scenarios that must cross DDS.

``DriverHarness`` starts the driver (mock backend, autostart) and a probe node in a private rclpy
Context spun by a SingleThreadedExecutor on a background thread, as ``driver_node.main`` does. The probe
records /joint_states, ~/commanded and /diagnostics. ``policy`` is a second node (in the same context)
that publishes a chunk every ``period_s`` from a thread, the way a policy node does; destroying it is
a policy crash. No assertion here looks at wall-clock durations: waits only bound how long a test may
take to see a state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.command_audit import CommandAuditor
from molmoact2_ros.core.driver_core import CycleResult
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment, resolve_embodiment_path
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


def embodiment_file(tmp_path: Path, name: str, **safety: Any) -> Path:
    """A copy of a built-in embodiment YAML with some safety settings changed (short watchdogs keep the
    tests short)."""
    data = yaml.safe_load(resolve_embodiment_path(name).read_text())
    data["safety"].update(safety)
    path = tmp_path / f"{name}_fault.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def trajectory(emb: EmbodimentConfig, positions: np.ndarray, stamp_ns: int,
               names: list[str] | None = None) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = rclpy.time.Time(nanoseconds=stamp_ns).to_msg()
    msg.joint_names = list(names or emb.joint_names)
    for k, row in enumerate(positions):
        ns = round(k * 1e9 / emb.control_rate_hz)
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                               time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
    return msg


class PolicyStandIn:
    """Publishes a 30-step chunk every ``period_s``: a slow swing from home into the envelope, starting
    from the latest measured pose (closed loop) or following the swing itself (``closed_loop=False``)."""

    def __init__(self, harness: DriverHarness, period_s: float = 0.15, latency_s: float = 0.05,
                 closed_loop: bool = True, amplitude: float = 0.2, frequency_hz: float = 0.5):
        self.h = harness
        self.emb = harness.emb
        self.node = Node("fault_policy_stand_in", context=harness.ctx)
        self.pub = self.node.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        harness.executor.add_node(self.node)
        self.period_s, self.latency_s, self.closed_loop = period_s, latency_s, closed_loop
        self.amplitude, self.frequency_hz = amplitude, frequency_hz
        self.published = 0
        self._t0: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        harness.policies.append(self)

    def reference(self, t: float) -> np.ndarray:
        emb = self.emb
        direction = np.where(emb.upper - emb.home >= emb.home - emb.lower, 1.0, -1.0)
        # At most a fifth of each joint's range: a Franka finger width spans 0.08 m, not radians.
        amplitude = np.minimum(self.amplitude, 0.2 * (emb.upper - emb.lower))
        assert self._t0 is not None
        return emb.home + direction * amplitude * (1.0 - np.cos(2 * np.pi * self.frequency_hz * (t - self._t0)))

    def chunk_now(self) -> JointTrajectory:
        now_ns = self.h.driver.get_clock().now().nanoseconds
        stamp_ns = now_ns - round(self.latency_s * 1e9)
        stamp = stamp_ns * 1e-9
        if self._t0 is None:
            self._t0 = stamp
        times = stamp + np.arange(30) / self.emb.control_rate_hz
        ref = np.stack([self.reference(t) for t in times])
        positions = self.h.latest() + ref - ref[0] if self.closed_loop else ref
        return trajectory(self.emb, np.clip(positions, self.emb.lower, self.emb.upper), stamp_ns)

    def start(self) -> PolicyStandIn:
        self.h.wait_for(lambda: self.pub.get_subscription_count() > 0, what="driver chunk subscription")
        self._stop.clear()  # start again after stop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pub.publish(self.chunk_now())
            self.published += 1
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def crash(self) -> None:
        """The policy process dies: its thread stops and its node disappears from the graph."""
        self.stop()
        self.h.executor.remove_node(self.node)
        self.node.destroy_node()


class DriverHarness:
    def __init__(self, embodiment: str | Path = "so101", **params: Any):
        self.emb = load_embodiment(embodiment)
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        overrides = [Parameter("diagnostics_period_s", value=0.05), Parameter("embodiment", value=str(embodiment))]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        # Configured and activated here rather than by autostart, so that the recorder sees every tick the
        # control thread runs, from the first: close() audits every write of the whole test.
        overrides.append(Parameter("autostart", value=False))
        self.driver = DriverNode(context=self.ctx, parameter_overrides=overrides)
        self.driver.trigger_configure()
        self.ticks = TickRecorder(self.driver)
        self.driver.trigger_activate()
        self.probe = Node("fault_test_probe", context=self.ctx)
        self._lock = threading.Lock()
        self.joint_states: list[np.ndarray] = []
        self.commanded: list[np.ndarray] = []
        self.commanded_stamps: list[float] = []  # header stamps (ROS time of the tick that wrote it)
        self.diag: dict[str, str] = {}
        self.diag_level = -1
        self.diag_count = 0  # /diagnostics messages about the driver received
        self.states_seen: list[str] = []
        self.policies: list[PolicyStandIn] = []
        self.chunk_pub = self.probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        self.estop_pub = self.probe.create_publisher(Bool, ESTOP_TOPIC, 10)
        self.probe.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_js, JOINT_STATE_QOS)
        self.probe.create_subscription(JointState, "/molmoact2_driver/commanded", self._on_cmd, JOINT_STATE_QOS)
        self.probe.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diag, DIAGNOSTICS_QOS)
        self.reset_cli = self.probe.create_client(Trigger, "/molmoact2_driver/reset")
        self.estop_cli = self.probe.create_client(Trigger, "/molmoact2_driver/estop")
        self.enable_cli = self.probe.create_client(SetBool, "/molmoact2_driver/enable")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.driver)
        self.executor.add_node(self.probe)
        self._spinning = threading.Event()
        self._spinning.set()
        self._spin = threading.Thread(target=self._spin_until_closed, daemon=True)
        self._spin.start()

    def _spin_until_closed(self) -> None:
        # spin_once in a loop, not executor.spin(): close() stops this thread before shutting the executor
        # down, because rclpy's shutdown can destroy its guard condition under a callback still being
        # dispatched (InvalidHandle in the spin thread, seen with large chunks in flight).
        while self._spinning.is_set() and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_js(self, msg: JointState) -> None:
        order = [list(msg.name).index(n) for n in self.emb.joint_names]
        with self._lock:
            self.joint_states.append(np.asarray(msg.position)[order])

    def _on_cmd(self, msg: JointState) -> None:
        with self._lock:
            self.commanded.append(np.asarray(msg.position))
            self.commanded_stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.driver.get_fully_qualified_name():
                values = status_values(status)
                with self._lock:
                    self.diag, self.diag_level = values, status.level[0]
                    self.diag_count += 1
                    state = values.get("state", "")
                    if state and (not self.states_seen or self.states_seen[-1] != state):
                        self.states_seen.append(state)

    # ---- helpers ----------------------------------------------------------------------------------
    def wait_for(self, pred: Callable[[], bool], timeout: float = 8.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; diagnostics: {self.diag}")

    def ready(self) -> np.ndarray:
        self.wait_for(lambda: len(self.joint_states) > 3, what="/joint_states")
        self.wait_for(lambda: "state" in self.diag, what="/diagnostics")
        return self.latest()

    def latest(self) -> np.ndarray:
        with self._lock:
            return self.joint_states[-1].copy()

    def n_commanded(self) -> int:
        with self._lock:
            return len(self.commanded)

    def commanded_since(self, n: int) -> np.ndarray:
        with self._lock:
            return np.array(self.commanded[n:]).reshape(-1, self.emb.dof)

    def stamped_since(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return np.array(self.commanded_stamps[n:]), np.array(self.commanded[n:]).reshape(-1, self.emb.dof)

    def assert_controlled_stop(self, since_mono: float, *, then_holds: bool = True) -> list[np.ndarray]:
        """The writes after monotonic time ``since_mono`` in a stopping state: at least one, and with
        ``then_holds`` ending standing still on the same command (that each is a controlled stop within the
        acceleration limit is what ``audit_writes`` checks, for every write)."""
        stopping = [cycle.sent for (_, _, cycle) in self.ticks.since(since_mono)
                    if cycle.sent is not None and not is_following(cycle)]
        assert stopping, "no stopping writes"
        if then_holds:
            assert len(stopping) >= 2 and np.array_equal(stopping[-1], stopping[-2]), "still moving at the end"
        return stopping

    def audit_writes(self) -> list[str]:
        """Every write the driver made, checked by ``CommandAuditor``: envelope, speed, acceleration, and a
        controlled stop in every state that does not follow a plan; nothing to a relaxed arm."""
        audit = CommandAuditor(self.emb)
        relaxed = False
        for _, now_s, cycle in self.ticks.since(0.0):
            res = cycle.tick
            if cycle.sent is not None:
                if res.ramp_base is not None:
                    relaxed = False
                if relaxed:
                    audit.counts.violations.append(f"wrote {cycle.sent} to a relaxed arm at {now_s}")
                audit.observe(now_s, cycle.sent, restart_from=res.ramp_base, stopping=not is_following(cycle),
                              context=f"{res.state.value} {res.reason}")
            elif res.relax or res.shadow:
                audit.forget()
            relaxed = relaxed or res.relax
        return audit.counts.violations

    def d(self, key: str) -> str:
        with self._lock:
            return self.diag.get(key, "")

    def di(self, key: str) -> int:
        return int(self.d(key) or "-1")

    def wait_state(self, state: str, reason: str | None = None, timeout: float = 8.0) -> None:
        self.wait_for(lambda: self.d("state") == state and (reason is None or self.d("state_reason") == reason),
                      timeout=timeout, what=f"state {state} ({reason})")

    def call(self, client: Any, request: Any) -> Any:
        assert client.wait_for_service(timeout_sec=5.0), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.wait_for(future.done, what=f"{client.srv_name} response")
        return future.result()

    def close(self) -> None:
        for policy in self.policies:
            policy.stop()
        self._spinning.clear()
        self._spin.join(timeout=15.0)  # generous: a callback may still be parsing a large chunk
        self.executor.shutdown(timeout_sec=5.0)
        self.driver.release()
        self.driver.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        bad = self.audit_writes()
        assert not bad, f"{len(bad)} unsafe writes, first: {bad[:3]}"


def is_following(cycle: CycleResult) -> bool:
    res = cycle.tick
    return res.state is SafetyState.RUNNING or (res.state is SafetyState.HOLD and res.reason == "starved")


class TickRecorder:
    """Wraps the driver's ``DriverCore.cycle`` (the control thread's call) to keep every tick: monotonic time,
    the ROS time it ran at, and its ``CycleResult``. Records only; the driver runs unchanged."""

    def __init__(self, driver: DriverNode):
        core = driver.core
        self.lock = threading.Lock()
        self.ticks: list[tuple[float, float, CycleResult]] = []
        if core is None:  # configure failed: nothing will tick
            return
        orig = core.cycle

        def recording(now_s: float) -> CycleResult:
            out = orig(now_s)
            with self.lock:
                self.ticks.append((time.monotonic(), now_s, out))
            return out

        core.cycle = recording  # type: ignore[method-assign]

    def since(self, mono: float) -> list[tuple[float, float, CycleResult]]:
        with self.lock:
            return [x for x in self.ticks if x[0] >= mono]
