"""``molmoact2-ros eval BAG... --checkpoint X``: score a policy on recorded bags (``bags/eval.py``), write an
HTML report with plots and a JSON file of metrics. Importing this module is light (no torch, no rosbags)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from molmoact2_ros.cli_checks import check_number, check_writable


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
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="policy weights' dtype (default: fp32; bf16 halves GPU memory)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--max-clock-jump", type=float, default=5.0,
                   help="clock-gap limit, seconds > 0: stop a bag where a topic's header clock jumps forward by "
                        "more than this (default: 5.0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """Checks first (values, the output folder, every bag's topics), then the model, then the bags: a run
    that cannot produce anything stops with one line (exit 2) before the model loads."""
    from molmoact2_ros.bags.eval import EvalOptions, check_bag, failed
    from molmoact2_ros.bags.topics import BagError  # the base: reader's BagError (bag, topic) is one
    from molmoact2_ros.core.embodiment import load_embodiment

    check_number(args.every, "--every", meaning="seconds between decisions; 0 = the recorded chunks' stamps")
    check_number(args.max_clock_jump, "--max-clock-jump", strict=True, meaning="seconds")
    check_writable(args.output, "--output", what="report directory")
    emb = load_embodiment(args.embodiment)
    options = EvalOptions(period_s=args.every or None, shadow=args.shadow, reference=args.reference,
                          instruction=args.instruction, max_clock_jump_s=args.max_clock_jump)
    problems: dict[int, BagError] = {}  # by position in args.bags (a bag may be given twice)
    for i, bag in enumerate(args.bags):
        try:
            check_bag(bag, emb, options)
        except BagError as exc:
            problems[i] = exc
    if len(problems) == len(args.bags):
        raise BagError(str(problems[0]) if len(problems) == 1 else
                       "no usable bag: " + " | ".join(str(e) for e in problems.values()))
    for exc in problems.values():  # as export-dataset does: say which bags are left out and why, then go on
        print(f"eval: skipped: {exc}", file=sys.stderr)
    with quiet_known_noise():
        evaluated, meta = _evaluate([b for i, b in enumerate(args.bags) if i not in problems], emb, options, args)
    # The report lists every bag given, in order; a skipped one with the reason it was left out.
    done = iter(evaluated)
    results = [failed(bag, emb, options, problems[i]) if i in problems else next(done)
               for i, bag in enumerate(args.bags)]
    from molmoact2_ros.bags.report import write_report

    html_path, json_path = write_report(results, args.output, meta)
    print(f"report: {html_path}\nmetrics: {json_path}")
    return 1 if any(r.error for r in results) else 0


def _evaluate(bags: list[str], emb: Any, options: Any, args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """Load the model (unless --shadow) and evaluate each bag; the results and the report's run metadata."""
    from tqdm import tqdm

    from molmoact2_ros.bags.eval import evaluate_bag

    make = None
    meta: dict[str, Any] = {"embodiment": emb.name, "mode": "shadow" if args.shadow else "policy",
                            "reference": args.reference, "every_s": args.every or "recorded chunks / half chunk"}
    if not args.shadow:
        make, loaded = _policy_factory(emb, args)
        meta.update(checkpoint=loaded.checkpoint, seed=args.seed, device=args.device,
                     model_load_s=round(loaded.load_s, 2))
    results = []
    for bag in bags:
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
              f"{format_speed(m['realtime_factor'])}")
    return results, meta


def format_speed(factor: float) -> str:
    """Two significant digits: 0.058 must not read as "0.1x" (nearly twice as fast)."""
    return f"{factor:.2g}x real time (evaluation only, model load not counted)"


@contextlib.contextmanager
def quiet_known_noise() -> Iterator[None]:
    """Hide two known, harmless messages that otherwise open every eval's stderr, and nothing else:

    - transformers' "`MolmoAct2Processor` defines `image_processor_class = ...`, which is deprecated"
      (a logger warning about the checkpoint's remote code, which we do not control);
    - torch's "The given NumPy array is not writable" from the remote image processor: the frames come
      read-only straight from the bag's bytes, and the processor only reads them (the tensor is permuted
      and resized into new tensors)."""
    import logging
    import warnings

    def drop_deprecated_class(record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("_processor_class = " in text and "which is deprecated" in text)

    logger = logging.getLogger("transformers.processing_utils")
    logger.addFilter(drop_deprecated_class)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning)
            yield
    finally:
        logger.removeFilter(drop_deprecated_class)


def _policy_factory(emb: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """Load the model once; each bag gets a fresh component (and the runtime's noise re-seeded as at a node's
    start, so a bag's result does not depend on the bags before it)."""
    from transformers.utils import logging as hf_logging

    from molmoact2_ros.backends.policy.inference import PolicyInference, input_limits, load_runtime, restart_noise

    bars_were_on = hf_logging.is_progress_bar_enabled()
    if args.quiet:  # transformers draws its own "Loading weights" bar
        hf_logging.disable_progress_bar()
    try:
        loaded = load_runtime(emb, args.checkpoint, device=args.device, dtype=args.dtype, seed=args.seed,
                              torch_num_threads=args.torch_threads)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
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
