"""Simulation real-time factor per embodiment, rendering every camera at its configured size and fps.

Physics at the scene's timestep, commands at the control rate (a slow sine about home), every camera rendered at
its fps. Reports wall time split into physics and render; the publish column is measured by the sim node's
benchmark (part B). Writes benchmarks/results/sim.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import molmoact2_ros.sim  # noqa: F401  (selects the GL platform before mujoco is imported)
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.sim.scenes import build_scene

NAMES = ("so101", "so100", "yam_bimanual", "franka_droid")


def bench(name: str, sim_s: float) -> dict[str, float]:
    emb = load_embodiment(name)
    scene = build_scene(emb)
    dt = 1.0 / emb.control_rate_hz
    next_frame = {c.name: 0.0 for c in emb.cameras}
    physics = render = 0.0
    frames = 0
    t_start = time.perf_counter()
    for k in range(int(sim_s / dt)):
        scene.set_command(emb.home + 0.1 * np.sin(0.5 * k * dt))
        t0 = time.perf_counter()
        scene.step(dt)
        physics += time.perf_counter() - t0
        for cam in emb.cameras:
            if scene.sim_time_s + 1e-9 >= next_frame[cam.name]:
                t0 = time.perf_counter()
                scene.render(cam.name)
                render += time.perf_counter() - t0
                frames += 1
                next_frame[cam.name] += 1.0 / cam.fps
    wall = time.perf_counter() - t_start
    scene.close()
    return {"rtf": scene.sim_time_s / wall, "physics_ms_per_s": 1e3 * physics / scene.sim_time_s,
            "render_ms_per_frame": 1e3 * render / max(frames, 1), "render_ms_per_s": 1e3 * render / scene.sim_time_s,
            "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sim-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim.md")
    args = parser.parse_args()
    rows = []
    for name in NAMES:
        r = bench(name, args.sim_seconds)
        print(name, r, flush=True)
        rows.append(f"| {name} | {r['rtf']:.2f} | {r['physics_ms_per_s']:.0f} | {r['render_ms_per_frame']:.1f} | "
                    f"{r['render_ms_per_s']:.0f} | (sim node) |")
    load = os.getloadavg()[0]
    text = ["# Simulation real-time factor", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, no GPU; load average at the end {load:.1f} "
            "(shared with other engineers' jobs when above ~2).", "",
            f"{args.sim_seconds:g} s of simulated time per embodiment; every camera at its configured size and fps; "
            "commands at the control rate. Costs per simulated second.", "",
            "| embodiment | real-time factor | physics ms / sim s | render ms / frame | render ms / sim s | publish |",
            "|---|---|---|---|---|---|", *rows, ""]
    args.out.write_text("\n".join(text))


if __name__ == "__main__":
    main()
