"""Bag source: camera frames from a rosbag2 (sqlite3 or MCAP) through the ``rosbags`` package, no rclpy.

``device`` in the camera config: the bag (its directory, or the ``.mcap``/``.db3`` file). The topic is
``CameraOptions.bag_topic`` (the node passes ``/cameras/<name>/image_raw``); if the bag has no such
topic, its ``/compressed`` sibling is used. sensor_msgs/Image (rgb8, bgr8) and CompressedImage (JPEG,
PNG) both work and go through the same decode functions as live topics (core.images), so a policy sees
replayed frames exactly as it saw them live.

The node paces a bag like a video file (at the camera's fps, in recorded order) and loops at the end
unless ``CameraOptions.loop`` is off. Stamps: by default the frame is stamped when it is replayed (the
recording's stamps are from another day and would look stale to a policy); with
``CameraOptions.restamp`` off the recorded header stamp is kept, for replays driven by ``/clock`` with
``use_sim_time``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from molmoact2_ros.backends.cameras.base import (
    CameraEndOfStream,
    CameraOpenError,
    CameraOptions,
    CameraReadError,
    CameraSource,
    Frame,
)
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import ObservationError
from molmoact2_ros.core.images import image_from_compressed_fields, image_from_msg_fields, resize

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


class BagCamera(CameraSource):
    """Replays one image topic of a rosbag2 as a camera."""

    paced = False  # the node paces replay at the camera's fps

    def __init__(self, config: CameraConfig, options: CameraOptions | None = None):
        super().__init__(config, options)
        self.path = Path(config.device)
        self.topic = self.options.bag_topic or f"/cameras/{config.name}/image_raw"
        self.stamps_on_ros_clock = not self.options.restamp
        self._reader: Any = None
        self._connection: Any = None
        self._messages: Iterator[tuple[Any, int, bytes]] | None = None
        self._native: tuple[int, int] | None = None
        self.frames_read = 0

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    @property
    def native_resolution(self) -> tuple[int, int] | None:
        return self._native

    def open(self) -> None:
        if self._reader is not None:
            return
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if not self.config.device or not self.path.exists():
            raise CameraOpenError(f"camera {self.name!r}: bag {str(self.path)!r} not found; set the camera's "
                                  "device to a rosbag2 directory or .mcap/.db3 file")
        # A bare .db3/.mcap file is read through its directory (where metadata.yaml lives, if any).
        bag = self.path.parent if self.path.is_file() and (self.path.parent / "metadata.yaml").is_file() \
            else self.path
        try:
            reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED))
            reader.open()
        except Exception as exc:  # rosbags raises its own error types per storage plugin
            raise CameraOpenError(f"camera {self.name!r}: cannot read bag {str(bag)!r}: {exc}") from exc
        by_topic = {c.topic: c for c in reader.connections}
        conn = by_topic.get(self.topic) or by_topic.get(self.topic + "/compressed")
        if conn is None or conn.msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
            reader.close()
            images = sorted(t for t, c in by_topic.items() if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE))
            raise CameraOpenError(f"camera {self.name!r}: bag {str(bag)!r} has no image topic {self.topic!r} "
                                  f"(image topics in it: {', '.join(images) or 'none'}); set bag_topic")
        self._reader, self._connection = reader, conn
        self._messages = None

    def read(self) -> Frame:
        if self._reader is None:
            raise CameraReadError(f"camera {self.name!r} (bag) is not open: call open() first")
        item = self._next_message()
        if item is None and self.options.loop and self.frames_read > 0:
            self._messages = None  # start again
            item = self._next_message()
        if item is None:
            raise CameraEndOfStream(f"camera {self.name!r}: end of {self.topic} in bag {str(self.path)!r}")
        conn, _, raw = item
        msg = self._reader.deserialize(raw, conn.msgtype)
        what = f"bag {self.path.name} {conn.topic}"
        try:
            if conn.msgtype == IMAGE_TYPE:
                image = image_from_msg_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, what)
            else:
                image = image_from_compressed_fields(msg.format, msg.data, what)
        except ObservationError as exc:
            raise CameraReadError(f"camera {self.name!r}: {exc}") from exc
        self.frames_read += 1
        self._native = (image.shape[1], image.shape[0])
        stamp = None if self.options.restamp else msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        return Frame(resize(image, self.width, self.height), stamp, sequence=self.frames_read - 1)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        self._messages = None
        if reader is not None:
            reader.close()

    def _next_message(self) -> tuple[Any, int, bytes] | None:
        if self._messages is None:
            self._messages = iter(self._reader.messages(connections=[self._connection]))
        return next(self._messages, None)
