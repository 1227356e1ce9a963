"""MuJoCo scenes of the embodiments, built with ``mujoco.MjSpec`` from the model files their PyPI packages ship.

``build_scene(embodiment)`` returns a ``SimScene``: the robot (position actuators whose ``ctrlrange`` is the
embodiment's joint limits), a table with a few graspable objects, lights, a floor and the embodiment's cameras
under their configured names and resolutions. ``SimScene`` speaks the embodiment's *robot* space: joint order,
names and units of ``config/embodiments/<name>.yaml``. Each per-embodiment builder (``scene_so``,
``scene_franka``, ``scene_yam``) says how its model's joints map onto them (``JointBinding``: model joint
= ``q_gain * robot + q_bias``).

Bodies of the robot get gravity compensation: real position servos hold their pose against gravity with an
integral term, which a plain MuJoCo position actuator lacks, so without it the arm would sag by
torque / kp and never track a command to a few hundredths of a radian.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.sim.rendering import select_gl_backend

select_gl_backend()  # before mujoco is imported: it reads MUJOCO_GL once

import mujoco  # noqa: E402

if TYPE_CHECKING:
    from molmoact2_ros.core.embodiment import EmbodimentConfig
    from molmoact2_ros.sim.rendering import OffscreenRenderer

TABLE_RGBA = (0.62, 0.5, 0.38, 1.0)
FLOOR_RGBA = (0.35, 0.37, 0.4, 1.0)
NEAR_PLANE_M = 0.005
SETTLE_S = 0.2  # reset lets objects and gripper linkages come to rest before time restarts at 0


class SimError(ConfigError):
    """A simulation scene was asked for something it does not have (camera, joint vector, ...)."""


@dataclass(frozen=True)
class JointBinding:
    """One embodiment joint and the model joint and actuator that realise it.

    ``model_q = q_gain * robot + q_bias`` (readback) and ``ctrl = ctrl_gain * robot + ctrl_bias`` (command);
    the command map defaults to the readback map (a position actuator on the joint itself).
    """

    name: str
    joint: str
    actuator: str
    q_gain: float = 1.0
    q_bias: float = 0.0
    ctrl_gain: float | None = None
    ctrl_bias: float | None = None

    @property
    def command_map(self) -> tuple[float, float]:
        return (self.q_gain if self.ctrl_gain is None else self.ctrl_gain,
                self.q_bias if self.ctrl_bias is None else self.ctrl_bias)


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object on the table; its x/y (and yaw) are drawn uniformly from ``region`` on reset."""

    name: str
    shape: str  # "box" | "cylinder"
    size: tuple[float, ...]  # MuJoCo geom size (half extents)
    rgba: tuple[float, float, float, float]
    region: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max (world, metres)
    mass: float = 0.05

    @property
    def rest_height(self) -> float:
        return self.size[2] if self.shape == "box" else self.size[1]


@dataclass(frozen=True)
class ArmTask:
    """What the scripted expert needs of one arm: its tool-centre site, its joints, its gripper and its object."""

    tcp_site: str
    joints: tuple[str, ...]  # embodiment names of the arm's revolute joints
    gripper: str  # embodiment name of the arm's gripper
    target_object: str
    approach_axis: tuple[float, float, float]  # tcp-site-frame axis that should point down when grasping
    grasp_depth: float = 0.0  # how far below the object's centre the tcp goes (m; negative: above)
    # tcp-site-frame axis along which the jaws close; when set, the expert turns it onto a face normal of a box
    # object (two small pads on a cube's edges let it spin out; on two faces they hold it)
    closing_axis: tuple[float, float, float] | None = None
    # robot-space gripper value the expert opens to before a grasp; None: fully open. An SO arm's moving jaw swings
    # out on an arc ~9 cm wide when fully open, and closing it swept a distractor into the arm (SO-100, seed 46)
    gripper_open: float | None = None


@dataclass
class SceneLayout:
    """What an embodiment's builder hands to ``SimScene``."""

    spec: mujoco.MjSpec | None  # None for a layout read back from the compiled-model cache
    bindings: list[JointBinding]
    objects: list[ObjectSpec]
    arms: list[ArmTask]
    min_object_separation: float = 0.07
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Everything but the spec, JSON-ready (the compiled-model cache stores it beside the .mjb)."""
        return {"bindings": [asdict(b) for b in self.bindings], "objects": [asdict(o) for o in self.objects],
                "arms": [asdict(a) for a in self.arms], "min_object_separation": self.min_object_separation,
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict) -> SceneLayout:
        """The layout ``to_dict`` wrote, without a spec."""
        def tuples(d: dict) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        return cls(spec=None, bindings=[JointBinding(**b) for b in data["bindings"]],
                   objects=[ObjectSpec(**tuples(o)) for o in data["objects"]],
                   arms=[ArmTask(**tuples(a)) for a in data["arms"]],
                   min_object_separation=data["min_object_separation"], notes=list(data["notes"]))


# ---- geometry helpers used by every builder ----------------------------------------------------------------------

def look_at_quat(eye: np.ndarray | tuple, target: np.ndarray | tuple,
                 up: np.ndarray | tuple = (0.0, 0.0, 1.0)) -> np.ndarray:
    """The (w, x, y, z) orientation of a MuJoCo camera at ``eye`` looking at ``target`` (camera -z forward,
    +y up), all in the frame of the camera's parent body."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, float))
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("camera up vector is parallel to its viewing direction")
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    mat = np.column_stack([right, cam_up, -forward])
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.flatten())
    return quat


