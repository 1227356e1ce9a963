"""Scripted experts: reach above the arm's object, descend, close the gripper, lift; one per arm of a scene.

Joint targets come from damped-least-squares inverse kinematics on the scene's own model (mujoco's site
Jacobians), solved on a private ``MjData`` so the simulation is not disturbed. Each control step moves the
command at most a fraction of each joint's velocity limit toward the IK solution, so actions stay smooth and
inside the limits. Deterministic: the same scene state gives the same actions (no randomness is drawn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from molmoact2_ros.sim.scenes import ArmTask, SimScene

HOVER_M = 0.08  # pre-grasp height above the object
LIFT_M = 0.12  # how far the object is lifted
PHASES = ("hover", "descend", "close", "lift", "hold")
# close: long enough for the gripper to travel fully closed at SPEED_FRACTION of its velocity limit and squeeze
PHASE_S = {"hover": 2.0, "descend": 1.5, "close": 1.2, "lift": 1.5, "hold": 1e9}
SPEED_FRACTION = 0.5
# descend and lift move the tcp goal along a straight line over this long (then hold it there): jumping the goal
# to the end made the joints travel at their own rates on a curved path, and a jaw swept the cube aside on the
# way down (SO-100, some seeds)
RAMP_S = {"descend": 1.0, "lift": 1.0}
LIFT_END_S = sum(PHASE_S[p] for p in PHASES[:-1])  # when the hold begins
# a pick succeeded when the object ended this far up and stayed this close to the tcp through the hold
SUCCESS_LIFT_M = 0.03
SUCCESS_HELD_M = 0.03


@dataclass
class _ArmState:
    task: ArmTask
    joint_idx: np.ndarray  # embodiment indices of the arm's joints
    gripper_idx: int
    target_xyz: np.ndarray | None = None
    closing_dir: np.ndarray | None = None  # world horizontal direction the jaws should close along
    q_ik: np.ndarray | None = None  # the last IK solution of the arm's joints: the next solve starts there


class ScriptedExpert:
    """Pick-up expert for every arm of ``scene``; call ``reset()`` after ``scene.reset``, then ``act()`` per step."""

    def __init__(self, scene: SimScene, control_dt: float | None = None) -> None:
        self.scene = scene
        emb = scene.embodiment
        self.control_dt = control_dt or 1.0 / emb.control_rate_hz
        names = emb.joint_names
        self._arms = [_ArmState(a, np.array([names.index(j) for j in a.joints]), names.index(a.gripper))
                      for a in scene.arms]
        self._ik_data = mujoco.MjData(scene.model)
        self._t = 0.0
        self._command = scene.joint_positions()

    def reset(self) -> None:
        self._t = 0.0
        self._command = self.scene.joint_positions()
        poses = self.scene.object_poses()
        for arm in self._arms:
            pose = poses[arm.task.target_object]
            arm.target_xyz = pose[:3].copy()
            arm.closing_dir = None
            arm.q_ik = None
            if arm.task.closing_axis is not None:
                arm.closing_dir = self._pick_closing_dir(arm, pose)

    def _pick_closing_dir(self, arm: _ArmState, pose: np.ndarray) -> np.ndarray:
        """The face normal of the object (x or y axis, either sign, horizontal) nearest to where the jaws' closing
        axis points at a grasp solved without the yaw task: the least wrist roll that closes on two faces."""
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, pose[3:7])
        rot = rot.reshape(3, 3)
        q = self._solve(arm, arm.target_xyz - np.array([0.0, 0.0, arm.task.grasp_depth]), self._command,
                        iterations=100)
        current = self._closing_axis_world(arm, q)
        candidates = []
        for col in (0, 1):
            axis = rot[:, col].copy()
            axis[2] = 0.0
            axis /= max(np.linalg.norm(axis), 1e-9)
            candidates += [axis, -axis]
        return max(candidates, key=lambda c: float(c @ current))

    def _closing_axis_world(self, arm: _ArmState, q: np.ndarray) -> np.ndarray:
        data, model = self._ik_data, self.scene.model
        data.qpos[:] = self.scene.data.qpos
        data.qpos[self.scene._qadr] = self.scene.robot_to_qpos(q)
        mujoco.mj_kinematics(model, data)
        site = model.site(arm.task.tcp_site).id
        return data.site_xmat[site].reshape(3, 3) @ np.asarray(arm.task.closing_axis, float)

    @property
    def phase(self) -> str:
        return self._phase_and_time()[0]

    def _phase_and_time(self) -> tuple[str, float]:
        """The current phase and how long it has run."""
        t = self._t
        for name in PHASES:
            if t < PHASE_S[name]:
                return name, t
            t -= PHASE_S[name]
        return "hold", t

    def _goal(self, arm: _ArmState, phase: str, t_phase: float) -> tuple[np.ndarray, float]:
        obj = arm.target_xyz
        assert obj is not None, "call reset() first"
        grasp = obj - np.array([0.0, 0.0, arm.task.grasp_depth])
        hover = grasp + np.array([0.0, 0.0, HOVER_M + arm.task.grasp_depth])
        lifted = grasp + np.array([0.0, 0.0, LIFT_M])
        lower, upper = self.scene.embodiment.lower[arm.gripper_idx], self.scene.embodiment.upper[arm.gripper_idx]
        open_ = upper if arm.task.gripper_open is None else arm.task.gripper_open
        closed = lower
        if phase == "hover":
            return hover, open_
        if phase == "descend":
            return hover + (grasp - hover) * min(1.0, t_phase / RAMP_S["descend"]), open_
        if phase == "close":
            return grasp, closed
        if phase == "lift":
            return grasp + (lifted - grasp) * min(1.0, t_phase / RAMP_S["lift"]), closed
        return lifted, closed

    def _solve(self, arm: _ArmState, goal_xyz: np.ndarray, seed: np.ndarray, iterations: int = 60) -> np.ndarray:
        """Joint positions (robot units, embodiment order) putting the tcp at ``goal_xyz``, by damped least squares
        from ``seed``. Orientation (approach axis down, jaw yaw onto ``closing_dir``) is a secondary task solved in
        the null space of the position task: where the wrist cannot point straight down (an SO arm at the far end
        of its reach) the approach tilts instead of the jaws missing the object."""
        scene, data, model = self.scene, self._ik_data, self.scene.model
        q = seed.copy()
        site = model.site(arm.task.tcp_site).id
        dofs = scene._vadr[arm.joint_idx]
        gains = scene._q_gain[arm.joint_idx]
        jacp = np.zeros((3, model.nv))
        jacr = np.zeros((3, model.nv))
        lo, hi = scene.embodiment.lower[arm.joint_idx], scene.embodiment.upper[arm.joint_idx]
        axis = np.asarray(arm.task.approach_axis, float)
        for _ in range(iterations):
            data.qpos[:] = scene.data.qpos
            data.qpos[scene._qadr] = scene.robot_to_qpos(q)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            err = goal_xyz - data.site_xpos[site]
            mujoco.mj_jacSite(model, data, jacp, jacr, site)
            xmat = data.site_xmat[site].reshape(3, 3)
            orient_rows, orient_errs = [], []
            if np.any(axis):
                # rotate the approach axis onto -z (no component about the vertical)
                orient_rows.append(jacr[:, dofs] * gains)
                orient_errs.append(np.cross(xmat @ axis, np.array([0.0, 0.0, -1.0])))
            if arm.closing_dir is not None and arm.task.closing_axis is not None:
                # turn the jaws about the vertical until they close along the chosen face normal
                closing = xmat @ np.asarray(arm.task.closing_axis, float)
                orient_rows.append(jacr[2:3, dofs] * gains)
                orient_errs.append(np.array([float(np.cross(closing, arm.closing_dir)[2])]))
            free = np.ones(len(dofs))
            for _attempt in range(len(dofs)):
                dq = self._prioritised_step(jacp[:, dofs] * gains * free, err,
                                            [r * free for r in orient_rows], orient_errs)
                # a joint at a limit that the step pushes further out is frozen and the rest re-solved: clipping
                # it instead would stall the solve with the error unchanged
                q_arm = q[arm.joint_idx]
                blocked = ((q_arm <= lo + 1e-6) & (dq < 0)) | ((q_arm >= hi - 1e-6) & (dq > 0))
                if not np.any(blocked & (free > 0)):
                    break
                free[blocked] = 0.0
            step = np.clip(dq, -0.3, 0.3)  # small steps: the linearisation holds and the limits clip gently
            moved = np.clip(q_arm + step, lo, hi) - q_arm
            q[arm.joint_idx] = q_arm + moved
            # done when the joints stop moving (a step the limits swallow counts as none): where the wrist sits at
            # a limit the tasks settle a millimetre apart and more iterations change nothing (the solve used to
            # run all of them every step there, waiting for the position error to drop under 1 mm)
            if np.max(np.abs(moved)) < 1e-4:
                break
        return q

    @staticmethod
    def _prioritised_step(jp: np.ndarray, err: np.ndarray, orient_rows: list[np.ndarray],
                          orient_errs: list[np.ndarray]) -> np.ndarray:
        """One damped least-squares step for the position task, plus the orientation tasks in its null space."""
        jp_pinv = jp.T @ np.linalg.inv(jp @ jp.T + 1e-4 * np.eye(3))
        dq = jp_pinv @ err
        if orient_rows:
            null = np.eye(jp.shape[1]) - jp_pinv @ jp
            jo_full = np.vstack(orient_rows)
            jo, eo = jo_full @ null, np.concatenate(orient_errs) - jo_full @ dq
            dq = dq + null @ (jo.T @ np.linalg.solve(jo @ jo.T + 1e-3 * np.eye(len(eo)), eo))
        return dq

    def act(self) -> np.ndarray:
        """The next joint-position action (robot units, embodiment order)."""
        phase, t_phase = self._phase_and_time()
        target = self._command.copy()
        for arm in self._arms:
            goal, grip = self._goal(arm, phase, t_phase)
            # warm start: the goal moves little between steps, so the last solution is a few iterations from the
            # next one (starting from the rate-limited command, which lags it, took all of them every step)
            seed = target.copy()
            if arm.q_ik is not None:
                seed[arm.joint_idx] = arm.q_ik
            target = self._solve(arm, goal, seed)
            arm.q_ik = target[arm.joint_idx].copy()
            target[arm.gripper_idx] = grip
        step = SPEED_FRACTION * self.scene.embodiment.max_velocity * self.control_dt
        self._command = self._command + np.clip(target - self._command, -step, step)
        self._t += self.control_dt
        return self._command.copy()


@dataclass(frozen=True)
class PickOutcome:
    """How one arm's pick went: ``lift_m``, how far its object rose by the end; ``held_m``, the largest
    tcp-object distance over the hold (the object still in the jaws: a few mm to a cm)."""

    target_object: str
    lift_m: float
    held_m: float

    @property
    def success(self) -> bool:
        return self.lift_m > SUCCESS_LIFT_M and self.held_m < SUCCESS_HELD_M


def run_pick(scene: SimScene, expert: ScriptedExpert, seed: int, hold_s: float = 1.0,
             on_step: Callable[[SimScene], None] | None = None) -> list[PickOutcome]:
    """Reset ``scene`` with ``seed``, run ``expert`` through its pick and ``hold_s`` of hold (physics only, no
    rendering) and say, per arm, whether its object came up and stayed in the jaws. ``on_step`` sees the scene
    after every control step (recording, checks)."""
    scene.reset(seed=seed)
    expert.reset()
    start = {a.target_object: float(scene.object_poses()[a.target_object][2]) for a in scene.arms}
    held = dict.fromkeys(start, 0.0)
    steps = round((LIFT_END_S + hold_s) / expert.control_dt)
    for k in range(steps):
        scene.set_command(expert.act())
        scene.step(expert.control_dt)
        if on_step is not None:
            on_step(scene)
        if (k + 1) * expert.control_dt >= LIFT_END_S - 1e-9:
            poses = scene.object_poses()
            for arm in scene.arms:
                gap = float(np.linalg.norm(scene.site_pose(arm.tcp_site)[0] - poses[arm.target_object][:3]))
                held[arm.target_object] = max(held[arm.target_object], gap)
    poses = scene.object_poses()
    return [PickOutcome(name, float(poses[name][2]) - z0, held[name]) for name, z0 in start.items()]
