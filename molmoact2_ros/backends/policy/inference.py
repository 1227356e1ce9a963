"""The one inference path, live and offline: messages in, observations assembled, the policy run, chunks out.

The policy node (``nodes/policy_node.py``) and the bag evaluator (``bags/eval.py``) both drive a
:class:`PolicyInference`; neither assembles an observation or calls the runtime itself, so what the
model sees from a bag is what it would have seen live (``tests/bags/test_parity.py`` checks it byte for
byte). The boundary is openpi's: ``infer`` / ``reset`` around a runtime with ``predict``; around it:

- **inputs**: camera frames (a message with sensor_msgs/Image fields, its CDR bytes from a bag or a
  raw subscription, or a CompressedImage's fields), ``/joint_states`` (matched by name), the
  instruction. Messages are duck-typed (rclpy or ``rosbags`` classes alike): no rclpy here.
- **scheduling** (:meth:`PolicyInference.poll`): an observation is worth a call only when a frame newer
  than the last call's arrived, every input is trustworthy (``core.observation``), and its capture time
  (its oldest frame's) moved past the previous call's: a chunk with the same stamp would be rejected
  by the driver as a duplicate.
- **inference** (:meth:`PolicyInference.infer`): the runtime call, with the Think depth buffer taken
  and stored around it, and the counters and latency windows (:class:`InferenceStats`).
- **episodes**: :meth:`PolicyInference.reset` (and a new instruction) start a new one; a result for an
  older episode is flagged so the caller drops it.

Waiting, threads and publishing stay with the caller: the node runs ``poll``/``infer`` on its own
thread at the pace frames arrive, the evaluator calls them in bag order as fast as the model allows.
No rclpy, no torch at import (the runtime is built by :func:`load_runtime`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.backends.policy.depth_buffer import CameraIdentity, DepthBuffer
from molmoact2_ros.core.chunk import ActionChunk, Observation
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError, ObservationError
from molmoact2_ros.core.images import CdrImage, image_from_cdr, image_from_compressed_fields, image_from_msg
from molmoact2_ros.core.observation import (
    Assembly,
    InputLimits,
    InputProblem,
    ObservationAssembler,
    ObservationNotReady,
    bytes_fingerprint,
    frame_fingerprint,
)

LATENCY_WINDOW = 500  # inferences kept for the latency percentiles and the rate


def _percentiles_ms(name: str, samples: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of millisecond samples; NaN while there are none (a reader tells "none" from "zero")."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        nan = float("nan")
        return {f"{name}_p50_ms": nan, f"{name}_p99_ms": nan, f"{name}_max_ms": nan}
    p50, p99 = np.percentile(arr, [50, 99])
    return {f"{name}_p50_ms": float(p50), f"{name}_p99_ms": float(p99), f"{name}_max_ms": float(arr.max())}


def stamp_seconds(stamp: Any) -> float:
    """A builtin_interfaces/Time-like ``stamp`` (``sec``, ``nanosec``) as float seconds, as the contract
    converts it (``nodes.contract.stamp_from_msg``), without importing the message packages."""
    return stamp.sec + stamp.nanosec * 1e-9


class InferenceStats:
    """Counters and latency windows, shared by the inference thread and whoever reports them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters = {"inferences": 0, "chunks_published": 0, "chunks_discarded": 0,
                         "skipped_no_input": 0, "errors": 0, "input_fault_events": 0}
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.cycle_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.done_at: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.fractions: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.observation_age_ms = float("nan")

    def bump(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counters[key] += n

    def record_delivered(self, latency_ms: float, cycle_ms: float, done_at: float, observation_age_ms: float,
                         fraction: float | None) -> None:
        """One chunk handed on (published, or kept by the evaluator)."""
        with self.lock:
            self.counters["chunks_published"] += 1
            self.latency_ms.append(latency_ms)
            self.cycle_ms.append(cycle_ms)
            self.done_at.append(done_at)
            self.observation_age_ms = observation_age_ms
            if fraction is not None:
                self.fractions.append(float(fraction))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            values: dict[str, Any] = dict(self.counters)
            values.update(_percentiles_ms("inference_latency", list(self.latency_ms)))
            values.update(_percentiles_ms("cycle_latency", list(self.cycle_ms)))
            done = list(self.done_at)
            values["inference_rate_hz"] = (
                (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0)
            values["observation_age_ms"] = self.observation_age_ms
            if self.fractions:
                values["depth_repredicted_fraction"] = self.fractions[-1]
                values["depth_repredicted_fraction_mean"] = float(np.mean(self.fractions))
        return values


@dataclass(frozen=True)
class Decision:
    """What :meth:`PolicyInference.poll` found. ``kind``:

    - ``idle``: no frame newer than the last call's (``problems``: the current input problems anyway);
    - ``blocked``: new frames, but the inputs cannot make a trustworthy observation (``problems``);
    - ``same_stamp``: the observation is no newer than the last call's (wait for every camera to move on);
    - ``ready``: ``assembly`` is the observation to infer on, for ``episode``.
    """

    kind: str
    problems: tuple[InputProblem, ...] = ()
    assembly: Assembly | None = None
    episode: int = 0


@dataclass
class InferenceResult:
    """One call's outcome. ``current``: still the same episode (else the caller drops the chunk)."""

    chunk: ActionChunk
    info: dict[str, Any]
    latency_ms: float
    observation: Observation
    episode: int
    current: bool
    fraction: float | None = None
    depth_bins: np.ndarray | None = field(default=None, repr=False)


class PolicyInference:
    """Observation assembly, inference scheduling and statistics around a policy runtime.

    ``runtime``: anything with ``predict(Observation, **kw) -> (ActionChunk, info)`` (the
    :class:`~molmoact2_ros.backends.policy.molmoact2_runtime.MolmoAct2Runtime`); looked up on every call,
    so a test may wrap ``runtime.predict``. ``clock``: ROS time now (seconds), for frames without a stamp.
    ``think``: carry the Think depth buffer between calls (``depth_cache_max_gap_s``, ``enable_depth_cache``).
    Inputs may come from other threads than ``poll``/``infer`` (the node's callbacks); ``poll`` and
    ``infer`` run on one thread.
    """

    def __init__(self, runtime: Any, embodiment: EmbodimentConfig, limits: InputLimits, *, instruction: str = "",
                 think: bool = False, depth_cache_max_gap_s: float = 1.0, enable_depth_cache: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.embodiment = embodiment
        self.think = bool(think)
        self.assembler = ObservationAssembler(embodiment.camera_names, embodiment.joint_names, limits, instruction)
        self.depth = DepthBuffer(depth_cache_max_gap_s, enabled=enable_depth_cache) if self.think else None
        self.stats = InferenceStats()
        self._clock = clock
        self._depth_camera = CameraIdentity()  # the first camera's identity epochs, for the depth buffer
        # frame_id of the frame each camera contributed to the observation being assembled (Think only).
        self._used_frame_ids: dict[str, str] = {}
        self._episode = 0
        self._min_sequence = 0  # after reset(), only frames newer than this count as new
        self._consumed = -1  # assembler sequence of the last observation inferred on
        self._blocked = -1  # assembler sequence of the last observation refused for bad inputs
        # Capture time of the last observation inferred on (see the module docstring: duplicates).
        self._last_obs_stamp_s = float("-inf")
        self.frame_stamps_s: dict[str, float] = {}  # newest capture time per camera, as fed
        self.joint_state_stamp_s = float("nan")  # capture time of the newest /joint_states fed

    # ---- inputs (any thread) -----------------------------------------------------------------
    def _stamp(self, stamp: Any) -> float:
        # A source without timestamps (zero stamp): the best we know is the arrival time.
        t = stamp_seconds(stamp)
        return t if t > 0 else self._clock()

    def add_frame(self, camera: str, stamp_s: float, decode: Callable[[], np.ndarray], fingerprint: int,
                  frame_id: str = "", error: str = "") -> None:
        """One camera frame, decoded on demand (see ``ObservationAssembler.add_frame``)."""
        if self.think:
            # The assembler decodes exactly the frames an observation uses: note which stream each came
            # from (the first camera's identity drives the depth buffer).
            def decode_noting_source(decode: Callable[[], np.ndarray] = decode) -> np.ndarray:
                image = decode()
                self._used_frame_ids[camera] = frame_id
                return image
            decode = decode_noting_source
        self.assembler.add_frame(camera, stamp_s, decode, fingerprint, frame_id, error)
        self.frame_stamps_s[camera] = stamp_s

    def _add_bad_frame(self, camera: str, stamp_s: float, frame_id: str, error: ObservationError) -> None:
        # Recorded, not dropped: poll() reports it as this camera's problem.
        def decode() -> np.ndarray:
            raise error
        self.add_frame(camera, stamp_s, decode, -1, frame_id, str(error))

    def add_image(self, camera: str, msg: Any, what: str = "") -> None:
        """A sensor_msgs/Image (any object with its fields); the frame is a zero-copy view on ``msg.data``."""
        stamp_s = self._stamp(msg.header.stamp)
        try:
            frame = image_from_msg(msg, what=what or camera)
        except ObservationError as exc:
            self._add_bad_frame(camera, stamp_s, msg.header.frame_id, exc)
            return
        self.add_frame(camera, stamp_s, lambda: frame, frame_fingerprint(frame), msg.header.frame_id)

    def add_image_cdr(self, camera: str, data: Any, what: str = "") -> None:
        """A sensor_msgs/Image as its serialized CDR bytes (a bag, a raw subscription): no Python message is
        built; the frame is a zero-copy view on ``data``. Same fields, same frame as :meth:`add_image`."""
        try:
            cdr = image_from_cdr(data, what=what or camera)
        except ObservationError as exc:
            # Nothing trustworthy to stamp it with: the arrival time stands in (as for a zero stamp).
            self._add_bad_frame(camera, self._clock(), "", exc)
            return
        self.add_cdr_frame(camera, cdr)

    def add_cdr_frame(self, camera: str, cdr: CdrImage) -> None:
        """A frame already decoded from its CDR bytes (the live node's camera receiver): exactly what
        :meth:`add_image_cdr` makes of the same bytes."""
        stamp_s = cdr.stamp_s if cdr.stamp_s > 0 else self._clock()
        frame = cdr.image
        self.add_frame(camera, stamp_s, lambda: frame, frame_fingerprint(frame), cdr.frame_id)

    def add_bad_frame(self, camera: str, error: ObservationError) -> None:
        """A camera message that could not be decoded: stamped with the arrival time, as in :meth:`add_image_cdr`."""
        self._add_bad_frame(camera, self._clock(), "", error)

    def add_compressed(self, camera: str, msg: Any, what: str = "") -> None:
        """A sensor_msgs/CompressedImage: decoded only if an observation uses it (JPEG decode costs ms)."""
        fmt, data = msg.format, msg.data
        decode = functools.cache(lambda: image_from_compressed_fields(fmt, data, what=what or camera))
        self.add_frame(camera, self._stamp(msg.header.stamp), decode, bytes_fingerprint(data), msg.header.frame_id)

    def set_joint_state(self, msg: Any) -> None:
        """A sensor_msgs/JointState (joints matched by name, so any order and extra joints are fine)."""
        stamp_s = self._stamp(msg.header.stamp)
        self.assembler.set_joint_state(msg.name, msg.position, stamp_s)
        self.joint_state_stamp_s = stamp_s

    def set_instruction(self, text: str) -> bool:
        """Latch the task; a different one starts a new episode. True if it changed."""
        if not self.assembler.set_instruction(text):
            return False
        self._new_episode("instruction")
        return True

    @property
    def instruction(self) -> str:
        return self.assembler.instruction

    # ---- episodes ----------------------------------------------------------------------------
    def reset(self, reason: str = "new_episode") -> None:
        """A new episode: only frames from now on count, the depth buffer is cleared, a call in flight is
        for the old episode (its result comes back with ``current`` False)."""
        self._min_sequence = self.assembler.sequence  # before the episode: no older frame slips in
        self._last_obs_stamp_s = float("-inf")
        self._new_episode(reason)

    def _new_episode(self, reason: str) -> None:
        self._episode += 1
        if self.depth is not None:
            self.depth.reset(reason)

    @property
    def episode(self) -> int:
        return self._episode

    def is_current(self, episode: int) -> bool:
        return episode == self._episode

    # ---- scheduling (inference thread) -------------------------------------------------------
    @property
    def has_new_frame(self) -> bool:
        """A frame arrived that no call has used or refused yet."""
        return self.assembler.sequence > max(self._consumed, self._blocked, self._min_sequence)

    def poll(self, now_s: float) -> Decision:
        """Whether there is an observation to infer on at ``now_s`` (ROS time); see :class:`Decision`."""
        assembler = self.assembler
        sequence = assembler.sequence
        if sequence <= max(self._consumed, self._blocked, self._min_sequence):
            # Nothing new to infer on; the input health anyway (stale inputs).
            return Decision("idle", tuple(assembler.check(now_s)))
        episode = self._episode
        try:
            assembly = assembler.assemble(now_s)
        except ObservationNotReady as exc:
            self._blocked = sequence
            return Decision("blocked", exc.problems)
        self._consumed = assembly.sequence
        if assembly.observation.stamp_s <= self._last_obs_stamp_s:
            return Decision("same_stamp")
        self._last_obs_stamp_s = assembly.observation.stamp_s
        return Decision("ready", assembly=assembly, episode=episode)

    # ---- inference (inference thread) --------------------------------------------------------
    def infer(self, decision: Decision) -> InferenceResult:
        """Run the policy on a ``ready`` decision. Raises the runtime's MolmoAct2RosError (counted in
        ``errors``); the Think depth buffer is taken before and stored after the call."""
        assembly = decision.assembly
        if decision.kind != "ready" or assembly is None:
            raise ValueError(f"infer() needs a 'ready' decision, got {decision.kind!r}")
        obs = assembly.observation
        depth, ticket = self.depth, None
        kwargs: dict[str, Any] = {}
        if depth is not None:
            first = self.embodiment.camera_names[0]
            # Identity, not the assembler's epoch: that one also moves when frames resume after a pause
            # longer than the camera's max_age_s, which is a gap (judged by stamps in the buffer), not
            # another camera.
            identity = (self._used_frame_ids.get(first, ""), assembly.frame_shapes.get(first))
            ticket = depth.take(instruction=obs.instruction, camera_epoch=self._depth_camera.epoch_of(identity),
                                stamp_s=obs.stamp_s)
            kwargs = {"enable_depth_reasoning": True, "depth_cache": ticket.cache}
        t0 = time.perf_counter()
        try:
            chunk, info = self.runtime.predict(obs, **kwargs)
        except MolmoAct2RosError:
            self.stats.bump("errors")
            raise
        latency_ms = (time.perf_counter() - t0) * 1e3
        self.stats.bump("inferences")
        if depth is not None and ticket is not None:
            depth.store(ticket, info.get("depth_cache"), obs.stamp_s)
        fraction = info.get("depth_repredicted_fraction")
        return InferenceResult(chunk=chunk, info=info, latency_ms=latency_ms, observation=obs,
                               episode=decision.episode, current=self.is_current(decision.episode),
                               fraction=None if fraction is None else float(fraction),
                               depth_bins=info.get("depth_bins"))

    def infer_observation(self, obs: Observation) -> ActionChunk:
        """openpi's ``infer`` on a ready-made observation (no assembly, no depth buffer): the chunk."""
        chunk, _ = self.runtime.predict(obs)
        self.stats.bump("inferences")
        return chunk


def input_limits(embodiment: EmbodimentConfig, *, camera_max_age_s: float = 0.0, max_skew_s: float = 0.1,
                 frozen_after: int = 30, joint_state_max_age_s: float = 0.5) -> InputLimits:
    """The node's input limits (``camera_max_age_s`` 0 = each camera's ``max_age_s`` from the embodiment)."""
    return InputLimits(
        camera_max_age_s={c.name: camera_max_age_s or c.max_age_s for c in embodiment.cameras},
        max_skew_s=float(max_skew_s), frozen_after=int(frozen_after),
        joint_state_max_age_s=float(joint_state_max_age_s),
    )


@dataclass
class LoadedRuntime:
    runtime: Any
    checkpoint: str
    load_s: float
    warmup_s: float


def load_runtime(embodiment: EmbodimentConfig, checkpoint: str = "", *, norm_tag: str = "", device: str = "cpu",
                 dtype: str = "fp32", num_flow_steps: int = 0, n_action_steps: int = 0, enable_cuda_graph: bool = True,
                 seed: int | None = 0, action_mode: str = "continuous", fast_tokenizer_dir: str = "",
                 think: bool = False, torch_num_threads: int = 0,
                 stage: Callable[[str], None] = lambda _: None) -> LoadedRuntime:
    """Build, check and warm up the runtime the way the policy node does (the evaluator calls this too, so a
    seeded runtime has drawn the same noise before its first real call). ``checkpoint`` '' = the
    embodiment's default, 'tiny' = the tiny checkpoint (built on first use). ``stage`` hears progress."""
    # Imported here: torch is only needed on the policy host, and only once configured.
    from molmoact2_ros.backends.policy.molmoact2_runtime import MolmoAct2Runtime, require_policy_extra

    # First: without torch every later step fails on some other missing module, which says nothing
    # about what to install.
    require_policy_extra()
    checkpoint = str(checkpoint or embodiment.policy.default_checkpoint)
    if checkpoint == "tiny":
        from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint

        stage("building tiny checkpoint")
        checkpoint = str(ensure_tiny_checkpoint(embodiment, think=think))
    if action_mode == "discrete":
        refuse_random_weights_for_discrete(checkpoint)
    if torch_num_threads > 0:
        import torch

        torch.set_num_threads(int(torch_num_threads))
    stage(f"loading {checkpoint}")
    t0 = time.monotonic()
    runtime = MolmoAct2Runtime(
        checkpoint, embodiment, norm_tag=norm_tag or None, device=device, dtype=dtype,
        num_steps=num_flow_steps or None, n_action_steps=n_action_steps or None,
        enable_cuda_graph=enable_cuda_graph, seed=seed, action_mode=action_mode,
        action_tokenizer_dir=fast_tokenizer_dir or None,
    )
    try:
        if think and not runtime.supports_depth_reasoning:
            raise ConfigError(
                f"enable_depth_reasoning is true but checkpoint {checkpoint} is not a Think variant "
                "(no depth reasoning); use e.g. allenai/MolmoAct2-Think or turn it off")
        stage("warm-up inference")
        warmup_s = runtime.warmup(enable_depth_reasoning=think)
    except MolmoAct2RosError as exc:
        runtime.close()
        what = "warm-up inference failed" if not isinstance(exc, ConfigError) else "bad configuration"
        raise type(exc)(f"{what}: {exc}") from exc
    return LoadedRuntime(runtime, checkpoint, time.monotonic() - t0, warmup_s)


def restart_noise(runtime: Any, seed: int | None, *, think: bool = False) -> None:
    """Put a seeded runtime's noise back where :func:`load_runtime` left it (re-seed, then the same warm-up
    call), so a second bag starts as a freshly started node would."""
    generator = getattr(runtime, "_generator", None)
    if seed is None or generator is None:
        return
    generator.manual_seed(int(seed))
    runtime.warmup(enable_depth_reasoning=think)


def refuse_random_weights_for_discrete(checkpoint: str) -> None:
    """A tiny built checkpoint's discrete head never emits a decodable chunk: refuse it in discrete mode."""
    from molmoact2_ros.backends.policy.tiny_checkpoint import MANIFEST_NAME

    if (Path(checkpoint).expanduser() / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"action_mode 'discrete' needs trained weights, but {checkpoint} is a tiny built checkpoint "
            "whose discrete head never emits a decodable action chunk; use action_mode "
            "'continuous' or a released MolmoAct2 checkpoint")
