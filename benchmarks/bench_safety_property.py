"""Safety property run, benchmark-sized: 20,000 fuzzed scenarios through the whole per-tick path.

The same scenarios and checks as tests/unit/test_safety_property.py (tests/unit/safety_fuzz.py: hostile
chunks, NaN/inf measurements, foreign backend exceptions, e-stops, resets, lifecycle and shadow toggles,
clock jumps, every fault action, with and without a heartbeat), with many more examples, split over
processes. Prints examples, ticks, writes checked and violations (a violation fails the run with the
falsifying scenario), and what the fuzzer reached (states, rejection reasons).

    .venv/bin/python benchmarks/bench_safety_property.py [--examples 20000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _run(job: int, examples: int) -> dict:
    from hypothesis import HealthCheck, given, seed, settings
    from safety_fuzz import run_scenario, scenarios

    totals = {"examples": 0, "ticks": 0, "writes": 0, "chunks": 0, "states": Counter(), "rejected": Counter()}

    @seed(1000 + job)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(scenarios)
    def check(sc):
        counts = run_scenario(sc)
        totals["examples"] += 1
        totals["ticks"] += counts.ticks
        totals["writes"] += counts.writes
        totals["chunks"] += counts.chunks
        totals["states"].update(counts.states)
        totals["rejected"].update(counts.rejected)

    check()
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20_000, help="scenarios in all (default 20000)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    args = ap.parse_args()
    per_job = [args.examples // args.jobs + (1 if i < args.examples % args.jobs else 0) for i in range(args.jobs)]
    t0 = time.monotonic()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.starmap(_run, list(enumerate(per_job)))
    elapsed = time.monotonic() - t0
    total = {"examples": 0, "ticks": 0, "writes": 0, "chunks": 0, "states": Counter(), "rejected": Counter()}
    for r in results:
        for key in ("examples", "ticks", "writes", "chunks"):
            total[key] += r[key]
        total["states"].update(r["states"])
        total["rejected"].update(r["rejected"])
    print(f"safety property run: {total['examples']} scenarios in {elapsed:.0f} s ({args.jobs} processes)")
    print(f"  ticks {total['ticks']:,}  chunks {total['chunks']:,}  writes checked {total['writes']:,}  "
          "violations 0 (any violation stops the run with its scenario)")
    print("  ticks by state: " + ", ".join(f"{k} {v:,}" for k, v in total["states"].most_common()))
    print("  chunks rejected on receipt: " + ", ".join(f"{k} {v:,}" for k, v in total["rejected"].most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
