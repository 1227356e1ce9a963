"""P4: continuity and tracking at chunk splices -- replace outright vs LeRobot's 0.3/0.7 overlap average vs ours.

One recorded stream of action chunks is executed three ways at the same control ticks:

  (a) replace   the newest chunk replaces the old one outright at the tick it arrives;
  (b) lerobot   LeRobot async inference: ``RobotClient._aggregate_action_queues`` with
                ``aggregate_fn_name="weighted_average"`` (``0.3 * old + 0.7 * new`` where the new chunk
                overlaps queued actions) and ``RobotClient.control_loop_action`` popping one action per
                tick, LeRobot 0.6.1's own code (needs ``grpcio``, the ``lerobot[async]`` extra; without it a
                transcription of those two methods runs instead, and the output says so);
  (c) ours      ``core.scheduler.ChunkScheduler`` (time-indexed, smoothstep blend over blend_ticks),
                alone and through the whole ``SafetyStack`` (envelope, velocity and acceleration limits).

All three execute step k of a chunk at the tick for ``capture + k / rate`` (LeRobot by its step counter:
the observation's timestep is the last executed action's, observations are captured on a tick), so only
the splice differs. The stream is generated deterministically: a smooth reference motion (sum of sines
per joint), observations captured on the first tick after the previous inference finished, a slow first
inference (0.8 s warm-up) then log-normal latencies around 150 ms, and per chunk an offset and a slope
error: a real policy's chunk-to-chunk disagreement.

Reported per method: the largest per-tick joint jump (rad, and in units of the per-tick velocity limit
max_velocity / tick_rate), the velocity discontinuity at splices, |v[k+1] - v[k]| over the ticks around
each splice (rad/s), max and p95 over splices, and the tracking error against the reference motion
(command - reference, RMS and max over every joint and tick); then the ratios (c)/(b) and (c)/(a). (a) and
(b) are also passed through the same velocity/acceleration shaper as the stack (``core.motion_limits``),
so (c)+stack can be compared with what their commands become under the same limits. Targets: no jump
above the per-tick limit; velocity discontinuity <= half of (b).

Where the tracking error comes from: the same methods on two more streams with the same latencies,
(exact) chunks without errors and (unforeseen changes) chunks without errors whose reference moves at
random times to a new offset that only observations captured after the change know about.

A PNG of one joint around three splices goes to benchmarks/results/splice_joint.png.

    python benchmarks/bench_splice.py [--seconds 60] [--seed 0] [--no-plot]     # about 20 s
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.motion_limits import MotionShaper
from molmoact2_ros.core.safety import SafetyStack
from molmoact2_ros.core.scheduler import MAX_BLEND_FACTOR, ChunkScheduler, smoothstep

RESULTS = Path(__file__).resolve().parent / "results"
T0 = 100.0
FIRST_LATENCY_S = 0.8
LEROBOT_AGGREGATE = "weighted_average"  # RobotClientConfig's default aggregate_fn_name: 0.3 * old + 0.7 * new
LEROBOT_OLD_WEIGHT = 0.3  # the same, for the transcription used when LeRobot's async code is not importable
CHANGE_EVERY_S = (1.0, 2.5)  # "unforeseen changes": time between changes of the reference's offset
CHANGE_DURATION_S = 0.4  # each change is a smoothstep over this long
# New offset level per joint, |level| uniform in this range (rad; scaled down for short joints), alternating
# in sign: steps stay below the stack's entry_max_distance (0.3 rad on the SO-101), whose rejections would
# measure the entry check instead of the splice.
CHANGE_LEVEL_RAD = (0.03, 0.075)
STREAM_KINDS = ("policy errors", "exact chunks", "unforeseen changes")


@dataclass
class Stream:
    kind: str
    chunks: list[ActionChunk]  # received_s = arrival time
    ticks: np.ndarray  # control tick times
    reference: np.ndarray  # (ticks, dof) the motion the policy is trying to make


def reference_motion(emb: EmbodimentConfig, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sum of three sines per joint around a pose inside the envelope; peak speed ~1.2 rad/s."""
    dof = emb.dof
    center = np.clip(emb.home, emb.lower + 0.5 * (emb.upper - emb.lower) * 0.3,
                     emb.upper - 0.5 * (emb.upper - emb.lower) * 0.3)
    freqs = rng.uniform(0.15, 0.6, (3, dof))
    phases = rng.uniform(0, 2 * np.pi, (3, dof))
    amps = rng.uniform(0.08, 0.25, (3, dof)) * np.minimum(1.0, (emb.upper - emb.lower) / 2.0)
    tt = (t - T0)[:, None, None]
    return center + np.sum(amps * np.sin(2 * np.pi * freqs * tt + phases), axis=1)


