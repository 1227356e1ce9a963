"""The main job end to end: `molmoact2-ros demo` as a user runs it, nodes as separate processes; and the
demo monitor's motion and safety analysis on recorded samples."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _travel(out: str) -> dict[str, float]:
    pairs = (item.rsplit(" ", 1) for item in _summary_value(out, "joint travel (robot units)").split(", "))
    return {name: float(value) for name, value in pairs}


# Rejection reasons that say "late", not "malformed" (core/chunk_validation.py REJECT_*).
LATE_REASONS = {"too_old", "expired", "inactive"}


# Every embodiment also runs this loop on MuJoCo (test_demo_sim.py): the mock arm once is enough here.
@pytest.mark.parametrize(("embodiment", "hardware"), [
    ("so101", "mock"),
    # The real backends through their real libraries, against emulated devices (issue 9).
    ("so101", "emulated"), ("yam_bimanual", "emulated"), ("franka_droid", "emulated"),
])
def test_demo_closes_the_loop_and_moves_the_arm_safely(embodiment, hardware):
    from molmoact2_ros.core.embodiment import load_embodiment

    emb = load_embodiment(embodiment)
    res = _demo("--embodiment", embodiment, "--duration", "8", "--hardware", hardware)
    assert res.returncode == 0, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-3000:]}"
    out = res.stdout
    assert "molmoact2-ros demo summary" in out
    backend = {"mock": "mock", "emulated": {"so": "feetech", "ya": "i2rt", "fr": "franka"}[embodiment[:2]]}[hardware]
    assert _summary_value(out, "hardware") == backend + (" (emulated device)" if hardware == "emulated" else "")
    assert _summary_value(out, "result").startswith("OK")
    received, rejected, executed = (int(x) for x in _summary_value(out, "chunks received / rejected / executed")
                                    .split(" / "))
    assert executed >= 1 and received >= executed
    # The policy only emits well-formed chunks: the driver may refuse one only for arriving late (an overloaded
    # machine: inference > the chunk's age limit), never for its content.
    reasons = dict(r.rsplit(" ", 1) for r in _summary_value(out, "chunks rejected, by reason").split(", ")) \
        if rejected else {}
    assert set(reasons) <= LATE_REASONS, f"chunks rejected for their content: {reasons}\n{out}"
    assert int(_summary_value(out, "inferences")) >= 2
    assert int(_summary_value(out, "control ticks (since the driver started)")) > 50
    # The arm moved: the tiny policy circles pairs of joints (about half a radian each per 6 s on a quiet
    # machine; how far in a fixed time depends on how busy the machine is, so the bar is the demo's own:
    # more than 2% of the joint's range, on at least four revolute joints).
    travel = _travel(out)
    assert list(travel) == emb.joint_names
    span = {j.name: j.position_limits[1] - j.position_limits[0] for j in emb.joints}
    revolute = [j.name for j in emb.joints if j.type == "revolute"]
    assert sum(travel[n] > 0.02 * span[n] for n in revolute) >= 4, travel
    moved, total = (int(x) for x in _summary_value(out, "joints moved (> 2% of range)").split(" of "))
    assert moved >= 4 and total == emb.dof
    # Safely: every commanded value the monitor saw was inside the limits and within the per-tick
    # velocity limit, the driver never faulted or e-stopped, and the arm tracked its commands.
    checked, violations = (int(x) for x in _summary_value(out, "commanded values checked / safety violations")
                           .split(" / "))
    assert checked > 50 and violations == 0
    assert _summary_value(out, "driver faults / e-stops") == "0 / 0"
    assert _summary_value(out, "driver state at end") not in ("ESTOP", "FAULT")
    value, joint = _summary_value(out, "largest tracking error |measured - commanded|").split()[:2]
    limit = emb.max_tracking_error[emb.joint_names.index(joint.strip("(,"))]
    assert 0 < float(value) < limit / 2  # far from the driver's tracking-error fault


# ---- the monitor's analysis, on recorded samples (no processes) ------------------------------------

def _samples(positions, rate_hz, t0_ns=10**18):
    period = int(1e9 / rate_hz)
    return [(t0_ns + i * period, np.asarray(p, dtype=float)) for i, p in enumerate(positions)]


def test_monitor_reports_travel_and_tracking_error():
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.demo import analyse_motion, judge

    emb = load_embodiment("so101")
    step = 0.25 * emb.max_velocity / emb.tick_rate_hz
    commanded = [emb.home + k * step * np.eye(emb.dof)[0] for k in range(40)]
    measured = [c - 0.004 for c in commanded]
    report = analyse_motion(emb, _samples(measured, emb.tick_rate_hz), _samples(commanded, emb.tick_rate_hz))
    assert report.violations == 0 and report.commanded_samples == 40 and report.paired_samples == 40
    np.testing.assert_allclose(report.travel[0], 39 * step[0])
    assert report.joints_moved == 1 and report.moved[0]
    np.testing.assert_allclose(report.tracking_error, 0.004)
    assert judge({"chunks_executed": "3", "faults": "0", "estops": "0", "state": "RUNNING"}, report) == []
    still = analyse_motion(emb, _samples([emb.home] * 40, emb.tick_rate_hz),
                           _samples([emb.home] * 40, emb.tick_rate_hz))
    assert any("nothing moved" in p for p in judge({"chunks_executed": "3"}, still))


def test_monitor_flags_steps_and_positions_beyond_the_limits():
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.demo import analyse_motion, judge

    emb = load_embodiment("so101")
    limit = emb.max_velocity / emb.tick_rate_hz
    start = emb.home.copy()
    start[5] = emb.upper[5] - 0.005  # the gripper just inside its upper limit
    commanded = [start.copy() for _ in range(10)]
    for k in range(5, 10):
        commanded[k][2] += 1.5 * limit[2]  # elbow: one and a half steps in one tick, then stays
    for k in (8, 9):
        commanded[k][5] = emb.upper[5] + 0.01  # gripper: a small step, but beyond the limit, twice
    samples = _samples(commanded, emb.tick_rate_hz)
    report = analyse_motion(emb, samples, samples)
    assert report.violations == 3, report.violation_examples
    assert "elbow_flex moved" in report.violation_examples[0]
    problems = judge({"chunks_executed": "3", "faults": "1", "estops": "0", "state": "FAULT"}, report)
    assert any("3 safety violation(s)" in p for p in problems)
    assert any("faulted or was e-stopped" in p for p in problems)


def test_monitor_allows_lost_samples_for_the_ticks_they_span():
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.demo import analyse_motion

    emb = load_embodiment("franka_droid")
    limit = emb.max_velocity / emb.tick_rate_hz
    inward = np.where(emb.upper - emb.home >= emb.home - emb.lower, 1.0, -1.0)
    ramp = [emb.home + inward * k * 0.9 * limit for k in range(30)]
    samples = _samples(ramp, emb.tick_rate_hz)
    kept = samples[:10] + samples[13:]  # three ticks lost on both topics: a 3.6-step jump over 4 ticks
    assert analyse_motion(emb, kept, kept).violations == 0
    measured_only = samples  # lost on the commanded topic only: /joint_states still shows the ticks
    assert analyse_motion(emb, measured_only, kept).violations == 0
    squeezed = [*kept[:10], (kept[9][0] + 1, kept[10][1]), *kept[11:]]  # the same jump, one tick apart
    assert analyse_motion(emb, squeezed, squeezed).violations >= 1


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


def test_ctrl_c_stops_the_demo_and_still_prints_its_summary():
    """SIGINT during the loop: the nodes stop cleanly, the summary covers what ran, exit status 130."""
    import os
    import signal

    proc = subprocess.Popen([*CLI, "demo", "--quiet", "--hardware", "mock", "--duration", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stdout:  # blocks until the demo says the loop runs (or exits)
            lines.append(line)
            if line.startswith("graph running"):
                break
        assert any(x.startswith("graph running") for x in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "molmoact2-ros demo summary" in out
    assert _summary_value(out, "result").startswith("STOPPED: interrupted (Ctrl-C) after"), out
    assert int(_summary_value(out, "control ticks (since the driver started)")) > 0
    assert "Traceback" not in out


def test_summary_explains_fewer_chunks_received_than_published():
    from molmoact2_ros.demo import DRIVER, POLICY, DemoResult, format_summary

    def summary(published: int, received: int) -> str:
        diag = {POLICY: {"chunks_published": str(published)}, DRIVER: {"chunks_received": str(received)}}
        return format_summary("so101", DemoResult(ok=True, reason="ok", diagnostics=diag, chunks_seen=published))

    assert "keeps only the newest chunk" in summary(12, 7)
    assert "keeps only the newest chunk" not in summary(12, 11)  # one may be in flight at the last count
