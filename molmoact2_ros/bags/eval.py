"""Offline evaluation of a policy on recorded bags, through the same inference component as the live node.

For each decision point the bag's messages, fed in log order to a
:class:`~molmoact2_ros.backends.policy.inference.PolicyInference`, make the observation the live node would
have made, and the policy runs on it. Decision points:

- the stamps of the chunks recorded on ``/molmoact2/action_chunk`` (what the live policy decided on), when
  the bag has them and no ``period_s`` is given: the decision is taken as soon as every camera has moved
  to that stamp, as the live node does when it is idle;
- otherwise every ``period_s`` seconds of observation time (default: half a chunk).

Each predicted chunk (step k meant for ``stamp + k / rate``) is compared with the *reference* at those
times: what the driver commanded (``~/commanded`` or ``~/shadow_commanded``) when the bag has it, else the
following ``/joint_states``. Metrics: per-joint error over the horizon (mean, RMS, max), error by horizon
step, error over time, chunk-splice jumps (a new chunk's first step against the previous chunk at that
time), the latency of the recorded chunks (recorder receipt minus capture stamp) and, with recorded chunks,
how far the predictions are from them. ``shadow``: no model; the recorded chunks are scored as the
predictions (a live run's own decisions, e.g. in the driver's shadow mode).

Deterministic: no wall clock decides anything; "now" is the newest stamp fed. A bag error (truncated,
wrong topic, clock jump, ...) stops that bag; what was evaluated up to it is scored and kept.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.bags.reader import BagError, BagReader, RecordedChunk, Series
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import MolmoAct2RosError

# Two stamps within this are the same decision point (stamps round-trip through nanoseconds).
STAMP_MATCH_S = 1e-6


@dataclass
class Prediction:
    stamp_s: float
    positions: np.ndarray  # (steps, dof), embodiment joint order
    rate_hz: float
    latency_ms: float = float("nan")

    def times(self) -> np.ndarray:
        return self.stamp_s + np.arange(self.positions.shape[0]) / self.rate_hz


@dataclass
class BagEval:
    """One bag's evaluation: predictions, the reference, metrics, and the error that stopped it (if any)."""

    bag: str
    joint_names: list[str]
    shadow: bool
    predictions: list[Prediction] = field(default_factory=list)
    reference: Series | None = None
    recorded: list[RecordedChunk] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    error_topic: str = ""
    wall_s: float = 0.0
    bag_duration_s: float = 0.0
    decisions_missed: int = 0
    decisions_blocked: int = 0


@dataclass
class EvalOptions:
    period_s: float | None = None  # None: recorded chunk stamps if any, else half a chunk
    shadow: bool = False
    reference: str = "auto"  # auto | commanded | joint_states
    instruction: str = ""  # used when the bag has no instruction (or overrides it when set)
    max_clock_jump_s: float = 5.0


REFERENCES = ("auto", "commanded", "joint_states")


def evaluate_bag(path: str | Path, emb: EmbodimentConfig, make_inference: Callable[[], Any] | None,
                 options: EvalOptions, progress: Callable[[int], None] | None = None,
                 on_total: Callable[[int], None] | None = None) -> BagEval:
    """Evaluate one bag. ``make_inference`` builds a fresh :class:`PolicyInference` (None with ``shadow``).
    Bag errors (one that does not open included) are recorded in the result (``error``), never raised."""
    result = BagEval(str(path), list(emb.joint_names), options.shadow)
    started = time.perf_counter()
    try:
        reader = BagReader(path, emb, max_clock_jump_s=options.max_clock_jump_s)
    except BagError as exc:  # nothing evaluated: the report still lists the bag and why
        return failed(path, emb, options, exc)
    with reader:
        result.bag_duration_s = reader.duration_s
        try:
            result.reference = _reference(reader, options.reference)
            result.recorded = reader.recorded_chunks()
            if options.shadow:
                if not result.recorded:
                    raise BagError(reader.path, "/molmoact2/action_chunk",
                                   "is not in the bag or empty: --shadow scores the recorded chunks")
                result.predictions = [Prediction(r.chunk.stamp_s, r.chunk.positions, r.chunk.rate_hz)
                                      for r in result.recorded]
            else:
                assert make_inference is not None
                if on_total is not None:
                    on_total(reader.message_count(reader.input_topics))
                _run_policy(reader, make_inference(), result, options, progress)
        except BagError as exc:
            result.error, result.error_topic = str(exc), exc.topic
    result.wall_s = time.perf_counter() - started
    result.metrics = score(result, emb)
    return result


def check_bag(path: str | Path, emb: EmbodimentConfig, options: EvalOptions) -> None:
    """What can be known about a bag without reading its messages: it opens, and has the topics (of the
    right types) this evaluation needs. Raises BagError; the CLI runs it on every bag before loading a
    model, so a run with no usable bag stops at once."""
    with BagReader(path, emb, max_clock_jump_s=options.max_clock_jump_s) as reader:
        _reference_topic(reader, options.reference)
        if options.shadow and reader.chunk_topic is None:
            raise BagError(reader.path, "/molmoact2/action_chunk",
                           "is not in the bag: --shadow scores the recorded chunks")


