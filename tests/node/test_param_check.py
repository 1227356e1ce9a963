"""An override for a parameter a node does not declare fails its start-up (rclpy alone would ignore it).

Real rclpy: the nodes in-process for the declared-name table, the driver as its own process (its ``main``,
as ``ros2 run`` starts it) for the params-file and ``-p`` cases.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter

from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.nodes.param_check import NODE_PARAMETERS, wildcard_only
from molmoact2_ros.nodes.runtime_env import STATUS_FILE_VAR, private_domain_id

pytestmark = pytest.mark.ros

TYPO = "did not start: parameter 'safety.chunk_max_agee_s' is not a parameter of molmoact2_driver " \
       "(did you mean 'safety.chunk_max_age_s'?)"
STARTUP_S = 120.0  # deadline for a driver process to report, generous for a loaded 2-core host


def _make(node_name: str, ctx: rclpy.Context, overrides: list[Parameter]):
    if node_name == "molmoact2_driver":
        from molmoact2_ros.nodes.driver_node import DriverNode
        return DriverNode(context=ctx, parameter_overrides=[Parameter("autostart", value=False), *overrides])
    if node_name == "molmoact2_policy":
        from molmoact2_ros.nodes.policy_node import PolicyNode
        return PolicyNode(context=ctx, parameter_overrides=[Parameter("autostart", value=False), *overrides])
    if node_name == "molmoact2_perception":
        from molmoact2_ros.nodes.perception_node import PerceptionNode
        return PerceptionNode(context=ctx, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("source", value="synthetic"), *overrides])
    from molmoact2_ros.nodes.sim_node import SimNode
    # An env that does not exist: the node declares everything, then fails to build (no scene to wait for).
    return SimNode(context=ctx, parameter_overrides=[Parameter("gym_config", value="no_such_env"), *overrides])


@pytest.fixture
def ctx():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("node_name", sorted(NODE_PARAMETERS))
def test_static_table_is_what_each_node_declares(node_name, ctx):
    """The bringup checks params files against NODE_PARAMETERS without starting nodes: it must be exact."""
    node = _make(node_name, ctx, [])
    try:
        assert node.get_name() == node_name
        assert set(node._parameters) == NODE_PARAMETERS[node_name]
    finally:
        node.release()
        node.destroy_node()


@pytest.mark.parametrize("node_name", sorted(NODE_PARAMETERS))
def test_an_undeclared_override_fails_every_node(node_name, ctx):
    with pytest.raises(ConfigError, match=rf"^parameter 'embodimnet' is not a parameter of {node_name} "
                                          r"\(did you mean 'embodiment'\?\)$"):
        _make(node_name, ctx, [Parameter("embodimnet", value="so101")])


def test_wildcard_attribution(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"everyone": 1, "both": 1}},
        "/*": {"ros__parameters": {"star": 1}},
        "molmoact2_driver": {"ros__parameters": {"both": 2, "mine": 1}},
        "other": {"ros__parameters": {"theirs": 1}},
    }))
    argv = ["prog", "--ros-args", "--params-file", str(f), "-p", "cli:=1", "-p", "/**:wild_p:=1", "--", "x"]
    assert wildcard_only(argv, "/molmoact2_driver") == {"everyone", "star", "wild_p"}
    # Nothing after `--` is a ROS argument; nothing before --ros-args either.
    assert wildcard_only(["prog", "--params-file", str(f)], "/molmoact2_driver") == set()


def _driver(tmp_path: Path, *ros_args: str) -> tuple[subprocess.Popen, Path]:
    status = tmp_path / "status"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(private_domain_id(os.getpid() + 11)), **{STATUS_FILE_VAR: str(status)})
    cmd = [sys.executable, "-u", "-c", "import sys; from molmoact2_ros.nodes.driver_node import main; "
           "sys.exit(main())", "--ros-args", "-p", "backend:=mock", *ros_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return proc, status


def _wait_status(proc: subprocess.Popen, status: Path) -> str:
    """The node's start-up report (``ready`` / ``failed: ...``), waiting for it or for the process to end."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if status.exists():
            return status.read_text().strip()
        if proc.poll() is not None:
            return status.read_text().strip() if status.exists() else f"exited {proc.returncode}"
        time.sleep(0.05)  # polling a file, not a timing assumption: the deadline bounds it
    raise AssertionError(f"driver did not report within {STARTUP_S:g} s")


def _stop(proc: subprocess.Popen, interrupt: bool = True) -> tuple[int, str]:
    """Its exit status and output; ``interrupt``: Ctrl-C it first (a failed node exits by itself)."""
    if interrupt and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=STARTUP_S)
    return proc.returncode, out


def test_mistyped_safety_limit_in_params_file_fails_driver_startup(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("molmoact2_driver: {ros__parameters: {safety.chunk_max_agee_s: 99.0}}\n")
    proc, status = _driver(tmp_path, "--params-file", str(f))
    report = _wait_status(proc, status)
    code, out = _stop(proc, interrupt=report == "ready")  # a node that failed exits by itself
    assert report == "failed: " + TYPO.removeprefix("did not start: ")
    assert code == 1 and TYPO in out


def test_mistyped_p_override_fails_driver_startup(tmp_path):
    proc, status = _driver(tmp_path, "-p", "hardware_eror_limit:=2")
    report = _wait_status(proc, status)
    code, _out = _stop(proc, interrupt=report == "ready")  # a node that failed exits by itself
    assert report.startswith("failed: parameter 'hardware_eror_limit' is not a parameter of molmoact2_driver "
                             "(did you mean 'hardware_error_limit'?)")
    assert code == 1


def test_correct_params_file_and_foreign_wildcard_parameter_start(tmp_path):
    """Node-specific and /** names the driver declares, plus a /** name only the policy declares: starts."""
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"diagnostics_period_s": 2.0, "torch_num_threads": 1}},
        "molmoact2_driver": {"ros__parameters": {"hardware_error_limit": 2, "safety": {"chunk_max_age_s": 0.8}}},
    }))
    proc, status = _driver(tmp_path, "--params-file", str(f))
    report = _wait_status(proc, status)
    code, out = _stop(proc)
    assert report == "ready", out
    assert code == 0, out
