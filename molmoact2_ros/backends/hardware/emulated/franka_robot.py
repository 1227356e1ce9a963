"""A stand-in for a Franka arm and hand at the pylibfranka boundary (``franka`` backend, ``emulate=True``).

libfranka's network protocol (TCP commands + 1 kHz UDP state/command exchange with the robot's control
box) cannot be emulated here, so the fake sits one level up: ``EmulatedFrankaRobot``,
``EmulatedFrankaGripper`` and ``EmulatedActiveControl`` have the names, signatures and behaviour of
pylibfranka 0.21's ``Robot``, ``Gripper`` and ``ActiveControlBase`` for what the backend uses (a test
compares them against the installed pylibfranka so they cannot drift). Value types that need no robot
(``JointPositions``, ``ControllerMode``, ``RealtimeConfig``, ``RobotMode``) and every exception type are
pylibfranka's own; ``RobotState``, ``Duration``, ``Errors`` and ``GripperState`` have no public
constructor in pylibfranka, so they are small stand-ins with the same attribute names.

``EmulatedFrankaDevice`` is the robot: a 7-joint Panda (or FR3) stepped at 1 kHz. Each ``readOnce`` of
an active control waits for the next 1 ms tick of the wall clock and advances the robot by one control
period (lock-step: a client that is late on a loaded machine delays emulated time instead of losing
packets, so tests do not depend on the machine's speed; a client silent for ``comm_timeout_s`` trips
``communication_constraints_violation`` as the real robot does within milliseconds). The measured q
follows the commanded q_c through a stiff, critically damped joint impedance. The robot's reflexes are
checked on every command, by finite differences at 1 kHz against Franka's documented limits, exactly as
the control box does: position limits (``joint_motion_generator_position_limits_violation``), velocity
(``..._velocity_limits_violation``), acceleration (``..._velocity_discontinuity``), jerk
(``..._acceleration_discontinuity``), a finished motion that does not end at rest (the implied step to
zero velocity), a measured pose beyond the limits (``joint_position_limits_violation``) and injected
ones (``inject_reflex``: a collision is ``joint_reflex``/``cartesian_reflex``). A reflex aborts the
motion with pylibfranka's ``ControlException`` and libfranka's message, and leaves the robot in
``RobotMode.Reflex`` until ``automatic_error_recovery()``.

``AsyncPositionControlHandler`` (``control_mode: async``) is ``emulated.franka_async``: there the control
box's own motion generator is a thread of this device stepping it at 1 kHz, and ``Robot.read_once`` reads
its state packets while it runs, as libfranka allows.

The hand runs in its own thread: fingers move at the commanded speed, ``move``/``grasp``/``homing`` block
until done (``stop`` from another thread aborts them), an object between the fingers
(``object_width``) stops a closing motion and is reported by ``is_grasped``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pylibfranka

from molmoact2_ros.backends.hardware.emulated import run_like_hardware
from molmoact2_ros.backends.hardware.franka_shaping import CONTROL_PERIOD_S, FRANKA_LIMITS

# pylibfranka.Errors' flags, in libfranka's order (the order its string form lists them in).
ERROR_NAMES: tuple[str, ...] = (
    "joint_position_limits_violation", "cartesian_position_limits_violation",
    "self_collision_avoidance_violation", "joint_velocity_violation", "cartesian_velocity_violation",
    "force_control_safety_violation", "joint_reflex", "cartesian_reflex", "max_goal_pose_deviation_violation",
    "max_path_pose_deviation_violation", "cartesian_velocity_profile_safety_violation",
    "joint_position_motion_generator_start_pose_invalid", "joint_motion_generator_position_limits_violation",
    "joint_motion_generator_velocity_limits_violation", "joint_motion_generator_velocity_discontinuity",
    "joint_motion_generator_acceleration_discontinuity", "cartesian_position_motion_generator_start_pose_invalid",
    "cartesian_motion_generator_elbow_limit_violation", "cartesian_motion_generator_velocity_limits_violation",
    "cartesian_motion_generator_velocity_discontinuity", "cartesian_motion_generator_acceleration_discontinuity",
    "cartesian_motion_generator_elbow_sign_inconsistent", "cartesian_motion_generator_start_elbow_invalid",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame", "force_controller_desired_force_tolerance_violation",
    "controller_torque_discontinuity", "start_elbow_sign_inconsistent", "communication_constraints_violation",
    "power_limit_violation", "joint_p2p_insufficient_torque_for_planning", "tau_j_range_violation",
    "instability_detected", "joint_move_in_wrong_direction", "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation", "base_acceleration_initialization_timeout",
    "base_acceleration_invalid_reading",
)

# The measured pose follows the command through the robot's joint impedance: critically damped, stiff.
IMPEDANCE_OMEGA = 60.0  # rad/s natural frequency (a few ms of lag on smooth motion, like the real arm)
# Hand: Franka Hand, 80 mm stroke, fingers at up to 0.1 m/s (its spec); the state thread runs at 200 Hz.
HAND_MAX_WIDTH_M = 0.08
HAND_MAX_SPEED_MPS = 0.1
HAND_PERIOD_S = 0.005


# ---- value types pylibfranka gives no constructor for --------------------------------------------------
class Duration:
    """pylibfranka.Duration: a time span (``to_sec``)."""

    def __init__(self, seconds: float = 0.0):
        self._s = float(seconds)

    def to_sec(self) -> float:
        return self._s

    def __repr__(self) -> str:
        return f"Duration({self._s:g} s)"


class Errors:
    """pylibfranka.Errors: one boolean flag per robot error; falsy when none is set, ``str`` lists the set
    ones like libfranka (``["joint_reflex", ...]``)."""

    def __init__(self, active: tuple[str, ...] | list[str] = ()):
        unknown = set(active) - set(ERROR_NAMES)
        if unknown:
            raise ValueError(f"unknown Franka errors {sorted(unknown)}")
        self._active = frozenset(active)

    @property
    def active(self) -> list[str]:
        """The set flags, in libfranka's order (stand-in helper; not in pylibfranka)."""
        return [n for n in ERROR_NAMES if n in self._active]

    def __bool__(self) -> bool:
        return bool(self._active)

    def __str__(self) -> str:
        return "[" + ", ".join(f'"{n}"' for n in self.active) + "]"

    __repr__ = __str__


