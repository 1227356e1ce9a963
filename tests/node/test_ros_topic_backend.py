"""ros_topic backend against a fake ros2_control robot, with real rclpy.

The fake robot is what a forward_position_controller (or joint_trajectory_controller) plus a
joint_state_broadcaster look like from outside: it subscribes to the controller's command topic and
publishes sensor_msgs/JointState, here with its joints in its own order plus a joint the embodiment
does not have. First the backend alone, then the driver node on top of it (shadow mode by default,
``~/enable`` to move).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.backends.hardware import make_hardware
from molmoact2_ros.core.embodiment import load_embodiment, resolve_embodiment_path
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.nodes.diagnostics import status_values
from molmoact2_ros.nodes.driver_node import DriverNode
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC, DIAGNOSTICS_QOS, DIAGNOSTICS_TOPIC, JOINT_STATE_QOS

pytestmark = pytest.mark.ros

EMB = load_embodiment("so101")
# The controller's joint order differs from the embodiment's (a real controller's `joints` parameter).
CONTROLLER_JOINTS = ["gripper", "wrist_roll", "wrist_flex", "elbow_flex", "shoulder_lift", "shoulder_pan"]
FORWARD_TOPIC = "/forward_position_controller/commands"
TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"


def wait_for(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class FakeRobot:
    """forward_position_controller / joint_trajectory_controller + joint_state_broadcaster, first order."""

    def __init__(self, ctx: rclpy.Context, command_type: str, state_topic: str = "/joint_states",
                 split_gripper: bool = False, rate_hz: float = 100.0, time_constant_s: float = 0.03):
        self.node = Node("fake_ros2_control_robot", context=ctx)
        self.names = [*CONTROLLER_JOINTS, "camera_tilt"]  # one joint the embodiment does not drive
        home = dict(zip(EMB.joint_names, EMB.home, strict=True))
        self.q = np.array([home.get(n, 0.25) for n in self.names])
        self.cmd = self.q.copy()
        self.lock = threading.Lock()
        self.commands: list[np.ndarray] = []  # in CONTROLLER_JOINTS order, as received
        self.trajectories: list[JointTrajectory] = []
        self.alpha = 1.0 - np.exp(-1.0 / (rate_hz * time_constant_s))
        self.split_gripper = split_gripper
        self.publishing = True
        self.state_pub = self.node.create_publisher(JointState, state_topic, QoSProfile(depth=10))
        if command_type == "float64_multi_array":
            self.node.create_subscription(Float64MultiArray, FORWARD_TOPIC, self._on_forward, QoSProfile(depth=10))
        else:
            self.node.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self._on_trajectory,
                                          QoSProfile(depth=10))
        self.node.create_timer(1.0 / rate_hz, self._step)

    def _on_forward(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data)
        if data.size != len(CONTROLLER_JOINTS):  # a real forward controller rejects a wrong size too
            return
        with self.lock:
            self.commands.append(data)
            self.cmd[: len(CONTROLLER_JOINTS)] = data

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.trajectories.append(msg)
            target = msg.points[-1].positions
            for name, value in zip(msg.joint_names, target, strict=True):
                self.cmd[self.names.index(name)] = value

    def _step(self) -> None:
        if not self.publishing:
            return
        with self.lock:
            self.q = self.q + (self.cmd - self.q) * self.alpha
            q = self.q.copy()
        stamp = self.node.get_clock().now().to_msg()
        if self.split_gripper:  # arm and gripper from two broadcasters
            arm = [i for i, n in enumerate(self.names) if n != "gripper"]
            self.state_pub.publish(JointState(name=[self.names[i] for i in arm], position=[float(q[i]) for i in arm]))
            g = self.names.index("gripper")
            self.state_pub.publish(JointState(name=["gripper"], position=[float(q[g])]))
        else:
            msg = JointState(name=list(self.names), position=[float(x) for x in q])
            msg.header.stamp = stamp
            self.state_pub.publish(msg)

    def embodiment_order(self) -> np.ndarray:
        with self.lock:
            return np.array([self.q[self.names.index(n)] for n in EMB.joint_names])


class Graph:
    """One rclpy context, spun by a SingleThreadedExecutor on a thread (as the driver's main does)."""

    def __init__(self) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.nodes: list[Node] = []
        self._thread: threading.Thread | None = None

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def spin(self) -> None:
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for node in self.nodes:
            if isinstance(node, DriverNode):
                node.release()
            node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def ros_topic_embodiment(command_type: str, **extra):
    params = {"command_topic": FORWARD_TOPIC if command_type == "float64_multi_array" else TRAJECTORY_TOPIC,
              "command_type": command_type, "command_joints": CONTROLLER_JOINTS, **extra}
    hardware = EMB.hardware.model_copy(update={"backend": "ros_topic", "params": {"ros_topic": params}})
    return EMB.model_copy(update={"hardware": hardware})


# ---- the backend alone ----------------------------------------------------------------------------

def test_backends_import_without_rclpy():
    code = ("import sys; import molmoact2_ros.backends.hardware as h; "
            "assert 'ros_topic' in h.available_backends(); assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_needs_the_driver_node_handle_and_valid_params(graph):
    with pytest.raises(HardwareError, match="node handle"):
        make_hardware(ros_topic_embodiment("float64_multi_array"))
    node = graph.add(Node("owner", context=graph.ctx))
    with pytest.raises(HardwareError, match="command_type"):
        make_hardware(ros_topic_embodiment("velocity"), ros_node=node)
    with pytest.raises(HardwareError, match="command_joints"):
        make_hardware(ros_topic_embodiment("float64_multi_array", command_joints=CONTROLLER_JOINTS[:5]),
                      ros_node=node)
    with pytest.raises(HardwareError, match="does not take"):
        make_hardware(ros_topic_embodiment("float64_multi_array", baud_rate=1_000_000), ros_node=node)


@pytest.mark.parametrize("split_gripper", [False, True], ids=["one_broadcaster", "arm_and_gripper_broadcasters"])
def test_forward_controller_read_by_name_and_write_in_controller_order(graph, split_gripper):
    owner = graph.add(Node("driver_stand_in", context=graph.ctx))
    clock = [0.0]
    hw = make_hardware(ros_topic_embodiment("float64_multi_array"), ros_node=owner)
    hw._clock = lambda: time.monotonic() + clock[0]  # lets the test age the joint states
    hw.connect()
    assert hw.connected and not hw.ready
    with pytest.raises(HardwareError, match="no state yet"):
        hw.read()
    robot = FakeRobot(graph.ctx, "float64_multi_array", split_gripper=split_gripper)
    graph.add(robot.node)
    graph.spin()
    wait_for(lambda: hw.ready, what="first joint states")
    np.testing.assert_allclose(hw.read().positions, robot.embodiment_order(), atol=0.02)
    wait_for(lambda: hw._publisher.get_subscription_count() > 0, what="controller subscription")
    target = EMB.home + np.array([0.1, -0.2, 0.3, 0.0, 0.05, 0.2])
    sent = hw.write(target)
    np.testing.assert_array_equal(sent, target)
    wait_for(lambda: len(robot.commands) >= 1, what="command at the controller")
    expected = [target[EMB.joint_names.index(n)] for n in CONTROLLER_JOINTS]
    np.testing.assert_allclose(robot.commands[-1], expected, atol=1e-12)  # the controller's joint order
    wait_for(lambda: np.max(np.abs(hw.read().positions - target)) < 1e-3, what="robot at the target")
    # The broadcaster stops: after state_timeout_s the reading is refused, naming the stale joints.
    clock[0] = 10.0
    with pytest.raises(HardwareError, match="old"):
        hw.read()
    with pytest.raises(HardwareError, match="non-finite"):
        hw.write(np.full(EMB.dof, np.nan))
    hw.disconnect()
    wait_for(lambda: owner.count_publishers(FORWARD_TOPIC) == 0, what="our publisher gone from the graph")
    assert owner.count_subscribers(FORWARD_TOPIC) == 1  # the fake controller's


def test_joint_trajectory_controller_gets_one_point_per_tick(graph):
    owner = graph.add(Node("driver_stand_in", context=graph.ctx))
    hw = make_hardware(ros_topic_embodiment("joint_trajectory"), ros_node=owner)
    hw.connect()
    robot = FakeRobot(graph.ctx, "joint_trajectory")
    graph.add(robot.node)
    graph.spin()
    wait_for(lambda: hw.ready and hw._publisher.get_subscription_count() > 0, what="robot up")
    target = EMB.home + 0.1
    hw.write(target)
    wait_for(lambda: len(robot.trajectories) >= 1, what="trajectory at the controller")
    msg = robot.trajectories[-1]
    assert list(msg.joint_names) == CONTROLLER_JOINTS and len(msg.points) == 1
    point = msg.points[0]
    assert point.time_from_start.sec * 1e9 + point.time_from_start.nanosec == round(1e9 / EMB.tick_rate_hz)
    np.testing.assert_allclose(point.positions, [target[EMB.joint_names.index(n)] for n in CONTROLLER_JOINTS])
    assert msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0  # start on receipt
    wait_for(lambda: np.max(np.abs(hw.read().positions - target)) < 1e-3, what="robot at the target")


# ---- the driver node on top of it -----------------------------------------------------------------

def driver_yaml(tmp_path: Path, command_type: str) -> Path:
    data = yaml.safe_load(resolve_embodiment_path("so101").read_text())
    data["hardware"]["backend"] = "ros_topic"
    data["hardware"]["params"]["ros_topic"] = {
        "command_topic": FORWARD_TOPIC if command_type == "float64_multi_array" else TRAJECTORY_TOPIC,
        "command_type": command_type, "command_joints": CONTROLLER_JOINTS, "state_topic": "/joint_states"}
    path = tmp_path / "so101_ros_topic.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command_type", ["float64_multi_array", "joint_trajectory"])
def test_driver_shadow_by_default_then_enable_drives_the_robot(graph, tmp_path, command_type):
    robot = FakeRobot(graph.ctx, command_type)
    graph.add(robot.node)
    driver = graph.add(DriverNode(context=graph.ctx, parameter_overrides=[
        Parameter("embodiment", value=str(driver_yaml(tmp_path, command_type))),
        Parameter("diagnostics_period_s", value=0.05)]))
    probe = graph.add(Node("probe", context=graph.ctx))
    diag: dict[str, str] = {}
    probe.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC,
                              lambda m: diag.update(status_values(m.status[0]))
                              if m.status[0].name == driver.get_fully_qualified_name() else None, DIAGNOSTICS_QOS)
    enable = probe.create_client(SetBool, "/molmoact2_driver/enable")
    graph.spin()
    wait_for(lambda: diag.get("hardware_ready") == "True", what="driver sees the robot")
    # Real hardware: shadow mode unless asked; the robot's broadcaster is the only /joint_states publisher.
    assert diag["shadow_mode"] == "True" and diag["backend"] == "ros_topic"
    assert diag["joint_states_published"] == "False" and probe.count_publishers("/joint_states") == 1
    chunks = probe.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
    commanded: list[np.ndarray] = []
    probe.create_subscription(JointState, "/molmoact2_driver/commanded",
                              lambda m: commanded.append(np.asarray(m.position)), JOINT_STATE_QOS)
    wait_for(lambda: chunks.get_subscription_count() > 0, what="driver chunk subscription")

    q0 = robot.embodiment_order()
    delta = np.array([0.2, -0.15, 0.2, 0.1, 0.0, 0.2])
    chunks.publish(chunk_msg(driver, q0 + np.linspace(0, 1, 10)[:, None] * delta))
    wait_for(lambda: diag.get("chunks_executed") == "1", what="chunk executed in shadow mode")
    time.sleep(0.3)
    assert robot.commands == [] and robot.trajectories == []  # computed, never sent
    np.testing.assert_allclose(robot.embodiment_order(), q0, atol=1e-9)

    future = enable.call_async(SetBool.Request(data=True))
    wait_for(future.done, what="~/enable response")
    assert future.result().success
    wait_for(lambda: diag.get("shadow_mode") == "False", what="shadow mode off")
    q1 = robot.embodiment_order()
    target = q1 + delta
    chunks.publish(chunk_msg(driver, q1 + np.linspace(0, 1, 10)[:, None] * delta))
    wait_for(lambda: np.max(np.abs(robot.embodiment_order() - target)) < 0.01, what="robot at the target")
    # What the driver says it sent is what the controller got, in the controller's order (read once the
    # command has settled on the target: the arm comes within 0.01 while the command is still braking).
    wait_for(lambda: len(commanded) > 0 and np.allclose(commanded[-1], target, atol=1e-9), what="~/commanded")
    in_controller_order = [target[EMB.joint_names.index(n)] for n in CONTROLLER_JOINTS]

    def controller_got_it() -> bool:
        with robot.lock:
            last = robot.commands[-1] if robot.commands else np.asarray(robot.trajectories[-1].points[0].positions)
        return bool(np.allclose(last, in_controller_order, atol=1e-9))

    wait_for(controller_got_it, what="the controller's last command on the target, in its joint order")
    assert diag["state"] in ("RUNNING", "HOLD") and diag["chunks_rejected"] == "0"


def test_driver_faults_when_the_robot_stops_publishing(graph, tmp_path):
    robot = FakeRobot(graph.ctx, "float64_multi_array")
    graph.add(robot.node)
    driver = graph.add(DriverNode(context=graph.ctx, parameter_overrides=[
        Parameter("embodiment", value=str(driver_yaml(tmp_path, "float64_multi_array"))),
        Parameter("diagnostics_period_s", value=0.05)]))
    graph.spin()
    wait_for(lambda: driver.core is not None and driver.core.hardware_ready, what="driver sees the robot")
    robot.publishing = False  # the broadcaster (or the whole ros2_control_node) died
    wait_for(lambda: driver.stack.fault is not None, what="fault")
    assert driver.stack.fault[0] == "read_error" and "old" in driver.stack.fault[1]


def chunk_msg(driver: DriverNode, positions: np.ndarray) -> JointTrajectory:
    msg = JointTrajectory(joint_names=EMB.joint_names)
    msg.header.stamp = driver.get_clock().now().to_msg()
    for k, row in enumerate(positions):
        ns = round(k * 1e9 / EMB.control_rate_hz)
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                               time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
    return msg
