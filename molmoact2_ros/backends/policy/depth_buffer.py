"""The Think variant's adaptive depth buffer, owned between calls: what to pass as ``depth_cache`` and when to drop it.

MolmoAct2-Think predicts a 10x10 grid of depth codes before its actions. Given the previous call's
``depth_cache`` (first camera image + codes), the model re-predicts only the cells whose image patch
changed and replays the rest (MOLMOACT2.md). That is only valid while the previous codes describe the
same scene under the same task, so the buffer is reset (the next call re-predicts every cell) on:

- ``new_episode``: the node's ``~/reset`` service;
- ``instruction``: the task changed;
- ``camera_change``: the first camera's stream epoch changed (new frame size, new frame_id, capture
  time going backwards, a resumed stream; see ``core.observation``);
- ``gap``: more than ``max_gap_s`` between the capture times of consecutive calls (the world moved
  while nobody looked), or capture time going backwards;
- ``disabled``: the cache is switched off (every call re-predicts every cell; a reference point).

A reset while a call is in flight wins: that call's cache is dropped when it comes back
(:meth:`DepthBuffer.store` with a stale ticket). No rclpy, no torch.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

RESET_REASONS = ("start", "new_episode", "instruction", "camera_change", "gap", "disabled")


@dataclass(frozen=True)
class DepthTicket:
    """What :meth:`DepthBuffer.take` hands out: the cache for this call and the generation it belongs to."""

    cache: dict[str, Any] | None
    generation: int
    reset_reason: str  # why this call starts from an empty buffer; "" when it carries a cache


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
        """The cache to pass to the call about to run on an observation captured at ``stamp_s``."""
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
