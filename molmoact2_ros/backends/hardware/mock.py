"""Mock arm: first-order tracking of commands, with faults that tests and the demo can inject.

Each joint follows its command as ``dq/dt = (cmd - q) / time_constant_s`` (integrated exactly between
calls, so the result does not depend on how often it is read). It starts at the embodiment's home pose.
``relax()`` drops the command (motors idle: the mock stays where it is, a real arm would sag or damp)
until the next write. With ``command_timeout_s`` it behaves like YAM's DM motors: without a write for that
long the motors fall into damping (the command is dropped, ``timeouts`` counts it), so it needs a heartbeat.
Faults are plain attributes on ``MockArm.faults`` so a test (or a later fault-injection suite) flips
them at any time: command latency, reading noise, stuck joints, read/write errors, over-temperature,
slow reads/writes. The clock and sleep are injectable so tests can run it in simulated time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import HardwareError

DEFAULT_TIME_CONSTANT_S = 0.05
DEFAULT_MAX_TEMPERATURE_C = 70.0
AMBIENT_TEMPERATURE_C = 35.0
OVER_TEMPERATURE_C = 85.0


@dataclass
class MockFaults:
    """Injectable faults; all off by default."""

    latency_s: float = 0.0  # a command takes effect this long after write() (bus / transport delay)
    noise_std: float = 0.0  # Gaussian noise added to readings, robot units
    stuck_joints: set[int] = field(default_factory=set)  # joint indices that stop moving
    read_error: bool = False  # read() raises HardwareError
    write_error: bool = False  # write() raises HardwareError
    read_exception: BaseException | None = None  # read() raises this (a library's own type: OSError, ...)
    write_exception: BaseException | None = None  # write() raises this
    nan_joints: set[int] = field(default_factory=set)  # joint indices whose reading is NaN
    bad_temperature: float | None = None  # every reported temperature is this (e.g. nan, inf)
    connect_error: bool = False  # connect() raises HardwareError
    over_temperature: set[int] = field(default_factory=set)  # joint indices that report too hot
    read_delay_s: float = 0.0  # read() blocks this long
    write_delay_s: float = 0.0  # write() blocks this long (slow bus)


class MockArm(HardwareInterface):
    """A simulated arm for tests, the demo and dry runs of the whole stack."""

    name = "mock"

    def __init__(self, embodiment: EmbodimentConfig, *, time_constant_s: float | None = None,
                 max_temperature_c: float | None = None, command_timeout_s: float | None = None,
                 torque_off_on_stop: bool | None = None, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        super().__init__(embodiment)
        params = embodiment.hardware.params_for("mock")
        tau = float(time_constant_s if time_constant_s is not None
                    else params.get("time_constant_s", DEFAULT_TIME_CONSTANT_S))
        if not (tau > 0 and math.isfinite(tau)):
            raise HardwareError(f"mock backend: time_constant_s must be positive seconds, not {tau}")
        self.time_constant_s = tau
        self._max_temp = float(max_temperature_c if max_temperature_c is not None
                               else params.get("max_temperature_c", DEFAULT_MAX_TEMPERATURE_C))
        timeout = command_timeout_s if command_timeout_s is not None else params.get("command_timeout_s")
        if timeout is not None and not (float(timeout) > 0 and math.isfinite(float(timeout))):
            raise HardwareError(f"mock backend: command_timeout_s must be positive seconds, not {timeout}")
        self.command_timeout_s = None if timeout is None else float(timeout)
        self.timeouts = 0  # times the motors fell into damping for want of a command
        # Like a real servo arm's option: relax (torque off) instead of holding when the driver stops.
        self.torque_off_on_stop = bool(torque_off_on_stop if torque_off_on_stop is not None
                                       else params.get("torque_off_on_stop", False))
        self.recoveries = 0  # recover() calls (the driver's ~/reset)
        self.recover_error = False  # recover() raises HardwareError (a robot that cannot recover)
        self.faults = MockFaults()
        self._clock = clock
        self._sleep = sleep
        self._rng = np.random.default_rng(seed)
        self._q = embodiment.home.copy()
        self._cmd: np.ndarray | None = None  # the command in effect (None: never commanded, motors idle)
        self._queue: deque[tuple[float, np.ndarray]] = deque()  # (effective time, command)
        self._t = clock()
        self._last_write_t: float | None = None
        self.reads = 0
        self.writes = 0
        self.relaxes = 0
        self.last_written: np.ndarray | None = None

    @property
    def max_temperature_c(self) -> float | None:
        return self._max_temp

    @property
    def supports_relax(self) -> bool:
        return True

    @property
    def needs_heartbeat(self) -> bool:
        return self.command_timeout_s is not None

    @property
    def relax_on_stop(self) -> bool:
        return self.torque_off_on_stop

    def recover(self) -> None:
        self._require_connected()
        if self.recover_error:
            raise HardwareError("mock backend: injected recovery failure (recover_error)")
        self.recoveries += 1

    @property
    def relaxed(self) -> bool:
        """No command in effect (never commanded, or relaxed since the last write)."""
        self._advance(self._clock())
        return self._cmd is None and not self._queue

    # ---- interface --------------------------------------------------------------------------
    def connect(self) -> None:
        if self.faults.connect_error:
            raise HardwareError("mock backend: injected connect error (faults.connect_error)")
        self._t = self._clock()
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def read(self) -> HardwareReading:
        self._require_connected()
        if self.faults.read_delay_s > 0:
            self._sleep(self.faults.read_delay_s)
        if self.faults.read_error:
            raise HardwareError("mock backend: injected read error (faults.read_error)")
        if self.faults.read_exception is not None:
            raise self.faults.read_exception
        self._advance(self._clock())
        self.reads += 1
        q = self._q.copy()
        if self.faults.noise_std > 0:
            q = q + self._rng.normal(0.0, self.faults.noise_std, size=q.shape)
        for j in self.faults.nan_joints:
            q[j] = np.nan
        temps = np.full(self.embodiment.dof, AMBIENT_TEMPERATURE_C)
        for j in self.faults.over_temperature:
            temps[j] = OVER_TEMPERATURE_C
        if self.faults.bad_temperature is not None:
            temps[:] = self.faults.bad_temperature
        return HardwareReading(positions=q, temperatures_c=temps)

    def write(self, positions: np.ndarray) -> np.ndarray:
        self._require_connected()
        cmd = self._check_command(positions)
        if self.faults.write_delay_s > 0:
            self._sleep(self.faults.write_delay_s)
        if self.faults.write_error:
            raise HardwareError("mock backend: injected write error (faults.write_error)")
        if self.faults.write_exception is not None:
            raise self.faults.write_exception
        now = self._clock()
        self._advance(now)
        self._last_write_t = now
        self._queue.append((now + self.faults.latency_s, cmd.copy()))
        self._advance(now)  # zero latency: in effect from now on
        self.writes += 1
        self.last_written = cmd.copy()
        return cmd.copy()

    def relax(self) -> None:
        self._require_connected()
        if self.faults.write_error:
            raise HardwareError("mock backend: injected write error (faults.write_error) while relaxing")
        self._advance(self._clock())
        self._cmd = None
        self._queue.clear()
        self.relaxes += 1

    # ---- test helpers ------------------------------------------------------------------------------
    @property
    def true_positions(self) -> np.ndarray:
        """Noise-free state at the current clock (tests)."""
        self._advance(self._clock())
        return self._q.copy()

    def set_positions(self, positions: np.ndarray) -> None:
        """Teleport the arm (someone moved it by hand while torque was off)."""
        self._advance(self._clock())
        self._q = np.asarray(positions, dtype=np.float64).copy()
        self._cmd = None
        self._queue.clear()

    # ---- internals ---------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        while self._queue and self._queue[0][0] <= now:
            t_eff, cmd = self._queue.popleft()
            self._integrate(t_eff)
            self._cmd = cmd
        timeout = self.command_timeout_s
        if (timeout is not None and self._cmd is not None and self._last_write_t is not None
                and now - self._last_write_t > timeout):
            self._integrate(self._last_write_t + timeout)
            self._cmd = None  # DM firmware: no command for too long, the motors fall into damping
            self._queue.clear()
            self.timeouts += 1
        self._integrate(now)

    def _integrate(self, t: float) -> None:
        dt = t - self._t
        if dt <= 0:
            return
        self._t = t
        if self._cmd is None:
            return
        alpha = 1.0 - math.exp(-dt / self.time_constant_s)
        step = (self._cmd - self._q) * alpha
        for j in self.faults.stuck_joints:
            step[j] = 0.0
        self._q = self._q + step
