"""Log lines from a node's hot threads (control loop, inference) without calling the rclpy logger there.

The rclpy logger inspects the caller's frame and resolves file paths on every call: dozens of GIL
hand-offs that stalled driver ticks by 0.3-1.4 s while the executor was busy. Hot threads append to a
bounded queue instead; an executor timer writes the lines out.
"""

from __future__ import annotations

from collections import deque

from rclpy.node import Node

DRAIN_PERIOD_S = 0.1  # queued lines reach the ROS log within this


class DeferredLog:
    def __init__(self, node: Node, period_s: float = DRAIN_PERIOD_S, maxlen: int = 1000):
        self._node = node
        self._queue: deque[tuple[str, str]] = deque(maxlen=maxlen)
        self._timer = node.create_timer(period_s, self.drain)

    def later(self, level: str, line: str) -> None:
        """Queue ``line`` at ``level`` ("error", "warning" or "info"); safe from any thread."""
        self._queue.append((level, line))

    def drain(self) -> None:
        log = self._node.get_logger()
        while self._queue:
            level, line = self._queue.popleft()
            # One call site per severity: rclpy refuses a severity change at a call site it has seen.
            if level == "error":
                log.error(line)
            elif level == "warning":
                log.warning(line)
            else:
                log.info(line)
