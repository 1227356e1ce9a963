"""core.images without ROS: Image fields round trip, decode checks, JPEG, resize, intrinsics."""

from __future__ import annotations

import array
import math
from types import SimpleNamespace

import numpy as np
import pytest

from molmoact2_ros.core import images
from molmoact2_ros.core.errors import ObservationError
from molmoact2_ros.core.images import (
    BGR8,
    DEPTH16,
    JPEG_FORMAT,
    RGB8,
    decode_jpeg,
    encode_jpeg,
    fill_depth_image,
    fill_image,
    frame_exposure_problem,
    frame_signature,
    image_data,
    image_fields,
    image_from_cdr,
    image_from_compressed_fields,
    image_from_msg,
    image_from_msg_fields,
    pinhole_intrinsics,
    resize,
)


def _frame(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _msg() -> SimpleNamespace:
    """Stands in for sensor_msgs/Image (same fields, data an array.array as rclpy makes it)."""
    return SimpleNamespace(height=0, width=0, encoding="", is_bigendian=0, step=0, data=array.array("B"))


def test_fields_and_round_trip_rgb8():
    f = _frame()
    msg = fill_image(_msg(), f)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (48, 64, RGB8, 192, 0)
    assert isinstance(msg.data, array.array) and len(msg.data) == f.size
    out = image_from_msg(msg)
    np.testing.assert_array_equal(out, f)
    # rgb8 decode is a view on the message buffer, not a copy.
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_fill_copies_once_and_decouples_from_frame():
    f = _frame()
    msg = fill_image(_msg(), f)
    f[:] = 0  # the message owns its pixels
    assert max(msg.data) > 0


def test_non_contiguous_frame():
    f = _frame(h=40, w=80)[:, ::2]  # strided view
    assert not f.flags.c_contiguous
    np.testing.assert_array_equal(image_from_msg(fill_image(_msg(), f)), f)
    np.testing.assert_array_equal(np.frombuffer(image_data(f), np.uint8).reshape(f.shape), f)


def test_real_image_message_round_trip():
    pytest.importorskip("sensor_msgs")
    from sensor_msgs.msg import Image

    f = _frame(480, 640)
    msg = fill_image(Image(), f)
    np.testing.assert_array_equal(image_from_msg(msg), f)
    assert image_fields(f) == {"height": 480, "width": 640, "encoding": "rgb8", "is_bigendian": 0,
                               "step": 1920}


def test_bgr8_is_converted_to_rgb():
    f = _frame()
    bgr = np.ascontiguousarray(f[..., ::-1])
    out = image_from_msg_fields(48, 64, BGR8, 64 * 3, bgr.tobytes())
    np.testing.assert_array_equal(out, f)
    assert out.flags.c_contiguous


def test_row_padding_is_honoured():
    f = _frame(h=10, w=7)
    step = 7 * 3 + 11
    padded = np.zeros((10, step), np.uint8)
    padded[:, :21] = f.reshape(10, 21)
    np.testing.assert_array_equal(image_from_msg_fields(10, 7, RGB8, step, padded.tobytes()), f)


@pytest.mark.parametrize(
    ("height", "width", "encoding", "step", "nbytes", "match"),
    [
        (48, 64, "mono8", 64, 48 * 64, "encoding 'mono8' is not supported"),
        (48, 64, "rgb16", 384, 48 * 384, "encoding 'rgb16' is not supported"),
        (48, 64, RGB8, 100, 48 * 100, "step 100 is smaller than width"),
        (48, 64, RGB8, 192, 48 * 192 - 1, "data has 9215 bytes but step\\*height"),
        (48, 64, RGB8, 192, 48 * 192 + 3, "data has 9219 bytes"),
        (0, 64, RGB8, 192, 0, "empty image"),
    ],
)
def test_decode_rejects_inconsistent_fields(height, width, encoding, step, nbytes, match):
    with pytest.raises(ObservationError, match=match) as info:
        image_from_msg_fields(height, width, encoding, step, bytes(nbytes), what="/cameras/front/image_raw")
    assert str(info.value).startswith("/cameras/front/image_raw: ")


def test_fill_rejects_bad_frames():
    with pytest.raises(ObservationError, match="HxWx3 uint8"):
        fill_image(_msg(), np.zeros((4, 4), np.uint8))
    with pytest.raises(ObservationError, match="HxWx3 uint8"):
        fill_image(_msg(), np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ObservationError, match="not supported"):
        image_fields(_frame(), encoding="mono8")


def _smooth(h: int = 96, w: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], -1).astype(np.uint8)


def test_jpeg_round_trip_is_close():
    f = _smooth()
    data = encode_jpeg(f, quality=95)
    assert data[:2] == b"\xff\xd8"
    out = decode_jpeg(data)
    assert out.shape == f.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - f.astype(int)).mean() < 3.0
    # Channel order survives (a swapped R/B would be off by ~100 on average here).
    np.testing.assert_allclose(out.mean(axis=(0, 1)), f.mean(axis=(0, 1)), atol=3)
    np.testing.assert_array_equal(image_from_compressed_fields(JPEG_FORMAT, data), out)


def test_jpeg_quality_and_garbage():
    f = _frame(seed=3)
    assert len(encode_jpeg(f, 30)) < len(encode_jpeg(f, 95))
    with pytest.raises(ValueError, match=r"1\.\.100"):
        encode_jpeg(f, 0)
    with pytest.raises(ObservationError, match="not a decodable"):
        decode_jpeg(b"definitely not a jpeg")
    with pytest.raises(ObservationError, match="no compressed data"):
        decode_jpeg(b"")
    with pytest.raises(ObservationError, match="format 'tiff'"):
        image_from_compressed_fields("tiff", b"xx")


