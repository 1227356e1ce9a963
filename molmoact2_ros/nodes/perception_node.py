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
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from molmoact2_ros.backends.cameras import (
    CameraEndOfStream,
    CameraError,
    CameraOptions,
    CameraSource,
    Frame,
    make_camera,
)
from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, dds_environment
from molmoact2_ros.core.embodiment import CameraConfig, EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError
from molmoact2_ros.core.images import (
    JPEG_FORMAT,
    encode_jpeg,
    fill_depth_image,
    fill_image,
    frame_exposure_problem,
    frame_signature,
    pinhole_intrinsics,
)
from molmoact2_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from molmoact2_ros.nodes.qos import CAMERA_QOS, camera_info_topic, camera_topic, compressed_topic
from molmoact2_ros.nodes.runtime_env import spin_node

NODE_NAME = "molmoact2_perception"
SOURCES = ("synthetic", "opencv", "realsense", "sim", "bag")
RATE_WINDOW_S = 2.0  # published rate and drop share are measured over this trailing window
LOW_RATE_FRACTION = 0.8  # WARN below this fraction of the target fps
DROP_WARN_FRACTION = 0.05  # WARN when more than this share of the expected frames was dropped
STARTUP_GRACE_S = 2.0  # no rate warning before a camera has run this long
MAX_RECONNECT_BACKOFF_S = 5.0
MAX_FAILURE_BACKOFF_S = 0.5
JOIN_TIMEOUT_S = 3.0
GAP_FACTOR = 1.5  # a capture interval longer than this many periods means frames were dropped
ASPECT_TOLERANCE = 0.01  # native vs configured aspect ratio: beyond this, resizing would distort
# A source timestamp this far from the node clock is almost surely on another clock.
CLOCK_MISMATCH_WARN_S = 1.0
# Fast DDS's default shared-memory segment (what rmw_fastrtps uses under LOCALHOST) is 512 KiB; frames
# above about half of it are lost between processes without the shipped profile.
DEFAULT_SHM_SAFE_BYTES = 256 * 1024


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


def depth_topic(camera: str) -> str:
    """Aligned depth, next to the colour topics (realsense-ros calls it aligned_depth_to_color)."""
    return f"/cameras/{camera}/aligned_depth/image_raw"


def dds_profile_in_use(env: Mapping[str, str] | None = None) -> str:
    """What configures Fast DDS transports in this process, for diagnostics and the startup log."""
    env = os.environ if env is None else env
    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        if env.get(key):
            return os.path.basename(env[key])
    if env.get("FASTDDS_BUILTIN_TRANSPORTS"):
        return f"FASTDDS_BUILTIN_TRANSPORTS={env['FASTDDS_BUILTIN_TRANSPORTS']}"
    return "none (Fast DDS defaults)"


