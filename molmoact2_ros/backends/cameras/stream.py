"""One camera's publishing stream: worker thread, pacing, stamping, health counters.

Shared by every publisher of camera frames (the perception node for real cameras, synthetic frames and
bags; the simulation node for rendered frames), so the policy receives frames exactly alike whatever
produced them. A :class:`CameraStream` is bound to an rclpy node (any node: it only creates publishers
and reads the node's clock and logger) and one :class:`~molmoact2_ros.backends.cameras.base.CameraSource`.

Per camera ``<name>``:

- ``/cameras/<name>/image_raw`` sensor_msgs/Image, rgb8, ``frame_id = <name>_optical_frame``,
  ``stamp`` = capture time: the source's own timestamp where it has one, else the node clock read the
  moment ``read()`` returned, before conversion;
- ``/cameras/<name>/camera_info`` sensor_msgs/CameraInfo with the same header (the camera's
  calibration, or a nominal pinhole model: 70 degree horizontal field of view, centred principal point);
- ``/cameras/<name>/image_raw/compressed`` sensor_msgs/CompressedImage (JPEG), if ``publish_compressed``;
- ``/cameras/<name>/aligned_depth/image_raw`` (16UC1, millimetres), for sources that deliver depth.

Image, JPEG and depth are only built when someone subscribes (the camera_info always goes out). Each
camera runs on its own thread, so a slow, frozen or dead camera never delays the others. Unpaced sources
(synthetic, video files, bags, simulation renders) are paced at the configured fps on the wall clock;
devices deliver at their own rate. Health: failed reads are counted and retried, and after
``reopen_after_s`` of them the camera is reopened (with back-off while it cannot be); a frozen camera
(identical pixels for ``freeze_timeout_s``) stops being published and is reopened; drops are counted
from the source's frame counter or from capture gaps. :mod:`~molmoact2_ros.backends.cameras.health`
turns the counters into diagnostics.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from molmoact2_ros.backends.cameras.base import CameraEndOfStream, CameraError, CameraSource, Frame
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import MolmoAct2RosError
from molmoact2_ros.core.images import (
    JPEG_FORMAT,
    encode_jpeg,
    fill_depth_image,
    fill_image,
    frame_exposure_problem,
    frame_signature,
    pinhole_intrinsics,
)
from molmoact2_ros.nodes.qos import CAMERA_QOS, camera_info_topic, camera_topic, compressed_topic
from molmoact2_ros.realtime import set_thread_fifo

RATE_WINDOW_S = 2.0  # published rate and drop share are measured over this trailing window
MAX_RECONNECT_BACKOFF_S = 5.0
MAX_FAILURE_BACKOFF_S = 0.5
JOIN_TIMEOUT_S = 3.0
GAP_FACTOR = 1.5  # a capture interval longer than this many periods means frames were dropped
ASPECT_TOLERANCE = 0.01  # native vs configured aspect ratio: beyond this, resizing would distort
# A source timestamp this far from the node clock is almost surely on another clock.
CLOCK_MISMATCH_WARN_S = 1.0


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


def depth_topic(camera: str) -> str:
    """Aligned depth, next to the colour topics (realsense-ros calls it aligned_depth_to_color)."""
    return f"/cameras/{camera}/aligned_depth/image_raw"


@dataclass(frozen=True)
class StreamSettings:
    """How every stream of one publisher behaves (node parameters, validated by the node)."""

    publish_compressed: bool = False  # also publish JPEG on /cameras/<name>/image_raw/compressed
    jpeg_quality: int = 90
    reopen_after_s: float = 1.0  # consecutive read failures for this long: reopen the camera
    freeze_timeout_s: float = 0.5  # identical frames for this long: frozen, withheld (0 = off)
    # SCHED_FIFO priority of each camera's worker thread (0 = normal scheduling): on a loaded robot PC a frame
    # otherwise waits for a core behind other software (benchmarks P2: the largest single part of the tail).
    thread_priority: int = 0


class CameraStream:
    """One camera: its source, publishers, worker thread and health counters."""

    def __init__(self, node: Node, source: CameraSource, settings: StreamSettings | None = None):
        self.node = node
        self.source = source
        self.settings = settings or StreamSettings()
        self.config: CameraConfig = source.config
        self.name = source.name
        self.period_s = 1.0 / self.config.fps
        self.image_pub = node.create_publisher(Image, camera_topic(self.name), CAMERA_QOS)
        self.info_pub = node.create_publisher(CameraInfo, camera_info_topic(self.name), CAMERA_QOS)
        self.compressed_pub = (node.create_publisher(CompressedImage, compressed_topic(self.name), CAMERA_QOS)
                               if self.settings.publish_compressed else None)
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
        self._last_signature: np.ndarray | None = None
        self._frozen_since: float | None = None
        self._frozen_reopen_at = 0.0
        self._last_sequence: int | None = None
        self._last_capture: float | None = None
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

    def request_stop(self) -> None:
        """Ask the worker to stop without waiting for it (``stop`` waits)."""
        self._stop.set()

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
        if self.settings.thread_priority > 0:
            refused = set_thread_fifo(self.settings.thread_priority, "frames on time on a loaded machine")
            if refused:
                log.warning(f"camera {self.name}: {refused}", once=True)
        clock = self.node.get_clock()
        next_due = time.monotonic()
        first_failure_at: float | None = None
        reopen_after_s = self.settings.reopen_after_s
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
                if self._stop.is_set():
                    return  # stopping: the source was closed under a blocked read
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
        timeout = self.settings.freeze_timeout_s
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
            comp.data.frombytes(encode_jpeg(image, self.settings.jpeg_quality))  # one copy, see core.images
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
            self._last_signature = None
            self._frozen_since = None
            self._frozen_reopen_at = 0.0
        self._last_sequence = None
        self._last_capture = None

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
