"""``molmoact2-ros``: the one command-line entry point (demo, bringup, config checks, checkpoints).

Errors this package raises on purpose are printed as one line and exit with status 2; a traceback
means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import signal
import sys
import time
from pathlib import Path

from molmoact2_ros.cli_checks import check_number, check_writable
from molmoact2_ros.core.embodiment import list_embodiments, load_embodiment
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError

# Modules that contribute subcommands: bags (record, replay, eval, export-dataset), sim (scenes).
COMMAND_MODULES = ("molmoact2_ros.bags.cli", "molmoact2_ros.sim.cli")
# BringupOptions' default (molmoact2_ros.bringup; not imported here to keep --help light): the launch file's too.
BRINGUP_DEFAULT_INSTRUCTION = "pick up the red cube and place it in the bowl"


def _module_exists(name: str) -> bool:
    parent = name.rpartition(".")[0]
    if parent and not _module_exists(parent):
        return False
    return importlib.util.find_spec(name) is not None


def _add_embodiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embodiment", "-e", default="so101",
                   help=f"built-in name ({', '.join(list_embodiments())}) or path to a YAML (default: so101)")


# The sim node's own camera_fps limit (nodes/sim_node.py); the camera schema's (<= 1000) applies otherwise.
SIM_MAX_CAMERA_FPS = 240.0


def check_demo_options(args: argparse.Namespace) -> None:
    """Every demo value the nodes would refuse, refused here before any process starts (exit 2, naming the
    option): the rules are the nodes' and the embodiment schema's own, not copies where they can be reused."""
    from pydantic import ValidationError

    from molmoact2_ros.core.embodiment import CameraConfig
    from molmoact2_ros.nodes.policy_node import PARAMS as POLICY_PARAMS

    check_number(args.duration, "--duration", strict=True, meaning="seconds of closed loop")
    emb = load_embodiment(args.embodiment)
    if args.camera_fps:  # 0 = each camera's own fps; any other value replaces it and must pass the schema
        try:
            for cam in emb.cameras:
                CameraConfig.model_validate({**cam.model_dump(), "fps": args.camera_fps})
        except ValidationError as exc:
            msg = str(exc.errors()[0]["msg"]).lower()
            raise ConfigError(f"--camera-fps {args.camera_fps:g} is not allowed: {msg} (0 = the embodiment's "
                              "fps)") from None
        if args.hardware == "sim":
            check_number(args.camera_fps, "--camera-fps", high=SIM_MAX_CAMERA_FPS,
                         meaning="the sim node renders at most this; 0 = the embodiment's fps")
    why = POLICY_PARAMS["max_inference_rate_hz"][2](args.max_inference_rate)
    if why or not math.isfinite(args.max_inference_rate):
        raise ConfigError(f"--max-inference-rate {args.max_inference_rate:g} is not allowed: "
                          f"{why or 'use a finite number'} (0 = no cap)")
    if args.log_dir:
        check_writable(args.log_dir, "--log-dir", what="log directory")


def cmd_demo(args: argparse.Namespace) -> int:
    check_demo_options(args)
    from molmoact2_ros.demo import DemoOptions, format_summary, run_demo

    opts = DemoOptions(
        embodiment=args.embodiment, duration_s=args.duration, checkpoint=args.checkpoint,
        instruction=args.instruction, max_inference_rate_hz=args.max_inference_rate,
        camera_fps=args.camera_fps, log_dir=args.log_dir or "", quiet=args.quiet, hardware=args.hardware,
        record_video=args.record_video or "",
    )
    result = run_demo(opts)
    print(format_summary(load_embodiment(args.embodiment).name, result))
    if result.interrupted:
        return 130  # as a shell reports Ctrl-C
    return 0 if result.ok else 1


def bringup_options(args: argparse.Namespace):
    """BringupOptions from ``bringup``'s flags: the same fields, names and defaults as the launch arguments."""
    from molmoact2_ros.bringup import BringupOptions

    return BringupOptions(
        embodiment=args.embodiment, mode=args.mode, backend=args.backend, emulate_hardware=args.emulate_hardware,
        camera_source=args.camera_source, checkpoint=args.checkpoint, device=args.device, dtype=args.dtype,
        instruction=args.instruction, max_inference_rate_hz=args.max_inference_rate_hz,
        torch_num_threads=args.torch_num_threads, shadow_mode=args.shadow_mode,
        with_perception=not args.no_perception, with_policy=not args.no_policy, with_driver=not args.no_driver,
        dds_profile=args.dds_profile, sim=args.sim, gym_config=args.gym_config, camera_fps=args.camera_fps,
        bag=args.bag, replay_rate=args.replay_rate, replay_loop=args.replay_loop, use_sim_time=args.use_sim_time,
        params_file=args.params_file, autostart=not args.no_autostart,
    )