def failed(path: str | Path, emb: EmbodimentConfig, options: EvalOptions, exc: BagError) -> BagEval:
    """The result for a bag that could not be evaluated at all (the report lists it and why)."""
    result = BagEval(str(path), list(emb.joint_names), options.shadow, error=str(exc),
                      error_topic=getattr(exc, "topic", ""))
    result.metrics = score(result, emb)
    return result


def _reference_topic(reader: BagReader, which: str) -> str:
    if which not in REFERENCES:
        raise ValueError(f"reference {which!r}: use one of {', '.join(REFERENCES)}")
    if which == "commanded" and reader.commanded is None:
        raise BagError(reader.path, "/molmoact2_driver/commanded",
                       "is not in the bag (nor ~/shadow_commanded); use --reference joint_states")
    return reader.commanded if which in ("auto", "commanded") and reader.commanded else reader.joint_states


def _reference(reader: BagReader, which: str) -> Series:
    return reader.series(_reference_topic(reader, which))


def _run_policy(reader: BagReader, inference: Any, result: BagEval, options: EvalOptions,
                progress: Callable[[int], None] | None) -> None:
    emb = reader.emb
    targets = [] if options.period_s else sorted({round(r.chunk.stamp_s, 9) for r in result.recorded})
    period = options.period_s or (emb.chunk.n_action_steps / emb.control_rate_hz) / 2
    if options.instruction:
        inference.set_instruction(options.instruction)
    cameras = emb.camera_names
    next_target = 0  # index into targets
    next_due = -math.inf  # period mode: observation time of the next decision
    newest = -math.inf
    fed = 0
    for event in reader.events():
        fed += 1
        if progress is not None and fed % 64 == 0:
            progress(64)
        if event.kind == "instruction":
            if not options.instruction:
                inference.set_instruction(event.data)
            continue
        if event.kind == "joint_state":
            inference.set_joint_state(event.data)
            newest = max(newest, inference.joint_state_stamp_s)
            continue
        if event.kind == "image":
            inference.add_image_cdr(event.camera, event.data, what=event.topic)
        else:
            inference.add_compressed(event.camera, event.data, what=event.topic)
        stamps = inference.frame_stamps_s
        newest = max(newest, stamps[event.camera])
        if len(stamps) < len(cameras):
            continue
        obs_stamp = min(stamps[c] for c in cameras)
        if targets:
            while next_target < len(targets) and targets[next_target] < obs_stamp - STAMP_MATCH_S:
                next_target += 1  # the frames of that decision never all came together here
                result.decisions_missed += 1
            if next_target >= len(targets) or abs(targets[next_target] - obs_stamp) > STAMP_MATCH_S:
                continue
            next_target += 1
        elif obs_stamp < next_due:
            continue
        decision = inference.poll(newest)
        if decision.kind != "ready":
            if decision.kind == "blocked":
                result.decisions_blocked += 1
            continue
        next_due = obs_stamp + period
        try:
            out = inference.infer(decision)
        except MolmoAct2RosError as exc:
            raise BagError(reader.path, event.topic, f"inference failed at stamp {obs_stamp:.6f}: {exc}") from exc
        chunk = out.chunk
        result.predictions.append(Prediction(chunk.stamp_s, chunk.positions, chunk.rate_hz, out.latency_ms))
    if progress is not None:
        progress(fed % 64)
    result.decisions_missed += max(0, len(targets) - next_target)


# ---- scoring ------------------------------------------------------------------------------------
def _interp(series: Series, times: np.ndarray) -> np.ndarray:
    """Reference positions at ``times`` (linear), NaN outside the recorded span."""
    out = np.full((times.size, series.positions.shape[1]), np.nan)
    if series.t.size < 2:
        return out
    inside = (times >= series.t[0]) & (times <= series.t[-1])
    for j in range(series.positions.shape[1]):
        out[inside, j] = np.interp(times[inside], series.t, series.positions[:, j])
    return out


def _chunk_at(pred: Prediction, t: float) -> np.ndarray | None:
    """Where ``pred`` puts the arm at time ``t`` (linear between steps); None outside its span."""
    times = pred.times()
    if not times[0] <= t <= times[-1]:
        return None
    return np.array([np.interp(t, times, pred.positions[:, j]) for j in range(pred.positions.shape[1])])


def _stats(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": float("nan"), "rms": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(finite.mean()), "rms": float(np.sqrt(np.mean(finite ** 2))), "max": float(finite.max()),
            "n": int(finite.size)}


