"""A stand-in for pylibfranka 0.21's ``AsyncPositionControlHandler`` on the emulated Franka (``franka`` backend,
``control_mode: async``, ``emulate=True``).

What the real one does (libfranka ``src/async_control/async_position_control_handler.cpp``, 0.18-0.21, and
``Robot::startAsyncJointPositionControl`` in ``src/robot.cpp``): ``configure`` starts an *asynchronous* joint
position motion (a Move command with ``use_async_motion_generator`` and the maximum joint velocities; needs a
Franka Research 3 with system version >= 5.9) and keeps its ActiveControl, which holds libfranka's control
lock; ``set_joint_position_target`` is one ``writeOnce`` of the target and returns at once (the control box's
own motion generator moves toward the latest target every millisecond; no client loop); ``get_target_feedback``
reads one state through the ActiveControl (or takes the state given) and maps its ``robot_mode``: Move ->
``kTargetReached`` (``|q_d - target| < goal_tolerance`` and ``|dq_d| < 0.01``) or ``kExecuting``, Idle ->
``kIdle``, Reflex / UserStopped -> ``kAborted`` with a message; ``stop_control`` ends the motion
(``motion_finished``) and releases the control. A target write after the robot aborted the motion still
"succeeds" (a UDP packet nobody acts on): only the feedback tells.

Emulated here: the control box's generator is a thread of the ``EmulatedFrankaDevice`` stepping the arm at 1 kHz
(wall clock, resynchronised when late like the callback mode's ticks), tracking the latest target along a
jerk-limited path (``JointShaper`` at ``GENERATOR_LIMIT_FRACTION`` of the model's limits, velocity capped at
the configured maximum). Each of its commands passes the same motion-generator checks as a callback-mode
command, and injected reflexes and the user stop abort it the same way. Guesses, not documented by Franka: the
shape of the real generator's path (only its velocity cap is a parameter), that an unreachable target trips
``joint_motion_generator_position_limits_violation``, and that finishing a motion that is not at rest trips
``joint_motion_generator_velocity_discontinuity`` as it does in the callback mode.
"""

from __future__ import annotations

import threading

import numpy as np
import pylibfranka
from pylibfranka import _pylibfranka

from molmoact2_ros.backends.hardware.emulated import run_like_hardware
from molmoact2_ros.backends.hardware.franka_shaping import JointShaper

# pylibfranka 0.21 does not re-export TargetStatus from its package; the value type is the real one.
TargetStatus = _pylibfranka.TargetStatus
_REAL = pylibfranka.AsyncPositionControlHandler
GENERATOR_LIMIT_FRACTION = 0.95  # the emulated generator keeps this share of the robot's own limits
TARGET_REACHED_SPEED = 0.01  # rad/s, libfranka's kTargetReachedVelocityThreshold (norm over the joints)
STOP_WAIT_S = 2.0
ABORTED = "Control interface is in aborted state."  # libfranka's text


# ---- the result types (no Python constructor in pylibfranka; same attribute names) ----------------------------
class CommandResult:
    """AsyncPositionControlHandler.CommandResult."""

    def __init__(self, *, was_successful: bool = False, error_message: str | None = None,
                 motion_uuid: str | None = None):
        self.was_successful, self.error_message, self.motion_uuid = was_successful, error_message, motion_uuid


class ConfigurationResult:
    """AsyncPositionControlHandler.ConfigurationResult."""

    def __init__(self, *, handler: EmulatedAsyncPositionControlHandler | None = None,
                 error_message: str | None = None):
        self.handler, self.error_message = handler, error_message


class TargetFeedback:
    """AsyncPositionControlHandler.TargetFeedback."""

    def __init__(self, status: TargetStatus = TargetStatus.kIdle, error_message: str | None = None):
        self.status, self.error_message = status, error_message


# ---- the control box's asynchronous motion generator ----------------------------------------------------------
class AsyncMotionGenerator:
    """A 1 kHz thread moving the device's command toward the latest target (the device's ``_control``)."""

    asynchronous = True  # Robot.read_once may read next to it

    def __init__(self, device, maximum_velocities: np.ndarray):
        self.device = device
        self.finished = False  # set by the device when the motion ends (finish, reflex, Robot.stop)
        self.abort_message: str | None = None
        self.shaper = JointShaper(device.limits, fraction=GENERATOR_LIMIT_FRACTION, margin_rad=0.0)
        self.shaper.v_max = np.minimum(self.shaper.v_max, maximum_velocities)
        self.target = np.zeros(7)
        self.finish_request = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        dev = self.device
        dev.start_control(self)  # Move rejected in Reflex / UserStopped, refused next to another control
        with dev.lock:
            self.shaper.reset(dev.q_c)
            self.target = dev.q_c.copy()  # hold where it is until the first target
        self._thread = threading.Thread(target=self._run, name="emulated-franka-async-generator", daemon=True)
        self._thread.start()

    def set_target(self, q: np.ndarray) -> None:
        dev = self.device
        with dev.lock:
            if self.finished:
                return
            if np.any(q < dev.limits.q_min) or np.any(q > dev.limits.q_max):
                dev.inject_reflex("joint_motion_generator_position_limits_violation")
                return
            self.target = q.copy()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        run_like_hardware()
        dev = self.device
        while True:
            dev.wait_tick()
            with dev.lock:
                if self.finished:
                    return
                try:
                    dev._raise_pending()  # injected reflexes, the user stop, last cycle's command errors
                    dev.step()
                    if np.any(dev.q < dev.limits.q_min) or np.any(dev.q > dev.limits.q_max):
                        dev.inject_reflex("joint_position_limits_violation")
                        dev._raise_pending()
                    q_c = self.shaper.step(self.target, np.zeros(7))
                    dev.receive_command(q_c, self.finish_request)  # the motion-generator checks
                except pylibfranka.ControlException as exc:
                    self.abort_message = str(exc)  # the device ended the motion (Reflex / UserStopped)
                finally:
                    dev.tick_cond.notify_all()