def cmd_bringup(args: argparse.Namespace) -> int:
    """Start the nodes, say "started" only once every node reported ready, then run until Ctrl-C.

    Exits 1, with the reason on one line, when a node does not start (its configure error, a missing
    extra, a bad parameter) or when a node exits while running (then with the end of its log): a station
    with a node missing must not look healthy to whoever started it (a shell, systemd, a container).
    In mode replay the station stops, with status 0, when the bag player has published the whole bag."""
    from molmoact2_ros.bringup import describe
    from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults
    from molmoact2_ros.process_runner import ProcessGroup

    if args.log_dir:
        check_writable(args.log_dir, "--log-dir", what="log directory")
    apply_local_ros_defaults()
    specs = describe(bringup_options(args))
    log_dir = Path(args.log_dir or f"/tmp/molmoact2_bringup_{os.getpid()}")
    echo = None if args.no_node_output else (lambda line: print(line, flush=True))
    group = ProcessGroup(specs, dict(os.environ), log_dir, echo=echo)
    stop = {"now": False}
    # Both explicitly: a process started from a script in the background inherits SIGINT ignored, and a
    # supervisor (systemd, a container, a test) must still be able to stop the station with either.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    group.start()
    print(f"starting {', '.join(s.name for s in specs)}; logs in {log_dir}", flush=True)
    problem = group.wait_started(
        timeout_s=args.startup_timeout or None, should_stop=lambda: stop["now"],
        on_ready=lambda n: print(f"  {n.spec.name}: running", flush=True))
    if not problem and not stop["now"]:
        print(f"started {', '.join(s.name for s in specs)}; Ctrl-C stops", flush=True)
        while not stop["now"] and not (problem := group.first_problem()) and not group.finished():
            time.sleep(0.2)
        if done := group.finished():
            print(f"{', '.join(n.spec.name for n in done)} finished; stopping", flush=True)
    codes = group.stop()
    if problem:
        print(f"molmoact2-ros: error: {problem}", file=sys.stderr)
        return 1
    return 0 if all(c in (0, -2, 130) for c in codes.values()) else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every file is checked (one line each: OK on stdout, the problem on stderr); exit 2 if any is bad."""
    bad = 0
    for f in args.files:
        try:
            emb = load_embodiment(f)
        except MolmoAct2RosError as exc:
            bad += 1
            text = str(exc)
            # Most messages start with the path already; a bare name ("unknown embodiment ...") gets it added.
            print(f"molmoact2-ros: error: {text if text.startswith(str(f)) else f'{f}: {text}'}", file=sys.stderr)
            continue
        print(f"{f}: OK ({emb.name}: {emb.dof} joints, {len(emb.cameras)} cameras, "
              f"{emb.control_rate_hz:g} Hz, tag {emb.policy.norm_tag})")
    return 2 if bad else 0


def cmd_make_tiny_checkpoint(args: argparse.Namespace) -> int:
    from molmoact2_ros.backends.policy.tiny_checkpoint import build_tiny_checkpoint

    check_writable(args.out, "OUT", what="checkpoint directory")
    emb = load_embodiment(args.embodiment)
    t0 = time.monotonic()
    out = build_tiny_checkpoint(Path(args.out), emb, think=args.think, seed=args.seed)
    print(f"wrote tiny {'Think ' if args.think else ''}checkpoint for {emb.name} to {out} "
          f"({time.monotonic() - t0:.1f} s)")
    return 0


def cmd_list_embodiments(args: argparse.Namespace) -> int:
    for name in list_embodiments():
        emb = load_embodiment(name)
        print(f"{name:14s} {emb.dof:2d} joints  cameras {','.join(emb.camera_names):18s} "
              f"{emb.control_rate_hz:g} Hz  {emb.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molmoact2-ros", description="MolmoAct2 on ROS 2: run the closed loop, bring up a station, "
        "validate configs, build test checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole graph (simulated SO-101 by default) and print a summary",
                       description="Start the graph as separate processes on the built-in default (so101 "
                       "simulated in MuJoCo: the sim node's physics and rendered cameras, the policy node on the "
                       "tiny checkpoint built on first use, the driver commanding the simulated arm), run for "
                       "--duration seconds, stop cleanly and print a summary. Exit status: 0 when the loop closed "
                       "and the arm moved within its limits; 1 if no chunk was executed, nothing moved, a limit "
                       "was broken, the driver faulted or was e-stopped, or a node failed; 2 on a configuration "
                       "or checkpoint error (one line); 130 after Ctrl-C (the summary of what ran is printed).")
    _add_embodiment(p)
    p.add_argument("--hardware", default="sim", choices=["sim", "mock", "emulated"],
                   help="sim: the embodiment's MuJoCo scene, physics and rendered cameras (default); mock: the "
                        "mock arm and synthetic cameras; emulated: synthetic cameras and the embodiment's real "
                        "backend (feetech, i2rt, franka) through its real hardware library against an emulated device")
    p.add_argument("--record-video", metavar="PATH",
                   help="with --hardware sim: write PATH (.mp4 or .gif) of the first scene camera with the commanded "
                        "and measured joints plotted beside it (recorded at a reduced frame rate)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of closed loop (default: 20)")
    p.add_argument("--checkpoint", default="tiny", help="'tiny' (default) or a checkpoint directory")
    p.add_argument("--instruction", default=BRINGUP_DEFAULT_INSTRUCTION,
                   help=f"task text sent to the policy (default: {BRINGUP_DEFAULT_INSTRUCTION!r})")
    p.add_argument("--max-inference-rate", type=float, default=0.0,
                   help="Hz cap on inference, >= 0; 0 = none (default)")
    p.add_argument("--camera-fps", type=float, default=0.0,
                   help="override camera fps (up to 1000; sim: up to 240); 0 = the embodiment's (default; sim: "
                        "rendering on a CPU is slow, see docs/sim.md)")
    p.add_argument("--log-dir", help="where node logs go; created if missing (default: a new temp dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bringup", help="start a station's nodes as processes until Ctrl-C (pip installs)",
                       description="The pip path's equivalent of `ros2 launch molmoact2_ros "
                       "bringup.launch.py`; both read molmoact2_ros.bringup (every launch argument name:=value is "
                       "the flag --name value here) and take the same --params-file. Node output is printed "
                       "prefixed with [node_name] and kept in one log file per node. Says 'started' once every "
                       "node reported ready; exits 1 with the reason if a node does not start or exits while "
                       "running; Ctrl-C stops every node.")
    _add_embodiment(p)
    # '' stays a valid choice (the launch file's mode:='' means the same), but is not shown as one.
    p.add_argument("--mode", default="", choices=["", "real", "sim", "replay"], metavar="{real,sim,replay}",
                   help="real: perception, policy, driver on the hardware backend; sim: the sim node "
                        "replaces perception and the arm (same as --sim); replay: --bag published with /clock, "
                        "the policy node on use_sim_time (no perception, no driver). Default: sim with --sim, "
                        "else real")
    p.add_argument("--backend", default="", help="hardware backend (mock, ros_topic, feetech, i2rt, franka); "
                   "default: the embodiment's")
    p.add_argument("--emulate-hardware", action="store_true",
                   help="run the real arm family's backend (the embodiment's, or --backend) against its emulated "
                        "device in the driver process: the real hardware library, no robot")
    p.add_argument("--camera-source", default="", help="camera source for all cameras; default: per camera")
    p.add_argument("--checkpoint", default="", help="dir, hub id or 'tiny'; default: the embodiment's")
    p.add_argument("--device", default="cpu", help="policy node's torch device: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="policy weights' dtype (default: fp32; bf16 halves GPU memory)")
    p.add_argument("--instruction", default=BRINGUP_DEFAULT_INSTRUCTION,
                   help=f"task text the policy starts with (default: {BRINGUP_DEFAULT_INSTRUCTION!r})")
    p.add_argument("--max-inference-rate-hz", type=float, default=0.0, help="cap on inference; 0 = none")
    p.add_argument("--torch-num-threads", type=int, default=0, help="policy node's torch threads; 0 = default")
    p.add_argument("--shadow-mode", default="", choices=["", "true", "false"], metavar="{true,false}",
                   help="driver shadow mode (commands computed and published, not sent to the arm); default: "
                        "the embodiment's (on for real hardware, off for mock)")
    p.add_argument("--sim", action="store_true",
                   help="simulated station: the sim node (MuJoCo physics, rendered cameras) replaces perception and "
                        "the arm; the driver commands it through the mujoco backend (docs/sim.md)")
    p.add_argument("--gym-config", default="",
                   help="with --sim: a gymnasium env mapping (config/gym/<name>.yaml or its name) instead of the "
                        "embodiment's scene")
    p.add_argument("--camera-fps", type=float, default=0.0, help="override camera fps; 0 = embodiment's")
    p.add_argument("--bag", default="", help="--mode replay: the bag directory to publish with /clock")
    p.add_argument("--replay-rate", type=float, default=1.0, help="--mode replay: speed factor (default 1)")
    p.add_argument("--replay-loop", action="store_true", help="--mode replay: start the bag again at its end")
    p.add_argument("--use-sim-time", action="store_true", help="every node on /clock (replay always is)")
    p.add_argument("--params-file", default="", metavar="YAML",
                   help="ROS 2 parameters file ({node: {ros__parameters: {...}}}, '/**' for every node) applied "
                        "to each node after the built-in parameters; driver safety limits may only tighten")
    p.add_argument("--no-autostart", action="store_true",
                   help="lifecycle nodes wait unconfigured for a lifecycle manager instead of starting themselves")
    p.add_argument("--dds-profile", default="local_large_data", help="Fast DDS profile from config/dds; '' = none")
    p.add_argument("--no-perception", action="store_true", help="do not start the perception node on this host")
    p.add_argument("--no-policy", action="store_true", help="do not start the policy node on this host")
    p.add_argument("--no-driver", action="store_true", help="do not start the driver node on this host")
    p.add_argument("--no-node-output", action="store_true",
                   help="do not print the nodes' output (it is still in their log files)")
    p.add_argument("--startup-timeout", type=float, default=0.0,
                   help="seconds every node gets to report ready (a model download can take long); "
                        "0 = no limit (default)")
    p.add_argument("--log-dir", help="where node logs go; created if missing (default: "
                                     "/tmp/molmoact2_bringup_<pid>)")
    p.set_defaults(func=cmd_bringup)

    p = sub.add_parser("check-config", help="validate embodiment YAML files",
                       description="Validate each embodiment config (schema, limits, cross-field rules) and print "
                       "one line per file: OK with a short description, or the field, value and rule that "
                       "failed. Every file is checked. Exit status: 0 all valid, 2 if any is not.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="embodiment YAML paths, or built-in names (" + ", ".join(list_embodiments()) + ")")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("make-tiny-checkpoint",
                       help="write a tiny checkpoint of the real MolmoAct2 code that computes a scripted motion")
    p.add_argument("out", metavar="OUT", help="output directory (created; must be empty or absent)")
    _add_embodiment(p)
    p.add_argument("--think", action="store_true", help="Think variant (depth reasoning terminates)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    p.set_defaults(func=cmd_make_tiny_checkpoint)

    p = sub.add_parser("list-embodiments", help="list the built-in embodiment configs")
    p.set_defaults(func=cmd_list_embodiments)
    for module in COMMAND_MODULES:
        # Each area adds its own subcommands (``add_commands(sub)``); importing one must stay light (no rclpy,
        # no torch at import time) so that --help is instant.
        if _module_exists(module):
            importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MolmoAct2RosError as exc:
        print(f"molmoact2-ros: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
