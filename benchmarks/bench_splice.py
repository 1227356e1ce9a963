"""P4: continuity at chunk splices -- replace outright vs LeRobot's 0.3/0.7 overlap average vs ours.

One recorded stream of action chunks is executed three ways at the same control ticks:

  (a) replace   the newest chunk replaces the old one outright at the tick it arrives;
  (b) lerobot   LeRobot async inference's aggregation: where the new chunk overlaps actions still
                queued, ``0.3 * old + 0.7 * new``; beyond the overlap, the new chunk's actions;
  (c) ours      ``core.scheduler.ChunkScheduler`` (time-indexed, smoothstep blend over blend_ticks),
                alone and through the whole ``SafetyStack`` (clamp + per-tick rate limit).

All three index chunks by time (step k of a chunk is for ``stamp + k / rate``) and skip the steps whose
time has passed, so only the splice differs. The stream is generated deterministically: a smooth
reference motion (sum of sines per joint), observations captured whenever the previous inference
finished, a slow first inference (0.8 s warm-up) then log-normal latencies around 150 ms, and per chunk
an offset and a slope error: a real policy's chunk-to-chunk disagreement.

Reported per method: the largest per-tick joint jump (rad, and in units of the per-tick rate limit
max_velocity / tick_rate) and the velocity discontinuity at splices, |v[k+1] - v[k]| over the ticks
around each splice (rad/s), max and p95 over splices; then the ratio (c)/(b). Targets: no jump above
the per-tick limit; velocity discontinuity <= half of (b). A PNG of one joint around three splices
goes to benchmarks/results/splice_joint.png.

    python benchmarks/bench_splice.py [--seconds 60] [--seed 0] [--no-plot]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.safety import SafetyStack
from molmoact2_ros.core.scheduler import MAX_BLEND_FACTOR, ChunkScheduler

RESULTS = Path(__file__).resolve().parent / "results"
T0 = 100.0
FIRST_LATENCY_S = 0.8
LEROBOT_OLD_WEIGHT = 0.3  # lerobot async inference: aggregate_fn weighted_average = 0.3 * old + 0.7 * new


@dataclass
class Stream:
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


def record_stream(emb: EmbodimentConfig, seconds: float, seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    rate, horizon = emb.control_rate_hz, emb.chunk.action_horizon
    ticks = T0 + np.arange(round(seconds * emb.tick_rate_hz)) / emb.tick_rate_hz
    fine = np.arange(T0 - 1.0, T0 + seconds + 3.0, 1.0 / rate / 4)
    ref_fine = reference_motion(emb, fine, np.random.default_rng(seed + 1))

    def ref(times: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(times, fine, ref_fine[:, j]) for j in range(emb.dof)], axis=1)

    # The first inference (warm-up) starts 0.8 s before T0 with the robot at rest at ref(T0): its
    # chunk plans the motion from rest, so its step k belongs at T0 + k / rate once it arrives.
    times = T0 + np.arange(horizon) / rate
    chunks = [ActionChunk(list(emb.joint_names), np.clip(ref(times), emb.lower, emb.upper), T0 - FIRST_LATENCY_S,
                          rate, received_s=T0)]
    t_obs = T0
    while t_obs < ticks[-1]:
        latency = float(np.clip(rng.lognormal(math.log(0.15), 0.35), 0.06, 0.6))
        times = t_obs + np.arange(horizon) / rate
        offset = rng.normal(0.0, 0.03, emb.dof)  # rad: where the new chunk thinks the motion is
        slope = rng.normal(0.0, 0.15, emb.dof)  # rad/s: how fast it thinks it goes
        positions = ref(times) + offset + slope * (times - t_obs)[:, None]
        positions = np.clip(positions, emb.lower, emb.upper)
        arrival = t_obs + latency
        chunks.append(ActionChunk(list(emb.joint_names), positions, t_obs, rate, received_s=arrival))
        t_obs = arrival  # async: the next observation is captured as soon as this inference is done
    return Stream(chunks, ticks, ref(ticks))


def effective_stamp(chunk: ActionChunk, index: int) -> float:
    """Where (a) and (b) put step 0. LeRobot time-indexes the first chunk from its capture stamp too,
    skipping the steps 'elapsed' during warm-up (21 of 30 on an SO-101, EMBODIMENTS_AND_PEERS.md);
    here they get our re-anchoring for it, so that only the splices differ."""
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


def run_lerobot(stream: Stream, emb: EmbodimentConfig) -> np.ndarray:
    """Queue of (timestep -> action); a new chunk's overlap is 0.3 * old + 0.7 * new (lerobot async)."""
    rate = emb.control_rate_hz
    queue: dict[int, np.ndarray] = {}
    hold = stream.chunks[0].positions[0].copy()
    out = []
    for t, new in zip(stream.ticks, _arrivals_by_tick(stream), strict=True):
        now_step = round((t - T0) * rate)
        for n, c in new:
            base = round((effective_stamp(c, n) - T0) * rate)
            for k in range(c.steps):
                step = base + k
                if step < now_step:
                    continue  # already in the past: lerobot drops actions with timestep <= the latest executed
                if step in queue:
                    queue[step] = LEROBOT_OLD_WEIGHT * queue[step] + (1 - LEROBOT_OLD_WEIGHT) * c.positions[k]
                else:
                    queue[step] = c.positions[k].copy()
        for step in [s for s in queue if s < now_step]:
            del queue[step]
        if now_step in queue:
            hold = queue.pop(now_step)
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


