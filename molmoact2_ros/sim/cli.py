"""``molmoact2-ros sim-frames``: a frame strip (every camera side by side) of an embodiment's simulation scene."""

from __future__ import annotations

import argparse
from pathlib import Path

SCENE_NAMES = ("so101", "so100", "yam_bimanual", "franka_droid")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the sim subcommands to the CLI (imports nothing heavy)."""
    p = sub.add_parser("sim-frames", help="render every camera of a simulation scene into one PNG strip",
                       description="Build the MuJoCo scene of an embodiment (model files from the installed sim "
                                   "packages), reset it with --seed and write its cameras side by side to --out.")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--embodiment", "-e", choices=SCENE_NAMES, help="one scene")
    group.add_argument("--all", action="store_true", help="one strip per embodiment: OUT is a directory, files "
                                                          "sim_<embodiment>.png")
    p.add_argument("--out", required=True, type=Path, help="PNG file (or directory with --all)")
    p.add_argument("--seed", type=int, default=0, help="object placement seed (default 0)")
    p.add_argument("--scale", type=float, default=0.5, help="image scale of the strip (default 0.5)")
    p.set_defaults(func=cmd_sim_frames)


def write_strip(embodiment_name: str, out: Path, seed: int = 0, scale: float = 0.5) -> Path:
    """Render every camera of the scene after ``reset(seed)`` and write them side by side to ``out``."""
    import imageio.v3 as iio
    import numpy as np

    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.sim.scenes import build_scene

    emb = load_embodiment(embodiment_name)
    with build_scene(emb) as scene:
        scene.reset(seed=seed)
        height = max(c.height for c in emb.cameras)
        frames = []
        for cam in emb.cameras:
            w, h = max(1, int(cam.width * scale)), max(1, int(cam.height * scale))
            img = scene.render_size(cam.name, w, h)
            pad = np.zeros((int(height * scale) - h, w, 3), np.uint8)
            frames.append(np.concatenate([img, pad]))
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, np.concatenate(frames, axis=1), extension=".png")
    return out


def cmd_sim_frames(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from molmoact2_ros.cli_checks import check_number, check_writable

    check_number(args.scale, "--scale", strict=True, meaning="image scale of the strip")
    # Before building any scene: a path that cannot be written is one line, not a traceback at the end.
    check_writable(args.out, "--out", what="frame directory" if args.all else "PNG file", is_file=not args.all)

    if args.all:
        for name in tqdm(SCENE_NAMES, desc="scenes"):
            write_strip(name, args.out / f"sim_{name}.png", args.seed, args.scale)
    else:
        write_strip(args.embodiment, args.out, args.seed, args.scale)
    return 0