# ---- the handler ---------------------------------------------------------------------------------------------------
class EmulatedAsyncPositionControlHandler:
    """pylibfranka.AsyncPositionControlHandler over the emulated device (same methods and nested types)."""

    Configuration = _REAL.Configuration  # value types: pylibfranka's own
    JointPositionTarget = _REAL.JointPositionTarget
    CommandResult = CommandResult
    ConfigurationResult = ConfigurationResult
    TargetFeedback = TargetFeedback

    def __init__(self, generator: AsyncMotionGenerator, goal_tolerance: float):
        self._generator: AsyncMotionGenerator | None = generator
        self._goal_tolerance = float(goal_tolerance)
        self._target = np.zeros(7)  # libfranka's target_position_ starts zeroed
        self._aborted = False

    @staticmethod
    def configure(arg0, arg1) -> ConfigurationResult:
        """Configure an AsyncPositionControlHandler with the given configuration."""
        if not isinstance(arg1, _REAL.Configuration):
            raise TypeError(f"configure(): expects AsyncPositionControlHandler.Configuration, not {type(arg1)}")
        dev = arg0.device
        if dev.model != "fr3":
            return ConfigurationResult(error_message=(
                "libfranka: the asynchronous motion generator needs a Franka Research 3 (system version >= 5.9)"))
        if dev.async_client is not None:
            return ConfigurationResult(error_message=(
                "libfranka robot: Cannot perform this operation while another control or read operation is "
                "running."))
        limit = np.array(dev.limits.dq_max)
        given = arg1.maximum_joint_velocities
        v_max = limit if given is None else np.asarray(given, dtype=np.float64)
        if v_max.shape != (7,) or not np.all(np.isfinite(v_max)) or np.any(v_max <= 0) or np.any(v_max > limit):
            return ConfigurationResult(error_message=(
                f"libfranka: Move command rejected: maximum joint velocities {v_max.tolist()} outside "
                f"(0, {limit.tolist()}]"))
        generator = AsyncMotionGenerator(dev, v_max)
        try:
            generator.start()
        except (pylibfranka.ControlException, pylibfranka.InvalidOperationException) as exc:
            return ConfigurationResult(error_message=str(exc))
        tolerance = arg1.goal_tolerance
        handler = EmulatedAsyncPositionControlHandler(generator, 0.001 if tolerance is None else tolerance)
        dev.async_client = handler
        return ConfigurationResult(handler=handler)

    def set_joint_position_target(self, arg0) -> CommandResult:
        """Set a new joint position target."""
        generator = self._generator
        if self._aborted or generator is None:
            return CommandResult(error_message=ABORTED)
        q = np.asarray(arg0.joint_positions, dtype=np.float64)
        if not np.all(np.isfinite(q)):
            self._aborted = True  # libfranka: createMotionCommand's checkFinite throws, the handler aborts
            return CommandResult(error_message="libfranka: Commanding value is infinite or NaN.")
        generator.set_target(q)  # after a robot-side abort: sent, and nobody acts on it (like UDP)
        self._target = q
        return CommandResult(was_successful=True, motion_uuid="test_uuid")  # libfranka 0.21's literal uuid

    def get_target_feedback(self, robot_state=None) -> TargetFeedback:
        """Get feedback on the current target."""
        generator = self._generator
        if self._aborted or generator is None:
            return TargetFeedback(TargetStatus.kAborted, ABORTED)
        if robot_state is None:  # the ActiveControl's readOnce: raises once the robot ended the motion
            robot_state = generator.device.next_state()
            if generator.finished:
                return TargetFeedback(TargetStatus.kAborted,
                                      generator.abort_message or "libfranka: Move command preempted!")
        mode = robot_state.robot_mode
        if mode == pylibfranka.RobotMode.Move:
            error = float(np.linalg.norm(np.asarray(robot_state.q_d) - self._target))
            speed = float(np.linalg.norm(robot_state.dq_d))
            reached = error < self._goal_tolerance and speed < TARGET_REACHED_SPEED
            return TargetFeedback(TargetStatus.kTargetReached if reached else TargetStatus.kExecuting)
        if mode == pylibfranka.RobotMode.Reflex:
            return TargetFeedback(TargetStatus.kAborted, "Control aborted due to reflex.")
        if mode == pylibfranka.RobotMode.UserStopped:
            return TargetFeedback(TargetStatus.kAborted, "Control aborted due to user stop.")
        return TargetFeedback(TargetStatus.kIdle)

    def stop_control(self) -> None:
        """Stop the position control handler."""
        generator, self._generator = self._generator, None
        if generator is not None:
            dev = generator.device
            with dev.lock:
                generator.finish_request = True  # the next command goes out with motion_finished
                dev.tick_cond.wait_for(lambda: generator.finished, timeout=STOP_WAIT_S)
            if not generator.finished:
                dev.stop_motion()  # a stalled generator: like the ActiveControl's destructor (StopMove)
            generator.join(STOP_WAIT_S)
            if dev.async_client is self:
                dev.async_client = None  # libfranka's control lock is released
        self._aborted = False  # libfranka sets kIdle; with no control left, targets are refused

    def __del__(self):  # the shared_ptr's last owner gone: libfranka's ActiveControl releases its lock
        generator = self._generator
        if generator is not None and generator.device.async_client is self:
            generator.device.stop_motion()
            generator.device.async_client = None
