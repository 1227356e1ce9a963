"""Policy node: latest camera frames + joint state + instruction -> stamped MolmoAct2 action chunk.

A lifecycle node (``molmoact2_policy``), the one a lab runs on its GPU host:

- configure: validate the parameters, check the checkpoint against the embodiment (no torch needed;
  a wrong directory, tag, camera count or state size fails in milliseconds), load the model, run a
  warm-up inference (first-call costs, CUDA graph capture). Progress and the load time go to the log
  and ``/diagnostics`` while it loads; a failure returns FAILURE with the reason on both and leaves
  the node up and unconfigured, ready to be configured again by a lifecycle manager. With ``autostart``
  (the pip path, no manager) the process exits with status 1 and the reason instead (``spin_node``).
  A host without torch (a robot PC) fails configure saying that the ``policy`` extra is missing.
- activate: produce chunks; deactivate: stop (a chunk in flight is dropped); cleanup: release the model.

The node is a thin shell over ``backends.policy.inference.PolicyInference`` (the component the bag
evaluator runs as well): it subscribes, hands every message to it, runs its ``poll``/``infer`` on the
inference thread and publishes what comes out. Inputs are assembled by ``core.observation``: the newest
frame per camera (``/cameras/<name>/image_raw``
or, with ``image_transport:=compressed``, ``.../image_raw/compressed`` JPEG from a remote host), the
newest ``/joint_states`` matched by joint name, the latched ``/molmoact2/instruction``. A stale,
frozen, skewed, undecodable or missing camera, a missing joint or a non-finite state means no
inference and a specific message on ``/diagnostics``; inference resumes by itself when the input
comes back.

Inference runs on its own thread, one call at a time (CUDA graphs are not re-entrant), so callbacks,
services and diagnostics keep running while the model thinks. A call starts only on a frame newer
than the previous call's. Each chunk is stamped with the capture time of the (oldest frame of the)
observation it came from; the driver uses that stamp to splice it in at the right step.

Think variant (``enable_depth_reasoning``): the node owns the depth buffer
(``backends.policy.depth_buffer``), resets it on ``~/reset``, a new instruction, a camera change or a
gap, publishes the 10x10 depth-code grid on ``/molmoact2/depth`` (mono8, one pixel per cell, value =
code 0..127) and the fraction of cells each call re-predicted on ``~/depth_repredicted_fraction``.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from molmoact2_ros.backends.policy.inference import (
    LATENCY_WINDOW,
    InferenceStats,
    PolicyInference,
    input_limits,
    load_runtime,
    refuse_random_weights_for_discrete,
)
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError, ObservationError
from molmoact2_ros.core.images import CdrImage
from molmoact2_ros.core.observation import InputFault, InputLimits, InputProblem, ObservationAssembler
from molmoact2_ros.nodes.contract import ChunkMessages, stamp_to_msg
from molmoact2_ros.nodes.deferred_log import DeferredLog
from molmoact2_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from molmoact2_ros.nodes.image_cdr import MAX_PRIORITY, CameraFrameReceiver
from molmoact2_ros.nodes.param_check import check_parameter_overrides
from molmoact2_ros.nodes.qos import (
    CAMERA_QOS,
    CHUNK_PUBLISHER_QOS,
    CHUNK_QOS,
    CHUNK_TOPIC,
    DEPTH_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATE_QOS,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    camera_topic,
    compressed_topic,
)
from molmoact2_ros.nodes.runtime_env import spin_node

NODE_NAME = "molmoact2_policy"
DTYPES = ("fp32", "bf16")
ACTION_MODES = ("continuous", "discrete")
IMAGE_TRANSPORTS = ("raw", "compressed")
# How often the inference thread re-checks its inputs when no new frame arrives: stale cameras and
# joint states must show on /diagnostics even when nothing is being published at all.
HEALTH_CHECK_PERIOD_S = 0.05
__all__ = ["LATENCY_WINDOW", "NODE_NAME", "PARAMS", "PolicyNode", "depth_grid_msg", "main"]
# Per-inference metric topics: reliable so a plotter sees every call, a few deep for bursts.
METRIC_QOS_DEPTH = 10
# Parameters that take effect while running (the others at the next configure).
LIVE_PARAMS = ("max_inference_rate_hz", "input_grace_s")


def _is_one_of(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        return "" if value in allowed else f"use one of {', '.join(allowed)}"
    return check


def _at_least(lower: float) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        return "" if value >= lower else f"use a value >= {lower:g}"
    return check


def _priority(value: Any) -> str:
    return "" if 0 <= value <= MAX_PRIORITY else f"use 0 (normal scheduling) or 1-{MAX_PRIORITY}"


def _positive(value: Any) -> str:
    return "" if value > 0 else "use a value > 0"


# name -> (default, description, validator returning "" or what is allowed). Declared once, validated at
# configure (not through descriptor ranges: a bad override must leave the node up and say why).
PARAMS: dict[str, tuple[Any, str, Callable[[Any], str] | None]] = {
    "embodiment": ("so101", "built-in embodiment name or path to an embodiment YAML", None),
    "checkpoint": ("", "checkpoint dir or Hugging Face id; '' = the embodiment's default; 'tiny' = a tiny "
                       "checkpoint of the real MolmoAct2 code computing a scripted motion (demo/tests)", None),
    "norm_tag": ("", "norm_stats tag; '' = the embodiment's", None),
    "device": ("cpu", "torch device: cpu, cuda, cuda:1, ...", None),
    "dtype": ("fp32", "fp32 or bf16", _is_one_of(DTYPES)),
    "num_flow_steps": (0, "flow-matching Euler steps; 0 = model default (10)", _at_least(0)),
    "n_action_steps": (0, "steps per chunk; 0 = the embodiment's chunk.n_action_steps", _at_least(0)),
    "enable_cuda_graph": (True, "capture CUDA graphs (GPU only; skipped on CPU)", None),
    "action_mode": ("continuous", "continuous (flow expert, recommended) or discrete (FAST tokens; needs "
                                  "trained weights and fast_tokenizer_dir)", _is_one_of(ACTION_MODES)),
    "fast_tokenizer_dir": ("", "local snapshot of allenai/MolmoAct2-FAST-Tokenizer (discrete mode only)", None),
    "enable_depth_reasoning": (False, "Think variant: predict the depth-code grid before the actions", None),
    "enable_depth_cache": (True, "Think: carry the adaptive depth buffer between calls (false: every "
                                 "call re-predicts every cell)", None),
    "depth_cache_max_gap_s": (1.0, "Think: reset the depth buffer when consecutive observations are "
                                   "further apart than this (seconds)", _positive),
    "instruction": ("", "initial task in words, used until /molmoact2/instruction says otherwise", None),
    "image_transport": ("raw", "raw: sensor_msgs/Image on /cameras/<name>/image_raw; compressed: JPEG "
                               "CompressedImage on /cameras/<name>/image_raw/compressed (remote host)",
                        _is_one_of(IMAGE_TRANSPORTS)),
    "camera_thread_priority": (10, "raw transport: SCHED_FIFO priority of the thread that takes camera frames "
                                   "(1-99, below the driver's 50; 0 = normal scheduling). Keeps frames on time on a "
                                   "loaded host (benchmarks P2); where refused, a warning and normal scheduling",
                               _priority),
    "camera_max_age_s": (0.0, "frames older than this are stale (seconds); 0 = each camera's max_age_s "
                              "from the embodiment", _at_least(0.0)),
    "camera_max_skew_s": (0.1, "largest spread of capture times across cameras (seconds); 0 = no check",
                          _at_least(0.0)),
    "frozen_frame_limit": (30, "this many identical camera updates in a row = frozen camera; 0 = no check",
                           _at_least(0)),
    "joint_state_max_age_s": (0.5, "/joint_states older than this is stale (seconds); 0 = no check",
                              _at_least(0.0)),
    "input_grace_s": (5.0, "after activation, missing inputs are warnings for this long, then errors",
                      _at_least(0.0)),
    "max_inference_rate_hz": (0.0, "upper bound on inferences per second; 0 = as fast as frames come",
                              _at_least(0.0)),
    "diagnostics_period_s": (1.0, "seconds between /diagnostics messages (read at startup)", _positive),
    "autostart": (True, "configure and activate at startup (the pip path has no lifecycle manager)", None),
    "seed": (0, "seed for the flow-matching noise (reproducible chunks); -1 = unseeded", None),
    "torch_num_threads": (0, "torch intra-op CPU threads for this process; 0 = torch's default (one per "
                             "core). 1 suits small models on a shared CPU: with more, every op waits for "
                             "descheduled worker threads (measured: 35 ms -> 75 ms median, 4 s worst call)",
                          _at_least(0)),
}


def depth_grid_msg(bins: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    """The depth codes as a square mono8 image, one pixel per cell (row-major), value = code."""
    codes = np.asarray(bins, dtype=np.int64).reshape(-1)
    side = math.isqrt(codes.size)
    if side * side != codes.size:
        raise ObservationError(f"{codes.size} depth codes do not form a square grid")
    msg = Image(height=side, width=side, encoding="mono8", is_bigendian=0, step=side)
    msg.header.stamp = stamp_to_msg(stamp_s)
    msg.header.frame_id = frame_id
    msg.data.frombytes(np.clip(codes, 0, 255).astype(np.uint8).tobytes())
    return msg


# The counters moved into the inference component; the old name stays for readers of this module.
_Stats = InferenceStats


class PolicyNode(LifecycleNode):
    """MolmoAct2 behind the message contract: observations in, stamped action chunks out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        for name, (default, description, _) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        check_parameter_overrides(self)  # an override of no declared parameter is a typo: refuse it
        self._emb: EmbodimentConfig | None = None
        self._runtime: Any = None
        # Observation assembly, scheduling, the depth buffer and the counters: the component the bag
        # evaluator runs too (backends/policy/inference.py). None while unconfigured.
        self._core: PolicyInference | None = None
        self._think = False
        self._idle_stats = InferenceStats()  # reported while no component exists (the last one's after cleanup)
        self._lifecycle = "unconfigured"
        self._configure_error = ""
        self._configure_stage = ""
        self._configure_started = 0.0
        self._load_time_s = 0.0
        self._warmup_s = 0.0
        self._model_info: dict[str, Any] = {}
        self._active = threading.Event()
        self._activated_at = 0.0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._camera_rx: CameraFrameReceiver | None = None
        # Frame callbacks notify the inference thread; it never polls faster than HEALTH_CHECK_PERIOD_S.
        self._new_input = threading.Condition()
        self._last_frame_rx = 0.0  # perf_counter of the newest frame's arrival
        self._input_problems: tuple[InputProblem, ...] = ()
        self._input_level = OK
        self._last_error = ""
        self._subs: list[Any] = []
        self._pubs: list[Any] = []
        self._chunk_pub: Any = None
        self._chunk_msgs = ChunkMessages()
        self._depth_pub: Any = None
        self._fraction_pub: Any = None
        self._latency_pub: Any = None
        self._diag = DiagnosticsPublisher(self, self._snapshot, period_s=float(self._param("diagnostics_period_s")),
                                          hardware_id=NODE_NAME)
        # Hot threads (control loop / inference) log through this, never the rclpy logger directly.
        self._log_later = DeferredLog(self).later
        self.create_service(Trigger, "~/reset", self._on_reset)
        # Tunable while running; cached because the inference thread reads them on every loop.
        self._max_rate_hz = float(self._param("max_inference_rate_hz"))
        self._input_grace_s = float(self._param("input_grace_s"))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._startup_failure: str | None = None
        self._startup_pending = bool(self._param("autostart"))
        if self._startup_pending:
            # From the executor, once the node is fully constructed and discoverable, so that
            # /diagnostics subscribers see the configure progress.
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    @property
    def _stats(self) -> InferenceStats:
        """The counters and latency windows (the component's while configured)."""
        core = self._core
        return core.stats if core is not None else self._idle_stats

    @property
    def _assembler(self) -> ObservationAssembler | None:
        core = self._core
        return core.assembler if core is not None else None

    @property
    def inference(self) -> PolicyInference | None:
        """The inference component (None while unconfigured): what the node feeds and runs."""
        return self._core

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate every change; the live ones take effect at once, the rest at the next configure."""
        for param in params:
            spec = PARAMS.get(param.name)
            why = spec[2](param.value) if spec is not None and spec[2] is not None else ""
            if why and param.name in LIVE_PARAMS:
                return SetParametersResult(successful=False, reason=f"{param.name} = {param.value!r}: {why}")
        for param in params:
            if param.name == "max_inference_rate_hz":
                self._max_rate_hz = float(param.value)
            elif param.name == "input_grace_s":
                self._input_grace_s = float(param.value)
        return SetParametersResult(successful=True)

    # ---- lifecycle ---------------------------------------------------------------------------
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        try:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                self._startup_failure = f"configure failed: {self._configure_error or 'see the log above'}"
            elif self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                self._startup_failure = "activate failed: see the log above"
        finally:
            self._startup_pending = False

    @property
    def startup_pending(self) -> bool:
        """True until the autostart (configure + activate, from the executor) has run."""
        return self._startup_pending

    @property
    def startup_failure(self) -> str | None:
        """Why the autostart failed (the configure error); None before it ran, without it, or on success.
        ``runtime_env.spin_node`` exits non-zero on it: with no lifecycle manager, nobody would configure
        this node again."""
        return self._startup_failure

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        self._lifecycle = "configuring"
        self._configure_error = ""
        self._configure_started = time.monotonic()
        try:
            p = self._validated_params()
            emb = load_embodiment(p["embodiment"])
            limits = self._input_limits(emb, p)
            self._runtime = self._load_with_progress(emb, p)
        except Exception as exc:  # any failure must leave the node up and say why
            detail = str(exc) if isinstance(exc, MolmoAct2RosError) else f"{type(exc).__name__}: {exc}"
            self._configure_error = detail
            self._lifecycle = "unconfigured"
            self._configure_stage = ""
            log.error(f"configure failed: {detail}")
            if not isinstance(exc, MolmoAct2RosError):
                log.error(traceback.format_exc())
            self._diag.publish()
            return TransitionCallbackReturn.FAILURE
        self._emb = emb
        self._think = bool(p["enable_depth_reasoning"])
        self._core = PolicyInference(
            self._runtime, emb, limits, instruction=p["instruction"], think=self._think,
            depth_cache_max_gap_s=p["depth_cache_max_gap_s"], enable_depth_cache=p["enable_depth_cache"],
            clock=self._now_s)
        self._input_problems, self._input_level, self._last_error = (), OK, ""
        self._create_entities(emb, p["image_transport"])
        self._configure_stage = "ready"
        self._lifecycle = "inactive"
        self._stop.clear()
        self._worker = threading.Thread(target=self._inference_loop, name="policy_inference", daemon=True)
        self._worker.start()
        log.info(f"configured {emb.name}: model ready in {self._load_time_s:.1f} s (load + warm-up "
                 f"{self._warmup_s:.2f} s); inputs "
                 f"{p['image_transport']} images from {emb.camera_names}"
                 + (", depth reasoning on" if self._think else ""))
        self._diag.publish()
        return TransitionCallbackReturn.SUCCESS

    def _validated_params(self) -> dict[str, Any]:
        p = {name: self._param(name) for name in PARAMS}
        problems = []
        for name, (_, _, validate) in PARAMS.items():
            why = validate(p[name]) if validate is not None else ""
            if why:
                problems.append(f"parameter {name!r} = {p[name]!r} is not allowed: {why}")
        if p["action_mode"] == "discrete":
            tok = str(p["fast_tokenizer_dir"])
            if not tok:
                problems.append("action_mode 'discrete' needs fast_tokenizer_dir: a local snapshot of "
                                "allenai/MolmoAct2-FAST-Tokenizer")
            elif not Path(tok).expanduser().is_dir():
                problems.append(f"fast_tokenizer_dir {tok!r} is not a directory")
        if problems:
            raise ConfigError("; ".join(problems))
        return p

    def _input_limits(self, emb: EmbodimentConfig, p: dict[str, Any]) -> InputLimits:
        return input_limits(emb, camera_max_age_s=float(p["camera_max_age_s"]), max_skew_s=p["camera_max_skew_s"],
                            frozen_after=p["frozen_frame_limit"], joint_state_max_age_s=p["joint_state_max_age_s"])

    def _load_with_progress(self, emb: EmbodimentConfig, p: dict[str, Any]) -> Any:
        """Load + warm up on a helper thread; meanwhile report progress on /diagnostics (the executor is
        ours until configure returns, so its timer cannot)."""
        result: dict[str, Any] = {}

        def load() -> None:
            try:
                result["runtime"] = self._load_runtime(emb, p)
            except BaseException as exc:  # handed to the executor thread, re-raised there
                result["error"] = exc

        loader = threading.Thread(target=load, name="policy_model_loader", daemon=True)
        loader.start()
        log = self.get_logger()
        period = float(self._param("diagnostics_period_s"))
        logged_stage = ""
        next_diag = time.monotonic() + period
        while loader.is_alive():
            loader.join(timeout=min(period, 0.2))
            stage = self._configure_stage
            if stage and stage != logged_stage and loader.is_alive():
                log.info(f"configure: {stage} ({time.monotonic() - self._configure_started:.1f} s)")
                logged_stage = stage
            if loader.is_alive() and time.monotonic() >= next_diag:
                self._diag.publish()
                next_diag += period
        if "error" in result:
            raise result["error"]
        return result["runtime"]

    def _load_runtime(self, emb: EmbodimentConfig, p: dict[str, Any]) -> Any:
        """Runs on the loader thread: no rclpy logging here (the executor thread logs the outcome)."""
        checkpoint = str(p["checkpoint"] or emb.policy.default_checkpoint)
        self._model_info = {"checkpoint": checkpoint, "device": p["device"], "dtype": p["dtype"],
                            "action_mode": p["action_mode"]}

        def stage(text: str) -> None:
            self._configure_stage = text

        loaded = load_runtime(
            emb, checkpoint, norm_tag=p["norm_tag"], device=p["device"], dtype=p["dtype"],
            num_flow_steps=p["num_flow_steps"], n_action_steps=p["n_action_steps"],
            enable_cuda_graph=p["enable_cuda_graph"], seed=None if p["seed"] < 0 else p["seed"],
            action_mode=p["action_mode"], fast_tokenizer_dir=p["fast_tokenizer_dir"],
            think=bool(p["enable_depth_reasoning"]), torch_num_threads=p["torch_num_threads"], stage=stage)
        self._model_info["checkpoint"] = loaded.checkpoint
        self._warmup_s, self._load_time_s = loaded.warmup_s, loaded.load_s
        return loaded.runtime

    @staticmethod
    def _refuse_random_weights_for_discrete(checkpoint: str) -> None:
        refuse_random_weights_for_discrete(checkpoint)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activated_at = time.monotonic()
        self._lifecycle = "active"
        self._active.set()
        with self._new_input:
            self._new_input.notify_all()
        self.get_logger().info(f"active: publishing chunks on {CHUNK_TOPIC}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        self._lifecycle = "inactive"
        self.get_logger().info("inactive: not producing chunks")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._lifecycle = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}: releasing the model")
        self.release()
        self._lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Stop the inference thread, drop the ROS entities and the model. Idempotent."""
        # Timed per step: a supervisor (demo, bringup) escalates to SIGTERM after a grace period, and the log
        # then shows which step was slow.
        t0 = time.monotonic()
        steps: list[str] = []

        def step(name: str) -> None:
            steps.append(f"{name} {time.monotonic() - t0:.2f} s")

        self._active.clear()
        self._stop.set()
        with self._new_input:
            self._new_input.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            # An inference in flight finishes first (a real model: up to a second or so).
            self._worker.join(timeout=30.0)
            step("inference thread")
        self._worker = None
        if self._camera_rx is not None:
            self._camera_rx.close()
            self._camera_rx = None
            step("camera thread")
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs:
            self.destroy_lifecycle_publisher(pub)
        self._subs, self._pubs = [], []
        self._chunk_pub = self._depth_pub = self._fraction_pub = self._latency_pub = None
        if self._runtime is not None:
            # A shut-down context means the process is stopping (SIGINT/SIGTERM): skip the slow collection.
            self._runtime.close(collect=self.context.ok())
            self._runtime = None
            step("model")
        if self._core is not None:
            self._idle_stats = self._core.stats
        self._core = None
        self._emb = None
        self._configure_stage = ""
        if steps:
            self.get_logger().info(f"released: {', '.join(steps)}")

    # ---- ROS entities ------------------------------------------------------------------------
    def _create_entities(self, emb: EmbodimentConfig, transport: str) -> None:
        for cam in emb.camera_names:
            if transport == "compressed":
                self._subs.append(self.create_subscription(
                    CompressedImage, compressed_topic(cam), functools.partial(self._on_compressed, cam),
                    CAMERA_QOS))
        if transport != "compressed":
            # Raw frames on a thread of their own, taken as bytes (nodes/image_cdr.py: why). The receiver's
            # node does not take the process's arguments, so the topics are resolved here: remaps given to
            # this node (`-r /cameras/front/image_raw:=...`, global or `molmoact2_policy:`-prefixed) apply.
            topics = {cam: self.resolve_topic_name(camera_topic(cam)) for cam in emb.camera_names}
            self._camera_rx = CameraFrameReceiver(
                topics, self._on_camera_frame, self._on_camera_error,
                node_name=f"{self.get_name()}_cameras", namespace=self.get_namespace(), context=self.context,
                priority=int(self.get_parameter("camera_thread_priority").value))
            if self._camera_rx.priority_error:
                self.get_logger().warning(f"camera thread: {self._camera_rx.priority_error}")
        self._subs.append(self.create_subscription(
            JointState, JOINT_STATES_TOPIC, self._on_joint_state, JOINT_STATE_QOS))
        self._subs.append(self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED_QOS))
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_PUBLISHER_QOS)
        self._latency_pub = self.create_lifecycle_publisher(Float64, "~/inference_latency_ms", METRIC_QOS_DEPTH)
        self._pubs = [self._chunk_pub, self._latency_pub]
        if self._think:
            # The depth grid is for viewing: latest only. Reliable (unlike the cameras): 100 bytes per call,
            # and a reliable publisher matches both reliable and best-effort viewers.
            self._depth_pub = self.create_lifecycle_publisher(Image, DEPTH_TOPIC, CHUNK_QOS)
            self._fraction_pub = self.create_lifecycle_publisher(
                Float64, "~/depth_repredicted_fraction", METRIC_QOS_DEPTH)
            self._pubs += [self._depth_pub, self._fraction_pub]

    # ---- inputs (executor thread): handed to the component as they are --------------------------
    def _notify_frame(self) -> None:
        with self._new_input:
            self._last_frame_rx = time.perf_counter()
            self._new_input.notify()

    def _on_camera_frame(self, camera: str, frame: CdrImage, info: dict[str, Any]) -> None:
        core = self._core
        if core is None:
            return
        core.add_cdr_frame(camera, frame)
        self._notify_frame()

    def _on_camera_error(self, camera: str, error: ObservationError) -> None:
        core = self._core
        if core is None:
            return
        core.add_bad_frame(camera, error)
        self._notify_frame()

    def _on_image(self, camera: str, msg: Image) -> None:
        core = self._core
        if core is None:
            return
        core.add_image(camera, msg, what=camera_topic(camera))  # rgb8: a zero-copy view on the message
        self._notify_frame()

    def _on_compressed(self, camera: str, msg: CompressedImage) -> None:
        core = self._core
        if core is None:
            return
        core.add_compressed(camera, msg, what=compressed_topic(camera))  # decoded on the inference thread
        self._notify_frame()

    def _on_joint_state(self, msg: JointState) -> None:
        core = self._core
        if core is not None:
            core.set_joint_state(msg)

    def _on_instruction(self, msg: String) -> None:
        core = self._core
        if core is None or not core.set_instruction(msg.data):
            return
        self.get_logger().info(f"instruction: {msg.data!r}")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        core = self._core
        if core is None:
            response.success, response.message = False, "policy node is not configured"
            return response
        core.reset("new_episode")
        response.success = True
        response.message = "new episode: depth buffer cleared, the inference in flight (if any) dropped"
        self.get_logger().info(response.message)
        return response

    # ---- inference thread --------------------------------------------------------------------
    # Never calls the rclpy logger directly: see nodes/deferred_log.py.
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _inference_loop(self) -> None:
        next_start = 0.0
        prev_done = 0.0
        while not self._stop.is_set():
            if not self._active.wait(timeout=0.1):
                continue
            core = self._core
            if core is None:
                return
            delay = next_start - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            # Wait for a frame newer than anything already inferred on or refused (never spin: the
            # executor thread needs the GIL to take frames in).
            with self._new_input:
                if not core.has_new_frame and not self._stop.is_set():
                    self._new_input.wait(HEALTH_CHECK_PERIOD_S)
                available = max(self._last_frame_rx, prev_done)
            if self._stop.is_set() or not self._active.is_set():
                continue
            decision = core.poll(self._now_s())
            if decision.kind in ("idle", "blocked"):
                # idle: nothing new, but keep the input health current anyway (stale inputs).
                if decision.problems:
                    self._stats.bump("skipped_no_input")
                self._note_inputs(decision.problems)
                continue
            self._note_inputs(())
            if decision.kind != "ready":
                continue  # same stamp: wait for every camera to move past the last observation
            max_rate = self._max_rate_hz
            next_start = time.monotonic() + (1.0 / max_rate if max_rate > 0 else 0.0)
            try:
                self._infer(core, decision, available)
            except Exception as exc:  # a dead inference thread would stall silently: report, go on
                self._stats.bump("errors")
                if str(exc) != self._last_error:
                    self._log_later("error", f"inference step failed: {exc!r}\n{traceback.format_exc()}")
                self._last_error = f"{type(exc).__name__}: {exc}"
            prev_done = time.perf_counter()

    def _infer(self, core: PolicyInference, decision: Any, available: float) -> None:
        try:
            result = core.infer(decision)
        except MolmoAct2RosError as exc:  # counted by the component
            if str(exc) != self._last_error:
                self._log_later("error", f"inference failed: {exc}")
            self._last_error = str(exc)
            return
        self._last_error = ""
        obs = result.observation
        if not core.is_current(result.episode) or not self._active.is_set() or self._chunk_pub is None:
            # Computed for a previous episode / instruction, or we were deactivated meanwhile.
            self._stats.bump("chunks_discarded")
            return
        self._chunk_pub.publish(self._chunk_msgs.fill(result.chunk))
        published = time.perf_counter()
        if self._depth_pub is not None and result.depth_bins is not None:
            frame_id = self._emb.camera_names[0] if self._emb is not None else ""
            self._depth_pub.publish(depth_grid_msg(result.depth_bins, obs.stamp_s, frame_id))
        if self._fraction_pub is not None and result.fraction is not None:
            self._fraction_pub.publish(Float64(data=result.fraction))
        if self._latency_pub is not None:
            self._latency_pub.publish(Float64(data=result.latency_ms))
        core.stats.record_delivered(result.latency_ms, (published - available) * 1e3, published,
                                    (self._now_s() - obs.stamp_s) * 1e3, result.fraction)

    def _note_inputs(self, problems: Any) -> None:
        """Record the current input problems; log when the set changes (appears, changes, clears)."""
        problems = tuple(problems)
        level = self._input_severity(problems)
        # Compared by fault and subject: the messages carry ages that change on every check.
        if {(p.fault, p.subject) for p in problems} != {(p.fault, p.subject) for p in self._input_problems}:
            if problems:
                self._stats.bump("input_fault_events")
                text = "; ".join(str(p) for p in problems)
                self._log_later("error" if level == ERROR else "warning", f"no inference: {text}")
            elif self._input_problems:
                self._log_later("info", "inputs back to normal: inference resumed")
        self._input_problems = problems
        self._input_level = level

    def _input_severity(self, problems: tuple[InputProblem, ...]) -> int:
        if not problems:
            return OK
        in_grace = time.monotonic() - self._activated_at < self._input_grace_s
        waiting = {InputFault.INSTRUCTION_EMPTY}
        if in_grace:
            waiting |= {InputFault.CAMERA_MISSING, InputFault.JOINT_STATE_MISSING}
        return WARN if all(p.fault in waiting for p in problems) else ERROR

    # ---- diagnostics -------------------------------------------------------------------------
    def _snapshot(self) -> tuple[int, str, dict[str, Any]]:
        values: dict[str, Any] = {"state": self._lifecycle}
        values.update(self._stats.snapshot())
        values.update(model_load_s=self._load_time_s, warmup_s=self._warmup_s, **self._model_info)
        if self._lifecycle == "configuring":
            elapsed = time.monotonic() - self._configure_started
            values.update(configure_stage=self._configure_stage, configure_elapsed_s=elapsed)
            return OK, f"configuring: {self._configure_stage or 'checking parameters'} ({elapsed:.0f} s)", values
        if self._configure_error and self._lifecycle == "unconfigured":
            return ERROR, f"configure failed: {self._configure_error}", values
        emb, assembler = self._emb, self._assembler
        if emb is None or assembler is None:
            return WARN, self._lifecycle, values
        problems = self._input_problems
        values.update(
            embodiment=emb.name, image_transport=self._param("image_transport"),
            enable_depth_reasoning=self._think,
            input_status=",".join(sorted({p.fault.value for p in problems})) or "ok",
            input_problems="; ".join(str(p) for p in problems),
        )
        for cam, st in assembler.camera_stats(self._now_s()).items():
            values[f"camera_{cam}_frames"] = st["frames"]
            values[f"camera_{cam}_age_ms"] = st["age_s"] * 1e3
        depth = self._core.depth if self._core is not None else None
        if depth is not None:
            values["depth_cache_resets"] = depth.total_resets
            values["depth_cache_last_reset"] = depth.last_reset_reason
            for reason, n in sorted(depth.resets.items()):
                values[f"depth_cache_resets_{reason}"] = n
        if self._lifecycle != "active":
            return OK, self._lifecycle, values
        if problems:
            return self._input_level, "no inference: " + "; ".join(str(p) for p in problems), values
        if self._last_error:
            return ERROR, f"inference failed: {self._last_error}", values
        return OK, f"active: {values['chunks_published']} chunks", values


def main(args: list[str] | None = None) -> None:
    spin_node(PolicyNode, args=args, fast_exit=True)


if __name__ == "__main__":
    main()