def _flag(name: str) -> property:
    return property(lambda self: name in self._active, doc=f"pylibfranka.Errors.{name}")


for _name in ERROR_NAMES:
    setattr(Errors, _name, _flag(_name))


class RobotState:
    """pylibfranka.RobotState, the fields a joint-space client uses (lists of 7 floats like pylibfranka)."""

    def __init__(self, *, q, q_d, dq, dq_d, ddq_d, tau, robot_mode: pylibfranka.RobotMode,
                 current_errors: Errors, last_motion_errors: Errors, control_command_success_rate: float,
                 time_s: float):
        self.q, self.q_d, self.dq, self.dq_d, self.ddq_d = list(q), list(q_d), list(dq), list(dq_d), list(ddq_d)
        self.theta, self.dtheta = list(q), list(dq)
        self.tau_J, self.tau_J_d, self.dtau_J = list(tau), [0.0] * 7, [0.0] * 7
        self.robot_mode = robot_mode
        self.current_errors = current_errors
        self.last_motion_errors = last_motion_errors
        self.control_command_success_rate = float(control_command_success_rate)
        self.time = Duration(time_s)


class GripperState:
    """pylibfranka.GripperState."""

    def __init__(self, *, width: float, max_width: float, is_grasped: bool, temperature: int, time_s: float):
        self.width = float(width)
        self.max_width = float(max_width)
        self.is_grasped = bool(is_grasped)
        self.temperature = int(temperature)
        self.time = Duration(time_s)


