"""``molmoact2-ros export-dataset``: the parser and the command (registered by ``bags.cli.add_commands``).

Light at import (argparse only): rosbags, rclpy and LeRobot load when the command runs.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write a LeRobot 0.6.1 dataset (LeRobotDataset: episodes, one video per camera, observation.state, action,
task text) from station bags recorded with `molmoact2-ros record`, so a lab's rollouts feed fine-tuning.

Frames are at the embodiment's control_rate_hz (the dataset's fps). At each frame time, every stream
gives its newest message stamped at or before it: observation.state = /joint_states, action = what the
driver commanded (/molmoact2_driver/commanded) at that tick, each camera's latest image (resized to the
config's width x height); task = the instruction in force. By default state and action are stored in
the MODEL space (the embodiment's robot->model conversion: LeRobot degrees and a 0..100 gripper for
SO-100/101), as MolmoAct2's training data; --units robot keeps radians/metres. One bag is one episode,
split where the instruction changes.

Every bag is checked in full before anything is written: a truncated or corrupt bag, a missing topic, a
wrong message type, another embodiment's joints or a jump in a topic's header clock stops the export with
one line naming the bag and the topic, and no dataset is written (--skip-bad-bags exports the others).
The dataset appears at --out only once complete. Exit status: 0 all bags exported, 1 some bags skipped,
2 error (nothing written).
"""


def add_export(sub: argparse._SubParsersAction) -> None:
    """Register ``export-dataset`` on ``molmoact2-ros``'s subparsers."""
    p = sub.add_parser("export-dataset", help="write a LeRobot dataset (videos, state, action, task) from bags",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directories (or their .mcap/.db3 files)")
    p.add_argument("--out", "-o", required=True, help="dataset directory to create (must not exist)")
    p.add_argument("--embodiment", "-e", default="",
                   help="built-in name or YAML path; default: the embodiment recorded in the first bag")
    p.add_argument("--repo-id", default="",
                   help="the dataset's LeRobot repo_id (default: local/<name of --out>); nothing is pushed")
    p.add_argument("--task", default="", help="task text for every frame instead of the instruction topic")
    p.add_argument("--action-topic", default="",
                   help="JointState topic of the actions (default: /molmoact2_driver/commanded; a shadow-mode "
                        "run: /molmoact2_driver/shadow_commanded)")
    p.add_argument("--units", choices=["model", "robot"], default="model",
                   help="state/action units: model (the policy's space, default) or robot (rad, m)")
    p.add_argument("--no-videos", action="store_true",
                   help="store camera frames as PNG image features instead of AV1 videos (bigger, lossless)")
    p.add_argument("--max-gap", type=float, default=1.0,
                   help="clock-gap limit, seconds > 0: refuse a bag where a topic's header clock jumps forward "
                        "by more than this (default: 1.0)")
    p.add_argument("--skip-bad-bags", action="store_true",
                   help="leave out bags that fail the checks (listed at the end, exit 1) instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_export_dataset)


def cmd_export_dataset(args: argparse.Namespace) -> int:
    from molmoact2_ros.bags.export import ExportOptions, run_export_cli

    opts = ExportOptions(
        bags=list(args.bags), out=args.out, embodiment=args.embodiment, repo_id=args.repo_id, task=args.task,
        action_topic=args.action_topic, units=args.units, videos=not args.no_videos, max_gap_s=args.max_gap,
        skip_bad_bags=args.skip_bad_bags, progress=not args.quiet)
    return run_export_cli(opts)
