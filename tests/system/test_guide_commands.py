"""The user guide's commands work (issue 12, item 6): every command in a ``bash`` block of docs/guide*.md,
README.md, docs/sim.md, docs/bags.md and docs/arms/*.md is either run here or listed in ``RULES`` with the
reason it cannot run on a CI machine; and every ``molmoact2-ros`` subcommand and flag, launch argument, ROS
topic and service name the docs mention exists in the code.

How commands run: a block runs as a user pastes it, command after command in one fresh directory, blocks
side by side. Commands that run until Ctrl-C or for minutes run as ``<subcommand> --help`` (``HELP``: the
rule names the test that covers the real run) and have their full argument list parsed by the CLI's own
parser (``test_every_documented_command_line_parses``). ``record`` runs for real in a side directory and
is stopped with SIGINT once it says it is recording (nothing publishes there, so the bags that
``replay`` / ``eval`` / ``export-dataset`` read are small MCAP bags written here, with the rosbags library,
at the paths the commands name: a real station bag is tests/system/test_bag_pipeline.py's subject).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from molmoact2_ros.cli import build_parser

pytestmark = [pytest.mark.system]

ROOT = Path(__file__).resolve().parents[2]
# Files whose bash blocks are exercised (the list); flags and ROS names are checked in all docs.
RUN_DOCS = sorted({ROOT / "README.md", ROOT / "docs" / "sim.md", ROOT / "docs" / "bags.md",
                   *ROOT.glob("docs/guide*.md"), *ROOT.glob("docs/guide/*.md"), *ROOT.glob("docs/arms/*.md")})
ALL_DOCS = sorted({ROOT / "README.md", *ROOT.glob("docs/**/*.md")})
CLI_NAMES = ("molmoact2-ros", ".venv/bin/molmoact2-ros")
# Repository folders the docs' commands name relative to the root (linked into each block's directory).
REPO_FOLDERS = ("config", "scripts", "docker")
COMMAND_TIMEOUT_S = 240.0  # per command, on a busy 2-core machine (eval/export import torch and LeRobot)

# What each kind of rule does with a command.
RUN = "run"  # run it as written; exit status 0
BAGS = "run on bags"  # run it as written, after writing a small station bag at every BAG path it names
RECORD = "run until Ctrl-C"  # start it, wait for "recording", SIGINT; exit status 0 and a bag
HELP = "help"  # long-running: `<subcommand> --help` runs (the real run: the test named in the reason)
DEMO_SCRIPT = "script"  # scripts/demo.sh: `bash -n`, and its arguments parse as `molmoact2-ros demo`'s
ENV = "environment"  # `export VAR=value`: a variable the stack reads, with a valid value
NOT_HERE = "not runnable here"  # needs hardware, root, a distro ROS, Docker: the reason says which

# (pattern on the command as written, .venv/bin/ prefix dropped; kind; reason or covering test). First match wins.
RULES: list[tuple[str, str, str]] = [
    (r"^molmoact2-ros (--help|-h)$", RUN, "instant"),
    (r"^molmoact2-ros (list-embodiments|check-config)\b", RUN, "instant"),
    (r"^molmoact2-ros sim-frames --embodiment\b", RUN, "one scene, ~10 s"),
    (r"^molmoact2-ros sim-frames --all\b", HELP,
     "renders all four scenes (~40 s on 2 cores); the one-scene form runs here (docs/guide.md)"),
    (r"^molmoact2-ros (replay|eval|export-dataset)\b", BAGS, "small MCAP bags written at the named paths"),
    (r"^molmoact2-ros record\b", RECORD, "runs until Ctrl-C"),
    (r"^molmoact2-ros demo\b", HELP,
     "runs 10-20 s after a model build: tests/system/test_demo_sim.py (sim, --record-video), "
     "tests/system/test_demo.py (mock, emulated)"),
    (r"^molmoact2-ros bringup\b", HELP,
     "runs until Ctrl-C, and a real --backend needs the arm: tests/system/test_bringup_failures.py (started, "
     "Ctrl-C, every start failure), tests/sim/test_gym_bridge.py (--sim --gym-config), tests/hardware/ "
     "(--emulate-hardware backends)"),
    (r"^molmoact2-ros make-tiny-checkpoint\b", HELP, "tests/unit/test_tiny_checkpoint*.py build it"),
    (r"^python -c .*LeRobotDataset", RUN, "loads the dataset the block's export wrote"),
    (r"^df -h /dev/shm$", RUN, "instant"),
    (r"^bash scripts/demo\.sh\b", DEMO_SCRIPT,
     "runs scripts/setup.sh (installs into .venv) then the demo: tests/system/test_demo_sim.py"),
    (r"^(EXTRAS=\S+ )?bash scripts/(setup|test)\.sh\b", NOT_HERE,
     "installs into .venv; CI runs them itself (.ci/run: scripts/test.sh, which runs scripts/setup.sh)"),
    (r"^export ", ENV, "sets the shell's environment"),
    (r"^ros2 launch molmoact2_ros bringup\.launch\.py\b", NOT_HERE,
     "needs a distro ROS 2 (ros2 launch); its arguments are checked against launch/bringup.launch.py"),
    (r"^ros2 ", NOT_HERE, "the ros2 CLI comes with a distro ROS 2, not with the PyPI wheels; the names and "
     "types are checked against the code"),
    (r"^source (/opt/ros/|\.venv/)", NOT_HERE, "a distro ROS 2 install / an interactive shell"),
    (r"^python3 -m venv --system-site-packages ", NOT_HERE, "a venv on a distro-ROS machine"),
    (r"^pip install ", NOT_HERE, "installs packages (scripts/setup.sh installs every extra in CI)"),
    (r"^sudo ", NOT_HERE, "needs root on the robot PC"),
    (r"^ip ", NOT_HERE, "needs a CAN adapter"),
    (r"^lerobot-", NOT_HERE, "needs an SO arm on a serial port"),
    (r"^python -m i2rt\.", NOT_HERE, "needs a YAM on CAN"),
    (r"^v4l2-ctl\b", NOT_HERE, "needs a camera (and v4l-utils)"),
    (r"^docker ", NOT_HERE, "needs Docker and builds images"),
]
# Variables an `export` in the docs may set, and what their values must look like.
ENV_VARS = {
    "ROS_DOMAIN_ID": r"^([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-2][0-9]|23[0-2])$",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": r"^(SUBNET|LOCALHOST|OFF|SYSTEM_DEFAULT)$",
    "ROS_STATIC_PEERS": r"^[\w.:-]+(;[\w.:-]+)*$",
    "MOLMOACT2_ROS_CACHE": r".",
}


@dataclass
class Command:
    doc: Path
    line: int
    text: str  # continuation lines joined
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # leading VAR=value words

    @property
    def shown(self) -> str:
        """The command with the .venv/bin/ prefix dropped: what the rules match."""
        return self.text.removeprefix(".venv/bin/")

    @property
    def ident(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}:{self.shown[:60]}"


@dataclass
class Block:
    doc: Path
    line: int
    commands: list[Command]


def _fenced_and_indented(doc: Path) -> Iterator[tuple[int, str]]:
    """(first line number, text) of every ```bash/```sh block, and of every 4-space indented line that is a
    command (the arm pages write one-line commands that way)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if re.match(r"^\s*```\s*$", lines[j]))
            if fence.group(1) in ("bash", "sh", "shell"):
                yield i + 2, "\n".join(lines[i + 1:end])
            i = end + 1
            continue
        m = re.match(r"^ {4,}(\S.*)$", lines[i])
        command_like = m and re.match(r"^(molmoact2-ros|ros2|\.venv/|python|bash|sudo|pip)\b", m.group(1))
        if command_like and (i == 0 or not lines[i - 1].strip()):
            yield i + 1, m.group(1)
        i += 1


