"""A robot PC runs perception and drivers without torch: importing them must not pull it in."""

import subprocess
import sys

import pytest

ROBOT_PC_MODULES = [
    "molmoact2_ros.nodes.driver_node",
    "molmoact2_ros.nodes.perception_node",
    "molmoact2_ros.backends.hardware",
    "molmoact2_ros.backends.cameras",
    "molmoact2_ros.backends.policy",
    "molmoact2_ros.bringup",
    "molmoact2_ros.cli",
]


@pytest.mark.parametrize("module", ROBOT_PC_MODULES)
def test_no_torch_on_robot_pc_import(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = sorted(m for m in ('torch', 'transformers', 'lerobot') if m in sys.modules); "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{module} imports {res.stdout.strip()} {res.stderr[-500:]}"


def test_core_imports_no_rclpy():
    code = ("import sys, importlib, pkgutil, molmoact2_ros.core as c\n"
            "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('molmoact2_ros.core.' + m.name)\n"
            "sys.exit(1 if 'rclpy' in sys.modules else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]


def test_policy_runtime_on_a_host_without_torch_names_the_policy_extra():
    """A robot PC (no `policy` extra) that is asked to run the policy: the reason says what to install,
    not which module happened to be imported first ("No module named 'huggingface_hub'")."""
    code = ("import sys\n"
            "for m in ('torch', 'transformers', 'huggingface_hub', 'safetensors'): sys.modules[m] = None\n"
            "from molmoact2_ros.backends.policy.molmoact2_runtime import require_policy_extra\n"
            "from molmoact2_ros.core.errors import ConfigError\n"
            "try:\n    require_policy_extra()\nexcept ConfigError as exc:\n    print(exc)\n    sys.exit(0)\n"
            "sys.exit(1)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "needs torch and the `policy` extra" in res.stdout
    assert "missing on this host: torch, transformers, huggingface_hub, safetensors" in res.stdout
    assert "pip install 'molmoact2_ros[policy]'" in res.stdout
