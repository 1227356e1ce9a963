"""QoS profiles per topic, chosen on purpose (STYLE.md habit 3).

- cameras: best effort, keep-last 1. A late frame is worthless; never queue old frames behind new.
- joint states: best effort, keep-last 1, at control rate: the latest measurement is what counts.
- action chunks: reliable, keep-last 1. A chunk must arrive whole; a newer one supersedes older ones.
- instruction: reliable, transient-local, depth 1 (latched): a late-joining policy node gets the task.
- diagnostics: reliable, keep-last 10, volatile (as diagnostic_aggregator expects).
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from molmoact2_ros.topic_names import (  # noqa: F401 - re-exported: the nodes import them from here
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
# The policy's chunk publisher: the same QoS with a deeper writer history. The driver still keeps only the
# latest (its reader's depth 1), but a recorder that acknowledges late gets every chunk instead of only the
# newest one; depth is local to each side, so matching is unchanged.
CHUNK_PUBLISHER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
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

# Topic names from the message contract: molmoact2_ros/topic_names.py.
