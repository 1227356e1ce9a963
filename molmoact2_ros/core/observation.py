"""Observation assembly for the policy node: latest inputs in, one checked Observation (or the reasons why not) out.

The policy node keeps the newest frame of every camera and the newest ``/joint_states`` message and
turns them into a model input only when every input is trustworthy. Each reason it is not is an
:class:`InputProblem` with a fault code and a one-line message naming the camera or joint, so the
node can put it on ``/diagnostics`` and skip the inference instead of acting on a bad observation:

- a camera that has sent nothing (``camera_missing``), whose newest frame is older than its
  ``max_age_s`` (``camera_stale``), whose frames stopped changing for ``frozen_after`` updates in a
  row (``camera_frozen``: a driver republishing its last buffer), or whose frame cannot be decoded
  (``camera_bad_frame``); cameras whose capture times are further apart than ``max_skew_s``
  (``camera_skew``);
- no joint state yet, or an old one (``joint_state_missing`` / ``joint_state_stale``), a joint of the
  embodiment absent from the message (``joint_missing``: joints are matched by name, never by
  position), a NaN or infinite position (``state_not_finite``);
- no instruction (``instruction_empty``).

Nothing is latched: every check runs on the current inputs, so the node recovers by itself as soon
as the input comes back. Frames are kept undecoded (a zero-copy view or JPEG bytes) and decoded only
for the observation actually used; the frozen check compares cheap fingerprints of each update.

Each camera also has an *epoch*, bumped when its stream is evidently a different one: the frame
size changed, the frame_id changed, capture time went backwards (source restart, bag loop), or frames
resumed after a gap longer than the camera's ``max_age_s``. The Think depth buffer resets on a new
epoch of the first camera.

Plain Python: no rclpy, no torch. Times are ROS time in float seconds.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from molmoact2_ros.core.chunk import Observation
from molmoact2_ros.core.errors import ConfigError, ObservationError

# Fingerprint sampling stride (pixels, both axes): a 640x480 frame is fingerprinted from 160x120 pixels,
# ~60 KB instead of 900 KB, and any change larger than a few pixels still changes it.
FINGERPRINT_STRIDE = 4


class InputFault(StrEnum):
    CAMERA_MISSING = "camera_missing"
    CAMERA_STALE = "camera_stale"
    CAMERA_FROZEN = "camera_frozen"
    CAMERA_BAD_FRAME = "camera_bad_frame"
    CAMERA_SKEW = "camera_skew"
    JOINT_STATE_MISSING = "joint_state_missing"
    JOINT_STATE_STALE = "joint_state_stale"
    JOINT_MISSING = "joint_missing"
    STATE_NOT_FINITE = "state_not_finite"
    INSTRUCTION_EMPTY = "instruction_empty"


@dataclass(frozen=True)
class InputProblem:
    """One reason there is no observation: a fault code, what it concerns, and a one-line message."""

    fault: InputFault
    subject: str  # camera name, comma-separated joint names, or "" when it concerns no single input
    message: str

    def __str__(self) -> str:
        return self.message


class ObservationNotReady(ObservationError):
    """The inputs cannot make a trustworthy observation now; ``problems`` says exactly why."""

    def __init__(self, problems: Sequence[InputProblem]):
        self.problems = tuple(problems)
        super().__init__("; ".join(p.message for p in self.problems))

    @property
    def faults(self) -> tuple[InputFault, ...]:
        return tuple(p.fault for p in self.problems)


@dataclass(frozen=True)
class InputLimits:
    """When inputs are too old, too far apart or frozen. Zero disables the corresponding check."""

    camera_max_age_s: Mapping[str, float]  # per camera: frames older than this are stale
    max_skew_s: float = 0.1  # largest allowed spread of capture times across cameras
    frozen_after: int = 30  # this many identical updates in a row make a camera frozen
    joint_state_max_age_s: float = 0.5

    def __post_init__(self) -> None:
        for name, age in self.camera_max_age_s.items():
            if not age > 0:
                raise ConfigError(f"camera {name!r}: max_age_s {age} is not allowed: use a value > 0")
        if self.max_skew_s < 0:
            raise ConfigError(f"max_skew_s {self.max_skew_s} is not allowed: use a value >= 0 (0 = off)")
        if self.frozen_after < 0:
            raise ConfigError(f"frozen_after {self.frozen_after} is not allowed: use an integer >= 0 (0 = off)")
        if self.joint_state_max_age_s < 0:
            raise ConfigError(
                f"joint_state_max_age_s {self.joint_state_max_age_s} is not allowed: use a value >= 0 (0 = off)")


def frame_fingerprint(frame: np.ndarray, stride: int = FINGERPRINT_STRIDE) -> int:
    """A cheap content fingerprint of an HxWxC frame: crc32 of every ``stride``-th pixel in both axes."""
    sample = np.ascontiguousarray(frame[::stride, ::stride])
    return zlib.crc32(sample.data) ^ (frame.shape[0] << 16 | frame.shape[1])


def bytes_fingerprint(data: Any) -> int:
    """Fingerprint of an encoded frame (JPEG bytes): identical bytes mean an identical frame."""
    return zlib.crc32(memoryview(data).cast("B"))


@dataclass
class _CameraSlot:
    stamp_s: float
    decode: Callable[[], np.ndarray]
    fingerprint: int
    source_id: str
    repeats: int = 0  # consecutive updates identical to the one before
    frames: int = 1
    epoch: int = 0
    shape: tuple[int, ...] | None = None  # known once decoded
    error: str = ""  # why this frame cannot be decoded, once known


@dataclass
class _JointStateSlot:
    names: tuple[str, ...]
    positions: np.ndarray
    stamp_s: float


@dataclass(frozen=True)
class Assembly:
    """A checked observation plus what the node needs to stamp it and manage the depth buffer."""

    observation: Observation
    sequence: int  # frame updates seen when it was assembled (compare with ObservationAssembler.sequence)
    frame_stamps_s: dict[str, float]
    camera_epochs: dict[str, int]
    frame_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


class ObservationAssembler:
    """Latest frame per camera + latest joint state + instruction -> checked Observation.

    Thread-safe: ROS callbacks call :meth:`add_frame` / :meth:`set_joint_state` /
    :meth:`set_instruction` while the inference thread calls :meth:`check` / :meth:`assemble`.
    """

    def __init__(self, camera_names: Sequence[str], joint_names: Sequence[str], limits: InputLimits,
                 instruction: str = ""):
        if not camera_names:
            raise ConfigError("an observation needs at least one camera")
        missing = [c for c in camera_names if c not in limits.camera_max_age_s]
        if missing:
            raise ConfigError(f"no max_age_s for camera(s) {missing}")
        self.camera_names = list(camera_names)
        self.joint_names = list(joint_names)
        self.limits = limits
        self._lock = threading.Lock()
        self._frames: dict[str, _CameraSlot] = {}
        self._joint_state: _JointStateSlot | None = None
        self._instruction = instruction
        self._sequence = 0
        # Name -> index of the last message's names: rebuilt only when the message's names change.
        self._index_names: tuple[str, ...] | None = None
        self._index: list[int | None] = []

    # ---- inputs (callback threads) ----------------------------------------------------------------
    def add_frame(self, camera: str, stamp_s: float, decode: Callable[[], np.ndarray], fingerprint: int,
                  source_id: str = "", error: str = "") -> None:
        """Record the newest frame of ``camera``. ``decode`` returns the HxWx3 uint8 RGB frame on demand
        (it may raise ObservationError); ``fingerprint`` identifies its content (:func:`frame_fingerprint`);
        ``error`` says why the frame is unusable when the caller already knows (wrong encoding)."""
        if camera not in self.limits.camera_max_age_s:
            raise KeyError(f"camera {camera!r} is not one of {self.camera_names}")
        with self._lock:
            self._sequence += 1
            prev = self._frames.get(camera)
            slot = _CameraSlot(stamp_s=stamp_s, decode=decode, fingerprint=fingerprint, source_id=source_id,
                               error=error)
            if prev is not None:
                slot.frames = prev.frames + 1
                slot.repeats = prev.repeats + 1 if fingerprint == prev.fingerprint else 0
                slot.shape = prev.shape
                restarted = (
                    (source_id != prev.source_id and prev.source_id != "")
                    or stamp_s < prev.stamp_s
                    or stamp_s - prev.stamp_s > self.limits.camera_max_age_s[camera]
                )
                slot.epoch = prev.epoch + 1 if restarted else prev.epoch
            self._frames[camera] = slot

    def set_joint_state(self, names: Sequence[str], positions: Sequence[float], stamp_s: float) -> None:
        with self._lock:
            self._joint_state = _JointStateSlot(tuple(names), np.asarray(positions, dtype=np.float64), stamp_s)

    def set_instruction(self, text: str) -> bool:
        """Latch the task; True if it differs from the previous one."""
        with self._lock:
            changed = text != self._instruction
            self._instruction = text
            return changed

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def sequence(self) -> int:
        """Count of frame updates so far: an observation is new when this moved past its ``sequence``."""
        return self._sequence

    def clear(self) -> None:
        """Forget every frame and joint state (cameras start missing again)."""
        with self._lock:
            self._frames.clear()
            self._joint_state = None

    def camera_stats(self, now_s: float) -> dict[str, dict[str, float]]:
        """Per camera: frames received, age of the newest frame (s), identical updates in a row, epoch."""
        with self._lock:
            return {name: {"frames": s.frames, "age_s": now_s - s.stamp_s, "repeats": s.repeats,
                           "epoch": s.epoch} for name, s in self._frames.items()}

    # ---- checks (inference thread) ----------------------------------------------------------------
    def check(self, now_s: float) -> list[InputProblem]:
        """Every problem with the current inputs at ``now_s`` (empty: an observation can be assembled).
        Cheap: decodes nothing."""
        with self._lock:
            frames, js, instruction = dict(self._frames), self._joint_state, self._instruction
        return self._problems(frames, js, instruction, now_s)[0]

    def assemble(self, now_s: float) -> Assembly:
        """The observation from the newest inputs; raises ObservationNotReady listing every problem.

        Stamped with the *oldest* frame's capture time: the observation is as old as its oldest part.
        """
        with self._lock:
            frames, js, instruction = dict(self._frames), self._joint_state, self._instruction
            sequence = self._sequence
        problems, state = self._problems(frames, js, instruction, now_s)
        if problems:
            raise ObservationNotReady(problems)
        images: dict[str, np.ndarray] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for name in self.camera_names:
            slot = frames[name]
            try:
                image = slot.decode()
            except ObservationError as exc:
                with self._lock:  # later checks report it too, until a new frame replaces this one
                    slot.error = str(exc)
                problems.append(InputProblem(InputFault.CAMERA_BAD_FRAME, name, f"camera {name!r}: {exc}"))
                continue
            images[name] = image
            shapes[name] = image.shape
            self._note_shape(name, slot, image.shape)
        if problems:
            raise ObservationNotReady(problems)
        assert state is not None  # no state problem means a state
        stamps = {name: frames[name].stamp_s for name in self.camera_names}
        with self._lock:  # epochs may have moved on a shape change just noted
            epochs = {name: self._frames[name].epoch if name in self._frames else frames[name].epoch
                      for name in self.camera_names}
        return Assembly(
            observation=Observation(images=images, state=state, instruction=instruction,
                                    stamp_s=min(stamps.values())),
            sequence=sequence, frame_stamps_s=stamps, camera_epochs=epochs, frame_shapes=shapes,
        )

    def _note_shape(self, name: str, used: _CameraSlot, shape: tuple[int, ...]) -> None:
        """A frame size different from the last decoded one starts a new epoch of that camera."""
        with self._lock:
            current = self._frames.get(name)
            if used.shape is not None and used.shape != shape:
                used.epoch += 1
                if current is not None and current is not used:
                    current.epoch = max(current.epoch, used.epoch)
            used.shape = shape
            if current is not None and current is not used:
                current.shape = shape

    def _problems(self, frames: dict[str, _CameraSlot], js: _JointStateSlot | None, instruction: str,
                  now_s: float) -> tuple[list[InputProblem], np.ndarray | None]:
        problems = self._camera_problems(frames, now_s)
        state_problems, state = self._state(js, now_s)
        problems += state_problems
        if not instruction.strip():
            problems.append(InputProblem(
                InputFault.INSTRUCTION_EMPTY, "", "no instruction: publish the task on /molmoact2/instruction"))
        return problems, state

    def _camera_problems(self, frames: dict[str, _CameraSlot], now_s: float) -> list[InputProblem]:
        lim = self.limits
        problems: list[InputProblem] = []
        for name in self.camera_names:
            slot = frames.get(name)
            if slot is None:
                problems.append(InputProblem(InputFault.CAMERA_MISSING, name,
                                             f"camera {name!r}: no frame received"))
                continue
            age = now_s - slot.stamp_s
            max_age = lim.camera_max_age_s[name]
            if slot.error:
                problems.append(InputProblem(InputFault.CAMERA_BAD_FRAME, name, f"camera {name!r}: {slot.error}"))
            elif age > max_age:
                problems.append(InputProblem(
                    InputFault.CAMERA_STALE, name,
                    f"camera {name!r} is stale: newest frame is {age:.2f} s old (max_age_s {max_age:g})"))
            elif lim.frozen_after and slot.repeats >= lim.frozen_after:
                problems.append(InputProblem(
                    InputFault.CAMERA_FROZEN, name,
                    f"camera {name!r} is frozen: its last {slot.repeats + 1} frames are identical"))
        present = [n for n in self.camera_names if n in frames]
        if lim.max_skew_s and len(present) > 1:
            oldest = min(present, key=lambda n: frames[n].stamp_s)
            newest = max(present, key=lambda n: frames[n].stamp_s)
            skew = frames[newest].stamp_s - frames[oldest].stamp_s
            if skew > lim.max_skew_s:
                problems.append(InputProblem(
                    InputFault.CAMERA_SKEW, f"{oldest},{newest}",
                    f"cameras {oldest!r} and {newest!r} are {skew * 1e3:.0f} ms apart "
                    f"(max skew {lim.max_skew_s * 1e3:.0f} ms)"))
        return problems

    def _state(self, js: _JointStateSlot | None, now_s: float) -> tuple[list[InputProblem], np.ndarray | None]:
        """The state in the embodiment's joint order, matched by name, or the problems with it."""
        if js is None:
            return [InputProblem(InputFault.JOINT_STATE_MISSING, "", "no /joint_states received")], None
        problems: list[InputProblem] = []
        max_age = self.limits.joint_state_max_age_s
        age = now_s - js.stamp_s
        if max_age and age > max_age:
            problems.append(InputProblem(
                InputFault.JOINT_STATE_STALE, "",
                f"/joint_states is stale: newest message is {age:.2f} s old (max {max_age:g} s)"))
        index = self._joint_index(js.names)
        absent = [n for n, i in zip(self.joint_names, index, strict=True) if i is None or i >= js.positions.size]
        if absent:
            problems.append(InputProblem(
                InputFault.JOINT_MISSING, ",".join(absent),
                f"/joint_states has no position for joint(s) {absent} (names in message: {list(js.names)})"))
            return problems, None
        state = js.positions[[i for i in index if i is not None]]
        bad = [n for n, v in zip(self.joint_names, state, strict=True) if not np.isfinite(v)]
        if bad:
            problems.append(InputProblem(InputFault.STATE_NOT_FINITE, ",".join(bad),
                                         f"joint state is not finite for joint(s) {bad}"))
        return problems, (None if problems else state)

    def _joint_index(self, names: tuple[str, ...]) -> list[int | None]:
        with self._lock:
            if names != self._index_names:
                where = {n: i for i, n in enumerate(names)}
                self._index = [where.get(n) for n in self.joint_names]
                self._index_names = names
            return self._index