def _changes(emb: EmbodimentConfig, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Times and steps (new level - old level, per joint) of the reference's unforeseen offset changes."""
    times, levels = [], [np.zeros(emb.dof)]
    t = T0 + rng.uniform(*CHANGE_EVERY_S)
    scale = np.minimum(1.0, (emb.upper - emb.lower) / 2.0)
    while t < T0 + seconds + 3.0:
        times.append(t)
        # Each new level on the other side of zero: steps up to 2 x CHANGE_LEVEL_RAD[1], inside the entry check.
        levels.append(-np.sign(levels[-1] + 1e-12) * rng.uniform(*CHANGE_LEVEL_RAD, emb.dof) * scale)
        t += rng.uniform(*CHANGE_EVERY_S)
    return np.array(times), np.diff(np.array(levels), axis=0)


def record_stream(emb: EmbodimentConfig, seconds: float, seed: int, kind: str = "policy errors") -> Stream:
    """The chunk stream; every kind has the same latencies and capture times (one random sequence)."""
    if kind not in STREAM_KINDS:
        raise ValueError(f"stream kind {kind!r}: use one of {STREAM_KINDS}")
    rng = np.random.default_rng(seed)
    rate, horizon = emb.control_rate_hz, emb.chunk.action_horizon
    ticks = T0 + np.arange(round(seconds * emb.tick_rate_hz)) / emb.tick_rate_hz
    fine = np.arange(T0 - 1.0, T0 + seconds + 3.0, 1.0 / rate / 4)
    base_fine = reference_motion(emb, fine, np.random.default_rng(seed + 1))
    change_times, change_steps = _changes(emb, seconds, np.random.default_rng(seed + 2))
    if kind != "unforeseen changes":
        change_times, change_steps = change_times[:0], change_steps[:0]

    def known_at(t_known: float, times: np.ndarray) -> np.ndarray:
        """The motion as an observation captured at ``t_known`` sees it: the changes begun by then."""
        out = np.stack([np.interp(times, fine, base_fine[:, j]) for j in range(emb.dof)], axis=1)
        for te, step in zip(change_times, change_steps, strict=True):
            if te <= t_known:
                w = np.array([smoothstep((t - te) / CHANGE_DURATION_S) for t in times])
                out += w[:, None] * step
        return out

    # The first inference (warm-up) starts 0.8 s before T0 with the robot at rest at the reference: its
    # chunk plans the motion from there, so its step k belongs at T0 + k / rate once it arrives.
    times = T0 + np.arange(horizon) / rate
    first = np.clip(known_at(T0 - FIRST_LATENCY_S, times), emb.lower, emb.upper)
    chunks = [ActionChunk(list(emb.joint_names), first, T0 - FIRST_LATENCY_S, rate, received_s=T0)]
    t_obs = T0
    while t_obs < ticks[-1]:
        latency = float(np.clip(rng.lognormal(math.log(0.15), 0.35), 0.06, 0.6))
        offset = rng.normal(0.0, 0.03, emb.dof)  # rad: where the new chunk thinks the motion is
        slope = rng.normal(0.0, 0.15, emb.dof)  # rad/s: how fast it thinks it goes
        times = t_obs + np.arange(horizon) / rate
        positions = known_at(t_obs, times)
        if kind == "policy errors":
            positions = positions + offset + slope * (times - t_obs)[:, None]
        arrival = t_obs + latency
        chunks.append(ActionChunk(list(emb.joint_names), np.clip(positions, emb.lower, emb.upper), t_obs, rate,
                                  received_s=arrival))
        # Async, as a LeRobot client or our perception node: the next observation is the frame of the first
        # tick after this inference is done.
        t_obs = T0 + math.ceil((arrival - T0) * emb.tick_rate_hz - 1e-9) / emb.tick_rate_hz
    return Stream(kind, chunks, ticks, known_at(math.inf, ticks))


def effective_stamp(chunk: ActionChunk, index: int) -> float:
    """Where (a) puts step 0: the first chunk gets our re-anchoring (the robot held still during the warm-up),
    which LeRobot's step counter gives (b) by itself, so that only the splices differ."""
    return chunk.received_s if index == 0 and chunk.received_s is not None else chunk.stamp_s


# ---- the three ways -----------------------------------------------------------------------------

def _arrivals_by_tick(stream: Stream) -> list[list[tuple[int, ActionChunk]]]:
    """(index, chunk) delivered at each tick (those that arrived since the previous tick)."""
    out: list[list[tuple[int, ActionChunk]]] = [[] for _ in stream.ticks]
    for n, c in enumerate(stream.chunks):
        assert c.received_s is not None
        i = int(np.searchsorted(stream.ticks, c.received_s - 1e-9))
        if i < len(out):
            out[i].append((n, c))
    return out


def run_replace(stream: Stream, emb: EmbodimentConfig) -> np.ndarray:
    rate = emb.control_rate_hz
    current: tuple[int, ActionChunk] | None = None
    hold = stream.chunks[0].positions[0].copy()
    out = []
    for t, new in zip(stream.ticks, _arrivals_by_tick(stream), strict=True):
        if new:
            current = new[-1]
        if current is not None:
            n, chunk = current
            k = min(max(round((t - effective_stamp(chunk, n)) * rate), 0), chunk.steps - 1)
            hold = chunk.positions[k]
        out.append(hold.copy())
    return np.array(out)


class _LeRobotQueue:
    """What (b) needs from LeRobot's RobotClient: aggregate an incoming chunk, pop one action per tick."""

    def __init__(self, emb: EmbodimentConfig):
        self.names = list(emb.joint_names)
        self.latest_action = -1  # timestep of the last executed action

    def aggregate(self, timestep0: int, positions: np.ndarray) -> None:
        raise NotImplementedError

    def pop(self) -> np.ndarray | None:
        raise NotImplementedError


class _LeRobotNative(_LeRobotQueue):
    """LeRobot 0.6.1's own ``RobotClient`` methods on a client built without ``__init__`` (which would connect
    a robot and open a gRPC channel): only the queue, the locks and a robot stub that records the action."""

    def __init__(self, emb: EmbodimentConfig, api: dict[str, Any]):
        super().__init__(emb)
        import torch

        self._torch = torch
        self._timed_action = api["TimedAction"]
        self._aggregate_fn = api["get_aggregate_function"](LEROBOT_AGGREGATE)
        client = api["RobotClient"].__new__(api["RobotClient"])
        client.action_queue = Queue()
        client.action_queue_lock = threading.Lock()
        client.latest_action_lock = threading.Lock()
        client.latest_action = -1
        client.action_queue_size = []
        client.robot = _RecordingRobot(self.names)
        self.client = client

    def aggregate(self, timestep0: int, positions: np.ndarray) -> None:
        # PolicyServer._time_action_chunk: action i of a chunk for observation timestep i_0 is for i_0 + i.
        timed = [self._timed_action(timestamp=0.0, timestep=timestep0 + i,
                                    action=self._torch.from_numpy(np.array(row, dtype=np.float64)))
                 for i, row in enumerate(positions)]
        self.client._aggregate_action_queues(timed, self._aggregate_fn)

    def pop(self) -> np.ndarray | None:
        if not self.client.actions_available():
            return None
        sent = self.client.control_loop_action()
        self.latest_action = int(self.client.latest_action)
        return np.array([sent[name] for name in self.names], dtype=np.float64)


class _RecordingRobot:
    def __init__(self, names: list[str]):
        self.action_features = {name: float for name in names}

    @staticmethod
    def send_action(action: dict[str, float]) -> dict[str, float]:
        return action


class _LeRobotTranscribed(_LeRobotQueue):
    """The same two methods transcribed (used only when ``lerobot.async_inference`` cannot be imported)."""

    def __init__(self, emb: EmbodimentConfig):
        super().__init__(emb)
        self.queue: dict[int, np.ndarray] = {}

    def aggregate(self, timestep0: int, positions: np.ndarray) -> None:
        future: dict[int, np.ndarray] = {}  # the new queue holds the incoming chunk only
        for i, row in enumerate(positions):
            step = timestep0 + i
            if step <= self.latest_action:
                continue
            old = self.queue.get(step)
            future[step] = row.copy() if old is None else LEROBOT_OLD_WEIGHT * old + (1 - LEROBOT_OLD_WEIGHT) * row
        self.queue = future

    def pop(self) -> np.ndarray | None:
        if not self.queue:
            return None
        step = min(self.queue)
        self.latest_action = step
        return self.queue.pop(step)


def lerobot_api() -> tuple[dict[str, Any] | None, str]:
    """LeRobot's async-inference classes, or None and why not.

    Importing ``robot_client`` sets up logging for the whole process at DEBUG, into a new
    ``logs/robot_client_<time>.log`` under the current directory: imported from a temporary directory,
    and this process's root logger put back as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        try:
            from lerobot.async_inference.configs import get_aggregate_function
            from lerobot.async_inference.helpers import TimedAction
            from lerobot.async_inference.robot_client import RobotClient
        except ImportError as exc:
            return None, str(exc).splitlines()[0]
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
    return {"RobotClient": RobotClient, "TimedAction": TimedAction,
            "get_aggregate_function": get_aggregate_function}, ""


def run_lerobot(stream: Stream, emb: EmbodimentConfig, queue: _LeRobotQueue) -> np.ndarray:
    """The client's loop at our ticks: chunks that arrived are aggregated, then one action is executed; an
    observation captured on tick j carries the timestep of the action executed there (``max(latest, 0)``)."""
    latest_after = np.full(len(stream.ticks), -1, dtype=np.int64)
    hold = stream.chunks[0].positions[0].copy()
    out = []
    for i, new in enumerate(_arrivals_by_tick(stream)):
        for n, c in new:
            if n == 0:
                latest = -1  # captured before the first tick
            else:
                j = round((c.stamp_s - T0) * emb.tick_rate_hz)
                assert 0 <= j < i and abs(stream.ticks[j] - c.stamp_s) < 1e-9, "captures are on ticks"
                latest = int(latest_after[j])
            queue.aggregate(max(latest, 0), c.positions)
        action = queue.pop()
        if action is not None:
            hold = action
        latest_after[i] = queue.latest_action
        out.append(hold.copy())
    return np.array(out)


def run_scheduler(stream: Stream, emb: EmbodimentConfig) -> tuple[np.ndarray, ChunkScheduler]:
    sched = ChunkScheduler.for_embodiment(emb)
    out = []
    hold = stream.chunks[0].positions[0].copy()
    executing = False
    for t, new in zip(stream.ticks, _arrivals_by_tick(stream), strict=True):
        for _, c in new:
            sched.accept(c, t, executing=executing)
        target = sched.target(t)
        if target is not None:
            hold = target
            executing = not sched.is_exhausted(t)
        out.append(hold.copy())
    return np.array(out), sched


def _first_chunk_skipped(stream: Stream, emb: EmbodimentConfig) -> int:
    sched = ChunkScheduler.for_embodiment(emb)
    first = stream.chunks[0]
    assert first.received_s is not None
    return sched.accept(first, first.received_s, executing=False).skipped_steps


def run_stack(stream: Stream, emb: EmbodimentConfig) -> tuple[np.ndarray, SafetyStack]:
    # Watchdog and age limits wide open: this measures the splice, not the policy's punctuality.
    safety = emb.safety.model_copy(update={"watchdog_hold_timeout_s": 5.0, "watchdog_stop_timeout_s": 10.0,
                                           "chunk_max_age_s": 5.0})
    emb = emb.model_copy(update={"safety": safety})
    stack = SafetyStack(emb)
    stack.enable()
    measured = stream.chunks[0].positions[0]  # the robot waits at the first chunk's start
    out = []
    last = measured.copy()
    for t, new in zip(stream.ticks, _arrivals_by_tick(stream), strict=True):
        for _, c in new:
            stack.submit(c, t)
        res = stack.tick(t, last)
        if res.command is not None:
            stack.record_sent(res.command)
            last = res.command
        out.append(last.copy())
    return np.array(out), stack


def through_motion_limits(cmd: np.ndarray, emb: EmbodimentConfig) -> np.ndarray:
    """Another method's commands shaped as the stack shapes ours (``MotionShaper.follow``: velocity,
    acceleration and envelope limits), from rest at its first command."""
    shaper = MotionShaper(emb.lower, emb.upper, emb.max_velocity, emb.max_acceleration)
    dt = 1.0 / emb.tick_rate_hz
    last, velocity, previous = cmd[0].copy(), np.zeros(emb.dof), cmd[0].copy()
    out = [last.copy()]
    for target in cmd[1:]:
        target = np.clip(target, emb.lower, emb.upper)
        shaped = shaper.follow(last, velocity, target, previous, dt)
        last, velocity, previous = shaped.command, shaped.velocity, target
        out.append(last.copy())
    return np.array(out)


def run_all(stream: Stream, emb: EmbodimentConfig, lerobot: Callable[[], _LeRobotQueue]) -> dict[str, Any]:
    ours, sched = run_scheduler(stream, emb)
    replace = run_replace(stream, emb)
    averaged = run_lerobot(stream, emb, lerobot())
    stack_cmd, stack = run_stack(stream, emb)
    runs = {
        "(a) replace": replace,
        "(b) lerobot 0.3/0.7": averaged,
        "(c) ours": ours,
        "(c) ours + safety stack": stack_cmd,
        "(a) + motion limits": through_motion_limits(replace, emb),
        "(b) + motion limits": through_motion_limits(averaged, emb),
    }
    return {"runs": runs, "scheduler": sched, "stack": stack}


# ---- metrics --------------------------------------------------------------------------------------

def splice_ticks(stream: Stream) -> list[int]:
    """Ticks at which a chunk other than the first arrived (one splice each, newest wins)."""
    ticks = [i for i, new in enumerate(_arrivals_by_tick(stream)) if new]
    return ticks[1:]


def tracking(cmd: np.ndarray, reference: np.ndarray, first: int) -> tuple[float, float]:
    """RMS and max of |command - reference| over every joint and tick from ``first`` on (rad)."""
    err = cmd[first:] - reference[first:]
    return float(np.sqrt(np.mean(err ** 2))), float(np.max(np.abs(err)))


def metrics(cmd: np.ndarray, splices: list[int], emb: EmbodimentConfig, window: int,
            reference: np.ndarray) -> dict[str, float]:
    rate = emb.tick_rate_hz
    limit = emb.max_velocity / rate
    steps = np.diff(cmd, axis=0)  # steps[k] = cmd[k+1] - cmd[k]
    vel = steps * rate
    dv = np.abs(np.diff(vel, axis=0))  # dv[k] = |v[k+1] - v[k]|, around tick k+1
    per_splice = []
    jump_at_splice = []
    for s in splices:
        lo, hi = max(s - 2, 0), min(s + window + 1, dv.shape[0])
        if hi > lo:
            per_splice.append(float(dv[lo:hi].max()))
            jump_at_splice.append(float(np.max(np.abs(steps[max(s - 1, 0): min(s + window, steps.shape[0])]))))
    first = splices[0] if splices else 0
    rms, worst = tracking(cmd, reference, first)
    return {
        "max_jump_rad": float(np.max(np.abs(steps[first:]))),
        "max_jump_x_limit": float(np.max(np.abs(steps[first:]) / limit)),
        "splice_jump_p95_rad": float(np.percentile(jump_at_splice, 95)),
        "dv_max": float(max(per_splice)),
        "dv_p95": float(np.percentile(per_splice, 95)),
        "dv_median": float(np.median(per_splice)),
        "track_rms": rms,
        "track_max": worst,
    }


def plot(stream: Stream, runs: dict[str, np.ndarray], splices: list[int], emb: EmbodimentConfig,
         path: Path, joint: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i0 = splices[len(splices) // 3]
    lo, hi = i0 - 12, i0 + 60
    t = stream.ticks[lo:hi] - stream.ticks[i0]
    fig, (ax_p, ax_v) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    ax_p.plot(t, stream.reference[lo:hi, joint], color="0.75", lw=3, label="reference motion")
    styles = {"(a) replace": ("tab:red", "-"), "(b) lerobot 0.3/0.7": ("tab:orange", "-"),
              "(c) ours": ("tab:blue", "-"), "(c) ours + safety stack": ("tab:green", "--")}
    for name, (color, ls) in styles.items():
        cmd = runs[name]
        ax_p.plot(t, cmd[lo:hi, joint], color=color, ls=ls, marker=".", ms=4, lw=1.2, label=name)
        vel = np.diff(cmd[:, joint]) * emb.tick_rate_hz
        ax_v.plot(t[:-1], vel[lo:hi - 1], color=color, ls=ls, marker=".", ms=4, lw=1.2, label=name)
    for s in splices:
        if lo <= s < hi:
            for ax in (ax_p, ax_v):
                ax.axvline(stream.ticks[s] - stream.ticks[i0], color="0.5", ls=":", lw=0.8)
    ax_p.set_ylabel(f"{emb.joint_names[joint]} command (rad)")
    ax_v.set_ylabel("command velocity (rad/s)")
    ax_v.set_xlabel("time from a splice (s); dotted lines: chunk arrivals")
    ax_p.legend(loc="best", fontsize=8)
    ax_p.set_title(f"Chunk splices, {emb.name} at {emb.tick_rate_hz:g} Hz: position (top), velocity (bottom)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ratio_row(name: str, c: dict[str, float], b: dict[str, float]) -> str:
    return (f"{name:<26}{c['max_jump_rad'] / b['max_jump_rad']:>13.3f}{'':>9}"
            f"{c['splice_jump_p95_rad'] / b['splice_jump_p95_rad']:>17.3f}{c['dv_max'] / b['dv_max']:>16.3f}"
            f"{c['dv_p95'] / b['dv_p95']:>10.3f}{c['dv_median'] / b['dv_median']:>10.3f}"
            f"{c['track_rms'] / b['track_rms']:>11.3f}{c['track_max'] / b['track_max']:>11.3f}")


def _ratio(num: float, den: float) -> str:
    return f"{num / den:>13.3f}" if den > 1e-9 else f"{'-':>13}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embodiment", default="so101")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    emb = load_embodiment(args.embodiment)
    if emb.tick_rate_hz != emb.control_rate_hz:
        print("this benchmark compares step-rate execution: pick an embodiment whose tick rate is its step rate",
              file=sys.stderr)
        return 2
    api, why_not = lerobot_api()

    def lerobot_queue() -> _LeRobotQueue:
        return _LeRobotNative(emb, api) if api is not None else _LeRobotTranscribed(emb)

    streams = {kind: record_stream(emb, args.seconds, args.seed, kind) for kind in STREAM_KINDS}
    stream = streams["policy errors"]
    splices = splice_ticks(stream)
    result = run_all(stream, emb, lerobot_queue)
    runs, sched, stack = result["runs"], result["scheduler"], result["stack"]
    first_skipped = _first_chunk_skipped(stream, emb)
    window = round(MAX_BLEND_FACTOR * emb.chunk.blend_ticks) + 2  # the longest (stretched) blend
    table = {name: metrics(cmd, splices, emb, window, stream.reference) for name, cmd in runs.items()}
    limit = emb.max_velocity / emb.tick_rate_hz
    accel_per_tick = emb.max_acceleration / emb.tick_rate_hz
    latencies = [c.received_s - c.stamp_s for c in stream.chunks[1:] if c.received_s is not None]
    skipped = round(FIRST_LATENCY_S * emb.control_rate_hz)

    print(f"P4 chunk splices: {emb.name}, {emb.tick_rate_hz:g} Hz ticks, {len(stream.chunks)} chunks of "
          f"{emb.chunk.action_horizon} steps over {args.seconds:g} s, {len(splices)} splices, seed {args.seed}")
    print(f"latency: first 800 ms, then p50 {np.median(latencies) * 1e3:.0f} ms, "
          f"p95 {np.percentile(latencies, 95) * 1e3:.0f} ms; per-tick limit {limit.max():.3f} rad "
          f"({emb.max_velocity.max():g} rad/s); acceleration limit {emb.max_acceleration.max():g} rad/s^2 "
          f"(|dv| <= {accel_per_tick.max():.2f} rad/s per tick); blend {emb.chunk.blend_ticks} ticks; "
          f"|dv| over ticks [splice-1, splice+{window}]; tracking = command - reference, from the first splice")
    if api is not None:
        check = run_lerobot(stream, emb, _LeRobotTranscribed(emb))
        print(f"(b) ran LeRobot 0.6.1's own RobotClient._aggregate_action_queues + control_loop_action "
              f"(aggregate_fn_name={LEROBOT_AGGREGATE!r}); a transcription of them agrees to "
              f"{np.max(np.abs(check - runs['(b) lerobot 0.3/0.7'])):.1e} rad")
    else:
        print(f"(b) ran a TRANSCRIPTION of LeRobot's RobotClient._aggregate_action_queues + control_loop_action: "
              f"lerobot.async_inference does not import here ({why_not}); pip install 'lerobot[async]' to run "
              "LeRobot's own code")
    header = (f"{'method':<26}{'max jump rad':>13}{'x limit':>9}{'splice jump p95':>17}"
              f"{'|dv| max rad/s':>16}{'|dv| p95':>10}{'|dv| p50':>10}{'track RMS':>11}{'track max':>11}")
    print(header)
    print("-" * len(header))
    for name, m in table.items():
        print(f"{name:<26}{m['max_jump_rad']:>13.4f}{m['max_jump_x_limit']:>9.2f}{m['splice_jump_p95_rad']:>17.4f}"
              f"{m['dv_max']:>16.3f}{m['dv_p95']:>10.3f}{m['dv_median']:>10.3f}{m['track_rms']:>11.4f}"
              f"{m['track_max']:>11.4f}")
    ref = metrics(stream.reference, splices, emb, window, stream.reference)
    print(f"{'reference motion itself':<26}{ref['max_jump_rad']:>13.4f}{ref['max_jump_x_limit']:>9.2f}"
          f"{ref['splice_jump_p95_rad']:>17.4f}{ref['dv_max']:>16.3f}{ref['dv_p95']:>10.3f}{ref['dv_median']:>10.3f}")
    a, b, c = table["(a) replace"], table["(b) lerobot 0.3/0.7"], table["(c) ours"]
    cs, bs = table["(c) ours + safety stack"], table["(b) + motion limits"]
    print("-" * len(header))
    print(_ratio_row("ratio (c)/(b)", c, b))
    print(_ratio_row("ratio (c)/(a)", c, a))
    print(_ratio_row("ratio (c)+stack/(b)+limits", cs, bs))
    jump_ok = c["max_jump_x_limit"] <= 1.0 + 1e-9
    dv_ok = c["dv_max"] <= 0.5 * b["dv_max"]
    rejected = {k: v for k, v in stack.counters.rejections.items() if v}
    print(f"target: no jump above the per-tick limit -> {'met' if jump_ok else 'MISSED'} "
          f"(ours {c['max_jump_x_limit']:.2f} x limit; through the stack {cs['max_jump_x_limit']:.2f}, "
          f"{stack.counters.rate_limit_events} of {stack.counters.ticks} ticks shaped by the velocity/acceleration "
          f"limits; chunks accepted {stack.counters.chunks_accepted}, rejected {rejected or 0})")
    print(f"target: velocity discontinuity <= 1/2 of (b) -> {'met' if dv_ok else 'MISSED'} "
          f"(max {c['dv_max'] / b['dv_max']:.2f}, p95 {c['dv_p95'] / b['dv_p95']:.2f} of (b))")
    print(f"ours: {sched.stats.stretched_blends} of {len(splices)} splices blended over more than "
          f"{emb.chunk.blend_ticks} ticks (large disagreement). First chunk after the {FIRST_LATENCY_S:g} s "
          f"warm-up: ours skipped {first_skipped} steps; time-indexing it from its capture stamp would skip "
          f"{skipped} of {emb.chunk.action_horizon} ((a) is given our re-anchoring, (b) starts it at step 0 by "
          "its step counter)")

    # Where the tracking error comes from: the same latencies, chunks without errors, and chunks without
    # errors that only know the reference's changes captured before them.
    names = {"(a) replace": "(a)", "(b) lerobot 0.3/0.7": "(b)", "(c) ours": "(c)",
             "(c) ours + safety stack": "(c)+stack", "(a) + motion limits": "(a)+limits",
             "(b) + motion limits": "(b)+limits"}
    print("\nTracking error, RMS / max (rad), same latencies and capture times on three streams "
          "(+limits: through the stack's velocity/acceleration shaper):")
    head = f"{'stream':<22}" + "".join(f"{n:>17}" for n in names.values()) + f"{'(c)/(b) RMS':>13}{'(c)/(a) RMS':>13}"
    print(head)
    print("-" * len(head))
    decomposition: dict[str, dict[str, tuple[float, float]]] = {}
    for kind, s in streams.items():
        runs_k = runs if kind == "policy errors" else run_all(s, emb, lerobot_queue)["runs"]
        first = splice_ticks(s)[0]
        decomposition[kind] = {n: tracking(runs_k[n], s.reference, first) for n in names}
        d = decomposition[kind]
        print(f"{kind:<22}" + "".join(f"{d[n][0]:>8.4f} / {d[n][1]:.3f}" for n in names)
              + _ratio(d["(c) ours"][0], d["(b) lerobot 0.3/0.7"][0]) + _ratio(d["(c) ours"][0], d["(a) replace"][0]))
    d = decomposition["policy errors"]
    a_, b_, c_ = (d[n][0] for n in ("(a) replace", "(b) lerobot 0.3/0.7", "(c) ours"))
    print(f"policy errors: (c)/(b) {c_ / b_:.2f} = (c)/(a) {c_ / a_:.2f} / (b)/(a) {b_ / a_:.2f}. (b) averages each "
          "step over every chunk that covered it (weights 0.7, 0.21, 0.063, ...) and this stream's chunk errors are "
          "independent, so averaging removes noise; (a) and (c) follow the newest chunk, (c) after its blend.")
    u = decomposition["unforeseen changes"]
    order = " < ".join(f"{names[n]} {u[n][0]:.4f}" for n in sorted(list(names)[:3], key=lambda n: u[n][0]))
    print(f"unforeseen changes: {order}. Only chunks captured after a change know it; (a) takes the new plan at "
          "once, (b) 70% of it at once, (c) over its blend (longer for larger disagreements): the price of (c)'s "
          "continuity.")

    if not args.no_plot:
        path = RESULTS / "splice_joint.png"
        plot(stream, runs, splices, emb, path, joint=int(np.argmax(np.ptp(stream.reference, axis=0))))
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
