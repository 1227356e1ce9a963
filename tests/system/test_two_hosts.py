"""Two hosts for real: the policy node in one network namespace, perception + driver in another.

The namespaces are joined by a veth pair with addresses from the benchmarking range 198.18.0.0/15 and
have no other route, so no packet can leave them. DDS discovery crosses the link the way
docs/two_hosts.md tells users to configure it: multicast (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``) for
raw frames, unicast to a named peer (``LOCALHOST`` + ``ROS_STATIC_PEERS``) for JPEG frames, both with
``config/dds/fastdds_two_hosts.xml`` (UDP only: the namespaces share /dev/shm, and shared memory would
bypass the link). A probe beside the policy node measures, for ~10 s per transport, each frame's
capture stamp -> arrival in the policy namespace, and loss against what perception says it published;
the driver's own /diagnostics (which also crosses the link) must show chunks executed.

Run as a script, this file is that probe (the test starts it inside the policy namespace).
Needs root (or CAP_NET_ADMIN) for ``ip netns``; where namespaces are not allowed the test skips with
the reason, and docs/two_hosts.md gives the same steps by hand.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "dds" / "fastdds_two_hosts.xml"
EMBODIMENT = "so101"  # two 640x480 cameras at 30 Hz: ~54 MB/s of raw frames across the link
MEASURE_S = 10.0
RESULTS_ENV = "MOLMOACT2_TWO_HOSTS_RESULTS"  # set to a path to keep the measured numbers as JSON


# ---------------------------------------------------------------------------------------------------------
# The probe (runs inside the policy namespace)
# ---------------------------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))] if ordered else float("nan")


def probe(transport: str, cameras: list[str], measure_s: float, timeout_s: float) -> dict:
    """Subscribe like the policy node does, wait until frames and executed chunks flow, then measure.

    Loss is counted against perception's own ``<camera>.frames_published`` between two of its
    /diagnostics messages ``measure_s`` apart: frames published in that window whose capture stamp falls
    in it and did not arrive. Gaps: capture-stamp intervals over 1.5 frame periods among the arrivals."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    from molmoact2_ros.nodes.diagnostics import status_values
    from molmoact2_ros.nodes.qos import CAMERA_QOS, DIAGNOSTICS_QOS, camera_topic, compressed_topic

    rclpy.init()
    node = rclpy.create_node("two_hosts_probe")
    frames: dict[str, list[tuple[float, float, int]]] = {c: [] for c in cameras}  # (capture, arrival, bytes)
    diag: dict[str, list[tuple[float, dict[str, str]]]] = {}

    def on_frame(camera: str):
        def cb(msg) -> None:
            arrival = time.time()
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            frames[camera].append((stamp, arrival, len(msg.data)))
        return cb

    def on_diag(msg: DiagnosticArray) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        for status in msg.status:
            diag.setdefault(status.name, []).append((stamp, status_values(status)))

    msg_type, topic = (Image, camera_topic) if transport == "raw" else (CompressedImage, compressed_topic)
    for cam in cameras:
        node.create_subscription(msg_type, topic(cam), on_frame(cam), CAMERA_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, DIAGNOSTICS_QOS)

    def latest(prefix: str) -> dict[str, str]:
        hits = [v[-1] for k, v in diag.items() if prefix in k and v]
        return hits[-1][1] if hits else {}

    def spin_until(cond, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
            if cond():
                return True
        return False

    ok = spin_until(lambda: all(frames.values()) and int(latest("driver").get("chunks_executed", "0") or 0) > 0,
                    timeout_s)
    if not ok:
        result = {"error": "no frames or no executed chunks before the timeout",
                  "frames": {c: len(v) for c, v in frames.items()}, "driver": latest("driver"),
                  "policy": latest("policy"), "perception": latest("perception")}
        print(json.dumps(result), flush=True)
        rclpy.shutdown()
        return result
    perception_name = next(k for k in diag if "perception" in k)
    start_index = len(diag[perception_name])
    spin_until(lambda: len(diag[perception_name]) > start_index, 5.0)  # a fresh window start
    t0, d0 = diag[perception_name][-1]
    driver0 = int(latest("driver").get("chunks_executed", "0"))
    spin_until(lambda: diag[perception_name][-1][0] >= t0 + measure_s, measure_s + 10.0)
    spin_until(lambda: False, 1.0)  # frames of the window still in flight
    t1, d1 = diag[perception_name][-1]
    driver1 = latest("driver")
    rclpy.shutdown()

    per_camera = {}
    latencies: list[float] = []
    for cam in cameras:
        published = int(d1[f"{cam}.frames_published"]) - int(d0[f"{cam}.frames_published"])
        got = [f for f in frames[cam] if t0 < f[0] <= t1]
        lat = [1000.0 * (a - s) for s, a, _ in got]
        latencies += lat
        stamps = sorted(s for s, _, _ in got)
        periods = [b - a for a, b in itertools.pairwise(stamps)]
        nominal = _percentile(periods, 50)
        per_camera[cam] = {
            "published": published, "received": len(got), "lost": max(0, published - len(got)),
            "gaps": sum(1 for p in periods if p > 1.5 * nominal),
            "bytes_per_frame": int(sum(b for _, _, b in got) / max(1, len(got))),
            "latency_ms_p50": _percentile(lat, 50), "latency_ms_p95": _percentile(lat, 95),
            "latency_ms_max": max(lat) if lat else float("nan"),
        }
    result = {
        "transport": transport, "window_s": t1 - t0, "cameras": per_camera,
        "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p95": _percentile(latencies, 95),
        "latency_ms_max": max(latencies) if latencies else float("nan"),
        "received_bytes": sum(b for cam in cameras for s, _, b in frames[cam] if t0 < s <= t1),
        "chunks_executed_in_window": int(driver1.get("chunks_executed", "0")) - driver0,
        "driver": driver1,
    }
    print(json.dumps(result), flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------
# The two hosts
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TwoHosts:
    policy_ns: str
    robot_ns: str
    policy_if: str
    robot_if: str
    policy_addr: str
    robot_addr: str
    subnet: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _namespaces_unavailable() -> str:
    """Why this machine cannot make network namespaces ('' when it can): tried, not guessed."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"mb_probe{os.getpid()}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here ({made.stderr.strip()}): needs root or CAP_NET_ADMIN"
    _ip("netns", "del", name, check=False)
    return ""


@pytest.fixture
def two_hosts() -> Iterator[TwoHosts]:
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}; docs/two_hosts.md gives the steps by hand")
    tag = f"{os.getpid() % 100000}"
    octet = os.getpid() % 250 + 1  # 198.18.<octet>.0/24: concurrent runs on one machine do not collide
    hosts = TwoHosts(policy_ns=f"mb_gpu{tag}", robot_ns=f"mb_robot{tag}", policy_if=f"mbg{tag}",
                     robot_if=f"mbr{tag}", policy_addr=f"198.18.{octet}.1", robot_addr=f"198.18.{octet}.2",
                     subnet=f"198.18.{octet}.0/24")
    try:
        _ip("netns", "add", hosts.policy_ns)
        _ip("netns", "add", hosts.robot_ns)
        _ip("link", "add", hosts.policy_if, "type", "veth", "peer", "name", hosts.robot_if)
        _ip("link", "set", hosts.policy_if, "netns", hosts.policy_ns)
        _ip("link", "set", hosts.robot_if, "netns", hosts.robot_ns)
        for ns, dev, addr in ((hosts.policy_ns, hosts.policy_if, hosts.policy_addr),
                              (hosts.robot_ns, hosts.robot_if, hosts.robot_addr)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", "lo", "up")  # DDS needs loopback inside each host too
            _ip("-n", ns, "link", "set", dev, "up")
        yield hosts
    finally:
        # Deleting a namespace deletes its end of the veth, and with it the pair.
        for ns in (hosts.policy_ns, hosts.robot_ns):
            _ip("netns", "del", ns, check=False)


def _interfaces(ns: str) -> set[str]:
    out = _ip("-n", ns, "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}


def _veth_bytes(ns: str, dev: str) -> int:
    """Bytes received on ``dev`` inside ``ns`` (sysfs of that namespace)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/rx_bytes"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int(out)


def assert_sealed(hosts: TwoHosts) -> None:
    """Nothing can leave: each namespace has only lo and its veth end, one route (the veth subnet, on
    the veth), no IPv6 route off loopback, and routing to an outside address fails."""
    for ns, dev in ((hosts.policy_ns, hosts.policy_if), (hosts.robot_ns, hosts.robot_if)):
        assert _interfaces(ns) == {"lo", dev}, f"{ns} has interfaces {_interfaces(ns)}"
        routes = [r for r in _ip("-n", ns, "route", "show").stdout.splitlines() if r.strip()]
        assert len(routes) == 1 and routes[0].startswith(f"{hosts.subnet} dev {dev}"), f"{ns} routes: {routes}"
        v6 = [r for r in _ip("-n", ns, "-6", "route", "show").stdout.splitlines()
              if r.strip() and " dev lo" not in r and not r.startswith(("fe80::", "multicast ff00::/8"))]
        assert not v6, f"{ns} IPv6 routes off the link: {v6}"
        out = _ip("-n", ns, "route", "get", "192.0.2.1", check=False)  # TEST-NET-1: any outside address
        assert out.returncode != 0 and "unreachable" in out.stderr, f"{ns} routes outside: {out.stdout}"


# ---------------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------------
def _start(ns: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def _node_env(discovery: str, static_peer: str, domain: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "FASTDDS_", "FASTRTPS_"))}
    env.update({"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": discovery,
                "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE),
                "PYTHONUNBUFFERED": "1"})
    if static_peer:
        env["ROS_STATIC_PEERS"] = static_peer
    return env


def run_two_hosts(hosts: TwoHosts, transport: str, discovery: str, checkpoint: Path, log_dir: Path) -> dict:
    """Start perception + driver in the robot namespace, policy + probe in the policy one; the probe's
    measurement, with the veth byte counters around it."""
    from molmoact2_ros.core.embodiment import load_embodiment

    cameras = load_embodiment(EMBODIMENT).camera_names
    # A domain of its own per run: the namespaces' DDS traffic never reaches the host, so any id works,
    # but two runs of this test at once must not share one through a stale participant.
    domain = 1 + (os.getpid() + (0 if transport == "raw" else 50)) % 101
    static = discovery == "LOCALHOST"  # LOCALHOST alone never leaves the host: the peer is named instead
    robot_env = _node_env(discovery, hosts.policy_addr if static else "", domain)
    policy_env = _node_env(discovery, hosts.robot_addr if static else "", domain)
    common = ["--ros-args", "-p", f"embodiment:={EMBODIMENT}"]
    rx_policy0, rx_robot0 = _veth_bytes(hosts.policy_ns, hosts.policy_if), _veth_bytes(hosts.robot_ns, hosts.robot_if)
    procs = []
    try:
        procs.append(_start(hosts.robot_ns, ["-m", "molmoact2_ros.nodes.perception_node", *common,
                                             "-p", "source:=synthetic",
                                             "-p", f"publish_compressed:={str(transport == 'compressed').lower()}"],
                            robot_env, log_dir / f"perception_{transport}.log"))
        procs.append(_start(hosts.robot_ns, ["-m", "molmoact2_ros.nodes.driver_node", *common,
                                             "-p", "backend:=mock"], robot_env, log_dir / f"driver_{transport}.log"))
        procs.append(_start(hosts.policy_ns, ["-m", "molmoact2_ros.nodes.policy_node", *common,
                                              "-p", f"checkpoint:={checkpoint}", "-p", f"image_transport:={transport}",
                                              "-p", "instruction:=pick up the red cube", "-p", "torch_num_threads:=1",
                                              "-p", "max_inference_rate_hz:=2.0"],
                            policy_env, log_dir / f"policy_{transport}.log"))
        probe_proc = subprocess.run(
            ["ip", "netns", "exec", hosts.policy_ns, sys.executable, __file__, "--transport", transport,
             "--cameras", ",".join(cameras), "--measure-s", str(MEASURE_S), "--timeout-s", "120"],
            env=policy_env, capture_output=True, text=True, timeout=200, cwd=REPO)
        dead = [p.args[4:6] for p in procs if p.poll() is not None]
        lines = [line for line in probe_proc.stdout.splitlines() if line.startswith("{")]
        logs = "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(log_dir.glob(f"*_{transport}.log")))
        assert lines, f"probe printed no result (rc {probe_proc.returncode}): {probe_proc.stderr[-2000:]}\n{logs}"
        result = json.loads(lines[-1])
        assert "error" not in result, f"{result}; nodes exited: {dead}\n{logs}"
    finally:
        _stop(procs)
    result["discovery"] = discovery + (" + ROS_STATIC_PEERS" if static else "")
    result["veth_rx_bytes_policy_ns"] = _veth_bytes(hosts.policy_ns, hosts.policy_if) - rx_policy0
    result["veth_rx_bytes_robot_ns"] = _veth_bytes(hosts.robot_ns, hosts.robot_if) - rx_robot0
    return result


@pytest.mark.timeout(400)
def test_policy_host_and_robot_pc_in_two_namespaces(two_hosts: TwoHosts, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("rclpy")
    from molmoact2_ros.backends.policy.tiny_checkpoint import ensure_tiny_checkpoint
    from molmoact2_ros.core.embodiment import load_embodiment

    assert_sealed(two_hosts)
    # Built here, once, so that the policy node's start-up is loading, not building (~6 s on first use).
    checkpoint = ensure_tiny_checkpoint(load_embodiment(EMBODIMENT))
    results = {}
    for transport, discovery in (("raw", "SUBNET"), ("compressed", "LOCALHOST")):
        res = run_two_hosts(two_hosts, transport, discovery, checkpoint, tmp_path)
        results[transport] = res
        for cam, c in res["cameras"].items():
            # ~10 s at 30 Hz; generous bounds, a busy 2-core machine also runs the policy on the same CPUs
            assert c["published"] >= 0.5 * MEASURE_S * 30, f"{transport} {cam}: perception published {c}"
            assert c["lost"] <= 0.2 * c["published"], f"{transport} {cam}: lost too many frames across the link {c}"
            assert c["latency_ms_p50"] < 500.0, f"{transport} {cam}: capture -> arrival {c}"
        assert res["chunks_executed_in_window"] > 0, f"{transport}: no chunk came back and was executed: {res}"
        # The frames crossed the veth (not shared memory): the policy side received at least their bytes.
        assert res["veth_rx_bytes_policy_ns"] >= res["received_bytes"] > 0, res
        assert res["veth_rx_bytes_robot_ns"] > 0, res  # chunks and discovery flowed back
    raw_frame = results["raw"]["cameras"]["front"]["bytes_per_frame"]
    jpeg_frame = results["compressed"]["cameras"]["front"]["bytes_per_frame"]
    assert raw_frame == 640 * 480 * 3 and 0 < jpeg_frame < raw_frame, (raw_frame, jpeg_frame)
    assert_sealed(two_hosts)  # still nothing but the link after the run
    if os.environ.get(RESULTS_ENV):
        Path(os.environ[RESULTS_ENV]).write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description="two-hosts probe: frame latency/loss and executed chunks")
    parser.add_argument("--transport", choices=("raw", "compressed"), required=True)
    parser.add_argument("--cameras", required=True, help="comma-separated camera names")
    parser.add_argument("--measure-s", type=float, default=MEASURE_S)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args()
    result = probe(args.transport, args.cameras.split(","), args.measure_s, args.timeout_s)
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    main()
