"""Intel RealSense source through pyrealsense2: colour (rgb8) and optional depth aligned to it.

``device`` in the camera config: a serial number (``"123456789012"``; several cameras on one robot are
told apart this way), ``""`` for the only connected camera, or a recording (``.db3``, what
librealsense ≥ 2.56 records; ``rs-convert``/``context.convert_bag_to_db3`` turns old ``.bag`` files into
it) replayed in real time, looping unless ``CameraOptions.loop`` is off.

Timestamps: librealsense stamps each frame in one of three domains. ``global_time`` (the default on
D400 cameras with metadata) is the camera's hardware clock already mapped onto the host clock, and
``system_time`` is the host clock at arrival; both are milliseconds since the epoch, i.e. the wall
clock, and are used as they are. ``hardware_clock`` (no global time) and recordings (their clock is
from the day they were recorded) go through :class:`ClockMapper`, which keeps the hardware spacing
between frames and puts them at the time they were actually captured here. ``Frame.sequence`` is the
camera's frame counter, so frames lost on the USB bus show up as drops.

Unplugging shows up as reads timing out (``CameraOptions.read_timeout_s``); the node then closes and
reopens the source, and ``open`` raises CameraOpenError ("not connected") until the serial number is
enumerated again. Colour frames are handed out as a zero-copy view on librealsense's buffer (the
array keeps the frame alive), so the node's message fill is the only copy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.backends.cameras.base import (
    CameraEndOfStream,
    CameraOpenError,
    CameraOptions,
    CameraReadError,
    CameraSource,
    ClockMapper,
    Frame,
)
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.images import PinholeIntrinsics, resize

try:
    import pyrealsense2 as rs
except ImportError:  # pragma: no cover - the registry reports this before constructing the source
    rs = None

RECORDING_SUFFIXES = (".db3", ".bag")
# A global/system timestamp further than this from the host clock is not on it (a camera without
# metadata support reports garbage there): map it like a hardware clock instead.
MAX_WALL_CLOCK_SKEW_S = 5.0


def is_recording(device: str) -> bool:
    return Path(device).suffix.lower() in RECORDING_SUFFIXES


def intrinsics_from_rs(intr: Any) -> PinholeIntrinsics:
    """pyrealsense2 intrinsics as the CameraInfo model (Brown-Conrady variants -> plumb_bob)."""
    model = intr.model
    coeffs = tuple(float(c) for c in intr.coeffs)
    if rs is not None and model == rs.distortion.kannala_brandt4:
        name, d = "equidistant", coeffs[:4]
    else:
        name, d = "plumb_bob", (coeffs + (0.0,) * 5)[:5]
    return PinholeIntrinsics(width=int(intr.width), height=int(intr.height), fx=float(intr.fx),
                             fy=float(intr.fy), cx=float(intr.ppx), cy=float(intr.ppy),
                             distortion_model=name, d=d)


class RealSenseCamera(CameraSource):
    """One RealSense camera (or recording) through an rs.pipeline; ``read()`` blocks for the next frame."""

    paced = True

    def __init__(self, config: CameraConfig, options: CameraOptions | None = None,
                 context: Callable[[], Any] | Any | None = None):
        """``context``: the rs.context to enumerate devices in (or a factory for one); default a fresh
        ``rs.context()`` at every open, so a re-plugged camera is found again."""
        if rs is None:
            raise CameraOpenError(f"camera {config.name!r}: source 'realsense' needs pyrealsense2: "
                                  "pip install pyrealsense2 (and apt-get install libusb-1.0-0)")
        super().__init__(config, options)
        self._context = context
        self._pipeline: Any = None
        self._align: Any = None
        self._depth_to_mm = 1.0
        self._intrinsics: PinholeIntrinsics | None = None
        self._mapper = ClockMapper()
        self._remap_clock = False
        self._playback: Any = None
        self._last_color_number: int | None = None
        self.serial = ""

    # ---- CameraSource ----------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._pipeline is not None

    @property
    def native_resolution(self) -> tuple[int, int] | None:
        return (self._intrinsics.width, self._intrinsics.height) if self._intrinsics else None

    def intrinsics(self) -> PinholeIntrinsics | None:
        return self._intrinsics

    def open(self) -> None:
        if self._pipeline is not None:
            return
        ctx = self._make_context()
        cfg = rs.config()
        device = self.config.device.strip()
        if is_recording(device):
            if not Path(device).is_file():
                raise CameraOpenError(f"camera {self.name!r}: RealSense recording {device!r} not found")
            cfg.enable_device_from_file(device, repeat_playback=self.options.loop)
            self.serial = device
        else:
            self.serial = self._pick_serial(ctx, device)
            cfg.enable_device(self.serial)
        fps = round(self.fps)
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, fps)
        pipeline = rs.pipeline(ctx)
        if self.options.depth:
            cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, fps)
            if not cfg.can_resolve(rs.pipeline_wrapper(pipeline)):
                # Depth at another resolution is fine: it is aligned (resampled) to colour anyway.
                cfg.disable_stream(rs.stream.depth)
                cfg.enable_stream(rs.stream.depth, rs.format.z16, fps)
        want = f"{self.width}x{self.height}@{fps} rgb8 colour" + (" + z16 depth" if self.options.depth else "")
        try:
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            raise CameraOpenError(
                f"camera {self.name!r}: RealSense {self.serial or device!r} cannot stream {want}: {exc}. "
                "List its modes with rs-enumerate-devices; pick a width/height/fps it offers") from exc
        dev = profile.get_device()
        self._playback = dev.as_playback() if dev.is_playback() else None
        if self._playback is not None:
            self._playback.set_real_time(True)  # the node sees frames at the recorded rate
        else:
            self._enable_global_time(dev)
        self._remap_clock = self._playback is not None
        self._mapper.reset()
        self._last_color_number = None
        color_profile = profile.get_stream(rs.stream.color).as_video_stream_profile()
        self._intrinsics = intrinsics_from_rs(color_profile.get_intrinsics())
        if self.options.depth:
            self._align = rs.align(rs.stream.color)
            scale_m = dev.first_depth_sensor().get_depth_scale()
            self._depth_to_mm = float(scale_m) * 1000.0
        self._pipeline = pipeline

    def read(self) -> Frame:
        if self._pipeline is None:
            raise CameraReadError(f"camera {self.name!r} (realsense) is not open: call open() first")
        timeout_ms = round(self.options.read_timeout_s * 1000)
        deadline = time.monotonic() + self.options.read_timeout_s
        while True:
            ok, frames = self._pipeline.try_wait_for_frames(timeout_ms)
            arrival = time.time()
            # With depth on, librealsense's syncer also hands out a frameset when only the depth frame
            # is new, repeating the last colour frame: skip those, each colour frame is published once.
            color = frames.get_color_frame() if ok else None
            if not ok or not color or color.get_frame_number() != self._last_color_number:
                break
            timeout_ms = max(1, round((deadline - time.monotonic()) * 1000))
            if time.monotonic() >= deadline:
                ok = False
                break
        if not ok:
            # A recording named as the device ends; a device picked by serial number never "ends": if it
            # stops delivering it is gone (unplugged), and the node reopens it.
            if self._playback is not None and is_recording(self.config.device) \
                    and self._playback.current_status() == rs.playback_status.stopped:
                raise CameraEndOfStream(f"camera {self.name!r}: end of RealSense recording {self.serial!r}")
            raise CameraReadError(f"camera {self.name!r}: RealSense {self.serial!r} delivered no frame within "
                                  f"{timeout_ms} ms (unplugged, or the USB link stalled?)")
        if not color:
            raise CameraReadError(f"camera {self.name!r}: frameset without a colour frame")
        self._last_color_number = color.get_frame_number()
        if self._align is not None:
            frames = self._align.process(frames)
            color = frames.get_color_frame()
        image = np.asanyarray(color.get_data())
        if image.shape != (self.height, self.width, 3):
            image = resize(np.ascontiguousarray(image), self.width, self.height)
        depth = None
        if self._align is not None:
            depth_frame = frames.get_depth_frame()
            if depth_frame:
                depth = np.asanyarray(depth_frame.get_data())
                if self._depth_to_mm != 1.0:
                    depth = np.clip(depth * self._depth_to_mm, 0, 65535).astype(np.uint16)
        return Frame(image, self._capture_time(color, arrival), depth=depth, sequence=int(color.get_frame_number()))

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        self._align = None
        self._playback = None
        if pipeline is not None:
            with contextlib.suppress(RuntimeError):  # the device is already gone (unplugged)
                pipeline.stop()

    # ---- helpers ---------------------------------------------------------------------------------
    def _make_context(self) -> Any:
        if self._context is None:
            return rs.context()
        return self._context() if callable(self._context) else self._context

    def _pick_serial(self, ctx: Any, wanted: str) -> str:
        serials = [d.get_info(rs.camera_info.serial_number) for d in ctx.query_devices()]
        if wanted:
            if wanted not in serials:
                found = ", ".join(serials) or "none"
                raise CameraOpenError(f"camera {self.name!r}: RealSense {wanted} is not connected "
                                      f"(connected: {found}); check the cable and `rs-enumerate-devices -s`")
            return wanted
        if not serials:
            raise CameraOpenError(f"camera {self.name!r}: no RealSense camera is connected "
                                  "(check the USB 3 cable, udev rules, and `rs-enumerate-devices -s`)")
        if len(serials) > 1:
            raise CameraOpenError(f"camera {self.name!r}: {len(serials)} RealSense cameras are connected "
                                  f"({', '.join(serials)}); set this camera's device to one serial number")
        return serials[0]

    def _enable_global_time(self, dev: Any) -> None:
        # Global time maps the hardware clock onto the host clock inside librealsense (needs metadata).
        for sensor in dev.query_sensors():
            opt = rs.option.global_time_enabled
            if sensor.supports(opt) and not sensor.is_option_read_only(opt):
                sensor.set_option(opt, 1)

    def _capture_time(self, frame: Any, arrival_wall_s: float) -> float:
        domain = frame.get_frame_timestamp_domain()
        on_wall_clock = domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)
        return capture_time_s(frame.get_timestamp(), on_wall_clock and not self._remap_clock, arrival_wall_s,
                              self._mapper)


def capture_time_s(timestamp_ms: float, on_wall_clock: bool, arrival_wall_s: float, mapper: ClockMapper) -> float:
    """A librealsense frame timestamp on the host wall clock.

    ``on_wall_clock``: the timestamp is in the global_time/system_time domain (ms since the epoch on the
    host clock) and is used as it is, unless it is implausibly far from the arrival time; otherwise
    (hardware clock, recordings) ``mapper`` maps it.
    """
    ts_s = timestamp_ms / 1000.0
    if on_wall_clock and abs(arrival_wall_s - ts_s) < MAX_WALL_CLOCK_SKEW_S:
        return ts_s
    return mapper.to_wall(ts_s, arrival_wall_s)


def record_software_camera(path: str | Path, images: list[np.ndarray], fps: float = 30.0,
                           serial: str = "123456789012", depth_mm: list[np.ndarray] | None = None,
                           start_ms: float = 1_000.0, hardware_clock: bool = True) -> Path:
    """Write a RealSense recording (``.db3``) of the given frames through pyrealsense2's software device.

    For tests and demos without a camera: the recording replays through the same pipeline code as a
    plugged-in camera, with the given serial number, the frames' timestamps (``start_ms`` + i/fps, on
    the hardware clock or, with ``hardware_clock`` off, in the global-time domain) and frame numbers,
    and with depth (z16, millimetres) when ``depth_mm`` is given.
    """
    if rs is None:
        raise CameraOpenError("recording a software camera needs pyrealsense2")
    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"librealsense records to .db3 files, got {path.name}")
    h, w = images[0].shape[:2]
    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "Intel RealSense D435 (software)")

    def intrinsics() -> Any:
        intr = rs.intrinsics()
        intr.width, intr.height, intr.ppx, intr.ppy = w, h, (w - 1) / 2, (h - 1) / 2
        intr.fx = intr.fy = 0.5 * w / np.tan(np.radians(69.0) / 2)
        intr.model, intr.coeffs = rs.distortion.brown_conrady, [0.0] * 5
        return intr

    def add_stream(sensor: Any, stream: Any, fmt: Any, bpp: int, uid: int) -> Any:
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height = stream, 0, uid, w, h
        vs.fps, vs.bpp, vs.fmt, vs.intrinsics = round(fps), bpp, fmt, intrinsics()
        return sensor.add_video_stream(vs)

    color_sensor = dev.add_sensor("RGB Camera")
    color_profile = add_stream(color_sensor, rs.stream.color, rs.format.rgb8, 3, 1)
    sensors = [(color_sensor, color_profile)]
    if depth_mm is not None:
        depth_sensor = dev.add_sensor("Stereo Module")
        depth_profile = add_stream(depth_sensor, rs.stream.depth, rs.format.z16, 2, 2)
        depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
        sensors.append((depth_sensor, depth_profile))
    recorder = rs.recorder(str(path), dev)
    sync = rs.syncer()
    for sensor, profile in sensors:
        sensor.open(profile)
        sensor.start(sync)
    domain = rs.timestamp_domain.hardware_clock if hardware_clock else rs.timestamp_domain.global_time
    for i, image in enumerate(images):
        planes = [(color_sensor, color_profile, np.ascontiguousarray(image), 3)]
        if depth_mm is not None:
            planes.append((sensors[1][0], sensors[1][1], np.ascontiguousarray(depth_mm[i]), 2))
        for sensor, profile, pixels, bpp in planes:
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bpp, w * bpp
            frame.timestamp, frame.domain, frame.frame_number = start_ms + i * 1000.0 / fps, domain, i
            frame.profile = profile.as_video_stream_profile()
            if bpp == 2:
                frame.depth_units = 0.001
            sensor.on_video_frame(frame)
        # The recorder writes from librealsense's own threads; frames pushed faster than it drains them
        # are dropped, so give it a moment per frame (no timing depends on this: stamps are set above).
        time.sleep(0.005)
    for sensor, _ in sensors:
        sensor.stop()
        sensor.close()
    recorder.pause()
    del recorder  # flushes and closes the file
    return path
