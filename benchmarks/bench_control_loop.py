"""P3: the driver's control-loop period error and tick lateness at 30/100/200 Hz, idle vs. MolmoAct2 inference running.

Each measurement starts the real driver node as its own process (``python -m
molmoact2_ros.nodes.driver_node``: mock arm, SO-101 with ``driver_rate_hz`` set to the rate under test)
while this process feeds it a chunk every 200 ms over DDS from its /joint_states, as a policy node does,
so the scheduler, splices and safety stack all run. After a warm-up the driver's own statistics are
read from /diagnostics, over a window of exactly the measured seconds (``period_error_window_ticks``):

- ``period_error_*``: |actual tick-to-tick interval - period| (jitter between consecutive ticks);
- ``tick_lateness_*``: how late each tick started after its own absolute deadline (what a motor waiting
  for its command sees: a loop whose every tick is equally late has a small period error but not a small
  lateness; a late tick followed by an on-time one counts once here, twice in the period error);
- ``tick_duration_*``: the tick's own work.

Conditions, measured side by side in one run:

- idle: nothing else running on the machine but the driver and the chunk feeder;
- inference: a MolmoAct2 inference loop (tiny checkpoint, CPU, torch's default threads) in another
  process, predicting back to back as a policy node sharing the robot PC would;
- inference, niced: the same loop at nice 19 (what an operator can do without touching code).

DDS stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a ROS domain of this run's own (one
where no other node answers: other sessions' tests on a shared machine use the same pid-derived range).

    python benchmarks/bench_control_loop.py [--seconds 20] [--rates 30 100 200] [--no-nice]
                                            [--control-thread-priority 50]   (0: no SCHED_FIFO, to compare)

About 9 cells x (seconds + 8 s) plus two model loads: ~5 min with the defaults, ~2 min with --seconds 5.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.nodes.runtime_env import unused_domain_id

# Before rclpy is imported anywhere: every process of this run stays on loopback, in a domain of its own
# (chosen in main: unused_domain_id; the driver processes inherit it).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import yaml

from molmoact2_ros.core.embodiment import load_embodiment, resolve_embodiment_path

EMBODIMENT = "so101"
CHUNK_PERIOD_S = 0.2
WARMUP_S = 4.0
KEYS = ("period_error_p50_ms", "period_error_p99_ms", "period_error_max_ms",
        "tick_lateness_p50_ms", "tick_lateness_p99_ms", "tick_lateness_max_ms", "tick_duration_p99_ms")


# ---- inference worker (its own process) -----------------------------------------------------------

def inference_worker() -> int:
    """Predict back to back with the tiny MolmoAct2 checkpoint; one line per inference on stdout."""
    from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime
    from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint
    from molmoact2_ros.core.chunk import Observation

    emb = load_embodiment(EMBODIMENT)
    runtime = MolmoAct2Runtime(ensure_tiny_checkpoint(emb), emb)
    rng = np.random.default_rng(0)
    images = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in emb.cameras}
    state = emb.home.copy()
    while True:
        started = time.perf_counter()
        obs = Observation(images=images, state=state, instruction="Pick up the red cube.", stamp_s=time.time())
        chunk, _ = runtime.predict(obs)
        state = chunk.positions[-1]
        print(f"inference {time.perf_counter() - started:.4f}", flush=True)


class InferenceProcess:
    def __init__(self, nice: int = 0):
        self.latencies: list[float] = []
        # nice(1) rather than preexec_fn: this process already runs threads (rclpy, the readers).
        prefix = ["nice", "-n", str(nice)] if nice else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, __file__, "--inference-worker"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("inference "):
                self.latencies.append(float(line.split()[1]))

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.latencies) < 2:  # loaded, and past the first (warm-up) inference
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the MolmoAct2 inference worker did not start")
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """CPU time the worker has used (user + system), from /proc: how hard it loads the machine."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


# ---- the driver process and the chunk feeder ------------------------------------------------------

