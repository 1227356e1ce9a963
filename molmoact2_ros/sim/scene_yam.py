"""YAM bimanual scene: dreamscale-i2rt's YAM station (two YAM v1 arms, linear_4310 grippers, D405 frames).

The station MJCF is kinematics only; this adds position actuators, gravity compensation, a table with objects,
lights, a floor and the three cameras. Cameras: ``top``, ``left`` and ``right`` sit at the station's
``top_camera`` / ``left_camera`` / ``right_camera`` optical frames (+z forward, OpenCV), turned 180 degrees
about x into MuJoCo's camera convention (-z forward, +y up).

Joint mapping: ``left_jointN``/``right_jointN`` (N = 1..6) map 1:1 (radians; the YAML limits are the MJCF
ranges; home = all zeros, the folded rest pose the arms are switched on in). Gripper 0 (closed) .. 1 (open)
maps onto the finger slide ``{side}_joint7``: 0 .. 0.04695 m (the second finger follows through the station's
equality constraint).
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
    add_environment,
    add_object,
    add_position_actuator,
    gravity_compensate,
    set_offscreen_size,
)

YAM_KP = 80.0  # DM4340/4310 motors, position mode at the i2rt default stiffness order of magnitude
YAM_FORCE = 10.0  # the MJCF's actuatorfrcrange
GRIPPER_STROKE_M = 0.04695
SIDES = ("left", "right")
CAMERA_BODIES = {"top": "top_camera", "left": "left_camera", "right": "right_camera"}
# Collision boxes of a fingertip in its body frame (``*_tip_left``; ``*_tip_right`` is the mirror image, x and y
# negated): (centre, half sizes), measured from the tip_left.stl vertices. MuJoCo collides a mesh through its
# convex hull, and the hull of this L-shaped finger (the carriage on the rail reaches the gripper's centre line)
# has a face sloping 22 degrees from the fingertip to the carriage: closing on a cube, that face met its edge and
# squeezed it out of the jaws, which then lifted nothing. The boxes follow the finger itself: the fingertip
# facet (the real contact face, inner face 47 mm from the tool centre when open, 2 cm along the approach axis,
# 2.4 cm across) and the blade behind it (6 mm further out). The carriage stays inside the gripper body's hull.
TIP_BOXES = (
    ((0.024, -0.0477, -0.0802), (0.012, 0.0032, 0.010)),  # facet
    ((0.024, -0.0578, -0.0551), (0.019, 0.0068, 0.0151)),  # blade
)
GRASP_DEPTH_M = 0.01  # the tcp 1 cm below the cube's centre puts the facet's middle on it, the tips 5 mm clear


def build_yam(embodiment: EmbodimentConfig) -> SceneLayout:
    """The YAM bimanual scene."""
    spec = mujoco.MjSpec.from_file(str(model_path("yam_bimanual")))
    spec.option.timestep = 0.002
    # Elliptic friction cones with a high impratio (MuJoCo's advice for grasping; the SO-101 scene does the same):
    # with the default pyramidal cones a held cube crept down through the pads, 5 mm in 3 s of hold.
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    limits = {j.name: j.position_limits for j in embodiment.joints}
    bindings: list[JointBinding] = []
    for side in SIDES:
        for i in range(1, 7):
            bindings.append(JointBinding(f"{side}_joint{i}", f"{side}_joint{i}", f"{side}_joint{i}"))
        bindings.append(JointBinding(f"{side}_gripper", f"{side}_joint7", f"{side}_gripper",
                                     q_gain=GRIPPER_STROKE_M, q_bias=0.0))
    for joint in spec.joints:
        joint.armature = 0.02
        joint.damping = [0.5, 0.0, 0.0]
    for b in bindings:
        kp = 400.0 if b.name.endswith("gripper") else YAM_KP  # a slide in metres needs a stiffer spring
        add_position_actuator(spec, b, limits[b.name], kp=kp, forcerange=(-YAM_FORCE, YAM_FORCE))
    for geom in spec.geoms:
        geom.friction = [1.5, 0.01, 0.001]
    for side in SIDES:
        for finger, sign in (("left", 1.0), ("right", -1.0)):
            body = spec.body(f"{side}_tip_{finger}")
            for geom in body.geoms:  # the mesh stays as the visual; the boxes collide (see TIP_BOXES)
                geom.contype, geom.conaffinity = 0, 0
            for (cx, cy, cz), half in TIP_BOXES:
                body.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, pos=[sign * cx, sign * cy, cz], size=list(half),
                              group=3, friction=[1.5, 0.01, 0.001])
    gravity_compensate(spec.body("left_base"))
    for side in SIDES:
        # The base is welded to the world, so MuJoCo's parent-child filter does not apply, and link1's mesh
        # touches the base's: without this exclude joint1 is locked.
        spec.add_exclude(bodyname1=f"{side}_base", bodyname2=f"{side}_link1")
    add_environment(spec, table_center=(0.35, -0.305), table_half=(0.45, 0.6))
    objects = [
        ObjectSpec("cube_left", "box", (0.02, 0.02, 0.02), (0.85, 0.15, 0.15, 1.0), (0.32, 0.42, -0.05, 0.05),
                   mass=0.05),
        ObjectSpec("cube_right", "box", (0.02, 0.02, 0.02), (0.15, 0.35, 0.85, 1.0), (0.32, 0.42, -0.66, -0.56),
                   mass=0.05),
        ObjectSpec("can", "cylinder", (0.03, 0.05), (0.2, 0.7, 0.25, 1.0), (0.35, 0.5, -0.38, -0.23)),
    ]
    for obj in objects:
        add_object(spec, obj)
    for camera, body in CAMERA_BODIES.items():
        # optical frame (+z forward, +y down) -> MuJoCo camera (-z forward, +y up): 180 degrees about x.
        spec.body(body).add_camera(name=camera, quat=[0.0, 1.0, 0.0, 0.0], fovy=58.0 if camera == "top" else 75.0)
    for side in SIDES:
        spec.site(f"tcp_{side}").rgba = [0.0, 0.0, 0.0, 0.0]  # a marker for the expert, not for the cameras
    set_offscreen_size(spec, embodiment)
    arms = [ArmTask(tcp_site=f"tcp_{side}", joints=tuple(f"{side}_joint{i}" for i in range(1, 7)),
                    gripper=f"{side}_gripper", target_object=f"cube_{side}", approach_axis=(0.0, 0.0, 1.0),
                    grasp_depth=GRASP_DEPTH_M, closing_axis=(0.0, 1.0, 0.0))  # the fingers slide along tcp y
            for side in SIDES]
    return SceneLayout(spec=spec, bindings=bindings, objects=objects, arms=arms, min_object_separation=0.1)