# ---- the robot --------------------------------------------------------------------------------------------
class EmulatedFrankaDevice:
    """The emulated robot (arm + hand) that stand-in ``Robot``/``Gripper`` objects connect to.

    Test hooks: ``inject_reflex(name)``, ``press_user_stop()``/``release_user_stop()``, ``unreachable``,
    ``object_width`` (something between the fingers), and the counters/records below."""

    def __init__(self, model: str = "panda", q0=None, *, comm_timeout_s: float = 1.0,
                 hand_width_m: float = HAND_MAX_WIDTH_M, hand_homed: bool = True):
        if model not in FRANKA_LIMITS:
            raise ValueError(f"unknown Franka model {model!r} (known: {', '.join(FRANKA_LIMITS)})")
        self.model = model
        self.limits = FRANKA_LIMITS[model]
        self._q_min, self._q_max = np.array(self.limits.q_min), np.array(self.limits.q_max)
        self._dq_max, self._ddq_max = np.array(self.limits.dq_max), np.array(self.limits.ddq_max)
        self._dddq_max = np.array(self.limits.dddq_max)
        if q0 is None:  # Franka's "ready" pose
            q0 = (0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4)
        self.comm_timeout_s = float(comm_timeout_s)
        self.lock = threading.RLock()
        # Notified on every tick an asynchronous control's generator thread advances (its state packets).
        self.tick_cond = threading.Condition(self.lock)
        self.q = np.array(q0, dtype=np.float64)
        self.dq = np.zeros(7)
        # The motion generator's last three commands (position, velocity, acceleration): checked by
        # finite differences at 1 kHz, like the control box.
        self.q_c = self.q.copy()
        self.dq_c = np.zeros(7)
        self.ddq_c = np.zeros(7)
        self.mode = pylibfranka.RobotMode.Idle
        self.current_errors: tuple[str, ...] = ()
        self.last_motion_errors: tuple[str, ...] = ()
        self.user_stop = False
        self.unreachable = False  # the next Robot()/Gripper() raises NetworkException (cable out, wrong IP)
        # A control box whose protocol libfranka 0.21 does not speak (a Panda/FER, or an FR3 with an old image):
        # the next Robot() fails the version handshake, as libfranka's IncompatibleVersionException does.
        self.server_version: int | None = None
        self.ticks = 0
        self._next_tick_wall: float | None = None
        self._pending_reflex: list[str] = []
        self._control: EmulatedActiveControl | None = None  # or an emulated_async.AsyncMotionGenerator
        self.async_client = None  # the AsyncPositionControlHandler holding libfranka's control lock
        self._awaiting_command = False  # a readOnce was answered; the robot waits for its command
        self._last_read_wall = 0.0
        # what the robot was told (tests assert on these)
        self.commands_received = 0
        self.controls_started = 0
        self.controls_finished = 0
        self.recoveries = 0
        self.motion_stops = 0  # Robot.stop() ending a running motion (not a motion_finished)
        self.collision_behavior: tuple[list[float], ...] | None = None
        self.joint_impedance: list[float] | None = None
        self.robots_connected = 0
        self.reflexes: list[list[str]] = []
        # the largest |velocity|, |acceleration|, |jerk| of any accepted command, as a fraction of the limit
        self.peak_fraction = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}
        # the hand
        self.hand = _EmulatedHand(hand_width_m, homed=hand_homed)

    # ---- test hooks ------------------------------------------------------------------------------------
    def inject_reflex(self, *errors: str) -> None:
        """A reflex the robot triggers on its own at the next cycle (collision: ``joint_reflex``)."""
        Errors(errors)  # validates the names
        with self.lock:
            self._pending_reflex.extend(errors or ("joint_reflex",))

    def press_user_stop(self) -> None:
        with self.lock:
            self.user_stop = True
            if self._control is not None:
                self._pending_reflex.append("__user_stop__")
            else:
                self.mode = pylibfranka.RobotMode.UserStopped

    def release_user_stop(self) -> None:
        with self.lock:
            self.user_stop = False
            if self.mode == pylibfranka.RobotMode.UserStopped:
                self.mode = pylibfranka.RobotMode.Idle

    @property
    def control_active(self) -> bool:
        with self.lock:
            return self._control is not None

    def shutdown(self) -> None:
        """Stop the hand's thread (the emulator's own thread); the arm has none."""
        self.hand.shutdown()

    # ---- the robot's side of the stand-in classes -------------------------------------------------------
    def state(self) -> RobotState:
        with self.lock:
            return RobotState(
                q=self.q, q_d=self.q_c, dq=self.dq, dq_d=self.dq_c, ddq_d=self.ddq_c,
                tau=IMPEDANCE_OMEGA * (self.q_c - self.q),
                robot_mode=self.mode, current_errors=Errors(self.current_errors),
                last_motion_errors=Errors(self.last_motion_errors), control_command_success_rate=1.0,
                time_s=self.ticks * CONTROL_PERIOD_S)

    def wait_tick(self) -> None:
        """Block until the next 1 ms tick of the wall clock (the robot's next state packet)."""
        now = time.monotonic()
        if self._next_tick_wall is None or now - self._next_tick_wall > 0.05:
            self._next_tick_wall = now  # far behind (a loaded machine): resynchronise, do not burst
        self._next_tick_wall += CONTROL_PERIOD_S
        delay = self._next_tick_wall - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def step(self, n: int = 1) -> None:
        """Advance the arm by ``n`` control periods toward the current command (the robot's impedance)."""
        with self.lock:
            for _ in range(n):
                w = IMPEDANCE_OMEGA
                acc = w * w * (self.q_c - self.q) + 2.0 * w * (self.dq_c - self.dq)
                self.dq = self.dq + acc * CONTROL_PERIOD_S
                self.q = self.q + self.dq * CONTROL_PERIOD_S
                self.ticks += 1

    def start_control(self, control: EmulatedActiveControl) -> None:
        with self.lock:
            if self._control is not None:
                raise pylibfranka.InvalidOperationException(
                    "libfranka robot: Cannot perform this operation while another control or read operation "
                    "is running.")
            if self.user_stop or self.mode != pylibfranka.RobotMode.Idle:
                raise pylibfranka.ControlException(
                    f"libfranka: Move command rejected: command not possible in the current mode "
                    f"({self.mode.name})!")
            self.q_c, self.dq_c, self.ddq_c = self.q.copy(), np.zeros(7), np.zeros(7)
            self.last_motion_errors = ()
            self.mode = pylibfranka.RobotMode.Move
            self._control = control
            self._awaiting_command = False
            self._last_read_wall = time.monotonic()
            self.controls_started += 1

    def receive_command(self, q_cmd: np.ndarray, finished: bool) -> None:
        """One joint position command from the client: the control box's motion-generator checks."""
        with self.lock:
            self._awaiting_command = False
            self.commands_received += 1
            dq = (q_cmd - self.q_c) / CONTROL_PERIOD_S
            ddq = (dq - self.dq_c) / CONTROL_PERIOD_S
            dddq = (ddq - self.ddq_c) / CONTROL_PERIOD_S
            errors = self._motion_errors(q_cmd, dq, ddq, dddq)
            if finished and not errors:
                # The motion ends here: the generator's velocity steps to zero on the next cycle.
                ddq_stop = -dq / CONTROL_PERIOD_S
                if np.any(np.abs(ddq_stop) > self._ddq_max):
                    errors.append("joint_motion_generator_velocity_discontinuity")
            if errors:
                self._pending_reflex.extend(errors)
                return
            for key, value, limit in (("velocity", dq, self._dq_max), ("acceleration", ddq, self._ddq_max),
                                      ("jerk", dddq, self._dddq_max)):
                self.peak_fraction[key] = max(self.peak_fraction[key], float(np.max(np.abs(value) / limit)))
            self.q_c, self.dq_c, self.ddq_c = np.array(q_cmd, dtype=np.float64), dq, ddq
            if finished:
                self.dq_c, self.ddq_c = np.zeros(7), np.zeros(7)
                self._finish(pylibfranka.RobotMode.Idle)
                self.controls_finished += 1

    def _motion_errors(self, q, dq, ddq, dddq) -> list[str]:
        errors = []
        if np.any(q < self._q_min) or np.any(q > self._q_max):
            errors.append("joint_motion_generator_position_limits_violation")
        if np.any(np.abs(dq) > self._dq_max):
            errors.append("joint_motion_generator_velocity_limits_violation")
        if np.any(np.abs(ddq) > self._ddq_max):
            errors.append("joint_motion_generator_velocity_discontinuity")
        if np.any(np.abs(dddq) > self._dddq_max):
            errors.append("joint_motion_generator_acceleration_discontinuity")
        return errors

    def control_read(self) -> tuple[RobotState, Duration]:
        """An active control's readOnce: the next cycle's state, or the abort of the motion."""
        with self.lock:
            if self._control is None:
                raise pylibfranka.ControlException("libfranka: the motion has finished; start a new control")
            late = time.monotonic() - self._last_read_wall
            if self._awaiting_command and late > self.comm_timeout_s:
                self._pending_reflex.append("communication_constraints_violation")
        self.wait_tick()
        with self.lock:
            self._raise_pending()
            self.step()
            if np.any(self.q < self._q_min) or np.any(self.q > self._q_max):
                self._pending_reflex.append("joint_position_limits_violation")
                self._raise_pending()
            self._awaiting_command = True
            self._last_read_wall = time.monotonic()
            return self.state(), Duration(CONTROL_PERIOD_S)

    def idle_read(self) -> RobotState:
        """Robot.read_once: the next state packet while no control runs (the arm holds its pose), or while an
        asynchronous control runs (libfranka's Robot::readOnce takes no control lock; franka_ros2 reads the
        state this way next to an AsyncPositionControlHandler). Refused next to a callback control, whose
        readOnce would lose packets to it."""
        with self.lock:
            if self._control is not None:
                if getattr(self._control, "asynchronous", False):
                    return self.next_state()
                raise pylibfranka.InvalidOperationException(
                    "libfranka robot: Cannot perform this operation while another control or read operation "
                    "is running.")
        self.wait_tick()
        with self.lock:
            self.ticks += 1
            return self.state()

    def next_state(self, timeout_s: float = 1.0) -> RobotState:
        """The state after the asynchronous generator's next tick (now, if no control runs any more)."""
        with self.lock:
            tick = self.ticks
            self.tick_cond.wait_for(lambda: self.ticks != tick or self._control is None, timeout=timeout_s)
            return self.state()

    def _raise_pending(self) -> None:
        if not self._pending_reflex:
            return
        pending, self._pending_reflex = self._pending_reflex, []
        if "__user_stop__" in pending:
            self._finish(pylibfranka.RobotMode.UserStopped)
            raise pylibfranka.ControlException("libfranka: Move command aborted: User Stop pressed!")
        errors = tuple(n for n in ERROR_NAMES if n in pending)
        self.current_errors = errors
        self.last_motion_errors = errors
        self.reflexes.append(list(errors))
        self._finish(pylibfranka.RobotMode.Reflex)
        raise pylibfranka.ControlException(
            f"libfranka: Move command aborted: motion aborted by reflex! {Errors(errors)}\n"
            f"control_command_success_rate: 1")

    def _finish(self, mode: pylibfranka.RobotMode) -> None:
        # The robot stops where it is (it holds its measured pose on its own, brakes open in Idle).
        self.q_c, self.dq_c, self.ddq_c = self.q.copy(), np.zeros(7), np.zeros(7)
        self.dq = np.zeros(7)
        self.mode = mode
        if self._control is not None:
            self._control.finished = True
        self._control = None
        self.tick_cond.notify_all()  # a reader waiting on the asynchronous generator's next tick

    def stop_motion(self) -> None:
        """Robot.stop: abort the running motion (the robot stops on its own)."""
        with self.lock:
            if self._control is not None:
                self._finish(pylibfranka.RobotMode.Idle)
                self.controls_finished += 1
                self.motion_stops += 1

    def recover(self) -> None:
        with self.lock:
            if self._control is not None:
                raise pylibfranka.InvalidOperationException(
                    "libfranka robot: Cannot perform this operation while another control or read operation "
                    "is running.")
            if self.user_stop:
                raise pylibfranka.CommandException(
                    "libfranka: Automatic Error Recovery command rejected: command not possible in the current "
                    "mode (UserStopped)!")
            self.recoveries += 1
            self.current_errors = ()
            self._pending_reflex = []
            self.mode = pylibfranka.RobotMode.Idle


