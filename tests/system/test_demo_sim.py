"""`molmoact2-ros demo` on physics, as a user runs it: the sim node (MuJoCo scene, rendered cameras), the policy
node (real MolmoAct2 code, tiny checkpoint) and the driver (mujoco backend) as separate processes, per
embodiment (so101 with --record-video); the video's composition on recorded-like samples."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("rclpy")
pytest.importorskip("mujoco")
pytestmark = [pytest.mark.system, pytest.mark.ros, pytest.mark.torch]

CLI = [sys.executable, "-m", "molmoact2_ros.cli"]
# Software rendering on a 2-core host: a few frames per second are what the policy needs to close the loop.
CAMERA_FPS = "4"


def _demo(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "demo", "--quiet", "--camera-fps", CAMERA_FPS, *args], capture_output=True,
                          text=True, timeout=timeout)


def _read_video(path) -> list[np.ndarray]:
    """Decoded frames: MP4 through imageio-ffmpeg's reader, GIF through imageio."""
    if str(path).endswith(".gif"):
        import imageio.v2 as imageio

        return [np.asarray(f)[..., :3] for f in imageio.mimread(str(path))]
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    w, h = next(reader)["size"]
    return [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]


def _value(out: str, key: str) -> str:
    m = re.search(rf"^\s+{re.escape(key)}\s+(.*)$", out, re.MULTILINE)
    assert m, f"{key!r} missing from the summary:\n{out}"
    return m.group(1).strip()


# so101 runs with --record-video as well: one demo run checks both (each costs ~20 s on 2 cores).
@pytest.mark.parametrize("embodiment", ["so101", "so100", "franka_droid", "yam_bimanual"])
def test_demo_closes_the_loop_on_the_simulated_arm(embodiment, tmp_path):
    video = tmp_path / "run.mp4"
    proc = _demo("--embodiment", embodiment, "--duration", "8",
                 *(("--record-video", str(video)) if embodiment == "so101" else ()))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert _value(out, "hardware") == "simulation (mujoco backend)", out
    assert _value(out, "result").startswith("OK"), out
    received, _rejected, executed = (int(x) for x in _value(out, "chunks received / rejected / executed").split(" / "))
    assert executed >= 1 and received >= executed, out
    checked, violations = (int(x) for x in _value(out, "commanded values checked / safety violations").split(" / "))
    assert checked > 0 and violations == 0, out
    assert _value(out, "driver faults / e-stops") == "0 / 0", out
    moved, _total = (int(x) for x in re.match(r"(\d+) of (\d+)", _value(out, "joints moved (> 2% of range)")).groups())
    assert moved >= 1, out
    assert int(_value(out, "camera frames published")) > 0, out
    rtf = _value(out, "simulation: real-time factor / render ms / lag events").split(" / ")[0]
    assert float(rtf) > 0, out
    if embodiment == "so101":
        _check_video(video, out)


def _check_video(path, out: str) -> None:
    """--record-video wrote the front camera beside the joint plots."""
    assert path.is_file() and path.stat().st_size > 1000, out
    frames = _read_video(path)
    assert len(frames) >= 2
    h, w = frames[0].shape[:2]
    assert h == 480 and w == 640 + 480  # the 640x480 front camera, then the 480-wide plots
    # The camera half is the rendered scene (not blank) and the frames differ over the run (the cursor moves).
    assert frames[0][:, :640].std() > 5
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0
    assert _value(out, "video").startswith(str(path)), out


def test_record_video_needs_the_simulation_and_a_known_format(tmp_path):
    proc = _demo("--hardware", "mock", "--record-video", str(tmp_path / "x.mp4"), timeout=120)
    assert proc.returncode == 2 and "use it with --hardware sim" in proc.stderr
    proc = _demo("--record-video", str(tmp_path / "x.avi"), timeout=120)
    assert proc.returncode == 2 and ".mp4 or .gif" in proc.stderr


def test_video_frames_put_the_camera_beside_a_moving_cursor_on_the_joint_plots(tmp_path):
    """Fast, no ROS: the composition and both file formats on recorded-like samples."""
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.sim.video import compose, write_video

    emb = load_embodiment("so101")
    t = np.arange(0, 4e9, 1e8, dtype=np.int64)
    measured = [(int(s), emb.home + 0.2 * np.sin(s / 1e9)) for s in t]
    commanded = [(int(s), emb.home + 0.2 * np.sin(s / 1e9 + 0.1)) for s in t]
    frames = [(int(s), np.full((60, 80, 3), 40 + i, np.uint8)) for i, s in enumerate(t[::10])]
    video = compose(frames, emb, measured, commanded)
    assert len(video) == len(frames) and video[0].shape == (60, 80 + 480, 3)
    assert np.array_equal(video[0][:, :80], frames[0][1])  # the camera image, untouched
    cursor = [np.flatnonzero((v[:, 80:] == (220, 30, 30)).all(axis=2).any(axis=0)).mean() for v in video]
    assert all(a < b for a, b in itertools.pairwise(cursor)), "the cursor moves right with time"
    for name in ("run.mp4", "run.gif"):
        text = write_video(str(tmp_path / name), frames, emb, measured, commanded, progress=lambda _: None)
        assert text.startswith(str(tmp_path / name))
        assert len(_read_video(tmp_path / name)) == len(frames)