def embodiment_at(rate_hz: float, directory: Path) -> Path:
    data = yaml.safe_load(resolve_embodiment_path(EMBODIMENT).read_text())
    data["driver_rate_hz"] = float(rate_hz)
    path = directory / f"{EMBODIMENT}_{int(rate_hz)}hz.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Feeder:
    """A policy stand-in in this process: chunks from the latest /joint_states; /diagnostics listener."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        from molmoact2_ros.nodes.diagnostics import status_values
        from molmoact2_ros.nodes.qos import (
            CHUNK_QOS,
            CHUNK_TOPIC,
            DIAGNOSTICS_QOS,
            DIAGNOSTICS_TOPIC,
            JOINT_STATE_QOS,
            JOINT_STATES_TOPIC,
        )

        self.emb = load_embodiment(EMBODIMENT)
        self._status_values = status_values
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = Node("bench_chunk_feeder", context=self.ctx)
        self.lock = threading.Lock()
        self.latest: np.ndarray | None = None
        self.diag: dict[str, str] = {}
        self.feeding = False
        self.t0 = time.monotonic()
        self.pub = self.node.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        self.node.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_js, JOINT_STATE_QOS)
        self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diag, DIAGNOSTICS_QOS)
        self.node.create_timer(CHUNK_PERIOD_S, self._publish)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_js(self, msg: Any) -> None:
        names = list(msg.name)
        if not all(n in names for n in self.emb.joint_names):
            return  # not our driver's (another run in this domain): never let it kill this executor
        order = [names.index(n) for n in self.emb.joint_names]
        with self.lock:
            self.latest = np.asarray(msg.position)[order]

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith("molmoact2_driver"):
                with self.lock:
                    self.diag = self._status_values(status)

    def _publish(self) -> None:
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        with self.lock:
            q = None if self.latest is None else self.latest.copy()
        if not self.feeding or q is None:
            return
        emb, rate = self.emb, self.emb.control_rate_hz
        t = time.monotonic() - self.t0
        steps = np.arange(emb.chunk.action_horizon) / rate
        # A slow swing around home, continued from the measured pose.
        swing = 0.25 * (np.sin(0.8 * (t + steps))[:, None] - np.sin(0.8 * t)) * np.ones(emb.dof)
        msg = JointTrajectory(joint_names=emb.joint_names)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        for k, row in enumerate(np.clip(q + swing, emb.lower, emb.upper)):
            ns = round(k * 1e9 / rate)
            msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                                   time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
        self.pub.publish(msg)

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diag)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def measure(feeder: Feeder, rate_hz: float, seconds: float, workdir: Path, priority: int) -> dict[str, Any]:
    window = max(10, round(rate_hz * seconds))
    cmd = [sys.executable, "-m", "molmoact2_ros.nodes.driver_node", "--ros-args",
           "-p", f"embodiment:={embodiment_at(rate_hz, workdir)}", "-p", "diagnostics_period_s:=0.5",
           "-p", f"period_error_window_ticks:={window}", "-p", f"control_thread_priority:={priority}",
           "--log-level", "warn"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        feeder.diag = {}
        deadline = time.monotonic() + 60
        while feeder.snapshot().get("state") in (None, "", "UNCONFIGURED"):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:  # its stderr would not end while it runs
                    proc.kill()
                    proc.wait()
                raise RuntimeError(f"driver did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)
        feeder.feeding = True
        time.sleep(WARMUP_S)
        start = feeder.snapshot()
        time.sleep(seconds + 1.0)  # + one diagnostics period or two, so the last report covers the window
        end = feeder.snapshot()
        feeder.feeding = False
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out: dict[str, Any] = {k: float(end.get(k, "nan")) for k in KEYS}
    out["ticks"] = int(end.get("ticks", 0)) - int(start.get("ticks", 0))
    out["overruns"] = int(end.get("overruns", 0)) - int(start.get("overruns", 0))
    out["chunks"] = int(end.get("chunks_executed", 0)) - int(start.get("chunks_executed", 0))
    out["rejected"] = int(end.get("chunks_rejected", 0)) - int(start.get("chunks_rejected", 0))
    if "tick_lateness_p99_ms" not in end:
        raise RuntimeError("the driver publishes no tick_lateness_* in /diagnostics: is this the current driver?")
    out["state"] = end.get("state", "?")
    out["realtime"] = end.get("control_thread_realtime", "?")
    return out


def _ratio(value: float, idle: float) -> str:
    return f"{value / idle:.2f}" if idle > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate and condition")
    ap.add_argument("--rates", type=float, nargs="+", default=[30.0, 100.0, 200.0])
    ap.add_argument("--no-nice", action="store_true", help="skip the niced-inference condition")
    ap.add_argument("--control-thread-priority", type=int, default=50,
                    help="the driver's control_thread_priority (0: normal scheduling for its threads)")
    ap.add_argument("--inference-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inference_worker:
        return inference_worker()

    os.environ["ROS_DOMAIN_ID"] = str(unused_domain_id())
    conditions = ["idle", "inference"] + ([] if args.no_nice else ["inference, nice 19"])
    results: dict[tuple[str, float], dict[str, Any]] = {}
    inference_latency: dict[str, list[float]] = {}
    inference_cores: dict[str, float] = {}
    loadavg: list[float] = []
    feeder = Feeder()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for condition in conditions:
                worker = None
                if condition != "idle":
                    worker = InferenceProcess(nice=19 if "nice" in condition else 0)
                    worker.wait_ready()
                    cpu0, wall0 = worker.cpu_seconds(), time.monotonic()
                try:
                    for rate in args.rates:
                        loadavg.append(os.getloadavg()[0])
                        n0 = len(worker.latencies) if worker else 0
                        results[(condition, rate)] = measure(feeder, rate, args.seconds, Path(tmp),
                                                             args.control_thread_priority)
                        if worker:
                            inference_latency.setdefault(condition, []).extend(worker.latencies[n0:])
                        r = results[(condition, rate)]
                        print(f"  measured {condition:>18} @ {rate:>5g} Hz: p99 {r['period_error_p99_ms']:.3f} ms",
                              file=sys.stderr, flush=True)
                    if worker:
                        inference_cores[condition] = (worker.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
                finally:
                    if worker:
                        worker.stop()
    finally:
        feeder.close()

    realtime = {r["realtime"] for r in results.values()}
    print(f"P3 control loop: driver node process ({EMBODIMENT}, mock arm, chunks every "
          f"{CHUNK_PERIOD_S * 1e3:.0f} ms over DDS), {args.seconds:g} s per cell, {os.cpu_count()} CPUs, "
          f"control_thread_priority {args.control_thread_priority} "
          f"(SCHED_FIFO in effect: {', '.join(sorted(realtime))}), {time.strftime('%Y-%m-%d %H:%M')}")
    for condition, lat in inference_latency.items():
        print(f"  {condition}: MolmoAct2 tiny checkpoint on CPU, back to back: {len(lat)} inferences, "
              f"p50 {np.median(lat) * 1e3:.0f} ms per chunk, {inference_cores[condition]:.2f} cores busy")
    print(f"  1-min load average at the start of each cell: {', '.join(f'{x:.1f}' for x in loadavg)} "
          "(other processes on this machine count too)")
    print("  period error = |tick-to-tick interval - period|; lateness = tick start - its deadline (ms)")
    header = (f"{'rate':>6}  {'condition':<20}{'period error p50/p99/max':>26}{'lateness p50/p99/max':>24}"
              f"{'tick p99':>10}{'ticks':>7}{'overruns':>9}{'chunks':>7}{'rejected':>9}"
              f"{'p99 / idle: period':>20}{'lateness':>10}")
    print(header)
    print("-" * len(header))
    for rate in args.rates:
        idle = results[("idle", rate)]
        for condition in conditions:
            r = results[(condition, rate)]
            period = f"{r['period_error_p50_ms']:.3f} {r['period_error_p99_ms']:.3f} {r['period_error_max_ms']:.2f}"
            late = f"{r['tick_lateness_p50_ms']:.3f} {r['tick_lateness_p99_ms']:.3f} {r['tick_lateness_max_ms']:.2f}"
            print(f"{rate:>5g}  {condition:<20}{period:>26}{late:>24}{r['tick_duration_p99_ms']:>10.3f}"
                  f"{r['ticks']:>7d}{r['overruns']:>9d}{r['chunks']:>7d}{r['rejected']:>9d}"
                  f"{_ratio(r['period_error_p99_ms'], idle['period_error_p99_ms']):>20}"
                  f"{_ratio(r['tick_lateness_p99_ms'], idle['tick_lateness_p99_ms']):>10}")
    worst = max(r["period_error_p99_ms"] for r in results.values())
    worst_late = max(r["tick_lateness_p99_ms"] for r in results.values())
    print(f"target period error p99 <= 1 ms: {'met in every cell' if worst <= 1.0 else 'MISSED'} "
          f"(worst p99 {worst:.3f} ms); tick lateness (no target): worst p99 {worst_late:.3f} ms, "
          f"{'<=' if worst_late <= 1.0 else '>'} 1 ms")
    if any(r["rejected"] for r in results.values()):
        print("note: the driver rejected chunks in some cells (see 'rejected'); the feeder's chunks are meant to "
              "be accepted, so check its /diagnostics rejected_* counters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
