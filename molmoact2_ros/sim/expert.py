"""Scripted experts: reach above the arm's object, descend, close the gripper, lift; one per arm of a scene.

Joint targets come from damped-least-squares inverse kinematics on the scene's own model (mujoco's site
Jacobians), solved on a private ``MjData`` so the simulation is not disturbed. Each control step moves the
command at most a fraction of each joint's velocity limit toward the IK solution, so actions stay smooth and
inside the limits. Deterministic: the same scene state gives the same actions (no randomness is drawn).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from molmoact2_ros.sim.scenes import ArmTask, SimScene

HOVER_M = 0.08  # pre-grasp height above the object
LIFT_M = 0.12  # how far the object is lifted
PHASES = ("hover", "descend", "close", "lift", "hold")
PHASE_S = {"hover": 2.0, "descend": 1.5, "close": 0.8, "lift": 1.5, "hold": 1e9}
SPEED_FRACTION = 0.5


@dataclass
class _ArmState:
    task: ArmTask
    joint_idx: np.ndarray  # embodiment indices of the arm's joints
    gripper_idx: int
    target_xyz: np.ndarray | None = None


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
            arm.target_xyz = poses[arm.task.target_object][:3].copy()

    @property
    def phase(self) -> str:
        t = self._t
        for name in PHASES:
            if t < PHASE_S[name]:
                return name
            t -= PHASE_S[name]
        return "hold"

    def _goal(self, arm: _ArmState, phase: str) -> tuple[np.ndarray, float]:
        obj = arm.target_xyz
        assert obj is not None, "call reset() first"
        grasp = obj - np.array([0.0, 0.0, arm.task.grasp_depth])
        lower, upper = self.scene.embodiment.lower[arm.gripper_idx], self.scene.embodiment.upper[arm.gripper_idx]
        open_, closed = upper, lower
        if phase == "hover":
            return obj + np.array([0.0, 0.0, HOVER_M]), open_
        if phase == "descend":
            return grasp, open_
        if phase == "close":
            return grasp, closed
        return grasp + np.array([0.0, 0.0, LIFT_M]), closed

    def _solve(self, arm: _ArmState, goal_xyz: np.ndarray, seed: np.ndarray, iterations: int = 60) -> np.ndarray:
        """Joint positions (robot units, embodiment order) putting the tcp at ``goal_xyz`` with its approach axis
        pointing down, by damped least squares from ``seed``."""
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
            rows, errs = [jacp[:, dofs] * gains], [err]
            if np.any(axis):
                # keep the approach axis pointing down: rotate it onto -z (weighted below the position task)
                current = data.site_xmat[site].reshape(3, 3) @ axis
                rot_err = np.cross(current, np.array([0.0, 0.0, -1.0]))
                rows.append(0.3 * jacr[:, dofs] * gains)
                errs.append(0.3 * rot_err)
            jac, e = np.vstack(rows), np.concatenate(errs)
            dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(len(e)), e)
            q[arm.joint_idx] = np.clip(q[arm.joint_idx] + dq, lo, hi)
            if np.linalg.norm(err) < 1e-3:
                break
        return q

    def act(self) -> np.ndarray:
        """The next joint-position action (robot units, embodiment order)."""
        phase = self.phase
        target = self._command.copy()
        for arm in self._arms:
            goal, grip = self._goal(arm, phase)
            target = self._solve(arm, goal, target)
            target[arm.gripper_idx] = grip
        step = SPEED_FRACTION * self.scene.embodiment.max_velocity * self.control_dt
        self._command = self._command + np.clip(target - self._command, -step, step)
        self._t += self.control_dt
        return self._command.copy()
