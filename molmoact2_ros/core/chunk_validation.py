"""Validation of a received action chunk against the embodiment and the clock (the safety stack's first stage).

A chunk that passes holds only finite positions within a margin of the joint envelope, uniform steps at
the embodiment's control rate, a plausible stamp and no step the joints could not make: everything
downstream (scheduler, shaper) can then do plain arithmetic on it without overflow. A chunk that fails is
rejected whole with a short, stable tag (``REJECT_*``; diagnostics keys are ``rejected_<tag>``) and a
message naming the joint, step and limit. No rclpy here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import ChunkRejected

REJECT_EMPTY = "empty"
REJECT_SHAPE = "shape"
REJECT_JOINT_NAMES = "joint_names"
REJECT_NON_FINITE = "non_finite"
REJECT_OUT_OF_RANGE = "out_of_range"
REJECT_RATE = "rate"
REJECT_TIME_FROM_START = "time_from_start"
REJECT_NO_STAMP = "no_stamp"
REJECT_FUTURE_STAMP = "future_stamp"
REJECT_TOO_OLD = "too_old"
REJECT_STEP_JUMP = "step_jump"
REJECT_OUT_OF_ORDER = "out_of_order"
REJECT_EXPIRED = "expired"
REJECT_ENTRY_TOO_FAR = "entry_too_far"
REJECT_INACTIVE = "inactive"
REJECT_ESTOP = "estop"
REJECT_FAULT = "fault"
REJECT_TOO_LONG = "too_long"  # more steps than chunk.max_steps: refused before its points are decoded
REJECT_MALFORMED = "malformed"  # the message bytes are not a JointTrajectory
REJECT_REASONS = (
    REJECT_EMPTY, REJECT_SHAPE, REJECT_JOINT_NAMES, REJECT_NON_FINITE, REJECT_OUT_OF_RANGE, REJECT_RATE,
    REJECT_TIME_FROM_START, REJECT_NO_STAMP, REJECT_FUTURE_STAMP, REJECT_TOO_OLD, REJECT_STEP_JUMP,
    REJECT_OUT_OF_ORDER, REJECT_EXPIRED, REJECT_ENTRY_TOO_FAR, REJECT_INACTIVE, REJECT_ESTOP, REJECT_FAULT,
    REJECT_TOO_LONG, REJECT_MALFORMED,
)

# A chunk's step rate must match the embodiment's control rate to this relative tolerance: a policy
# configured for another embodiment or rate is a misconfiguration, not something to resample silently.
RATE_TOLERANCE = 0.02
# time_from_start spacing may deviate this much (relative) from uniform (message rounding to ns).
TIME_SPACING_TOLERANCE = 1e-3


def infer_rate_hz(times_from_start_s: Sequence[float], default_rate_hz: float) -> float:
    """Step rate from a trajectory's ``time_from_start`` values (k / rate by contract).

    One point carries no spacing: ``default_rate_hz`` is used. Raises ChunkRejected
    (``time_from_start``) when the first point is not at 0 or the spacing is not uniform and positive.
    """
    times = np.asarray(times_from_start_s, dtype=np.float64)
    if times.size == 0:
        raise ChunkRejected(REJECT_EMPTY, "trajectory has no points")
    if times.size == 1:
        return float(default_rate_hz)
    dts = np.diff(times)
    dt = float(np.mean(dts))
    if abs(times[0]) > TIME_SPACING_TOLERANCE * max(dt, 1e-3) or not (dt > 0 and np.isfinite(dt)):
        raise ChunkRejected(
            REJECT_TIME_FROM_START,
            f"points must be at time_from_start = k / rate starting at 0; got first {times[0]:.6f} s, "
            f"mean spacing {dt:.6f} s",
        )
    if np.max(np.abs(dts - dt)) > TIME_SPACING_TOLERANCE * dt + 2e-9:
        raise ChunkRejected(
            REJECT_TIME_FROM_START,
            f"time_from_start spacing is not uniform (min {np.min(dts):.6f} s, max {np.max(dts):.6f} s)",
        )
    return 1.0 / dt


def validate_chunk(chunk: ActionChunk, embodiment: EmbodimentConfig, now_s: float) -> ActionChunk:
    """Check a received chunk against the embodiment and the clock; return it in embodiment joint order.

    Raises ChunkRejected with one of the ``REJECT_*`` tags. ``now_s`` is the receipt time (ROS time);
    the returned copy carries it in ``received_s``.
    """
    names = list(chunk.joint_names)
    try:
        positions = np.asarray(chunk.positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ChunkRejected(REJECT_SHAPE, f"positions are not a numeric array ({exc})") from None
    if positions.ndim == 0 or positions.size == 0:
        raise ChunkRejected(REJECT_EMPTY, "chunk has no steps")
    if positions.ndim != 2 or positions.shape[1] != len(names):
        raise ChunkRejected(
            REJECT_SHAPE, f"positions shape {positions.shape} does not match {len(names)} joint names"
        )
    expected = embodiment.joint_names
    if len(set(names)) != len(names) or set(names) != set(expected):
        missing = [n for n in expected if n not in names]
        unexpected = [n for n in names if n not in expected]
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ChunkRejected(
            REJECT_JOINT_NAMES,
            f"joint names must be exactly {expected} in any order; missing {missing}, "
            f"unexpected {unexpected}, repeated {repeated}",
        )
    if not np.all(np.isfinite(positions)):
        bad = sorted({names[j] for j in np.argwhere(~np.isfinite(positions))[:, 1]})
        raise ChunkRejected(REJECT_NON_FINITE, f"non-finite positions for joints {bad}")
    order = [names.index(n) for n in expected]
    positions = positions[:, order]
    _check_range(positions, embodiment)
    rate = float(chunk.rate_hz)
    want = embodiment.control_rate_hz
    if not (math.isfinite(rate) and rate > 0) or abs(rate - want) > RATE_TOLERANCE * want:
        raise ChunkRejected(REJECT_RATE, f"step rate {rate:.4g} Hz does not match control_rate_hz {want:g}")
    if not math.isfinite(chunk.stamp_s):
        raise ChunkRejected(REJECT_NO_STAMP, f"stamp {chunk.stamp_s} is not a time")
    safety = embodiment.safety
    ahead = chunk.stamp_s - now_s
    if ahead > safety.future_stamp_tolerance_s:
        raise ChunkRejected(
            REJECT_FUTURE_STAMP,
            f"stamp is {ahead * 1e3:.0f} ms in the future (tolerance "
            f"{safety.future_stamp_tolerance_s * 1e3:.0f} ms): clocks out of sync?",
        )
    age = now_s - chunk.stamp_s
    if age > safety.chunk_max_age_s:
        raise ChunkRejected(
            REJECT_TOO_OLD, f"stamp is {age * 1e3:.0f} ms old (limit {safety.chunk_max_age_s * 1e3:.0f} ms)"
        )
    if positions.shape[0] > 1:
        limit = safety.max_step_jump_factor * embodiment.max_velocity / rate  # (dof,)
        jumps = np.abs(np.diff(positions, axis=0))  # (steps-1, dof)
        ratio = jumps / limit
        worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[worst] > 1.0:
            k, j = int(worst[0]), int(worst[1])
            raise ChunkRejected(
                REJECT_STEP_JUMP,
                f"joint {expected[j]} jumps {jumps[k, j]:.4g} between steps {k} and {k + 1} "
                f"(limit {limit[j]:.4g} = {safety.max_step_jump_factor:g} x max velocity / rate)",
            )
    return replace(chunk, joint_names=list(expected), positions=positions, received_s=now_s,
                   meta=dict(chunk.meta))


def _check_range(positions: np.ndarray, embodiment: EmbodimentConfig) -> None:
    """A position slightly past a limit is a policy asking for the limit (clamped later); one far past it
    is garbage (a unit or scaling bug, an overflow) and rejects the whole chunk."""
    lower, upper = embodiment.lower, embodiment.upper
    margin = embodiment.safety.chunk_limit_margin_fraction * (upper - lower)
    outside = np.maximum(lower - margin - positions, positions - upper - margin)  # > 0: too far out
    if np.any(outside > 0):
        k, j = np.unravel_index(int(np.argmax(outside)), outside.shape)
        name = embodiment.joint_names[int(j)]
        raise ChunkRejected(
            REJECT_OUT_OF_RANGE,
            f"joint {name} = {positions[k, j]:.4g} at step {int(k)} is outside its limits "
            f"[{lower[j]:.4g}, {upper[j]:.4g}] by more than the {embodiment.safety.chunk_limit_margin_fraction:g} x "
            "range margin (safety.chunk_limit_margin_fraction): wrong units or joint order?",
        )
