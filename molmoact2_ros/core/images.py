"""Image conversion between numpy frames and ROS image message fields, with no rclpy import.

Every image in this package is an ``H×W×3`` ``uint8`` RGB numpy array. This module turns such a frame
into sensor_msgs/Image fields with exactly one copy of the pixels, turns received Image fields back
into a frame (a zero-copy view for rgb8), encodes/decodes JPEG for sensor_msgs/CompressedImage,
resizes, and makes plausible pinhole intrinsics for sensor_msgs/CameraInfo. Live topics and bag replay
go through the same decode functions (EMBODIMENTS_AND_PEERS.md: one decode path for both).

Why ``fill_image`` writes into ``msg.data`` instead of handing the message a numpy array or bytes:
assigning a numpy array to ``msg.data`` converts element by element (56 ms for 640×480), and the
generated ``Image.__init__`` / ``data`` setter copy whatever they are given into a new
``array.array``. Appending to the message's own (empty) ``array.array`` with ``frombytes`` is a single
memcpy (~0.06 ms for 640×480).

The functions are duck-typed on message objects (anything with ``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``), so the core stays importable without ROS.
"""

from __future__ import annotations

import array
import io
import math
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from molmoact2_ros.core.errors import ObservationError

try:  # OpenCV (libjpeg-turbo, SIMD resize) is ~1.5x faster than Pillow; Pillow is the required fallback.
    import cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is not installed
    cv2 = None  # type: ignore[assignment]

RGB8 = "rgb8"
BGR8 = "bgr8"
DEPTH16 = "16UC1"  # depth in millimetres, as realsense-ros and depth_image_proc expect
DECODABLE_ENCODINGS = (RGB8, BGR8)
# What image_transport's compressed plugin writes for an rgb8 source encoded as JPEG; decoders look
# for "jpeg" (or "png") in the format string.
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"
# Horizontal field of view used when a camera reports no calibration: typical of USB webcams and the
# RealSense D4xx colour sensor (69–70°).
DEFAULT_HFOV_DEG = 70.0


class ImageMsgLike(Protocol):
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