def test_pillow_fallback_matches(monkeypatch):
    f = _smooth()
    monkeypatch.setattr(images, "cv2", None)
    out = decode_jpeg(encode_jpeg(f, 95))
    assert np.abs(out.astype(int) - f.astype(int)).mean() < 3.0
    assert resize(f, 64, 48).shape == (48, 64, 3)
    np.testing.assert_array_equal(images.bgr_to_rgb(f), f[..., ::-1])
    with pytest.raises(ObservationError, match="not a decodable"):
        decode_jpeg(b"garbage")


def test_resize():
    f = _smooth()
    assert resize(f, 128, 96) is f
    small = resize(f, 64, 48)
    assert small.shape == (48, 64, 3) and small.dtype == np.uint8
    assert resize(f, 256, 192).shape == (192, 256, 3)
    with pytest.raises(ValueError, match="positive"):
        resize(f, 0, 10)


def test_pinhole_intrinsics():
    intr = pinhole_intrinsics(640, 480)
    assert intr.fx == intr.fy and 400 < intr.fx < 500  # 70° HFOV at 640 px: ~457 px
    assert math.isclose(2 * math.degrees(math.atan(320 / intr.fx)), 70.0)
    assert (intr.cx, intr.cy) == (319.5, 239.5)
    fields = intr.camera_info_fields()
    assert len(fields["k"]) == 9 and len(fields["p"]) == 12 and len(fields["r"]) == 9
    assert fields["k"][0] == intr.fx and fields["k"][8] == 1.0
    assert fields["distortion_model"] == "plumb_bob" and fields["d"] == [0.0] * 5
    with pytest.raises(ValueError):
        pinhole_intrinsics(0, 480)


def test_fill_depth_image():
    depth = np.arange(12 * 10, dtype=np.uint16).reshape(10, 12) * 37
    msg = fill_depth_image(_msg(), depth)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (10, 12, DEPTH16, 24, 0)
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<u2").reshape(10, 12), depth)
    np.testing.assert_array_equal(np.frombuffer(fill_depth_image(_msg(), depth[:, ::2]).data, "<u2").reshape(10, 6),
                                  depth[:, ::2])
    with pytest.raises(ObservationError, match="uint16"):
        fill_depth_image(_msg(), depth.astype(np.float32))


def test_exposure_checks():
    assert frame_exposure_problem(_frame(480, 640)) is None  # noise: a picture
    assert frame_exposure_problem(decode_jpeg(encode_jpeg(_smooth(), 80))) is None  # smooth gradient
    black = np.zeros((480, 640, 3), np.uint8)
    assert frame_exposure_problem(black).startswith("blank (black")
    grey = np.full((48, 64, 3), 128, np.uint8)
    grey[0, 0] = 131  # a few stray pixels are still no picture
    assert frame_exposure_problem(grey).startswith("blank (uniform")
    white = np.full((48, 64, 3), 255, np.uint8)
    white[::7, ::5] = 0  # lots of detail, but almost everything blown out
    assert frame_exposure_problem(white).startswith("saturated")
    red_wall = np.zeros((48, 64, 3), np.uint8)
    red_wall[..., 0] = 255  # one channel at full scale is a colour, not overexposure
    red_wall[24:, :, 1] = 200
    assert frame_exposure_problem(red_wall) is None


def test_frame_signature_tells_repeats_from_new_frames():
    f = _frame(480, 640)
    sig = frame_signature(f)
    assert sig.shape == (60, 80, 3) and not np.shares_memory(sig, f)
    assert np.array_equal(sig, frame_signature(f.copy()))
    g = f.copy()
    g[8, 16] ^= 1  # one grey level on one sampled pixel: a live sensor's noise
    assert not np.array_equal(sig, frame_signature(g))


@pytest.mark.parametrize(("frame_id", "encoding", "pad"), [("front_optical_frame", RGB8, 0), ("w", BGR8, 0),
                                                         ("", RGB8, 5)])
def test_image_from_cdr_matches_rclpy_serialization(frame_id, encoding, pad):
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    f = _frame(48, 64, seed=5)
    rows = (f[..., ::-1] if encoding == BGR8 else f).reshape(48, 64 * 3)
    padded = np.zeros((48, 64 * 3 + pad), np.uint8)
    padded[:, :64 * 3] = rows
    msg = Image(height=48, width=64, encoding=encoding, step=64 * 3 + pad)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 1700000123, 456789, frame_id
    msg.data.frombytes(padded.tobytes())
    cdr = serialize_message(msg)
    out = image_from_cdr(cdr)
    assert (out.stamp_sec, out.stamp_nanosec, out.frame_id) == (1700000123, 456789, frame_id)
    assert out.stamp_s == pytest.approx(1700000123.000456789)
    np.testing.assert_array_equal(out.image, f)
    if encoding == RGB8 and pad == 0:
        assert np.shares_memory(out.image, np.frombuffer(cdr, np.uint8))  # a view, no copy
    with pytest.raises(ObservationError, match="ends early"):
        image_from_cdr(cdr[: len(cdr) // 2], what="/cameras/front/image_raw")
    with pytest.raises(ObservationError, match="not CDR"):
        image_from_cdr(b"\x07\x07garbage!")
