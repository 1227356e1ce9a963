"""Franka Panda (DROID) scene: MuJoCo Menagerie's Panda as gym-hil ships it, an external and a wrist camera.

Joint mapping: the seven arm joints map 1:1 (radians, same zero and limits as Franka's). The model's hand is a
Robotiq 2F-85 (what gym-hil ships; DROID's robots carry the same gripper), driven through its tendon actuator
with ctrl 0 (open) .. 255 (closed). Our gripper is the finger width 0..0.08 m (open = 0.08), so
``ctrl = 255 * (1 - width / 0.08)`` and the driver joint (0 open .. 0.8 rad closed) reads back
``width = 0.08 * (1 - q / 0.8)``. The arm's torque motors are replaced by position actuators (Menagerie's
Panda gains) with the embodiment's limits as ctrlrange.
"""

from __future__ import annotations

import mujoco

from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.sim.assets import model_path
from molmoact2_ros.sim.scenes import (
    ArmTask,
    JointBinding,
    ObjectSpec,
    SceneLayout,
    add_camera,
    add_environment,
    add_object,
    add_position_actuator,
    gravity_compensate,
    set_offscreen_size,
)

PANDA_KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)
PANDA_FORCE = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
MAX_WIDTH_M = 0.08
DRIVER_CLOSED_RAD = 0.8


def build_franka(embodiment: EmbodimentConfig) -> SceneLayout:
    """The Franka DROID scene."""
    spec = mujoco.MjSpec.from_file(str(model_path("franka_droid")))
    spec.option.timestep = 0.002
    for act in list(spec.actuators):
        if act.name != "fingers_actuator":
            spec.delete(act)
    for sensor in list(spec.sensors):
        spec.delete(sensor)
    limits = {j.name: j.position_limits for j in embodiment.joints}
    bindings = [JointBinding(f"panda_joint{i}", f"joint{i}", f"panda_joint{i}") for i in range(1, 8)]
    for b, kp, force in zip(bindings, PANDA_KP, PANDA_FORCE, strict=True):
        add_position_actuator(spec, b, limits[b.name], kp=kp, forcerange=(-force, force))
    fingers = spec.actuator("fingers_actuator")
    fingers.name = "panda_finger_width"
    fingers.ctrlrange = [0.0, 255.0]
    bindings.append(JointBinding("panda_finger_width", "right_driver_joint", "panda_finger_width",
                                 q_gain=-DRIVER_CLOSED_RAD / MAX_WIDTH_M, q_bias=DRIVER_CLOSED_RAD,
                                 ctrl_gain=-255.0 / MAX_WIDTH_M, ctrl_bias=255.0))
    gravity_compensate(spec.body("link0"))
    add_environment(spec, table_center=(0.45, 0.0), table_half=(0.5, 0.6))
    objects = [
        ObjectSpec("cube", "box", (0.025, 0.025, 0.025), (0.85, 0.15, 0.15, 1.0), (0.45, 0.6, -0.12, 0.12),
                   mass=0.08),
        ObjectSpec("block", "box", (0.04, 0.02, 0.02), (0.15, 0.35, 0.85, 1.0), (0.4, 0.65, 0.22, 0.32)),
        ObjectSpec("can", "cylinder", (0.03, 0.05), (0.2, 0.7, 0.25, 1.0), (0.4, 0.65, -0.32, -0.22)),
    ]
    for obj in objects:
        add_object(spec, obj)
    # DROID's external cameras sit beside and in front of the robot, looking across the table.
    add_camera(spec.worldbody, "external", eye=(0.95, 0.55, 0.55), target=(0.45, 0.0, 0.05), fovy=60.0)
    # gym-hil mounts the 2F-85 like the Franka hand, 45 deg off the flange, so at DROID's home (q7 = 0) the fingers
    # closed diagonally and the wrist view was turned 45 deg against the table. DROID's Robotiq adapter aligns the
    # fingers with the flange: at home they close across the table (world y) and the wrist camera, in front of the
    # hand with the hand's "away from the base" as image up, sees the table square, fingers at the bottom.
    attachment = spec.body("attachment")
    attachment.quat = [0.0, 0.0, 0.0, 1.0]
    # Wrist camera where Menagerie puts the hand camera (attachment frame, looking along the fingers).
    add_camera(attachment, "wrist", eye=(-0.07, 0.0, 0.0), target=(0.0, 0.0, 0.2), up=(-1.0, 0.0, 0.0), fovy=80.0)
    set_offscreen_size(spec, embodiment)
    arm = ArmTask(tcp_site="pinch", joints=tuple(f"panda_joint{i}" for i in range(1, 8)),
                  gripper="panda_finger_width", target_object="cube", approach_axis=(0.0, 0.0, 1.0),
                  closing_axis=(0.0, 1.0, 0.0))  # the 2F-85's pads face each other along the pinch site's y
    return SceneLayout(spec=spec, bindings=bindings, objects=objects, arms=[arm], min_object_separation=0.1)
