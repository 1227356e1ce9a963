"""Perception node: publishes every camera of an embodiment on the message contract's topics.

Node ``molmoact2_perception``. Per camera ``<name>``:

- ``/cameras/<name>/image_raw`` sensor_msgs/Image, rgb8, ``frame_id = <name>_optical_frame``,
  ``stamp`` = capture time: the source's own timestamp if it gives one, else the node clock read the
  moment ``read()`` returned, before any conversion or encoding;
- ``/cameras/<name>/camera_info`` sensor_msgs/CameraInfo with the same header (the source's
  calibration, or a nominal pinhole model: 70° horizontal field of view, centred principal point);
- ``/cameras/<name>/image_raw/compressed`` sensor_msgs/CompressedImage (JPEG), if ``publish_compressed``.

Each camera runs on its own thread, so a slow or blocked camera never delays the others. Unpaced
sources (synthetic, video files) are paced at the configured fps on the wall clock (deadline-based, no
drift, no bursts after a stall); paced sources (devices) deliver at their own rate. A failed read is
counted, logged (throttled) and retried; after one second of consecutive failures the camera is
reopened. An unexpected error stops that camera's thread and shows as ERROR on ``/diagnostics``.

``/diagnostics`` (one status, 1 Hz) per camera: ``<name>.rate_hz``, ``<name>.frames_published``,
``<name>.read_failures``, ``<name>.last_frame_age_s``, ... (see ``_snapshot``). Level ERROR when a
camera's thread died or it published nothing for longer than its ``max_age_s``; WARN when its rate is
under 80% of the target or it is failing reads.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping
from typing import Any

import rclpy
from pydantic import ValidationError
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from molmoact2_ros.backends.cameras import CameraReadError, CameraSource, make_camera
from molmoact2_ros.core.embodiment import CameraConfig, EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError
from molmoact2_ros.core.images import JPEG_FORMAT, encode_jpeg, fill_image, pinhole_intrinsics
from molmoact2_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from molmoact2_ros.nodes.qos import CAMERA_QOS, camera_info_topic, camera_topic, compressed_topic
from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults

NODE_NAME = "molmoact2_perception"
SOURCES = ("synthetic", "opencv", "realsense", "sim", "bag")
RATE_WINDOW_S = 2.0  # published rate is measured over this trailing window
LOW_RATE_FRACTION = 0.8  # WARN below this fraction of the target fps
STARTUP_GRACE_S = 2.0  # no rate warning before a camera has run this long
REOPEN_AFTER_S = 1.0  # consecutive read failures for this long: close and reopen the camera
MAX_FAILURE_BACKOFF_S = 0.5
JOIN_TIMEOUT_S = 2.0
# A source timestamp this far from the node clock is almost surely on another clock (e.g. monotonic).
CLOCK_MISMATCH_WARN_S = 1.0


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


class CameraStream:
    """One camera: its source, publishers, worker thread and counters."""

    def __init__(self, node: Node, source: CameraSource, publish_compressed: bool, jpeg_quality: int):
        self.node = node
        self.source = source
        self.config: CameraConfig = source.config
        self.name = source.name
        self.jpeg_quality = jpeg_quality
        self.period_s = 1.0 / self.config.fps
        self.image_pub = node.create_publisher(Image, camera_topic(self.name), CAMERA_QOS)
        self.info_pub = node.create_publisher(CameraInfo, camera_info_topic(self.name), CAMERA_QOS)
        self.compressed_pub = (node.create_publisher(CompressedImage, compressed_topic(self.name), CAMERA_QOS)
                               if publish_compressed else None)
        intr = source.intrinsics() or pinhole_intrinsics(self.config.width, self.config.height)
        self._info_fields = intr.camera_info_fields()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera_{self.name}", daemon=True)
        self._lock = threading.Lock()
        self._publish_times: deque[float] = deque()
        self._publish_cost_s: deque[float] = deque(maxlen=100)
        self.started_at = time.monotonic()
        self.frames_published = 0
        self.last_publish_at: float | None = None
        self.read_failures = 0
        self.consecutive_failures = 0
        self.reopens = 0
        self.last_error = ""
        self.dead = ""  # set when the worker stopped on an unexpected error
        self._warned_clock = False

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                self.node.get_logger().warning(
                    f"camera {self.name}: read still blocked after {JOIN_TIMEOUT_S} s; closing it anyway")
        self.source.close()

    # ---- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        log = self.node.get_logger()
        clock = self.node.get_clock()
        next_due = time.monotonic()
        first_failure_at: float | None = None
        while not self._stop.is_set():
            if not self.source.paced:
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_due += self.period_s
                # Fell behind by more than a period (slow host, long failure): restart the schedule
                # instead of bursting frames to catch up.
                now_mono = time.monotonic()
                if next_due < now_mono - self.period_s:
                    next_due = now_mono + self.period_s
            try:
                frame, capture_time_s = self.source.read()
                grabbed = clock.now()  # capture time for sources without their own, before conversion
            except CameraReadError as exc:
                now_mono = time.monotonic()
                first_failure_at = first_failure_at or now_mono
                with self._lock:
                    self.read_failures += 1
                    self.consecutive_failures += 1
                    self.last_error = str(exc)
                log.warning(f"camera {self.name}: {exc}", throttle_duration_sec=2.0)
                if now_mono - first_failure_at >= REOPEN_AFTER_S:
                    first_failure_at = now_mono
                    self._reopen()
                if self.source.paced:  # a failing device may return at once: don't spin
                    self._stop.wait(min(self.period_s, MAX_FAILURE_BACKOFF_S))
                continue
            except Exception as exc:
                self._die(exc)
                return
            first_failure_at = None
            try:
                self._publish(frame, capture_time_s, grabbed)
            except Exception as exc:
                if self._stop.is_set() or not self.node.context.ok():
                    return  # shutting down: the publishers' context is gone, nothing left to do
                self._die(exc)
                return

    def _publish(self, frame: Any, capture_time_s: float | None, grabbed: Time) -> None:
        t0 = time.perf_counter()
        shape = (self.config.height, self.config.width, 3)
        if getattr(frame, "shape", None) != shape:
            raise MolmoAct2RosError(
                f"camera {self.name}: source {type(self.source).__name__} returned a frame of shape "
                f"{getattr(frame, 'shape', type(frame).__name__)}, expected {shape}")
        if capture_time_s is None:
            stamp = grabbed.to_msg()
        else:
            stamp = Time(nanoseconds=round(capture_time_s * 1e9), clock_type=grabbed.clock_type).to_msg()
            skew = abs(capture_time_s - grabbed.nanoseconds * 1e-9)
            if skew > CLOCK_MISMATCH_WARN_S and not self._warned_clock:
                self._warned_clock = True
                self.node.get_logger().warning(
                    f"camera {self.name}: source timestamp is {skew:.1f} s away from the node clock; "
                    "is the source on another clock? Stamps are published as given.")
        img = Image()
        img.header.stamp = stamp
        img.header.frame_id = optical_frame(self.name)
        fill_image(img, frame)
        self.image_pub.publish(img)
        self.info_pub.publish(CameraInfo(header=img.header, **self._info_fields))
        if self.compressed_pub is not None:
            comp = CompressedImage(header=img.header, format=JPEG_FORMAT)
            comp.data.frombytes(encode_jpeg(frame, self.jpeg_quality))  # one copy, see core.images
            self.compressed_pub.publish(comp)
        done = time.monotonic()
        with self._lock:
            self.frames_published += 1
            self.last_publish_at = done
            self.consecutive_failures = 0
            self._publish_times.append(done)
            while self._publish_times and self._publish_times[0] < done - RATE_WINDOW_S:
                self._publish_times.popleft()
            self._publish_cost_s.append(time.perf_counter() - t0)

    def _reopen(self) -> None:
        log = self.node.get_logger()
        log.warning(f"camera {self.name}: failing for {REOPEN_AFTER_S:g} s, reopening it")
        self.source.close()
        try:
            self.source.open()
        except MolmoAct2RosError as exc:
            with self._lock:
                self.last_error = f"reopen failed: {exc}"
            log.error(f"camera {self.name}: reopen failed: {exc}")
        with self._lock:
            self.reopens += 1

    def _die(self, exc: BaseException) -> None:
        with self._lock:
            self.dead = f"{type(exc).__name__}: {exc}"
            self.last_error = self.dead
        self.node.get_logger().error(
            f"camera {self.name}: stopped publishing after an unexpected error:\n{traceback.format_exc()}")

    # ---- diagnostics -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            times = [t for t in self._publish_times if t >= now - RATE_WINDOW_S]
            costs = list(self._publish_cost_s)
            last = self.last_publish_at
            out = {
                "frames_published": self.frames_published,
                "read_failures": self.read_failures,
                "consecutive_read_failures": self.consecutive_failures,
                "reopens": self.reopens,
                "last_error": self.last_error,
                "dead": self.dead,
            }
        span = min(RATE_WINDOW_S, now - self.started_at)
        out["rate_hz"] = len(times) / span if span > 0 else 0.0
        out["last_frame_age_s"] = now - (self.started_at if last is None else last)
        out["publish_ms"] = 1e3 * sum(costs) / len(costs) if costs else 0.0
        return out


class PerceptionNode(Node):
    """Publishes the embodiment's cameras (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        emb_ref = self._declare("embodiment", "so101",
                                "embodiment name (so101, yam_bimanual, ...) or path to a YAML file")
        self.embodiment: EmbodimentConfig = load_embodiment(emb_ref)
        all_names = list(self.embodiment.camera_names)
        names = self._declare("cameras", all_names,
                              f"cameras to publish; default all of the embodiment's ({', '.join(all_names)})",
                              ParameterType.PARAMETER_STRING_ARRAY)
        source = self._declare("source", "", f"camera source for all cameras, one of {SOURCES}; "
                               "'' = per camera, from the embodiment")
        fps = self._declare("fps", 0.0, "frame rate override for all cameras (Hz); 0 = the embodiment's",
                            ParameterType.PARAMETER_DOUBLE, dynamic_typing=True)
        width = self._declare("width", 0, "image width override (pixels); 0 = the embodiment's")
        height = self._declare("height", 0, "image height override (pixels); 0 = the embodiment's")
        publish_compressed = self._declare("publish_compressed", False,
                                           "also publish JPEG on /cameras/<name>/image_raw/compressed")
        self.jpeg_quality = self._declare("jpeg_quality", 90, "JPEG quality 1..100 for the compressed topic")
        diagnostics_period_s = self._declare("diagnostics_period_s", 1.0,
                                             "seconds between /diagnostics messages", dynamic_typing=True)
        if isinstance(diagnostics_period_s, bool) or not isinstance(diagnostics_period_s, int | float) \
                or not 0.01 <= diagnostics_period_s <= 60:
            raise ConfigError(f"node {NODE_NAME}: parameter diagnostics_period_s: {diagnostics_period_s!r} "
                              "is not allowed; use 0.01..60 s")

        self.camera_configs = self._camera_configs(list(names), source, fps, width, height)
        self.streams: dict[str, CameraStream] = {}
        try:
            for cfg in self.camera_configs:
                cam = make_camera(cfg)
                cam.open()
                self.streams[cfg.name] = CameraStream(self, cam, bool(publish_compressed),
                                                      int(self.jpeg_quality))
        except BaseException:
            for stream in self.streams.values():
                stream.source.close()
            raise
        self._diagnostics = DiagnosticsPublisher(self, self._snapshot, period_s=float(diagnostics_period_s),
                                                 hardware_id=self.embodiment.name)
        for stream in self.streams.values():
            stream.start()
        self.get_logger().info(
            f"publishing {len(self.streams)} camera(s) of {self.embodiment.name}: " + "; ".join(
                f"{c.name} {c.source} {c.width}x{c.height}@{c.fps:g}" for c in self.camera_configs)
            + (" (+ JPEG)" if publish_compressed else ""))

    # ---- parameters ------------------------------------------------------------------------------
    def _declare(self, name: str, default: Any, description: str, ptype: int | None = None,
                 dynamic_typing: bool = False) -> Any:
        # Read-only: the cameras are opened once at startup; `ros2 param set` must fail, not be ignored.
        desc = ParameterDescriptor(description=description, read_only=True, dynamic_typing=dynamic_typing)
        if ptype is not None and not dynamic_typing:
            desc.type = ptype
        return self.declare_parameter(name, default, desc).value

    def _camera_configs(self, names: list[str], source: str, fps: Any, width: Any,
                        height: Any) -> list[CameraConfig]:
        emb = self.embodiment
        where = f"node {NODE_NAME}"
        unknown = [n for n in names if n not in emb.camera_names]
        if not names or unknown:
            raise ConfigError(f"{where}: parameter cameras: {unknown or names!r} not in embodiment "
                              f"{emb.name}'s cameras {emb.camera_names}")
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
            return [CameraConfig.model_validate({**by_name[n].model_dump(), **overrides}) for n in names]
        except ValidationError as exc:
            raise ConfigError(f"{where}: camera overrides {overrides} are not valid: "
                              f"{exc.errors()[0]['msg']}") from None

    # ---- diagnostics -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[int, str, Mapping[str, Any]]:
        level, problems = OK, []
        values: dict[str, Any] = {"embodiment": self.embodiment.name, "cameras": ",".join(self.streams)}
        now = time.monotonic()
        for name, stream in self.streams.items():
            s = stream.stats()
            cfg = stream.config
            values.update({
                f"{name}.source": cfg.source,
                f"{name}.resolution": f"{cfg.width}x{cfg.height}",
                f"{name}.target_fps": cfg.fps,
                f"{name}.rate_hz": s["rate_hz"],
                f"{name}.frames_published": s["frames_published"],
                f"{name}.read_failures": s["read_failures"],
                f"{name}.consecutive_read_failures": s["consecutive_read_failures"],
                f"{name}.reopens": s["reopens"],
                f"{name}.last_frame_age_s": s["last_frame_age_s"],
                f"{name}.publish_ms": s["publish_ms"],
                f"{name}.last_error": s["last_error"],
            })
            if s["dead"]:
                level = ERROR
                problems.append(f"{name} stopped: {s['dead']}")
            elif s["last_frame_age_s"] > max(cfg.max_age_s, 2 * stream.period_s):
                level = ERROR
                problems.append(f"{name}: no frame for {s['last_frame_age_s']:.1f} s "
                                f"(max_age_s {cfg.max_age_s:g})")
            elif s["consecutive_read_failures"] > 0 or (
                    now - stream.started_at > STARTUP_GRACE_S and s["rate_hz"] < LOW_RATE_FRACTION * cfg.fps):
                level = max(level, WARN)
                problems.append(f"{name}: {s['rate_hz']:.1f} of {cfg.fps:g} Hz, "
                                f"{s['consecutive_read_failures']} failed reads in a row")
        return level, "; ".join(problems) or f"{len(self.streams)} camera(s) publishing", values

    # ---- access and shutdown ---------------------------------------------------------------------
    def source(self, camera: str) -> CameraSource:
        """The CameraSource behind ``camera`` (tests inject faults through it)."""
        return self.streams[camera].source

    def stop_cameras(self) -> None:
        """Stop every camera thread and close the sources. Idempotent."""
        for stream in self.streams.values():
            stream.stop()

    def destroy_node(self) -> None:
        self.stop_cameras()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``perception_node``: spin until SIGINT/SIGTERM, then stop the cameras cleanly."""
    apply_local_ros_defaults()
    # rclpy.init installs SIGINT and SIGTERM handlers that shut the context down; spin then raises
    # ExternalShutdownException and we fall through to the cleanup below.
    with rclpy.init(args=args):
        try:
            node = PerceptionNode()
        except (MolmoAct2RosError, ParameterException) as exc:  # bad config, a camera that won't open
            rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
