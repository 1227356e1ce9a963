"""ros_topic backend: drive any ros2_control arm (franka_ros2 among them) through its controller topics.

Commands go to one controller's command topic, every tick, as what that controller takes:

- ``command_type: float64_multi_array`` -- a ``forward_command_controller`` /
  ``position_controllers/JointGroupPositionController``: ``std_msgs/Float64MultiArray`` with one value
  per controller joint, in the controller's ``joints`` order (``command_joints``);
- ``command_type: joint_trajectory`` -- a ``joint_trajectory_controller``: a
  ``trajectory_msgs/JointTrajectory`` with the joint names and one point reached ``point_time_s``
  from now (default: one driver tick), so the controller interpolates between our ticks.

Measurements come from the robot's own joint states (``joint_state_broadcaster``) on ``state_topic``,
matched by joint name: the message order does not matter, extra joints are ignored, and joints spread
over several publishers (arm + gripper) are merged. Until every joint has been heard the backend is
connected but not ``ready``; afterwards a joint whose latest state is older than ``state_timeout_s``
makes ``read`` fail (the driver latches a fault after a few failures).

``joint_names`` maps the embodiment's joints to the robot's names (same order as the embodiment;
default: the same names). When ``state_topic`` is ``/joint_states`` the driver does not republish its
measurement there (the robot already does); with mapped names, point ``state_topic`` at the robot's
own topic so the driver republishes ``/joint_states`` in the embodiment's names, which the policy reads.

A position controller cannot go limp, so this backend does not ``relax``: faults hold. It needs rclpy
and the driver node's handle (``make_hardware(..., ros_node=node)``); ``backends.hardware`` imports this
module only when the backend is asked for, so the rest of ``backends`` stays importable without ROS.
Publishing happens on the driver's control thread; the joint-state callback runs on the node's executor.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy._rclpy_pybind11 import InvalidHandle, RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import HardwareError

COMMAND_TYPES = ("float64_multi_array", "joint_trajectory")
DEFAULT_STATE_TOPIC = "/joint_states"
DEFAULT_STATE_TIMEOUT_S = 0.5

# Commands: reliable keep-last 1 matches ros2_control's SystemDefaultsQoS subscriptions and never
# queues a stale command behind a fresh one.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# Joint states: best effort matches any broadcaster; depth 10 so that messages from two publishers
# (arm, gripper) arriving back to back are both seen.
STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)


class RosTopicArm(HardwareInterface):
    """A ros2_control robot behind a position controller topic and a joint states topic."""

    name = "ros_topic"
    needs_ros_node = True

    def __init__(self, embodiment: EmbodimentConfig, *, node: Node, command_topic: str,
                 command_type: str = "float64_multi_array", state_topic: str = DEFAULT_STATE_TOPIC,
                 joint_names: Sequence[str] | None = None, command_joints: Sequence[str] | None = None,
                 state_timeout_s: float = DEFAULT_STATE_TIMEOUT_S, point_time_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(embodiment)
        where = f"{embodiment.source_path or embodiment.name}: hardware.params.ros_topic"
        if command_type not in COMMAND_TYPES:
            raise HardwareError(f"{where}.command_type: {command_type!r} is not one of {', '.join(COMMAND_TYPES)}")
        if not command_topic:
            raise HardwareError(f"{where}.command_topic: set the controller's command topic, "
                                "e.g. /forward_position_controller/commands")
        robot_names = list(joint_names) if joint_names is not None else list(embodiment.joint_names)
        if len(robot_names) != embodiment.dof or len(set(robot_names)) != len(robot_names):
            raise HardwareError(f"{where}.joint_names: need {embodiment.dof} distinct names (the robot's names "
                                f"for {embodiment.joint_names}, in that order), got {robot_names}")
        order = list(command_joints) if command_joints is not None else robot_names
        if sorted(order) != sorted(robot_names):
            raise HardwareError(f"{where}.command_joints: must list exactly the joints {robot_names} in the "
                                f"controller's order, got {order}")
        if not (state_timeout_s > 0 and math.isfinite(state_timeout_s)):
            raise HardwareError(f"{where}.state_timeout_s: must be positive seconds, got {state_timeout_s}")
        point_time = 1.0 / embodiment.tick_rate_hz if point_time_s is None else float(point_time_s)
        if not (point_time > 0 and math.isfinite(point_time)):
            raise HardwareError(f"{where}.point_time_s: must be positive seconds, got {point_time_s}")
        self.node = node
        self.command_topic = command_topic
        self.command_type = command_type
        self.robot_joint_names = robot_names
        self.command_joints = order
        self.state_timeout_s = float(state_timeout_s)
        self.point_time_s = point_time
        self._state_topic = state_topic
        self._command_index = np.array([robot_names.index(n) for n in order])
        self._index_of = {n: i for i, n in enumerate(robot_names)}
        self._clock = clock
        self._lock = threading.Lock()
        self._positions = np.full(embodiment.dof, np.nan)
        self._received_at = np.full(embodiment.dof, -np.inf)  # clock() time each joint was last heard
        self._publisher: Any = None
        self._subscription: Any = None
        self.messages_received = 0
        self.writes = 0

    # ---- capabilities ---------------------------------------------------------------------------
    @property
    def state_topic(self) -> str:
        return self.node.resolve_topic_name(self._state_topic)

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._connected and bool(np.all(np.isfinite(self._received_at)))

    # ---- interface ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Create the command publisher and the joint-state subscription. Does not wait for the robot:
        ``connect`` runs inside the node's configure transition, before its executor spins."""
        if self._connected:
            return
        msg_type = Float64MultiArray if self.command_type == "float64_multi_array" else JointTrajectory
        try:
            self._publisher = self.node.create_publisher(msg_type, self.command_topic, COMMAND_QOS)
            self._subscription = self.node.create_subscription(
                JointState, self._state_topic, self._on_joint_state, STATE_QOS,
                callback_group=MutuallyExclusiveCallbackGroup())
        except (RCLError, InvalidHandle, ValueError) as exc:  # ValueError: invalid topic name
            self._destroy_entities()
            raise HardwareError(f"ros_topic backend: cannot create {self.command_topic} / {self._state_topic} "
                                f"on node {self.node.get_name()}: {exc}") from exc
        with self._lock:
            self._received_at[:] = -np.inf
            self._positions[:] = np.nan
            self._connected = True

    def disconnect(self) -> None:
        with self._lock:
            self._connected = False
        self._destroy_entities()

    def read(self) -> HardwareReading:
        self._require_connected()
        now = self._clock()
        with self._lock:
            positions = self._positions.copy()
            received = self._received_at.copy()
        missing = [self.robot_joint_names[i] for i in np.flatnonzero(~np.isfinite(received))]
        if missing:
            raise HardwareError(f"ros_topic backend: no state yet for joints {missing} on {self.state_topic} "
                                "(is the joint_state_broadcaster running, with these joint names?)")
        age = now - received
        stale = np.flatnonzero(age > self.state_timeout_s)
        if stale.size:
            names = [self.robot_joint_names[i] for i in stale]
            raise HardwareError(f"ros_topic backend: joint states for {names} on {self.state_topic} are "
                                f"{float(age.max()):.2f} s old (state_timeout_s {self.state_timeout_s:g})")
        return HardwareReading(positions=positions, temperatures_c=None)

    def write(self, positions: np.ndarray) -> np.ndarray:
        self._require_connected()
        cmd = self._check_command(positions)
        ordered = [float(x) for x in cmd[self._command_index]]
        msg: Float64MultiArray | JointTrajectory
        if self.command_type == "float64_multi_array":
            msg = Float64MultiArray(data=ordered)
        else:
            ns = round(self.point_time_s * 1e9)
            # header.stamp left zero: the controller starts the trajectory on receipt.
            msg = JointTrajectory(joint_names=self.command_joints, points=[JointTrajectoryPoint(
                positions=ordered, time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9))])
        try:
            self._publisher.publish(msg)
        except (RCLError, InvalidHandle) as exc:
            raise HardwareError(f"ros_topic backend: publishing on {self.command_topic} failed: {exc}") from exc
        self.writes += 1
        return cmd.copy()

    # ---- internals ------------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            return  # effort-only or malformed message: carries no positions to match
        now = self._clock()
        with self._lock:
            self.messages_received += 1
            for name, value in zip(msg.name, msg.position, strict=True):
                i = self._index_of.get(name)
                if i is not None and math.isfinite(value):
                    self._positions[i] = value
                    self._received_at[i] = now

    def _destroy_entities(self) -> None:
        # After SIGINT the context may already be shut down: the entities die with it then.
        pub, sub, self._publisher, self._subscription = self._publisher, self._subscription, None, None
        try:
            if pub is not None:
                self.node.destroy_publisher(pub)
            if sub is not None:
                self.node.destroy_subscription(sub)
        except (RCLError, InvalidHandle):
            pass
