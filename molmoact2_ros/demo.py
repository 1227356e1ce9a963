"""``molmoact2-ros demo``: the whole graph as separate processes for a bounded time, then a summary.

Perception (synthetic cameras) -> policy (real MolmoAct2 code, tiny checkpoint built on first use)
-> driver (mock arm, scheduler + safety stack). A monitor node in this process publishes the
instruction, listens to /diagnostics, and the run fails (exit 1) unless a chunk was executed.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from molmoact2_ros.bringup import BringupOptions, describe
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import MolmoAct2RosError
from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults, private_domain_id
from molmoact2_ros.process_runner import ProcessGroup

POLICY, DRIVER, PERCEPTION = "molmoact2_policy", "molmoact2_driver", "molmoact2_perception"


@dataclass
class DemoOptions:
    embodiment: str = "so101"
    duration_s: float = 20.0
    checkpoint: str = "tiny"
    instruction: str = "pick up the red cube and place it in the bowl"
    max_inference_rate_hz: float = 0.0
    camera_fps: float = 0.0
    startup_timeout_s: float = 180.0
    log_dir: str = ""
    quiet: bool = False


@dataclass
class DemoResult:
    ok: bool
    reason: str
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    chunks_seen: int = 0
    elapsed_s: float = 0.0
    log_dir: str = ""


def resolve_checkpoint(emb: EmbodimentConfig, checkpoint: str, progress=print) -> str:
    """'tiny' -> the cached tiny checkpoint (built on first use); a directory is checked up front so a
    bad one gives one clear line here instead of a failed node later."""
    from molmoact2_ros.backends.policy.molmoact2_runtime import check_checkpoint
    from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint

    if checkpoint == "tiny":
        progress(f"tiny MolmoAct2 checkpoint for {emb.name}: building on first use, then cached ...")
        t0 = time.monotonic()
        path = ensure_tiny_checkpoint(emb)
        progress(f"  ready: {path} ({time.monotonic() - t0:.1f} s)")
        return str(path)
    check_checkpoint(checkpoint, emb)
    return checkpoint


def _monitor(env_ready: threading.Event, stop: threading.Event, state: dict, instruction: str) -> None:
    """Runs in a thread: one rclpy context with a node that publishes the instruction and records
    the latest diagnostics of each node, and counts chunks."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from molmoact2_ros.nodes.qos import (
        CHUNK_QOS,
        CHUNK_TOPIC,
        DIAGNOSTICS_QOS,
        DIAGNOSTICS_TOPIC,
        INSTRUCTION_TOPIC,
        LATCHED_QOS,
    )

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("molmoact2_demo_monitor", context=context)
    pub = node.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
    pub.publish(String(data=instruction))

    def on_diag(msg: DiagnosticArray) -> None:
        now = time.monotonic()
        for status in msg.status:
            name = status.name.rsplit("/", 1)[-1]
            state["diag"][name] = {kv.key: kv.value for kv in status.values}
            state["diag"][name]["_message"] = status.message
            state["diag"][name]["_level"] = str(status.level[0] if isinstance(status.level, bytes)
                                                else status.level)
            state["diag_time"][name] = now

    def on_chunk(_msg: JointTrajectory) -> None:
        state["chunks_seen"] += 1

    node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, DIAGNOSTICS_QOS)
    node.create_subscription(JointTrajectory, CHUNK_TOPIC, on_chunk, CHUNK_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    env_ready.set()
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def run_demo(opts: DemoOptions, progress=print) -> DemoResult:
    emb = load_embodiment(opts.embodiment)
    apply_local_ros_defaults()
    os.environ.setdefault("ROS_DOMAIN_ID", str(private_domain_id()))
    checkpoint = resolve_checkpoint(emb, opts.checkpoint, progress)
    specs = describe(BringupOptions(
        embodiment=emb.source_path, checkpoint=checkpoint, instruction=opts.instruction,
        max_inference_rate_hz=opts.max_inference_rate_hz, camera_fps=opts.camera_fps,
        # On a small host torch's default (a thread per core) starves the driver and perception.
        torch_num_threads=1 if (os.cpu_count() or 1) <= 4 else 0,
    ))
    log_dir = Path(opts.log_dir or tempfile.mkdtemp(prefix=f"molmoact2_demo_{emb.name}_"))
    group = ProcessGroup(specs, dict(os.environ), log_dir)
    state: dict = {"diag": {}, "diag_time": {}, "chunks_seen": 0}
    ready, stop = threading.Event(), threading.Event()
    monitor = threading.Thread(target=_monitor, args=(ready, stop, state, opts.instruction), daemon=True)
    monitor.start()
    ready.wait(10.0)
    progress(f"starting {len(specs)} node processes (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, "
             f"discovery {os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}); logs in {log_dir}")
    group.start()
    t_start = time.monotonic()
    result = DemoResult(ok=False, reason="", log_dir=str(log_dir))
    try:
        reason = _wait_until_running(group, state, opts, progress)
        if reason:
            result.reason = reason
            return result
        progress(f"graph running: closed loop for {opts.duration_s:.0f} s")
        reason = _run_for(group, state, opts)
        if reason:
            result.reason = reason
            return result
        # One more diagnostics round after the run so the summary has final counters.
        t_end = time.monotonic()
        deadline = t_end + 3.0
        while time.monotonic() < deadline and not all(
                state["diag_time"].get(n, 0) > t_end for n in (POLICY, DRIVER)):
            time.sleep(0.05)
    finally:
        codes = group.stop()
        stop.set()
        monitor.join(timeout=5.0)
        result.elapsed_s = time.monotonic() - t_start
        result.diagnostics = {k: dict(v) for k, v in state["diag"].items()}
        result.chunks_seen = state["chunks_seen"]
        bad = {name: code for name, code in codes.items() if code not in (0, -2, 130)}
        if bad and not result.reason:
            result.reason = f"node(s) exited uncleanly: {bad}; see {log_dir}"
    driver = result.diagnostics.get(DRIVER, {})
    executed = _int(driver.get("chunks_executed"))
    if not result.reason:
        result.ok = executed > 0
        result.reason = "loop closed" if result.ok else "no chunk was executed by the driver: the loop did not close"
    return result


def _wait_until_running(group: ProcessGroup, state: dict, opts: DemoOptions, progress) -> str:
    deadline = time.monotonic() + opts.startup_timeout_s
    announced = False
    while time.monotonic() < deadline:
        dead = group.exited()
        if dead:
            n = dead[0]
            return f"{n.spec.name} exited during start-up (code {n.process.returncode}):\n{n.log_tail()}"
        policy = state["diag"].get(POLICY, {})
        if "configure failed" in policy.get("_message", ""):
            return f"policy node: {policy['_message']}"
        driver = state["diag"].get(DRIVER, {})
        if policy.get("state") == "active" and driver.get("state") not in (None, "", "UNCONFIGURED"):
            return ""
        if not announced and time.monotonic() > deadline - opts.startup_timeout_s + 5:
            progress("  waiting for the policy node to load and warm up the model ...")
            announced = True
        time.sleep(0.1)
    return f"the graph did not come up within {opts.startup_timeout_s:.0f} s; see {group.log_dir}"


def _run_for(group: ProcessGroup, state: dict, opts: DemoOptions) -> str:
    from tqdm import tqdm

    t0 = time.monotonic()
    with tqdm(total=round(opts.duration_s), unit="s", disable=opts.quiet, leave=False,
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s {postfix}") as bar:
        while (elapsed := time.monotonic() - t0) < opts.duration_s:
            dead = group.exited()
            if dead:
                n = dead[0]
                return f"{n.spec.name} exited while running (code {n.process.returncode}):\n{n.log_tail()}"
            driver = state["diag"].get(DRIVER, {})
            bar.set_postfix_str(f"chunks {state['chunks_seen']} | ticks {driver.get('ticks', 0)} | "
                                f"driver {driver.get('state', '?')}", refresh=False)
            bar.update(int(elapsed) - bar.n)
            time.sleep(0.2)
    return ""


def _int(v) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def format_summary(emb_name: str, res: DemoResult) -> str:
    pol = res.diagnostics.get(POLICY, {})
    drv = res.diagnostics.get(DRIVER, {})
    per = res.diagnostics.get(PERCEPTION, {})

    def g(d: dict, k: str, default: str = "n/a") -> str:
        return d.get(k, default)

    frames = sum(_int(v) for k, v in per.items() if k.endswith("frames_published"))
    rejected = _int(g(drv, "chunks_rejected", "0"))
    rows = [
        ("embodiment", emb_name),
        ("camera frames published", str(frames) if per else "n/a"),
        ("inferences", g(pol, "inferences")),
        ("inference latency p50 / p99 / max (ms)",
         f"{g(pol, 'inference_latency_p50_ms')} / {g(pol, 'inference_latency_p99_ms')} / "
         f"{g(pol, 'inference_latency_max_ms')}"),
        ("model load + warm-up (s)", g(pol, "model_load_s")),
        ("chunks published / seen on the wire", f"{g(pol, 'chunks_published')} / {res.chunks_seen}"),
        ("chunks received / rejected / executed",
         f"{g(drv, 'chunks_received')} / {rejected} / {g(drv, 'chunks_executed')}"),
        ("control ticks", g(drv, "ticks")),
        ("tick period error p50 / p99 / max (ms)",
         f"{g(drv, 'period_error_p50_ms')} / {g(drv, 'period_error_p99_ms')} / {g(drv, 'period_error_max_ms')}"),
        ("chunk latency at receipt, last (ms)", g(drv, "latency_last_ms")),
        ("safety: clamped / rate-limited ticks", f"{g(drv, 'clamp_events')} / {g(drv, 'rate_limit_events')}"),
        ("safety: watchdog holds / starved ticks", f"{g(drv, 'watchdog_holds')} / {g(drv, 'starvation_ticks')}"),
        ("driver state at end", g(drv, "state")),
        ("result", ("OK: " if res.ok else "FAILED: ") + res.reason),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"molmoact2-ros demo summary ({res.elapsed_s:.1f} s wall, logs: {res.log_dir})"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


__all__ = ["DemoOptions", "DemoResult", "MolmoAct2RosError", "format_summary", "run_demo"]
