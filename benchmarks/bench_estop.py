"""E-stop latency through the real driver node, at every embodiment's tick rate.

For each embodiment and each /estop publisher (best effort, reliable), with the arm moving under a policy
stand-in, and again while ~130 KB (2,000-step) and ~1.3 MB (20,000-step) chunks keep the driver's main executor
busy: the time from ``/estop`` published to the first tick in ESTOP (reaction) and to the last command that
changed (the arm braked to a stop within its acceleration limits). The measurement is the one the node test
runs (tests/fault/estop_latency.py); each case is repeated and reported as median / max.

    .venv/bin/python benchmarks/bench_estop.py [--repeats 5] [--embodiments so101,franka_droid]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fault"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

EMBODIMENTS = ("so101", "so100", "yam_bimanual", "franka_droid")
CASES = (("best_effort", 0), ("reliable", 0), ("best_effort", 2_000), ("best_effort", 20_000))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--embodiments", default=",".join(EMBODIMENTS))
    args = ap.parse_args()

    from molmoact2_ros.nodes.runtime_env import unused_domain_id

    os.environ.setdefault("ROS_DOMAIN_ID", str(unused_domain_id()))
    from estop_latency import measure_estop
    from node_harness import DriverHarness

    print(f"{'embodiment':13} {'tick':>6} {'publisher':11} {'chunk steps':>11} | {'reaction ms':>17} | "
          f"{'stopped ms':>17} | {'speed at e-stop':>15}")
    print(f"{'':13} {'Hz':>6} {'':11} {'':>11} | {'median':>8} {'max':>8} | {'median':>8} {'max':>8} | "
          f"{'of the limit':>15}")
    for name in args.embodiments.split(","):
        for reliability, flood in CASES:
            results = []
            for _ in range(args.repeats):
                h = DriverHarness(name)
                try:
                    # 20,000-step chunks arrive too late to be executed on a small host (issue P3): trip the
                    # e-stop while they flood in, moving or not.
                    results.append(measure_estop(h, reliability=reliability, flood_steps=flood,
                                                 require_motion=flood < 20_000))
                finally:
                    h.close()
            reaction = [r.reaction_s * 1e3 for r in results]
            stopped = [r.stopped_s * 1e3 for r in results]
            speed = statistics.median(r.speed_fraction for r in results)
            print(f"{name:13} {results[0].tick_rate_hz:6.0f} {reliability:11} {flood or 30:11d} | "
                  f"{statistics.median(reaction):8.1f} {max(reaction):8.1f} | "
                  f"{statistics.median(stopped):8.1f} {max(stopped):8.1f} | {speed:15.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