# ---- metrics --------------------------------------------------------------------------------------

def splice_ticks(stream: Stream) -> list[int]:
    """Ticks at which a chunk other than the first arrived (one splice each, newest wins)."""
    ticks = [i for i, new in enumerate(_arrivals_by_tick(stream)) if new]
    return ticks[1:]


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
    return {
        "max_jump_rad": float(np.max(np.abs(steps[first:]))),
        "max_jump_x_limit": float(np.max(np.abs(steps[first:]) / limit)),
        "splice_jump_p95_rad": float(np.percentile(jump_at_splice, 95)),
        "dv_max": float(max(per_splice)),
        "dv_p95": float(np.percentile(per_splice, 95)),
        "dv_median": float(np.median(per_splice)),
        "rms_vs_reference": float(np.sqrt(np.mean((cmd[first:] - reference[first:]) ** 2))),
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
              "(c) ours": ("tab:blue", "-")}
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
    stream = record_stream(emb, args.seconds, args.seed)
    splices = splice_ticks(stream)
    ours, sched = run_scheduler(stream, emb)
    first_skipped = _first_chunk_skipped(stream, emb)
    runs = {
        "(a) replace": run_replace(stream, emb),
        "(b) lerobot 0.3/0.7": run_lerobot(stream, emb),
        "(c) ours": ours,
    }
    stack_cmd, stack = run_stack(stream, emb)
    runs["(c) ours + safety stack"] = stack_cmd
    window = round(MAX_BLEND_FACTOR * emb.chunk.blend_ticks) + 2  # the longest (stretched) blend
    table = {name: metrics(cmd, splices, emb, window, stream.reference) for name, cmd in runs.items()}
    limit = emb.max_velocity / emb.tick_rate_hz
    latencies = [c.received_s - c.stamp_s for c in stream.chunks[1:] if c.received_s is not None]
    skipped = round(FIRST_LATENCY_S * emb.control_rate_hz)

    print(f"P4 chunk splices: {emb.name}, {emb.tick_rate_hz:g} Hz ticks, {len(stream.chunks)} chunks of "
          f"{emb.chunk.action_horizon} steps over {args.seconds:g} s, {len(splices)} splices, seed {args.seed}")
    print(f"latency: first 800 ms, then p50 {np.median(latencies) * 1e3:.0f} ms, "
          f"p95 {np.percentile(latencies, 95) * 1e3:.0f} ms; per-tick limit {limit.max():.3f} rad "
          f"({emb.max_velocity.max():g} rad/s); blend {emb.chunk.blend_ticks} ticks; "
          f"|dv| over ticks [splice-1, splice+{window}]")
    header = (f"{'method':<26}{'max jump rad':>13}{'x limit':>9}{'splice jump p95':>17}"
              f"{'|dv| max rad/s':>16}{'|dv| p95':>10}{'|dv| p50':>10}{'rms vs ref':>12}")
    print(header)
    print("-" * len(header))
    for name, m in table.items():
        print(f"{name:<26}{m['max_jump_rad']:>13.4f}{m['max_jump_x_limit']:>9.2f}{m['splice_jump_p95_rad']:>17.4f}"
              f"{m['dv_max']:>16.3f}{m['dv_p95']:>10.3f}{m['dv_median']:>10.3f}{m['rms_vs_reference']:>12.4f}")
    ref = metrics(stream.reference, splices, emb, window, stream.reference)
    print(f"{'reference motion itself':<26}{ref['max_jump_rad']:>13.4f}{ref['max_jump_x_limit']:>9.2f}"
          f"{ref['splice_jump_p95_rad']:>17.4f}{ref['dv_max']:>16.3f}{ref['dv_p95']:>10.3f}{ref['dv_median']:>10.3f}")
    b, c = table["(b) lerobot 0.3/0.7"], table["(c) ours"]
    print("-" * len(header))
    print(f"{'ratio (c)/(b)':<26}{c['max_jump_rad'] / b['max_jump_rad']:>13.3f}{'':>9}"
          f"{c['splice_jump_p95_rad'] / b['splice_jump_p95_rad']:>17.3f}{c['dv_max'] / b['dv_max']:>16.3f}"
          f"{c['dv_p95'] / b['dv_p95']:>10.3f}{c['dv_median'] / b['dv_median']:>10.3f}"
          f"{c['rms_vs_reference'] / b['rms_vs_reference']:>12.3f}")
    a = table["(a) replace"]
    print(f"{'ratio (c)/(a)':<26}{c['max_jump_rad'] / a['max_jump_rad']:>13.3f}{'':>9}"
          f"{c['splice_jump_p95_rad'] / a['splice_jump_p95_rad']:>17.3f}{c['dv_max'] / a['dv_max']:>16.3f}"
          f"{c['dv_p95'] / a['dv_p95']:>10.3f}{c['dv_median'] / a['dv_median']:>10.3f}"
          f"{c['rms_vs_reference'] / a['rms_vs_reference']:>12.3f}")
    jump_ok = c["max_jump_x_limit"] <= 1.0 + 1e-9
    dv_ok = c["dv_max"] <= 0.5 * b["dv_max"]
    print(f"target: no jump above the per-tick limit -> {'met' if jump_ok else 'MISSED'} "
          f"(ours {c['max_jump_x_limit']:.2f} x limit; through the stack "
          f"{table['(c) ours + safety stack']['max_jump_x_limit']:.2f}, "
          f"{stack.counters.rate_limit_events} rate-limited ticks of {stack.counters.ticks})")
    print(f"target: velocity discontinuity <= 1/2 of (b) -> {'met' if dv_ok else 'MISSED'} "
          f"(max {c['dv_max'] / b['dv_max']:.2f}, p95 {c['dv_p95'] / b['dv_p95']:.2f} of (b))")
    print(f"ours: {sched.stats.stretched_blends} of {len(splices)} splices blended over more than "
          f"{emb.chunk.blend_ticks} ticks (large disagreement). First chunk after the {FIRST_LATENCY_S:g} s "
          f"warm-up: ours skipped {first_skipped} steps; time-indexing it from its capture stamp, as LeRobot "
          f"does, skips {skipped} of {emb.chunk.action_horizon} (given re-anchoring above, so only splices differ)")
    if not args.no_plot:
        path = RESULTS / "splice_joint.png"
        plot(stream, runs, splices, emb, path, joint=int(np.argmax(np.ptp(stream.reference, axis=0))))
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
