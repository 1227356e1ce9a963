"""Camera frames taken as CDR bytes on a thread of their own (issue 13: frames under load).

Why: in the policy node the camera subscriptions share one executor thread with joint states, the
instruction, lifecycle services and the diagnostics timer, at normal priority, and each frame is
deserialised by rmw and converted by rclpy into a fresh 900 KB Python array (640x480 rgb8) while the
GIL is held. On a loaded robot PC the frame then waits for a core behind other software (P2's tail) and
for the GIL behind inference. :class:`CameraFrameReceiver` gives the cameras

- a node and a SingleThreadedExecutor of their own, spun on a dedicated thread, so a frame never waits
  behind another callback and each wake-up rebuilds a wait set of the camera subscriptions only;
- ``raw=True`` subscriptions decoded by :func:`molmoact2_ros.core.images.image_from_cdr` (header and a
  zero-copy view on the pixels: no rmw deserialisation, no Python conversion, one buffer per frame);
- optionally SCHED_FIFO for that thread (``priority`` > 0), so a frame's wake-up preempts ordinary
  processes (a CPU hog, a browser, a compiler) instead of waiting for the scheduler to get round to it.

Frames arrive in ``on_frame(camera, frame, info)`` on the receiver's thread (``info``: rclpy's
MessageInfo dict, DDS sample times), undecodable ones in ``on_error(camera, error)``. Keep the callbacks
short: the next frame waits for them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from molmoact2_ros.core.errors import ObservationError
from molmoact2_ros.core.images import CdrImage, image_from_cdr
from molmoact2_ros.nodes.qos import CAMERA_QOS, camera_topic
from molmoact2_ros.realtime import MAX_PRIORITY, set_thread_fifo

FrameCallback = Callable[[str, CdrImage, dict[str, Any]], None]
ErrorCallback = Callable[[str, ObservationError], None]


class CameraFrameReceiver:
    """Raw camera subscriptions on a node and executor of their own, spun on a dedicated thread.

    ``cameras`` are camera names (topics from :func:`camera_topic`) or ``{name: topic}``. ``priority``
    > 0 asks SCHED_FIFO for the receiving thread; when refused the receiver runs at normal priority
    and :attr:`priority_error` says why. Call :meth:`close` to stop the thread and drop the node.
    """

    def __init__(self, cameras: Sequence[str] | dict[str, str], on_frame: FrameCallback,
                 on_error: ErrorCallback | None = None, *, node_name: str = "molmoact2_camera_receiver",
                 namespace: str | None = None, context: Context | None = None, priority: int = 0,
                 qos: QoSProfile = CAMERA_QOS):
        topics = dict(cameras) if isinstance(cameras, dict) else {c: camera_topic(c) for c in cameras}
        if not topics:
            raise ValueError("CameraFrameReceiver needs at least one camera")
        if priority < 0 or priority > MAX_PRIORITY:
            raise ValueError(f"priority must be 0 (normal scheduling) or 1-{MAX_PRIORITY}, got {priority}")
        self._on_frame = on_frame
        self._on_error = on_error
        self.priority = priority
        self.priority_error = ""
        self.frames = dict.fromkeys(topics, 0)
        self.errors = dict.fromkeys(topics, 0)
        # Not the process's global arguments: a launcher's `-r __node:=<name>` is meant for the owning node
        # and would give this one the same name.
        self._node = Node(node_name, namespace=namespace, context=context, use_global_arguments=False,
                          start_parameter_services=False)
        self._subs = [
            self._node.create_subscription(Image, topic, self._callback(cam, topic), qos, raw=True)
            for cam, topic in topics.items()
        ]
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self._node)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=f"{node_name}_spin", daemon=True)
        self._thread.start()
        self._started.wait()  # priority_error is known once the constructor returns

    @property
    def node(self) -> Node:
        return self._node

    def _callback(self, camera: str, topic: str) -> Callable[[bytes, dict[str, Any]], None]:
        def cb(data: bytes, info: dict[str, Any]) -> None:
            try:
                frame = image_from_cdr(data, what=topic)
            except ObservationError as exc:
                self.errors[camera] += 1
                if self._on_error is not None:
                    self._on_error(camera, exc)
                return
            self.frames[camera] += 1
            self._on_frame(camera, frame, info)
        return cb

    def _spin(self) -> None:
        if self.priority > 0:
            self.priority_error = set_thread_fifo(self.priority, "steady camera latency on a loaded machine")
        self._started.set()
        # ExternalShutdownException: the context was shut down under us, nothing left to receive.
        with contextlib.suppress(ExternalShutdownException):
            self._executor.spin()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the receiving thread and destroy the node. Idempotent."""
        if self._node is None:
            return
        self._executor.shutdown(timeout_sec=timeout_s)
        self._thread.join(timeout_s)
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._node.destroy_node()
        self._node = None  # type: ignore[assignment]
