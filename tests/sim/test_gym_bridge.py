"""Any gymnasium env as the simulation, proven on gym-aloha (PyPI, written by others): the mapping file's checks,
the bridge on the real env, and the real driver node executing chunks on it through the sim node."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("gymnasium")
pytest.importorskip("gym_aloha")

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.sim.gym_bridge import GYM_CONFIG_DIR, GymBridge, load_gym_mapping

MAPPING = "aloha_transfer_cube"
WAIT_S = 300.0  # the env renders three 640x480 cameras per step on the CPU: slow on a busy host


@pytest.fixture(scope="module")
def mapping():
    return load_gym_mapping(MAPPING)


@pytest.fixture(scope="module")
def embodiment(mapping):
    return load_embodiment(mapping.embodiment_ref())


def test_shipped_mapping_names_its_embodiment(mapping, embodiment):
    assert mapping.env_id == "gym_aloha/AlohaTransferCube-v0" and embodiment.name == "aloha_gym"
    assert sorted(mapping.joint_order) == sorted(embodiment.joint_names)
    assert set(mapping.camera_keys) == set(embodiment.camera_names)


@pytest.mark.parametrize(("change", "message"), [
    ({"rate_hz": 0}, "rate_hz"),
    ({"joint_order": ["left_waist"]}, "joint_order must list exactly"),
    ({"camera_keys": {"wrist": "pixels.wrist"}}, "no entry for camera"),
    ({"import": ["no_such_gym_package"]}, "cannot import 'no_such_gym_package'"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_mappings_fail_with_the_field_and_the_fix(tmp_path, change, message):
    data = yaml.safe_load((GYM_CONFIG_DIR / f"{MAPPING}.yaml").read_text())
    data["embodiment"] = str(GYM_CONFIG_DIR / data["embodiment"])
    data.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        m = load_gym_mapping(str(path))
        GymBridge(m, load_embodiment(m.embodiment_ref()))


def test_unknown_mapping_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="aloha_transfer_cube"):
        load_gym_mapping("no_such_mapping")


def test_bridge_steps_the_env_toward_commanded_joint_positions(mapping, embodiment):
    bridge = GymBridge(mapping, embodiment)
    try:
        bridge.reset(0)
        q0 = bridge.joint_positions()
        assert np.allclose(q0, embodiment.home, atol=0.05), "the embodiment's home is the env's reset pose"
        image = bridge.render("top")
        assert image.shape == (480, 640, 3) and image.dtype == np.uint8 and image.std() > 5
        target = q0.copy()
        j = embodiment.joint_names.index("left_waist")
        target[j] += 0.2
        bridge.set_command(target)
        bridge.step(0.2)  # ten env steps at its 50 Hz
        assert bridge.steps == 10 and bridge.sim_time_s == pytest.approx(0.2)
        moved = bridge.joint_positions()[j] - q0[j]
        assert 0.05 < moved < 0.25, f"left_waist moved {moved:.3f} toward +0.2"
        assert bridge.joint_velocities()[j] > 0
        others = np.delete(np.arange(embodiment.dof), j)
        assert np.max(np.abs(bridge.joint_positions()[others] - q0[others])) < 0.05
    finally:
        bridge.close()


@pytest.mark.ros
def test_the_real_driver_runs_chunks_on_the_env_through_the_sim_node(tmp_path, mapping, embodiment):
    """sim node (gym bridge) and driver node (mujoco backend) as processes; chunks from here; the env's arm
    follows them, the driver reports them executed, no fault, every commanded value inside the limits."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from molmoact2_ros.bringup import BringupOptions, describe
    from molmoact2_ros.core.chunk import ActionChunk
    from molmoact2_ros.nodes.contract import chunk_to_msg
    from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC, DIAGNOSTICS_QOS, DIAGNOSTICS_TOPIC, JOINT_STATE_QOS
    from molmoact2_ros.process_runner import ProcessGroup

    specs = describe(BringupOptions(embodiment=embodiment.source_path, sim=True, gym_config=MAPPING,
                                    with_policy=False))
    assert [s.name for s in specs] == ["molmoact2_sim", "molmoact2_driver"]
    assert specs[1].parameters["backend"] == "mujoco"
    group = ProcessGroup(specs, dict(os.environ), tmp_path)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("gym_bridge_test", context=context)
    seen: dict = {"states": [], "commanded": [], "diag": {}}
    node.create_subscription(JointState, "/joint_states", lambda m: seen["states"].append(np.array(m.position)),
                             JOINT_STATE_QOS)
    node.create_subscription(JointState, "/molmoact2_driver/commanded",
                             lambda m: seen["commanded"].append(np.array(m.position)), JOINT_STATE_QOS)

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            seen["diag"][st.name.rsplit("/", 1)[-1]] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, DIAGNOSTICS_QOS)
    pub = node.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
    stop = threading.Event()
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    group.start()
    try:
        problem = group.wait_started(timeout_s=WAIT_S)
        assert not problem, problem
        deadline = time.monotonic() + WAIT_S
        while not seen["states"]:
            assert time.monotonic() < deadline, "no /joint_states from the driver"
            assert not group.first_problem(), group.first_problem()
            time.sleep(0.1)
        start = seen["states"][-1]
        j = embodiment.joint_names.index("left_waist")
        rate = embodiment.tick_rate_hz
        executed = 0
        while time.monotonic() < deadline:
            # A chunk from the measured pose toward +0.25 rad on left_waist, stamped now, like the policy's.
            steps = embodiment.chunk.action_horizon
            ramp = np.minimum(np.arange(steps) / rate * 0.5, 0.25)
            positions = np.tile(start, (steps, 1))
            positions[:, j] = start[j] + ramp
            now = node.get_clock().now().nanoseconds * 1e-9
            pub.publish(chunk_to_msg(ActionChunk(list(embodiment.joint_names), positions, now, rate)))
            driver = seen["diag"].get("molmoact2_driver", {})
            executed = int(float(driver.get("chunks_executed", 0)))
            assert driver.get("faults", "0") == "0", driver
            if executed >= 2 and seen["states"][-1][j] - start[j] > 0.05:
                break
            time.sleep(0.5)
        assert executed >= 2, seen["diag"].get("molmoact2_driver")
        assert seen["states"][-1][j] - start[j] > 0.05, "the env's arm followed the chunks"
        commanded = np.array(seen["commanded"])
        assert np.all(commanded >= embodiment.lower - 1e-6) and np.all(commanded <= embodiment.upper + 1e-6)
        # The sim node's diagnostics come once a second: the one in hand may predate the first command.
        while int(seen["diag"].get("molmoact2_sim", {}).get("commands_received", 0)) == 0:
            assert time.monotonic() < deadline, seen["diag"].get("molmoact2_sim")
            time.sleep(0.1)
        sim = seen["diag"]["molmoact2_sim"]
        assert sim.get("simulator") == f"gym:{MAPPING}", sim
    finally:
        group.stop()
        stop.set()
        spinner.join(5.0)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
