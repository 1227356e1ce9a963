"""P2: camera frames from the perception process to a policy-like subscriber process on this machine.

Three cameras (yam_bimanual: top, left, right; synthetic, 640x480 rgb8 at 30 Hz) published by the real
perception node (``python -m molmoact2_ros.nodes.perception_node``) and received by a second process
built like the policy node (one SingleThreadedExecutor, CAMERA_QOS subscriptions, frames decoded with
core.images: a zero-copy view for rgb8, a JPEG decode for compressed). Conditions, side by side in one
run (with ``--rounds`` > 1 the order alternates, so machine load drifts over all of them alike):

- ``defaults``: Fast DDS as rmw_fastrtps sets it up under ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
  (``FASTDDS_BUILTIN_TRANSPORTS=DEFAULT`` keeps the perception node from applying the profile);
- ``large_data``: ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` in both processes (what users try first);
- ``profile_only``: the shipped ``config/dds/fastdds_local_large_data.xml``, nothing else;
- ``profile``: what the bringup gives every node: the profile plus glibc malloc tunables;
- ``profile_raw``: the bringup, and the subscriber takes the CDR bytes (``raw=True``) and decodes them
  with ``core.images.image_from_cdr`` (what a policy node could do);
- ``jpeg`` / ``jpeg_defaults``: the subscriber on ``image_raw/compressed`` (JPEG quality 90), with the
  bringup / with Fast DDS defaults (a third-party setup without the profile);
- ``profile_async`` (not run by default): publishing from a Fast DDS thread instead of the camera's.

Latency = the subscriber's wall clock when the callback starts - header.stamp (the capture time, taken
by the perception node right after the camera read); both processes read the same clock. It is split
with DDS's own sample times (rclpy's MessageInfo): capture -> write (the node: fill the message,
serialize; for JPEG also the encode), write -> complete in the subscriber's DDS history (transport,
fragment reassembly), -> callback (executor wake-up, take, deserialize, conversion to Python). The JPEG
decode is reported separately (the policy node decodes lazily, on its inference thread). Lost: each
frame's camera_info (small, same stamp) tells that the frame was published; lost = published frames
whose image never arrived (the last 0.1 s excluded: in flight). Where big frames overrun the transport
(defaults) some camera_info goes down with them, so "published" undercounts there. DDS lost events = the subscriber's
rclpy message_lost events. CPU = process CPU time / wall time (2 cores = 200%).

DDS stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a ROS domain of this run's own.

    python benchmarks/bench_camera_transport.py [--seconds 10] [--warmup 3] [--rounds 1]
        [--conditions defaults,large_data,profile_only,profile,profile_raw,jpeg,jpeg_defaults]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.nodes.runtime_env import private_domain_id

# Before rclpy is imported anywhere: every process of this run stays on loopback, in its own domain.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(private_domain_id(os.getpid())))

EMBODIMENT = "yam_bimanual"
CAMERAS = ("top", "left", "right")
JPEG_QUALITY = 90
FASTDDS_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
CONDITIONS = {
    # name: (label, environment for both processes, compressed, subscriber mode). Environments: "bringup"
    # = what molmoact2_ros.bringup gives every node (profile + malloc tunables), "profile" = the profile
    # only, a dict = exactly that (no profile: FASTDDS_BUILTIN_TRANSPORTS keeps the node from applying it).
    "defaults": ("Fast DDS defaults (rmw LOCALHOST)", {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, False, "policy"),
    "large_data": ("FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, False,
                   "policy"),
    "profile_only": ("shipped profile, glibc malloc defaults", "profile", False, "policy"),
    "profile": ("shipped bringup: profile + malloc tunables", "bringup", False, "policy"),
    "profile_raw": ("shipped bringup, subscriber takes raw CDR", "bringup", False, "raw"),
    "jpeg": ("JPEG q90, shipped bringup", "bringup", True, "policy"),
    "jpeg_defaults": ("JPEG q90, Fast DDS defaults", {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, True, "policy"),
    # Not run by default: publishing from a Fast DDS thread instead of the camera thread.
    "profile_async": ("shipped bringup, RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS", "bringup+async", False,
                      "policy"),
}
DEFAULT_CONDITIONS = ("defaults", "large_data", "profile_only", "profile", "profile_raw", "jpeg", "jpeg_defaults")


# ---- subscriber process ------------------------------------------------------------------------------

def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def subscriber(args: argparse.Namespace) -> int:
    """The policy-like process: subscribe, warm up, measure, write JSON, exit."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from molmoact2_ros.backends.cameras.synthetic import frame_index_of
    from molmoact2_ros.core.images import image_from_cdr, image_from_compressed_fields, image_from_msg
    from molmoact2_ros.nodes.qos import (
        CAMERA_QOS,
        DIAGNOSTICS_QOS,
        DIAGNOSTICS_TOPIC,
        camera_info_topic,
        camera_topic,
        compressed_topic,
    )

    rclpy.init()
    node = rclpy.create_node("bench_policy_like_subscriber")
    cams = args.cameras.split(",")
    measuring = False
    data: dict[str, dict[str, list]] = {
        c: {"idx": [], "lat": [], "dec": [], "write": [], "dds": [], "stamps": [], "info_stamps": []} for c in cams}
    warm_counts = dict.fromkeys(cams, 0)
    lost_events = dict.fromkeys(cams, 0)
    diag: dict[str, str] = {}

    def on_frame(cam: str):
        def cb(msg: Any, info: Any) -> None:
            now = time.time()
            t0 = time.perf_counter()
            if args.sub_mode == "raw":  # the CDR bytes: header and a zero-copy view on the pixels
                decoded = image_from_cdr(msg)
                stamp, frame = decoded.stamp_s, decoded.image
            elif args.compressed:
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                frame = image_from_compressed_fields(msg.format, msg.data)
            else:
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                frame = image_from_msg(msg)  # what the policy node does: a view on the message
            decode_s = time.perf_counter() - t0
            if not measuring:
                warm_counts[cam] += 1
                return
            d = data[cam]
            d["idx"].append(frame_index_of(frame))
            d["stamps"].append(stamp)
            d["lat"].append(now - stamp)
            d["dec"].append(decode_s)
            # DDS's own times for this sample: written by the publisher, complete in the reader's history.
            d["write"].append(info["source_timestamp"] * 1e-9 - stamp)
            d["dds"].append((info["received_timestamp"] - info["source_timestamp"]) * 1e-9)
        return cb

    def on_info(cam: str):
        # camera_info goes out for every frame with the image's stamp and is small enough never to be
        # lost: the frames that were published, to count the images that did not arrive.
        def cb(msg: Any) -> None:
            if measuring:
                data[cam]["info_stamps"].append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        return cb

    def on_lost(cam: str):
        def cb(info: Any) -> None:
            if measuring:
                lost_events[cam] += info.total_count_change
        return cb

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("molmoact2_perception"):
                diag.update({kv.key: kv.value for kv in status.values})

    for cam in cams:
        mtype, topic = (CompressedImage, compressed_topic(cam)) if args.compressed else (Image, camera_topic(cam))
        node.create_subscription(mtype, topic, on_frame(cam), CAMERA_QOS, raw=args.sub_mode == "raw",
                                 event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost(cam)))
        node.create_subscription(CameraInfo, camera_info_topic(cam), on_info(cam), CAMERA_QOS)
    node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, DIAGNOSTICS_QOS)
    if args.sub_mode == "events":
        from rclpy.experimental import EventsExecutor

        executor = EventsExecutor()
    else:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    # The executor spins on its own thread, as in the policy node; this thread only keeps time.
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + args.warmup + 30
    while not all(warm_counts[c] > 0 for c in cams) and time.monotonic() < deadline:
        time.sleep(0.05)  # (if not every camera arrives, measure anyway: the table shows it)
    time.sleep(args.warmup)
    measuring = True
    cpu0, wall0 = time.process_time(), time.monotonic()
    pub_cpu0 = _proc_cpu_s(args.publisher_pid)
    time.sleep(args.seconds)
    measuring = False
    wall = time.monotonic() - wall0
    cpu1, pub_cpu1 = time.process_time(), _proc_cpu_s(args.publisher_pid)
    out = {
        "seconds": wall,
        "sub_cpu": (cpu1 - cpu0) / wall,
        "pub_cpu": (pub_cpu1 - pub_cpu0) / wall if pub_cpu0 is not None and pub_cpu1 is not None else None,
        "cameras": {c: {**data[c], "lost_events": lost_events[c]} for c in cams},
        "diag": diag,
        "warm_counts": warm_counts,
    }
    Path(args.out).write_text(json.dumps(out))
    # Results are written; exit without tearing down (rclpy.shutdown can hang with the EventsExecutor
    # still spinning on its thread).
    sys.stdout.flush()
    os._exit(0)


