"""``molmoact2-ros eval``: the real tiny MolmoAct2 on real MCAP bags (written with rosbags), scored against
what the bag recorded; the report files; every kind of bad bag stops with the bag and topic named, keeping
what was evaluated before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("rosbags")
pytest.importorskip("matplotlib")

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from molmoact2_ros.backends.policy.inference import PolicyInference, input_limits, load_runtime
from molmoact2_ros.bags.eval import EvalOptions, evaluate_bag
from molmoact2_ros.bags.eval_cli import add_eval
from molmoact2_ros.core.embodiment import load_embodiment

EMB = load_embodiment("so101")
TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
RATE = EMB.control_rate_hz
T0 = 1_700_000_000.0
H, W = 48, 64  # small frames: the processor resizes anyway, and the test stays fast
INSTRUCTION = "pick up the cube"


def _stamp(t: float):
    sec = int(t)
    return T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9))


def _header(t: float, frame_id: str = ""):
    return T["std_msgs/msg/Header"](stamp=_stamp(t), frame_id=frame_id)


def frame(i: int, cam: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = (x * 4 + i * 3) % 256
    img[..., 1] = (y * 5 + cam * 60) % 256
    img[..., 2] = (i * 7) % 256
    return img


def trajectory(t: np.ndarray) -> np.ndarray:
    """A smooth motion inside the limits: the "recorded" joint positions at times ``t``."""
    t = np.atleast_1d(t) - T0
    return EMB.home + 0.1 * np.sin(2 * np.pi * 0.3 * t[:, None] + np.arange(EMB.dof)[None, :])


def write_bag(path: Path, seconds: float = 2.0, *, joint_names: list[str] | None = None, cameras=None,
              js_type: str = "sensor_msgs/msg/JointState", chunk_every: int = 6, chunk_offset: float = 0.0,
              jump_at: float | None = None, alternate: bool = False) -> Path:
    """cameras + joint_states + commanded at the control rate, the instruction, and a recorded chunk every
    ``chunk_every`` frames (positions = the trajectory ahead, + ``chunk_offset`` on joint 1)."""
    names = joint_names or EMB.joint_names
    cams = EMB.camera_names if cameras is None else cameras
    steps = EMB.chunk.n_action_steps
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c: w.add_connection(f"/cameras/{c}/image_raw", "sensor_msgs/msg/Image", typestore=TS) for c in cams}
        js = w.add_connection("/joint_states", js_type, typestore=TS)
        cmd = w.add_connection("/molmoact2_driver/commanded", "sensor_msgs/msg/JointState", typestore=TS)
        ins = w.add_connection("/molmoact2/instruction", "std_msgs/msg/String", typestore=TS)
        chk = w.add_connection("/molmoact2/action_chunk", "trajectory_msgs/msg/JointTrajectory", typestore=TS)
        ns = lambda t: round(t * 1e9)  # noqa: E731
        w.write(ins, ns(T0 - 0.5), TS.serialize_cdr(T["std_msgs/msg/String"](data=INSTRUCTION), "std_msgs/msg/String"))
        for i in range(int(seconds * RATE)):
            t = T0 + i / RATE
            st = t if jump_at is None or t < T0 + jump_at else t - 10.0
            pos = trajectory(np.array([t]))[0]
            if js_type == "sensor_msgs/msg/JointState":
                msg = T[js_type](header=_header(st), name=list(names), position=pos, velocity=np.zeros(0),
                                 effort=np.zeros(0))
            else:
                msg = T[js_type](data="not a joint state")
            w.write(js, ns(t + 0.001), TS.serialize_cdr(msg, js_type))
            w.write(cmd, ns(t + 0.001), TS.serialize_cdr(T["sensor_msgs/msg/JointState"](
                header=_header(t), name=list(EMB.joint_names), position=pos, velocity=np.zeros(0),
                effort=np.zeros(0)), "sensor_msgs/msg/JointState"))
            for k, c in enumerate(cams):
                img = frame(i, k)
                msg = T["sensor_msgs/msg/Image"](header=_header(t, c), height=H, width=W, encoding="rgb8",
                                                 is_bigendian=0, step=W * 3, data=img.reshape(-1))
                w.write(conns[c], ns(t + 0.002 + 0.001 * k), TS.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            if i % chunk_every == 0:
                ahead = trajectory(t + np.arange(steps) / RATE)
                ahead[:, 1] += chunk_offset if not alternate or (i // chunk_every) % 2 else 0.0
                points = [T["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=row, velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                    time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=round(k * 1e9 / RATE)))
                    for k, row in enumerate(ahead)]
                msg = T["trajectory_msgs/msg/JointTrajectory"](header=_header(t), joint_names=list(EMB.joint_names),
                                                               points=points)
                w.write(chk, ns(t + 0.04), TS.serialize_cdr(msg, "trajectory_msgs/msg/JointTrajectory"))
    return path


@pytest.fixture(scope="module")
def loaded():
    return load_runtime(EMB, "tiny", seed=0, torch_num_threads=1)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return write_bag(tmp_path_factory.mktemp("bags") / "good")


def _make(loaded):
    from molmoact2_ros.backends.policy.inference import restart_noise

    def make() -> PolicyInference:
        restart_noise(loaded.runtime, 0)
        return PolicyInference(loaded.runtime, EMB, input_limits(EMB), clock=lambda: 0.0)
    return make


def test_shadow_scores_recorded_chunks_exactly(tmp_path):
    # Recorded chunks = the commanded trajectory ahead: zero error; offset on one joint: that offset, there only.
    exact = evaluate_bag(write_bag(tmp_path / "exact", 1.0), EMB, None, EvalOptions(shadow=True))
    assert not exact.error and exact.metrics["decisions"] == 5
    assert exact.metrics["error_overall"]["max"] < 1e-6
    off = evaluate_bag(write_bag(tmp_path / "off", 1.0, chunk_offset=0.05), EMB, None, EvalOptions(shadow=True))
    by_joint = off.metrics["error_by_joint"]
    assert by_joint[EMB.joint_names[1]]["mean"] == pytest.approx(0.05, abs=1e-6)
    assert all(by_joint[n]["max"] < 1e-6 for n in EMB.joint_names if n != EMB.joint_names[1])
    assert off.metrics["splice_jumps"]["overall"]["max"] < 1e-6  # every chunk equally off: continuous splices
    # Every other chunk off: each splice jumps by the offset on that joint.
    alt = evaluate_bag(write_bag(tmp_path / "alt", 1.0, chunk_offset=0.05, alternate=True), EMB, None,
                       EvalOptions(shadow=True))
    jumps = alt.metrics["splice_jumps"]
    assert jumps["count"] == 4 and jumps["by_joint"][EMB.joint_names[1]]["mean"] == pytest.approx(0.05, abs=1e-6)
    assert jumps["by_joint"][EMB.joint_names[0]]["max"] < 1e-6
    assert off.metrics["recorded_latency_ms"]["p50"] == pytest.approx(40.0, abs=0.01)


def test_policy_eval_decides_at_recorded_stamps_deterministically(bag, loaded):
    a = evaluate_bag(bag, EMB, _make(loaded), EvalOptions())
    assert not a.error, a.error
    assert a.metrics["decisions"] == 10 and a.metrics["decisions_missed"] == 0
    assert [p.stamp_s for p in a.predictions] == sorted(r.chunk.stamp_s for r in a.recorded)
    assert a.metrics["reference"] == "/molmoact2_driver/commanded"
    # The tiny policy starts every chunk at the state it was given (to within its quantisation): the first
    # step's error against the commanded trajectory is small, later steps drift along its own motion.
    assert a.metrics["error_by_step"][0] < 0.02
    assert np.isfinite(a.metrics["error_overall"]["mean"])
    b = evaluate_bag(bag, EMB, _make(loaded), EvalOptions())
    for p, q in zip(a.predictions, b.predictions, strict=True):
        assert np.array_equal(p.positions, q.positions)
    periodic = evaluate_bag(bag, EMB, _make(loaded), EvalOptions(period_s=0.5, reference="joint_states"))
    assert periodic.metrics["decisions"] == 4 and periodic.metrics["reference"] == "/joint_states"


def test_cli_writes_html_and_json(bag, tmp_path, loaded, capfd):
    import argparse

    parser = argparse.ArgumentParser()
    add_eval(parser.add_subparsers())
    out = tmp_path / "report"
    args = parser.parse_args(["eval", str(bag), str(bag), "--checkpoint", "tiny", "--output", str(out),
                              "--quiet", "--torch-threads", "1"])
    assert args.func(args) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err  # --quiet: no bar, not even transformers'
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "all bags" in page and "http" not in page
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["aggregate"]["bags"] == 2 and doc["aggregate"]["decisions"] == 20
    # Each bag starts from the seeded noise of a fresh node: identical results for the same bag.
    assert doc["bags"][0]["error_overall"] == doc["bags"][1]["error_overall"]
    # Units are stated: robot space, each joint's own unit.
    assert doc["bags"][0]["space"] == "robot" and doc["bags"][0]["units"] == {j.name: j.unit for j in EMB.joints}
    assert "<th>unit</th>" in page and "<td>rad</td>" in page


def _truncated(bag: Path, tmp: Path) -> Path:
    dst = tmp / "truncated"
    dst.mkdir()
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    (dst / mcap.name).write_bytes(data[: len(data) // 2])
    return dst / mcap.name


BAD = {
    "missing camera": (lambda p: write_bag(p, 0.5, cameras=["front"]), "/cameras/wrist/image_raw", "not in the bag"),
    "wrong type": (lambda p: write_bag(p, 0.5, js_type="std_msgs/msg/String"), "/joint_states",
                   "expected sensor_msgs/msg/JointState"),
    "other arm": (lambda p: write_bag(p, 0.5, joint_names=[f"left_joint{k}" for k in range(1, 7)]),
                  "/joint_states", "another arm's bag"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_bag_names_bag_and_topic(case, tmp_path):
    make, topic, words = BAD[case]
    bag = make(tmp_path / "bad")
    # Scored against /joint_states: in "other arm" only that topic carries the foreign joints.
    result = evaluate_bag(bag, EMB, None, EvalOptions(shadow=True, reference="joint_states"))
    assert str(bag) in result.error and topic in result.error and words in result.error, result.error
    assert "\n" not in result.error


def test_clock_jump_and_truncation_keep_what_was_evaluated(bag, tmp_path, loaded):
    jumped = evaluate_bag(write_bag(tmp_path / "jump", 2.0, jump_at=1.0), EMB, _make(loaded),
                          EvalOptions(reference="commanded"))
    assert "/joint_states" in jumped.error and "jumps backwards" in jumped.error
    assert 3 <= jumped.metrics["decisions"] < 10 and jumped.metrics["complete"] is False
    truncated = evaluate_bag(_truncated(bag, tmp_path), EMB, _make(loaded), EvalOptions())
    assert "truncated" in truncated.error and "truncated" in truncated.bag
    out = tmp_path / "r"
    from molmoact2_ros.bags.report import write_report

    html_path, json_path = write_report([jumped, truncated], out, {"test": True})
    assert "stopped:" in html_path.read_text()
    assert json.loads(json_path.read_text())["aggregate"]["complete"] == 0


def test_missing_bag_is_one_line(tmp_path):
    result = evaluate_bag(tmp_path / "nope", EMB, None, EvalOptions(shadow=True))
    assert "does not exist" in result.error and str(tmp_path / "nope") in result.error
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_cli_skips_unusable_bags_with_a_line_each(bag, tmp_path, loaded, monkeypatch, capsys):
    """Bags are opened and checked before the model loads; an unusable one is left out with one line, listed in
    the report with its reason, and the run exits 1. The known noise (processor deprecation, read-only array)
    does not reach stderr."""
    import argparse

    import molmoact2_ros.bags.eval_cli as eval_cli

    monkeypatch.setattr(eval_cli, "_policy_factory", lambda emb, args: (_make(loaded), loaded))
    empty = tmp_path / "empty"
    empty.mkdir()
    parser = argparse.ArgumentParser()
    add_eval(parser.add_subparsers())
    out = tmp_path / "report"
    args = parser.parse_args(["eval", str(empty), str(bag), "--checkpoint", "tiny", "--output", str(out), "--quiet"])
    assert args.func(args) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"eval: skipped: {empty}: is not a rosbag2 directory (no metadata.yaml); "
                                         "pass the .mcap file itself or a bag directory"], captured.err
    assert "x real time (evaluation only" in captured.out
    doc = json.loads((out / "metrics.json").read_text())
    assert [b["bag"] for b in doc["bags"]] == [str(empty), str(bag)]  # the order given
    assert doc["aggregate"]["complete"] == 1 and "no metadata.yaml" in doc["bags"][0]["error"]
