"""Record a short bag from the running demo graph: real bags for tests, evaluation and export.

:func:`record_demo_bag` starts perception (synthetic cameras), policy (real MolmoAct2 code, tiny checkpoint,
built on first use) and driver (mock arm) as processes, exactly as ``molmoact2-ros demo`` does, records the
station's topics with :class:`~molmoact2_ros.bags.record.StationRecorder` from start-up until ``seconds``
after the first action chunk, then stops everything.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from molmoact2_ros.bags.topics import CHUNK_QOS, CHUNK_TOPIC, INSTRUCTION_TOPIC, LATCHED_QOS, BagError, qos_profile

DEFAULT_INSTRUCTION = "pick up the red cube and place it in the bowl"


def record_demo_bag(out_dir: str | Path, embodiment: str = "so101", seconds: float = 5.0, cameras: str = "raw",
                    startup_timeout_s: float = 240.0, instruction: str = DEFAULT_INSTRUCTION,
                    name: str = "", min_chunks: int = 0, max_seconds: float = 120.0) -> Path:
    """Run the demo graph and record it (start-up, then ``seconds`` after the first action chunk) into a new bag under
    ``out_dir``; returns the bag directory. Uses this process's ROS_DOMAIN_ID (a private one if unset).

    ``min_chunks``: keep recording past ``seconds`` until that many chunks were recorded (a busy machine infers
    slowly), at most ``max_seconds`` in all."""
    from molmoact2_ros.bags.record import RecordOptions, StationRecorder
    from molmoact2_ros.bringup import BringupOptions, describe
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.demo import resolve_checkpoint
    from molmoact2_ros.nodes.runtime_env import apply_local_ros_defaults, unused_domain_id
    from molmoact2_ros.process_runner import ProcessGroup

    emb = load_embodiment(embodiment)
    apply_local_ros_defaults()
    if "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(unused_domain_id())
    out = Path(out_dir) / (name or f"demo_{emb.name}_{int(time.time())}")
    checkpoint = resolve_checkpoint(emb, "tiny", progress=lambda *_: None)
    specs = describe(BringupOptions(
        embodiment=emb.source_path, checkpoint=checkpoint, instruction=instruction,
        torch_num_threads=1 if (os.cpu_count() or 1) <= 4 else 0))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    # A small node gives the instruction as an operator would (latched: the recorder, joining later, still
    # gets it) and watches for the first chunk; recording starts then, so start-up (model load, warm-up)
    # does not fill the bag with camera frames.
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    operator = rclpy.create_node("molmoact2_bag_operator", context=context)
    operator.create_publisher(String, INSTRUCTION_TOPIC, qos_profile(LATCHED_QOS)).publish(String(data=instruction))
    chunks: list[int] = []
    operator.create_subscription(JointTrajectory, CHUNK_TOPIC, lambda _m: chunks.append(1), qos_profile(CHUNK_QOS))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(operator)
    group = ProcessGroup(specs, dict(os.environ), Path(tempfile.mkdtemp(prefix=f"molmoact2_bag_{emb.name}_")))
    group.start()
    problem = ""
    recorder = None
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not chunks:
            problem = group.first_problem()
            if problem or time.monotonic() > deadline:
                problem = problem or f"no action chunk within {startup_timeout_s:g} s (logs: {group.log_dir})"
                break
            executor.spin_once(timeout_sec=0.1)
        if not problem:
            duration = 0.0 if min_chunks else seconds  # 0: until enough() says so
            recorder = StationRecorder(RecordOptions(output=str(out), embodiment=emb.source_path, cameras=cameras,
                                                     duration_s=duration, progress=False))
            recorder.start()
            t0 = time.monotonic()

            def enough() -> bool:
                # Chunks in the bag, not on the wire: the recorder's participant discovers the policy's a
                # moment after it starts, and chunks published before that are not in the bag.
                t = time.monotonic() - t0
                recorded = recorder.writer.counts.get(CHUNK_TOPIC, 0)
                return bool(min_chunks) and ((t >= seconds and recorded >= min_chunks) or t >= max_seconds)

            summary = recorder.run(lambda: bool(group.first_problem()) or enough(),
                                   lambda: executor.spin_once(timeout_sec=0))
            problem = summary.problem or group.first_problem()
    finally:
        if recorder is not None:
            recorder.stop()
        group.stop()
        executor.shutdown()
        operator.destroy_node()
        rclpy.try_shutdown(context=context)
    if problem:
        raise BagError(f"recording the demo graph into {str(out)!r} failed: {problem}")
    return out