def _commands(doc: Path, first_line: int, text: str) -> list[Command]:
    out = []
    joined: list[tuple[int, str]] = []
    for n, raw in enumerate(text.split("\n")):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + raw)
        else:
            joined.append((first_line + n, raw))
    for line_no, line in joined:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) and len(words) > 1:
            k, _, v = words.pop(0).partition("=")
            env[k] = v
        # The text to match: the line without its comment, as written (keeps quotes for the reader).
        text_no_comment = line.split(" #")[0].rstrip() if " #" in line else line.rstrip()
        out.append(Command(doc, line_no, text_no_comment.strip(), words, env))
    return out


def blocks(docs: list[Path]) -> list[Block]:
    return [Block(doc, n, _commands(doc, n, text)) for doc in docs for n, text in _fenced_and_indented(doc)]


def all_commands(docs: list[Path]) -> list[Command]:
    return [c for b in blocks(docs) for c in b.commands]


def rule_for(cmd: Command) -> tuple[str, str] | None:
    for pattern, kind, reason in RULES:
        if re.search(pattern, cmd.shown):
            return kind, reason
    return None


def _cli_argv(words: list[str]) -> list[str] | None:
    """The arguments after ``molmoact2-ros`` (or None for another program)."""
    return words[1:] if words and words[0] in CLI_NAMES else None