class CameraStream:
    """One camera: its source, publishers, worker thread and health counters."""

    def __init__(self, node: PerceptionNode, source: CameraSource):
        self.node = node
        self.source = source
        self.config: CameraConfig = source.config
        self.name = source.name
        self.period_s = 1.0 / self.config.fps
        self.image_pub = node.create_publisher(Image, camera_topic(self.name), CAMERA_QOS)
        self.info_pub = node.create_publisher(CameraInfo, camera_info_topic(self.name), CAMERA_QOS)
        self.compressed_pub = (node.create_publisher(CompressedImage, compressed_topic(self.name), CAMERA_QOS)
                               if node.publish_compressed else None)
        self.depth_pub = (node.create_publisher(Image, depth_topic(self.name), CAMERA_QOS)
                          if source.options.depth else None)
        self._info_fields: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._publish_times: deque[float] = deque()
        self._drop_times: deque[tuple[float, int]] = deque()
        self._publish_cost_s: deque[float] = deque(maxlen=100)
        self._jpeg_cost_s: deque[float] = deque(maxlen=100)
        self._capture_to_publish_s: deque[float] = deque(maxlen=100)
        self.started_at = time.monotonic()
        self.state = "configured"
        self.frames_published = 0
        self.last_publish_at: float | None = None
        self.read_failures = 0
        self.consecutive_failures = 0
        self.reopens = 0
        self.reconnects = 0
        self.drops = 0
        self.frozen_frames = 0
        self.frozen_events = 0
        self.last_error = ""
        self.preflight = "not run"
        self.dead = ""  # set when the worker stopped on an unexpected error in our own code
        self._warned_clock = False
        self._reset_frame_tracking()
        self._refresh_intrinsics()

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self.started_at = time.monotonic()
        with self._lock:
            self._publish_times.clear()
            self._drop_times.clear()
            self.state = "starting"
            self.dead = ""
        self._thread = threading.Thread(target=self._run, name=f"camera_{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                self.node.get_logger().warning(
                    f"camera {self.name}: read still blocked after {JOIN_TIMEOUT_S} s; leaving its thread")
        self._thread = None
        with self._lock:
            if self.state not in ("ended", "dead"):
                self.state = "stopped"

    def destroy(self) -> None:
        for pub in (self.image_pub, self.info_pub, self.compressed_pub, self.depth_pub):
            if pub is not None:
                self.node.destroy_publisher(pub)

    # ---- preflight -------------------------------------------------------------------------------
    def run_preflight(self, timeout_s: float) -> str | None:
        """Read frames until one passes the checks; the last reason it failed, or None if one passed.

        A camera's first frames can be dark or blown out while auto-exposure settles, so one good frame
        within ``timeout_s`` is enough; a wrong resolution fails at once.
        """
        w, h = self.config.width, self.config.height
        deadline = time.monotonic() + timeout_s
        problem = f"no frame within {timeout_s:g} s"
        warned_resize = False
        while time.monotonic() < deadline:
            try:
                frame = self.source.read()
            except CameraEndOfStream as exc:
                return f"{exc}"
            except Exception as exc:  # any failure of the camera is a preflight failure, with its text
                problem = f"read failed: {exc}"
                time.sleep(min(self.period_s, MAX_FAILURE_BACKOFF_S))
                continue
            shape = getattr(frame.image, "shape", None)
            if shape != (h, w, 3):
                return f"delivers frames of shape {shape}, configured {h}x{w}x3"
            native = self.source.native_resolution
            if native is not None and native != (w, h):
                nw, nh = native
                if abs(nw / nh - w / h) > ASPECT_TOLERANCE * (w / h):
                    return (f"delivers {nw}x{nh}, which has another aspect ratio than the configured {w}x{h} "
                            "(frames would be distorted); configure a resolution the camera offers")
                if not warned_resize:
                    warned_resize = True
                    self.node.get_logger().warning(
                        f"camera {self.name}: delivers {nw}x{nh}; resizing every frame to the configured {w}x{h}")
            problem = frame_exposure_problem(frame.image) or ""
            if not problem:
                self._refresh_intrinsics()
                return None
            if not self.source.paced:
                time.sleep(self.period_s)
        return problem

    # ---- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        log = self.node.get_logger()
        clock = self.node.get_clock()
        next_due = time.monotonic()
        first_failure_at: float | None = None
        reopen_after_s = self.node.reopen_after_s
        with self._lock:
            self.state = "ok"
        while not self._stop.is_set():
            if not self.source.paced:
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_due += self.period_s
                # Fell behind by more than a period (slow host, long failure): restart the schedule
                # instead of bursting frames to catch up; the frames not produced are drops.
                now_mono = time.monotonic()
                if next_due < now_mono - self.period_s:
                    self._count_drops(int((now_mono - next_due) / self.period_s), now_mono)
                    next_due = now_mono + self.period_s
            try:
                frame = self.source.read()
                grabbed = clock.now()  # stamp for sources without their own, before any conversion
                grabbed_wall = time.time()
            except CameraEndOfStream as exc:
                with self._lock:
                    self.state, self.last_error = "ended", str(exc)
                log.warning(f"camera {self.name}: {exc}; it publishes nothing more")
                return
            except Exception as exc:  # a camera library may raise anything when a device goes away
                now_mono = time.monotonic()
                first_failure_at = first_failure_at or now_mono
                with self._lock:
                    self.read_failures += 1
                    self.consecutive_failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CameraError) else str(exc)
                    if self.state == "ok":
                        self.state = "failing"
                if not isinstance(exc, CameraError):
                    log.error(f"camera {self.name}: unexpected error from its source:\n{traceback.format_exc()}",
                              throttle_duration_sec=10.0)
                else:
                    log.warning(f"camera {self.name}: {exc}", throttle_duration_sec=2.0)
                if now_mono - first_failure_at >= reopen_after_s:
                    first_failure_at = None
                    self._reconnect(f"failing for {reopen_after_s:g} s")
                    next_due = time.monotonic()
                elif self.source.paced:  # a failing device may return at once: don't spin
                    self._stop.wait(min(self.period_s, MAX_FAILURE_BACKOFF_S))
                continue
            first_failure_at = None
            if self._frozen_check(frame, reopen_after_s):
                continue
            try:
                self._publish(frame, grabbed, grabbed_wall)
            except Exception as exc:
                if self._stop.is_set() or not self.node.context.ok():
                    return  # shutting down: the publishers' context is gone, nothing left to do
                self._die(exc)
                return

    def _frozen_check(self, frame: Frame, reopen_after_s: float) -> bool:
        """Track repeats of identical pixels; True if this frame must be withheld (camera frozen)."""
        timeout = self.node.freeze_timeout_s
        if timeout <= 0:
            return False
        signature = frame_signature(frame.image)
        now = time.monotonic()
        if self._last_signature is None or not np.array_equal(signature, self._last_signature):
            self._last_signature = signature
            if self._frozen_since is not None:
                with self._lock:
                    was_frozen = self.state == "frozen"
                    if was_frozen:
                        self.state = "ok"
                if was_frozen:
                    self.node.get_logger().info(f"camera {self.name}: new frames again; publishing resumed")
            self._frozen_since = None
            return False
        if self._frozen_since is None:
            self._frozen_since = now
            self._frozen_reopen_at = now + timeout + reopen_after_s
        frozen_for = now - self._frozen_since
        if frozen_for < timeout:
            return False
        with self._lock:
            self.frozen_frames += 1
            if self.state != "frozen":
                self.state = "frozen"
                self.frozen_events += 1
                self.last_error = f"frozen: identical frames for {frozen_for:.1f} s"
                self.node.get_logger().error(
                    f"camera {self.name}: frozen (identical frames for {frozen_for:.1f} s); withholding its "
                    "frames so no policy mistakes them for live ones, and reopening it")
        if now >= self._frozen_reopen_at:
            self._frozen_reopen_at = now + reopen_after_s
            # Keep the frozen frame's signature: if the reopened camera still hands out the same
            # picture it stays withheld instead of getting another freeze_timeout_s of publishing.
            self._reconnect("frozen", keep_freeze_state=True)
        return True

    def _publish(self, frame: Frame, grabbed: Time, grabbed_wall: float) -> None:
        t0 = time.perf_counter()
        image = frame.image
        shape = (self.config.height, self.config.width, 3)
        if getattr(image, "shape", None) != shape:
            raise MolmoAct2RosError(
                f"camera {self.name}: source {type(self.source).__name__} returned a frame of shape "
                f"{getattr(image, 'shape', type(image).__name__)}, expected {shape}")
        stamp, capture_wall = self._stamp(frame, grabbed, grabbed_wall)
        self._track_drops(frame, capture_wall)
        img = Image()
        img.header.stamp = stamp
        img.header.frame_id = optical_frame(self.name)
        # No subscriber, no copy: DDS would drop the sample anyway (and a robot PC feeding a remote
        # policy JPEG saves ~1 ms of CPU per frame and camera).
        if self.image_pub.get_subscription_count() > 0:
            fill_image(img, image)
            self.image_pub.publish(img)
        published_wall = time.time()
        self.info_pub.publish(CameraInfo(header=img.header, **self._info_fields))
        if self.depth_pub is not None and frame.depth is not None and self.depth_pub.get_subscription_count() > 0:
            depth = Image(header=img.header)
            fill_depth_image(depth, frame.depth)
            self.depth_pub.publish(depth)
        jpeg_s = None
        if self.compressed_pub is not None and self.compressed_pub.get_subscription_count() > 0:
            t_jpeg = time.perf_counter()
            comp = CompressedImage(header=img.header, format=JPEG_FORMAT)
            comp.data.frombytes(encode_jpeg(image, self.node.jpeg_quality))  # one copy, see core.images
            self.compressed_pub.publish(comp)
            jpeg_s = time.perf_counter() - t_jpeg
        done = time.monotonic()
        with self._lock:
            self.frames_published += 1
            self.last_publish_at = done
            self.consecutive_failures = 0
            if self.state in ("failing", "starting", "reconnected"):
                self.state = "ok"
            self._publish_times.append(done)
            while self._publish_times and self._publish_times[0] < done - RATE_WINDOW_S:
                self._publish_times.popleft()
            self._publish_cost_s.append(time.perf_counter() - t0)
            self._capture_to_publish_s.append(published_wall - capture_wall)
            if jpeg_s is not None:
                self._jpeg_cost_s.append(jpeg_s)

    def _stamp(self, frame: Frame, grabbed: Time, grabbed_wall: float) -> tuple[Any, float]:
        """The header stamp (ROS clock) and the capture time on the wall clock."""
        if frame.capture_time_s is None:
            return grabbed.to_msg(), grabbed_wall
        if self.source.stamps_on_ros_clock:
            ns = round(frame.capture_time_s * 1e9)
            return Time(nanoseconds=ns, clock_type=grabbed.clock_type).to_msg(), grabbed_wall
        capture_wall = frame.capture_time_s
        # Wall clock -> ROS clock: the same instant (the two coincide unless use_sim_time).
        ns = grabbed.nanoseconds - round((grabbed_wall - capture_wall) * 1e9)
        skew = grabbed_wall - capture_wall
        if (skew > CLOCK_MISMATCH_WARN_S or skew < -CLOCK_MISMATCH_WARN_S) and not self._warned_clock:
            self._warned_clock = True
            self.node.get_logger().warning(
                f"camera {self.name}: source timestamp is {skew:+.2f} s from the host clock; is the source on "
                "another clock? Stamps are published as given.")
        return Time(nanoseconds=ns, clock_type=grabbed.clock_type).to_msg(), capture_wall

    def _track_drops(self, frame: Frame, capture_wall: float) -> None:
        dropped = 0
        if frame.sequence is not None and self._last_sequence is not None and frame.sequence > self._last_sequence:
            dropped = frame.sequence - self._last_sequence - 1
        elif frame.sequence is None and self.source.paced and self._last_capture is not None:
            gap = capture_wall - self._last_capture
            if gap > GAP_FACTOR * self.period_s:
                dropped = round(gap / self.period_s) - 1
        self._last_sequence = frame.sequence
        self._last_capture = capture_wall
        if dropped > 0:
            self._count_drops(dropped, time.monotonic())

    def _count_drops(self, count: int, now_mono: float) -> None:
        if count <= 0:
            return
        with self._lock:
            self.drops += count
            self._drop_times.append((now_mono, count))

    def _reconnect(self, why: str, keep_freeze_state: bool = False) -> None:
        """Close and reopen the camera until it opens again or the node stops (back-off up to 5 s)."""
        log = self.node.get_logger()
        log.warning(f"camera {self.name}: {why}; reopening it")
        backoff = MAX_FAILURE_BACKOFF_S
        while not self._stop.is_set():
            with self._lock:
                self.reopens += 1
            try:
                self.source.close()
                self.source.open()
            except Exception as exc:  # whatever the library raises, the camera is not back yet
                with self._lock:
                    self.state = "disconnected"
                    self.last_error = f"reopen failed: {exc}"
                log.error(f"camera {self.name}: reopen failed ({exc}); retrying in {backoff:g} s",
                          throttle_duration_sec=10.0)
                if self._stop.wait(backoff):
                    return
                backoff = min(2 * backoff, MAX_RECONNECT_BACKOFF_S)
                continue
            with self._lock:
                self.reconnects += 1
                self.consecutive_failures = 0
                if not keep_freeze_state:
                    self.state = "reconnected"
            self._reset_frame_tracking(keep_freeze_state)
            self._refresh_intrinsics()
            log.info(f"camera {self.name}: reopened")
            return

    def _reset_frame_tracking(self, keep_freeze_state: bool = False) -> None:
        if not keep_freeze_state:
            self._last_signature: np.ndarray | None = None
            self._frozen_since: float | None = None
            self._frozen_reopen_at = 0.0
        self._last_sequence: int | None = None
        self._last_capture: float | None = None

    def _refresh_intrinsics(self) -> None:
        intr = self.source.intrinsics() or pinhole_intrinsics(self.config.width, self.config.height)
        if (intr.width, intr.height) != (self.config.width, self.config.height):
            intr = pinhole_intrinsics(self.config.width, self.config.height)  # resized frames: nominal model
        self._info_fields = intr.camera_info_fields()

    def _die(self, exc: BaseException) -> None:
        with self._lock:
            self.dead = f"{type(exc).__name__}: {exc}"
            self.last_error = self.dead
            self.state = "dead"
        self.node.get_logger().error(
            f"camera {self.name}: stopped publishing after an unexpected error:\n{traceback.format_exc()}")

    # ---- diagnostics -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            times = [t for t in self._publish_times if t >= now - RATE_WINDOW_S]
            recent_drops = sum(n for t, n in self._drop_times if t >= now - RATE_WINDOW_S)
            while self._drop_times and self._drop_times[0][0] < now - RATE_WINDOW_S:
                self._drop_times.popleft()
            costs = list(self._publish_cost_s)
            jpeg = list(self._jpeg_cost_s)
            latency = list(self._capture_to_publish_s)
            last = self.last_publish_at
            out = {
                "state": self.state,
                "frames_published": self.frames_published,
                "drops": self.drops,
                "read_failures": self.read_failures,
                "consecutive_read_failures": self.consecutive_failures,
                "reopens": self.reopens,
                "reconnects": self.reconnects,
                "frozen": self.state == "frozen",
                "frozen_frames": self.frozen_frames,
                "frozen_events": self.frozen_events,
                "last_error": self.last_error,
                "preflight": self.preflight,
                "dead": self.dead,
            }
        span = min(RATE_WINDOW_S, now - self.started_at)
        out["rate_hz"] = len(times) / span if span > 0 else 0.0
        expected = span * self.config.fps
        out["recent_drop_fraction"] = recent_drops / expected if expected > 0 else 0.0
        out["last_frame_age_s"] = now - (self.started_at if last is None else last)
        out["publish_ms"] = 1e3 * float(np.mean(costs)) if costs else 0.0
        out["jpeg_ms"] = 1e3 * float(np.mean(jpeg)) if jpeg else 0.0
        out["capture_to_publish_ms"] = 1e3 * float(np.median(latency)) if latency else 0.0
        return out