def errors(result: BagEval) -> np.ndarray:
    """|predicted - reference| as (decisions, steps, dof); NaN where the reference does not reach."""
    if not result.predictions or result.reference is None:
        return np.zeros((0, 0, len(result.joint_names)))
    steps = max(p.positions.shape[0] for p in result.predictions)
    out = np.full((len(result.predictions), steps, len(result.joint_names)), np.nan)
    for i, pred in enumerate(result.predictions):
        ref = _interp(result.reference, pred.times())
        out[i, :pred.positions.shape[0]] = np.abs(pred.positions - ref)
    return out


def score(result: BagEval, emb: EmbodimentConfig) -> dict[str, Any]:
    """The metrics of one bag (plain JSON types; NaN where nothing could be measured)."""
    names = list(emb.joint_names)
    err = errors(result)
    m: dict[str, Any] = {
        "bag": result.bag, "mode": "shadow" if result.shadow else "policy",
        # Errors and jumps are in robot space: each joint's own unit, as on /joint_states and the chunks.
        "space": "robot", "units": {j.name: j.unit for j in emb.joints},
        "reference": result.reference.topic if result.reference is not None else "",
        "decisions": len(result.predictions), "decisions_missed": result.decisions_missed,
        "decisions_blocked": result.decisions_blocked,
        "bag_duration_s": result.bag_duration_s, "wall_s": result.wall_s,
        "realtime_factor": result.bag_duration_s / result.wall_s if result.wall_s > 0 else float("nan"),
        "error": result.error, "error_topic": result.error_topic, "complete": not result.error,
    }
    if result.predictions:
        m["evaluated_span_s"] = [result.predictions[0].stamp_s, result.predictions[-1].stamp_s]
    m["error_overall"] = _stats(err.reshape(-1))
    m["error_by_joint"] = {n: _stats(err[:, :, j].reshape(-1)) for j, n in enumerate(names)} if err.size else {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no reference there
        by_step = np.nanmean(err, axis=(0, 2)) if err.size else np.zeros(0)
        over_time = np.nanmean(err, axis=(1, 2)) if err.size else np.zeros(0)
    m["error_by_step"] = [None if not np.isfinite(v) else float(v) for v in by_step]
    m["error_over_time"] = [[p.stamp_s, None if not np.isfinite(v) else float(v)]
                            for p, v in zip(result.predictions, over_time, strict=False)]
    jumps = []
    for prev, new in zip(result.predictions, result.predictions[1:], strict=False):
        at = _chunk_at(prev, new.stamp_s)
        if at is not None:
            jumps.append(np.abs(new.positions[0] - at))
    jump_arr = np.asarray(jumps).reshape(-1, len(names))
    m["splice_jumps"] = {"count": int(jump_arr.shape[0]), "overall": _stats(jump_arr.reshape(-1)),
                         "by_joint": {n: _stats(jump_arr[:, j]) for j, n in enumerate(names)}}
    lat = np.array([(r.log_s - r.chunk.stamp_s) * 1e3 for r in result.recorded])
    m["recorded_chunks"] = len(result.recorded)
    m["recorded_latency_ms"] = ({"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                 "max": float(lat.max())} if lat.size else {})
    inf_lat = np.array([p.latency_ms for p in result.predictions if np.isfinite(p.latency_ms)])
    m["inference_latency_ms"] = ({"p50": float(np.percentile(inf_lat, 50)), "max": float(inf_lat.max())}
                                 if inf_lat.size else {})
    if result.recorded and not result.shadow:
        by_stamp = {round(r.chunk.stamp_s, 9): r.chunk.positions for r in result.recorded}
        diffs = [np.abs(p.positions - by_stamp[round(p.stamp_s, 9)]).reshape(-1)
                 for p in result.predictions
                 if round(p.stamp_s, 9) in by_stamp and by_stamp[round(p.stamp_s, 9)].shape == p.positions.shape]
        m["vs_recorded_chunks"] = _stats(np.concatenate(diffs)) if diffs else _stats(np.zeros(0))
    return m


def aggregate(results: list[BagEval]) -> dict[str, Any]:
    """Across bags: decisions, error weighted by samples, worst splice jump, total realtime factor."""
    n = sum(r.metrics["error_overall"]["n"] for r in results)
    mean = (sum(r.metrics["error_overall"]["mean"] * r.metrics["error_overall"]["n"]
                for r in results if r.metrics["error_overall"]["n"]) / n) if n else float("nan")
    jumps = [r.metrics["splice_jumps"]["overall"]["max"] for r in results if r.metrics["splice_jumps"]["count"]]
    wall = sum(r.wall_s for r in results)
    return {"bags": len(results), "complete": sum(1 for r in results if not r.error),
            "decisions": sum(r.metrics["decisions"] for r in results), "error_mean": mean, "error_samples": n,
            "error_max": max((r.metrics["error_overall"]["max"] for r in results
                              if r.metrics["error_overall"]["n"]), default=float("nan")),
            "splice_jump_max": max(jumps, default=float("nan")),
            "bag_duration_s": sum(r.bag_duration_s for r in results), "wall_s": wall,
            "realtime_factor": sum(r.bag_duration_s for r in results) / wall if wall > 0 else float("nan")}
