"""ROS environment defaults for local runs.

Fast DDS's default discovery multicasts to the whole network. Local runs (demo, tests, simulation,
replay) must stay on this host, so unless the user already chose a discovery range we pin it to
LOCALHOST. A multi-host setup opts in explicitly: ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET (or
ROS_STATIC_PEERS) in its environment.

Also the one ``main()`` body of every node (:func:`spin_node`), which makes a node that cannot start
exit non-zero with its reason instead of staying up unconfigured.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

DISCOVERY_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"
# Set by process_runner for each node it starts: where spin_node reports "ready" or "failed: <reason>".
STATUS_FILE_VAR = "MOLMOACT2_ROS_STATUS_FILE"


def apply_local_ros_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    env = os.environ if env is None else env
    env.setdefault(DISCOVERY_VAR, "LOCALHOST")
    return env


def private_domain_id(seed: int | None = None) -> int:
    """A ROS_DOMAIN_ID for a self-contained local run, so concurrent runs on one host don't hear each
    other. Kept within 1..101, the range whose DDS ports fit on every platform."""
    seed = os.getpid() if seed is None else seed
    return 1 + seed % 101


def _startup_failure(node: Any) -> str:
    """The node's autostart failure reason ('' while none): its ``startup_failure`` property, if it has one."""
    reason = getattr(node, "startup_failure", None)
    return reason if isinstance(reason, str) and reason else ""


def report_startup(status: str) -> None:
    """Tell whoever started this process (``process_runner``) how start-up went: ``ready`` or
    ``failed: <reason>`` in the file ``$MOLMOACT2_ROS_STATUS_FILE`` names. Nothing without the variable.

    A file, not a log line to parse: the reason arrives verbatim, and the runner can tell a node still
    loading its model from one that is up. Replaced atomically so a reader never sees half a line."""
    path = os.environ.get(STATUS_FILE_VAR)
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    # A runner whose log directory vanished cannot read it anyway: never let reporting stop the node.
    with contextlib.suppress(OSError):
        with open(tmp, "w") as f:
            f.write(status.replace("\n", " ") + "\n")
        os.replace(tmp, path)


def _await_startup(node: Any, executor: Any, context_ok: Callable[[], bool]) -> str:
    """Spin until the node's autostart has finished (``startup_pending`` false); its failure reason or ''.

    Nodes that autostart in their constructor (driver, perception) are done at once; the policy node
    configures from a timer so that /diagnostics shows the model loading, and is done after it ran."""
    while context_ok():
        failure = _startup_failure(node)
        if failure or not getattr(node, "startup_pending", False):
            return failure
        executor.spin_once(timeout_sec=0.5)
    return ""


def unused_domain_id(first: int | None = None, tries: int = 20, listen_s: float = 1.0) -> int:
    """A ROS_DOMAIN_ID for a self-contained local run that no other node is using: ``first`` (default: from
    the pid, :func:`private_domain_id`) unless nodes answer there within ``listen_s`` (another session's
    run on a shared machine: its topics would mix with ours), else the next free one in 1..101. Discovery
    stays on this host while probing. Needs rclpy."""
    import time

    import rclpy

    apply_local_ros_defaults()
    start = private_domain_id() if first is None else first
    domain = start
    for k in range(tries):
        domain = 1 + (start - 1 + k) % 101
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=domain)
        try:
            node = rclpy.create_node("molmoact2_domain_probe", context=ctx)
            time.sleep(listen_s)
            others = [n for n in node.get_node_names() if n != "molmoact2_domain_probe"]
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=ctx)
        if not others:
            return domain
    return domain


def spin_node(make_node: Callable[[], Any], *, before_spin: Callable[[Any], None] | None = None,
              args: list[str] | None = None, fast_exit: bool = False) -> None:
    """The one ``main()`` body every node shares: local DDS defaults, init, spin until SIGINT/SIGTERM,
    then the node's ``release()`` (hold, disconnect, stop threads) and a clean shutdown.

    A node that cannot start exits with status 1 and one FATAL line saying why (``did not start: ...``):
    a configuration error while constructing it, or an autostart that failed (its ``startup_failure``).
    Staying up unconfigured would let ``molmoact2-ros bringup`` (or any supervisor) believe it runs.

    Single-threaded on purpose: each node does its heavy work on a thread of its own (control loop,
    inference, camera grabbing) and every callback is short. rclpy's MultiThreadedExecutor (Kilted
    wheels) busy-spins while a subscription has messages in flight and starved those threads of the GIL:
    measured in the driver with chunks at 5 Hz from another process, 64 of 240 ticks ran (p99 period
    error 1.05 s) versus 241 of 240 (p99 2.3 ms) with this executor.
    """
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from molmoact2_ros.core.errors import MolmoAct2RosError
    from molmoact2_ros.nodes.param_check import use_process_arguments

    apply_local_ros_defaults()
    use_process_arguments(args)  # the nodes' parameter check reads the --ros-args rclpy.init reads
    rclpy.init(args=args)
    node = None
    failure = ""
    logger = rclpy.logging.get_logger(_logger_name(make_node))
    try:
        try:
            node = make_node()
        except (MolmoAct2RosError, ParameterException) as exc:  # a bad configuration: one line, no traceback
            failure = str(exc)
        if node is not None:
            logger = node.get_logger()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            if before_spin is not None:
                before_spin(node)
            failure = _await_startup(node, executor, rclpy.ok)
            if not failure and rclpy.ok():
                report_startup("ready")
                executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM: the normal way to stop
    except RuntimeError:
        # A take racing the signal handler's context shutdown raises here; only a live context is a bug.
        if rclpy.ok():
            raise
    finally:
        if failure:
            logger.fatal(f"did not start: {failure}")
            report_startup(f"failed: {failure}")
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()
    if fast_exit:
        # Everything is released; what is left is the interpreter's teardown, which with torch and
        # transformers loaded took 2.6-3.3 s on a quiet 2-core machine and, on a busy one, outlasted a
        # supervisor's SIGINT grace (the demo then saw the policy killed by SIGTERM). Nothing is left to save.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if failure else 0)
    if failure:
        raise SystemExit(1)


def _logger_name(make_node: Callable[[], Any]) -> str:
    """The node's name for messages logged before it exists: its module's NODE_NAME (every node module
    has one), else the package's."""
    module = sys.modules.get(getattr(make_node, "__module__", "") or "")
    return str(getattr(module, "NODE_NAME", "molmoact2_ros"))
