"""The ``franka`` backend's ``control_mode: async``: libfranka's ``AsyncPositionControlHandler`` through pylibfranka.

How libfranka means it to be used (sources: libfranka ``src/async_control/async_position_control_handler.cpp``
and ``include/franka/async_control/async_position_control_handler.hpp``; ``Robot::startAsyncJointPositionControl``
in ``src/robot.cpp``; the examples ``examples/async_position_control.cpp`` and
``pylibfranka/examples/async_position_control.py``; franka_ros2's ``franka_hardware`` ``PTPMotionHandler`` and
``Robot::readOnce``; libfranka's CHANGELOG 0.18.0-0.20.0):

- ``AsyncPositionControlHandler.configure(robot, Configuration(maximum_joint_velocities, goal_tolerance))`` starts
  an asynchronous joint position motion: a Move command with ``use_async_motion_generator`` set and the maximum
  joint velocities, in joint impedance mode. The *control box* then generates the 1 kHz trajectory toward the
  latest target itself; the client runs no 1 kHz loop at all (not even in C++). ``set_joint_position_target`` is
  a single ``writeOnce`` and returns at once. The examples set a target every 20 ms (50 Hz); franka_ros2's PTP
  handler sets one target and then only reads, so the robot needs no steady command stream.
- The handler gives no state. To read the robot while it runs, call ``Robot.read_once()`` (libfranka's
  ``Robot::readOnce`` takes no control lock) and hand that state to ``get_target_feedback(robot_state)``: that
  is what franka_ros2 does (the ``robot_state`` argument was added in libfranka 0.19.0 for it). Without a
  state, ``get_target_feedback()`` reads one itself through the handler's ActiveControl. The feedback maps the
  state's ``robot_mode``: Move -> ``kTargetReached`` (``|q_d - target| < goal_tolerance`` and ``|dq_d| < 0.01``)
  or ``kExecuting``; Idle -> ``kIdle``; Reflex / UserStopped -> ``kAborted`` ("Control aborted due to reflex." /
  "... user stop."). After a reflex a target write still "succeeds" (a UDP packet nobody acts on): only the
  feedback, or the state's mode, tells. A refused target (non-finite) returns ``was_successful=False`` and the
  handler stays aborted. ``configure`` reports failure in ``ConfigurationResult.error_message``, not by raising.
- ``stop_control`` ends the motion (0.19+: the last target with ``motion_finished``) and releases libfranka's
  control lock; a new motion needs a new ``configure``. Errors inside it are only logged by libfranka.
- Requirements: Franka Research 3 with system version >= 5.9.0 (the async Move flag does not exist in a Panda's
  protocol); the feature is marked "Experimental and subject to change" (CHANGELOG 0.18.0). ``TargetStatus`` is
  not re-exported by pylibfranka 0.21's package (``pylibfranka._pylibfranka.TargetStatus``): statuses are
  compared by name here.
- The ActiveControl raises the calling thread to the highest real-time priority allowed (as the callback
  mode's does): here the driver's tick thread, which configures on its first write.

What the backend adds: targets are the driver's commands, clipped into the position limits, one per ``write``;
the velocity cap is the embodiment's, never above ``limit_fraction`` of Franka's table; stopping (relax,
disconnect) first holds the generator's current command as the target and waits until it is reached at rest,
then ends the motion, so stopping never trips a reflex (``robot.stop()`` if it does not settle in time).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from molmoact2_ros.core.errors import HardwareError

ASYNC_GOAL_TOLERANCE_RAD = 0.001  # libfranka's kDefaultGoalTolerance: "reached" for the stop below


class AsyncAborted(Exception):
    """The robot ended the motion (reflex, user stop, preempted) or refused a target; ``state`` if one was read."""

    def __init__(self, detail: str, state: Any = None):
        super().__init__(detail)
        self.state = state


class AsyncSession:
    """One ``AsyncPositionControlHandler``: configure -> a target per driver tick -> stop. Not thread-safe: the
    backend calls it under its lock."""

    def __init__(self, lib: Any, robot: Any, max_velocities: np.ndarray, where: str):
        self._lib, self._robot, self.where = lib, robot, where
        handler_cls = lib.AsyncPositionControlHandler
        try:
            config = handler_cls.Configuration([float(v) for v in max_velocities], ASYNC_GOAL_TOLERANCE_RAD)
            result = handler_cls.configure(robot, config)
        except Exception as exc:
            raise HardwareError(f"{where}: starting async position control failed ({exc}); check the robot is "
                                "in Ready/Idle (joints unlocked, user stop released, no error in Desk)") from exc
        if result.error_message is not None or result.handler is None:
            raise HardwareError(f"{where}: starting async position control failed ({result.error_message}); it "
                                "needs a Franka Research 3 with system version >= 5.9 in Ready/Idle (joints "
                                "unlocked, user stop released, no error in Desk), else use control_mode: callback")
        self.handler = result.handler
        self.state: Any = None  # the last state read ...
        self.status = "kIdle"  # ... and its feedback status

    def set_target(self, q: np.ndarray) -> None:
        target = self._lib.AsyncPositionControlHandler.JointPositionTarget([float(v) for v in q])
        result = self.handler.set_joint_position_target(target)
        if not result.was_successful:
            raise AsyncAborted(f"target refused: {result.error_message}")

    def poll(self) -> Any:
        """Read the robot's state and check the motion still runs; returns the state, raises AsyncAborted."""
        state = self._robot.read_once()
        self.state = state
        feedback = self.handler.get_target_feedback(state)
        status = self.status = feedback.status.name
        if status == "kAborted":
            raise AsyncAborted(feedback.error_message or "motion aborted", state)
        if status == "kIdle":  # Idle / Other while our motion should run: something else ended it
            raise AsyncAborted(f"the robot ended the motion (mode {state.robot_mode.name})", state)
        return state

    def settle(self, timeout_s: float) -> bool:
        """Hold the generator's current command as the target; True once reached at rest, False on timeout."""
        state = self.poll()
        self.set_target(np.asarray(state.q_d, dtype=np.float64))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if self.status == "kTargetReached":  # |q_d - target| < goal tolerance and at rest
                return True
        return False

    def close(self) -> None:
        """End the motion and release the control (libfranka only logs errors here)."""
        handler, self.handler = self.handler, None
        if handler is not None:
            with contextlib.suppress(Exception):
                handler.stop_control()


def async_velocity_cap(embodiment_max: np.ndarray, franka_max: np.ndarray, fraction: float) -> np.ndarray:
    """The generator's maximum joint velocities: the embodiment's, never above ``fraction`` of Franka's table."""
    return np.minimum(np.asarray(embodiment_max, dtype=np.float64), fraction * np.asarray(franka_max))