# ---- orchestration -----------------------------------------------------------------------------------

HOG_CODE = "while True:\n    pass\n"


def start_hog(cpu: int) -> subprocess.Popen:
    """A busy loop pinned to ``cpu`` at normal priority: a robot PC running other software on one core."""
    hog = subprocess.Popen([sys.executable, "-c", HOG_CODE], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.sched_setaffinity(hog.pid, {cpu})
    return hog


def stop_hog(hog: subprocess.Popen | None) -> None:
    if hog is not None:
        hog.kill()
        hog.wait()


def _condition_env(name: str) -> dict[str, str]:
    from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, dds_environment, node_environment

    _, extra, _, _ = CONDITIONS[name]
    env = {k: v for k, v in os.environ.items() if k not in (*FASTDDS_VARS, "GLIBC_TUNABLES")}
    if isinstance(extra, dict):
        env.update(extra)
    elif extra == "profile":
        env.update(dds_environment(DEFAULT_DDS_PROFILE, {}))
    else:
        env.update(node_environment(DEFAULT_DDS_PROFILE, {}))
        if extra == "bringup+async":
            env["RMW_FASTRTPS_PUBLICATION_MODE"] = "ASYNCHRONOUS"
    return env


def run_condition(name: str, args: argparse.Namespace, workdir: Path, hog_cpu: int | None = None) -> dict[str, Any]:
    """One condition: perception node + subscriber process; with ``hog_cpu`` a busy loop pinned there."""
    _, _, compressed, sub_mode = CONDITIONS[name]
    env = _condition_env(name)
    out = workdir / f"{name}_{time.monotonic_ns()}.json"
    hog = start_hog(hog_cpu) if hog_cpu is not None else None
    try:
        return _run_pair(name, args, workdir, env, out, compressed, sub_mode)
    finally:
        stop_hog(hog)


def _run_pair(name: str, args: argparse.Namespace, workdir: Path, env: dict[str, str], out: Path,
              compressed: bool, sub_mode: str) -> dict[str, Any]:
    pub_log = open(workdir / f"{name}_perception.log", "w")  # noqa: SIM115 - closed below
    pub = subprocess.Popen(
        [sys.executable, "-u", "-m", "molmoact2_ros.nodes.perception_node", "--ros-args",
         "-p", f"embodiment:={EMBODIMENT}", "-p", f"publish_compressed:={'true' if compressed else 'false'}",
         "-p", f"jpeg_quality:={JPEG_QUALITY}", "-p", f"cameras:=[{','.join(CAMERAS)}]"],
        env=env, stdout=pub_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sub = subprocess.run(
            [sys.executable, __file__, "--role", "subscriber", "--out", str(out), "--cameras", ",".join(CAMERAS),
             "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--publisher-pid", str(pub.pid),
             "--sub-mode", sub_mode]
            + (["--compressed"] if compressed else []),
            env=env, capture_output=True, text=True, timeout=args.seconds + args.warmup + 60)
    finally:
        os.killpg(pub.pid, signal.SIGINT)
        try:
            pub.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(pub.pid, signal.SIGKILL)
            pub.wait()
        pub_log.close()
    if sub.returncode != 0 or not out.is_file():
        raise RuntimeError(f"subscriber for {name} failed ({sub.returncode}):\n{sub.stdout}\n{sub.stderr}\n"
                           f"perception log: {(workdir / f'{name}_perception.log').read_text()[-2000:]}")
    return json.loads(out.read_text())


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    lat, dec, pub, enc, write, dds = [], [], [], [], [], []
    received = expected = missing = lost_events = 0
    seconds = 0.0
    sub_cpu, pub_cpu = [], []
    for r in results:
        seconds += r["seconds"]
        sub_cpu.append(r["sub_cpu"])
        if r["pub_cpu"] is not None:
            pub_cpu.append(r["pub_cpu"])
        for cam, d in r["cameras"].items():
            # Published frames = camera_info stamps, except the last 0.1 s (their images may be in flight).
            published = [t for t in d["info_stamps"] if t <= max(d["info_stamps"], default=0) - 0.1]
            arrived = set(d["stamps"])
            expected += len(published)
            received_of_published = sum(1 for t in published if t in arrived)
            missing += len(published) - received_of_published
            received += len(d["idx"])
            lat += d["lat"]
            dec += d["dec"]
            write += d["write"]
            dds += d["dds"]
            lost_events += d["lost_events"]
            p = r["diag"].get(f"{cam}.capture_to_publish_ms")
            if p is not None:
                pub.append(float(p))
            j = r["diag"].get(f"{cam}.jpeg_ms")
            if j is not None and float(j) > 0:
                enc.append(float(j))
    lat_ms = np.array(lat) * 1e3
    return {
        "n": received,
        "rate_hz": received / seconds if seconds else 0.0,
        "p50": float(np.percentile(lat_ms, 50)) if lat else float("nan"),
        "p99": float(np.percentile(lat_ms, 99)) if lat else float("nan"),
        "max": float(lat_ms.max()) if lat else float("nan"),
        "lost": missing,
        "published": expected,
        "lost_pct": 100.0 * missing / expected if expected else float("nan"),
        "lost_events": lost_events,
        "decode_ms": float(np.median(dec) * 1e3) if dec else float("nan"),
        "encode_ms": float(np.median(enc)) if enc else float("nan"),
        "write_ms": float(np.median(write) * 1e3) if write else float("nan"),
        "dds_ms": float(np.median(dds) * 1e3) if dds else float("nan"),
        "take_ms": (float(np.median(np.array(lat) - np.array(write) - np.array(dds)) * 1e3) if lat
                    else float("nan")),
        "pub_ms": float(np.median(pub)) if pub else float("nan"),
        "sub_cpu": 100 * float(np.mean(sub_cpu)),
        "pub_cpu": 100 * float(np.mean(pub_cpu)) if pub_cpu else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("bench", "subscriber"), default="bench")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per condition and round")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of frames before measuring")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds over all conditions")
    ap.add_argument("--conditions", default=",".join(DEFAULT_CONDITIONS),
                    help=f"comma-separated, from {', '.join(CONDITIONS)}")
    ap.add_argument("--sub-mode", choices=("policy", "events", "raw"), default="policy")
    ap.add_argument("--out", default="")
    ap.add_argument("--cameras", default=",".join(CAMERAS))
    ap.add_argument("--compressed", action="store_true")
    ap.add_argument("--publisher-pid", type=int, default=0)
    ap.add_argument("--hog", action="store_true",
                    help="also run every condition with a CPU hog (a busy loop) pinned to one CPU, side by side")
    ap.add_argument("--hog-cpu", type=int, default=-1, help="the CPU the hog is pinned to (default: the last)")
    ap.add_argument("--target", default="profile", help="the condition checked against the P2 target")
    args, _ = ap.parse_known_args()  # run_all.sh passes its own arguments to every benchmark
    if args.role == "subscriber":
        return subscriber(args)

    names = [c for c in args.conditions.split(",") if c]
    unknown = set(names) - set(CONDITIONS)
    if unknown:
        ap.error(f"unknown conditions {sorted(unknown)}; choose from {', '.join(CONDITIONS)}")
    ncpu = os.cpu_count() or 1
    hog_cpu = (ncpu - 1 if args.hog_cpu < 0 else args.hog_cpu) if args.hog else None
    if hog_cpu is not None and hog_cpu not in os.sched_getaffinity(0):
        ap.error(f"--hog-cpu {hog_cpu} is not a CPU this process may use ({sorted(os.sched_getaffinity(0))})")
    # Each condition quiet and, with --hog, loaded: measured back to back so both see the same machine.
    loads: list[int | None] = [None] if hog_cpu is None else [None, hog_cpu]
    cells = [(n, h) for n in names for h in loads]
    load0 = os.getloadavg()
    print(f"P2 camera transport: {len(CAMERAS)} cameras x 640x480 rgb8 @ 30 Hz, perception process -> "
          f"policy-like subscriber process; {args.seconds:g} s measured per condition x {args.rounds} round(s)"
          f"{f'; quiet and with a CPU hog pinned to CPU {hog_cpu}' if hog_cpu is not None else ''}; "
          f"{ncpu} CPUs, load average {load0[0]:.2f}; ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, "
          f"discovery {os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}", flush=True)
    per_cell: dict[tuple[str, int | None], list[dict[str, Any]]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory(prefix="bench_camera_transport_") as tmp:
        for r in range(args.rounds):
            order = cells if r % 2 == 0 else cells[::-1]
            for name, hog in order:
                per_cell[(name, hog)].append(run_condition(name, args, Path(tmp), hog))
                s = summarize(per_cell[(name, hog)][-1:])
                print(f"  round {r + 1} {name}{'' if hog is None else ' +hog'}: p50 {s['p50']:.2f} ms, "
                      f"p99 {s['p99']:.2f} ms, lost {s['lost_pct']:.1f}%", flush=True)
    load1 = os.getloadavg()
    rows = {c: summarize(per_cell[c]) for c in cells}
    base = rows.get(("profile", None))
    print(f"\nload average during the run: {load0[0]:.2f} -> {load1[0]:.2f}\n")
    print("| condition | published (info seen) | frames rx | rx Hz | p50 ms | p99 ms | max ms | lost | "
          "DDS lost events | capture->write / DDS / ->callback ms | JPEG enc / dec ms | CPU pub / sub | "
          "p50 / profile p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, hog in cells:
        s = rows[(n, hog)]
        ratio = s["p50"] / base["p50"] if base and base["p50"] > 0 else float("nan")
        decode = f"{s['encode_ms']:.2f} / {s['decode_ms']:.2f}" if CONDITIONS[n][2] else "-"
        pub_ms = f"{s['write_ms']:.2f} / {s['dds_ms']:.2f} / {s['take_ms']:.2f}"
        label = CONDITIONS[n][0] + ("" if hog is None else f", CPU hog on CPU {hog}")
        print(f"| {label} | {s['published']} | {s['n']} | {s['rate_hz']:.1f} | {s['p50']:.2f} | "
              f"{s['p99']:.2f} | "
              f"{s['max']:.1f} | {s['lost']} ({s['lost_pct']:.1f}%) | {s['lost_events']} | {pub_ms} | "
              f"{decode} | {s['pub_cpu']:.0f}% / {s['sub_cpu']:.0f}% | {ratio:.2f} |")
    if hog_cpu is not None:
        print(f"\nquiet vs CPU hog on CPU {hog_cpu}, side by side:\n")
        print("| condition | quiet p50 / p99 / max ms | quiet lost | loaded p50 / p99 / max ms | loaded lost | "
              "loaded p99 / quiet p99 |")
        print("|---|---|---|---|---|---|")
        for n in names:
            q, h = rows[(n, None)], rows[(n, hog_cpu)]
            print(f"| {CONDITIONS[n][0]} | {q['p50']:.2f} / {q['p99']:.2f} / {q['max']:.1f} | {q['lost']} | "
                  f"{h['p50']:.2f} / {h['p99']:.2f} / {h['max']:.1f} | {h['lost']} | "
                  f"{h['p99'] / q['p99']:.2f} |")
    targets = [c for c in cells if c[0] == args.target]
    for c in targets:
        s = rows[c]
        met = s["p50"] <= 2.0 and s["p99"] <= 8.0 and s["lost"] == 0
        what = "quiet" if c[1] is None else f"CPU hog on CPU {c[1]}"
        print(f"target with {CONDITIONS[c[0]][0]}, {what} (p50 <= 2 ms, p99 <= 8 ms, nothing lost): "
              f"{'met' if met else 'NOT met'} (p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms, lost {s['lost']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
