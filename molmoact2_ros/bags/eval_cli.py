"""``molmoact2-ros eval BAG... --checkpoint X``: score a policy on recorded bags (``bags/eval.py``), write an
HTML report with plots and a JSON file of metrics. Importing this module is light (no torch, no rosbags)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_eval(sub: argparse._SubParsersAction) -> None:
    """Register ``eval`` on ``molmoact2-ros``'s subparsers."""
    p = sub.add_parser(
        "eval", help="score a policy offline on recorded bags: HTML report + JSON metrics",
        description="For each decision point of each bag, build the observation from the bag through the same "
        "inference component as the live policy node and run the policy; compare its chunk with what was "
        "recorded (the driver's commands, else the following /joint_states): per-joint error over the horizon, "
        "error by horizon step and over time, chunk-splice jumps, latency of the recorded chunks. Decision "
        "points: the recorded chunks' stamps, or every --every seconds. Deterministic (seeded noise, no wall "
        "clock). A bad bag (truncated, missing topic, wrong type, another arm's joints, clock jump) stops that "
        "bag with a line naming bag and topic; what was evaluated before is kept in the report. Exit status: "
        "0 all bags complete, 1 some bag stopped early, 2 on a configuration error.")
    p.add_argument("bags", nargs="+", metavar="BAG", help="bag directories (or .mcap/.db3 files)")
    p.add_argument("--checkpoint", "-c", default="",
                   help="checkpoint dir, 'tiny', or '' = the embodiment's default (not used with --shadow)")
    p.add_argument("--embodiment", "-e", default="so101", help="built-in name or YAML path (default: so101)")
    p.add_argument("--output", "-o", default="eval_report", help="report directory (default: eval_report)")
    p.add_argument("--every", type=float, default=0.0,
                   help="decide every this many seconds of observation time; 0 = at the recorded chunks' stamps "
                        "when the bag has them, else every half chunk")
    p.add_argument("--shadow", action="store_true",
                   help="no model: score the bag's recorded chunks (a live run's decisions) the same way")
    p.add_argument("--reference", default="auto", choices=["auto", "commanded", "joint_states"],
                   help="compare with the driver's commands or the measured joint states (auto: commands if "
                        "recorded)")
    p.add_argument("--instruction", default="", help="task text when the bag has none (or to override it)")
    p.add_argument("--seed", type=int, default=0, help="flow-matching noise seed (default 0, as the node)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--max-clock-jump", type=float, default=5.0,
                   help="a header stamp this much ahead of the previous one on a topic is a clock jump (s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from molmoact2_ros.bags.eval import EvalOptions, evaluate_bag
    from molmoact2_ros.bags.report import write_report
    from molmoact2_ros.core.embodiment import load_embodiment

    emb = load_embodiment(args.embodiment)
    options = EvalOptions(period_s=args.every or None, shadow=args.shadow, reference=args.reference,
                          instruction=args.instruction, max_clock_jump_s=args.max_clock_jump)
    make = None
    meta: dict[str, Any] = {"embodiment": emb.name, "mode": "shadow" if args.shadow else "policy",
                            "reference": args.reference, "every_s": args.every or "recorded chunks / half chunk"}
    if not args.shadow:
        make, loaded = _policy_factory(emb, args)
        meta.update(checkpoint=loaded.checkpoint, seed=args.seed, device=args.device,
                    model_load_s=round(loaded.load_s, 2))
    results = []
    for bag in args.bags:
        bar = tqdm(desc=str(bag), unit="msg", disable=args.quiet, file=sys.stderr)

        def on_total(n: int, bar: Any = bar) -> None:
            bar.total = n
            bar.refresh()

        result = evaluate_bag(bag, emb, make, options, progress=bar.update, on_total=on_total)
        bar.close()
        results.append(result)
        if result.error:
            print(f"eval: {result.error} (kept {len(result.predictions)} decisions)", file=sys.stderr)
        m = result.metrics
        print(f"{bag}: {m['decisions']} decisions, mean |error| {m['error_overall']['mean']:.4g}, "
              f"{m['realtime_factor']:.1f}x real time")
    html_path, json_path = write_report(results, args.output, meta)
    print(f"report: {html_path}\nmetrics: {json_path}")
    return 1 if any(r.error for r in results) else 0


def _policy_factory(emb: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """Load the model once; each bag gets a fresh component (and the runtime's noise re-seeded as at a node's
    start, so a bag's result does not depend on the bags before it)."""
    from molmoact2_ros.backends.policy.inference import PolicyInference, input_limits, load_runtime, restart_noise

    loaded = load_runtime(emb, args.checkpoint, device=args.device, dtype=args.dtype, seed=args.seed,
                          torch_num_threads=args.torch_threads)
    runtime = loaded.runtime
    first = [True]

    def make() -> PolicyInference:
        if not first[0]:
            restart_noise(runtime, args.seed)
        first[0] = False
        # Offline, inputs are judged at the bag's own time: the node's limits, but no grace for stale
        # frames is needed (nothing waits), and frozen cameras are still reported.
        return PolicyInference(runtime, emb, input_limits(emb), clock=lambda: 0.0)

    return make, loaded
