"""Simulation node: MuJoCo physics in real time, its cameras and joint states on the robot's topics.

``molmoact2_sim`` owns the physics and the rendering in its own process, so the perception-free graph
(policy, driver) runs unchanged against it:

- **physics**: a thread steps the scene (``molmoact2_ros.sim.scenes.build_scene`` for the embodiment, or any
  gymnasium environment through ``molmoact2_ros.sim.gym_bridge`` with ``gym_config``) to follow the wall
  clock (``real_time_factor``). A host too slow to keep up runs the physics slower instead of in bursts
  (``lag_events`` counts it), so stamps stay on the wall clock and every node keeps its own clock: no
  ``/clock`` and no ``use_sim_time`` needed.
- **joint states**: ``state_topic`` (default ``/sim/joint_states``) sensor_msgs/JointState with the
  embodiment's joint names, positions and velocities in robot units, once per driver tick. Not
  ``/joint_states`` itself: the driver reads the sim like a robot and republishes ``/joint_states``
  stamped with its tick, which is what the policy and the demo's monitor read (set
  ``state_topic:=/joint_states`` to feed a driver that does not republish).
- **commands**: ``command_topic`` (default ``/sim/joint_commands``) std_msgs/Float64MultiArray, one
  position per joint in the embodiment's order (robot units): what the driver's ``mujoco`` backend (or a
  ``ros_topic`` backend pointed here) writes every tick. A wrong length or a non-finite value is refused
  (counted, logged once a second); the arm keeps its last target.
- **cameras**: a render thread renders every camera of the embodiment at the camera fps from a copy of
  the physics state (the physics never waits for a frame) and hands the image to a
  :class:`~molmoact2_ros.backends.cameras.sim.SimCamera`; the perception node's own stream and health
  code (``backends/cameras/stream_group.py``) publishes it on ``/cameras/<name>/image_raw`` +
  ``camera_info``, stamped with the time of the state it shows, so the policy receives frames exactly as
  from perception. Freeze detection is off for these sources: a still scene legitimately renders
  identical pixels.

``/diagnostics`` (status ``molmoact2_sim``): the cameras' values (as perception reports them) plus
``sim_time_s``, ``real_time_factor`` (measured), ``physics_steps``, ``lag_events``, ``commands_received``,
``commands_refused``, ``render_ms``, and each joint's position.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Protocol

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from molmoact2_ros.backends.cameras.base import CameraOptions
from molmoact2_ros.backends.cameras.sim import SimCamera
from molmoact2_ros.backends.cameras.stream import StreamSettings
from molmoact2_ros.backends.cameras.stream_group import CameraStreamGroup
from molmoact2_ros.backends.hardware.ros_topic import COMMAND_QOS
from molmoact2_ros.core.embodiment import CameraConfig, EmbodimentConfig, load_embodiment
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.nodes.diagnostics import ERROR, WARN, DiagnosticsPublisher
from molmoact2_ros.nodes.param_check import check_parameter_overrides
from molmoact2_ros.nodes.qos import JOINT_STATE_QOS
from molmoact2_ros.nodes.runtime_env import spin_node

NODE_NAME = "molmoact2_sim"
DEFAULT_COMMAND_TOPIC = "/sim/joint_commands"
DEFAULT_STATE_TOPIC = "/sim/joint_states"
MAX_LAG_S = 0.25  # physics behind the wall clock by more than this: give the time up instead of bursting
JOIN_TIMEOUT_S = 3.0
# Software rendering on a CPU takes up to a second per frame on a busy host: a frame this old is still
# "live" for the health report (the policy gets the same allowance, bringup.SIM_CAMERA_MAX_AGE_S).
SIM_MAX_AGE_S = 3.0


class SimSource(Protocol):
    """What the node drives: a ``SimScene`` or a ``GymBridge`` (both implement these)."""

    physics_dt: float

    def set_command(self, q: np.ndarray) -> None: ...
    def step(self, duration_s: float) -> None: ...
    def joint_positions(self) -> np.ndarray: ...
    def joint_velocities(self) -> np.ndarray: ...
    def render(self, camera: str) -> np.ndarray: ...
    def close(self) -> None: ...
    @property
    def sim_time_s(self) -> float: ...


class SnapshotRenderer:
    """Renders a MuJoCo ``SimScene``'s cameras from a private copy of its state.

    The copy is taken under the physics lock (microseconds); rendering (milliseconds to a second on a
    software rasteriser) runs outside it, so stepping never waits for a frame."""

    def __init__(self, scene: Any, cameras: list[CameraConfig]):
        import mujoco

        from molmoact2_ros.sim.rendering import OffscreenRenderer

        self._mujoco = mujoco
        self.scene = scene
        self._data = mujoco.MjData(scene.model)
        self._ids = {}
        for cam in cameras:
            cam_id = mujoco.mj_name2id(scene.model, mujoco.mjtObj.mjOBJ_CAMERA, cam.name)
            if cam_id < 0:
                raise ConfigError(f"node {NODE_NAME}: the {scene.embodiment.name} scene has no camera {cam.name!r}")
            self._ids[cam.name] = (cam_id, cam.width, cam.height)
        self._renderer = OffscreenRenderer(scene.model, max(c.width for c in cameras),
                                           max(c.height for c in cameras))

    def snapshot(self) -> None:
        """Copy the physics state; call with the physics lock held."""
        self._mujoco.mj_copyData(self._data, self.scene.model, self.scene.data)

    def render(self, camera: str) -> np.ndarray:
        cam_id, width, height = self._ids[camera]
        return self._renderer.render(self._data, cam_id, width, height)

    def close(self) -> None:
        self._renderer.close()


class SourceRenderer:
    """For sources that render themselves (a gymnasium env's image observations): read under the lock."""

    def __init__(self, source: SimSource, lock: threading.Lock):
        self._source, self._lock = source, lock
        self._images: dict[str, np.ndarray] = {}

    def snapshot(self) -> None:
        self._images = {}

    def render(self, camera: str) -> np.ndarray:
        with self._lock:
            return self._source.render(camera)

    def close(self) -> None:
        pass


class SimNode(Node):
    """Physics, joint states, commands and cameras of one simulated station (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.source: SimSource | None = None
        self.cameras: CameraStreamGroup | None = None
        self._renderer: SnapshotRenderer | SourceRenderer | None = None
        self._renderer_factory: Any = None
        self._source_factory: Any = None
        self._source_ready = threading.Event()
        self._startup_failure: str | None = None
        self._lock = threading.Lock()  # the physics state: stepping, commands, snapshots
        self.physics_steps = 0
        self.lag_events = 0
        self.commands_received = 0
        self.commands_refused = 0
        self._last_refusal = ""
        self._render_ms: list[float] = []
        self._rtf_window: list[tuple[float, float]] = []
        emb_ref = self._declare("embodiment", "so101", "embodiment name or path to a YAML file")
        gym_config = self._declare("gym_config", "", "a gymnasium env mapping (config/gym/<name>.yaml or its "
                                   "name) to simulate instead of the embodiment's MuJoCo scene; '' = the scene")
        self.seed = int(self._declare("seed", 0, "scene reset seed (object placement)"))
        self.command_topic = self._declare("command_topic", DEFAULT_COMMAND_TOPIC,
                                           "Float64MultiArray joint targets, embodiment order, robot units")
        self.state_topic = self._declare("state_topic", DEFAULT_STATE_TOPIC, "JointState of the simulated arm")
        self.real_time_factor = float(self._declare("real_time_factor", 1.0, "simulated seconds per wall second"))
        camera_fps = float(self._declare("camera_fps", 0.0, "render/publish rate of every camera (Hz); "
                                         "0 = the embodiment's"))
        self.publish_cameras = bool(self._declare("publish_cameras", True, "render and publish the cameras"))
        self.preflight_timeout_s = float(self._declare("preflight_timeout_s", 30.0,
                                                       "every camera must render a good frame within this (s)"))
        self.state_rate_hz = float(self._declare("state_rate_hz", 0.0, "joint state rate (Hz); 0 = the "
                                                 "embodiment's driver tick rate"))
        check_parameter_overrides(self)  # an override of no declared parameter is a typo: refuse it
        if not (0 < self.real_time_factor <= 100):
            raise ConfigError(f"node {NODE_NAME}: parameter real_time_factor: {self.real_time_factor} is not "
                              "allowed; use a number in (0, 100]")
        if not 0 <= camera_fps <= 240:
            raise ConfigError(f"node {NODE_NAME}: parameter camera_fps: {camera_fps} is not allowed; use 0..240")
        if self.state_rate_hz < 0 or self.state_rate_hz > 2000:
            raise ConfigError(f"node {NODE_NAME}: parameter state_rate_hz: {self.state_rate_hz} is not allowed; "
                              "use 0..2000")
        self.embodiment: EmbodimentConfig = load_embodiment(emb_ref)
        emb = self.embodiment
        self.state_rate_hz = self.state_rate_hz or emb.tick_rate_hz
        self.camera_configs = [c.model_copy(update={"source": "sim", "max_age_s": max(c.max_age_s, SIM_MAX_AGE_S),
                                                    **({"fps": camera_fps} if camera_fps else {})})
                               for c in emb.cameras]
        self.gym_config = gym_config
        self.state_pub = self.create_publisher(JointState, self.state_topic, JOINT_STATE_QOS)
        self.create_subscription(Float64MultiArray, self.command_topic, self._on_command, COMMAND_QOS)
        self._diagnostics = DiagnosticsPublisher(self, self._snapshot, period_s=1.0, hardware_id=emb.name)
        try:
            self._start()
        except ConfigError as exc:
            self._startup_failure = str(exc)
        except Exception as exc:  # a scene or env that fails to build: the reason, not a half-started node
            self._startup_failure = f"{type(exc).__name__}: {exc}"

    @property
    def startup_failure(self) -> str | None:
        return self._startup_failure

    def _declare(self, name: str, default: Any, description: str) -> Any:
        desc = ParameterDescriptor(description=description, read_only=True)
        return self.declare_parameter(name, default, desc).value

    # ---- start-up ---------------------------------------------------------------------------------
    def _start(self) -> None:
        log = self.get_logger()
        t0 = time.monotonic()
        if self.gym_config:
            from molmoact2_ros.sim.gym_bridge import GymBridge, load_gym_mapping

            mapping = load_gym_mapping(self.gym_config)
            if mapping.embodiment_name() != self.embodiment.name:
                raise ConfigError(f"node {NODE_NAME}: gym_config {self.gym_config} maps embodiment "
                                  f"{mapping.embodiment_name()!r}, but parameter embodiment is "
                                  f"{self.embodiment.name!r}")
            def make_bridge() -> GymBridge:
                bridge = GymBridge(mapping, self.embodiment, camera_configs=self.camera_configs)
                bridge.reset(self.seed)
                return bridge

            # Made and stepped on the physics thread: an env that renders its observations (dm_control
            # through EGL) binds its GL context to the thread that first renders.
            self._source_factory = make_bridge
            self._renderer_factory = lambda: SourceRenderer(self.source, self._lock)  # type: ignore[arg-type]
        else:
            from molmoact2_ros.sim.scenes import build_scene

            scene = build_scene(self.embodiment, render=False)
            scene.reset(self.seed)
            self.source = scene
            if self.publish_cameras:
                # Built on the render thread: an EGL context is current on the thread that made it.
                self._renderer_factory = lambda: SnapshotRenderer(scene, self.camera_configs)
        self._spawn(self._physics_loop, "sim_physics")
        self._source_ready.wait()
        if self.source is None:
            raise ConfigError(f"the simulation did not start: {getattr(self, '_dead', '') or 'no source'}")
        log.info(f"{'gym env ' + self.gym_config if self.gym_config else 'MuJoCo scene'} for {self.embodiment.name} "
                 f"built in {time.monotonic() - t0:.1f} s (physics dt {self.source.physics_dt * 1e3:.1f} ms)")
        if self.publish_cameras:
            sources = {c.name: SimCamera(c, CameraOptions(read_timeout_s=5.0)) for c in self.camera_configs}
            self.cameras = CameraStreamGroup(self, sources, StreamSettings(freeze_timeout_s=0.0, reopen_after_s=5.0))
            problem = self.cameras.open()
            if problem:
                raise ConfigError(f"cameras did not open: {problem}")
            self._spawn(self._render_loop, "sim_render")
            problem = self.cameras.preflight(self.preflight_timeout_s)
            if problem:
                dead = getattr(self, "_dead", "")
                raise ConfigError(f"camera preflight failed: {problem}" + (f" ({dead})" if dead else ""))
            self.cameras.start()
            log.info(f"publishing {self.cameras.describe()}")
        log.info(f"running: state on {self.state_topic} at {self.state_rate_hz:g} Hz, commands on "
                 f"{self.command_topic}")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=self._guarded, args=(target,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guarded(self, target: Any) -> None:
        try:
            target()
        except Exception as exc:  # a dead physics or render thread must show up, not stall silently
            if self._stop.is_set() or not self.context.ok():
                return
            self._startup_failure = self._startup_failure or f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"{threading.current_thread().name} stopped: {type(exc).__name__}: {exc}")
            self._dead = f"{threading.current_thread().name}: {type(exc).__name__}: {exc}"

    # ---- commands ---------------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        q = np.asarray(msg.data, dtype=np.float64)
        dof = self.embodiment.dof
        problem = ""
        if q.shape != (dof,):
            problem = f"{q.size} values, need {dof} in the order {self.embodiment.joint_names}"
        elif not np.all(np.isfinite(q)):
            problem = f"non-finite value in {q.tolist()}"
        if problem or self.source is None:
            self.commands_refused += 1
            self._last_refusal = problem
            self.get_logger().warning(f"command on {self.command_topic} refused: {problem}",
                                      throttle_duration_sec=1.0)
            return
        with self._lock:
            self.source.set_command(q)
        self.commands_received += 1

    # ---- physics ----------------------------------------------------------------------------------
    def _physics_loop(self) -> None:
        if self._source_factory is not None:
            try:
                self.source = self._source_factory()
            except Exception as exc:  # the reason goes to _start, which fails the node's start with it
                self._dead = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                return
            finally:
                self._source_ready.set()
        self._source_ready.set()
        assert self.source is not None
        source = self.source
        period = 1.0 / self.state_rate_hz
        names = list(self.embodiment.joint_names)
        wall0 = time.monotonic()
        with self._lock:
            sim0 = source.sim_time_s
        next_due = wall0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                behind = sim0 + (now - wall0) * self.real_time_factor - source.sim_time_s
                if behind > MAX_LAG_S:
                    # Slow host: give the time up (the physics runs slower than the wall clock) instead
                    # of stepping a burst that would make the arm jump between two states.
                    self.lag_events += 1
                    sim0 -= behind - source.physics_dt
                    behind = source.physics_dt
                if behind >= source.physics_dt:
                    source.step(behind)
                    self.physics_steps += 1
                q, v = source.joint_positions(), source.joint_velocities()
                sim_t = source.sim_time_s
            self._rtf_window.append((now, sim_t))
            if len(self._rtf_window) > 4 * self.state_rate_hz:
                del self._rtf_window[0]
            msg = JointState(name=names, position=[float(x) for x in q], velocity=[float(x) for x in v])
            msg.header.stamp = self.get_clock().now().to_msg()
            self.state_pub.publish(msg)
            next_due += period
            delay = next_due - time.monotonic()
            if delay < -period:  # fell behind: restart the schedule instead of publishing in a burst
                next_due = time.monotonic()
            elif delay > 0 and self._stop.wait(delay):
                return

    # ---- rendering --------------------------------------------------------------------------------
    def _render_loop(self) -> None:
        assert self._renderer_factory is not None and self.cameras is not None
        renderer = self._renderer = self._renderer_factory()
        cams = {name: (src, 1.0 / src.config.fps) for name, src in self.cameras.sources.items()}
        due = {name: time.monotonic() for name in cams}
        try:
            self._render_frames(renderer, cams, due)
        finally:
            renderer.close()  # on this thread, where its GL context is current

    def _render_frames(self, renderer: Any, cams: dict, due: dict) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            ready = [n for n in cams if due[n] <= now]
            if not ready:
                if self._stop.wait(min(due.values()) - now):
                    return
                continue
            with self._lock:
                renderer.snapshot()
                captured = time.time()
            images = {}
            for name in ready:
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
                images[name] = renderer.render(name)
                self._render_ms.append(1e3 * (time.perf_counter() - t0))
                del self._render_ms[:-50]
            # All at once: the policy pairs the newest frame of each camera, and a front camera one snapshot
            # ahead of the wrist camera would look like cameras a period apart (its camera skew check).
            for name, image in images.items():
                cams[name][0].deliver(image, captured)
            # After the whole batch, the same for every camera of one fps: they stay on one snapshot (one
            # capture time, which the policy's camera skew check wants), and a renderer slower than the fps
            # renders as fast as it can instead of queueing frames.
            done = time.monotonic()
            for name in ready:
                due[name] = max(due[name] + cams[name][1], done)

    # ---- diagnostics ------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[int, str, dict[str, Any]]:
        values: dict[str, Any] = {"embodiment": self.embodiment.name,
                                  "simulator": f"gym:{self.gym_config}" if self.gym_config else "mujoco"}
        level, message = 0, "simulating"
        if self.cameras is not None:
            level, message, cam_values = self.cameras.snapshot(bool(self.cameras.streams), "active")
            values.update(cam_values)
        window = list(self._rtf_window)
        rtf = 0.0
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            rtf = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        values.update({"sim_time_s": round(window[-1][1], 3) if window else 0.0, "real_time_factor": round(rtf, 3),
                       "physics_steps": self.physics_steps, "lag_events": self.lag_events,
                       "commands_received": self.commands_received, "commands_refused": self.commands_refused,
                       "render_ms": round(float(np.median(self._render_ms)), 1) if self._render_ms else 0.0})
        if self.source is not None:
            with self._lock:
                q = self.source.joint_positions()
            values.update({f"joint.{n}": round(float(x), 5) for n, x in zip(self.embodiment.joint_names, q,
                                                                             strict=True)})
        dead = getattr(self, "_dead", "")
        if self._startup_failure or dead:
            return ERROR, self._startup_failure or dead, values
        if self.commands_refused:
            level = max(level, WARN)
            message = f"{message}; {self.commands_refused} command(s) refused: {self._last_refusal}"
        if rtf and math.isfinite(rtf) and rtf < 0.8 * self.real_time_factor:
            level = max(level, WARN)
            message = f"{message}; physics at {rtf:.2f}x real time (host too slow)"
        return level, message, values

    # ---- shutdown ---------------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the threads, the camera streams and the renderer (``spin_node`` calls it). Idempotent."""
        self._stop.set()
        if self.cameras is not None:
            self.cameras.request_stop()
            for source in self.cameras.sources.values():
                source.close()  # wakes a stream blocked waiting for a frame that will not come
            self.cameras.release()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        self._threads = []
        self._renderer = None  # its GL context goes with the render thread's end (see _render_loop)
        if self.source is not None:
            self.source.close()

    def destroy_node(self) -> None:
        self.release()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script ``sim_node``: spin until SIGINT/SIGTERM. A scene that does not build, a renderer that
    cannot start or a camera whose first frame is bad exits with status 1 and the reason."""
    import os

    from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, dds_environment

    # Before rclpy.init: the large-data Fast DDS profile, or 640x480 frames are lost between processes.
    for key, value in dds_environment(DEFAULT_DDS_PROFILE).items():
        os.environ.setdefault(key, value)
    spin_node(SimNode, args=args)


if __name__ == "__main__":
    main()