def _cli_prefix() -> list[str]:
    script = Path(sys.executable).parent / "molmoact2-ros"  # the console script the docs name
    return [str(script)] if script.exists() else [sys.executable, "-m", "molmoact2_ros.cli"]


# ---- small station bags ---------------------------------------------------------------------------------
def write_station_bag(path: Path, embodiment: str = "so101", seconds: float = 1.0) -> Path:
    """A short MCAP bag of the topics a station records (cameras at 64x48, joint states, the driver's
    commands, the latched instruction, an action chunk every half second), tagged with its embodiment as
    ``molmoact2-ros record`` tags it; positions follow a small smooth motion around home."""
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from molmoact2_ros.bags.topics import BAG_EMBODIMENT_KEY
    from molmoact2_ros.core.embodiment import load_embodiment

    emb = load_embodiment(embodiment)
    ts = get_typestore(Stores.ROS2_KILTED)
    t_ = ts.types
    rate, t0, h, w = emb.control_rate_hz, 1_700_000_000.0, 48, 64

    def header(t: float, frame: str = ""):
        sec = int(t)
        return t_["std_msgs/msg/Header"](stamp=t_["builtin_interfaces/msg/Time"](
            sec=sec, nanosec=round((t - sec) * 1e9)), frame_id=frame)

    def pose(t: float) -> np.ndarray:
        return np.asarray(emb.home) + 0.05 * np.sin(2 * np.pi * 0.3 * (t - t0) + np.arange(emb.dof))

    def joints(t: float):
        return t_["sensor_msgs/msg/JointState"](header=header(t), name=list(emb.joint_names), position=pose(t),
                                                velocity=np.zeros(0), effort=np.zeros(0))

    def ns(t: float) -> int:
        return round(t * 1e9)

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.set_custom_data(BAG_EMBODIMENT_KEY, emb.name)
        cams = {c: writer.add_connection(f"/cameras/{c}/image_raw", "sensor_msgs/msg/Image", typestore=ts)
                for c in emb.camera_names}
        js = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        cmd = writer.add_connection("/molmoact2_driver/commanded", "sensor_msgs/msg/JointState", typestore=ts)
        ins = writer.add_connection("/molmoact2/instruction", "std_msgs/msg/String", typestore=ts)
        chk = writer.add_connection("/molmoact2/action_chunk", "trajectory_msgs/msg/JointTrajectory", typestore=ts)
        writer.write(ins, ns(t0 - 0.5), ts.serialize_cdr(t_["std_msgs/msg/String"](data="pick up the red cube"),
                                                          "std_msgs/msg/String"))
        for i in range(int(seconds * rate)):
            t = t0 + i / rate
            for conn in (js, cmd):
                writer.write(conn, ns(t + 0.001), ts.serialize_cdr(joints(t), "sensor_msgs/msg/JointState"))
            for k, c in enumerate(emb.camera_names):
                img = np.full((h, w, 3), (i * 7 + k * 60) % 256, np.uint8)
                msg = t_["sensor_msgs/msg/Image"](header=header(t, c), height=h, width=w, encoding="rgb8",
                                                  is_bigendian=0, step=w * 3, data=img.reshape(-1))
                writer.write(cams[c], ns(t + 0.002), ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            if i % max(1, int(rate / 2)) == 0:
                steps = range(emb.chunk.n_action_steps)
                points = [t_["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=pose(t + k / rate), velocities=np.zeros(0), accelerations=np.zeros(0),
                    effort=np.zeros(0), time_from_start=t_["builtin_interfaces/msg/Duration"](
                        sec=0, nanosec=round(k * 1e9 / rate))) for k in steps]
                msg = t_["trajectory_msgs/msg/JointTrajectory"](header=header(t), joint_names=list(emb.joint_names),
                                                                points=points)
                writer.write(chk, ns(t + 0.04), ts.serialize_cdr(msg, "trajectory_msgs/msg/JointTrajectory"))
    return path


# ---- running blocks ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    rc: int
    output: str
    seconds: float = 0.0


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return Outcome(124, f"timed out after {COMMAND_TIMEOUT_S} s: {exc.stdout!r} {exc.stderr!r}")
    return Outcome(res.returncode, (res.stdout + res.stderr)[-4000:])


def _run_record(argv: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
    """Start a recorder, wait until it says it records, stop it with Ctrl-C (SIGINT): exit 0 and a bag."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(COMMAND_TIMEOUT_S)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Outcome(124, f"did not stop on SIGINT: {out[-2000:]} {err[-2000:]}")
    said = "".join(first) + out + err[-3000:]
    if not (first and first[0].startswith("recording")):
        return Outcome(proc.returncode or 1, f"never said 'recording': {said}")
    args = build_parser().parse_args(argv[len(_cli_prefix()):])
    if not (cwd / args.output / "metadata.yaml").exists():
        return Outcome(1, f"no bag at {args.output}: {said}")
    return Outcome(proc.returncode, said)


def run_block(block: Block, cwd: Path, template_bag: Path) -> dict[str, Outcome]:
    """Run a block's commands in order in ``cwd``, as a user pastes it; commands after a failure still run.
    The docs' commands run from the repository root (``config/...``, ``scripts/...``): ``cwd`` links those
    folders, so what the commands write stays out of the source tree."""
    cwd.mkdir(parents=True)
    for folder in REPO_FOLDERS:
        (cwd / folder).symlink_to(ROOT / folder, target_is_directory=True)
    results: dict[str, Outcome] = {}
    for cmd in block.commands:
        started = time.monotonic()
        _run_one(cmd, cwd, template_bag, results)
        if cmd.ident in results:
            results[cmd.ident].seconds = time.monotonic() - started
    return results


def _run_one(cmd: Command, cwd: Path, template_bag: Path, results: dict[str, Outcome]) -> None:
    rule = rule_for(cmd)
    if rule is None or rule[0] == NOT_HERE:
        return
    kind = rule[0]
    env = {**os.environ, **cmd.env}
    cli = _cli_argv(cmd.argv)
    if kind == RUN:
        argv = [*_cli_prefix(), *cli] if cli is not None else (
            [sys.executable, *cmd.argv[1:]] if cmd.argv[0] == "python" else cmd.argv)
        results[cmd.ident] = _run(argv, cwd, env)
    elif kind == BAGS:
        args = build_parser().parse_args(cli)
        for bag in args.bags if hasattr(args, "bags") else [args.bag]:
            if not (cwd / bag).exists():
                (cwd / bag).parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(template_bag, cwd / bag)
        results[cmd.ident] = _run([*_cli_prefix(), *cli], cwd, env)
    elif kind == RECORD:
        side = cwd / "_recorder"  # its bag must not stand in for the station bag the next commands read
        side.mkdir()
        results[cmd.ident] = _run_record([*_cli_prefix(), *cli], side, env)
    elif kind == HELP:
        results[cmd.ident] = _run([*_cli_prefix(), cli[0], "--help"], cwd, env)
    elif kind == DEMO_SCRIPT:
        syntax = _run(["bash", "-n", str(ROOT / "scripts" / "demo.sh")], cwd, env)
        try:
            build_parser().parse_args(["demo", *cmd.argv[2:]])
            results[cmd.ident] = syntax
        except SystemExit:
            results[cmd.ident] = Outcome(2, f"`molmoact2-ros demo` does not take {cmd.argv[2:]}")
    elif kind == ENV:
        bad = []
        for word in cmd.argv[1:]:
            name, _, value = word.partition("=")
            if name not in ENV_VARS or not re.search(ENV_VARS[name], value):
                bad.append(word)
        results[cmd.ident] = Outcome(1 if bad else 0, f"unknown variable or bad value: {bad}")


RUN_BLOCKS = blocks(RUN_DOCS)
RUN_COMMANDS = [c for b in RUN_BLOCKS for c in b.commands]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every runnable block, run once (identical blocks in two docs once), two or three at a time."""
    pytest.importorskip("rosbags")
    pytest.importorskip("rclpy")
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("guide")
    template = write_station_bag(base / "template_bag")
    unique: dict[tuple[str, ...], Block] = {}
    for block in RUN_BLOCKS:
        if any(rule_for(c) and rule_for(c)[0] != NOT_HERE for c in block.commands):
            unique.setdefault(tuple(c.text for c in block.commands), block)
    results: dict[str, Outcome] = {}
    by_text: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(run_block, b, base / f"block{i}", template) for i, b in enumerate(unique.values())]
        for f in futures:
            for ident, outcome in f.result().items():
                results[ident] = outcome
    for block in unique.values():
        for c in block.commands:
            if c.ident in results:
                by_text[c.text] = results[c.ident]
    # A command of a duplicate block (the same block in README and the guide) shares its twin's outcome.
    for c in RUN_COMMANDS:
        if c.ident not in results and c.text in by_text:
            results[c.ident] = by_text[c.text]
    slowest = sorted(results.items(), key=lambda kv: -kv[1].seconds)[:8]
    print("slowest documented commands:", *(f"  {o.seconds:5.1f} s  {k}" for k, o in slowest), sep="\n")
    return results


# ---- tests ---------------------------------------------------------------------------------------------------
def test_the_docs_have_commands_and_every_one_is_classified():
    assert len(RUN_COMMANDS) > 40, [c.ident for c in RUN_COMMANDS]
    assert any(d.name == "guide.md" for d in RUN_DOCS)
    unclassified = [c.ident for c in RUN_COMMANDS if rule_for(c) is None]
    assert not unclassified, ("commands in the docs that no rule classifies; add a RULES entry (runnable here, "
                              f"or why not): {unclassified}")


@pytest.mark.parametrize("cmd", [c for c in RUN_COMMANDS if rule_for(c) and rule_for(c)[0] != NOT_HERE],
                         ids=lambda c: c.ident)
def test_documented_command_runs(cmd: Command, outcomes):
    outcome = outcomes[cmd.ident]
    kind, reason = rule_for(cmd)
    assert outcome.rc == 0, f"`{cmd.text}` ({kind}: {reason}) exited {outcome.rc}:\n{outcome.output}"


def _code_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, and the fenced blocks' lines."""
    spans, in_fence = [], False
    for line in text.splitlines():
        if re.match(r"^\s*```", line):
            in_fence = not in_fence
            continue
        if in_fence:
            spans.append(line)
        else:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# Flags the guide quotes on their own that belong to other programs, with the program.
FOREIGN_FLAGS = {"--system-site-packages": "python -m venv", "--ipc": "docker run", "--shm-size": "docker run"}


def test_every_documented_subcommand_and_flag_exists():
    subs = _subparsers()
    all_flags = {o for p in subs.values() for a in p._actions for o in a.option_strings}
    problems = []
    for doc in ALL_DOCS:
        for span in _code_spans(doc.read_text(encoding="utf-8")):
            for m in re.finditer(r"molmoact2-ros\s+([a-z][\w-]*)([^|`#]*)", span):
                sub, rest = m.group(1), m.group(2)
                if sub not in subs:
                    problems.append(f"{doc.name}: `molmoact2-ros {sub}`: no such subcommand")
                    continue
                own = {o for a in subs[sub]._actions for o in a.option_strings}
                problems += [f"{doc.name}: `molmoact2-ros {sub} {f}`: no such flag"
                             for f in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", rest) if f not in own]
            # A flag quoted on its own (`--emulate-hardware`) in the guide's pages must be some subcommand's flag.
            alone = re.match(r"^(--[a-z][\w-]*)(?:[ =]|$)", span.strip())
            if doc in RUN_DOCS and alone and alone.group(1) not in all_flags | set(FOREIGN_FLAGS):
                problems.append(f"{doc.name}: `{span.strip()}`: no molmoact2-ros subcommand has {alone.group(1)}")
    assert not problems, "\n".join(problems)


def test_every_documented_command_line_parses():
    """The full argument list of every molmoact2-ros command (and scripts/demo.sh's pass-through) in a bash
    block parses, and an embodiment it names loads."""
    from molmoact2_ros.core.embodiment import load_embodiment

    problems = []
    for cmd in all_commands(ALL_DOCS):
        argv = _cli_argv(cmd.argv)
        if cmd.argv[:2] == ["bash", "scripts/demo.sh"]:
            argv = ["demo", *cmd.argv[2:]]
        if argv is None:
            continue
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help exits 0; a rejected argument 2
            if exc.code:
                problems.append(f"{cmd.ident}: the CLI rejects these arguments")
            continue
        emb = getattr(args, "embodiment", "")
        if emb and isinstance(emb, str):
            try:
                load_embodiment(emb if not emb.endswith((".yaml", ".yml")) else str(ROOT / emb))
            except Exception as exc:  # any failure is the finding
                problems.append(f"{cmd.ident}: embodiment {emb!r}: {exc}")
    assert not problems, "\n".join(problems)


def _code_strings() -> dict[Path, list[str]]:
    """Every string literal of the package, f-strings with ``{}`` for their fields, by module."""
    out = {}
    for py in (ROOT / "molmoact2_ros").rglob("*.py"):
        strings = []
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                strings.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        out[py] = strings
    return out


def _name_patterns() -> list[re.Pattern]:
    """Topic and service names the code creates, as patterns: absolute names; ``~/x`` and ``{base}/x`` in a
    node module as ``/<that node's name>/x`` (and ``~/x`` itself); f-string fields match one name segment."""
    pats = []
    for py, strings in _code_strings().items():
        node = next((s for s in re.findall(r'^NODE_NAME = "(\w+)"', py.read_text(encoding="utf-8"), re.M)), None)
        for s in strings:
            if not re.fullmatch(r"(~|\{\})?/[\w{}/]+", s):
                continue
            names = [s]
            if node and s.startswith(("~/", "{}/")):
                names = [f"/{node}/" + s.split("/", 1)[1], "~/" + s.split("/", 1)[1]]
            for n in names:
                pats.append(re.compile("^" + re.escape(n).replace(r"\{\}", "[^/]+") + "$"))
    return pats


# ROS-looking names in the docs that are not ours, with why.
FOREIGN_NAMES = {
    "/franka/joint_states": "franka_ros2's joint state broadcaster (docs/arms/franka.md, ros_topic backend)",
    "/joint_position_controller/commands": "franka_ros2's position controller (ros_topic backend)",
    "/camera_front/color/image_raw": "a lab's own camera driver, remapped onto (docs/deployment.md)",
    "/camera_wrist/color/image_raw": "a lab's own camera driver, remapped onto (docs/deployment.md)",
}
# First path segments of file-system paths, which are not ROS names.
FS_ROOTS = {"dev", "etc", "sys", "proc", "tmp", "opt", "usr", "home", "models", "root", "var", "lib", "bin", "mnt",
            "run", "workspace", "ws", "data", "path"}


def _ros_names(text: str) -> set[str]:
    names = set()
    for span in _code_spans(text):
        for m in re.finditer(r"(?<![\w.~:/-])(~?/[A-Za-z_<][\w<>]*(?:/[\w<>]+)*)", span):
            name = m.group(1)
            first = name.lstrip("~/").split("/")[0]
            if first in FS_ROOTS or "." in name or (name.startswith("/") and name.count("/") == 1 and first in (
                    "compressed",)):
                continue
            names.add(name)
    return names


def test_every_documented_topic_and_service_exists_in_the_code():
    pats = _name_patterns()
    problems = []
    for doc in ALL_DOCS:
        for name in sorted(_ros_names(doc.read_text(encoding="utf-8"))):
            if name in FOREIGN_NAMES:
                continue
            probe = re.sub(r"<[^>]+>", "x", name)
            if not any(p.match(probe) for p in pats):
                problems.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not problems, "ROS names in the docs that no code creates:\n" + "\n".join(problems)


def test_documented_service_and_topic_types_match_the_code():
    """`ros2 service call NAME TYPE` / `ros2 topic pub NAME TYPE` in the docs use the type the code uses."""
    code = {}
    for text in (p.read_text(encoding="utf-8") for p in (ROOT / "molmoact2_ros" / "nodes").glob("*.py")):
        node = re.search(r'^NODE_NAME = "(\w+)"', text, re.M)
        for typ, name in re.findall(r'create_service\((\w+), f?"(?:~|\{base\})(/\w+)"', text):
            if node:
                code[f"/{node.group(1)}{name}"] = typ
    code["/estop"] = "Bool"  # the driver's subscription (nodes/qos.py ESTOP_TOPIC)
    code["/molmoact2/instruction"] = "String"
    problems, seen = [], 0
    for cmd in all_commands(ALL_DOCS):
        w = cmd.argv
        if w[:3] in (["ros2", "service", "call"], ["ros2", "topic", "pub"]):
            args = [a for a in w[3:] if not a.startswith("-") and a not in ("transient_local",)]
            name, typ = args[0], args[1]
            seen += 1
            if name in code and typ.rsplit("/", 1)[-1] != code[name]:
                problems.append(f"{cmd.ident}: {name} is a {code[name]}, not {typ}")
            elif name not in code:
                problems.append(f"{cmd.ident}: {name}: no such service or topic in the code")
    assert seen >= 5
    assert not problems, "\n".join(problems)


def test_documented_launch_arguments_exist():
    from molmoact2_ros.bringup import launch_argument_defaults  # what launch/bringup.launch.py declares

    args = launch_argument_defaults()
    problems = []
    for doc in ALL_DOCS:
        for span in _code_spans(doc.read_text(encoding="utf-8")):
            if "bringup.launch.py" in span:
                problems += [f"{doc.name}: `{k}:=`" for k in re.findall(r"(\w+):=", span) if k not in args]
    assert not problems, f"launch arguments that launch/bringup.launch.py does not declare: {problems}"


def test_the_guide_links_resolve():
    problems = []
    for doc in [d for d in RUN_DOCS if d.name.startswith("guide") or d.parent.name == "guide"]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if not target.startswith("http") and not (doc.parent / target).exists():
                problems.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not problems, problems