def add_environment(spec: mujoco.MjSpec, *, table_center: tuple[float, float], table_half: tuple[float, float],
                    table_top_z: float = 0.0, table_thickness: float = 0.03) -> None:
    """Floor, a table whose top is at ``table_top_z``, lights and a headlight; no skybox (rendering cost)."""
    world = spec.worldbody
    floor_z = table_top_z - 0.75
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.05], pos=[0, 0, floor_z],
                   rgba=FLOOR_RGBA)
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX,
                   size=[table_half[0], table_half[1], table_thickness / 2],
                   pos=[table_center[0], table_center[1], table_top_z - table_thickness / 2],
                   rgba=TABLE_RGBA, friction=[1.0, 0.005, 0.0001])
    for i, (x, y) in enumerate(((1.0, 1.0), (1.0, -1.0), (-1.0, 0.0))):
        world.add_light(name=f"light{i}", pos=[table_center[0] + x, table_center[1] + y, table_top_z + 2.0],
                        dir=[-x, -y, -2.0], diffuse=[0.45, 0.45, 0.45], specular=[0.1, 0.1, 0.1],
                        castshadow=False)
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.3, 0.3, 0.3]


def add_object(spec: mujoco.MjSpec, obj: ObjectSpec, table_top_z: float = 0.0) -> None:
    """A free body (a freejoint named like the object) resting on the table."""
    body = spec.worldbody.add_body(name=obj.name, pos=[np.mean(obj.region[:2]), np.mean(obj.region[2:]),
                                                        table_top_z + obj.rest_height])
    body.add_freejoint(name=obj.name)
    geom_type = mujoco.mjtGeom.mjGEOM_BOX if obj.shape == "box" else mujoco.mjtGeom.mjGEOM_CYLINDER
    body.add_geom(name=obj.name, type=geom_type, size=list(obj.size) + [0.0] * (3 - len(obj.size)),
                  rgba=list(obj.rgba), mass=obj.mass, friction=[1.5, 0.01, 0.001], condim=4)


def add_camera(parent: mujoco.MjsBody, name: str, eye, target, up=(0.0, 0.0, 1.0), fovy: float = 60.0) -> None:
    """A fixed camera on ``parent`` (world or a robot link) at ``eye`` looking at ``target`` (parent frame)."""
    parent.add_camera(name=name, pos=list(map(float, eye)), quat=list(look_at_quat(eye, target, up)), fovy=fovy)


def set_offscreen_size(spec: mujoco.MjSpec, embodiment: EmbodimentConfig) -> None:
    """The offscreen framebuffer must hold the largest configured camera image."""
    spec.visual.global_.offwidth = max(c.width for c in embodiment.cameras)
    spec.visual.global_.offheight = max(c.height for c in embodiment.cameras)
    spec.visual.quality.offsamples = 0  # no multisampling: on a software rasteriser it multiplies the cost


def add_position_actuator(spec: mujoco.MjSpec, binding: JointBinding, limits: tuple[float, float], *, kp: float,
                          dampratio: float = 1.0, forcerange: tuple[float, float] | None = None) -> None:
    """A position actuator on ``binding.joint`` whose ctrlrange is the embodiment's limits in model units."""
    gain, bias = binding.command_map
    lo, hi = sorted((gain * limits[0] + bias, gain * limits[1] + bias))
    act = spec.add_actuator(name=binding.actuator, target=binding.joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=kp, dampratio=dampratio)
    act.ctrlrange = [lo, hi]
    act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    if forcerange is not None:
        act.forcerange = list(forcerange)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE


def gravity_compensate(body: mujoco.MjsBody) -> None:
    """Gravity compensation for ``body`` and every body below it (see the module docstring)."""
    body.gravcomp = 1.0
    for child in body.bodies:
        gravity_compensate(child)


# ---- the scene --------------------------------------------------------------------------------------------------

