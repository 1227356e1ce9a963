"""Which topics a station has, with their message types and QoS: the one list recorders, replayers,
evaluators and dataset exporters share.

No rclpy at import time (the CLI's --help and bag readers built on ``rosbags`` stay light). Topic names and
QoS mirror ``molmoact2_ros.nodes.qos`` (a unit test pins them equal); :func:`qos_profile` and
:func:`message_class` import rclpy / the message packages only when called.

Roles name what a topic is for, so code that needs "the chunks" or "the first camera" does not parse names:
``camera`` (Image), ``camera_compressed`` (CompressedImage), ``camera_info``, ``joint_states``,
``instruction``, ``chunk``, ``commanded`` (what the driver sent to the arm), ``shadow_commanded`` (what it
would have sent, in shadow mode), ``diagnostics``, ``depth`` (Think variant), ``estop``, ``clock``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import MolmoAct2RosError
from molmoact2_ros.topic_names import (
    CHUNK_TOPIC,
    DEPTH_TOPIC,
    DIAGNOSTICS_TOPIC,
    ESTOP_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    camera_info_topic,
    camera_topic,
    compressed_topic,
)


class BagError(MolmoAct2RosError):
    """A bag cannot be written or used: the message names the bag (and topic) and says how to fix it."""


# Names: the message contract (molmoact2_ros/topic_names.py), and what bags add.
CLOCK_TOPIC = "/clock"
DRIVER_NODE = "molmoact2_driver"  # the driver's node name in bringup (its ~/ topics hang off it)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"
BOOL_TYPE = "std_msgs/msg/Bool"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"

# custom_data keys the recorder writes into metadata.yaml (readers: replay, eval, export).
BAG_EMBODIMENT_KEY = "molmoact2_ros.embodiment"  # embodiment name
BAG_JOINTS_KEY = "molmoact2_ros.joint_names"  # comma-separated, the embodiment's order
BAG_CAMERAS_KEY = "molmoact2_ros.cameras"  # comma-separated camera names

CameraMode = Literal["raw", "compressed", "both", "none"]
CAMERA_MODES: tuple[str, ...] = ("raw", "compressed", "both", "none")


@dataclass(frozen=True)
class QosSpec:
    """QoS without rclpy: ``reliable`` (else best effort), ``transient_local`` (else volatile), keep-last ``depth``."""

    reliable: bool
    transient_local: bool
    depth: int


# Why each is chosen: nodes/qos.py.
CAMERA_QOS = QosSpec(reliable=False, transient_local=False, depth=1)
JOINT_STATE_QOS = QosSpec(reliable=False, transient_local=False, depth=1)
CHUNK_QOS = QosSpec(reliable=True, transient_local=False, depth=1)
LATCHED_QOS = QosSpec(reliable=True, transient_local=True, depth=1)
DIAGNOSTICS_QOS = QosSpec(reliable=True, transient_local=False, depth=10)
ESTOP_QOS = QosSpec(reliable=False, transient_local=False, depth=10)  # as the driver subscribes
CLOCK_QOS = QosSpec(reliable=False, transient_local=False, depth=1)  # as rclpy's TimeSource subscribes


@dataclass(frozen=True)
class TopicSpec:
    """One topic of a station. ``required``: a bag of this station is incomplete without it (the
    recorder warns when it never saw it; replay/eval may refuse a bag lacking it)."""

    name: str
    msgtype: str  # rosbag2 / ROS 2 form: "sensor_msgs/msg/Image"
    role: str
    qos: QosSpec
    camera: str = ""  # for camera roles: the camera's name
    required: bool = False


def commanded_topic(driver_node: str = DRIVER_NODE) -> str:
    return f"/{driver_node}/commanded"


def shadow_commanded_topic(driver_node: str = DRIVER_NODE) -> str:
    return f"/{driver_node}/shadow_commanded"


def station_topics(emb: EmbodimentConfig, cameras: CameraMode | str = "raw",
                   driver_node: str = DRIVER_NODE) -> list[TopicSpec]:
    """Every topic worth recording for ``emb``'s station, cameras first in the model's camera order.

    ``cameras``: ``raw`` (Image), ``compressed`` (JPEG CompressedImage), ``both``, or ``none``; camera_info
    comes with any of the first three."""
    if cameras not in CAMERA_MODES:
        raise ValueError(f"cameras must be one of {', '.join(CAMERA_MODES)}; got {cameras!r}")
    out: list[TopicSpec] = []
    for cam in emb.camera_names:
        if cameras in ("raw", "both"):
            out.append(TopicSpec(camera_topic(cam), IMAGE_TYPE, "camera", CAMERA_QOS, cam, required=True))
        if cameras in ("compressed", "both"):
            out.append(TopicSpec(compressed_topic(cam), COMPRESSED_TYPE, "camera_compressed", CAMERA_QOS, cam,
                                 required=cameras == "compressed"))
        if cameras != "none":
            out.append(TopicSpec(camera_info_topic(cam), CAMERA_INFO_TYPE, "camera_info", CAMERA_QOS, cam))
    out += [
        TopicSpec(JOINT_STATES_TOPIC, JOINT_STATE_TYPE, "joint_states", JOINT_STATE_QOS, required=True),
        TopicSpec(INSTRUCTION_TOPIC, STRING_TYPE, "instruction", LATCHED_QOS),
        TopicSpec(CHUNK_TOPIC, TRAJECTORY_TYPE, "chunk", CHUNK_QOS, required=True),
        TopicSpec(commanded_topic(driver_node), JOINT_STATE_TYPE, "commanded", JOINT_STATE_QOS),
        TopicSpec(shadow_commanded_topic(driver_node), JOINT_STATE_TYPE, "shadow_commanded", JOINT_STATE_QOS),
        TopicSpec(DIAGNOSTICS_TOPIC, DIAGNOSTICS_TYPE, "diagnostics", DIAGNOSTICS_QOS),
        TopicSpec(DEPTH_TOPIC, IMAGE_TYPE, "depth", CHUNK_QOS),
        TopicSpec(ESTOP_TOPIC, BOOL_TYPE, "estop", ESTOP_QOS),
    ]
    return out


def by_role(topics: list[TopicSpec], role: str) -> list[TopicSpec]:
    return [t for t in topics if t.role == role]


def qos_profile(spec: QosSpec) -> Any:
    """The rclpy ``QoSProfile`` for ``spec`` (imports rclpy)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
        reliability=ReliabilityPolicy.RELIABLE if spec.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if spec.transient_local else DurabilityPolicy.VOLATILE,
    )


def message_class(msgtype: str) -> Any:
    """The rclpy message class for ``pkg/msg/Name`` (or ``pkg/Name``); ValueError naming it if not installed."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type {msgtype!r} is not of the form pkg/msg/Name")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype!r} is not installed here (no {pkg}.{kind}.{name}); "
                         f"install its ROS 2 package (PyPI wheel ros-{pkg.replace('_', '-')})") from exc
