"""QoS profiles per topic, chosen on purpose (STYLE.md habit 3).

- cameras: best effort, keep-last 1. A late frame is worthless; never queue old frames behind new.
- joint states: best effort, keep-last 1, at control rate: the latest measurement is what counts.
- action chunks: reliable, keep-last 1. A chunk must arrive whole; a newer one supersedes older ones.
- instruction: reliable, transient-local, depth 1 (latched): a late-joining policy node gets the task.
- diagnostics: reliable, keep-last 10, volatile (as diagnostic_aggregator expects).
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
JOINT_STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
CHUNK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
DIAGNOSTICS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Topic names from the message contract (ARCHITECTURE.md).
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
