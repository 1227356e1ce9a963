"""One control tick against a hardware backend: read -> ``SafetyStack.tick`` -> write, with the error policy.

The driver node, simulation, the fault-injection suite, the property tests and the benchmarks all run this
very class, so the per-tick path they test is the one that drives motors. No threads, no rclpy, no logging
(the caller gets its log lines in ``CycleResult.events``).

The backend boundary is where foreign failures are contained: real hardware libraries raise their own
types (a serial ``SerialException``, a CAN ``CanError``, an ``OSError`` from a USB adapter, a ``ValueError``
from a bad frame), and a backend may hand back garbage. Every exception from ``ready``, ``read``, ``write``
and ``relax``, and every malformed result, counts as a hardware error under one policy: a single failure
is a glitch (the stack keeps shaping against what the robot really got and keeps the heartbeat going);
``error_limit`` in a row latch ``read_error`` / ``write_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from molmoact2_ros.core.safety import SafetyStack, TickResult


class HardwarePort(Protocol):
    """What ``DriverCore`` needs from a hardware backend (``backends.hardware.HardwareInterface``)."""

    name: str

    @property
    def ready(self) -> bool: ...

    def read(self) -> Any: ...  # an object with ``positions`` and optional ``temperatures_c`` / ``velocities``

    def write(self, positions: np.ndarray) -> np.ndarray: ...

    def relax(self) -> None: ...


@dataclass
class CycleResult:
    """One control tick: the stack's decision, what was measured and what the hardware accepted."""

    tick: TickResult
    positions: np.ndarray | None  # measured this tick (None: not ready or the read failed)
    sent: np.ndarray | None  # what the backend accepted (None: nothing written this tick)
    events: list[tuple[str, str]]  # (level, line) for the caller's log: this class never logs


def describe_error(exc: BaseException) -> str:
    """One line naming the exception's type, so a ``SerialException`` reads differently from a ``ValueError``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DriverCore:
    """read -> ``SafetyStack.tick`` -> write -> ``record_sent``, with hardware-error policy, no threads.

    - A backend that is connected but not ``ready`` (no joint states yet from a ROS robot) is not read;
      the stack ticks without a measurement (writes nothing before the guarded start). Not ready for
      ``ready_timeout_ticks`` latches ``hardware_not_ready``.
    - ``error_limit`` consecutive read or write failures latch ``read_error`` / ``write_error``.
    - A FAULT tick with ``relax`` calls ``hardware.relax()`` once, if anything was ever written.
    - Shadow mode, as the stack decided it inside the tick: everything is computed, nothing is written.
    """

    def __init__(self, stack: SafetyStack, hardware: HardwarePort, *, error_limit: int = 3,
                 ready_timeout_ticks: int | None = None):
        if error_limit < 1:
            raise ValueError(f"error_limit must be >= 1, got {error_limit}")
        self.stack = stack
        self.hardware = hardware
        self.error_limit = int(error_limit)
        self.ready_timeout_ticks = (int(5.0 * stack.embodiment.tick_rate_hz) if ready_timeout_ticks is None
                                    else int(ready_timeout_ticks))
        self.read_errors = 0
        self.write_errors = 0
        self.relaxes = 0
        self.not_ready_ticks = 0
        self.read_streak = 0
        self.write_streak = 0
        self.relaxed = False  # the backend was relaxed and nothing was written since
        self._was_ready = False
        self._wrote = False  # anything written since connect (relaxing a robot we never drove is not ours)

    @property
    def hardware_ready(self) -> bool:
        return self._was_ready

    def clear_errors(self) -> None:
        """After a reset: failure streaks start over."""
        self.read_streak = self.write_streak = 0

    def cycle(self, now_s: float) -> CycleResult:
        events: list[tuple[str, str]] = []
        positions, temperatures, velocities = self._read(events)
        result = self.stack.tick(now_s, positions, temperatures, velocities)
        sent = None
        if result.shadow:
            pass
        elif result.command is not None:
            sent = self._write(result.command, events)
            self.stack.record_sent(sent)
        elif result.relax and self._wrote and not self.relaxed:
            self.relaxed = True  # one attempt per fault: a backend that failed to relax is not retried
            hw = self.hardware
            try:
                hw.relax()
                self.relaxes += 1
                events.append(("warning", f"fault {result.reason}: {hw.name} backend relaxed (fault_action relax)"))
            except Exception as exc:
                events.append(("error", f"fault {result.reason}: relaxing the {hw.name} backend failed: "
                                        f"{describe_error(exc)}"))
        return CycleResult(result, positions, sent, events)

    # ---- the backend boundary -------------------------------------------------------------------------
    def _read(self, events: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
        hw, stack = self.hardware, self.stack
        try:
            ready = self._was_ready or bool(hw.ready)
        except Exception as exc:
            self._read_failed(f"checking readiness failed: {describe_error(exc)}", events)
            return None, None, None
        if not ready:
            self.not_ready_ticks += 1
            if self.not_ready_ticks == self.ready_timeout_ticks:
                stack.latch_fault("hardware_not_ready",
                                  f"{hw.name} backend connected but gave no measurement for "
                                  f"{self.not_ready_ticks} ticks")
            return None, None, None
        self._was_ready = True
        try:
            reading = hw.read()
            positions = reading.positions
        except Exception as exc:
            self._read_failed(describe_error(exc), events)
            return None, None, None
        self.read_streak = 0
        # Malformed or non-finite values are the stack's call (a latched measurement fault), not a glitch.
        return positions, getattr(reading, "temperatures_c", None), getattr(reading, "velocities", None)

    def _read_failed(self, detail: str, events: list[tuple[str, str]]) -> None:
        self.read_errors += 1
        self.read_streak += 1
        if self.read_streak == 1:
            events.append(("warning", f"hardware read failed: {detail}"))
        if self.read_streak == self.error_limit:
            self.stack.latch_fault("read_error", f"{self.read_streak} reads failed in a row: {detail}")

    def _write(self, command: np.ndarray, events: list[tuple[str, str]]) -> np.ndarray | None:
        try:
            returned = self.hardware.write(command)
            sent = np.asarray(returned, dtype=np.float64)
            if sent.shape != command.shape or not np.all(np.isfinite(sent)):
                raise ValueError(f"backend reported sending {returned!r} for a {command.shape[0]}-joint command")
        except Exception as exc:
            self.write_errors += 1
            self.write_streak += 1
            detail = describe_error(exc)
            if self.write_streak == 1:
                events.append(("warning", f"hardware write failed: {detail}"))
            if self.write_streak == self.error_limit:
                self.stack.latch_fault("write_error", f"{self.write_streak} writes failed in a row: {detail}")
            return None
        self.write_streak = 0
        self._wrote, self.relaxed = True, False
        return sent
