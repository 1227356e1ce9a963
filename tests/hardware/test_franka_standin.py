"""The pylibfranka stand-in is honest: same API as the installed pylibfranka 0.21, and the robot's reflexes
trip on commands the real control box would refuse (raw steps, limits, an unfinished stop)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

pylibfranka = pytest.importorskip("pylibfranka")

from molmoact2_ros.backends.hardware.emulated import franka_async as fa  # noqa: E402
from molmoact2_ros.backends.hardware.emulated import franka_robot as fr  # noqa: E402
from molmoact2_ros.backends.hardware.franka_shaping import (  # noqa: E402
    FRANKA_LIMITS,
    JointShaper,
    finite_differences,
)

# What the franka backend uses of pylibfranka, per class: (stand-in, real).
USED = {
    "Robot": (fr.EmulatedFrankaRobot, ["__init__", "automatic_error_recovery", "read_once",
                                       "set_collision_behavior", "set_joint_impedance",
                                       "start_joint_position_control", "stop"]),
    "Gripper": (fr.EmulatedFrankaGripper, ["__init__", "grasp", "homing", "move", "read_once", "server_version",
                                           "stop"]),
    "ActiveControlBase": (fr.EmulatedActiveControl, ["readOnce"]),
    "AsyncPositionControlHandler": (fa.EmulatedAsyncPositionControlHandler,
                                    ["configure", "get_target_feedback", "set_joint_position_target",
                                     "stop_control"]),
}


def _split_top(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _real_params(method) -> list[tuple[str, str | None]]:
    """(name, default) of a pybind11 method from its docstring signature, without ``self`` (a static method
    such as ``configure`` has none)."""
    first = method.__doc__.strip().splitlines()[0]
    inner = re.match(r"^\w+\((.*)\) -> .*$", first).group(1)
    params = []
    for part in [p for p in _split_top(inner) if not p.startswith("self:")]:
        name, _, rest = part.partition(":")
        default = rest.rsplit("=", 1)[1].strip() if "=" in rest and not rest.strip().endswith("]") else None
        params.append((name.strip(), default))
    return params


@pytest.mark.parametrize("cls_name", sorted(USED))
def test_standin_methods_match_real_signatures(cls_name):
    ours, methods = USED[cls_name]
    real = getattr(pylibfranka, cls_name)
    for name in methods:
        real_params = _real_params(getattr(real, name))
        sig = inspect.signature(getattr(ours, name))
        our_params = [p for p in sig.parameters.values() if p.name != "self"]
        assert [p.name for p in our_params] == [n for n, _ in real_params], f"{cls_name}.{name}"
        for p, (_, default) in zip(our_params, real_params, strict=True):
            if default is None:
                assert p.default is inspect.Parameter.empty, f"{cls_name}.{name}({p.name}): no default in pylibfranka"
            elif default == "None":
                assert p.default is None, f"{cls_name}.{name}({p.name})"
            elif re.fullmatch(r"[-0-9.e]+", default):
                assert p.default == float(default), f"{cls_name}.{name}({p.name})"
            else:  # an enum default such as <RealtimeConfig.kEnforce: 0>
                assert p.default is not inspect.Parameter.empty and p.default.name in default


def test_standin_writeonce_takes_joint_positions_like_an_overload_of_the_real_one():
    doc = pylibfranka.ActiveControlBase.writeOnce.__doc__
    assert "JointPositions" in doc
    assert list(inspect.signature(fr.EmulatedActiveControl.writeOnce).parameters) == ["self", "arg0"]


def test_standin_value_types_match_real_ones():
    real_flags = {n for n, v in vars(pylibfranka.Errors).items() if isinstance(v, property)}
    assert set(fr.ERROR_NAMES) == real_flags
    assert str(fr.Errors()) == str(pylibfranka.Errors())  # both "[]"
    state = fr.EmulatedFrankaDevice().state()
    real_state = {n for n in dir(pylibfranka.RobotState) if not n.startswith("_")}
    assert set(vars(state)) <= real_state
    assert isinstance(state.robot_mode, pylibfranka.RobotMode)
    grip = fr.EmulatedFrankaDevice().hand.state()
    assert set(vars(grip)) <= {n for n in dir(pylibfranka.GripperState) if not n.startswith("_")}
    assert hasattr(pylibfranka.Duration, "to_sec") and state.time.to_sec() == 0.0
    lib = fr.EmulatedPylibfranka(fr.EmulatedFrankaDevice())
    # value types and exceptions are pylibfranka's own
    for name in ("JointPositions", "ControllerMode", "RealtimeConfig", "RobotMode", "ControlException",
                 "CommandException", "NetworkException", "InvalidOperationException", "RealtimeException"):
        assert getattr(lib, name) is getattr(pylibfranka, name)


def _start(device):
    lib = fr.EmulatedPylibfranka(device)
    robot = lib.Robot("172.16.0.2", lib.RealtimeConfig.kIgnore)
    control = robot.start_joint_position_control(lib.ControllerMode.JointImpedance)
    state, period = control.readOnce()
    assert period.to_sec() == pytest.approx(0.001)
    return lib, robot, control, np.array(state.q_d)


def _expect_reflex(control, *errors):
    with pytest.raises(pylibfranka.ControlException) as exc:
        control.readOnce()
    msg = str(exc.value)
    assert "motion aborted by reflex" in msg
    for e in errors:
        assert e in msg
    return msg


def test_raw_step_trips_the_reflex_and_recovery_clears_it():
    device = fr.EmulatedFrankaDevice()
    lib, robot, control, q = _start(device)
    step = q.copy()
    step[0] += 0.05  # 50 rad/s for one cycle
    control.writeOnce(lib.JointPositions(step.tolist()))
    _expect_reflex(control, "joint_motion_generator_velocity_limits_violation",
                   "joint_motion_generator_velocity_discontinuity", "joint_motion_generator_acceleration_discontinuity")
    state = robot.read_once()
    assert state.robot_mode == pylibfranka.RobotMode.Reflex
    assert state.current_errors.joint_motion_generator_velocity_discontinuity
    with pytest.raises(pylibfranka.ControlException, match="not possible in the current mode"):
        robot.start_joint_position_control(lib.ControllerMode.JointImpedance)
    robot.automatic_error_recovery()
    state = robot.read_once()
    assert state.robot_mode == pylibfranka.RobotMode.Idle and not state.current_errors
    assert device.recoveries == 1


def test_small_step_within_velocity_still_trips_acceleration_and_jerk():
    device = fr.EmulatedFrankaDevice()
    lib, _robot, control, q = _start(device)
    step = q.copy()
    step[1] += 0.001  # 1 rad/s: within the velocity limit, but reached in one cycle
    control.writeOnce(lib.JointPositions(step.tolist()))
    msg = _expect_reflex(control, "joint_motion_generator_velocity_discontinuity",
                         "joint_motion_generator_acceleration_discontinuity")
    assert "velocity_limits_violation" not in msg


def test_command_outside_position_limits_trips_the_reflex():
    device = fr.EmulatedFrankaDevice(q0=(2.8970, -0.6, 0.0, -2.5, 0.0, 1.9, 0.0))
    lib, _robot, control, q = _start(device)
    q[0] = 2.8974  # 0.4 mrad over: tiny motion, outside the limit
    control.writeOnce(lib.JointPositions(q.tolist()))
    _expect_reflex(control, "joint_motion_generator_position_limits_violation")


def test_finishing_a_motion_while_moving_trips_the_reflex():
    device = fr.EmulatedFrankaDevice()
    lib, _robot, control, q = _start(device)
    shaper = JointShaper(FRANKA_LIMITS["panda"])
    shaper.reset(q)
    target = q + 0.3
    for _ in range(200):  # accelerate properly: no reflex
        cmd = lib.JointPositions(shaper.step(target, np.zeros(7)).tolist())
        control.writeOnce(cmd)
        control.readOnce()
    cmd = lib.JointPositions(shaper.step(target, np.zeros(7)).tolist())
    cmd.motion_finished = True  # ... then stop dead
    control.writeOnce(cmd)
    _expect_reflex(control, "joint_motion_generator_velocity_discontinuity")


def test_injected_collision_reflex_and_user_stop():
    device = fr.EmulatedFrankaDevice()
    lib, robot, control, q = _start(device)
    control.writeOnce(lib.JointPositions(q.tolist()))
    device.inject_reflex("joint_reflex")
    _expect_reflex(control, "joint_reflex")
    robot.automatic_error_recovery()
    device.press_user_stop()
    with pytest.raises(pylibfranka.CommandException):
        robot.automatic_error_recovery()
    device.release_user_stop()
    robot.automatic_error_recovery()
    assert robot.read_once().robot_mode == pylibfranka.RobotMode.Idle


def test_read_once_refused_while_a_control_runs():
    device = fr.EmulatedFrankaDevice()
    _lib, robot, _control, _q = _start(device)
    with pytest.raises(pylibfranka.InvalidOperationException):
        robot.read_once()
    robot.stop()
    robot.read_once()


def test_gripper_move_grasp_stop():
    device = fr.EmulatedFrankaDevice()
    lib = fr.EmulatedPylibfranka(device)
    try:
        gripper = lib.Gripper("172.16.0.2")
        assert gripper.read_once().max_width == pytest.approx(0.08)
        assert gripper.move(0.05, 0.1)
        assert gripper.read_once().width == pytest.approx(0.05)
        device.hand.object_width = 0.03
        assert gripper.grasp(0.0, 0.1, 20.0, 0.05, 0.05)  # closes on the object
        state = gripper.read_once()
        assert state.width == pytest.approx(0.03) and state.is_grasped
        with pytest.raises(pylibfranka.CommandException):
            gripper.move(0.2, 0.1)  # wider than the hand: refused, not clamped
        assert gripper.stop()
    finally:
        device.shutdown()


def test_shaper_keeps_a_raw_step_and_a_limit_approach_within_every_limit():
    limits = FRANKA_LIMITS["panda"]
    shaper = JointShaper(limits)
    q0 = np.array([0.0, -0.6, 0.0, -2.5, 0.0, 1.9, 0.0])
    shaper.reset(q0)
    target = q0 + np.array([1.0, -0.8, 3.5, 0.9, -2.0, 2.0, -0.05])  # some beyond the limits
    cmds = [q0, q0, q0] + [shaper.step(target, np.zeros(7)) for _ in range(4000)]
    cmds = np.array(cmds)
    v, a, j = finite_differences(cmds)
    assert np.all(np.abs(v) <= np.array(limits.dq_max))
    assert np.all(np.abs(a) <= np.array(limits.ddq_max))
    assert np.all(np.abs(j) <= np.array(limits.dddq_max))
    assert np.all(cmds >= np.array(limits.q_min)) and np.all(cmds <= np.array(limits.q_max))
    np.testing.assert_allclose(cmds[-1], shaper.clip_target(target), atol=1e-4)
    assert shaper.at_rest


# ---- AsyncPositionControlHandler (control_mode: async) ----------------------------------------------------------
def test_standin_async_types_match_real_ones():
    real, ours = pylibfranka.AsyncPositionControlHandler, fa.EmulatedAsyncPositionControlHandler
    assert isinstance(inspect.getattr_static(ours, "configure"), staticmethod)
    assert ours.Configuration is real.Configuration and ours.JointPositionTarget is real.JointPositionTarget
    for name in ("CommandResult", "ConfigurationResult", "TargetFeedback"):
        real_attrs = {n for n in vars(getattr(real, name)) if not n.startswith("_")}
        assert set(vars(getattr(ours, name)())) == real_attrs, name
    assert fa.TargetStatus is pylibfranka._pylibfranka.TargetStatus
    assert fa.TargetFeedback().status == fa.TargetStatus.kIdle
    assert fr.EmulatedPylibfranka(fr.EmulatedFrankaDevice()).AsyncPositionControlHandler is ours


def _configure(device, max_velocity=None, tolerance=0.001):
    lib = fr.EmulatedPylibfranka(device)
    robot = lib.Robot("172.16.0.2", lib.RealtimeConfig.kIgnore)
    handler_cls = lib.AsyncPositionControlHandler
    v = list(max_velocity if max_velocity is not None else FRANKA_LIMITS[device.model].dq_max)
    result = handler_cls.configure(robot, handler_cls.Configuration(v, tolerance))
    return lib, robot, result


def _target(lib, q):
    return lib.AsyncPositionControlHandler.JointPositionTarget([float(x) for x in q])


def _feedback_until(handler, robot, statuses, max_reads=20000):
    for _ in range(max_reads):  # each read waits for the generator's next tick: bounded by emulated time
        state = robot.read_once()
        feedback = handler.get_target_feedback(state)
        if feedback.status.name in statuses:
            return state, feedback
    raise AssertionError(f"no {statuses} in {max_reads} ticks")


def test_async_generator_moves_to_the_target_within_the_limits_and_the_velocity_cap():
    device = fr.EmulatedFrankaDevice("fr3", q0=(0.0, -0.6, 0.0, -2.4, 0.0, 1.9, 0.0))
    cap = np.array([1.0, 1.0, 1.0, 1.0, 1.5, 1.5, 1.5])
    lib, robot, result = _configure(device, cap)
    assert result.error_message is None and device.mode.name == "Move"
    handler = result.handler
    start = np.array(robot.read_once().q)  # readable while the async control runs
    goal = start + np.array([0.8, -0.3, 0.5, 0.4, -0.6, 0.5, 1.0])
    res = handler.set_joint_position_target(_target(lib, goal))
    assert res.was_successful and res.error_message is None
    _state, feedback = _feedback_until(handler, robot, {"kExecuting"})
    assert feedback.error_message is None
    state, _ = _feedback_until(handler, robot, {"kTargetReached"})
    np.testing.assert_allclose(state.q_d, goal, atol=1e-3)
    limits = FRANKA_LIMITS["fr3"]
    assert device.reflexes == []
    peak_velocity = device.peak_fraction["velocity"]  # of the model's limit, the worst joint
    assert peak_velocity <= float(np.max(cap / np.array(limits.dq_max))) + 1e-9
    assert device.peak_fraction["acceleration"] <= 1.0 and device.peak_fraction["jerk"] <= 1.0
    handler.stop_control()  # at rest: the motion ends cleanly
    assert device.mode.name == "Idle" and device.controls_finished == 1 and device.reflexes == []
    assert not handler.set_joint_position_target(_target(lib, goal)).was_successful  # no control left
    _, robot, again = _configure(device)  # the control lock was released
    assert again.error_message is None
    again.handler.stop_control()


def test_async_target_outside_the_limits_aborts_and_only_the_feedback_tells():
    device = fr.EmulatedFrankaDevice("fr3", q0=(0.0, -0.6, 0.0, -2.4, 0.0, 1.9, 0.0))
    lib, robot, result = _configure(device)
    handler = result.handler
    bad = np.array(robot.read_once().q)
    bad[3] = 0.2  # joint 4 must stay below -0.1518
    assert handler.set_joint_position_target(_target(lib, bad)).was_successful
    state, feedback = _feedback_until(handler, robot, {"kAborted"})
    assert feedback.error_message == "Control aborted due to reflex."
    assert state.robot_mode.name == "Reflex"
    assert state.last_motion_errors.joint_motion_generator_position_limits_violation
    # Without a state the handler reads through its ActiveControl: the motion error in full.
    assert "joint_motion_generator_position_limits_violation" in handler.get_target_feedback().error_message
    assert handler.set_joint_position_target(_target(lib, state.q)).was_successful  # sent, nobody acts
    assert _configure(device)[2].error_message is not None  # the handler still holds the control
    handler.stop_control()
    robot.automatic_error_recovery()
    again = _configure(device)[2]
    assert again.error_message is None
    again.handler.stop_control()  # else its 1 kHz generator thread outlives the test


def test_async_non_finite_target_is_refused_and_the_handler_stays_aborted():
    device = fr.EmulatedFrankaDevice("fr3")
    lib, robot, result = _configure(device)
    handler = result.handler
    q = np.array(robot.read_once().q)
    res = handler.set_joint_position_target(_target(lib, [np.nan] * 7))
    assert not res.was_successful and "NaN" in res.error_message
    res = handler.set_joint_position_target(_target(lib, q))
    assert not res.was_successful and "aborted" in res.error_message
    assert handler.get_target_feedback().status.name == "kAborted"
    handler.stop_control()
    assert device.reflexes == [] and device.mode.name == "Idle"


def test_async_is_refused_on_a_panda_and_finishing_while_moving_trips_the_reflex():
    assert "Franka Research 3" in _configure(fr.EmulatedFrankaDevice("panda"))[2].error_message
    device = fr.EmulatedFrankaDevice("fr3", q0=(0.0, -0.6, 0.0, -2.4, 0.0, 1.9, 0.0))
    lib, robot, result = _configure(device)
    handler = result.handler
    goal = np.array(robot.read_once().q) + 1.0
    handler.set_joint_position_target(_target(lib, goal))
    for _ in range(20000):
        if np.max(np.abs(robot.read_once().dq_d)) > 0.5:
            break
    handler.stop_control()  # motion_finished at full speed: the velocity steps to zero
    assert device.reflexes and "joint_motion_generator_velocity_discontinuity" in device.reflexes[-1]