def check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """Return ``frame`` if it is a non-empty H×W×3 uint8 array; raise ObservationError otherwise."""
    if not isinstance(frame, np.ndarray):
        raise ObservationError(f"{what}: expected a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 \
            or frame.shape[1] == 0:
        raise ObservationError(
            f"{what}: expected an HxWx3 uint8 RGB array, got shape {frame.shape} dtype {frame.dtype}")
    return frame


def image_fields(frame: np.ndarray, encoding: str = RGB8) -> dict[str, Any]:
    """Image metadata for ``frame`` (height, width, encoding, is_bigendian, step); no pixel data.

    Use with :func:`fill_image`, or as ``Image(**image_fields(f))`` followed by
    ``msg.data.frombytes(pixel_buffer(f))``.
    """
    check_frame(frame)
    if encoding not in DECODABLE_ENCODINGS:
        raise ObservationError(f"encoding {encoding!r} is not supported; use one of {DECODABLE_ENCODINGS}")
    h, w, _ = frame.shape
    return {"height": int(h), "width": int(w), "encoding": encoding, "is_bigendian": 0, "step": int(w) * 3}


def pixel_buffer(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous uint8 array (itself when it already is, else one copy)."""
    check_frame(frame)
    return frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)


def image_data(frame: np.ndarray) -> array.array:
    """The pixels of ``frame`` as a new ``array.array('B')``: one copy when ``frame`` is contiguous."""
    data = array.array("B")
    data.frombytes(pixel_buffer(frame))
    return data


def fill_image(msg: ImageMsgLike, frame: np.ndarray, encoding: str = RGB8) -> ImageMsgLike:
    """Set an Image message's fields and pixels from an RGB ``frame`` (one copy); returns ``msg``.

    ``encoding`` names what ``frame`` holds: pass ``bgr8`` only for a frame already in BGR order.
    The header is left to the caller (stamp = capture time, frame_id = optical frame).
    """
    for key, value in image_fields(frame, encoding).items():
        setattr(msg, key, value)
    # The generated setter copies its argument into a fresh array.array (cheap here: it is empty);
    # frombytes then appends the pixels in place in one memcpy.
    msg.data = array.array("B")
    msg.data.frombytes(pixel_buffer(frame))
    return msg


def fill_depth_image(msg: ImageMsgLike, depth_mm: np.ndarray) -> ImageMsgLike:
    """Set an Image message's fields and pixels from an H×W uint16 depth map in millimetres (16UC1)."""
    if not isinstance(depth_mm, np.ndarray) or depth_mm.dtype != np.uint16 or depth_mm.ndim != 2 \
            or depth_mm.size == 0:
        raise ObservationError(f"depth: expected an HxW uint16 array, got "
                               f"{getattr(depth_mm, 'shape', type(depth_mm).__name__)} "
                               f"{getattr(depth_mm, 'dtype', '')}")
    h, w = depth_mm.shape
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = int(h), int(w), DEPTH16, 0, int(w) * 2
    msg.data = array.array("B")
    # As bytes (little-endian uint16, is_bigendian 0): array('B').frombytes wants a byte-format buffer.
    contiguous = depth_mm if depth_mm.flags.c_contiguous else np.ascontiguousarray(depth_mm)
    msg.data.frombytes(memoryview(contiguous.astype("<u2", copy=False)).cast("B"))
    return msg


def image_from_msg_fields(height: int, width: int, encoding: str, step: int, data: Any,
                          what: str = "image") -> np.ndarray:
    """Decode Image fields into an H×W×3 uint8 RGB array.

    rgb8 without row padding returns a zero-copy view on ``data`` (keep the message or copy the
    result if you modify it); bgr8 and padded rows cost one copy. ``what`` (e.g. the topic) prefixes
    error messages. Raises ObservationError for an unsupported encoding or inconsistent sizes.
    """
    if encoding not in DECODABLE_ENCODINGS:
        raise ObservationError(
            f"{what}: encoding {encoding!r} is not supported; "
            f"publish one of {', '.join(DECODABLE_ENCODINGS)}")
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ObservationError(f"{what}: empty image ({width}x{height})")
    row_bytes = width * 3
    if step < row_bytes:
        raise ObservationError(
            f"{what}: step {step} is smaller than width*3 = {row_bytes} for {width}x{height} {encoding}")
    try:
        flat = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ObservationError(f"{what}: data is not a byte buffer ({type(data).__name__}): {exc}") from exc
    if flat.size != step * height:
        raise ObservationError(
            f"{what}: data has {flat.size} bytes but step*height = {step}*{height} = {step * height} "
            f"for {width}x{height} {encoding}")
    rows: np.ndarray = flat.reshape(height, step)
    if step != row_bytes:
        rows = rows[:, :row_bytes]
    frame: np.ndarray = rows.reshape(height, width, 3)
    if encoding == BGR8:
        frame = bgr_to_rgb(frame)
    return frame


@dataclass(frozen=True)
class CdrImage:
    """A sensor_msgs/Image decoded from its CDR bytes: header fields and the RGB frame."""

    stamp_sec: int
    stamp_nanosec: int
    frame_id: str
    image: np.ndarray

    @property
    def stamp_s(self) -> float:
        return self.stamp_sec + self.stamp_nanosec * 1e-9


def image_from_cdr(data: Any, what: str = "image") -> CdrImage:
    """Decode a serialized sensor_msgs/Image (the CDR bytes DDS carries: a ``raw=True`` subscription, a bag).

    The rgb8 frame is a zero-copy view on ``data``, so a subscriber that takes raw bytes skips rclpy's
    deserialization and its conversion to a Python message (two copies and two fresh 900 KB buffers
    per 640x480 frame). Layout: 4-byte encapsulation header (CDR little or big endian), then the fields
    in order, each aligned to its size counted from the end of that header.
    """
    buf = memoryview(data).cast("B")
    if len(buf) < 8 or buf[0] != 0 or buf[1] not in (0, 1):
        raise ObservationError(f"{what}: not CDR-encapsulated data ({len(buf)} bytes)")
    order = "<" if buf[1] == 1 else ">"
    pos = 4

    def take(fmt: str, size: int) -> tuple[Any, ...]:
        nonlocal pos
        pos = 4 + -(-(pos - 4) // size) * size  # align
        if pos + struct.calcsize(order + fmt) > len(buf):
            raise ObservationError(f"{what}: CDR data ends early ({len(buf)} bytes)")
        values = struct.unpack_from(order + fmt, buf, pos)
        pos += struct.calcsize(order + fmt)
        return values

    def take_bytes(n: int) -> memoryview:
        nonlocal pos
        if n < 0 or pos + n > len(buf):
            raise ObservationError(f"{what}: CDR data ends early ({len(buf)} bytes, field of {n} at {pos})")
        out = buf[pos:pos + n]
        pos += n
        return out

    def take_string() -> str:
        (n,) = take("I", 4)
        return bytes(take_bytes(n)[:-1] if n else b"").decode("utf-8", errors="replace")

    sec, nanosec = take("iI", 4)
    frame_id = take_string()
    height, width = take("II", 4)
    encoding = take_string()
    take_bytes(1)  # is_bigendian: only meaningful for multi-byte encodings
    (step,) = take("I", 4)
    (n,) = take("I", 4)
    pixels = take_bytes(n)
    image = image_from_msg_fields(height, width, encoding, step, pixels, what)
    return CdrImage(int(sec), int(nanosec), frame_id, image)


def image_from_msg(msg: ImageMsgLike, what: str = "image") -> np.ndarray:
    """:func:`image_from_msg_fields` on a sensor_msgs/Image (or anything with the same fields)."""
    return image_from_msg_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, what)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """Swap channel order (RGB<->BGR) into a new contiguous array."""
    if cv2 is not None:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(frame[..., ::-1])


# ---- JPEG ----------------------------------------------------------------------------------------

def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB frame. ``quality`` is 1..100."""
    check_frame(frame)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg quality must be in 1..100, got {quality}")
    if cv2 is not None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ObservationError(f"OpenCV failed to JPEG-encode a {frame.shape} frame")
        return buf.tobytes()
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(frame, mode="RGB").save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def decode_jpeg(data: Any, what: str = "jpeg") -> np.ndarray:
    """Decode JPEG (or PNG) bytes into an H×W×3 uint8 RGB array; ObservationError if undecodable."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ObservationError(f"{what}: no compressed data")
    if cv2 is not None:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ObservationError(f"{what}: {buf.size} bytes are not a decodable JPEG/PNG image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(buf.tobytes())) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ObservationError(
            f"{what}: {buf.size} bytes are not a decodable JPEG/PNG image ({exc})") from exc


def image_from_compressed_fields(fmt: str, data: Any, what: str = "compressed image") -> np.ndarray:
    """Decode sensor_msgs/CompressedImage fields (``format``, ``data``) into an RGB frame."""
    lowered = fmt.lower()
    if "jpeg" not in lowered and "jpg" not in lowered and "png" not in lowered:
        raise ObservationError(f"{what}: format {fmt!r} is not supported; expected jpeg or png")
    return decode_jpeg(data, what)


# ---- frame health --------------------------------------------------------------------------------

# Sparse grid for the checks below: every 8th row and column keeps them ~0.05 ms at 640×480 while still
# seeing any real image content (and the sensor noise that makes two live frames differ).
CHECK_STRIDE = 8
BLANK_MAX_STD = 2.0  # grey-level standard deviation below which a frame carries no picture
SATURATED_LEVEL = 250
SATURATED_MAX_FRACTION = 0.9  # more than this share of pixels blown out in every channel: overexposed


def frame_exposure_problem(frame: np.ndarray) -> str | None:
    """Why ``frame`` cannot be a real view of the scene (blank or saturated), or None if it can.

    Blank: (nearly) one grey level everywhere (a capped lens, a dead sensor, a driver handing out
    zeroed buffers). Saturated: nearly every pixel at full scale in every channel (blown-out exposure).
    """
    check_frame(frame)
    grid = frame[::CHECK_STRIDE, ::CHECK_STRIDE]
    grey = grid.mean(axis=2, dtype=np.float32)
    mean, std = float(grey.mean()), float(grey.std())
    saturated = float(np.all(grid >= SATURATED_LEVEL, axis=2).mean())
    if saturated > SATURATED_MAX_FRACTION:
        return f"saturated ({100 * saturated:.0f}% of pixels at >= {SATURATED_LEVEL} in every channel)"
    if std < BLANK_MAX_STD:
        kind = "black" if mean < 16 else "uniform"
        return f"blank ({kind}: grey level {mean:.0f} +- {std:.1f})"
    return None


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """A small copy of ``frame`` (every 8th row and column) to tell a repeated frame from a new one.

    Two frames from a live sensor always differ somewhere (noise); a driver that hangs and hands out
    the same buffer again gives identical signatures.
    """
    return np.array(frame[::CHECK_STRIDE, ::CHECK_STRIDE], copy=True)


# ---- geometry ------------------------------------------------------------------------------------

def resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frame`` resized to ``width``×``height`` (itself if already that size).

    Area averaging when shrinking (no aliasing of fine texture), bilinear when enlarging.
    """
    check_frame(frame)
    if width <= 0 or height <= 0:
        raise ValueError(f"resize target must be positive, got {width}x{height}")
    h, w, _ = frame.shape
    if (w, h) == (width, height):
        return frame
    if cv2 is not None:
        shrinking = width * height < w * h
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(frame, (width, height), interpolation=interpolation)
    from PIL import Image as PILImage

    img = PILImage.fromarray(np.ascontiguousarray(frame), mode="RGB")
    return np.asarray(img.resize((width, height), PILImage.Resampling.BILINEAR))


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole camera model in pixels, laid out as sensor_msgs/CameraInfo wants it."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    d: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def k(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    @property
    def r(self) -> list[float]:
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]

    @property
    def p(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def camera_info_fields(self) -> dict[str, Any]:
        """Keyword arguments for sensor_msgs/CameraInfo (without header)."""
        return {"height": self.height, "width": self.width, "distortion_model": self.distortion_model,
                "d": list(self.d), "k": self.k, "r": self.r, "p": self.p}


def pinhole_intrinsics(width: int, height: int,
                       horizontal_fov_deg: float = DEFAULT_HFOV_DEG) -> PinholeIntrinsics:
    """Plausible uncalibrated intrinsics: square pixels, principal point at the centre, given HFOV."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 1.0 <= horizontal_fov_deg < 180.0:
        raise ValueError(f"horizontal_fov_deg must be in [1, 180), got {horizontal_fov_deg}")
    f = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    # Pixel centres run 0..w-1, so the optical axis through the image centre is at (w-1)/2.
    return PinholeIntrinsics(width=width, height=height, fx=f, fy=f,
                             cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)
