"""``molmoact2-ros demo``: the whole graph as separate processes for a bounded time, then a summary.

By default (``--hardware sim``) the simulated station: the sim node (MuJoCo physics of the embodiment's
scene in real time, its cameras rendered and published through the perception node's stream code) ->
policy (real MolmoAct2 code, tiny checkpoint built on first use) -> driver (scheduler + safety stack,
commanding the simulated arm through the ``mujoco`` backend). ``--hardware mock``: perception with
synthetic cameras and the mock arm; ``--hardware emulated``: synthetic cameras and the embodiment's real
backend — LeRobot's Feetech bus, i2rt, pylibfranka — driving an emulated device. A monitor node in
this process publishes the instruction and listens to /diagnostics, to the measured ``/joint_states``
and to what the driver wrote (``/molmoact2_driver/commanded``, stamped like the ``/joint_states`` of the
same tick). From those it reports each joint's travel and the largest tracking error, and checks every
commanded value itself against the embodiment's limits: inside [lower, upper], and per tick no farther
than ``max_velocity_per_s / tick_rate_hz`` from the one before (a "safety violation" otherwise).

The run fails (exit 1) if the loop did not close (no chunk executed), if the driver faulted or was
e-stopped, if any commanded value violated the limits, or if nothing moved.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molmoact2_ros.backends.hardware import emulated_backend_for
from molmoact2_ros.bringup import BringupOptions, describe
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError
from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults, unused_domain_id
from molmoact2_ros.process_runner import ProcessGroup

POLICY, DRIVER, PERCEPTION, SIM = "molmoact2_policy", "molmoact2_driver", "molmoact2_perception", "molmoact2_sim"
HARDWARE_CHOICES = ("sim", "mock", "emulated")
COMMANDED_TOPIC = f"/{DRIVER}/commanded"
# A joint moved if it travelled more than this fraction of its range during the run.
MIN_TRAVEL_FRACTION = 0.02
# Slack on the monitor's limit checks: float rounding in the driver, not a tolerance for motion.
LIMIT_EPS = 1e-6
# The monitor keeps this many samples per topic while its thread is busy, so none is overwritten.
MONITOR_HISTORY = 500


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
    hardware: str = "sim"  # 'sim' (MuJoCo), 'mock' or 'emulated' (the real backend against its emulated device)
    record_video: str = ""  # with sim: write an MP4/GIF of the scene camera with the joints plotted beside


@dataclass
class MotionReport:
    """What the monitor saw of the arm: travel, tracking error and the commanded values' limit checks."""

    joint_names: list[str]
    units: list[str]
    travel: np.ndarray  # per joint: sum of |change| of the measured position
    moved: list[bool]  # per joint: travel above MIN_TRAVEL_FRACTION of its range
    tracking_error: np.ndarray  # per joint: max |measured - commanded| over ticks seen on both topics
    measured_samples: int = 0
    commanded_samples: int = 0
    paired_samples: int = 0
    violations: int = 0
    violation_examples: list[str] = field(default_factory=list)

    @property
    def joints_moved(self) -> int:
        return int(sum(self.moved))

    def travel_text(self) -> str:
        return ", ".join(f"{n} {t:.3f}" for n, t in zip(self.joint_names, self.travel, strict=True))

    def tracking_text(self) -> str:
        if not self.paired_samples:
            return "n/a"
        j = int(np.argmax(self.tracking_error))
        return f"{self.tracking_error[j]:.4f} ({self.joint_names[j]}, {self.units[j]})"


def _ticks_between(t1: int, t2: int, tick_stamps: np.ndarray, period_ns: float) -> int:
    """How many control ticks the driver ran in (t1, t2]: those seen on either topic, or more when the
    time between says some ticks were lost on both (a best-effort topic may drop samples)."""
    seen = int(np.searchsorted(tick_stamps, t2, side="right") - np.searchsorted(tick_stamps, t1, side="right"))
    elapsed = (t2 - t1) / period_ns
    if elapsed <= seen + 0.5:
        return max(seen, 1)
    return max(seen, int(np.ceil(elapsed - 1e-6)))