class EmulatedActiveControl:
    """pylibfranka.ActiveControlBase for joint position control: ``readOnce`` / ``writeOnce``."""

    def __init__(self, device: EmulatedFrankaDevice):
        self._device = device
        self.finished = False

    def readOnce(self) -> tuple[RobotState, Duration]:  # noqa: N802 - pylibfranka's name
        """Read robot state once: (RobotState, Duration since the last read)."""
        if self.finished:
            raise pylibfranka.ControlException("libfranka: the motion has finished; start a new control")
        return self._device.control_read()

    def writeOnce(self, arg0: pylibfranka.JointPositions) -> None:  # noqa: N802 - pylibfranka's name
        """Write joint position command."""
        if self.finished:
            raise pylibfranka.ControlException("libfranka: the motion has finished; start a new control")
        if not isinstance(arg0, pylibfranka.JointPositions):
            raise TypeError(f"writeOnce(): this control takes pylibfranka.JointPositions, not {type(arg0).__name__}")
        q = np.asarray(arg0.q, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise pylibfranka.ControlException("libfranka: Move command aborted: invalid input provided!")
        self._device.receive_command(q, bool(arg0.motion_finished))


class EmulatedFrankaRobot:
    """pylibfranka.Robot over an ``EmulatedFrankaDevice`` (same constructor and methods)."""

    device: EmulatedFrankaDevice  # bound by ``emulated_pylibfranka``

    def __init__(self, robot_ip_address: str, realtime_config: pylibfranka.RealtimeConfig = (
            pylibfranka.RealtimeConfig.kEnforce)) -> None:
        if not isinstance(realtime_config, pylibfranka.RealtimeConfig):
            raise TypeError(f"realtime_config must be pylibfranka.RealtimeConfig, not {type(realtime_config)}")
        if self.device.unreachable:
            raise pylibfranka.NetworkException(
                "libfranka: Connection timeout. Please check your network connection or settings.")
        if self.device.server_version is not None:
            raise pylibfranka.FrankaException(
                f"libfranka: Incompatible library version (server version: {self.device.server_version}, "
                "library version: 10). Please check the table at "
                "https://frankarobotics.github.io/docs/libfranka/docs/compatibility_with_image")
        self.robot_ip_address = robot_ip_address
        self.realtime_config = realtime_config
        self.device.robots_connected += 1

    def automatic_error_recovery(self) -> None:
        """Attempt automatic error recovery."""
        self.device.recover()

    def read_once(self) -> RobotState:
        """Read current robot state once."""
        return self.device.idle_read()

    def set_collision_behavior(self, lower_torque_thresholds, upper_torque_thresholds, lower_force_thresholds,
                               upper_force_thresholds) -> None:
        """Configure collision detection thresholds."""
        values = [list(map(float, v)) for v in (lower_torque_thresholds, upper_torque_thresholds,
                                                lower_force_thresholds, upper_force_thresholds)]
        if [len(v) for v in values] != [7, 7, 6, 6]:
            raise TypeError("set_collision_behavior(): expects (7,), (7,), (6,), (6,) thresholds")
        self._idle_only()
        self.device.collision_behavior = tuple(values)

    def set_joint_impedance(self, arg0) -> None:
        """Set joint impedance for internal controller."""
        k = list(map(float, arg0))
        if len(k) != 7:
            raise TypeError("set_joint_impedance(): expects 7 stiffness values")
        self._idle_only()
        self.device.joint_impedance = k

    def start_joint_position_control(self, arg0: pylibfranka.ControllerMode) -> EmulatedActiveControl:
        """Start joint position control mode."""
        if not isinstance(arg0, pylibfranka.ControllerMode):
            raise TypeError(f"start_joint_position_control(): expects pylibfranka.ControllerMode, not {type(arg0)}")
        control = EmulatedActiveControl(self.device)
        self.device.start_control(control)
        return control

    def stop(self) -> None:
        """Stop currently running motion."""
        self.device.stop_motion()

    def _idle_only(self) -> None:
        if self.device.control_active:
            raise pylibfranka.InvalidOperationException(
                "libfranka robot: Cannot perform this operation while another control or read operation is "
                "running.")


# ---- the hand ----------------------------------------------------------------------------------------------
class _EmulatedHand:
    """The Franka Hand's fingers, moved by their own thread (the emulated device's thread)."""

    def __init__(self, width: float, homed: bool):
        self.cond = threading.Condition()
        self.width = float(width)
        self.max_width = HAND_MAX_WIDTH_M if homed else 0.0
        self.object_width: float | None = None  # something between the fingers
        self.goal: float | None = None
        self.speed = 0.0
        self.grasping = False
        self.is_grasped = False
        self.command_id = 0  # bumps on every new command and on stop: a blocked call sees it was aborted
        self.commands: list[tuple] = []  # (name, args) as received, for tests
        self.temperature = 30
        self._t0 = time.monotonic()
        self._stop = False
        self._thread: threading.Thread | None = None  # started when a Gripper connects: no hand, no thread

    def start(self) -> None:
        """(Re)start the fingers' thread (a Gripper connecting, also after a shutdown)."""
        with self.cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="emulated-franka-hand", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        run_like_hardware()
        last = time.monotonic()
        while True:
            with self.cond:
                self.cond.wait(HAND_PERIOD_S)
                if self._stop:
                    return
                now = time.monotonic()
                dt, last = now - last, now
                if self.goal is None:
                    continue
                goal = self.goal
                if self.object_width is not None and goal < self.object_width <= self.width:
                    goal = self.object_width  # the fingers close on the object
                step = self.speed * dt
                if abs(goal - self.width) <= step:
                    self.width = goal
                    self.is_grasped = self.grasping
                    self.goal = None
                    self.cond.notify_all()
                else:
                    self.width += step if goal > self.width else -step

    def command(self, name: str, goal: float, speed: float, grasping: bool) -> bool:
        """Start a finger motion and block until it ends; False if stopped (or superseded) on the way."""
        with self.cond:
            self.commands.append((name, goal, speed))
            self.command_id += 1
            my_id = self.command_id
            self.goal, self.speed, self.grasping = goal, speed, grasping
            self.is_grasped = False
            self.cond.notify_all()
            while self.goal is not None and self.command_id == my_id and not self._stop:
                self.cond.wait(0.05)
            return self.command_id == my_id and not self._stop

    def stop(self) -> None:
        with self.cond:
            self.commands.append(("stop",))
            self.command_id += 1
            self.goal = None
            self.cond.notify_all()

    def state(self) -> GripperState:
        with self.cond:
            return GripperState(width=self.width, max_width=self.max_width, is_grasped=self.is_grasped,
                                temperature=self.temperature, time_s=time.monotonic() - self._t0)

    def shutdown(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class EmulatedFrankaGripper:
    """pylibfranka.Gripper over the emulated device's hand (same constructor and methods)."""

    device: EmulatedFrankaDevice  # bound by ``emulated_pylibfranka``

    def __init__(self, arg0: str) -> None:
        if self.device.unreachable:
            raise pylibfranka.NetworkException(
                "libfranka: Connection timeout. Please check your network connection or settings.")
        self.franka_address = arg0
        self._hand = self.device.hand
        self._hand.start()

    def grasp(self, width, speed, force, epsilon_inner=0.005, epsilon_outer=0.005) -> bool:
        """Grasp an object: close at ``speed`` (m/s) with ``force`` (N); True if the final width is within
        [width - epsilon_inner, width + epsilon_outer] of an object."""
        width, speed, force = float(width), float(speed), float(force)
        self._check_width_speed(width, speed)
        if force <= 0:
            raise pylibfranka.CommandException("libfranka gripper: Command failed!")
        if not self._hand.command("grasp", width, speed, grasping=True):
            raise pylibfranka.CommandException("libfranka gripper: Command aborted!")
        # Like the hand: the grasp holds (force on) and counts as successful when the fingers stopped
        # within [width - epsilon_inner, width + epsilon_outer].
        ok = width - float(epsilon_inner) <= self._hand.state().width <= width + float(epsilon_outer)
        with self._hand.cond:
            self._hand.is_grasped = ok
        return ok

    def homing(self) -> bool:
        """Perform homing to find maximum width (the fingers open fully, then close)."""
        if not self._hand.command("homing", HAND_MAX_WIDTH_M, HAND_MAX_SPEED_MPS, grasping=False):
            raise pylibfranka.CommandException("libfranka gripper: Command aborted!")
        with self._hand.cond:
            self._hand.max_width = HAND_MAX_WIDTH_M
        return True

    def move(self, arg0, arg1) -> bool:
        """Move the fingers to width ``arg0`` (m) at speed ``arg1`` (m/s)."""
        width, speed = float(arg0), float(arg1)
        self._check_width_speed(width, speed)
        if not self._hand.command("move", width, speed, grasping=False):
            raise pylibfranka.CommandException("libfranka gripper: Command aborted!")
        # A move that ends on an object is not where it was sent: the hand reports failure.
        return abs(self._hand.state().width - width) < 1e-6

    def read_once(self) -> GripperState:
        """Read the current gripper state once."""
        return self._hand.state()

    def server_version(self) -> int:
        """Gripper server version."""
        return 3

    def stop(self) -> bool:
        """Stop the current gripper motion."""
        self._hand.stop()
        return True

    def _check_width_speed(self, width: float, speed: float) -> None:
        # The hand rejects what it cannot do (libfranka: "Command failed!"), it never clamps.
        if not (0.0 <= width <= self._hand.max_width + 1e-9) or not (0.0 < speed <= HAND_MAX_SPEED_MPS + 1e-9):
            raise pylibfranka.CommandException("libfranka gripper: Command failed!")


# ---- the library namespace the backend imports -----------------------------------------------------------
class EmulatedPylibfranka:
    """Stands in for the ``pylibfranka`` module: ``Robot`` and ``Gripper`` reach ``device``; everything
    else (value types, enums, exceptions) is the real pylibfranka's."""

    def __init__(self, device: EmulatedFrankaDevice):
        self.device = device
        self.Robot = type("Robot", (EmulatedFrankaRobot,), {"device": device})
        self.Gripper = type("Gripper", (EmulatedFrankaGripper,), {"device": device})
        self.RobotState, self.GripperState, self.Duration, self.Errors = RobotState, GripperState, Duration, Errors
        self.ActiveControlBase = EmulatedActiveControl
        from molmoact2_ros.backends.hardware.emulated.franka_async import EmulatedAsyncPositionControlHandler

        self.AsyncPositionControlHandler = EmulatedAsyncPositionControlHandler

    def __getattr__(self, name: str):
        return getattr(pylibfranka, name)  # JointPositions, ControllerMode, RealtimeConfig, exceptions, ...
