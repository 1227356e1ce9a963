"""Does the driver's control loop wait on messages? Tick lateness while 20,000-step chunks and cameras arrive.

The real driver node runs in its own process (as deployed); this process is the rest of the station: a
policy stand-in sending 30-step chunks closed-loop at 10 Hz, a flood of 20,000-step chunks (~1.3 MB each)
at 5 Hz, and three 640×480 rgb8 cameras at 30 Hz on the camera topics. Each cell runs the driver with one
chunk decoder — ``message`` (rclpy deserialisation: a Python object per point, under the GIL) or ``cdr``
(the default: the raw bytes, refused from the head when longer than ``chunk.max_steps``) — quiet and under
that load, and reads the driver's own /diagnostics: tick lateness (start − deadline) p99 and max, period
error max, and how many chunks it executed and refused. Target (issue 13): no tick later than one period.

    .venv/bin/python benchmarks/bench_tick_gap.py [--seconds 20] [--embodiments so101,franka_droid]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

FLOOD_STEPS = 20_000
FLOOD_HZ = 5.0
POLICY_HZ = 10.0
CAMERAS = ("front", "wrist", "side")
CAMERA_HZ = 30.0


def run_cell(embodiment: str, decode: str, loaded: bool, seconds: float) -> dict[str, str]:
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from molmoact2_ros.core.chunk import ActionChunk
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.nodes.contract import chunk_to_msg, stamp_to_msg
    from molmoact2_ros.nodes.diagnostics import status_values
    from molmoact2_ros.nodes.qos import (
        CAMERA_QOS,
        CHUNK_QOS,
        CHUNK_TOPIC,
        DIAGNOSTICS_QOS,
        DIAGNOSTICS_TOPIC,
        JOINT_STATE_QOS,
        JOINT_STATES_TOPIC,
    )

    emb = load_embodiment(embodiment)
    ticks = round(seconds * emb.tick_rate_hz * 2)
    driver = subprocess.Popen(
        [sys.executable, "-m", "molmoact2_ros.nodes.driver_node", "--ros-args", "-p", f"embodiment:={embodiment}",
         "-p", f"chunk_decode:={decode}", "-p", f"period_error_window_ticks:={ticks}",
         "-p", "diagnostics_period_s:=0.25"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("tick_gap_station", context=ctx)
    state: dict = {"q": None, "diag": {}}
    lock = threading.Lock()

    def on_js(msg: JointState) -> None:
        order = [list(msg.name).index(n) for n in emb.joint_names]
        with lock:
            state["q"] = np.asarray(msg.position)[order]

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("molmoact2_driver"):
                with lock:
                    state["diag"] = status_values(status)

    node.create_subscription(JointState, JOINT_STATES_TOPIC, on_js, JOINT_STATE_QOS)
    node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, DIAGNOSTICS_QOS)
    chunk_pub = node.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
    cam_pubs = [node.create_publisher(Image, f"/camera/{c}/image_raw", CAMERA_QOS) for c in CAMERAS]
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    stop = threading.Event()
    spin = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)],
                            daemon=True)
    spin.start()

    def now_s() -> float:
        return node.get_clock().now().nanoseconds * 1e-9

    def policy() -> None:
        t0 = time.monotonic()
        while not stop.wait(1.0 / POLICY_HZ):
            with lock:
                q = state["q"]
            if q is None:
                continue
            t = time.monotonic() - t0
            steps = np.arange(emb.chunk.action_horizon) / emb.control_rate_hz
            swing = 0.15 * np.sin(2 * np.pi * 0.3 * (t + steps))[:, None] * (emb.upper - emb.lower)[None, :] * 0.2
            rows = np.clip(emb.home + swing, emb.lower, emb.upper)
            rows[0] = q  # the step for now starts where the arm is
            chunk_pub.publish(chunk_to_msg(ActionChunk(emb.joint_names, rows, now_s(), emb.control_rate_hz)))

    def flood() -> None:
        big = chunk_to_msg(ActionChunk(emb.joint_names, np.tile(emb.home, (FLOOD_STEPS, 1)), now_s(),
                                       emb.control_rate_hz))
        while not stop.wait(1.0 / FLOOD_HZ):
            big.header.stamp = stamp_to_msg(now_s())
            chunk_pub.publish(big)

    def cameras() -> None:
        img = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=bytes(640 * 480 * 3))
        while not stop.wait(1.0 / CAMERA_HZ):
            img.header.stamp = stamp_to_msg(now_s())
            for pub in cam_pubs:
                pub.publish(img)

    workers = [threading.Thread(target=policy, daemon=True)]
    if loaded:
        workers += [threading.Thread(target=flood, daemon=True), threading.Thread(target=cameras, daemon=True)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and state["diag"].get("state") not in ("IDLE", "RUNNING", "HOLD"):
            time.sleep(0.1)
        for w in workers:
            w.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state["diag"].get("state") != "RUNNING":
            time.sleep(0.1)
        # Measure only the loaded window: restart the driver's percentile window by reading counters now.
        start_ticks = int(state["diag"].get("ticks", "0") or 0)
        time.sleep(seconds)
        with lock:
            diag = dict(state["diag"])
        diag["ticks_in_window"] = str(int(diag.get("ticks", "0") or 0) - start_ticks)
        return diag
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
        spin.join(timeout=5)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        driver.terminate()
        try:
            driver.wait(timeout=15)
        except subprocess.TimeoutExpired:
            driver.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--embodiments", default="so101,franka_droid")
    args = ap.parse_args()
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.nodes.runtime_env import unused_domain_id

    os.environ.setdefault("ROS_DOMAIN_ID", str(unused_domain_id()))
    print(f"{'embodiment':13} {'tick Hz':>7} {'decoder':8} {'load':14} | {'lateness p99':>12} {'max':>8} | "
          f"{'period err max':>14} | {'executed':>8} {'too_long':>8} | {'max late / period':>17}")
    for name in args.embodiments.split(","):
        period_ms = 1e3 / load_embodiment(name).tick_rate_hz
        for decode in ("message", "cdr"):
            for loaded in (False, True):
                d = run_cell(name, decode, loaded, args.seconds)
                late_max = float(d.get("tick_lateness_max_ms", "nan"))
                print(f"{name:13} {1e3 / period_ms:7.0f} {decode:8} {'flood+cameras' if loaded else 'quiet':14} | "
                      f"{float(d.get('tick_lateness_p99_ms', 'nan')):12.2f} {late_max:8.2f} | "
                      f"{float(d.get('period_error_max_ms', 'nan')):14.2f} | {d.get('chunks_executed', '?'):>8} "
                      f"{d.get('rejected_too_long', '?'):>8} | {late_max / period_ms:17.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