def analyse_motion(emb: EmbodimentConfig, measured: list[tuple[int, np.ndarray]],
                   commanded: list[tuple[int, np.ndarray]]) -> MotionReport:
    """Travel, tracking error and limit checks from (stamp_ns, positions) samples of both topics.

    Tracking error pairs a commanded value with the measurement of the same tick (same stamp). The limit
    check replays the commanded values in stamp order: each inside [lower, upper] and at most
    ``max_velocity_per_s / tick_rate_hz`` per tick from the previous one (n ticks apart: n times that).
    """
    dof = emb.dof
    meas = sorted(measured, key=lambda x: x[0])
    cmd = sorted(commanded, key=lambda x: x[0])
    travel = np.zeros(dof)
    for (_, a), (_, b) in itertools.pairwise(meas):
        travel += np.abs(b - a)
    span = emb.upper - emb.lower
    moved = [bool(t > MIN_TRAVEL_FRACTION * s) for t, s in zip(travel, span, strict=True)]
    by_stamp = {stamp: pos for stamp, pos in meas}
    tracking = np.zeros(dof)
    paired = 0
    for stamp, pos in cmd:
        seen = by_stamp.get(stamp)
        if seen is not None:
            tracking = np.maximum(tracking, np.abs(seen - pos))
            paired += 1
    report = MotionReport(
        joint_names=list(emb.joint_names), units=[j.unit for j in emb.joints], travel=travel, moved=moved,
        tracking_error=tracking, measured_samples=len(meas), commanded_samples=len(cmd), paired_samples=paired,
    )
    names = emb.joint_names
    step_limit = emb.max_velocity / emb.tick_rate_hz
    period_ns = 1e9 / emb.tick_rate_hz
    tick_stamps = np.unique(np.array([s for s, _ in meas] + [s for s, _ in cmd], dtype=np.int64))

    def violation(text: str) -> None:
        report.violations += 1
        if len(report.violation_examples) < 3:
            report.violation_examples.append(text)

    previous: tuple[int, np.ndarray] | None = None
    for stamp, pos in cmd:
        outside = np.flatnonzero((pos < emb.lower - LIMIT_EPS) | (pos > emb.upper + LIMIT_EPS))
        for j in outside:
            violation(f"{names[j]} commanded {pos[j]:.4f} outside [{emb.lower[j]:g}, {emb.upper[j]:g}]")
        if previous is not None:
            ticks = _ticks_between(previous[0], stamp, tick_stamps, period_ns)
            step = np.abs(pos - previous[1])
            allowed = ticks * step_limit + LIMIT_EPS
            for j in np.flatnonzero(step > allowed):
                violation(f"{names[j]} moved {step[j]:.4f} in {ticks} tick(s), limit {allowed[j]:.4f}")
        previous = (stamp, pos)
    return report


@dataclass
class DemoResult:
    ok: bool
    reason: str
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    chunks_seen: int = 0  # by the monitor, as of the policy's last diagnostics (so comparable with its count)
    elapsed_s: float = 0.0
    interrupted: bool = False  # Ctrl-C / SIGTERM: the summary covers what ran until then
    log_dir: str = ""
    motion: MotionReport | None = None
    video: str = ""  # what --record-video wrote (or why not)


def resolve_checkpoint(emb: EmbodimentConfig, checkpoint: str, progress=print) -> str:
    """'tiny' -> the cached tiny checkpoint (built on first use); a directory is checked up front so a
    bad one gives one clear line here instead of a failed node later."""
    from molmoact2_ros.backends.policy.molmoact2_runtime import check_checkpoint
    from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint, is_complete, tiny_checkpoint_path

    if checkpoint == "tiny":
        if is_complete(tiny_checkpoint_path(emb)):  # the same path ensure_tiny_checkpoint returns
            path = ensure_tiny_checkpoint(emb)
            progress(f"tiny MolmoAct2 checkpoint for {emb.name}: cached at {path}")
            return str(path)
        progress(f"tiny MolmoAct2 checkpoint for {emb.name}: building it (first use; cached afterwards) ...")
        t0 = time.monotonic()
        path = ensure_tiny_checkpoint(emb)
        progress(f"  ready: {path} ({time.monotonic() - t0:.1f} s)")
        return str(path)
    check_checkpoint(checkpoint, emb)
    return checkpoint


