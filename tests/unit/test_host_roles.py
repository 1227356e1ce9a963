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
