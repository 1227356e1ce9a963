"""Topic names of the message contract (ARCHITECTURE.md), without rclpy: the nodes (``nodes/qos.py``) and the
bag tools (``bags/topics.py``) both take them from here."""

from __future__ import annotations

INSTRUCTION_TOPIC = "/molmoact2/instruction"
CHUNK_TOPIC = "/molmoact2/action_chunk"
DEPTH_TOPIC = "/molmoact2/depth"
JOINT_STATES_TOPIC = "/joint_states"
ESTOP_TOPIC = "/estop"
DIAGNOSTICS_TOPIC = "/diagnostics"


def camera_topic(name: str) -> str:
    return f"/cameras/{name}/image_raw"


def camera_info_topic(name: str) -> str:
    return f"/cameras/{name}/camera_info"


def compressed_topic(name: str) -> str:
    return f"/cameras/{name}/image_raw/compressed"
