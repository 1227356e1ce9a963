"""Scripted-expert pick success per embodiment: over N seeds, does every arm lift its cube and keep it in the jaws?

Each seed: ``scene.reset(seed)``, the expert's hover / descend / close / lift and one second of hold, physics only
(``molmoact2_ros.sim.expert.run_pick``). Success for an arm: its cube ended more than 3 cm up and stayed within
3 cm of the tool centre through the hold (the tests' criterion); a seed succeeds when every arm does (YAM: both).
Prints a table and the failing seeds; wall time per pick is reported, not judged (shared machines vary 5x).
"""

from __future__ import annotations

import argparse
import time

import molmoact2_ros.sim  # noqa: F401  (selects the GL platform before mujoco is imported)
from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.sim.expert import ScriptedExpert, run_pick
from molmoact2_ros.sim.scenes import build_scene

NAMES = ("so101", "so100", "yam_bimanual", "franka_droid")


def bench(name: str, seeds: range) -> dict:
    scene = build_scene(load_embodiment(name), render=False)
    expert = ScriptedExpert(scene)
    ok, failed, lifts, held, wall = 0, [], [], [], 0.0
    for seed in seeds:
        t0 = time.perf_counter()
        outcomes = run_pick(scene, expert, seed)
        wall += time.perf_counter() - t0
        lifts += [o.lift_m for o in outcomes]
        held += [o.held_m for o in outcomes]
        if all(o.success for o in outcomes):
            ok += 1
        else:
            failed.append((seed, [(o.target_object, round(o.lift_m, 3), round(o.held_m, 3)) for o in outcomes]))
    return {"ok": ok, "n": len(seeds), "failed": failed, "lift_min": min(lifts), "held_max": max(held),
            "s_per_pick": wall / len(seeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per embodiment")
    parser.add_argument("--embodiments", nargs="+", default=list(NAMES), choices=NAMES)
    args = parser.parse_args()
    print("| embodiment | success | lowest lift (m) | largest tcp-cube gap in hold (m) | wall s per pick |")
    print("|---|---|---|---|---|")
    failures = []
    for name in args.embodiments:
        r = bench(name, range(args.seeds))
        print(f"| {name} | {r['ok']}/{r['n']} | {r['lift_min']:.3f} | {r['held_max']:.3f} | {r['s_per_pick']:.1f} |",
              flush=True)
        failures += [(name, *f) for f in r["failed"]]
    for name, seed, detail in failures:
        print(f"failed: {name} seed {seed}: (object, lift m, largest gap m) {detail}")


if __name__ == "__main__":
    main()
