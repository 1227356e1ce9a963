"""Bag subcommands of ``molmoact2-ros``: ``record`` and ``replay`` (and the evaluation/export commands
other modules add here).

Structure: :func:`add_commands` calls one ``_add_<command>(sub)`` per subcommand; each defines its parser
and points ``func`` at a ``cmd_<command>(args) -> int``. Importing this module must stay light (no rclpy,
no torch, no rosbags): the command functions import what they need when they run. Errors meant for the
user are :class:`~molmoact2_ros.core.errors.MolmoAct2RosError` (the top-level CLI prints them as one line
and exits 2).
"""

from __future__ import annotations

import argparse

from molmoact2_ros.bags.topics import CAMERA_MODES
from molmoact2_ros.cli_checks import check_number


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the bag subcommands on ``molmoact2-ros``'s subparsers."""
    _add_record(sub)
    _add_replay(sub)
    from molmoact2_ros.bags.eval_cli import add_eval  # part B's command (evaluation), in its own module

    add_eval(sub)
    from molmoact2_ros.bags.export_cli import add_export  # part C's command (LeRobot dataset export)

    add_export(sub)


# ---- record --------------------------------------------------------------------------------------------
def _add_record(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="record a station's topics to a rosbag2 (MCAP) until Ctrl-C",
        description="Record the embodiment's topics (cameras, /joint_states, instruction, action chunks, what "
        "the driver commanded, /diagnostics) from raw subscriptions whose QoS matches the publishers. Ctrl-C "
        "or SIGTERM closes the bag cleanly (index and metadata.yaml written). A full disk or an unwritable "
        "path stops with a one-line error and keeps what was written as a readable bag. Exit status: 0 on a "
        "clean stop, 2 on an error.")
    p.add_argument("--embodiment", "-e", default="so101", help="built-in name or YAML path (default: so101)")
    p.add_argument("--output", "-o", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--cameras", default="raw", choices=CAMERA_MODES,
                   help="camera topics: raw Image, compressed JPEG, both, or none (default: raw)")
    p.add_argument("--topic", "-t", action="append", default=[], metavar="TOPIC",
                   help="also record this topic (type from the graph); repeatable")
    p.add_argument("--exclude", "-x", action="append", default=[], metavar="TOPIC",
                   help="do not record this station topic; repeatable")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"], help="storage (default: mcap)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds; 0 = until Ctrl-C")
    p.add_argument("--split-size-mb", type=float, default=0.0,
                   help="start a new file in the bag when the current one reaches this size (MB); 0 = never")
    p.add_argument("--split-duration", type=float, default=0.0,
                   help="start a new file in the bag every this many seconds; 0 = never")
    p.add_argument("--use-sim-time", action="store_true", help="stamp messages with /clock time (simulation)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    from molmoact2_ros.bags.record import RecordOptions, run_record_cli

    check_number(args.duration, "--duration", meaning="seconds to record; 0 = until Ctrl-C")
    check_number(args.split_size_mb, "--split-size-mb", meaning="0 = never split by size")
    check_number(args.split_duration, "--split-duration", meaning="0 = never split by time")

    opts = RecordOptions(
        output=args.output, embodiment=args.embodiment, cameras=args.cameras, extra_topics=tuple(args.topic),
        exclude=tuple(args.exclude), storage=args.storage, duration_s=args.duration,
        split_size_mb=args.split_size_mb, split_duration_s=args.split_duration, use_sim_time=args.use_sim_time,
        progress=not args.quiet)
    return run_record_cli(opts)


# ---- replay --------------------------------------------------------------------------------------------
def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="publish a rosbag2 in real time with /clock (for nodes on use_sim_time)",
        description="Publish a bag's messages at their recorded pace (times --rate) and /clock carrying the "
        "recorded time, so a live graph started with use_sim_time runs against the recording. The bag's own "
        "/clock, if any, is not republished. A truncated or corrupt bag, a missing topic, a wrong message "
        "type, another embodiment's joints or a jump in the bag's clock stops with a one-line error naming "
        "the bag and the topic.")
    p.add_argument("bag", help="bag directory (or its .mcap/.db3 file)")
    p.add_argument("--rate", "-r", type=float, default=1.0, help="speed factor (default: 1.0 = real time)")
    p.add_argument("--loop", "-l", action="store_true", help="start again at the end, until Ctrl-C")
    p.add_argument("--start-offset", type=float, default=0.0, help="skip this many seconds of the bag")
    p.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="publish only these topics")
    p.add_argument("--remap", "-m", action="append", default=[], metavar="FROM:=TO",
                   help="publish topic FROM as TO; repeatable")
    p.add_argument("--embodiment", "-e", default="",
                   help="check the bag against this embodiment (joint names, topic types); default: the "
                        "embodiment recorded in the bag, if any")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate in wall-clock Hz (default: 100)")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--max-gap", type=float, default=30.0,
                   help="clock-gap limit, seconds > 0: stop at a jump of more than this in the recorded (log) "
                        "time between two messages (default: 30)")
    p.add_argument("--wait-subscribers", type=float, default=0.0,
                   help="wait up to this many seconds for a subscriber on every published topic first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from molmoact2_ros.bags.replay import ReplayOptions, parse_remaps, run_replay_cli

    opts = ReplayOptions(
        bag=args.bag, rate=args.rate, loop=args.loop, start_offset_s=args.start_offset, topics=tuple(args.topics),
        remap=parse_remaps(args.remap), embodiment=args.embodiment, clock=not args.no_clock,
        clock_hz=args.clock_hz, max_gap_s=args.max_gap, wait_subscribers_s=args.wait_subscribers,
        progress=not args.quiet)
    return run_replay_cli(opts)
