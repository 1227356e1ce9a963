"""Policy node: latest camera frames + latest joint state + instruction -> stamped action chunk.

Lifecycle: configure loads the model (and warms it up), activate starts producing chunks, deactivate
stops, cleanup releases the model. Inference runs on its own thread, one call at a time (CUDA graphs
are not re-entrant), so subscriptions and diagnostics keep running while the model thinks. Each chunk
is stamped with the capture time of the observation it was computed from; the driver uses that stamp
and its own clock to decide where the chunk starts.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.time import Time
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.chunk import ActionChunk, Observation
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import MolmoAct2RosError, ObservationError
from molmoact2_ros.core.images import image_from_msg
from molmoact2_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from molmoact2_ros.nodes.qos import (
    CAMERA_QOS,
    CHUNK_QOS,
    CHUNK_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATE_QOS,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    camera_topic,
)
from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults

PARAMS: dict[str, tuple[object, str]] = {
    "embodiment": ("so101", "built-in embodiment name or path to an embodiment YAML"),
    "checkpoint": ("", "checkpoint dir or Hugging Face id; '' = the embodiment's default; 'tiny' = "
                       "a tiny random checkpoint built from the real MolmoAct2 code (demo/tests)"),
    "norm_tag": ("", "norm_stats tag; '' = the embodiment's"),
    "device": ("cpu", "torch device: cpu, cuda, cuda:1, ..."),
    "dtype": ("fp32", "fp32 or bf16"),
    "num_flow_steps": (0, "flow-matching Euler steps; 0 = model default (10)"),
    "n_action_steps": (0, "steps per chunk; 0 = the embodiment's chunk.n_action_steps"),
    "enable_cuda_graph": (True, "capture CUDA graphs (GPU only; skipped on CPU)"),
    "instruction": ("", "initial task in words, used until /molmoact2/instruction says otherwise"),
    "max_inference_rate_hz": (0.0, "upper bound on inferences per second; 0 = back to back"),
    "autostart": (True, "configure and activate at startup (the pip path has no lifecycle manager)"),
    "seed": (0, "seed for the flow-matching noise (reproducible chunks); -1 = unseeded"),
}


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("molmoact2_policy", **kwargs)
        for name, (default, description) in PARAMS.items():
            self.declare_parameter(name, default, _descriptor(description))
        self._lock = threading.Lock()
        self._frames: dict[str, Image] = {}
        self._joint_state: JointState | None = None
        self._instruction = ""
        self._emb: EmbodimentConfig | None = None
        self._runtime = None
        self._active = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._latencies_ms: deque[float] = deque(maxlen=500)
        self._counters = {"inferences": 0, "chunks_published": 0, "skipped_no_input": 0, "errors": 0}
        self._status = (WARN, "unconfigured")
        self._load_time_s = 0.0
        self._subs: list = []
        self._chunk_pub = None
        self._diag = DiagnosticsPublisher(self, self._snapshot)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if self.get_parameter("autostart").value:
            # Run the transitions from the executor so the node is fully constructed first.
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ---- lifecycle ---------------------------------------------------------------------------
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = {name: self.get_parameter(name).value for name in PARAMS}
        try:
            emb = load_embodiment(p["embodiment"])
            self._runtime = self._load_runtime(emb, p)
        except MolmoAct2RosError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._status = (ERROR, f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._emb = emb
        self._instruction = p["instruction"]
        for cam in emb.camera_names:
            self._subs.append(self.create_subscription(
                Image, camera_topic(cam), lambda msg, c=cam: self._on_frame(c, msg), CAMERA_QOS))
        self._subs.append(self.create_subscription(
            JointState, JOINT_STATES_TOPIC, self._on_joint_state, JOINT_STATE_QOS))
        self._subs.append(self.create_subscription(
            String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED_QOS))
        self._chunk_pub = self.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        self._status = (OK, f"configured ({emb.name}, model loaded in {self._load_time_s:.1f} s)")
        self._stop.clear()
        self._worker = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def _load_runtime(self, emb: EmbodimentConfig, p: dict):
        # Imported here: torch is only needed on the policy host, and only once configured.
        from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime

        checkpoint = p["checkpoint"] or emb.policy.default_checkpoint
        if checkpoint == "tiny":
            from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint

            checkpoint = str(ensure_tiny_checkpoint(emb))
        self.get_logger().info(f"loading {checkpoint} for {emb.name} on {p['device']} ({p['dtype']})")
        t0 = time.monotonic()
        runtime = MolmoAct2Runtime(
            checkpoint, emb, norm_tag=p["norm_tag"] or None, device=p["device"], dtype=p["dtype"],
            num_steps=p["num_flow_steps"] or None, n_action_steps=p["n_action_steps"] or None,
            enable_cuda_graph=p["enable_cuda_graph"], seed=None if p["seed"] < 0 else p["seed"],
        )
        runtime.warmup()
        self._load_time_s = time.monotonic() - t0
        self.get_logger().info(f"model ready in {self._load_time_s:.1f} s (load + warm-up)")
        return runtime

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.set()
        self._status = (OK, "active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        self._status = (OK, "inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._status = (WARN, "unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._active.clear()
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs.clear()
        if self._chunk_pub is not None:
            self.destroy_publisher(self._chunk_pub)
            self._chunk_pub = None
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    # ---- inputs ------------------------------------------------------------------------------
    def _on_frame(self, camera: str, msg: Image) -> None:
        with self._lock:
            self._frames[camera] = msg

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            self._joint_state = msg

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            self._instruction = msg.data
        self.get_logger().info(f"instruction: {msg.data!r}")

    def _on_reset(self, request, response):
        with self._lock:
            self._frames.clear()
        response.success = True
        response.message = "episode reset"
        return response

    def _observation(self) -> Observation | None:
        """The newest complete observation, or None (with the reason recorded) if inputs are missing."""
        emb = self._emb
        with self._lock:
            frames = dict(self._frames)
            js = self._joint_state
            instruction = self._instruction
        missing = [c for c in emb.camera_names if c not in frames]
        if missing or js is None:
            what = f"cameras {missing}" if missing else "/joint_states"
            self._status = (WARN, f"waiting for {what}")
            return None
        index = {name: i for i, name in enumerate(js.name)}
        absent = [n for n in emb.joint_names if n not in index]
        if absent:
            raise ObservationError(f"/joint_states lacks joints {absent} (has {list(js.name)})")
        state = np.array([js.position[index[n]] for n in emb.joint_names], dtype=np.float64)
        images = {c: image_from_msg(frames[c], what=f"camera {c!r}") for c in emb.camera_names}
        # The observation is as old as its oldest frame: stamp with that, conservatively.
        stamp_s = min(Time.from_msg(frames[c].header.stamp).nanoseconds for c in emb.camera_names) * 1e-9
        return Observation(images=images, state=state, instruction=instruction, stamp_s=stamp_s)

    # ---- inference thread --------------------------------------------------------------------
    def _inference_loop(self) -> None:
        next_start = 0.0
        while not self._stop.is_set():
            if not self._active.wait(timeout=0.1):
                continue
            max_rate = float(self.get_parameter("max_inference_rate_hz").value)
            delay = next_start - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            try:
                obs = self._observation()
            except MolmoAct2RosError as exc:
                self._counters["errors"] += 1
                self._status = (ERROR, str(exc))
                self._stop.wait(0.1)
                continue
            if obs is None:
                self._counters["skipped_no_input"] += 1
                self._stop.wait(0.02)
                continue
            next_start = time.monotonic() + (1.0 / max_rate if max_rate > 0 else 0.0)
            try:
                t0 = time.perf_counter()
                chunk, _info = self._runtime.predict(obs)
                latency_ms = (time.perf_counter() - t0) * 1e3
            except MolmoAct2RosError as exc:
                self._counters["errors"] += 1
                self._status = (ERROR, f"inference failed: {exc}")
                self.get_logger().error(f"inference failed: {exc}")
                continue
            self._counters["inferences"] += 1
            self._latencies_ms.append(latency_ms)
            if self._active.is_set() and self._chunk_pub is not None:
                self._chunk_pub.publish(chunk_to_msg(chunk))
                self._counters["chunks_published"] += 1
                self._status = (OK, "active")

    def _snapshot(self):
        lat = np.array(self._latencies_ms) if self._latencies_ms else np.zeros(1)
        values = dict(self._counters)
        values.update(
            state="active" if self._active.is_set() else ("inactive" if self._runtime else "unconfigured"),
            inference_latency_p50_ms=float(np.percentile(lat, 50)),
            inference_latency_p99_ms=float(np.percentile(lat, 99)),
            inference_latency_max_ms=float(lat.max()),
            inference_rate_hz=_rate(self._latencies_ms),
            model_load_s=self._load_time_s,
        )
        level, message = self._status
        return level, message, values


def _rate(latencies_ms: deque) -> float:
    total = sum(latencies_ms)
    return len(latencies_ms) / (total / 1e3) if total > 0 else 0.0


def chunk_to_msg(chunk: ActionChunk) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = Time(nanoseconds=round(chunk.stamp_s * 1e9)).to_msg()
    msg.joint_names = list(chunk.joint_names)
    for k, row in enumerate(chunk.positions):
        t_ns = round(k * 1e9 / chunk.rate_hz)
        msg.points.append(JointTrajectoryPoint(
            positions=[float(x) for x in row],
            time_from_start=Duration(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000),
        ))
    return msg


def _descriptor(description: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description)


def main(args=None) -> None:
    apply_local_ros_defaults()
    rclpy.init(args=args)
    node = PolicyNode()
    # One executor thread: inference has its own thread and callbacks are short. The wheels'
    # MultiThreadedExecutor busy-waits under streaming subscriptions and starves other threads.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._release()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()

