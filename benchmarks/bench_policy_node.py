"""P1: what the policy node adds to an inference, against bare ``model.predict_action`` on the same inputs.

Denominator: bare ``model.predict_action(...)`` on the very model object the node's runtime loaded (the
real MolmoAct2 remote code from LeRobot 0.6.1), called exactly as the MolmoAct2 API is called
(MOLMOACT2.md, "The one inference call"): ``processor``, the images as HxWx3 uint8 arrays in the tag's
camera order, ``task``, ``state`` in model space, ``norm_tag``, ``inference_action_mode="continuous"``, and
the node's ``num_steps`` / ``n_action_steps`` / seeded ``generator`` / ``enable_cuda_graph``. Nothing of this
project runs inside the timed call (no ``MolmoAct2Runtime.predict``: no input checks, no robot<->model
conversion, no ``torch.inference_mode``, no output copy); images and model-space state are prepared before.

Two processes, as in a deployment:

- this process: the real ``PolicyNode`` (tiny MolmoAct2 checkpoint, CPU, one torch thread) on its own
  executor thread, its inference thread as in production, and the bare calls on its model object;
- a rig process (another DDS participant, like the perception and driver nodes): streams /joint_states
  at the control rate as a driver does, publishes one 640x480 rgb8 frame per camera per observation, all
  with one capture stamp taken right before publishing, and subscribes to /molmoact2/action_chunk, decoding
  each chunk with the driver's ``contract.trajectory_to_chunk``.

Both get what the bringup gives every node (``bringup.node_environment``: the shipped Fast DDS profile
and the glibc malloc tunables; this script re-executes itself once to have them from the start).

Lockstep, per round (the three in rotating order, same inputs every round):

1. node: the rig publishes the round's frames and waits for their chunk. Measured:
   - (P1) the node's own ``cycle_latency``: arrival of the round's last frame -> chunk leaving ``publish``
     (assembling and checking the observation, ``runtime.predict``, building and publishing the
     JointTrajectory), and the ``runtime.predict`` inside it;
   - (P1 end to end) capture stamp -> chunk received and decoded by the rig: adds the frames' transport
     and deserialisation, waking the inference thread, the chunk's transport and decode.
2. bare: ``model.predict_action`` on the same images, state and instruction, from this thread while the
   node idles;
3. context: the same bare call inside ``torch.inference_mode()``, which is how the runtime calls the model
   (faster than the ``torch.no_grad()`` the API applies itself): it explains a P1 below 1.

Each figure is a per-round ratio to that round's bare call (drift on a shared machine moves both calls
of a round alike), summarised by its median (P1 target <= 1.05) and p99.

Streaming (context, not the P1 target): the rig publishes both cameras and /joint_states at 30 Hz while
the node infers back to back; node cycle and capture -> chunk received (which now also holds the wait for
the inference in flight) against bare calls made in quiet phases right before and after.

    python benchmarks/bench_policy_node.py [--rounds 60] [--stream-seconds 10]     # ~50 s with the defaults
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.nodes.runtime_env import unused_domain_id

EMBODIMENT = "so101"
INSTRUCTION = "pick up the red cube and place it in the bowl"
STREAM_HZ = 30.0
LOCKSTEP_TRIES = 3
LOCKSTEP_WAIT_S = 3.0
# The node carries stamps as float seconds: at today's epoch a round trip through a float moves them by up
# to ~120 ns, so a chunk belongs to the round whose capture stamp is within this.
STAMP_MATCH_NS = 1000
RIG_FLAG = "--rig"
REEXEC_FLAG = "MOLMOACT2_BENCH_P1_ENV"


def _with_bringup_environment() -> None:
    """Re-execute once with what the bringup gives every node (DDS profile, malloc tunables): glibc reads
    its tunables at process start, so they cannot be set from inside."""
    from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, node_environment

    if os.environ.get(REEXEC_FLAG):
        return
    env = {**os.environ, **node_environment(DEFAULT_DDS_PROFILE), REEXEC_FLAG: "1"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if RIG_FLAG not in sys.argv:
    _with_bringup_environment()
# Before rclpy is imported anywhere: this run stays on loopback, in a ROS domain of its own (chosen in
# main: unused_domain_id; the rig process inherits it).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def scene(i: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x = (i * 11) % (width - 40)
    frame[height // 2: height // 2 + 40, x: x + 40] = (255, 0, 0)
    return frame


# ---- the rig: cameras + /joint_states out, chunks in (its own process) ---------------------------------

def rig(mode: str, seconds: float) -> int:
    """``lockstep``: one round per 'go' line on stdin, answered by 'done <capture_ns> <latency_ms>
    <decode_ms>'; ``stream``: publish at STREAM_HZ for ``seconds``, print 'chunk <wall_s> <latency_ms>
    <decode_ms>' for every chunk."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.core.images import fill_image
    from molmoact2_ros.nodes.contract import stamp_ns, trajectory_to_chunk
    from molmoact2_ros.nodes.qos import (
        CAMERA_QOS,
        CHUNK_QOS,
        CHUNK_TOPIC,
        JOINT_STATE_QOS,
        JOINT_STATES_TOPIC,
        camera_topic,
    )

    emb = load_embodiment(EMBODIMENT)
    rclpy.init()
    node = rclpy.create_node("bench_p1_rig")
    clock = node.get_clock()
    pubs = {c.name: node.create_publisher(Image, camera_topic(c.name), CAMERA_QOS) for c in emb.cameras}
    js_pub = node.create_publisher(JointState, JOINT_STATES_TOPIC, JOINT_STATE_QOS)
    n_frames = 8 if mode == "stream" else 1
    images = {c.name: [fill_image(Image(), scene(i, c.height, c.width, k)) for i in range(n_frames)]
              for k, c in enumerate(emb.cameras)}
    js = JointState(name=emb.joint_names, position=[float(x) for x in emb.home])
    lock = threading.Lock()
    received: dict[int, tuple[float, float]] = {}  # capture stamp (ns) -> (latency ms, decode ms)
    arrived = threading.Event()
    out_lines: list[str] = []

    def on_chunk(msg: JointTrajectory) -> None:
        t0 = time.perf_counter()
        chunk = trajectory_to_chunk(msg, emb.control_rate_hz)  # what the driver does with it
        now = clock.now().nanoseconds
        decode_ms = (time.perf_counter() - t0) * 1e3
        key = stamp_ns(chunk.stamp_s)  # the capture stamp, give or take the node's float seconds (< 1 us)
        latency_ms = (now - key) * 1e-6
        with lock:
            received[key] = (latency_ms, decode_ms)
            if mode == "stream":
                out_lines.append(f"chunk {time.time():.6f} {latency_ms:.4f} {decode_ms:.4f}")
        arrived.set()

    node.create_subscription(JointTrajectory, CHUNK_TOPIC, on_chunk, CHUNK_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    stop = threading.Event()

    def stream_joint_states() -> None:
        # As a driver does, at its tick rate. (Published with each round's frames instead, a /joint_states that
        # arrives after the last frame would leave the node waiting for the next frame: only frames wake
        # its inference thread.)
        period = 1.0 / emb.control_rate_hz
        while not stop.is_set():
            js.header.stamp = clock.now().to_msg()
            js_pub.publish(js)
            stop.wait(period)

    def publish(i: int) -> int:
        """One observation: every frame carries the capture stamp taken right before publishing."""
        now = clock.now()
        stamp = now.to_msg()
        for name, pub in pubs.items():
            msg = images[name][i % n_frames]
            msg.header.stamp = stamp
            pub.publish(msg)
        return now.nanoseconds

    deadline = time.monotonic() + 60
    while (any(p.get_subscription_count() == 0 for p in [*pubs.values(), js_pub])
           or node.count_publishers(CHUNK_TOPIC) == 0):
        if time.monotonic() > deadline:
            print("rig: the policy node was not discovered within 60 s", flush=True)
            return 1
        time.sleep(0.05)
    js_thread = threading.Thread(target=stream_joint_states, daemon=True)
    js_thread.start()
    time.sleep(0.2)
    print("ready", flush=True)
    try:
        if mode == "lockstep":
            for i, line in enumerate(sys.stdin):
                if line.strip() != "go":
                    break
                # Camera frames are best effort: one lost frame means no observation, so after a while
                # without its chunk the round is published again (with a new stamp) and counted as a retry.
                retries = 0
                while True:
                    arrived.clear()
                    key = publish(i)
                    end = time.monotonic() + LOCKSTEP_WAIT_S
                    while True:
                        with lock:
                            match = [k for k in received if abs(k - key) < STAMP_MATCH_NS]
                            got = received.pop(match[0]) if match else None
                        if got is not None or time.monotonic() > end:
                            break
                        arrived.wait(0.05)
                        arrived.clear()
                    if got is not None or retries + 1 >= LOCKSTEP_TRIES:
                        break
                    retries += 1
                print("timeout" if got is None else f"done {key} {got[0]:.4f} {got[1]:.4f} {retries}", flush=True)
        else:
            period = 1.0 / STREAM_HZ
            next_t = time.perf_counter()
            end_t = next_t + seconds
            i = 0
            while time.perf_counter() < end_t:
                publish(i)
                i += 1
                next_t += period
                time.sleep(max(0.0, next_t - time.perf_counter()))
            time.sleep(0.5)  # the last chunk in flight
            with lock:
                lines = list(out_lines)
            print("\n".join(lines), flush=True)
    finally:
        stop.set()
        js_thread.join(timeout=2.0)
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


class Rig:
    def __init__(self, mode: str, seconds: float = 0.0):
        self.proc = subprocess.Popen([sys.executable, __file__, RIG_FLAG, mode, str(seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._line(120.0)
        if line != "ready":
            raise SystemExit(f"rig did not start: {line!r}")

    def _line(self, timeout: float) -> str:
        stdout = self.proc.stdout
        assert stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return result[0].strip() if result else ""

    def round(self) -> tuple[int, float, float, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self._line(LOCKSTEP_TRIES * LOCKSTEP_WAIT_S + 10.0)
        if not line.startswith("done "):
            raise SystemExit(f"no chunk for the round after {LOCKSTEP_TRIES} tries: rig says {line!r}")
        _, key, latency, decode, retries = line.split()
        return int(key), float(latency), float(decode), int(retries)

    def finish(self) -> list[str]:
        try:  # closes stdin: the lockstep rig stops at end of input
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.splitlines() if out else []


# ---- the measurement ------------------------------------------------------------------------------

class Bench:
    def __init__(self, checkpoint: Path | None = None, params: dict[str, Any] | None = None,
                 startup_timeout_s: float = 180.0) -> None:
        """The policy node in this process, active, on ``checkpoint`` (default: the tiny one) with the lockstep
        parameters below plus ``params`` (gpu_check.py: device, dtype, CUDA graphs, Think)."""
        import rclpy
        import torch
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint
        from molmoact2_ros.core.embodiment import load_embodiment
        from molmoact2_ros.nodes.policy_node import PolicyNode

        self.emb = load_embodiment(EMBODIMENT)
        ckpt = checkpoint if checkpoint is not None else ensure_tiny_checkpoint(self.emb)
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        # frozen check off: lockstep re-sends the same content on purpose. Skew limit 1 ms: both cameras of a
        # round carry one stamp, so the node starts only once the round's last frame is in (otherwise it
        # may start on the first camera's new frame with the other's previous one).
        params = {"checkpoint": str(ckpt), "instruction": INSTRUCTION, "torch_num_threads": 1,
                  "frozen_frame_limit": 0, "camera_max_skew_s": 0.001, **(params or {})}
        self.node = PolicyNode(context=self.ctx,
                               parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.spin = threading.Thread(target=self.executor.spin, daemon=True)
        self.spin.start()
        deadline = time.monotonic() + startup_timeout_s
        while self.node._lifecycle != "active":
            if time.monotonic() > deadline or self.node._configure_error:
                raise SystemExit(f"policy node did not become active: {self.node._configure_error}")
            time.sleep(0.05)
        # The bare call's inputs, prepared outside the timed call: the rig's frames, in the model's camera
        # order, and its state (home) in model space.
        runtime = self.node._runtime
        self.model, self.processor = runtime._model, runtime._processor
        self.kwargs = {"norm_tag": runtime.norm_tag, "inference_action_mode": runtime.action_mode,
                       "num_steps": runtime.num_steps, "n_action_steps": runtime.n_action_steps,
                       "enable_cuda_graph": runtime.enable_cuda_graph}
        cams = {c.name: (k, c) for k, c in enumerate(self.emb.cameras)}
        self.images = [scene(0, cams[n][1].height, cams[n][1].width, cams[n][0]) for n in self.emb.camera_names]
        self.state = self.emb.robot_to_model(self.emb.home.copy())
        self.generator = torch.Generator(device=runtime.device)
        self.generator.manual_seed(0)
        self.bare_checked = False
        self.retries = 0  # lockstep rounds published again because a frame was lost

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.spin.join(timeout=2.0)
        self.node.release()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)

    def bare(self, inference_mode: bool = False) -> float:
        """One bare ``model.predict_action``, the MolmoAct2 API call and nothing else; milliseconds.

        ``inference_mode``: the same call inside ``torch.inference_mode()`` (context only: the runtime calls
        the model under it, and it is faster than the ``torch.no_grad()`` the API applies by itself)."""
        import torch

        context = torch.inference_mode() if inference_mode else contextlib.nullcontext()
        t0 = time.perf_counter()
        with context:
            out = self.model.predict_action(processor=self.processor, images=self.images, task=INSTRUCTION,
                                            state=self.state, generator=self.generator, **self.kwargs)
        ms = (time.perf_counter() - t0) * 1e3
        if not self.bare_checked:  # outside the timing: the call did what the node's call does
            expected = (1, self.kwargs["n_action_steps"], self.emb.dof)
            if tuple(out.actions.shape) != expected:
                raise SystemExit(f"bare predict_action returned {tuple(out.actions.shape)}, expected {expected}")
            self.bare_checked = True
        return ms

    def _published(self) -> int:
        with self.node._stats.lock:
            return self.node._stats.counters["chunks_published"]

    def lockstep(self, rounds: int, warmup: int = 5) -> dict[str, np.ndarray]:
        rig = Rig("lockstep")
        cols: dict[str, list[float]] = {k: [] for k in ("node_cycle", "node_predict", "end_to_end", "decode",
                                                         "bare", "bare_im")}
        try:
            for r in range(warmup + rounds):
                row: dict[str, float] = {}
                # Rotate the order so that no side always runs first (or on a warmer cache).
                parts = ["node", "bare", "bare_im"]
                for part in parts[r % 3:] + parts[:r % 3]:
                    if part == "bare":
                        row["bare"] = self.bare()
                    elif part == "bare_im":
                        row["bare_im"] = self.bare(inference_mode=True)
                    else:
                        row.update(self._node_round(rig))
                if r >= warmup:
                    for key, value in row.items():
                        cols[key].append(value)
        finally:
            rig.finish()
        return {k: np.array(v) for k, v in cols.items()}

    def _node_round(self, rig: Rig) -> dict[str, float]:
        stats = self.node._stats
        before = self._published()
        _, end_to_end, decode, retries = rig.round()
        self.retries += retries
        deadline = time.monotonic() + 5.0
        while self._published() == before:  # the node's bookkeeping right after publish
            if time.monotonic() > deadline:
                raise SystemExit("the chunk arrived but the node did not count it")
            time.sleep(0.001)
        with stats.lock:
            cycle, in_node = stats.cycle_ms[-1], stats.latency_ms[-1]
        return {"node_cycle": cycle, "node_predict": in_node, "end_to_end": end_to_end, "decode": decode}

    def streaming(self, seconds: float) -> dict[str, np.ndarray]:
        stats = self.node._stats
        bare = [self.bare() for _ in range(15)]  # quiet, before
        rig = Rig("stream", seconds + 3.0)
        t_start_wall = time.time() + 3.0  # discovery + warm-up
        time.sleep(3.0)
        t_start = time.perf_counter()
        lines = rig.finish()
        with stats.lock:
            window = [(c, p) for c, p, d in zip(stats.cycle_ms, stats.latency_ms, stats.done_at, strict=True)
                      if d > t_start]
        chunks = [line.split() for line in lines if line.startswith("chunk ")]
        end_to_end = [float(f[2]) for f in chunks if float(f[1]) > t_start_wall]
        time.sleep(0.5)
        bare += [self.bare() for _ in range(15)]  # quiet, after
        return {"node_cycle": np.array([c for c, _ in window]), "node_predict": np.array([p for _, p in window]),
                "end_to_end": np.array(end_to_end), "bare": np.array(bare)}


def _row(name: str, values: np.ndarray, ref: float) -> str:
    p50, p99 = np.percentile(values, [50, 99])
    return f"| {name} | {len(values)} | {p50:.2f} | {p99:.2f} | {p50 / ref:.3f} |"


def _ratio_line(name: str, ratio: np.ndarray, target: float | None = None) -> str:
    p50, p99 = np.percentile(ratio, [50, 99])
    q1, q3 = np.percentile(ratio, [25, 75])
    verdict = "" if target is None else f"; target <= {target:g}: {'met' if p50 <= target else 'NOT met'}"
    return (f"{name}: median {p50:.3f} (interquartile {q1:.3f} .. {q3:.3f}), p99 {p99:.3f}, "
            f"n {len(ratio)}{verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--stream-seconds", type=float, default=10.0)
    if RIG_FLAG in sys.argv:
        i = sys.argv.index(RIG_FLAG)
        return rig(sys.argv[i + 1], float(sys.argv[i + 2]))
    args = parser.parse_args()
    os.environ["ROS_DOMAIN_ID"] = str(unused_domain_id())
    import platform

    import torch

    print(f"P1 policy node overhead: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, Fast DDS profile "
          f"{os.path.basename(os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', '(none)'))}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}, 1-min load {os.getloadavg()[0]:.1f}")
    bench = Bench()
    try:
        lock = bench.lockstep(args.rounds)
        stream = bench.streaming(args.stream_seconds) if args.stream_seconds > 0 else None
    finally:
        bench.close()
    ref = float(np.median(lock["bare"]))
    print("\nLockstep: the rig process publishes one observation and waits for its chunk; bare predict_action on "
          "the same inputs, on the node's own model object.")
    print("| measurement | n | p50 ms | p99 ms | p50 ÷ bare p50 |")
    print("|---|---|---|---|---|")
    print(_row("bare model.predict_action (denominator)", lock["bare"], ref))
    print(_row("node: observation available -> chunk published (P1)", lock["node_cycle"], ref))
    print(_row("node: runtime.predict inside the node", lock["node_predict"], ref))
    print(_row("rig: capture stamp -> chunk received and decoded (P1 end to end)", lock["end_to_end"], ref))
    print(_row("context: bare predict_action inside torch.inference_mode()", lock["bare_im"], ref))
    print(_row("rig: decoding the chunk (trajectory_to_chunk)", lock["decode"], ref))
    outside = lock["node_cycle"] - lock["node_predict"]
    print(_row("node work outside predict (per round: cycle - runtime.predict)", outside, ref))
    wrapper = lock["node_predict"] - lock["bare"]
    print(_row("runtime.predict - bare predict_action (per round)", wrapper, ref))
    transport = lock["end_to_end"] - lock["node_cycle"]
    print(_row("end to end - node cycle (per round: transport both ways, wake-up, decode)", transport, ref))
    # Per round: the node's work and the bare call ran back to back on the same inputs, so their ratio is
    # free of the drift that moves both (other processes on a shared machine).
    p1 = lock["node_cycle"] / lock["bare"]
    e2e = lock["end_to_end"] / lock["bare"]
    print()
    print(_ratio_line("P1 = node cycle ÷ bare predict_action, per round", p1, 1.05))
    print(_ratio_line("P1 end to end = capture stamp -> chunk received ÷ bare predict_action, per round", e2e))
    print(_ratio_line("context: node cycle ÷ bare predict_action inside torch.inference_mode(), per round",
                      lock["node_cycle"] / lock["bare_im"]))
    print(_ratio_line("context: bare inside torch.inference_mode() ÷ bare, per round", lock["bare_im"] / lock["bare"]))
    print(f"    ratio of the medians: P1 {float(np.median(lock['node_cycle'])) / ref:.3f}, end to end "
          f"{float(np.median(lock['end_to_end'])) / ref:.3f}; rounds published again after a lost frame: "
          f"{bench.retries} (warm-up included)")
    if stream is not None and len(stream["node_cycle"]):
        sref = float(np.median(stream["bare"]))
        print(f"\nStreaming: the rig publishes 2 x 640x480 rgb8 + /joint_states at {STREAM_HZ:g} Hz, the node infers "
              "back to back; bare predict_action in quiet phases right before and after.")
        print("| measurement | n | p50 ms | p99 ms | p50 ÷ bare p50 |")
        print("|---|---|---|---|---|")
        print(_row("bare model.predict_action (quiet, before + after)", stream["bare"], sref))
        print(_row("node: observation available -> chunk published", stream["node_cycle"], sref))
        print(_row("node: runtime.predict inside the node", stream["node_predict"], sref))
        if len(stream["end_to_end"]):
            print(_row("rig: capture stamp -> chunk received (holds the wait for the call in flight)",
                       stream["end_to_end"], sref))
        own = stream["node_cycle"] - stream["node_predict"]
        print(_row("node work outside predict (cycle - runtime.predict)", own, sref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
