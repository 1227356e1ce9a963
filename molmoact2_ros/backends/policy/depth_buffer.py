"""The Think variant's adaptive depth buffer, owned between calls: what to pass as ``depth_cache`` and when to drop it.

MolmoAct2-Think predicts a 10x10 grid of depth codes before its actions. Given the previous call's
``depth_cache`` (first camera image + codes), the model re-predicts only the cells whose image patch
changed and replays the rest (MOLMOACT2.md). That is only valid while the previous codes describe the
same scene under the same task, so the buffer is reset (the next call re-predicts every cell) on:

- ``new_episode``: the node's ``~/reset`` service;
- ``instruction``: the task changed;
- ``camera_change``: the first camera is another one: its identity (frame_id, frame size) changed.
  The caller numbers identities with :class:`CameraIdentity` and passes the epoch. Identity only, never
  timing: a camera that paused or restarted is still the same camera (``core.observation``'s epochs
  also move on a pause longer than the camera's ``max_age_s``, which made every pause a "camera change"
  and left ``gap`` unreachable with the default limits);
- ``gap``: more than ``max_gap_s`` between the capture times of consecutive calls (the world moved
  while nobody looked), or capture time going backwards: judged by observation stamps alone;
- ``disabled``: the cache is switched off (every call re-predicts every cell; a reference point).

When several apply at once, the first in this order is counted: new_episode / instruction (explicit),
camera_change (a different scene), gap. A reset while a call is in flight wins: that call's cache is
dropped when it comes back (:meth:`DepthBuffer.store` with a stale ticket). No rclpy, no torch.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

RESET_REASONS = ("start", "new_episode", "instruction", "camera_change", "gap", "disabled")


@dataclass(frozen=True)
class DepthTicket:
    """What :meth:`DepthBuffer.take` hands out: the cache for this call and the generation it belongs to."""

    cache: dict[str, Any] | None
    generation: int
    reset_reason: str  # why this call starts from an empty buffer; "" when it carries a cache


class CameraIdentity:
    """Numbers the identities a camera stream has had (e.g. ``(frame_id, frame shape)``): the epoch for
    :meth:`DepthBuffer.take`. Used from one thread (the inference thread)."""

    def __init__(self) -> None:
        self._last: Hashable | None = None
        self.epoch = 0

    def epoch_of(self, identity: Hashable) -> int:
        """The epoch of the frame with ``identity``: the previous one's, plus one if the identity changed."""
        if self._last is not None and identity != self._last:
            self.epoch += 1
        self._last = identity
        return self.epoch


class DepthBuffer:
    """The depth cache carried between Think calls, with the reset rules above. Thread-safe."""

    def __init__(self, max_gap_s: float = 1.0, enabled: bool = True):
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0, got {max_gap_s}")
        self.max_gap_s = float(max_gap_s)
        self.enabled = bool(enabled)
        self._lock = threading.Lock()
        self._cache: dict[str, Any] | None = None
        self._generation = 0
        self._pending_reason = "start"
        self._context: tuple[str, int] | None = None  # (instruction, first camera epoch) of the cache
        self._last_stamp_s: float | None = None
        self.resets: Counter[str] = Counter()
        self.last_reset_reason = ""

    def reset(self, reason: str) -> None:
        """Drop the buffer now (``~/reset``, a new instruction); calls in flight will not store theirs."""
        with self._lock:
            self._drop(reason)

    def _drop(self, reason: str) -> None:
        self._cache = None
        self._context = None
        self._generation += 1
        self._pending_reason = reason

    def take(self, *, instruction: str, camera_epoch: int, stamp_s: float) -> DepthTicket:
        """The cache to pass to the call about to run on an observation captured at ``stamp_s``, whose first
        camera has identity epoch ``camera_epoch`` (:class:`CameraIdentity`)."""
        with self._lock:
            if self._cache is not None:
                reason = ""
                if not self.enabled:
                    reason = "disabled"
                elif self._context is not None and self._context[0] != instruction:
                    reason = "instruction"
                elif self._context is not None and self._context[1] != camera_epoch:
                    reason = "camera_change"
                elif self._last_stamp_s is not None and not (
                        0.0 <= stamp_s - self._last_stamp_s <= self.max_gap_s):
                    reason = "gap"
                if reason:
                    self._drop(reason)
            if self._cache is None and not self.enabled:
                self._pending_reason = "disabled"
            reset_reason = "" if self._cache is not None else (self._pending_reason or "start")
            self._context = (instruction, camera_epoch)
            return DepthTicket(cache=self._cache, generation=self._generation, reset_reason=reset_reason)

    def store(self, ticket: DepthTicket, cache: dict[str, Any] | None, stamp_s: float) -> bool:
        """Keep the cache a call returned, unless the buffer was reset since its :meth:`take`; True if kept."""
        with self._lock:
            if ticket.generation != self._generation:
                return False
            if ticket.reset_reason:  # counted when a fresh call completes, not when one fails
                self.resets[ticket.reset_reason] += 1
                self.last_reset_reason = ticket.reset_reason
                self._pending_reason = ""
            self._cache = cache if self.enabled else None
            self._last_stamp_s = stamp_s
            return True

    @property
    def total_resets(self) -> int:
        return sum(self.resets.values())
