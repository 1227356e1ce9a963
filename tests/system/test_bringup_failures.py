"""`molmoact2-ros bringup` (and demo) as a user runs them: "started" means every node is up, and a node
that does not start, or dies later, fails the command with the node's reason and a non-zero status.

Each case starts real node processes over DDS on loopback, in a ROS domain of its own. A host without
the `policy` extra is a real interpreter on which torch and the rest of the extra cannot be imported
(a directory of stand-ins that raise ModuleNotFoundError, first on PYTHONPATH).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from molmoact2_ros.core.embodiment import resolve_embodiment_path
from molmoact2_ros.nodes.runtime_env import private_domain_id

pytestmark = [pytest.mark.system, pytest.mark.ros]

CLI = [sys.executable, "-m", "molmoact2_ros.cli"]
POLICY_EXTRA = ("torch", "transformers", "lerobot", "safetensors", "huggingface_hub")
_domains = iter(range(1, 1000))


class Run:
    """A running CLI command; stdout and stderr are read as they come."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stdout(self) -> str:
        """The command's own lines; the nodes' output (prefixed ``[node_name]``) is :attr:`node_output`."""
        return "".join(ln for ln in self.out if not ln.startswith("[molmoact2_"))

    @property
    def node_output(self) -> str:
        return "".join(ln for ln in self.out if ln.startswith("[molmoact2_"))

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout or self.proc.poll() is not None:
                break
            time.sleep(0.05)
        return text in self.stdout

    def finish(self, timeout: float) -> int:
        """Its exit status; if it is still running after ``timeout``, Ctrl-C (it stops its nodes), then fail."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.interrupt()
            pytest.fail(f"still running after {timeout:g} s:\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")
        for r in self._readers:
            r.join(timeout=5.0)
        return code

    def interrupt(self) -> int:
        """Ctrl-C and its exit status. If it is still running 30 s later, SIGTERM (it stops its nodes the same
        way) and fail: a test must not leave a station running behind it."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30.0)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            raise
        finally:
            for r in self._readers:
                r.join(timeout=5.0)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # A domain per command: concurrent cases (and other test processes) never hear each other's nodes.
    env["ROS_DOMAIN_ID"] = str(private_domain_id(os.getpid() * 7 + next(_domains)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.update(extra)
    return env


def _error_line(run: Run) -> str:
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("molmoact2-ros: error:")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def _assert_failed_without_starting(run: Run, code: int, node: str) -> str:
    assert code == 1, f"exit {code}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "started" not in run.stdout.replace("starting", ""), run.stdout
    line = _error_line(run)
    assert line.startswith(f"molmoact2-ros: error: {node} did not start: "), line
    assert "Traceback" not in run.stderr
    return line


@pytest.fixture
def without_policy_extra(tmp_path) -> Path:
    """A PYTHONPATH entry that makes this interpreter a host without the `policy` extra."""
    root = tmp_path / "no_policy_extra"
    for name in POLICY_EXTRA:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            "raise ModuleNotFoundError(f'No module named {__name__!r}', name=__name__)\n")
    return root


def test_policy_node_without_torch_says_what_to_install(tmp_path, without_policy_extra):
    run = Run(["bringup", "--no-perception", "--no-driver", "--checkpoint", "tiny", "--log-dir", str(tmp_path)],
              _env(PYTHONPATH=str(without_policy_extra)))
    line = _assert_failed_without_starting(run, run.finish(120), "molmoact2_policy")
    assert "torch" in line and "`policy` extra" in line and "pip install 'molmoact2_ros[policy]'" in line
    assert "huggingface_hub'" not in line  # not the symptom of the first import that happened to fail
    log = (tmp_path / "molmoact2_policy.log").read_text()
    assert "[FATAL]" in log and "did not start: configure failed: the policy node needs torch" in log


def test_policy_node_with_a_missing_checkpoint_exits_with_the_reason(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    run = Run(["bringup", "--no-perception", "--no-driver", "--checkpoint", str(missing), "--log-dir",
               str(tmp_path / "logs")], _env())
    line = _assert_failed_without_starting(run, run.finish(120), "molmoact2_policy")
    assert "configure failed" in line and str(missing) in line


def test_perception_node_with_a_bad_parameter_exits_with_the_reason(tmp_path):
    run = Run(["bringup", "--no-policy", "--no-driver", "--camera-source", "webcam", "--log-dir", str(tmp_path)],
              _env())
    line = _assert_failed_without_starting(run, run.finish(60), "molmoact2_perception")
    assert "parameter source: 'webcam' is not allowed" in line


def test_perception_node_whose_camera_does_not_open_exits_with_the_reason(tmp_path):
    # The parameters are valid; the autostart's configure fails opening the camera (no such recording).
    bag = tmp_path / "no_such_recording"
    emb = yaml.safe_load(resolve_embodiment_path("so101").read_text())
    for cam in emb["cameras"]:
        cam.update(source="bag", device=str(bag))
    path = tmp_path / "so101_bag.yaml"
    path.write_text(yaml.safe_dump(emb))
    run = Run(["bringup", "--embodiment", str(path), "--no-policy", "--no-driver", "--log-dir", str(tmp_path / "l")],
              _env())
    line = _assert_failed_without_starting(run, run.finish(60), "molmoact2_perception")
    assert "configure failed: camera front" in line and "no_such_recording" in line


def test_driver_with_an_unknown_backend_exits_with_the_reason(tmp_path):
    run = Run(["bringup", "--no-perception", "--no-policy", "--backend", "bogus", "--log-dir", str(tmp_path)], _env())
    line = _assert_failed_without_starting(run, run.finish(60), "molmoact2_driver")
    assert "bogus" in line


def test_a_node_that_dies_while_running_fails_bringup_with_its_log(tmp_path):
    run = Run(["bringup", "--no-policy", "--no-driver", "--log-dir", str(tmp_path)], _env())
    try:
        assert run.wait_for_line("started molmoact2_perception", timeout=60), run.stdout + run.stderr
        assert "molmoact2_perception: running" in run.stdout
        assert (tmp_path / "molmoact2_perception.status").read_text().strip() == "ready"
        node_pid = int(Path(f"/proc/{run.proc.pid}/task/{run.proc.pid}/children").read_text().split()[0])
        # Even a clean exit (SIGTERM: the node stops its cameras and exits 0) is a node missing.
        os.kill(node_pid, signal.SIGTERM)
        code = run.finish(60)
    finally:
        if run.proc.poll() is None:
            run.interrupt()
    assert code == 1, run.stdout + run.stderr
    assert "molmoact2-ros: error: molmoact2_perception exited while running (code 0)" in run.stderr
    assert "active: publishing /cameras/front/image_raw" in run.stderr  # the log tail


@pytest.mark.torch
def test_started_means_every_node_is_running_and_ctrl_c_exits_0(tmp_path):
    run = Run(["bringup", "--checkpoint", "tiny", "--log-dir", str(tmp_path)], _env())
    try:
        assert run.wait_for_line("started ", timeout=240), run.stdout + run.stderr
        for name in ("molmoact2_perception", "molmoact2_policy", "molmoact2_driver"):
            assert f"  {name}: running" in run.stdout
            assert (tmp_path / f"{name}.status").read_text().strip() == "ready"
            assert run.proc.poll() is None
        policy_log = (tmp_path / "molmoact2_policy.log").read_text()
        # Only after the model loaded and the node went active did bringup say "started".
        assert "active: publishing chunks" in policy_log
        # The nodes' output reaches the terminal too, one prefix per node, as under ros2 launch.
        assert any(ln.startswith("[molmoact2_policy] ") and "active: publishing chunks" in ln
                   for ln in run.node_output.splitlines()), run.node_output
    finally:
        code = run.interrupt()
    assert code == 0, run.stdout + run.stderr
    assert "error" not in run.stderr


@pytest.mark.torch
def test_demo_fails_with_the_reason_when_a_node_does_not_start(tmp_path):
    emb = yaml.safe_load(resolve_embodiment_path("so101").read_text())
    # The real Feetech backend on a serial port that is not there (no arm on this machine).
    emb["hardware"]["backend"] = "feetech"
    emb["hardware"]["params"]["feetech"]["port"] = str(tmp_path / "ttyACM_missing")
    path = tmp_path / "so101_feetech.yaml"
    path.write_text(yaml.safe_dump(emb))
    run = Run(["demo", "--quiet", "--embodiment", str(path), "--hardware", "mock", "--duration", "5",
               "--log-dir", str(tmp_path / "l")], _env())
    code = run.finish(300)
    assert code == 1, run.stdout + run.stderr
    out = run.stdout + run.stderr
    # The exit code and log tail, or (with ProcessGroup.first_problem) the reason the node reported.
    assert re.search(r"molmoact2_driver (exited during start-up \(code 1\)|did not start: )", out), out
    assert "did not start" in out and "feetech" in out and "ttyACM_missing" in out
