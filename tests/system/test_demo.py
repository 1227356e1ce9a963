"""The main job end to end: `molmoact2-ros demo` as a user runs it, nodes as separate processes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("rclpy")
pytestmark = [pytest.mark.system, pytest.mark.ros, pytest.mark.torch]

CLI = [sys.executable, "-m", "molmoact2_ros.cli"]


def _demo(*args, timeout=400):
    return subprocess.run([*CLI, "demo", "--quiet", *args], capture_output=True, text=True, timeout=timeout)


def _summary_value(out: str, key: str) -> str:
    m = re.search(rf"^\s+{re.escape(key)}\s+(.*)$", out, re.MULTILINE)
    assert m, f"{key!r} missing from summary:\n{out}"
    return m.group(1).strip()


@pytest.mark.parametrize("embodiment", ["so101", "yam_bimanual", "franka_droid", "so100"])
def test_demo_closes_the_loop(embodiment):
    res = _demo("--embodiment", embodiment, "--duration", "6")
    assert res.returncode == 0, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-3000:]}"
    out = res.stdout
    assert "molmoact2-ros demo summary" in out
    assert _summary_value(out, "result").startswith("OK")
    received, rejected, executed = (int(x) for x in _summary_value(out, "chunks received / rejected / executed")
                                    .split(" / "))
    assert executed >= 1 and received >= executed
    assert rejected == 0  # the policy only emits well-formed chunks
    assert int(_summary_value(out, "inferences")) >= 2
    assert int(_summary_value(out, "control ticks")) > 50


def _bad_checkpoint_error(ckpt: str) -> str:
    res = _demo("--checkpoint", ckpt, "--duration", "1", timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_missing_checkpoint_dir_is_one_line(tmp_path):
    line = _bad_checkpoint_error(str(tmp_path / "nope"))
    assert "not found" in line and "nope" in line


def test_checkpoint_without_norm_stats_is_one_line(tiny_so101_copy):
    (tiny_so101_copy / "norm_stats.json").unlink()
    line = _bad_checkpoint_error(str(tiny_so101_copy))
    assert "norm_stats.json" in line


def test_checkpoint_without_the_tag_is_one_line(tiny_so101_copy):
    path = tiny_so101_copy / "norm_stats.json"
    stats = json.loads(path.read_text())
    stats["metadata_by_tag"] = {"franka_droid": stats["metadata_by_tag"]["so100_so101_molmoact2"]}
    path.write_text(json.dumps(stats))
    line = _bad_checkpoint_error(str(tiny_so101_copy))
    assert "so100_so101_molmoact2" in line and "franka_droid" in line


def test_malformed_embodiment_is_one_line(tmp_path):
    bad = tmp_path / "arm.yaml"
    bad.write_text("name: arm\ncontrol_rate_hz: -3\n")
    res = _demo("--embodiment", str(bad), "--duration", "1", timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "control_rate_hz" in lines[0] and str(bad) in lines[0]


@pytest.fixture
def tiny_so101_copy(tmp_path):
    import shutil

    from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint
    from molmoact2_ros.core.embodiment import load_embodiment

    src = ensure_tiny_checkpoint(load_embodiment("so101"))
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return Path(dst)