def _monitor(env_ready: threading.Event, stop: threading.Event, state: dict, instruction: str,
             joint_names: list[str], video_camera: str = "") -> None:
    """Runs in a thread: one rclpy context with a node that publishes the instruction, records the latest
    diagnostics of each node, counts chunks, and records every measured and commanded joint sample (and,
    with ``video_camera``, that camera's frames at a reduced rate for --record-video)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from molmoact2_ros.nodes.qos import (
        CHUNK_QOS,
        CHUNK_TOPIC,
        DIAGNOSTICS_QOS,
        DIAGNOSTICS_TOPIC,
        INSTRUCTION_TOPIC,
        JOINT_STATES_TOPIC,
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
            if name == POLICY:
                # The chunks seen when the policy counted its published ones: the summary compares the two.
                state["chunks_seen_at_policy_diag"] = state["chunks_seen"]

    def on_chunk(_msg: JointTrajectory) -> None:
        state["chunks_seen"] += 1

    def recorder(key: str):
        def record(msg: JointState) -> None:
            # By name: the embodiment's order, whatever order the publisher used.
            by_name = dict(zip(msg.name, msg.position, strict=False))
            if all(n in by_name for n in joint_names):
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                state[key].append((stamp, np.array([by_name[n] for n in joint_names], dtype=np.float64)))
        return record

    # Best effort like the driver's publishers, but a deep history: a busy monitor thread must not lose
    # samples (a lost commanded sample would hide a step; the analysis also copes with lost ones).
    samples_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=MONITOR_HISTORY,
                             reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, DIAGNOSTICS_QOS)
    node.create_subscription(JointTrajectory, CHUNK_TOPIC, on_chunk, CHUNK_QOS)
    node.create_subscription(JointState, JOINT_STATES_TOPIC, recorder("measured"), samples_qos)
    node.create_subscription(JointState, COMMANDED_TOPIC, recorder("commanded"), samples_qos)
    if video_camera:
        from sensor_msgs.msg import Image

        from molmoact2_ros.nodes.qos import CAMERA_QOS, camera_topic
        from molmoact2_ros.sim.video import VIDEO_FPS, frame_from_image

        min_gap_ns = int(1e9 / VIDEO_FPS)

        def on_frame(msg: Image) -> None:
            # Reduced rate: a video frame every 1/VIDEO_FPS s, decimated here so the monitor stays cheap.
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if state["frames"] and stamp - state["frames"][-1][0] < min_gap_ns:
                return
            state["frames"].append((stamp, frame_from_image(msg)))

        node.create_subscription(Image, camera_topic(video_camera), on_frame, CAMERA_QOS)
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
    if "ROS_DOMAIN_ID" not in os.environ:  # a domain no other run on this host is using
        os.environ["ROS_DOMAIN_ID"] = str(unused_domain_id())
    hardware: dict = {}
    if opts.hardware not in HARDWARE_CHOICES:
        raise ConfigError(f"--hardware must be one of {', '.join(HARDWARE_CHOICES)}, not {opts.hardware!r}")
    if opts.hardware == "emulated":
        # The real backend through its real library; shadow mode off: nothing physical can move.
        hardware = {"backend": emulated_backend_for(emb), "emulate_hardware": True, "shadow_mode": "false"}
    elif opts.hardware == "sim":
        hardware = {"sim": True}
    if opts.record_video and opts.hardware != "sim":
        raise ConfigError("--record-video records the simulation's cameras: use it with --hardware sim")
    if opts.record_video:
        from molmoact2_ros.sim.video import check_video_path

        check_video_path(opts.record_video)
    checkpoint = resolve_checkpoint(emb, opts.checkpoint, progress)
    specs = describe(BringupOptions(
        embodiment=emb.source_path, checkpoint=checkpoint, instruction=opts.instruction, **hardware,
        max_inference_rate_hz=opts.max_inference_rate_hz, camera_fps=opts.camera_fps,
        # On a small host torch's default (a thread per core) starves the driver and perception.
        torch_num_threads=1 if (os.cpu_count() or 1) <= 4 else 0,
    ))
    log_dir = Path(opts.log_dir or tempfile.mkdtemp(prefix=f"molmoact2_demo_{emb.name}_"))
    group = ProcessGroup(specs, dict(os.environ), log_dir)
    state: dict = {"diag": {}, "diag_time": {}, "chunks_seen": 0, "measured": [], "commanded": [], "frames": []}
    ready, stop = threading.Event(), threading.Event()
    video_camera = emb.camera_names[0] if opts.record_video else ""
    monitor = threading.Thread(target=_monitor, args=(ready, stop, state, opts.instruction, emb.joint_names,
                                                      video_camera), daemon=True)
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
        t_loop = time.monotonic()  # before saying so: a Ctrl-C right after the line counts as during the loop
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
    except KeyboardInterrupt:
        # Ctrl-C (the nodes got it too): stop them as usual and still report what ran.
        result.interrupted = True
        ran = f" after {time.monotonic() - t_loop:.1f} s of the loop" if "t_loop" in locals() else " during startup"
        result.reason = f"interrupted (Ctrl-C){ran}; logs in {log_dir}"
    finally:
        codes = group.stop()
        stop.set()
        monitor.join(timeout=5.0)
        result.elapsed_s = time.monotonic() - t_start
        result.diagnostics = {k: dict(v) for k, v in state["diag"].items()}
        result.chunks_seen = state.get("chunks_seen_at_policy_diag", state["chunks_seen"])
        bad = {name: code for name, code in codes.items() if code not in (0, -2, 130)}
        if bad and not result.reason:
            result.reason = f"node(s) exited uncleanly: {bad}; see {log_dir}"
    result.motion = analyse_motion(emb, list(state["measured"]), list(state["commanded"]))
    if opts.record_video:
        from molmoact2_ros.sim.video import write_video

        try:
            result.video = write_video(opts.record_video, list(state["frames"]), emb, list(state["measured"]),
                                       list(state["commanded"]), camera=video_camera, progress=progress)
        except MolmoAct2RosError as exc:  # the run's verdict stands; the video's problem is reported
            result.video = f"not written: {exc}"
    if not result.reason:
        problems = judge(result.diagnostics.get(DRIVER, {}), result.motion)
        result.ok = not problems
        result.reason = "loop closed, the arm moved, no safety violation" if result.ok else "; ".join(problems)
    return result


def judge(driver: dict[str, str], motion: MotionReport) -> list[str]:
    """Why a finished run failed (empty: it passed), in the order a reader should fix them."""
    problems = []
    if _int(driver.get("chunks_executed")) <= 0:
        problems.append("no chunk was executed by the driver: the loop did not close")
    faults, estops, final = _int(driver.get("faults")), _int(driver.get("estops")), driver.get("state", "")
    if faults or estops or final in ("ESTOP", "FAULT"):
        detail = f": {driver['fault']} {driver.get('fault_detail', '')}".rstrip() if driver.get("fault") else ""
        problems.append(f"the driver faulted or was e-stopped (faults {faults}, e-stops {estops}, "
                        f"state {final or '?'}){detail}")
    if not motion.commanded_samples:
        problems.append(f"no commanded values on {COMMANDED_TOPIC}: the limits could not be checked")
    elif motion.violations:
        problems.append(f"{motion.violations} safety violation(s) in the commanded values, e.g. "
                        + "; ".join(motion.violation_examples))
    if not motion.measured_samples:
        problems.append("no /joint_states received: motion could not be measured")
    elif not motion.joints_moved:
        problems.append(f"nothing moved: no joint travelled more than {MIN_TRAVEL_FRACTION:.0%} of its range "
                        f"(travel: {motion.travel_text()})")
    return problems


def _wait_until_running(group: ProcessGroup, state: dict, opts: DemoOptions, progress) -> str:
    deadline = time.monotonic() + opts.startup_timeout_s
    announced = False
    while time.monotonic() < deadline:
        problem = group.first_problem()  # a node that reported why it did not start, or exited
        if problem:
            return problem
        policy = state["diag"].get(POLICY, {})
        if "configure failed" in policy.get("_message", ""):
            return f"policy node: {policy['_message']}"
        driver = state["diag"].get(DRIVER, {})
        sim_up = opts.hardware != "sim" or SIM in state["diag"]  # the sim reports once its scene and cameras run
        if policy.get("state") == "active" and driver.get("state") not in (None, "", "UNCONFIGURED") and sim_up:
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
            problem = group.first_problem()
            if problem:
                return problem
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


def _rejections(driver: dict[str, str]) -> str:
    counts = {k.removeprefix("rejected_"): _int(v) for k, v in driver.items() if k.startswith("rejected_")}
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()) if n)


def _hardware_text(drv: dict[str, str], sim: dict[str, str]) -> str:
    backend = drv.get("backend", "n/a")
    if drv.get("hardware_emulated") == "True":
        return f"{backend} (emulated device)"
    return f"simulation ({backend} backend)" if sim else backend


def format_summary(emb_name: str, res: DemoResult) -> str:
    pol = res.diagnostics.get(POLICY, {})
    drv = res.diagnostics.get(DRIVER, {})
    per = res.diagnostics.get(PERCEPTION) or res.diagnostics.get(SIM, {})  # the sim publishes the cameras then
    sim = res.diagnostics.get(SIM, {})

    def g(d: dict, k: str, default: str = "n/a") -> str:
        return d.get(k, default)

    frames = sum(_int(v) for k, v in per.items() if k.endswith("frames_published"))
    rejected = _int(g(drv, "chunks_rejected", "0"))
    rows = [
        ("embodiment", emb_name),
        ("hardware", _hardware_text(drv, sim)),
        ("camera frames published", str(frames) if per else "n/a"),
        *([("simulation: real-time factor / render ms / lag events",
            f"{g(sim, 'real_time_factor')} / {g(sim, 'render_ms')} / {g(sim, 'lag_events')}")] if sim else []),
        ("inferences", g(pol, "inferences")),
        ("inference latency p50 / p99 / max (ms)",
         f"{g(pol, 'inference_latency_p50_ms')} / {g(pol, 'inference_latency_p99_ms')} / "
         f"{g(pol, 'inference_latency_max_ms')}"),
        ("model load + warm-up (s)", g(pol, "model_load_s")),
        # Both counted up to the policy's last diagnostics; a chunk in flight then can make "seen" one short.
        ("chunks published / seen on the wire", f"{g(pol, 'chunks_published')} / {res.chunks_seen}"),
        ("chunks received / rejected / executed",
         f"{g(drv, 'chunks_received')} / {rejected} / {g(drv, 'chunks_executed')}"),
        *([("chunks rejected, by reason", reasons)] if (reasons := _rejections(drv)) else []),
        ("control ticks (since the driver started)", g(drv, "ticks")),
        ("tick period error p50 / p99 / max (ms)",
         f"{g(drv, 'period_error_p50_ms')} / {g(drv, 'period_error_p99_ms')} / {g(drv, 'period_error_max_ms')}"),
        ("chunk latency at receipt, last (ms)", g(drv, "latency_last_ms")),
        ("safety: clamped / rate-limited ticks", f"{g(drv, 'clamp_events')} / {g(drv, 'rate_limit_events')}"),
        ("safety: watchdog holds / starved ticks", f"{g(drv, 'watchdog_holds')} / {g(drv, 'starvation_ticks')}"),
        ("driver faults / e-stops", f"{g(drv, 'faults')} / {g(drv, 'estops')}"),
        ("driver state at end", g(drv, "state")),
    ]
    motion = res.motion
    if motion is not None:
        rows += [
            ("joint travel (robot units)", motion.travel_text() or "n/a"),
            (f"joints moved (> {MIN_TRAVEL_FRACTION:.0%} of range)", f"{motion.joints_moved} of {len(motion.moved)}"),
            ("largest tracking error |measured - commanded|", motion.tracking_text()),
            ("commanded values checked / safety violations", f"{motion.commanded_samples} / {motion.violations}"),
        ]
    if res.video:
        rows.append(("video", res.video))
    rows.append(("result", ("OK: " if res.ok else "STOPPED: " if res.interrupted else "FAILED: ") + res.reason))
    width = max(len(k) for k, _ in rows)
    lines = [f"molmoact2-ros demo summary ({res.elapsed_s:.1f} s wall, logs: {res.log_dir})"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if _int(g(drv, "chunks_received", "0")) + 1 < _int(g(pol, "chunks_published", "0")):
        lines.append("  (received < published: the driver's chunk subscription keeps only the newest chunk, so one "
                     "a busy driver has not taken yet is replaced by the next; only the newest matters)")
    return "\n".join(lines)


__all__ = ["DemoOptions", "DemoResult", "MolmoAct2RosError", "MotionReport", "analyse_motion", "format_summary",
           "judge", "run_demo"]
