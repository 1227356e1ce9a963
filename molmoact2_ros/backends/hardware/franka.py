"""Franka Panda / FR3 + Franka Hand through pylibfranka's joint position control (backend ``franka``).

Two control modes (``hardware.params.franka.control_mode``): ``callback`` (default, described below: a Python
thread answers the robot every millisecond) and ``async`` (``franka_async``: libfranka's
AsyncPositionControlHandler; the control box generates the 1 kHz motion toward the driver's targets, no client
loop; Franka Research 3 with system version >= 5.9 only, experimental upstream). Connecting, the hand, relax
and recovery are the same in both.

The driver ticks at ``driver_rate_hz`` (100 Hz for ``franka_droid``); the robot wants a joint position
command every millisecond. So a background thread runs pylibfranka's active control loop
(``Robot.start_joint_position_control`` -> ``readOnce`` / ``writeOnce(JointPositions)``) at 1 kHz:
``write()`` only sets the target (non-blocking); the thread moves a reference linearly from the last
target to the new one over one driver period and tracks it with ``JointShaper``, which keeps every 1 kHz
command inside Franka's own position, velocity, acceleration and jerk limits (``franka_shaping``): a
target that would trip a reflex is approached along a jerk-limited path, never sent raw. ``write()``
returns the target it will approach (inside the robot's position limits).

Energising: ``connect()`` opens the robot and the hand, applies collision behaviour and joint impedance,
and reads the state; the control loop starts with the first ``write()`` (target set first, from the
measured pose). ``relax()`` brings the command to rest and ends the control loop (``motion_finished``):
a Franka cannot be made limp safely through FCI (no torque-off; zero-torque control would leave a
payload to gravity-compensation errors), so "relaxed" means *no client control running*: the robot holds
its pose on its own (Idle mode), and the user stop engages its brakes. ``torque_off_on_stop`` (default
True) makes the driver end the control loop when it stops; ``disconnect()`` always ends it (a control
loop left without its client trips ``communication_constraints_violation``).

Errors: a reflex or any pylibfranka exception in the 1 kHz thread ends the loop (the robot has already
stopped itself) and is raised as HardwareError, naming libfranka's errors, by every following
``read``/``write`` until ``recover()`` (the driver's ``~/reset``) runs ``automatic_error_recovery``. A
robot found in Reflex or UserStopped mode is reported the same way.

The hand (``franka_hand``) runs on two threads of its own so it never blocks a tick (``move`` to open,
``grasp`` with ``gripper_force_n`` to close). Franka reports no joint temperatures over FCI: readings carry
positions and velocities.

``emulate=True`` runs the same code against ``emulated.franka_robot`` (a stand-in with pylibfranka's
classes and the robot's reflexes) instead of the network.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

import numpy as np

from molmoact2_ros.backends.hardware.base import HardwareInterface, HardwareReading
from molmoact2_ros.backends.hardware.franka_async import AsyncAborted, AsyncSession, async_velocity_cap
from molmoact2_ros.backends.hardware.franka_hand import FrankaHand, one_line
from molmoact2_ros.backends.hardware.franka_shaping import FRANKA_LIMITS, JointShaper, reference_duration
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import HardwareError
from molmoact2_ros.realtime import set_thread_fifo

DEFAULT_ROBOT_IP = "172.16.0.2"
# libfranka examples' setDefaultBehavior (examples_common.cpp): collision thresholds and joint stiffness.
DEFAULT_COLLISION_TORQUE_NM = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
DEFAULT_COLLISION_FORCE_N = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)
DEFAULT_JOINT_IMPEDANCE = (3000.0, 3000.0, 3000.0, 2500.0, 2500.0, 2000.0, 2000.0)
STOP_TIMEOUT_S = 2.0  # bringing the command to rest and ending the loop; then Robot.stop()
# The GIL hands over every 5 ms by default: far too coarse for a 1 kHz loop sharing the process.
REALTIME_SWITCH_INTERVAL_S = 0.0002
CONTROL_MODES = ("callback", "async")


def _import_pylibfranka() -> Any:
    try:
        import pylibfranka
    except ImportError as exc:
        raise HardwareError(f"the franka backend needs pylibfranka ({exc}); install the extra: "
                            "pip install 'molmoact2_ros[franka]'") from exc
    return pylibfranka


class FrankaArm(HardwareInterface):
    """A Franka arm (7 joints) and optionally its hand, in the embodiment's joint order and units."""

    name = "franka"

    def __init__(self, embodiment: EmbodimentConfig, *, robot_ip: str = DEFAULT_ROBOT_IP,
                 robot_model: str = "panda", realtime: str = "enforce", gripper: bool = True,
                 gripper_speed_mps: float = 0.1, gripper_force_n: float = 20.0, gripper_deadband_m: float = 0.002,
                 gripper_homing: bool = False, collision_torque_nm: list[float] | None = None,
                 collision_force_n: list[float] | None = None, joint_impedance: list[float] | None = None,
                 limit_fraction: float = 0.9, position_margin_rad: float = 0.01, torque_off_on_stop: bool = True,
                 control_mode: str = "callback", emulate: bool = False, library: Any | None = None):
        super().__init__(embodiment)
        if robot_model not in FRANKA_LIMITS:
            raise HardwareError(f"franka backend: robot_model {robot_model!r} unknown; use one of "
                                f"{', '.join(FRANKA_LIMITS)} (hardware.params.franka.robot_model)")
        if realtime not in ("enforce", "ignore"):
            raise HardwareError(f"franka backend: realtime must be 'enforce' or 'ignore', not {realtime!r}")
        if control_mode not in CONTROL_MODES:
            raise HardwareError(f"franka backend: control_mode must be 'callback' or 'async', not {control_mode!r} "
                                "(hardware.params.franka.control_mode)")
        if control_mode == "async" and robot_model != "fr3":
            raise HardwareError(f"franka backend: control_mode 'async' (libfranka's AsyncPositionControlHandler) "
                                f"needs a Franka Research 3 with system version >= 5.9 (robot_model: fr3), not "
                                f"{robot_model!r}; use control_mode: callback (hardware.params.franka)")
        self.control_mode = control_mode
        joints = embodiment.joints
        self._arm_idx = [i for i, j in enumerate(joints) if j.type != "gripper"]
        grippers = [i for i, j in enumerate(joints) if j.type == "gripper"]
        if len(self._arm_idx) != 7 or len(grippers) > 1:
            raise HardwareError(f"franka backend: {embodiment.name} must have 7 arm joints and at most one "
                                f"gripper (has {len(self._arm_idx)} and {len(grippers)})")
        self._grip_idx = grippers[0] if grippers and gripper else None
        self.robot_ip = str(robot_ip)
        self.robot_model = robot_model
        self.realtime = realtime
        self._hand = None if self._grip_idx is None else FrankaHand(
            self.robot_ip, normalized=joints[self._grip_idx].unit == "normalized",
            speed_mps=float(gripper_speed_mps), force_n=float(gripper_force_n),
            deadband_m=float(gripper_deadband_m), homing=bool(gripper_homing))
        self.collision_torque_nm = list(collision_torque_nm or DEFAULT_COLLISION_TORQUE_NM)
        self.collision_force_n = list(collision_force_n or DEFAULT_COLLISION_FORCE_N)
        self.joint_impedance = list(joint_impedance or DEFAULT_JOINT_IMPEDANCE)
        if len(self.collision_torque_nm) != 7 or len(self.collision_force_n) != 6 or len(self.joint_impedance) != 7:
            raise HardwareError("franka backend: collision_torque_nm and joint_impedance take 7 values, "
                                "collision_force_n 6 (hardware.params.franka)")
        try:
            self._shaper = JointShaper(FRANKA_LIMITS[robot_model], fraction=float(limit_fraction),
                                       margin_rad=float(position_margin_rad))
        except ValueError as exc:
            raise HardwareError(f"franka backend: {exc} (hardware.params.franka)") from exc
        self._torque_off_on_stop = bool(torque_off_on_stop)
        self._async_max_velocity = async_velocity_cap(embodiment.max_velocity[self._arm_idx],
                                                      FRANKA_LIMITS[robot_model].dq_max, float(limit_fraction))
        self._async: AsyncSession | None = None  # control_mode async: the running handler
        self.emulate = bool(emulate)
        self.emulated_device = None
        self._lib = library
        self._nominal_period_s = 1.0 / embodiment.tick_rate_hz
        self._robot: Any = None
        self._lock = threading.Lock()  # robot calls outside the 1 kHz thread, and the shared state below
        self._error: str | None = None  # latched until recover(): a reflex / library error
        # the arm
        self._control_thread: threading.Thread | None = None
        self._stop_request = False
        self._q = np.zeros(7)
        self._dq = np.zeros(7)
        self._ref_from = np.zeros(7)  # reference moves linearly from here to the target ...
        self._target = np.zeros(7)
        self._ref_t0 = 0.0  # ... starting at this time ...
        self._ref_duration = self._nominal_period_s  # ... over this long
        self._last_write_t: float | None = None
        self.loop_cycles = 0

    # ---- capabilities ------------------------------------------------------------------------------------
    @property
    def supports_relax(self) -> bool:
        """Relax = end the control loop; the robot then holds its pose by itself (see the module doc)."""
        return True

    @property
    def relax_on_stop(self) -> bool:
        return self._torque_off_on_stop

    @property
    def control_running(self) -> bool:
        if self.control_mode == "async":
            return self._async is not None
        thread = self._control_thread
        return thread is not None and thread.is_alive()

    # ---- connect / disconnect ----------------------------------------------------------------------------
    def connect(self) -> None:
        if self._connected:
            return
        lib = self._library()
        where = f"franka robot at {self.robot_ip}"
        try:
            mode = lib.RealtimeConfig.kEnforce if self.realtime == "enforce" else lib.RealtimeConfig.kIgnore
            self._robot = lib.Robot(self.robot_ip, mode)
            self._robot.set_collision_behavior(self.collision_torque_nm, self.collision_torque_nm,
                                               self.collision_force_n, self.collision_force_n)
            self._robot.set_joint_impedance(self.joint_impedance)
            state = self._robot.read_once()
        except lib.RealtimeException as exc:
            self._close(shutdown_device=False)
            raise HardwareError(f"{where}: {exc}; run on a PREEMPT_RT kernel with rtprio for your user "
                                "(docs/arms/franka.md), or set hardware.params.franka.realtime: ignore for a test "
                                "bench") from exc
        except Exception as exc:
            self._close(shutdown_device=False)
            if "incompatible" in str(exc).lower():
                # libfranka >= 0.10 (pylibfranka ships 0.21) speaks only to a Franka Research 3; a Panda (FER)
                # stops at libfranka 0.9.2, for which there is no pylibfranka.
                raise HardwareError(
                    f"{where}: {exc}: pylibfranka {getattr(lib, '__version__', '')} (libfranka 0.21) talks only to "
                    "a Franka Research 3 with a matching system version; a Panda (FER) needs libfranka <= 0.9.2: "
                    "drive it through franka_ros or panda-py and use the ros_topic backend (docs/arms/franka.md)"
                ) from exc
            raise HardwareError(f"{where}: cannot connect ({exc}); check the cable to the control box, that "
                                f"the robot answers `ping {self.robot_ip}`, that FCI is activated in Desk and the "
                                "joints are unlocked") from exc
        self._store_state(state)
        if self._hand is not None:
            try:
                self._hand.connect(lib)
            except HardwareError:
                self._close(shutdown_device=False)
                raise
        if not self.emulate and self.control_mode == "callback":  # only the Python 1 kHz loop needs it
            sys.setswitchinterval(REALTIME_SWITCH_INTERVAL_S)
        self._connected = True

    def disconnect(self) -> None:
        """End the control loop (the robot holds its pose), stop the hand, close both. Safe twice."""
        if self._robot is None and not (self._hand is not None and self._hand.open):
            self._connected = False
            return
        with contextlib.suppress(HardwareError):
            self._end_control()
        self._connected = False
        self._close()

    def _close(self, shutdown_device: bool = True) -> None:
        if self._hand is not None:
            self._hand.close()
        self._robot = None
        if shutdown_device and self.emulated_device is not None:
            self.emulated_device.shutdown()  # the emulator's own thread

    def _library(self) -> Any:
        if self._lib is None:
            if self.emulate:
                from molmoact2_ros.backends.hardware.emulated.franka_robot import (
                    EmulatedFrankaDevice,
                    EmulatedPylibfranka,
                )

                self.emulated_device = EmulatedFrankaDevice(self.robot_model, q0=self._emulated_start_pose())
                self._lib = EmulatedPylibfranka(self.emulated_device)
            else:
                self._lib = _import_pylibfranka()
        elif self.emulate and self.emulated_device is None:
            self.emulated_device = getattr(self._lib, "device", None)
        return self._lib

    def _emulated_start_pose(self) -> np.ndarray:
        return self._shaper.clip_target(self.embodiment.home[self._arm_idx])

    # ---- read / write --------------------------------------------------------------------------------------
    def read(self) -> HardwareReading:
        self._require_connected()
        self._raise_latched()
        polled = self.control_mode == "async" and self._poll_async()
        if not polled and not self.control_running:
            try:
                with self._lock:
                    state = self._robot.read_once()
            except Exception as exc:
                raise HardwareError(f"franka robot at {self.robot_ip}: reading the state failed ({exc}); check "
                                    "the network link to the control box") from exc
            self._check_mode(state)
            self._store_state(state)
        with self._lock:
            q, dq = self._q.copy(), self._dq.copy()
        positions = np.zeros(self.embodiment.dof)
        velocities = np.zeros(self.embodiment.dof)
        positions[self._arm_idx], velocities[self._arm_idx] = q, dq
        if self._hand is not None:
            positions[self._grip_idx], velocities[self._grip_idx] = self._hand.reading()
        return HardwareReading(positions=positions, velocities=velocities)

    def write(self, positions: np.ndarray) -> np.ndarray:
        self._require_connected()
        cmd = self._check_command(positions)
        self._raise_latched()
        sent = cmd.copy()
        target = self._shaper.clip_target(cmd[self._arm_idx])
        sent[self._arm_idx] = target
        now = time.monotonic()
        if self.control_mode == "async":
            self._write_async(target)
            if self._hand is not None:
                sent[self._grip_idx] = self._hand.set_target(float(cmd[self._grip_idx]))
            return sent
        with self._lock:
            period = None if self._last_write_t is None else now - self._last_write_t
            self._last_write_t = now
            # The reference continues from where it is now toward the new target over one driver period.
            self._ref_from = self._reference(now)[0]
            self._target = target
            self._ref_t0 = now
            self._ref_duration = reference_duration(period, self._nominal_period_s)
        if not self.control_running:
            self._start_control()
        if self._hand is not None:
            sent[self._grip_idx] = self._hand.set_target(float(cmd[self._grip_idx]))
        return sent

    def relax(self) -> None:
        """End the control loop (brought to rest first); the robot holds its pose. Next write restarts it."""
        self._require_connected()
        self._end_control()

    def recover(self) -> None:
        """Clear a reflex: pylibfranka ``automatic_error_recovery``. The driver calls this on ``~/reset``."""
        self._require_connected()
        self._end_control()  # a loop is never running with an error latched; be sure anyway
        where = f"franka robot at {self.robot_ip}"
        try:
            with self._lock:
                state = self._robot.read_once()
                stuck = (state.robot_mode != self._lib.RobotMode.Idle or bool(state.current_errors)
                         or self._error is not None)
                if stuck:
                    self._robot.automatic_error_recovery()
                    state = self._robot.read_once()
        except Exception as exc:
            raise HardwareError(f"{where}: automatic error recovery failed ({exc}); release the user stop if it "
                                "is pressed, check Desk for errors that need a manual recovery") from exc
        if bool(state.current_errors):
            raise HardwareError(f"{where}: errors remain after recovery: {state.current_errors}; see Desk")
        with self._lock:
            self._error = None
            self._store_state(state)
        if self._hand is not None:
            self._hand.clear_error()

    # ---- the 1 kHz control loop ------------------------------------------------------------------------------
    def _start_control(self) -> None:
        lib = self._lib
        try:
            with self._lock:
                control = self._robot.start_joint_position_control(lib.ControllerMode.JointImpedance)
        except Exception as exc:
            raise HardwareError(f"franka robot at {self.robot_ip}: starting joint position control failed "
                                f"({exc}); check the robot is in Ready/Idle (joints unlocked, user stop "
                                "released, no error in Desk), then ~/reset") from exc
        self._stop_request = False
        self._control_thread = threading.Thread(target=self._control_loop, args=(control,),
                                                name="franka-1khz-control", daemon=True)
        self._control_thread.start()

    def _control_loop(self, control: Any) -> None:
        # Real-time priority where the user has rtprio (libfranka's own loop asks for 80 too); without it the
        # robot's communication_constraints_violation reflex is what tells.
        set_thread_fifo(80, "libfranka's 1 kHz loop")
        lib = self._lib
        try:
            state, _ = control.readOnce()
            self._store_state(state)
            self._shaper.reset(np.asarray(state.q_d, dtype=np.float64))
            while True:
                with self._lock:
                    stopping = self._stop_request
                    if stopping:  # hold where the command is: the shaper brakes to rest
                        self._ref_from = self._target = self._shaper.p.copy()
                        self._ref_duration = self._nominal_period_s
                    ref, ref_v = self._reference(time.monotonic())
                q_c = self._shaper.step(ref, ref_v)
                command = lib.JointPositions(q_c.tolist())
                finished = stopping and self._shaper.at_rest
                if finished:
                    command.motion_finished = True
                control.writeOnce(command)
                self.loop_cycles += 1
                if finished:
                    return
                state, _ = control.readOnce()
                self._store_state(state)
        except Exception as exc:
            # The robot stopped itself (reflex) or the link broke: latch it for the driver.
            with self._lock:
                self._error = (f"franka robot at {self.robot_ip}: motion aborted ({one_line(exc)}); the robot "
                               "stopped and holds; find the cause, then call the driver's ~/reset (automatic "
                               "error recovery)")

    def _reference(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """The interpolated target at ``now`` and its velocity (callers hold the lock)."""
        s = (now - self._ref_t0) / self._ref_duration
        if s >= 1.0:
            return self._target.copy(), np.zeros(7)
        s = max(s, 0.0)
        delta = self._target - self._ref_from
        return self._ref_from + s * delta, delta / self._ref_duration

    def _end_control(self) -> None:
        if self.control_mode == "async":
            self._end_async()
            return
        thread = self._control_thread
        if thread is None:
            return
        self._stop_request = True
        thread.join(timeout=STOP_TIMEOUT_S)
        if thread.is_alive():
            # Did not come to rest in time (a stalled loop): the robot stops the motion itself.
            try:
                self._robot.stop()
            except Exception as exc:
                raise HardwareError(f"franka robot at {self.robot_ip}: stopping the motion failed ({exc})") from exc
            thread.join(timeout=STOP_TIMEOUT_S)
        self._control_thread = None

    # ---- control_mode async (franka_async) ------------------------------------------------------------------
    def _write_async(self, target: np.ndarray) -> None:
        try:
            with self._lock:
                if self._async is None:
                    self._async = AsyncSession(self._lib, self._robot, self._async_max_velocity,
                                               f"franka robot at {self.robot_ip}")
                self._async.set_target(target)
        except AsyncAborted as exc:
            self._abort_async(exc)
        except HardwareError:
            raise
        except Exception as exc:  # the link: pylibfranka's NetworkException and the like
            self._abort_async(AsyncAborted(one_line(exc)))

    def _poll_async(self) -> bool:
        """Read the state through the running handler's session; False if none runs (then an idle read)."""
        try:
            with self._lock:
                if self._async is None:
                    return False
                self._store_state(self._async.poll())
                return True
        except AsyncAborted as exc:
            self._abort_async(exc)
        except Exception as exc:
            raise HardwareError(f"franka robot at {self.robot_ip}: reading the state failed ({exc}); check "
                                "the network link to the control box") from exc

    def _abort_async(self, exc: AsyncAborted) -> None:
        """The robot ended the motion: latch it like the callback loop does, release the handler, raise."""
        error = self._latch_async(exc)
        with self._lock:
            session, self._async = self._async, None
        if session is not None:
            session.close()
        raise HardwareError(error)

    def _latch_async(self, exc: AsyncAborted) -> str:
        state = exc.state
        errors = "" if state is None else f" {state.last_motion_errors or state.current_errors}"
        with self._lock:
            self._error = (f"franka robot at {self.robot_ip}: motion aborted ({exc}{errors}); the robot "
                           "stopped and holds; find the cause, then call the driver's ~/reset (automatic error "
                           "recovery)")
            return self._error

    def _end_async(self) -> None:
        """Bring the generator to rest at its current command, then end the motion (relax, disconnect)."""
        with self._lock:
            session, error = self._async, self._error
        if session is None:
            return
        try:
            with self._lock:
                settled = error is None and session.settle(STOP_TIMEOUT_S)
            if not settled and error is None:
                self._robot.stop()  # did not come to rest in time: the robot stops the motion itself
        except AsyncAborted as exc:
            self._latch_async(exc)  # it ended already (a reflex): nothing left to stop; reported until recover()
        except Exception as exc:
            raise HardwareError(f"franka robot at {self.robot_ip}: stopping the motion failed ({exc})") from exc
        finally:
            with self._lock:
                self._async = None
            session.close()

    def _store_state(self, state: Any) -> None:
        q = np.asarray(state.q, dtype=np.float64)
        dq = np.asarray(state.dq, dtype=np.float64)
        self._q, self._dq = q, dq

    def _check_mode(self, state: Any) -> None:
        mode = state.robot_mode
        modes = self._lib.RobotMode
        where = f"franka robot at {self.robot_ip}"
        if mode == modes.UserStopped:
            raise HardwareError(f"{where}: the user stop is pressed; release it, then call the driver's ~/reset")
        if mode == modes.Reflex or bool(state.current_errors):
            raise HardwareError(f"{where}: in {mode.name} mode with errors {state.current_errors}; find the cause, "
                                "then call the driver's ~/reset (automatic error recovery)")

    def _raise_latched(self) -> None:
        with self._lock:
            error = self._error
        if error is None and self._hand is not None:
            error = self._hand.take_error()  # one report per failed hand command
        if error is not None:
            raise HardwareError(error)
