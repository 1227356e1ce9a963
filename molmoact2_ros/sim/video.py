"""``--record-video``: an MP4 (or GIF) of a simulated run, the scene camera beside its joint plots.

Each video frame is the camera image (as the policy received it) on the left and, on the right, one
small plot per joint of the commanded (dashed) and measured (solid) position over the whole run, with a
cursor at the frame's time. The plots are drawn once with matplotlib and only the cursor moves per frame
(a column of pixels), so writing stays cheap; frames are taken at :data:`VIDEO_FPS`, not at the camera
rate. MP4 goes through imageio-ffmpeg's bundled ffmpeg (H.264), GIF through imageio's Pillow writer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from molmoact2_ros.cli_checks import check_writable
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError

VIDEO_FPS = 5.0  # frames kept per second of run (the camera may run faster)
FORMATS = (".mp4", ".gif")
PLOT_WIDTH_PX = 480
MIN_FRAMES = 2

Samples = Sequence[tuple[int, np.ndarray]]  # (stamp ns, joint positions), embodiment order


def check_video_path(path: str) -> Path:
    """Refuse, before the run, a path whose format or folder cannot work (one clear line)."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise ConfigError(f"--record-video {path}: use a file ending in {' or '.join(FORMATS)}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--record-video {path}: folder {folder} does not exist")
    # The CLI's one writability probe (permission bits alone mislead: root, /proc, read-only mounts).
    check_writable(p, "--record-video", what="video", is_file=True)
    return p


def frame_from_image(msg) -> np.ndarray:
    """An HxWx3 uint8 RGB copy of an rgb8/bgr8 sensor_msgs/Image."""
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    image = data.reshape(msg.height, msg.step)[:, :msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[..., ::-1].copy() if msg.encoding == "bgr8" else image.copy()


def _plots(emb: EmbodimentConfig, measured: Samples, commanded: Samples, t0: int, t1: int,
           height: int) -> tuple[np.ndarray, Callable[[float], int]]:
    """The joints' plots as an RGB image, and the function from a time (s since t0) to its pixel column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dof = emb.dof
    dpi = 100
    fig = Figure(figsize=(PLOT_WIDTH_PX / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)  # off-screen, whatever matplotlib backend the process has chosen
    axes = fig.subplots(dof, 1, sharex=True)
    axes = np.atleast_1d(axes)
    span_s = max((t1 - t0) / 1e9, 1e-3)
    for j, ax in enumerate(axes):
        for samples, style, label in ((commanded, "--", "commanded"), (measured, "-", "measured")):
            if samples:
                t = np.array([(s - t0) / 1e9 for s, _ in samples])
                ax.plot(t, [q[j] for _, q in samples], style, linewidth=1.0, label=label)
        ax.set_xlim(0.0, span_s)
        ax.set_ylim(emb.lower[j], emb.upper[j])
        ax.set_ylabel(emb.joint_names[j], fontsize=6, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=5)
    axes[0].legend(fontsize=5, loc="upper right")
    axes[-1].set_xlabel("s", fontsize=6)
    fig.subplots_adjust(left=0.3, right=0.98, top=0.98, bottom=0.06, hspace=0.15)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    left, right = (axes[0].get_position().x0 * image.shape[1], axes[0].get_position().x1 * image.shape[1])

    def column(t_s: float) -> int:
        return round(left + (right - left) * min(max(t_s / span_s, 0.0), 1.0))

    return image, column


def compose(frames: Samples, emb: EmbodimentConfig, measured: Samples, commanded: Samples) -> list[np.ndarray]:
    """The video frames: camera image | joint plots with a cursor at the frame's time (even sizes for H.264)."""
    if len(frames) < MIN_FRAMES:
        raise MolmoAct2RosError(f"only {len(frames)} camera frame(s) recorded; a video needs at least {MIN_FRAMES}")
    frames = sorted(frames, key=lambda f: f[0])
    stamps = [s for s, _ in frames] + [s for s, _ in measured] + [s for s, _ in commanded]
    t0, t1 = min(stamps), max(stamps)
    height = frames[0][1].shape[0]
    plots, column = _plots(emb, measured, commanded, t0, t1, height)
    out = []
    for stamp, image in frames:
        if image.shape[0] != height:
            continue  # a resolution change mid-run: keep the first size
        panel = plots.copy()
        x = column((stamp - t0) / 1e9)
        panel[:, max(0, x - 1):x + 1] = (220, 30, 30)
        frame = np.concatenate([image, panel], axis=1)
        h, w = frame.shape[:2]
        out.append(np.ascontiguousarray(frame[:h - h % 2, :w - w % 2]))
    return out


def write_video(path: str, frames: Samples, emb: EmbodimentConfig, measured: Samples, commanded: Samples, *,
                camera: str = "", progress: Callable[[str], object] = print) -> str:
    """Write the video; returns a one-line description of what was written."""
    import imageio.v2 as imageio
    from tqdm import tqdm

    target = check_video_path(path)
    video = compose(frames, emb, measured, commanded)
    if target.suffix.lower() == ".gif":
        writer = imageio.get_writer(str(target), mode="I", duration=1000.0 / VIDEO_FPS, loop=0)
    else:
        # macro_block_size 1: our frames are already even-sized; no silent rescaling.
        writer = imageio.get_writer(str(target), fps=VIDEO_FPS, codec="libx264", quality=6, macro_block_size=1,
                                    pixelformat="yuv420p")
    with writer:
        for frame in tqdm(video, desc=f"writing {target.name}", unit="frame", leave=False,
                          disable=len(video) < 50):
            writer.append_data(frame)
    h, w = video[0].shape[:2]
    text = f"{target} ({len(video)} frames, {w}x{h}, {VIDEO_FPS:g} fps{', camera ' + camera if camera else ''})"
    progress(f"video: {text}")
    return text
