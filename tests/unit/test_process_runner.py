"""process_runner: a group is "started" only when every process reported ready, and every way a process
can fail to be running (reported failure, crash before reporting, silence past the timeout, death later)
comes back as one reason. Real processes; stand-in node modules without ROS, so these run anywhere."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from molmoact2_ros.bringup import NodeSpec
from molmoact2_ros.process_runner import ProcessGroup

NODES = {
    # Reports like spin_node does, then runs until stopped.
    "ready_node": "from molmoact2_ros.nodes.runtime_env import report_startup\n"
                  "import time\n\ndef main():\n    report_startup('ready')\n    time.sleep(120)\n",
    "failing_node": "import sys\nfrom molmoact2_ros.nodes.runtime_env import report_startup\n\n"
                    "def main():\n    report_startup('failed: configure failed: no such backend')\n    return 1\n",
    "crashing_node": "def main():\n    raise RuntimeError('boom before reporting anything')\n",
    "silent_node": "import time\n\ndef main():\n    time.sleep(120)\n",
    # Returns its exit status instead of raising SystemExit (as perception_node.main used to).
    "returning_node": "def main():\n    return 3\n",
}


@pytest.fixture
def group_of(tmp_path):
    (tmp_path / "mods").mkdir()
    for name, code in NODES.items():
        (tmp_path / "mods" / f"{name}.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "mods"), *sys.path])}
    groups: list[ProcessGroup] = []

    def make(*modules: str) -> ProcessGroup:
        # Named after the module, numbered when one runs twice: a name is a node (its log, its status).
        names = [m if modules.count(m) == 1 else f"{m}_{i}" for i, m in enumerate(modules)]
        specs = [NodeSpec(name=n, executable=m, module=m) for n, m in zip(names, modules, strict=True)]
        group = ProcessGroup(specs, env, tmp_path / f"logs{len(groups)}")
        groups.append(group)
        group.start()
        return group
    yield make
    for g in groups:
        g.stop(grace_s=2.0)


def test_started_once_every_node_is_ready(group_of):
    group = group_of("ready_node", "ready_node")
    seen: list[str] = []
    assert group.wait_started(timeout_s=60, on_ready=lambda n: seen.append(n.spec.name)) == ""
    assert sorted(seen) == ["ready_node_0", "ready_node_1"]
    assert group.waiting() == [] and group.first_problem() == ""


def test_a_reported_failure_is_the_reason(group_of):
    group = group_of("ready_node", "failing_node")
    problem = group.wait_started(timeout_s=60)
    assert problem.startswith("failing_node did not start: configure failed: no such backend (log: ")


def test_a_crash_before_reporting_gives_the_exit_code_and_the_log(group_of):
    problem = group_of("crashing_node").wait_started(timeout_s=60)
    assert problem.startswith("crashing_node exited during start-up (code 1); last lines of ")
    assert "RuntimeError: boom before reporting anything" in problem


def test_a_returned_exit_status_is_the_exit_code(group_of):
    problem = group_of("returning_node").wait_started(timeout_s=60)
    assert "returning_node exited during start-up (code 3)" in problem


def test_silence_past_the_timeout_is_a_reason(group_of):
    t0 = time.monotonic()
    problem = group_of("silent_node").wait_started(timeout_s=1.0)
    assert problem.startswith("silent_node did not report ready within 1 s")
    assert time.monotonic() - t0 < 30


def test_a_node_that_dies_later_is_a_problem(group_of):
    group = group_of("ready_node")
    assert group.wait_started(timeout_s=60) == ""
    os.kill(group.nodes[0].process.pid, signal.SIGKILL)
    group.nodes[0].process.wait(timeout=10)
    assert group.first_problem().startswith("ready_node exited while running (code -9)")


def test_a_stale_status_file_is_not_read_as_this_runs(group_of, tmp_path):
    logs = tmp_path / "logs0"
    logs.mkdir()
    (logs / "silent_node.status").write_text("ready\n")
    assert group_of("silent_node").wait_started(timeout_s=1.0).startswith("silent_node did not report ready")
    assert not Path(logs / "silent_node.status").exists()
