"""A node's set of camera streams and their lifecycle: open, preflight, publish, stop, close.

The perception node (real cameras, synthetic frames, bags) and the simulation node (rendered frames)
both hold one :class:`CameraStreamGroup`, so opening, the preflight (every camera delivers a frame of
the configured size that is neither blank nor saturated), the worker threads and the diagnostics are
the same code whatever produces the frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rclpy.node import Node

from molmoact2_ros.backends.cameras.base import CameraSource
from molmoact2_ros.backends.cameras.health import (
    camera_health,
    dds_profile_in_use,
    inactive_values,
    transport_warning,
)
from molmoact2_ros.backends.cameras.stream import CameraStream, StreamSettings
from molmoact2_ros.nodes.diagnostics import ERROR, WARN


class CameraStreamGroup:
    """The streams of ``sources`` (name -> not yet opened source), published by ``node``."""

    def __init__(self, node: Node, sources: Mapping[str, CameraSource], settings: StreamSettings):
        self.node = node
        self.sources: dict[str, CameraSource] = dict(sources)
        self.settings = settings
        self.streams: dict[str, CameraStream] = {}

    @property
    def configs(self) -> list:
        return [s.config for s in self.sources.values()]

    def open(self) -> str | None:
        """Open every source and create its stream; the error text (and nothing left open) if one fails."""
        opened: list[CameraSource] = []
        for name, source in self.sources.items():
            try:
                source.open()
            except Exception as exc:  # CameraOpenError, or whatever a camera library raises
                for s in opened:
                    s.close()
                return f"camera {name}: {exc}"
            opened.append(source)
        self.streams = {name: CameraStream(self.node, source, self.settings) for name, source in self.sources.items()}
        warning = transport_warning(self.configs)
        if warning:
            self.node.get_logger().warning(warning)
        return None

    def preflight(self, timeout_s: float) -> str | None:
        """Check every camera (see ``CameraStream.run_preflight``); the problems joined, or None if all passed."""
        problems = []
        for name, stream in self.streams.items():
            problem = stream.run_preflight(timeout_s)
            stream.preflight = "passed" if problem is None else f"failed: {problem}"
            if problem is not None:
                problems.append(f"{name}: {problem}")
        return "; ".join(problems) or None

    def start(self) -> None:
        for stream in self.streams.values():
            stream.start()

    def stop(self) -> None:
        """Stop every camera thread (the sources stay open). Idempotent."""
        self.request_stop()  # all at once, so a blocked read of one camera does not delay the others' stop
        for stream in self.streams.values():
            stream.stop()

    def request_stop(self) -> None:
        """Ask every camera thread to stop, without waiting (a source closed next then wakes its reader)."""
        for stream in self.streams.values():
            stream.request_stop()

    def release(self) -> None:
        """Stop the threads, destroy the publishers, close the sources. Idempotent."""
        self.stop()
        for stream in self.streams.values():
            stream.destroy()
        self.streams = {}
        for source in self.sources.values():
            source.close()

    def describe(self) -> str:
        """One line for the startup log: each camera's source and format, and the DDS profile."""
        return "; ".join(f"{c.name} {c.source}{' ' + repr(c.device) if c.device else ''} {c.width}x{c.height}"
                         f"@{c.fps:g}" for c in self.configs) + \
            (" (+ JPEG)" if self.settings.publish_compressed else "") + f"; DDS profile: {dds_profile_in_use()}"

    def snapshot(self, active: bool, lifecycle_state: str, transition_error: str = "") -> tuple[int, str, dict]:
        """(level, message, values) for /diagnostics: camera health while active, else why not publishing."""
        values: dict[str, Any] = {"cameras": ",".join(self.sources), "state": lifecycle_state,
                                  "dds_profile": dds_profile_in_use()}
        if not active:
            values.update(inactive_values(self.configs, lifecycle_state))
            message = transition_error or f"{lifecycle_state}: not publishing"
            return (ERROR if transition_error else WARN), message, values
        level, problems, camera_values = camera_health(self.streams)
        values.update(camera_values)
        return level, "; ".join(problems) or f"{len(self.streams)} camera(s) publishing", values
