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
- ``profile_rtdds``: the bringup with the real-time profile variant (config/dds/
  fastdds_local_large_data_rt.xml: Fast DDS reception threads at SCHED_FIFO 20), policy-like subscriber;
- ``receiver``: the real-time profile and the subscriber built on ``nodes.image_cdr.CameraFrameReceiver``
  (its own node, executor and thread at SCHED_FIFO 10, raw CDR frames): what the policy node gets;
- ``receiver_pubrt``: as ``receiver``, and the perception process at SCHED_FIFO 10 (every thread): what
  real-time camera threads in the perception node would add;
- not run by default: ``profile_async`` (publishing from a Fast DDS thread), ``receiver_normal``,
  ``receiver_only_rt``, ``pubrt_profile``, ``pubrt_rtdds`` (one piece at a time), ``receiver_pubrt_gil``
  (a pure-Python thread in the subscriber holds the GIL, as inference's Python code does) and
  ``receiver_pubrt_gil_switch`` (the same with a 0.5 ms GIL switch interval).

With ``--hog`` every condition also runs with a CPU hog: a busy-loop process pinned to one CPU (the last;
``--hog-cpu``) at normal priority, what a robot PC running other software looks like; quiet and loaded
are measured back to back and printed side by side. SCHED_FIFO needs root, CAP_SYS_NICE or an rtprio
limit; where refused the receiver says so and runs at normal priority.

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

    python benchmarks/bench_camera_transport.py [--seconds 10] [--warmup 3] [--rounds 1] [--hog [--hog-cpu N]]
        [--conditions defaults,large_data,profile_only,profile,profile_raw,profile_rtdds,receiver,...]
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
    # name: (label, environment for both processes, compressed, subscriber). Environments: "bringup" =
    # what molmoact2_ros.bringup gives every node (profile + malloc tunables) with "+flags": rtdds = the
    # profile's real-time variant (config/dds/fastdds_local_large_data_rt.xml: Fast DDS reception threads
    # at SCHED_FIFO 20), pubrt = the perception process at SCHED_FIFO, async = asynchronous publication;
    # "profile" = the profile only; a dict = exactly that (no profile: FASTDDS_BUILTIN_TRANSPORTS keeps the
    # node from applying it).
    # Subscriber: policy (as the policy node: its executor, rclpy messages), raw (the same, raw CDR),
    # receiver[:priority[:gil[:switch]]] (nodes/image_cdr.CameraFrameReceiver at that SCHED_FIFO priority;
    # gil: a pure-Python thread holds the GIL as inference's Python code does; switch: GIL switch 0.5 ms).
    "defaults": ("Fast DDS defaults (rmw LOCALHOST)", {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, False, "policy"),
    "large_data": ("FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, False,
                   "policy"),
    "profile_only": ("shipped profile, glibc malloc defaults", "profile", False, "policy"),
    "profile": ("shipped bringup: profile + malloc tunables", "bringup", False, "policy"),
    "profile_raw": ("shipped bringup, subscriber takes raw CDR", "bringup", False, "raw"),
    "profile_rtdds": ("bringup, RT profile (DDS reception FIFO 20)", "bringup+rtdds", False, "policy"),
    "receiver": ("RT profile, CameraFrameReceiver FIFO 10", "bringup+rtdds", False, "receiver:10"),
    "receiver_pubrt": ("RT profile, CameraFrameReceiver FIFO 10, perception FIFO 10", "bringup+rtdds+pubrt",
                       False, "receiver:10"),
    "jpeg": ("JPEG q90, shipped bringup", "bringup", True, "policy"),
    "jpeg_defaults": ("JPEG q90, Fast DDS defaults", {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, True, "policy"),
    # Not run by default.
    "receiver_normal": ("shipped bringup, CameraFrameReceiver at normal priority", "bringup", False, "receiver:0"),
    "receiver_only_rt": ("shipped bringup, CameraFrameReceiver FIFO 10", "bringup", False, "receiver:10"),
    "pubrt_profile": ("shipped bringup, perception FIFO 10", "bringup+pubrt", False, "policy"),
    "pubrt_rtdds": ("RT profile, perception FIFO 10, policy-like subscriber", "bringup+rtdds+pubrt", False,
                    "policy"),
    "receiver_pubrt_gil": ("as receiver_pubrt, a Python thread holding the GIL", "bringup+rtdds+pubrt", False,
                           "receiver:10:gil"),
    "receiver_pubrt_gil_switch": ("as receiver_pubrt_gil, GIL switch interval 0.5 ms", "bringup+rtdds+pubrt",
                                  False, "receiver:10:gil:switch"),
    "profile_async": ("shipped bringup, RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS", "bringup+async", False,
                      "policy"),
}
# The perception process at SCHED_FIFO (every thread inherits it): what the node would gain from real-time
# camera threads. Not something the benchmark can give the product: measured to size that change.
PUB_FIFO_VAR = "_P2_PUBLISHER_FIFO"
RT_PROFILE_FILE = "fastdds_local_large_data_rt.xml"
PUB_FIFO_PRIORITY = 10
DEFAULT_CONDITIONS = ("defaults", "large_data", "profile_only", "profile", "profile_raw", "profile_rtdds",
                      "receiver", "receiver_pubrt", "jpeg", "jpeg_defaults")


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

    mode, *opts = args.sub_mode.split(":")
    args.sub_mode = mode
    priority = int(opts[0]) if opts else 0
    if "switch" in opts:  # as the driver node does (GIL_SWITCH_INTERVAL_S)
        sys.setswitchinterval(0.0005)
    stop_gil = threading.Event()
    if "gil" in opts:
        def hold_gil() -> None:  # pure Python: holds the GIL until the interpreter switches threads
            while not stop_gil.is_set():
                sum(i * i for i in range(2000))
        threading.Thread(target=hold_gil, daemon=True).start()

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
            elif args.sub_mode == "receiver":  # decoded by the receiver already (before t0: not counted)
                stamp, frame = msg.stamp_s, msg.image
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

    receiver = None
    if args.sub_mode == "receiver":
        # The product's receiver (nodes/image_cdr.py): its own node, executor and thread, raw CDR frames.
        from molmoact2_ros.nodes.image_cdr import CameraFrameReceiver

        callbacks = {cam: on_frame(cam) for cam in cams}

        def on_receiver_frame(cam: str, frame: Any, info: Any) -> None:
            callbacks[cam](frame, info)

        receiver = CameraFrameReceiver(cams, on_receiver_frame, priority=priority)
        if receiver.priority_error:
            print(f"warning: {receiver.priority_error}", file=sys.stderr, flush=True)
    for cam in cams:
        mtype, topic = (CompressedImage, compressed_topic(cam)) if args.compressed else (Image, camera_topic(cam))
        if receiver is None:
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


def rt_profile_path() -> Path:
    """config/dds/fastdds_local_large_data_rt.xml: the shipped profile + SCHED_FIFO DDS reception threads."""
    from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, dds_profile_path

    return dds_profile_path(DEFAULT_DDS_PROFILE).with_name(RT_PROFILE_FILE)


def _condition_env(name: str, workdir: Path) -> dict[str, str]:
    from molmoact2_ros.bringup import DEFAULT_DDS_PROFILE, dds_environment, node_environment

    _, extra, _, _ = CONDITIONS[name]
    env = {k: v for k, v in os.environ.items() if k not in (*FASTDDS_VARS, "GLIBC_TUNABLES")}
    if isinstance(extra, dict):
        env.update(extra)
    elif extra == "profile":
        env.update(dds_environment(DEFAULT_DDS_PROFILE, {}))
    else:
        env.update(node_environment(DEFAULT_DDS_PROFILE, {}))
        flags = extra.split("+")[1:]
        if "async" in flags:
            env["RMW_FASTRTPS_PUBLICATION_MODE"] = "ASYNCHRONOUS"
        if "rtdds" in flags:  # the real-time variant of the profile
            path = str(rt_profile_path())
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = env["FASTRTPS_DEFAULT_PROFILES_FILE"] = path
        if "pubrt" in flags:
            env[PUB_FIFO_VAR] = str(PUB_FIFO_PRIORITY)
    return env


def run_condition(name: str, args: argparse.Namespace, workdir: Path, hog_cpu: int | None = None) -> dict[str, Any]:
    """One condition: perception node + subscriber process; with ``hog_cpu`` a busy loop pinned there."""
    _, _, compressed, sub_mode = CONDITIONS[name]
    env = _condition_env(name, workdir)
    out = workdir / f"{name}_{time.monotonic_ns()}.json"
    hog = start_hog(hog_cpu) if hog_cpu is not None else None
    try:
        return _run_pair(name, args, workdir, env, out, compressed, sub_mode)
    finally:
        stop_hog(hog)


def _run_pair(name: str, args: argparse.Namespace, workdir: Path, env: dict[str, str], out: Path,
              compressed: bool, sub_mode: str) -> dict[str, Any]:
    pub_log = open(workdir / f"{name}_perception.log", "w")  # noqa: SIM115 - closed below
    pub_fifo = int(env.pop(PUB_FIFO_VAR, "0"))

    def publisher_priority() -> None:  # in the child before exec: its threads inherit the policy
        if pub_fifo:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(pub_fifo))

    pub = subprocess.Popen(
        [sys.executable, "-u", "-m", "molmoact2_ros.nodes.perception_node", "--ros-args",
         "-p", f"embodiment:={EMBODIMENT}", "-p", f"publish_compressed:={'true' if compressed else 'false'}",
         "-p", f"jpeg_quality:={JPEG_QUALITY}", "-p", f"cameras:=[{','.join(CAMERAS)}]"],
        env=env, stdout=pub_log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=publisher_priority)
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
    result = json.loads(out.read_text())
    if not any(result["warm_counts"].values()):  # nothing arrived at all: show why rather than a row of nan
        print(f"  warning: no frame of {name} arrived; perception log tail:\n"
              f"{(workdir / f'{name}_perception.log').read_text()[-1500:]}", flush=True)
    return result


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
    ap.add_argument("--sub-mode", default="policy", help="(subscriber) policy, events, raw or receiver[:prio[:gil...]]")
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
