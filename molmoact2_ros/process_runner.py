"""Start the nodes of a bringup description as separate OS processes (the pip path's ``ros2 launch``).

Every node gets its parameters through one ROS 2 parameters file, its own log file, and the same
environment. Stopping sends SIGINT (the nodes hold position and disconnect), then SIGTERM, then
SIGKILL to whatever is left, so a hung node cannot keep the group alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from molmoact2_ros.bringup import NodeSpec, params_file_content


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ProcessGroup:
    def __init__(self, specs: list[NodeSpec], env: dict[str, str], log_dir: Path):
        self.specs = specs
        self.env = env
        self.log_dir = Path(log_dir)
        self.nodes: list[RunningNode] = []

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        params_path = self.log_dir / "params.yaml"
        params_path.write_text(yaml.safe_dump(params_file_content(self.specs), sort_keys=False))
        for spec in self.specs:
            log_path = self.log_dir / f"{spec.name}.log"
            cmd = [sys.executable, "-u", "-c", f"from {spec.module} import main; main()",
                   "--ros-args", "-r", f"__node:={spec.name}", "--params-file", str(params_path)]
            log = open(log_path, "w")  # noqa: SIM115 - handed to the child; closed when it exits
            # The description's per-node environment (the DDS profile); what the group sets explicitly wins.
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**spec.env, **self.env},
                                    start_new_session=True)
            log.close()
            self.nodes.append(RunningNode(spec, proc, log_path))

    def exited(self) -> list[RunningNode]:
        return [n for n in self.nodes if n.process.poll() is not None]

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
        return {n.spec.name: n.process.wait() for n in self.nodes}