class PerceptionNode(LifecycleNode):
    """Publishes the embodiment's cameras (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        # Set first: a node whose parameters fail validation is still destroyed with its context.
        self.sources: dict[str, CameraSource] = {}
        self.streams: dict[str, CameraStream] = {}
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
        self.preflight_enabled = bool(self._declare("preflight", True, "check every camera at activate"))
        self.preflight_timeout_s = self._declare_range(
            "preflight_timeout_s", 3.0, 0.1, 60.0,
            "activate fails if a camera gives no good frame (right size, not blank or saturated) in this time (s)")
        diagnostics_period_s = self._declare_range("diagnostics_period_s", 1.0, 0.01, 60.0,
                                                   "seconds between /diagnostics messages")

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
        opened: list[CameraSource] = []
        for name, source in self.sources.items():
            try:
                source.open()
            except Exception as exc:  # CameraOpenError, or whatever a camera library raises
                for s in opened:
                    s.close()
                self.transition_error = f"configure failed: camera {name}: {exc}"
                log.error(self.transition_error)
                return TransitionCallbackReturn.FAILURE
            opened.append(source)
        self.streams = {name: CameraStream(self, source) for name, source in self.sources.items()}
        self._warn_if_frames_exceed_default_transport()
        self.transition_error = ""
        self.lifecycle_state = "inactive"
        log.info(f"configured {len(self.streams)} camera(s) of {self.embodiment.name}: " + "; ".join(
            f"{c.name} {c.source}{' ' + repr(c.device) if c.device else ''} {c.width}x{c.height}@{c.fps:g}"
            for c in self.camera_configs) + (" (+ JPEG)" if self.publish_compressed else "")
            + f"; DDS profile: {dds_profile_in_use()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        if self.preflight_enabled:
            problems = []
            for name, stream in self.streams.items():
                problem = stream.run_preflight(self.preflight_timeout_s)
                stream.preflight = "passed" if problem is None else f"failed: {problem}"
                if problem is not None:
                    problems.append(f"{name}: {problem}")
            if problems:
                self.transition_error = "preflight failed: " + "; ".join(problems)
                log.error(f"activate refused, {self.transition_error}")
                return TransitionCallbackReturn.FAILURE
        for stream in self.streams.values():
            stream.start()
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
        self.stop_cameras()
        for stream in self.streams.values():
            stream.destroy()
        self.streams = {}
        for source in self.sources.values():
            source.close()

    def _warn_if_frames_exceed_default_transport(self) -> None:
        biggest = max(c.width * c.height * 3 for c in self.camera_configs)
        env = os.environ
        has_profile = bool(env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE"))
        # Under LOCALHOST rmw_fastrtps installs its own transports and FASTDDS_BUILTIN_TRANSPORTS is ignored.
        builtin_honoured = bool(env.get("FASTDDS_BUILTIN_TRANSPORTS")) and \
            env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST") not in ("", "LOCALHOST")
        if biggest > DEFAULT_SHM_SAFE_BYTES and not has_profile and not builtin_honoured:
            self.get_logger().warning(
                f"{biggest / 1024:.0f} KiB frames over Fast DDS's default 512 KiB shared-memory segment "
                f"({dds_profile_in_use()}): between processes most of them will be lost; set "
                "FASTDDS_DEFAULT_PROFILES_FILE to config/dds/fastdds_local_large_data.xml (the bringup does)")

    # ---- diagnostics -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[int, str, Mapping[str, Any]]:
        values: dict[str, Any] = {"embodiment": self.embodiment.name, "cameras": ",".join(self.sources),
                                  "state": self.lifecycle_state, "dds_profile": dds_profile_in_use()}
        if self.lifecycle_state != "active":
            for cfg in self.camera_configs:
                values.update({f"{cfg.name}.source": cfg.source, f"{cfg.name}.frames_published": 0,
                               f"{cfg.name}.state": self.lifecycle_state})
            message = self.transition_error or f"{self.lifecycle_state}: not publishing"
            return (ERROR if self.transition_error else WARN), message, values
        level, problems = OK, []
        now = time.monotonic()
        for name, stream in self.streams.items():
            s = stream.stats()
            cfg = stream.config
            values.update({
                f"{name}.state": s["state"],
                f"{name}.source": cfg.source,
                f"{name}.device": cfg.device,
                f"{name}.resolution": f"{cfg.width}x{cfg.height}",
                f"{name}.target_fps": cfg.fps,
                f"{name}.rate_hz": s["rate_hz"],
                f"{name}.frames_published": s["frames_published"],
                f"{name}.drops": s["drops"],
                f"{name}.read_failures": s["read_failures"],
                f"{name}.consecutive_read_failures": s["consecutive_read_failures"],
                f"{name}.reopens": s["reopens"],
                f"{name}.reconnects": s["reconnects"],
                f"{name}.frozen": s["frozen"],
                f"{name}.frozen_frames": s["frozen_frames"],
                f"{name}.last_frame_age_s": s["last_frame_age_s"],
                f"{name}.capture_to_publish_ms": s["capture_to_publish_ms"],
                f"{name}.publish_ms": s["publish_ms"],
                f"{name}.jpeg_ms": s["jpeg_ms"],
                f"{name}.preflight": s["preflight"],
                f"{name}.last_error": s["last_error"],
            })
            state = s["state"]
            if s["dead"]:
                level = ERROR
                problems.append(f"{name} stopped: {s['dead']}")
            elif state == "disconnected":
                level = ERROR
                problems.append(f"{name} disconnected, retrying: {s['last_error']}")
            elif state == "frozen":
                level = ERROR
                problems.append(f"{name} frozen, frames withheld: {s['last_error']}")
            elif state == "ended":
                level = max(level, WARN)
                problems.append(f"{name}: {s['last_error']}")
            elif s["last_frame_age_s"] > max(cfg.max_age_s, 2 * stream.period_s):
                level = ERROR
                problems.append(f"{name}: no frame for {s['last_frame_age_s']:.1f} s "
                                f"(max_age_s {cfg.max_age_s:g})")
            elif s["consecutive_read_failures"] > 0 or (
                    now - stream.started_at > STARTUP_GRACE_S and s["rate_hz"] < LOW_RATE_FRACTION * cfg.fps):
                level = max(level, WARN)
                problems.append(f"{name}: {s['rate_hz']:.1f} of {cfg.fps:g} Hz, "
                                f"{s['consecutive_read_failures']} failed reads in a row")
            elif s["recent_drop_fraction"] > DROP_WARN_FRACTION:
                level = max(level, WARN)
                problems.append(f"{name}: dropping {100 * s['recent_drop_fraction']:.0f}% of frames")
        return level, "; ".join(problems) or f"{len(self.streams)} camera(s) publishing", values

    # ---- access and shutdown ---------------------------------------------------------------------
    def source(self, camera: str) -> CameraSource:
        """The CameraSource behind ``camera`` (tests inject faults through it)."""
        return self.sources[camera]

    def stop_cameras(self) -> None:
        """Stop every camera thread (the sources stay open). Idempotent."""
        for stream in self.streams.values():
            stream.stop()

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
