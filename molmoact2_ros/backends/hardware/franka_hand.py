"""The Franka Hand for the ``franka`` backend, through pylibfranka's ``Gripper``.

Hand commands block until the fingers stop (``move``, ``grasp``, ``homing`` take up to seconds), so the hand
runs on two threads of its own and never blocks a driver tick: one polls its state (width, and a speed
derived from it), one executes commands one at a time. Opening is a ``move``; closing is a ``grasp`` with
``force_n`` and wide epsilons, so an object is held with force whatever its width. A new command goes out
only when the target moved more than ``deadband_m``; the state thread stops an in-flight command the target
has left behind, so the next one starts at once. A failed command is reported once (``take_error``) and
retried with the next target that differs, not in a loop.

Widths are metres on the hand; the joint is metres or, with ``normalized``, a fraction of the hand's
``max_width`` (0 = closed, 1 = open), as the embodiment config says.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np

from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.realtime import GIL_SHARING_THREAD_PRIORITY, set_thread_fifo

STATE_POLL_S = 0.01  # the hand publishes its state at a few tens of Hz
UNHOMED_STROKE_M = 0.08  # the Franka Hand's stroke, used before a homing has measured max_width


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


class FrankaHand:
    """One Franka Hand: ``connect``, ``set_target`` per tick, ``reading``, ``take_error``, ``close``."""

    def __init__(self, robot_ip: str, *, normalized: bool, speed_mps: float, force_n: float, deadband_m: float,
                 homing: bool):
        self.robot_ip = robot_ip
        self.normalized = normalized
        self.speed_mps, self.force_n, self.deadband_m, self.homing = speed_mps, force_n, deadband_m, homing
        self._gripper: Any = None
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()  # guards everything below
        self._target: float | None = None  # metres, set by set_target()
        self._sent: float | None = None  # the goal of the command in flight or last done
        self._busy = False
        self._pending = False  # a target the command thread has not taken yet
        self._width = 0.0
        self._max_width = 0.0
        self._speed = 0.0
        self._state_t: float | None = None
        self._homed_this_session = False
        self._quit = False
        self._error: str | None = None
        self.commands = 0

    @property
    def open(self) -> bool:
        return self._gripper is not None or bool(self._threads)

    def connect(self, lib: Any) -> None:
        try:
            self._gripper = lib.Gripper(self.robot_ip)
            self._store_state(self._gripper.read_once())
        except Exception as exc:
            self._gripper = None
            raise HardwareError(f"franka hand at {self.robot_ip}: cannot connect ({exc}); check the hand is "
                                "mounted and enabled in Desk, or set hardware.params.franka.gripper: false") from exc
        self._quit = False
        self._threads = [threading.Thread(target=self._state_loop, name="franka-hand-state", daemon=True),
                         threading.Thread(target=self._command_loop, name="franka-hand-command", daemon=True)]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        with self._cond:
            self._quit = True
            self._cond.notify_all()
        if self._gripper is not None:
            with contextlib.suppress(Exception):
                self._gripper.stop()  # ends an in-flight move/grasp so its thread can quit
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads = []
        self._gripper = None

    def reading(self) -> tuple[float, float]:
        """(position, velocity) in the joint's unit."""
        with self._cond:
            width, speed, max_width = self._width, self._speed, self._max_width
        scale = 1.0 / max_width if self.normalized and max_width > 0 else 1.0
        return width * scale, speed * scale

    def set_target(self, value: float) -> float:
        """Aim the hand at ``value`` (the joint's unit); returns the target it will approach, in that unit."""
        with self._cond:
            max_width = self._max_width
            if max_width <= 0 and not self.homing:
                raise HardwareError(f"franka hand at {self.robot_ip}: not homed (max width 0); home it in Desk or "
                                    "set hardware.params.franka.gripper_homing: true")
            limit = max_width if max_width > 0 else UNHOMED_STROKE_M
            width = value * limit if self.normalized else value
            width = float(np.clip(width, 0.0, limit))  # the hand's own stroke
            self._target = width
            if self._sent is None or abs(width - self._sent) > self.deadband_m:
                self._pending = True
                self._cond.notify_all()
        return width / limit if self.normalized else width

    def take_error(self) -> str | None:
        """The last failure, once (one report per failed command)."""
        with self._cond:
            error, self._error = self._error, None
        return error

    def clear_error(self) -> None:
        with self._cond:
            self._error = None

    def _store_state(self, state: Any) -> None:
        t = float(state.time.to_sec())
        with self._cond:
            if self._state_t is not None and t > self._state_t:
                self._speed = (float(state.width) - self._width) / (t - self._state_t)
            self._width, self._max_width, self._state_t = float(state.width), float(state.max_width), t

    def _state_loop(self) -> None:
        """Poll the hand's state; stop an in-flight command the target has left behind."""
        set_thread_fifo(GIL_SHARING_THREAD_PRIORITY, "the Franka Hand's state thread")
        while True:
            with self._cond:
                if self._quit:
                    return
            try:
                self._store_state(self._gripper.read_once())
                with self._cond:
                    stale = (self._busy and self._target is not None and self._sent is not None
                             and abs(self._target - self._sent) > self.deadband_m)
                if stale:
                    self._gripper.stop()
            except Exception as exc:
                with self._cond:
                    if self._quit:
                        return
                    self._error = f"franka hand at {self.robot_ip}: state read failed ({one_line(exc)})"
            time.sleep(STATE_POLL_S)

    def _command_loop(self) -> None:
        """Execute hand commands one at a time (they block until the fingers stop)."""
        set_thread_fifo(GIL_SHARING_THREAD_PRIORITY, "the Franka Hand's command thread")
        while True:
            with self._cond:
                while not self._quit and not self._pending:
                    self._cond.wait(0.1)
                if self._quit:
                    return
                goal, width = self._target, self._width
                home = self.homing and not self._homed_this_session
                self._sent, self._busy, self._pending = goal, True, False
            assert goal is not None  # pending is only set with a target
            try:
                if home:
                    self._gripper.homing()
                    self._homed_this_session = True
                    self._store_state(self._gripper.read_once())
                    with self._cond:
                        self._sent, self._pending = None, True  # now go to the goal
                    continue
                self.commands += 1
                if goal < width - self.deadband_m:
                    # Closing: a grasp holds what it closes on with force; wide epsilons = any width is fine.
                    self._gripper.grasp(goal, self.speed_mps, self.force_n, 0.1, 0.1)
                else:
                    self._gripper.move(goal, self.speed_mps)
            except Exception as exc:
                with self._cond:
                    superseded = self._target is not None and abs(self._target - goal) > self.deadband_m
                    if not (self._quit or superseded):
                        self._error = (f"franka hand at {self.robot_ip}: command to {goal * 1000:.1f} mm failed "
                                       f"({one_line(exc)}); check the fingers are free and the hand homed (Desk)")
                        self._sent = None  # retried with the next write (not before)
            finally:
                with self._cond:
                    self._busy = False
