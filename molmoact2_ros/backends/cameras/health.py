"""Camera health as diagnostics: the per-camera judgement every camera publisher reports the same way.

:func:`camera_health` turns each :class:`~molmoact2_ros.backends.cameras.stream.CameraStream`'s counters
into ``/diagnostics`` values and one level: ERROR when a camera is disconnected, frozen, dead, or has
published nothing for longer than its ``max_age_s``; WARN when a camera runs under 80% of its rate,
fails reads, drops more than 5% of its frames, or its finite source ended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from molmoact2_ros.backends.cameras.stream import CameraStream
from molmoact2_ros.core.embodiment import CameraConfig
from molmoact2_ros.nodes.diagnostics import ERROR, OK, WARN

LOW_RATE_FRACTION = 0.8  # WARN below this fraction of the target fps
DROP_WARN_FRACTION = 0.05  # WARN when more than this share of the expected frames was dropped
STARTUP_GRACE_S = 2.0  # no rate warning before a camera has run this long
# Fast DDS's default shared-memory segment (what rmw_fastrtps uses under LOCALHOST) is 512 KiB; frames
# above about half of it are lost between processes without the shipped profile.
DEFAULT_SHM_SAFE_BYTES = 256 * 1024

# Counters copied from CameraStream.stats() into the diagnostics values, per camera.
_STAT_KEYS = ("rate_hz", "frames_published", "drops", "read_failures", "consecutive_read_failures", "reopens",
              "reconnects", "frozen", "frozen_frames", "last_frame_age_s", "capture_to_publish_ms", "publish_ms",
              "jpeg_ms", "preflight", "last_error")


def dds_profile_in_use(env: Mapping[str, str] | None = None) -> str:
    """What configures Fast DDS transports in this process, for diagnostics and the startup log."""
    env = os.environ if env is None else env
    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        if env.get(key):
            return os.path.basename(env[key])
    if env.get("FASTDDS_BUILTIN_TRANSPORTS"):
        return f"FASTDDS_BUILTIN_TRANSPORTS={env['FASTDDS_BUILTIN_TRANSPORTS']}"
    return "none (Fast DDS defaults)"


def transport_warning(configs: Iterable[CameraConfig], env: Mapping[str, str] | None = None) -> str:
    """A warning when frames this large will be lost between processes on the default transport; '' if fine."""
    env = os.environ if env is None else env
    biggest = max((c.width * c.height * 3 for c in configs), default=0)
    has_profile = bool(env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE"))
    # Under LOCALHOST rmw_fastrtps installs its own transports and FASTDDS_BUILTIN_TRANSPORTS is ignored.
    builtin_honoured = bool(env.get("FASTDDS_BUILTIN_TRANSPORTS")) and \
        env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST") not in ("", "LOCALHOST")
    if biggest > DEFAULT_SHM_SAFE_BYTES and not has_profile and not builtin_honoured:
        return (f"{biggest / 1024:.0f} KiB frames over Fast DDS's default 512 KiB shared-memory segment "
                f"({dds_profile_in_use(env)}): between processes most of them will be lost; set "
                "FASTDDS_DEFAULT_PROFILES_FILE to config/dds/fastdds_local_large_data.xml (the bringup does)")
    return ""


def inactive_values(configs: Iterable[CameraConfig], state: str) -> dict[str, Any]:
    """Per-camera values while nothing is published (unconfigured, inactive)."""
    values: dict[str, Any] = {}
    for cfg in configs:
        values.update({f"{cfg.name}.source": cfg.source, f"{cfg.name}.frames_published": 0,
                       f"{cfg.name}.state": state})
    return values


def camera_health(streams: Mapping[str, CameraStream],
                  now: float | None = None) -> tuple[int, list[str], dict[str, Any]]:
    """(level, problems, values) for running streams; see the module docstring for the levels."""
    now = time.monotonic() if now is None else now
    level, problems, values = OK, [], {}
    for name, stream in streams.items():
        s = stream.stats()
        cfg = stream.config
        values.update({f"{name}.state": s["state"], f"{name}.source": cfg.source, f"{name}.device": cfg.device,
                       f"{name}.resolution": f"{cfg.width}x{cfg.height}", f"{name}.target_fps": cfg.fps})
        values.update({f"{name}.{key}": s[key] for key in _STAT_KEYS})
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
            problems.append(f"{name}: no frame for {s['last_frame_age_s']:.1f} s (max_age_s {cfg.max_age_s:g})")
        elif s["consecutive_read_failures"] > 0 or (
                now - stream.started_at > STARTUP_GRACE_S and s["rate_hz"] < LOW_RATE_FRACTION * cfg.fps):
            level = max(level, WARN)
            problems.append(f"{name}: {s['rate_hz']:.1f} of {cfg.fps:g} Hz, "
                            f"{s['consecutive_read_failures']} failed reads in a row")
        elif s["recent_drop_fraction"] > DROP_WARN_FRACTION:
            level = max(level, WARN)
            problems.append(f"{name}: dropping {100 * s['recent_drop_fraction']:.0f}% of frames")
    return level, problems, values
