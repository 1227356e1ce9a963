"""A small /diagnostics publisher every node shares: one DiagnosticStatus per node, key-value counters.

Values are rendered with ``str`` so numbers stay parseable (the demo summary reads them back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy._rclpy_pybind11 import InvalidHandle
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
        try:
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
        except InvalidHandle:  # the node is being destroyed under a timer already dispatched: nothing to report
            return

    def destroy(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def percentiles_ms(name: str, samples: Iterable[float], to_ms: float = 1.0) -> dict[str, float]:
    """``{name}_p50_ms``, ``{name}_p99_ms`` and ``{name}_max_ms`` of ``samples`` (times ``to_ms`` to get
    milliseconds); NaN while there are no samples yet, so a reader can tell "none" from "zero"."""
    arr = np.fromiter(samples, dtype=np.float64) * to_ms
    if arr.size == 0:
        nan = float("nan")
        return {f"{name}_p50_ms": nan, f"{name}_p99_ms": nan, f"{name}_max_ms": nan}
    p50, p99 = np.percentile(arr, [50, 99])
    return {f"{name}_p50_ms": float(p50), f"{name}_p99_ms": float(p99), f"{name}_max_ms": float(arr.max())}
