"""Perception node: publishes every camera of an embodiment on the message contract's topics.

A lifecycle node (``molmoact2_perception``). configure = build and open the cameras; activate = a
preflight on each camera (it delivers frames at the configured resolution that are neither blank nor
saturated), then start publishing; deactivate = stop publishing (cameras stay open); cleanup = close
them. With ``autostart`` (default) it configures and activates itself, so it runs as a plain process
(``molmoact2-ros bringup``) with no lifecycle manager; ``main`` exits with status 1 when that fails, so a
supervisor sees it at once.

Per camera ``<name>``:

- ``/cameras/<name>/image_raw`` sensor_msgs/Image, rgb8, ``frame_id = <name>_optical_frame``,
  ``stamp`` = capture time: the camera's own timestamp where it has one (RealSense hardware/global
  time, V4L2 buffer time), else the node clock read the moment ``read()`` returned, before conversion;
- ``/cameras/<name>/camera_info`` sensor_msgs/CameraInfo with the same header (the camera's
  calibration, or a nominal pinhole model: 70° horizontal field of view, centred principal point);
- ``/cameras/<name>/image_raw/compressed`` sensor_msgs/CompressedImage (JPEG), if ``publish_compressed``;
- ``/cameras/<name>/aligned_depth/image_raw`` (16UC1, millimetres, aligned to the colour image, same
  header), for RealSense cameras with ``realsense_depth``.

Image, JPEG and depth are only built when someone subscribes (the camera_info always goes out), so a
robot PC that feeds a remote policy JPEG does not also pay for raw frames nobody reads. The pixels are
copied once, into the message (core.images.fill_image).

The streaming and health code is shared with the simulation node (``backends/cameras/stream.py``,
``health.py``, ``stream_group.py``); this node is the shell that reads parameters and runs the lifecycle.
Each camera runs on its own thread, so a slow, frozen or dead camera never delays the others. Unpaced
sources (synthetic, video files, bags) are paced at the configured fps on the wall clock; devices
deliver at their own rate. Health, per camera:

- a failed read is counted and retried; after ``reopen_after_s`` of consecutive failures the camera is
  closed and reopened, and while it cannot be reopened (unplugged) it is retried with back-off;
- a frozen camera (identical pixels for ``freeze_timeout_s``: a hung driver re-delivering one buffer)
  stops being published, because every repeat would carry a fresh capture stamp and look live to a
  policy; it is reported and reopened, and publishing resumes with the first new frame;
- drops: gaps in the camera's own frame counter, or (without one) capture intervals longer than 1.5
  frame periods, and frames an unpaced source could not be given in time.

``/diagnostics`` (one status, ``diagnostics_period_s``): node ``state``, ``dds_profile``, and per camera
``<name>.state``, ``.rate_hz``, ``.frames_published``, ``.drops``, ``.read_failures``,
``.consecutive_read_failures``, ``.reopens``, ``.reconnects``, ``.frozen``, ``.frozen_frames``,
``.last_frame_age_s`` (since the last published frame), ``.capture_to_publish_ms`` (median, capture
stamp to Image published), ``.publish_ms``, ``.jpeg_ms``, ``.preflight``, ``.last_error``. Level ERROR
when configure or activate (preflight) failed, or a camera is disconnected, frozen, dead, or has
published nothing for longer than its ``max_age_s``; WARN while unconfigured or inactive, and when a
camera runs under 80% of its rate, fails reads, drops more than 5% of its frames, or its finite source
ended.

Parameters (read-only, declared with descriptions below): ``embodiment``, ``cameras``, ``source``,
``devices`` (``name=device`` overrides), ``fps``, ``width``, ``height``, ``publish_compressed``,
``jpeg_quality``, ``autostart``, ``opencv_fourcc``, ``loop``, ``realsense_depth``, ``bag_topic``,
``bag_restamp``, ``read_timeout_s``, ``reopen_after_s``, ``freeze_timeout_s``, ``preflight``,
``preflight_timeout_s``, ``diagnostics_period_s``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from molmoact2_ros.backends.cameras import CameraOptions, CameraSource, make_camera
from molmoact2_ros.backends.cameras.health import dds_profile_in_use
from molmoact2_ros.backends.cameras.stream import CameraStream, StreamSettings, depth_topic, optical_frame
from molmoact2_ros.backends.cameras.stream_group import CameraStreamGroup
from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, dds_environment
from molmoact2_ros.core.embodiment import CameraConfig, EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.nodes.diagnostics import DiagnosticsPublisher
from molmoact2_ros.nodes.param_check import check_parameter_overrides
from molmoact2_ros.nodes.qos import camera_topic
from molmoact2_ros.nodes.runtime_env import spin_node

NODE_NAME = "molmoact2_perception"
SOURCES = ("synthetic", "opencv", "realsense", "sim", "bag")
# Re-exported: callers and tests import these from here.
__all__ = ["NODE_NAME", "SOURCES", "CameraStream", "PerceptionNode", "dds_profile_in_use", "depth_topic", "main",
           "optical_frame"]


class PerceptionNode(LifecycleNode):
    """Publishes the embodiment's cameras (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        # Set first: a node whose parameters fail validation is still destroyed with its context.
        self.sources: dict[str, CameraSource] = {}
        self.cameras: CameraStreamGroup | None = None
        self.lifecycle_state = "unconfigured"
        self.transition_error = ""
        emb_ref = self._declare("embodiment", "so101",
                                "embodiment name (so101, yam_bimanual, ...) or path to a YAML file")
        self.embodiment: EmbodimentConfig = load_embodiment(emb_ref)
        all_names = list(self.embodiment.camera_names)
        names = self._declare("cameras", all_names,
                              f"cameras to publish; default all of the embodiment's ({', '.join(all_names)})",
                              ParameterType.PARAMETER_STRING_ARRAY)
        source = self._declare("source", "", f"camera source for all cameras, one of {SOURCES}; "
                               "'' = per camera, from the embodiment")
        devices = self._declare("devices", [""], "per-camera device overrides, 'name=device' (a RealSense "
                                "serial, /dev/videoN, URL, video file, bag); [''] = the embodiment's",
                                ParameterType.PARAMETER_STRING_ARRAY)
        fps = self._declare("fps", 0.0, "frame rate override for all cameras (Hz); 0 = the embodiment's",
                            ParameterType.PARAMETER_DOUBLE, dynamic_typing=True)
        width = self._declare("width", 0, "image width override (pixels); 0 = the embodiment's")
        height = self._declare("height", 0, "image height override (pixels); 0 = the embodiment's")
        self.publish_compressed = bool(self._declare(
            "publish_compressed", False, "also publish JPEG on /cameras/<name>/image_raw/compressed"))
        self.jpeg_quality = self._declare("jpeg_quality", 90, "JPEG quality 1..100 for the compressed topic")
        self.autostart = bool(self._declare("autostart", True,
                                            "configure + activate at startup (no lifecycle manager needed)"))
        fourcc = self._declare("opencv_fourcc", "", "opencv devices: V4L2 pixel format to request, e.g. MJPG; "
                               "'' = the driver's default")
        loop = self._declare("loop", True, "video files, bags and RealSense recordings: start again at the end")
        depth = self._declare("realsense_depth", False,
                              "realsense: also publish depth aligned to colour on /cameras/<name>/aligned_depth/"
                              "image_raw (16UC1, mm)")
        bag_topic = self._declare("bag_topic", "", "bag: image topic to replay, '{camera}' is replaced by the "
                                  "camera name; '' = /cameras/{camera}/image_raw (or its /compressed)")
        bag_restamp = self._declare("bag_restamp", True, "bag: stamp frames when replayed (true) or keep the "
                                    "recorded stamps (false, for replays on /clock with use_sim_time)")
        read_timeout_s = self._declare_range("read_timeout_s", 1.0, 0.01, 60.0,
                                             "devices: one read waits at most this long for a frame (s)")
        self.reopen_after_s = self._declare_range("reopen_after_s", 1.0, 0.05, 60.0,
                                                  "consecutive read failures for this long: reopen the camera (s)")
        self.freeze_timeout_s = self._declare_range(
            "freeze_timeout_s", 0.5, 0.0, 60.0,
            "identical frames for this long: the camera is frozen, its frames are withheld (s); 0 = off")
        self.thread_priority = int(self._declare_range(
            "camera_thread_priority", 10, 0, 99,
            "SCHED_FIFO priority of each camera's thread (1-99, below the driver's 50; 0 = normal scheduling): "
            "frames stay on time on a loaded host (benchmarks P2); where refused, a warning and normal scheduling"))
        self.preflight_enabled = bool(self._declare("preflight", True, "check every camera at activate"))
        self.preflight_timeout_s = self._declare_range(
            "preflight_timeout_s", 3.0, 0.1, 60.0,
            "activate fails if a camera gives no good frame (right size, not blank or saturated) in this time (s)")
        diagnostics_period_s = self._declare_range("diagnostics_period_s", 1.0, 0.01, 60.0,
                                                   "seconds between /diagnostics messages")
        check_parameter_overrides(self)  # an override of no declared parameter is a typo: refuse it

        overrides = self._device_overrides(list(devices))
        self.camera_configs = self._camera_configs(list(names), source, fps, width, height, overrides)
        for cfg in self.camera_configs:
            topic = bag_topic.replace("{camera}", cfg.name) if bag_topic else camera_topic(cfg.name)
            try:
                options = CameraOptions(fourcc=fourcc, loop=bool(loop), depth=bool(depth),
                                        read_timeout_s=read_timeout_s, bag_topic=topic, restamp=bool(bag_restamp))
            except ValueError as exc:
                raise ConfigError(f"node {NODE_NAME}: camera {cfg.name}: {exc}") from None
            # Builds the source object (ConfigError if its library is missing); devices open at configure.
            self.sources[cfg.name] = make_camera(cfg, options)
        self.cameras = CameraStreamGroup(self, self.sources, StreamSettings(
            publish_compressed=self.publish_compressed, jpeg_quality=int(self.jpeg_quality),
            reopen_after_s=self.reopen_after_s, freeze_timeout_s=self.freeze_timeout_s,
            thread_priority=self.thread_priority))
        self._diagnostics = DiagnosticsPublisher(self, self._snapshot, period_s=float(diagnostics_period_s),
                                                 hardware_id=self.embodiment.name)
        self._startup_failure: str | None = None
        if self.autostart:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
            if self.lifecycle_state != "active":
                self._startup_failure = self.transition_error or f"autostart ended {self.lifecycle_state}"

    @property
    def startup_failure(self) -> str | None:
        """Why the autostart (configure + activate at construction) failed; None if it did not run or
        succeeded. ``runtime_env.spin_node`` exits non-zero on it."""
        return self._startup_failure

    # ---- parameters ------------------------------------------------------------------------------
    def _declare(self, name: str, default: Any, description: str, ptype: int | None = None,
                 dynamic_typing: bool = False) -> Any:
        # Read-only: the cameras are opened once at startup; `ros2 param set` must fail, not be ignored.
        desc = ParameterDescriptor(description=description, read_only=True, dynamic_typing=dynamic_typing)
        if ptype is not None and not dynamic_typing:
            desc.type = ptype
        return self.declare_parameter(name, default, desc).value

    def _declare_range(self, name: str, default: float, low: float, high: float, description: str) -> float:
        desc = ParameterDescriptor(description=description, read_only=True, dynamic_typing=True,
                                   floating_point_range=[FloatingPointRange(from_value=low, to_value=high)])
        value = self.declare_parameter(name, default, desc).value
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ConfigError(f"node {NODE_NAME}: parameter {name}: {value!r} is not allowed; use {low:g}..{high:g}")
        return float(value)

    def _device_overrides(self, entries: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for entry in entries:
            if not entry:
                continue
            name, sep, device = entry.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"node {NODE_NAME}: parameter devices: {entry!r} is not 'camera=device'")
            out[name.strip()] = device.strip()
        return out

    def _camera_configs(self, names: list[str], source: str, fps: Any, width: Any, height: Any,
                        devices: dict[str, str]) -> list[CameraConfig]:
        emb = self.embodiment
        where = f"node {NODE_NAME}"
        unknown = [n for n in names if n not in emb.camera_names]
        if not names or unknown:
            raise ConfigError(f"{where}: parameter cameras: {unknown or names!r} not in embodiment "
                              f"{emb.name}'s cameras {emb.camera_names}")
        stray = sorted(set(devices) - set(names))
        if stray:
            raise ConfigError(f"{where}: parameter devices names {stray}, which are not among the cameras "
                              f"published here ({', '.join(names)})")
        if source and source not in SOURCES:
            raise ConfigError(f"{where}: parameter source: {source!r} is not allowed; "
                              f"use '' or one of {SOURCES}")
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 <= fps <= 1000:
            raise ConfigError(f"{where}: parameter fps: {fps!r} is not allowed; "
                              "use a number in 0..1000 (0 = the embodiment's)")
        for pname, value in (("width", width), ("height", height)):
            if not 0 <= value <= 8192:
                raise ConfigError(f"{where}: parameter {pname}: {value} is not allowed; "
                                  "use 0..8192 (0 = the embodiment's)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{where}: parameter jpeg_quality: {self.jpeg_quality} is not allowed; "
                              "use 1..100")
        overrides = {k: v for k, v in (("source", source), ("fps", float(fps)), ("width", width),
                                       ("height", height)) if v}
        by_name = {c.name: c for c in emb.cameras}
        # Re-validate through the schema so an override gets the same checks as the YAML.
        try:
            return [CameraConfig.model_validate({**by_name[n].model_dump(), **overrides,
                                                 **({"device": devices[n]} if n in devices else {})})
                    for n in names]
        except ValidationError as exc:
            raise ConfigError(f"{where}: camera overrides {overrides} are not valid: "
                              f"{exc.errors()[0]['msg']}") from None

    # ---- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        assert self.cameras is not None
        problem = self.cameras.open()
        if problem:
            self.transition_error = f"configure failed: {problem}"
            log.error(self.transition_error)
            return TransitionCallbackReturn.FAILURE
        self.transition_error = ""
        self.lifecycle_state = "inactive"
        log.info(f"configured {len(self.streams)} camera(s) of {self.embodiment.name}: {self.cameras.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        assert self.cameras is not None
        if self.preflight_enabled:
            problem = self.cameras.preflight(self.preflight_timeout_s)
            if problem:
                self.transition_error = f"preflight failed: {problem}"
                log.error(f"activate refused, {self.transition_error}")
                return TransitionCallbackReturn.FAILURE
        self.cameras.start()
        self.transition_error = ""
        self.lifecycle_state = "active"
        log.info(f"active: publishing {', '.join(camera_topic(n) for n in self.streams)}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_cameras()
        self.lifecycle_state = "inactive"
        self.get_logger().info("inactive: cameras open, nothing published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}: stopping and closing the cameras")
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self.cameras is not None:
            self.cameras.release()

    # ---- diagnostics -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[int, str, Mapping[str, Any]]:
        assert self.cameras is not None
        level, message, values = self.cameras.snapshot(self.lifecycle_state == "active", self.lifecycle_state,
                                                        self.transition_error)
        return level, message, {"embodiment": self.embodiment.name, **values}

    # ---- access and shutdown ---------------------------------------------------------------------
    def source(self, camera: str) -> CameraSource:
        """The CameraSource behind ``camera`` (tests inject faults through it)."""
        return self.sources[camera]

    @property
    def streams(self) -> dict[str, CameraStream]:
        """The running streams by camera name (empty until configured)."""
        return self.cameras.streams if self.cameras is not None else {}

    def stop_cameras(self) -> None:
        """Stop every camera thread (the sources stay open). Idempotent."""
        if self.cameras is not None:
            self.cameras.stop()

    def release(self) -> None:
        """Stop the camera threads and close the cameras (``spin_node`` calls it at exit). Idempotent."""
        self._release()

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script ``perception_node``: spin until SIGINT/SIGTERM, then stop the cameras cleanly. A bad
    parameter, a missing camera library or a camera that does not open exits with status 1 and the reason
    (``runtime_env.spin_node``)."""
    # Before rclpy.init creates the DDS participant: without the profile, frames over ~256 KiB are lost
    # between processes (see config/dds/). An explicit Fast DDS choice in the environment wins.
    for key, value in dds_environment(DEFAULT_DDS_PROFILE).items():
        os.environ.setdefault(key, value)
    spin_node(PerceptionNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
