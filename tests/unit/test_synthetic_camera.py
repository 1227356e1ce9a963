"""Synthetic camera and the camera registry without ROS: determinism, motion, per-camera identity,
round trips through Image fields and JPEG. (The other sources: test_camera_sources.py.)"""

from __future__ import annotations

import array
import time
from types import SimpleNamespace

import numpy as np
import pytest

from molmoact2_ros.backends.cameras import (
    CameraReadError,
    CameraSource,
    Frame,
    available_sources,
    make_camera,
    register_camera,
    unregister_camera,
)
from molmoact2_ros.backends.cameras.synthetic import SyntheticCamera, frame_index_of
from molmoact2_ros.core.embodiment import CameraConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.core.images import decode_jpeg, encode_jpeg, fill_image, image_from_msg

EMB = load_embodiment("so101")


def _cfg(name: str = "front", width: int = 640, height: int = 480, **kw) -> CameraConfig:
    return CameraConfig(name=name, width=width, height=height, fps=30, **kw)


def _opened(cfg: CameraConfig, **kw) -> SyntheticCamera:
    cam = SyntheticCamera(cfg, **kw)
    cam.open()
    return cam


def test_registry_builds_synthetic_from_embodiment():
    cam = make_camera(EMB.cameras[0])
    assert isinstance(cam, SyntheticCamera) and isinstance(cam, CameraSource)
    assert (cam.name, cam.width, cam.height, cam.fps) == ("front", 640, 480, 30)
    assert not cam.paced
    with cam:
        frame = cam.read()
    assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
    assert frame.capture_time_s is None and frame.sequence == 0 and frame.depth is None


def test_same_index_same_frame_across_instances():
    a, b = _opened(_cfg()), _opened(_cfg())
    for _ in range(5):
        np.testing.assert_array_equal(a.read().image, b.read().image)
    np.testing.assert_array_equal(a.render(123), b.render(123))
    np.testing.assert_array_equal(a.render(7), _opened(_cfg(), start_index=7).read().image)


def test_frames_move_and_are_fresh_arrays():
    cam = _opened(_cfg())
    f0, f1, f10 = cam.render(0), cam.render(1), cam.render(10)
    assert cam.square_position(0) != cam.square_position(10)
    # Something beyond the barcode changes between frames.
    assert not np.array_equal(f0[16:], f10[16:])
    assert not np.array_equal(f0, f1)
    a = cam.read().image
    a[:] = 0  # the caller owns the frame: the next one is unaffected
    assert cam.read().image.any()


def test_distinct_per_camera_and_seed():
    front, wrist = _opened(_cfg("front")), _opened(_cfg("wrist"))
    assert front.seed != wrist.seed
    diff = np.abs(front.render(0).astype(int) - wrist.render(0).astype(int)).mean()
    assert diff > 10
    assert not np.array_equal(_opened(_cfg(), seed=1).render(0), _opened(_cfg(), seed=2).render(0))


def test_frame_index_barcode_survives_jpeg():
    cam = _opened(_cfg())
    for i in (0, 1, 2, 77, 12345, 2**31 + 5):
        frame = cam.render(i)
        assert frame_index_of(frame) == i
        assert frame_index_of(decode_jpeg(encode_jpeg(frame, 75))) == i


def test_small_resolutions():
    tiny = _opened(_cfg(width=16, height=12))
    f = tiny.read().image
    assert f.shape == (12, 16, 3)
    assert frame_index_of(tiny.read().image) == 1  # 2 bits fit in 16 px
    no_code = _opened(_cfg(width=5, height=4))
    assert no_code.read().image.shape == (4, 5, 3)
    with pytest.raises(ValueError, match="too small"):
        frame_index_of(no_code.read().image)


def test_round_trip_through_image_fields():
    cam = _opened(_cfg())
    frame = cam.read().image
    msg = SimpleNamespace(height=0, width=0, encoding="", is_bigendian=0, step=0, data=array.array("B"))
    out = image_from_msg(fill_image(msg, frame))
    np.testing.assert_array_equal(out, frame)
    assert frame_index_of(out) == 0


def test_read_before_open_and_injected_failures():
    cam = SyntheticCamera(_cfg())
    with pytest.raises(CameraReadError, match="not open"):
        cam.read()
    cam.open()
    cam.fail_next(2)
    for _ in range(2):
        with pytest.raises(CameraReadError, match="injected"):
            cam.read()
    # Lost frames are skipped, as with a real camera: the index keeps counting.
    assert frame_index_of(cam.read().image) == 2
    cam.close()
    cam.close()  # idempotent
    with pytest.raises(CameraReadError):
        cam.read()


def test_cheap_to_render():
    cam = _opened(_cfg())
    cam.read()
    n = 100
    t0 = time.perf_counter()
    for _ in range(n):
        cam.read()
    per_frame_ms = (time.perf_counter() - t0) / n * 1e3
    assert per_frame_ms < 5.0, per_frame_ms  # ~0.2 ms here; generous for loaded CI machines


def test_unavailable_sources_name_what_is_missing():
    with pytest.raises(ConfigError, match="MuJoCo") as info:
        make_camera(_cfg(source="sim"))
    assert "camera 'front'" in str(info.value) and "synthetic" in str(info.value)


def test_register_custom_source():
    class Constant(CameraSource):
        def open(self) -> None:
            pass

        def read(self) -> Frame:
            return Frame(np.full((self.height, self.width, 3), 7, np.uint8), 12.5)

        def close(self) -> None:
            pass

    register_camera("sim", Constant)
    try:
        assert "sim" in available_sources()
        with make_camera(_cfg(source="sim", width=8, height=6)) as cam:
            frame = cam.read()
        assert frame.image.shape == (6, 8, 3) and frame.capture_time_s == 12.5
    finally:
        unregister_camera("sim")
    assert "sim" not in available_sources()


def test_parse_device():
    pytest.importorskip("cv2")
    from molmoact2_ros.backends.cameras.opencv import parse_device

    assert parse_device("") == 0 and parse_device("2") == 2 and parse_device("/dev/video4") == "/dev/video4"
    assert parse_device(" rtsp://cam/1 ") == "rtsp://cam/1"
