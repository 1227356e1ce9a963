"""mujoco backend: the driver commands the simulation node (``molmoact2_sim``) over ROS topics.

A ``ros_topic`` backend with the sim node's topics as defaults: joint targets as
``std_msgs/Float64MultiArray`` on ``/sim/joint_commands`` (embodiment order, robot units) and the
measurement from the sim's ``sensor_msgs/JointState`` on ``/sim/joint_states``, which the driver
republishes on ``/joint_states`` stamped with its tick, as it does for a real arm.

Why over ROS and not MuJoCo in the driver's process: the physics must run in one place, and the cameras
render from the same state; with the physics in the sim node the driver, its scheduler and its safety
stack run exactly the code they run on a real arm (read, check, write through a backend; the state can
be late or missing, the measurement lags the command), and a user can swap the sim for a ros2_control
robot by changing the backend name only. ``hardware.params.mujoco`` takes every ``ros_topic`` parameter
(``state_timeout_s``, default 3 s here, 0.5 s for ros_topic: a sim rendering on a busy CPU publishes late;
other topic names, ...).
The driver lists ``mujoco`` among its simulated backends: shadow mode is off by default.
"""

from __future__ import annotations

from typing import Any

from molmoact2_ros.backends.hardware.ros_topic import RosTopicArm
from molmoact2_ros.core.embodiment import EmbodimentConfig

SIM_COMMAND_TOPIC = "/sim/joint_commands"
SIM_STATE_TOPIC = "/sim/joint_states"
# The sim process renders cameras on the CPU next to its physics: on a busy host its joint states can come
# late by more than a real arm's 0.5 s without anything being wrong. A simulated arm has nothing to protect;
# a stopped sim still latches the driver's fault after this long.
SIM_STATE_TIMEOUT_S = 3.0


class MujocoArm(RosTopicArm):
    """The simulated arm of ``molmoact2_sim`` (see the module docstring)."""

    name = "mujoco"

    def __init__(self, embodiment: EmbodimentConfig, *, node: Any, command_topic: str = SIM_COMMAND_TOPIC,
                 state_topic: str = SIM_STATE_TOPIC, **params: Any):
        params.setdefault("command_type", "float64_multi_array")
        params.setdefault("state_timeout_s", SIM_STATE_TIMEOUT_S)
        super().__init__(embodiment, node=node, command_topic=command_topic, state_topic=state_topic, **params)
