"""Camera sources without ROS: OpenCV on a generated video file, RealSense through recordings made with
pyrealsense2's software device (pick by serial, depth, unplug and replug), bag replay through rosbags,
the registry, the clock mapping and the synthetic camera's fault hooks."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from molmoact2_ros.backends.cameras import (
    CameraEndOfStream,
    CameraOpenError,
    CameraOptions,
    CameraReadError,
    ClockMapper,
    available_sources,
    make_camera,
)
from molmoact2_ros.backends.cameras.base import monotonic_to_wall
from molmoact2_ros.backends.cameras.synthetic import SyntheticCamera, frame_index_of
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.core.errors import ConfigError

W, H = 64, 48


def _cfg(source: str = "synthetic", device: str = "", width: int = W, height: int = H, fps: float = 30,
         name: str = "front") -> CameraConfig:
    return CameraConfig(name=name, source=source, device=device, width=width, height=height, fps=fps)


def _synthetic_frames(n: int, width: int = W, height: int = H) -> list[np.ndarray]:
    cam = SyntheticCamera(_cfg(width=width, height=height))
    return [cam.render(i) for i in range(n)]


# ---- registry and options ----------------------------------------------------------------------------

def test_builtin_sources_and_options():
    assert {"synthetic", "opencv", "realsense", "bag"} <= set(available_sources())
    cam = make_camera(_cfg(), CameraOptions(loop=False))
    assert isinstance(cam, SyntheticCamera) and cam.options.loop is False
    with pytest.raises(ValueError, match="fourcc"):
        CameraOptions(fourcc="MJPEG")
    with pytest.raises(ValueError, match="read_timeout_s"):
        CameraOptions(read_timeout_s=0)


@pytest.mark.parametrize(("source", "module", "hint"), [
    ("realsense", "pyrealsense2", "libusb-1.0-0"), ("opencv", "cv2", "opencv-python-headless"),
    ("bag", "rosbags", "molmoact2_ros\\[bags\\]"),
])
def test_missing_camera_library_names_the_fix(monkeypatch, source, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ConfigError, match=hint) as info:
        make_camera(_cfg(source=source))
    assert f"source {source!r}" in str(info.value)


def test_sim_without_a_simulation_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="MuJoCo") as info:
        make_camera(_cfg(source="sim"))
    assert "camera 'front'" in str(info.value)


# ---- clocks --------------------------------------------------------------------------------------------

def test_clock_mapper_takes_the_smallest_delay_and_restarts_on_a_reset():
    mapper = ClockMapper(window=50)
    offset = 1_700_000_000.0  # device clock starts at 0, host clock at this epoch
    delays = [0.004, 0.0015, 0.007, 0.002, 0.003]
    mapped = [mapper.to_wall(k / 30, offset + k / 30 + d) for k, d in enumerate(delays)]
    # After the 1.5 ms sample, every frame maps to its true time + 1.5 ms: never later than it arrived.
    for k, t in enumerate(mapped[1:], start=1):
        assert t == pytest.approx(offset + k / 30 + 0.0015, abs=1e-9)
        assert t <= offset + k / 30 + delays[k]
    # The device clock jumps back (camera re-plugged): the old offset must not leak into the new one.
    t = mapper.to_wall(0.0, offset + 100.0 + 0.003)
    assert t == pytest.approx(offset + 100.0 + 0.003)
    assert monotonic_to_wall(time.monotonic()) == pytest.approx(time.time(), abs=0.01)


def test_realsense_timestamp_domains():
    from molmoact2_ros.backends.cameras.realsense import capture_time_s

    mapper = ClockMapper()
    now = time.time()
    # global/system time: milliseconds since the epoch on the host clock, used as they are.
    assert capture_time_s((now - 0.020) * 1000, True, now, mapper) == pytest.approx(now - 0.020)
    # A "global" time far from the host clock is garbage (no metadata): mapped like a hardware clock.
    assert capture_time_s(5_000.0, True, now, mapper) == pytest.approx(now)
    assert capture_time_s(5_033.0, False, now + 0.034, mapper) == pytest.approx(now + 0.033)


def test_v4l2_buffer_time_plausibility():
    from molmoact2_ros.backends.cameras.opencv import driver_capture_time, is_v4l2_device

    mono = time.monotonic()
    t = driver_capture_time((mono - 0.015) * 1000, mono)
    assert t == pytest.approx(time.time() - 0.015, abs=0.01)
    assert driver_capture_time(0.0, mono) is None  # no timestamp from the driver
    assert driver_capture_time((mono - 5.0) * 1000, mono) is None  # not CLOCK_MONOTONIC
    assert driver_capture_time((mono + 1.0) * 1000, mono) is None  # from the future
    if sys.platform.startswith("linux"):
        assert is_v4l2_device(0) and is_v4l2_device("/dev/video2")
    assert not is_v4l2_device("rtsp://cam/stream") and not is_v4l2_device("clip.avi")


# ---- synthetic fault hooks -------------------------------------------------------------------------

def test_synthetic_fault_hooks():
    cam = SyntheticCamera(_cfg())
    cam.open()
    assert cam.read().sequence == 0
    cam.drop_next(3)
    frame = cam.read()
    assert frame.sequence == 4 and frame_index_of(frame.image) == 4
    cam.freeze()
    a, b = cam.read(), cam.read()
    np.testing.assert_array_equal(a.image, b.image)
    assert a.sequence is None and a.image is not b.image
    cam.freeze(False)
    assert not np.array_equal(cam.read().image, a.image)
    cam.unplug()
    with pytest.raises(CameraReadError, match="disconnected"):
        cam.read()
    cam.close()
    with pytest.raises(CameraOpenError, match="not connected"):
        cam.open()
    cam.plug()
    cam.open()
    cam.set_pattern("blank")
    assert not cam.read().image.any()
    cam.set_pattern("saturated")
    assert (cam.read().image == 255).all()
    with pytest.raises(ValueError, match="pattern"):
        cam.set_pattern("plaid")


# ---- OpenCV on a generated video file --------------------------------------------------------------

@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for frame in _synthetic_frames(6):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_opencv_video_file_frames_in_order_and_looping(video_file):
    cam = make_camera(_cfg("opencv", str(video_file)))
    assert cam.is_file and not cam.paced and not cam.is_v4l2
    with cam:
        assert cam.native_resolution == (W, H)
        frames = [cam.read() for _ in range(8)]
    assert [frame_index_of(f.image) for f in frames] == [0, 1, 2, 3, 4, 5, 0, 1]  # survives MJPG, loops
    assert all(f.capture_time_s is None for f in frames)  # files: stamped by the node at read


def test_opencv_video_file_without_loop_ends(video_file):
    cam = make_camera(_cfg("opencv", str(video_file)), CameraOptions(loop=False))
    with cam:
        for _ in range(6):
            cam.read()
        with pytest.raises(CameraEndOfStream, match="end of video file"):
            cam.read()


def test_opencv_resizes_and_reports_native_resolution(video_file):
    cam = make_camera(_cfg("opencv", str(video_file), width=32, height=32))
    with cam:
        frame = cam.read()
    assert frame.image.shape == (32, 32, 3) and cam.native_resolution == (W, H)


def test_opencv_missing_device_fails_clearly(tmp_path):
    cam = make_camera(_cfg("opencv", str(tmp_path / "nope.avi")))
    with pytest.raises(CameraOpenError, match="cannot open"):
        cam.open()
    with pytest.raises(CameraReadError, match="not open"):
        cam.read()


# ---- RealSense through recordings of pyrealsense2's software device --------------------------------

SERIAL = "123456789012"


@pytest.fixture(scope="module")
def rs_recordings(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("pyrealsense2")
    from molmoact2_ros.backends.cameras.realsense import record_software_camera

    d = tmp_path_factory.mktemp("realsense")
    frames = _synthetic_frames(12)
    depth = [np.full((H, W), 500 + i, np.uint16) for i in range(12)]
    return {
        "depth": record_software_camera(d / "depth.db3", frames, serial=SERIAL, depth_mm=depth),
        "other": record_software_camera(d / "other.db3", frames[:4], serial="999000111222"),
    }


def _read_all(cam) -> list:
    out = []
    with pytest.raises(CameraEndOfStream):
        while True:
            out.append(cam.read())
    return out


def test_realsense_recording_colour_depth_and_stamps(rs_recordings):
    cfg = _cfg("realsense", str(rs_recordings["depth"]), name="wrist")
    cam = make_camera(cfg, CameraOptions(depth=True, loop=False, read_timeout_s=0.5))
    t_open = time.time()
    with cam:
        intr = cam.intrinsics()
        frames = _read_all(cam)
    seqs = [f.sequence for f in frames]
    # Real-time playback starts at pipeline start; a loaded machine may miss a frame, never reorder one.
    assert len(seqs) >= 6 and seqs == sorted(set(seqs)) and seqs[-1] == 11
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert frame_index_of(f.image) == f.sequence  # the recorded pixels, exactly
        assert f.depth is not None and f.depth.shape == (H, W) and f.depth.dtype == np.uint16
        # Aligned to colour, in millimetres; the syncer may pair a colour frame with an earlier depth frame.
        assert 500 <= int(f.depth[H // 2, W // 2]) <= 500 + f.sequence
    stamps = [f.capture_time_s for f in frames]
    # A recording's hardware clock is from another day: mapped onto now, in order.
    assert t_open - 1.0 < stamps[0] and stamps[-1] <= time.time()
    assert stamps == sorted(stamps)
    assert intr is not None and (intr.width, intr.height) == (W, H) and intr.distortion_model == "plumb_bob"
    assert cam.native_resolution == (W, H)


def test_realsense_picks_by_serial_and_survives_unplug(rs_recordings):
    import pyrealsense2 as rs

    from molmoact2_ros.backends.cameras.realsense import RealSenseCamera

    ctx = rs.context()
    plugged = ctx.load_device(str(rs_recordings["depth"]))  # a "camera" with serial SERIAL
    # The context the camera enumerates devices in: ours, holding the "plugged-in" recording.
    cam = RealSenseCamera(_cfg("realsense", SERIAL), CameraOptions(read_timeout_s=0.3), context=ctx)
    cam.open()
    assert cam.serial == SERIAL and frame_index_of(cam.read().image) >= 0
    ctx.unload_device(str(rs_recordings["depth"]))  # unplug: frames stop, the serial disappears
    del plugged
    with pytest.raises(CameraReadError, match="no frame within 300 ms"):
        for _ in range(40):
            cam.read()
    cam.close()
    with pytest.raises(CameraOpenError, match=f"{SERIAL} is not connected"):
        cam.open()
    plugged = ctx.load_device(str(rs_recordings["depth"]))  # plugged back in
    cam.open()
    assert cam.read().image.shape == (H, W, 3)
    cam.close()

    wrong = RealSenseCamera(_cfg("realsense", "555"), context=ctx)
    with pytest.raises(CameraOpenError, match=f"555 is not connected \\(connected: {SERIAL}\\)"):
        wrong.open()
    only = RealSenseCamera(_cfg("realsense", ""), context=ctx)
    only.open()  # the one connected camera
    assert only.serial == SERIAL
    only.close()
    second = ctx.load_device(str(rs_recordings["other"]))
    with pytest.raises(CameraOpenError, match="2 RealSense cameras are connected"):
        only.open()
    del second, plugged


def test_realsense_no_camera_and_bad_mode(rs_recordings, tmp_path):
    import pyrealsense2 as rs

    from molmoact2_ros.backends.cameras.realsense import RealSenseCamera

    empty = RealSenseCamera(_cfg("realsense", ""), context=rs.context)  # a fresh context per open
    if len(rs.context().query_devices()) == 0:
        with pytest.raises(CameraOpenError, match="no RealSense camera is connected"):
            empty.open()
    with pytest.raises(CameraOpenError, match="not found"):
        make_camera(_cfg("realsense", str(tmp_path / "missing.db3"))).open()
    bad_mode = make_camera(_cfg("realsense", str(rs_recordings["depth"]), width=1280, height=720))
    with pytest.raises(CameraOpenError, match="cannot stream 1280x720@30 rgb8 colour"):
        bad_mode.open()


# ---- bag replay through rosbags ----------------------------------------------------------------------

def _write_bag(path: Path, topic: str, frames: list[np.ndarray], compressed: bool = False,
               encoding: str = "rgb8") -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from molmoact2_ros.core.images import encode_jpeg

    ts = get_typestore(Stores.ROS2_KILTED)
    header_t, time_t = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=ts)
        for i, frame in enumerate(frames):
            header = header_t(stamp=time_t(sec=100 + i, nanosec=5), frame_id="front_optical_frame")
            if compressed:
                msg = ts.types[msgtype](header=header, format="rgb8; jpeg compressed bgr8",
                                        data=np.frombuffer(encode_jpeg(frame, 95), np.uint8))
            else:
                pixels = frame[..., ::-1] if encoding == "bgr8" else frame
                msg = ts.types[msgtype](header=header, height=H, width=W, encoding=encoding, is_bigendian=0,
                                        step=W * 3, data=np.ascontiguousarray(pixels).reshape(-1))
            writer.write(conn, (100 + i) * 10**9, ts.serialize_cdr(msg, msgtype))
    return path


def test_bag_replays_frames_in_order_and_loops(tmp_path):
    pytest.importorskip("rosbags")
    frames = _synthetic_frames(5)
    bag = _write_bag(tmp_path / "raw", "/cameras/front/image_raw", frames)
    cam = make_camera(_cfg("bag", str(bag)), CameraOptions(bag_topic="/cameras/front/image_raw"))
    assert not cam.paced and not cam.stamps_on_ros_clock
    with cam:
        got = [cam.read() for _ in range(7)]
    assert [frame_index_of(f.image) for f in got] == [0, 1, 2, 3, 4, 0, 1]
    np.testing.assert_array_equal(got[2].image, frames[2])  # raw rgb8: the exact pixels
    assert all(f.capture_time_s is None for f in got)  # restamped at replay by default


def test_bag_recorded_stamps_compressed_fallback_and_bgr(tmp_path):
    pytest.importorskip("rosbags")
    frames = _synthetic_frames(3)
    bag = _write_bag(tmp_path / "jpeg", "/cameras/front/image_raw/compressed", frames, compressed=True)
    cam = make_camera(_cfg("bag", str(bag)), CameraOptions(loop=False, restamp=False,
                                                            bag_topic="/cameras/front/image_raw"))
    assert cam.stamps_on_ros_clock
    with cam:
        got = _read_all(cam)
    assert [frame_index_of(f.image) for f in got] == [0, 1, 2]
    assert [f.capture_time_s for f in got] == pytest.approx([100 + 5e-9, 101 + 5e-9, 102 + 5e-9])
    bgr = _write_bag(tmp_path / "bgr", "/cam", frames, encoding="bgr8")
    with make_camera(_cfg("bag", str(bgr)), CameraOptions(bag_topic="/cam")) as cam:
        np.testing.assert_array_equal(cam.read().image, frames[0])


def test_bag_errors_name_what_is_there(tmp_path):
    pytest.importorskip("rosbags")
    bag = _write_bag(tmp_path / "b", "/cameras/wrist/image_raw", _synthetic_frames(1))
    with pytest.raises(CameraOpenError, match=r"no image topic '/cameras/front/image_raw'.*/cameras/wrist/image_raw"):
        make_camera(_cfg("bag", str(bag)), CameraOptions(bag_topic="/cameras/front/image_raw")).open()
    with pytest.raises(CameraOpenError, match="not found"):
        make_camera(_cfg("bag", str(tmp_path / "none"))).open()
    resized = make_camera(_cfg("bag", str(bag), width=32, height=24),
                          CameraOptions(bag_topic="/cameras/wrist/image_raw"))
    with resized:
        assert resized.read().image.shape == (24, 32, 3) and resized.native_resolution == (W, H)
