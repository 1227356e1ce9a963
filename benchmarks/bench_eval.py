"""P7: ``molmoact2-ros eval`` throughput as a multiple of real time (target >= 5x).

A generated 60 s bag of the YAM bimanual station (3 cameras 640x480 rgb8 at 30 Hz, /joint_states and the
driver's commands at 30 Hz, the instruction; ~5 GB of MCAP) is evaluated with the tiny checkpoint through
the same path as the CLI (``bags.eval.evaluate_bag``: the bag read in log order, every frame handed to the
inference component, the policy run at each decision point: every half chunk, 0.42 s). Timed: the
evaluation alone (the model is loaded before, as the CLI does once for all bags), then the report.

    python benchmarks/bench_eval.py [--seconds 60] [--keep DIR] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from molmoact2_ros.core.embodiment import load_embodiment

EMBODIMENT = "yam_bimanual"
T0 = 1_700_000_000.0


def generate(path: Path, seconds: float) -> None:
    """The bag: moving content per camera (no frozen frames), a smooth joint motion."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    emb = load_embodiment(EMBODIMENT)
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types  # noqa: N806 (the typestore's message classes, as rosbags names them)
    rate = 30.0

    def header(t: float, frame_id: str = "") -> object:
        sec = int(t)
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec)
                                        * 1e9)), frame_id=frame_id)

    cams = {c.name: (c.height, c.width) for c in emb.cameras}
    # 16 distinct frames per camera, cycled: content changes every frame at no generation cost.
    frames = {c: [np.random.default_rng(k * 100 + i).integers(0, 256, (h, w, 3), dtype=np.uint8).reshape(-1)
                  for i in range(16)] for k, (c, (h, w)) in enumerate(cams.items())}
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        img_conn = {c: w.add_connection(f"/cameras/{c}/image_raw", "sensor_msgs/msg/Image", typestore=ts) for c in cams}
        js = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        cmd = w.add_connection("/molmoact2_driver/commanded", "sensor_msgs/msg/JointState", typestore=ts)
        ins = w.add_connection("/molmoact2/instruction", "std_msgs/msg/String", typestore=ts)
        w.write(ins, int(T0 * 1e9) - 1, ts.serialize_cdr(T["std_msgs/msg/String"](data="fold the towel"),
                                                         "std_msgs/msg/String"))
        for i in range(int(seconds * rate)):
            t = T0 + i / rate
            pos = emb.home + 0.1 * np.sin(2 * np.pi * 0.2 * (t - T0) + np.arange(emb.dof))
            for conn in (js, cmd):
                msg = T["sensor_msgs/msg/JointState"](header=header(t), name=list(emb.joint_names), position=pos,
                                                      velocity=np.zeros(0), effort=np.zeros(0))
                w.write(conn, int(t * 1e9) + 1_000_000, ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
            for k, (c, (h, wd)) in enumerate(cams.items()):
                msg = T["sensor_msgs/msg/Image"](header=header(t, c), height=h, width=wd, encoding="rgb8",
                                                 is_bigendian=0, step=wd * 3, data=frames[c][i % 16])
                w.write(img_conn[c], int(t * 1e9) + 2_000_000 + k, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--keep", default="", help="write the bag here and keep it (default: a temporary dir)")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--report", default="", help="also write the HTML report here")
    args = ap.parse_args()

    import torch

    from molmoact2_ros.backends.policy.inference import PolicyInference, input_limits, load_runtime
    from molmoact2_ros.bags.eval import EvalOptions, evaluate_bag

    emb = load_embodiment(EMBODIMENT)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_eval_"))
    bag = tmp / "p7_bag"
    try:
        if not bag.exists():
            t = time.perf_counter()
            generate(bag, args.seconds)
            size = sum(f.stat().st_size for f in bag.rglob("*")) / 1e9
            print(f"generated {args.seconds:.0f} s bag ({size:.2f} GB) in {time.perf_counter() - t:.1f} s")
        loaded = load_runtime(emb, "tiny", seed=0, torch_num_threads=args.torch_threads)
        print(f"model load + warm-up {loaded.load_s:.1f} s")
        result = evaluate_bag(bag, emb, lambda: PolicyInference(loaded.runtime, emb, input_limits(emb),
                                                                clock=lambda: 0.0), EvalOptions())
        if result.error:
            raise SystemExit(f"evaluation failed: {result.error}")
        m = result.metrics
        lat = m["inference_latency_ms"]
        print(f"P7 eval: {m['bag_duration_s']:.1f} s of bag in {result.wall_s:.2f} s = "
              f"{m['realtime_factor']:.1f}x real time (target >= 5x); {m['decisions']} decisions, inference "
              f"p50 {lat['p50']:.0f} ms, {sum(p.latency_ms for p in result.predictions) / 1e3:.1f} s in the model")
        if args.report:
            from molmoact2_ros.bags.report import write_report

            t = time.perf_counter()
            write_report([result], args.report, {"benchmark": "P7", "checkpoint": loaded.checkpoint})
            print(f"report written in {time.perf_counter() - t:.1f} s: {args.report}/report.html")
        print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
              f"python {platform.python_version()}, torch {torch.__version__}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
