"""A small /diagnostics publisher every node shares: one DiagnosticStatus per node, key-value counters.

Values are rendered with ``str`` so numbers stay parseable (the demo summary reads them back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from molmoact2_ros.nodes.qos import DIAGNOSTICS_QOS, DIAGNOSTICS_TOPIC

# Levels as ints (the message field is a one-byte ``bytes``; we convert when publishing).
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class DiagnosticsPublisher:
    """Publishes ``snapshot()`` (level, message, values) on /diagnostics at ``period_s``."""

    def __init__(self, node: Node, snapshot: Callable[[], tuple[int, str, Mapping[str, Any]]],
                 period_s: float = 1.0, hardware_id: str = ""):
        self._node = node
        self._snapshot = snapshot
        self._hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        level, message, values = self._snapshot()
        status = DiagnosticStatus(
            level=bytes([int(level)]),
            name=self._node.get_fully_qualified_name(),
            message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(arr)

    def destroy(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