class SimScene:
    """A built scene: physics, joint mapping to the embodiment's robot space, objects and cameras."""

    def __init__(self, embodiment: EmbodimentConfig, layout: SceneLayout, *, render: bool = True,
                 model: mujoco.MjModel | None = None) -> None:
        self.embodiment = embodiment
        self.layout = layout
        if model is None:
            if layout.spec is None:
                raise SimError(f"the {embodiment.name} scene layout has neither a spec nor a compiled model")
            try:
                model = layout.spec.compile()
            except ValueError as exc:  # MjSpec reports compile errors as ValueError
                raise SimError(f"the {embodiment.name} scene does not compile: {exc}") from exc
        self.model: mujoco.MjModel = model
        # MuJoCo's near plane is a fraction of the model's extent (a few cm with a 3 m floor): it clipped the
        # jaws out of the wrist cameras and cut objects close to them. 5 mm, like a real camera's close focus.
        self.model.vis.map.znear = NEAR_PLANE_M / max(float(self.model.stat.extent), 1e-6)
        self.data: mujoco.MjData = mujoco.MjData(self.model)
        self.physics_dt: float = float(self.model.opt.timestep)
        by_name = {b.name: b for b in layout.bindings}
        missing = [n for n in embodiment.joint_names if n not in by_name]
        if missing:
            raise SimError(f"the {embodiment.name} scene has no model joint for {missing}")
        ordered = [by_name[n] for n in embodiment.joint_names]
        self._bindings = ordered
        self._qadr = np.array([self.model.joint(b.joint).qposadr[0] for b in ordered])
        self._vadr = np.array([self.model.joint(b.joint).dofadr[0] for b in ordered])
        self._act = np.array([self.model.actuator(b.actuator).id for b in ordered])
        self._q_gain = np.array([b.q_gain for b in ordered])
        self._q_bias = np.array([b.q_bias for b in ordered])
        self._c_gain = np.array([b.command_map[0] for b in ordered])
        self._c_bias = np.array([b.command_map[1] for b in ordered])
        self._lower, self._upper = embodiment.lower, embodiment.upper
        self._objects = {o.name: o for o in layout.objects}
        self._obj_qadr = {o.name: int(self.model.joint(o.name).qposadr[0]) for o in layout.objects}
        self._cameras: dict[str, tuple[int, int, int]] = {}
        for cam in embodiment.cameras:
            cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam.name)
            if cam_id < 0:
                raise SimError(f"the {embodiment.name} scene has no camera {cam.name!r}")
            self._cameras[cam.name] = (cam_id, cam.width, cam.height)
        self.from_cache = False  # build_scene sets it when the compiled model came from the cache
        self._renderer: OffscreenRenderer | None = None
        if render:
            from molmoact2_ros.sim.rendering import OffscreenRenderer

            self._renderer = OffscreenRenderer(self.model, max(c.width for c in embodiment.cameras),
                                               max(c.height for c in embodiment.cameras))
        self.reset()

    # ---- robot-space <-> model-space ----
    def robot_to_qpos(self, q: np.ndarray) -> np.ndarray:
        """Model joint angles for robot-space ``q`` (embodiment order)."""
        return self._q_gain * np.asarray(q, float) + self._q_bias

    def _check_vector(self, q: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(q, dtype=np.float64).reshape(-1)
        if arr.shape != (self.embodiment.dof,):
            raise SimError(f"{what} needs {self.embodiment.dof} values in the order {self.embodiment.joint_names}, "
                           f"got shape {np.shape(q)}")
        if not np.all(np.isfinite(arr)):
            raise SimError(f"{what} has a non-finite value: {arr.tolist()}")
        return arr

    # ---- public API ----
    def reset(self, seed: int | None = None) -> None:
        """Arm at the embodiment's home, objects at random poses drawn from ``seed``; time restarts at 0."""
        mujoco.mj_resetData(self.model, self.data)
        home = self.embodiment.home
        self.data.qpos[self._qadr] = self.robot_to_qpos(home)
        self.set_command(home)
        self._place_objects(np.random.default_rng(seed))
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, round(SETTLE_S / self.physics_dt))
        self.data.time = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _place_objects(self, rng: np.random.Generator) -> None:
        placed: list[np.ndarray] = []
        for obj in self.layout.objects:
            for _ in range(200):
                xy = np.array([rng.uniform(obj.region[0], obj.region[1]), rng.uniform(obj.region[2], obj.region[3])])
                if all(np.linalg.norm(xy - p) >= self.layout.min_object_separation for p in placed):
                    break
            placed.append(xy)
            yaw = rng.uniform(-math.pi / 4, math.pi / 4) if obj.shape == "box" else 0.0
            adr = self._obj_qadr[obj.name]
            z = self.model.body(obj.name).pos[2]
            self.data.qpos[adr:adr + 7] = [xy[0], xy[1], z, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]

    def set_command(self, q: np.ndarray) -> None:
        """Joint position targets in robot units, embodiment order; clipped to the joint limits."""
        arr = np.clip(self._check_vector(q, "set_command"), self._lower, self._upper)
        self.data.ctrl[self._act] = self._c_gain * arr + self._c_bias

    def commanded_positions(self) -> np.ndarray:
        """The current targets, robot units (what ``set_command`` last set, after clipping)."""
        return (self.data.ctrl[self._act] - self._c_bias) / self._c_gain

    def step(self, duration_s: float) -> None:
        """Advance physics by ``duration_s`` rounded to whole physics steps (at least one)."""
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise SimError(f"step duration must be a positive number of seconds, got {duration_s}")
        mujoco.mj_step(self.model, self.data, max(1, round(duration_s / self.physics_dt)))

    def joint_positions(self) -> np.ndarray:
        """Measured joint positions, robot units, embodiment order."""
        return (self.data.qpos[self._qadr] - self._q_bias) / self._q_gain

    def joint_velocities(self) -> np.ndarray:
        """Measured joint velocities, robot units per second, embodiment order."""
        return self.data.qvel[self._vadr] / self._q_gain

    @property
    def camera_names(self) -> list[str]:
        return list(self._cameras)

    def render(self, camera: str) -> np.ndarray:
        """An HxWx3 uint8 image of ``camera`` at its configured width/height."""
        if camera not in self._cameras:
            raise SimError(f"no camera {camera!r} in the {self.embodiment.name} scene; cameras: {self.camera_names}")
        if self._renderer is None:
            raise SimError("this scene was built with render=False; build it with render=True to render cameras")
        cam_id, width, height = self._cameras[camera]
        return self._renderer.render(self.data, cam_id, width, height)

    def render_size(self, camera: str, width: int, height: int) -> np.ndarray:
        """Like ``render`` but at ``width`` x ``height`` (at most the configured size): fast tests, thumbnails."""
        if camera not in self._cameras or self._renderer is None:
            return self.render(camera)  # raises the right error
        return self._renderer.render(self.data, self._cameras[camera][0], width, height)

    def object_poses(self) -> dict[str, np.ndarray]:
        """Object name -> (7,) world position (m) and quaternion (w, x, y, z)."""
        return {name: self.data.qpos[adr:adr + 7].copy() for name, adr in self._obj_qadr.items()}

    def site_pose(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """World position and 3x3 rotation of a site (the tool centre of an arm, ...)."""
        s = self.data.site(site)
        return s.xpos.copy(), s.xmat.reshape(3, 3).copy()

    @property
    def arms(self) -> list[ArmTask]:
        return list(self.layout.arms)

    @property
    def sim_time_s(self) -> float:
        return float(self.data.time)

    def close(self) -> None:
        """Release the renderer's GL context (the scene can still step)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# embodiment name -> (builder module, function); imported on use so one missing model package only breaks its scene.
BUILDERS: dict[str, tuple[str, str]] = {
    "so101": ("molmoact2_ros.sim.scene_so", "build_so101"),
    "so100": ("molmoact2_ros.sim.scene_so", "build_so100"),
    "franka_droid": ("molmoact2_ros.sim.scene_franka", "build_franka"),
    "yam_bimanual": ("molmoact2_ros.sim.scene_yam", "build_yam"),
}


def _builder(name: str) -> Callable[[EmbodimentConfig], SceneLayout]:
    import importlib

    if name not in BUILDERS:
        raise SimError(f"no simulation scene for embodiment {name!r}; scenes exist for {sorted(BUILDERS)}")
    module, func = BUILDERS[name]
    return getattr(importlib.import_module(module), func)


def build_scene(embodiment: EmbodimentConfig, *, render: bool = True, cache: bool = True) -> SimScene:
    """The simulation scene of ``embodiment`` (by its name: so101, so100, franka_droid, yam_bimanual).

    With ``cache`` the compiled model comes from (or goes to) the compiled-model cache of ``sim.assets``
    (``$MOLMOACT2_ROS_CACHE``; see there why); ``scene.from_cache`` says which happened."""
    import sys
    from pathlib import Path

    from molmoact2_ros.sim import assets

    build = _builder(embodiment.name)
    key = None
    if cache:
        sources = [Path(__file__), Path(assets.__file__), Path(sys.modules[build.__module__].__file__)]
        key = assets.scene_cache_key(embodiment.name, embodiment.model_dump_json(), sources)
        hit = assets.load_cached_model(key)
        if hit is not None:
            model, layout_dict = hit
            scene = SimScene(embodiment, SceneLayout.from_dict(layout_dict), render=render, model=model)
            scene.from_cache = True
            return scene
    layout = build(embodiment)
    scene = SimScene(embodiment, layout, render=render)
    if key is not None:
        assets.save_cached_model(key, scene.model, layout.to_dict())
    return scene
