"""`molmoact2-ros bringup --params-file` (and the launch file, through the same ``describe``) refuses a params
file naming a node or a parameter no node of ours has, with status 2 and one line, before any node starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from molmoact2_ros.bringup import BringupOptions, describe
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.nodes.runtime_env import private_domain_id

pytestmark = pytest.mark.system


def _bringup(tmp_path, content: dict) -> tuple[subprocess.CompletedProcess, object]:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(content))
    logs = tmp_path / "logs"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(private_domain_id(os.getpid() + 5)))
    run = subprocess.run([sys.executable, "-m", "molmoact2_ros.cli", "bringup", "--params-file", str(f),
                          "--no-policy", "--no-perception", "--log-dir", str(logs)],
                         capture_output=True, text=True, env=env, timeout=300)
    return run, logs


@pytest.mark.parametrize(("content", "message"), [
    ({"molmoact2_drivr": {"ros__parameters": {"hardware_error_limit": 2}}},
     r"'molmoact2_drivr' is not a node this package starts \(did you mean 'molmoact2_driver'\?\)"),
    ({"/**": {"ros__parameters": {"diagnostics_periodd_s": 2.0}}},
     r"/\*\*: no node of molmoact2_ros declares 'diagnostics_periodd_s' \(did you mean 'diagnostics_period_s'\?\)"),
    ({"molmoact2_driver": {"ros__parameters": {"safety.chunk_max_agee_s": 99.0}}},
     r"parameter 'safety.chunk_max_agee_s' is not a parameter of molmoact2_driver "
     r"\(did you mean 'safety.chunk_max_age_s'\?\)"),
    ({"molmoact2_driver": {"ros__parameters": {"safety": {"chunk_max_agee_s": 99.0}}}},  # nested form
     r"parameter 'safety.chunk_max_agee_s' is not a parameter of molmoact2_driver"),
])
def test_unknown_names_are_refused_before_anything_starts(tmp_path, content, message):
    run, logs = _bringup(tmp_path, content)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("molmoact2-ros: error: params file "), run.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "starting" not in run.stdout and not logs.exists()  # no node process was started


@pytest.mark.parametrize("content", [
    {"/**": {"ros__parameters": {"diagnostics_period_s": 2.0, "torch_num_threads": 1, "use_sim_time": False}},
     "/molmoact2_driver": {"ros__parameters": {"hardware_error_limit": 2, "safety": {"chunk_max_age_s": 0.8}}},
     "/**/molmoact2_policy": {"ros__parameters": {"instruction": "stack"}},
     "molmoact2_sim": {"ros__parameters": {"real_time_factor": 1.0}}},
])
def test_known_names_pass_the_check(tmp_path, content):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(content))
    assert describe(BringupOptions(params_file=str(f)))  # the launch file and the CLI both call this


def test_the_launch_description_refuses_too(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"molmoact2_driver": {"ros__parameters": {"hardware_eror_limit": 2}}}))
    with pytest.raises(ConfigError, match=r"did you mean 'hardware_error_limit'"):
        describe(BringupOptions(params_file=str(f)))
