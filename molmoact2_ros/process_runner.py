"""Start the nodes of a bringup description as separate OS processes (the pip path's ``ros2 launch``).

Every node gets its parameters through one ROS 2 parameters file (then the user's ``params_file``), its own
log file, and the same environment; each line a node prints goes to its log file and, when the caller asks
(``echo``), to the terminal prefixed with ``[node_name]``, as ``ros2 launch`` does. Each ROS node reports
how its start-up went in a status file of its own (``runtime_env.spin_node`` writes ``ready`` or
``failed: <reason>``), so the runner can say "started" only when every node is up, and give the reason
when one is not; a plain process (the bag player) counts as up once started. Stopping sends SIGINT (the
nodes hold position and disconnect), then SIGTERM, then SIGKILL to whatever is left, so a hung node
cannot keep the group alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from molmoact2_ros.bringup import NodeSpec, command_line, params_file_content
from molmoact2_ros.core.errors import ConfigError
from molmoact2_ros.nodes.runtime_env import STATUS_FILE_VAR


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    log_path: Path
    status_path: Path
    reader: threading.Thread | None = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> str:
        """What the node reported about its start-up: '' (nothing yet), 'ready' or 'failed: <reason>'.
        A plain process (not a ROS node) has nothing to report: 'ready' while it runs."""
        if not self.spec.ros_node:
            return "ready" if self.process.poll() is None else ""
        try:
            return self.status_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def startup_problem(self) -> str:
        """Why this node is not (or no longer) running, '' while it is: the reason it reported, else its
        exit code and the end of its log."""
        status = self.status()
        if status.startswith("failed:"):
            return f"{self.spec.name} did not start: {status.removeprefix('failed:').strip()} (log: {self.log_path})"
        code = self.process.poll()
        if code is None or (code == 0 and not self.spec.ros_node):  # the bag player ending is not a fault
            return ""
        when = "while running" if status == "ready" else "during start-up"
        return f"{self.spec.name} exited {when} (code {code}); last lines of {self.log_path}:\n{self.log_tail()}"


class ProcessGroup:
    def __init__(self, specs: list[NodeSpec], env: dict[str, str], log_dir: Path,
                 echo: Callable[[str], None] | None = None):
        self.specs = specs
        self.env = env
        self.log_dir = Path(log_dir)
        self.echo = echo  # called with each line a node prints, prefixed '[name] '
        self.nodes: list[RunningNode] = []

    def start(self) -> None:
        params_path = self.log_dir / "params.yaml"
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            params_path.write_text(yaml.safe_dump(params_file_content(self.specs), sort_keys=False))
        except OSError as exc:  # nothing started yet: one line for the user, not a traceback
            raise ConfigError(f"cannot write the node logs to {str(self.log_dir)!r}: {exc.strerror or exc}; "
                              "choose a writable --log-dir") from None
        for spec in self.specs:
            log_path = self.log_dir / f"{spec.name}.log"
            status_path = self.log_dir / f"{spec.name}.status"
            status_path.unlink(missing_ok=True)  # a previous run's verdict must not be read as this one's
            cmd = command_line(spec, params_path)
            # The description's per-node environment (the DDS profile); what the group sets explicitly wins.
            env = {**spec.env, **self.env, STATUS_FILE_VAR: str(status_path)}
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            reader = threading.Thread(target=self._copy_output, args=(proc, log_path, f"[{spec.name}] "),
                                      name=f"log_{spec.name}", daemon=True)
            reader.start()
            self.nodes.append(RunningNode(spec, proc, log_path, status_path, reader))

    def _copy_output(self, proc: subprocess.Popen, log_path: Path, prefix: str) -> None:
        """Each line the node prints: to its log file (line-buffered, so a failure's tail is there at once)
        and, prefixed, to ``echo``. Runs until the node (and whatever inherited its output) closes it."""
        with open(log_path, "w", buffering=1, errors="replace") as log:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                log.write(line)
                if self.echo is not None:
                    self.echo(prefix + line.rstrip("\n"))

    def finished(self) -> list[RunningNode]:
        """Plain processes (the bag player) that ended successfully: their work is done."""
        return [n for n in self.nodes if not n.spec.ros_node and n.process.poll() == 0]

    def exited(self) -> list[RunningNode]:
        return [n for n in self.nodes if n.process.poll() is not None]

    def waiting(self) -> list[RunningNode]:
        """Nodes still starting: alive and not yet reported ready."""
        return [n for n in self.nodes if n.process.poll() is None and n.status() != "ready"]

    def first_problem(self) -> str:
        """The first node that failed to start or exited, as a message ('' when every node is fine)."""
        for n in self.nodes:
            problem = n.startup_problem()
            if problem:
                return problem
        return ""

    def wait_started(self, timeout_s: float | None = None, should_stop: Callable[[], bool] = lambda: False,
                     on_ready: Callable[[RunningNode], None] = lambda n: None) -> str:
        """Wait until every node reported ready. Returns '' when all are, else why not: a node's start-up
        failure, a node that exited, or the timeout. Returns '' at once if ``should_stop`` turns true.
        ``on_ready`` is called once per node as it comes up (progress for the user)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        announced: set[str] = set()
        while not should_stop():
            problem = self.first_problem()
            if problem:
                return problem
            for n in self.nodes:
                if n.spec.name not in announced and n.status() == "ready":
                    announced.add(n.spec.name)
                    on_ready(n)
            pending = self.waiting()
            if not pending:
                return ""
            if deadline is not None and time.monotonic() > deadline:
                return (f"{', '.join(n.spec.name for n in pending)} did not report ready within {timeout_s:g} s; "
                        f"logs in {self.log_dir}")
            time.sleep(0.1)
        return ""

    def stop(self, grace_s: float = 8.0) -> dict[str, int]:
        """Stop every node; returns each node's exit code."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            alive = [n for n in self.nodes if n.process.poll() is None]
            if not alive:
                break
            for n in alive:
                with contextlib.suppress(ProcessLookupError):  # already gone: nothing to stop
                    os.killpg(n.process.pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(n.process.poll() is None for n in alive):
                time.sleep(0.05)
        codes = {n.spec.name: n.process.wait() for n in self.nodes}
        for n in self.nodes:  # the last lines into the log files before anyone reads them
            if n.reader is not None:
                n.reader.join(timeout=5.0)
        return codes
