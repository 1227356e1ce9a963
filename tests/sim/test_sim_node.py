"""The simulation node on real MuJoCo physics and real DDS: joint states, rendered camera frames through the
perception stream code, commands moving the simulated arm, refused commands, diagnostics; the mujoco backend;
the sim camera source."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("mujoco")
pytestmark = [pytest.mark.ros]

from molmoact2_ros.backends.cameras.base import CameraOptions, CameraReadError  # noqa: E402
from molmoact2_ros.backends.cameras.sim import SimCamera  # noqa: E402
from molmoact2_ros.core.embodiment import load_embodiment  # noqa: E402

# Generous: the scene's build compiles meshes, and a busy 2-core CI host renders on a software rasteriser.
STARTUP_S = 300.0
WAIT_S = 60.0


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


# ---- the sim camera source ---------------------------------------------------------------------------------

def _camera() -> SimCamera:
    cfg = load_embodiment("so101").cameras[0].model_copy(update={"width": 8, "height": 4, "source": "sim"})
    return SimCamera(cfg, CameraOptions(read_timeout_s=0.2))


def test_sim_camera_hands_each_delivered_frame_once_and_times_out_without_one():
    cam = _camera()
    cam.open()
    with pytest.raises(CameraReadError, match=r"no new frame rendered within 0\.2 s"):
        cam.read()
    image = np.full((4, 8, 3), 7, np.uint8)
    cam.deliver(image, 123.5)
    frame = cam.read()
    assert frame.image is image and frame.capture_time_s == 123.5 and frame.sequence == 1
    with pytest.raises(CameraReadError):
        cam.read()  # the same frame is not handed out twice
    # A reader blocked in read() wakes up on delivery.
    got = []
    reader = threading.Thread(target=lambda: got.append(cam.read()))
    reader.start()
    time.sleep(0.05)
    cam.deliver(np.zeros((4, 8, 3), np.uint8))
    reader.join(2.0)
    assert got and got[0].sequence == 2
    cam.close()
    with pytest.raises(CameraReadError, match="closed"):
        cam.read()


# ---- the node on the so101 scene ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from molmoact2_ros.nodes.qos import CAMERA_QOS, JOINT_STATE_QOS, camera_info_topic, camera_topic
    from molmoact2_ros.nodes.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = SimNode(context=context, parameter_overrides=[
        Parameter("embodiment", value="so101"), Parameter("camera_fps", value=4.0),
        Parameter("preflight_timeout_s", value=STARTUP_S)])
    assert node.startup_failure is None, node.startup_failure
    probe = rclpy.create_node("sim_probe", context=context)
    seen: dict = {"states": [], "images": [], "infos": 0}
    probe.create_subscription(JointState, "/sim/joint_states", lambda m: seen["states"].append(m), JOINT_STATE_QOS)
    probe.create_subscription(Image, camera_topic("front"), lambda m: seen["images"].append(m), CAMERA_QOS)
    probe.create_subscription(CameraInfo, camera_info_topic("front"),
                              lambda m: seen.__setitem__("infos", seen["infos"] + 1), CAMERA_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    yield node, probe, seen
    stop.set()
    spinner.join(5.0)
    executor.shutdown()
    node.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=context)


def _latest(seen) -> np.ndarray:
    return np.array(seen["states"][-1].position)


def test_publishes_joint_states_and_rendered_frames_like_perception(sim):
    node, _, seen = sim
    emb = node.embodiment
    wait_for(lambda: len(seen["states"]) > 10 and len(seen["images"]) >= 2 and seen["infos"] >= 2, WAIT_S,
             "joint states and two camera frames")
    state = seen["states"][-1]
    assert list(state.name) == emb.joint_names and len(state.velocity) == emb.dof
    q = _latest(seen)
    assert np.all(q >= emb.lower - 1e-3) and np.all(q <= emb.upper + 1e-3)
    img = seen["images"][-1]
    assert (img.width, img.height, img.encoding) == (640, 480, "rgb8")
    assert img.header.frame_id == "front_optical_frame"
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(480, 640, 3)
    assert 10 < pixels.mean() < 245 and pixels.std() > 5, "a rendered scene, not a blank frame"
    # Stamped with the time of the physics state it shows: at most a few render periods old on arrival.
    age = time.time() - (img.header.stamp.sec + img.header.stamp.nanosec * 1e-9)
    assert -0.1 < age < 30.0


def test_a_command_moves_the_simulated_arm_there(sim):
    import rclpy  # noqa: F401
    from std_msgs.msg import Float64MultiArray

    from molmoact2_ros.backends.hardware.ros_topic import COMMAND_QOS

    node, probe, seen = sim
    emb = node.embodiment
    wait_for(lambda: len(seen["states"]) > 0, WAIT_S, "joint states")
    start = _latest(seen)
    target = emb.home.copy()
    j = emb.joint_names.index("shoulder_pan")
    target[j] = start[j] + 0.3
    pub = probe.create_publisher(Float64MultiArray, "/sim/joint_commands", COMMAND_QOS)
    received = node.commands_received

    def there() -> bool:
        pub.publish(Float64MultiArray(data=target.tolist()))
        return abs(_latest(seen)[j] - target[j]) < 0.03

    wait_for(there, WAIT_S, f"shoulder_pan to reach {target[j]:.3f}")
    assert node.commands_received > received
    probe.destroy_publisher(pub)


def test_malformed_commands_are_refused_and_the_arm_keeps_its_target(sim):
    from std_msgs.msg import Float64MultiArray

    from molmoact2_ros.backends.hardware.ros_topic import COMMAND_QOS

    node, probe, _seen = sim
    pub = probe.create_publisher(Float64MultiArray, "/sim/joint_commands", COMMAND_QOS)
    refused = node.commands_refused
    with node._lock:
        before = node.source.commanded_positions().copy()

    def refused_both() -> bool:
        pub.publish(Float64MultiArray(data=[0.1, 0.2]))
        pub.publish(Float64MultiArray(data=[float("nan")] * node.embodiment.dof))
        return node.commands_refused >= refused + 2

    wait_for(refused_both, WAIT_S, "two refused commands")
    with node._lock:
        assert np.allclose(node.source.commanded_positions(), before)
    _level, message, values = node._snapshot()
    assert "refused" in message and values["commands_refused"] >= 2
    probe.destroy_publisher(pub)


def test_diagnostics_report_cameras_and_physics(sim):
    node, _, seen = sim
    wait_for(lambda: len(seen["images"]) >= 3, WAIT_S, "three frames")
    _, _, values = node._snapshot()
    assert int(values["front.frames_published"]) >= 3 and int(values["wrist.frames_published"]) >= 1
    assert values["front.source"] == "sim" and values["simulator"] == "mujoco"
    assert values["sim_time_s"] > 0 and values["real_time_factor"] > 0 and values["physics_steps"] > 0


# ---- configuration errors and the backend ------------------------------------------------------------------

def test_an_unknown_gym_mapping_fails_the_start_with_the_reason():
    import rclpy
    from rclpy.parameter import Parameter

    from molmoact2_ros.nodes.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = SimNode(context=context, parameter_overrides=[Parameter("gym_config", value="no_such_env")])
        assert "no_such_env" in node.startup_failure and "aloha_transfer_cube" in node.startup_failure
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_mujoco_backend_talks_to_the_sim_topics_through_the_driver_node_handle():
    import rclpy

    from molmoact2_ros.backends.hardware import available_backends, make_hardware
    from molmoact2_ros.backends.hardware.mujoco import MujocoArm
    from molmoact2_ros.core.errors import HardwareError

    emb = load_embodiment("so101")
    assert "mujoco" in available_backends()
    with pytest.raises(HardwareError, match="node handle"):
        make_hardware(emb, "mujoco")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("backend_probe", context=context)
        arm = make_hardware(emb, "mujoco", ros_node=node)
        assert isinstance(arm, MujocoArm) and arm.command_topic == "/sim/joint_commands"
        assert arm.state_topic == "/sim/joint_states" and arm.command_type == "float64_multi_array"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
