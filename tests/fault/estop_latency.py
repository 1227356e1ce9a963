"""E-stop latency through the real driver node: from ``/estop`` published to the first braking tick and to the
last command that changed (the arm standing still), with or without a flood of large chunks on the main
executor. Used by tests/fault/test_safety_hazards_node.py and benchmarks/bench_estop.py.

Ticks come from the harness's ``TickRecorder`` (the control thread's own calls, with the monotonic time each
returned): nothing is inferred from message arrival times.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from node_harness import DriverHarness, PolicyStandIn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from molmoact2_ros.core.safety import SafetyState
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC, ESTOP_TOPIC

BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
FLOOD_STEPS = 2_000  # ~130 KB per chunk for 8 joints: "100 KB messages" (issue 8, item 10)


@dataclass
class EstopLatency:
    embodiment: str
    tick_rate_hz: float
    reliability: str
    flood_steps: int  # 0: a normal chunk stream
    reaction_s: float  # publish -> first tick in ESTOP
    stopped_s: float  # publish -> last tick whose command changed (the reaction, if the arm stood already)
    braking_ticks: int  # ticks between the first ESTOP tick and standing still
    speed_fraction: float  # the fastest joint's speed at the e-stop, as a fraction of its limit


class ChunkFlood:
    """The policy stand-in's chunks, each padded to ``steps`` steps (its last step held) and published back to
    back from a node of its own: every one is deserialised and parsed on the driver's main executor, and the
    arm follows them."""

    def __init__(self, h: DriverHarness, policy: PolicyStandIn, steps: int = FLOOD_STEPS):
        from rclpy.node import Node

        self.policy = policy
        self.steps = steps
        self.node = Node("chunk_flood", context=h.ctx)
        self.pub = self.node.create_publisher(JointTrajectory, CHUNK_TOPIC, CHUNK_QOS)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ChunkFlood:
        self._thread.start()
        return self

    def _run(self) -> None:
        tail: list[JointTrajectoryPoint] = []
        while not self._stop.is_set():
            msg = self.policy.chunk_now()
            head = list(msg.points)
            if not tail:  # built once: step k at k / rate, as the contract says
                rate = self.policy.emb.control_rate_hz
                for k in range(len(head), self.steps):
                    ns = round(k * 1e9 / rate)
                    tail.append(JointTrajectoryPoint(time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
            hold = head[-1].positions  # the last step held: no jump inside the chunk
            for point in tail:
                point.positions = hold
            msg.points = head + tail
            self.pub.publish(msg)
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60.0)  # a 20,000-step publish takes seconds on a small host: let it finish
        self.node.destroy_node()


def measure_estop(h: DriverHarness, *, reliability: str = "best_effort", flood_steps: int = 0,
                  require_motion: bool = True) -> EstopLatency:
    """Move the arm with a policy stand-in (its chunks padded to ``flood_steps`` steps and published back to
    back, if given), trip ``/estop`` once and time the driver's reaction. Without ``require_motion`` the e-stop
    is tripped once the chunks reach the driver, moving or not (chunks so large they arrive too late to run)."""
    h.ready()
    policy = PolicyStandIn(h, amplitude=0.3, frequency_hz=0.8)
    flooder = ChunkFlood(h, policy, flood_steps) if flood_steps else None
    if flooder is not None:
        h.wait_for(lambda: flooder.pub.get_subscription_count() > 0, what="driver chunk subscription")
        flooder.start()
    else:
        policy.start()
    try:
        if require_motion:
            h.wait_state("RUNNING")
            h.wait_for(lambda: h.di("chunks_executed") >= 3, what="motion under way")
            h.wait_for(lambda: float(h.d("speed_fraction_last") or 0) > 0.1, what="moving at a tenth of the limit")
        else:
            h.wait_for(lambda: h.di("chunks_received") >= 3, timeout=30.0, what="chunks reaching the driver")
        pub = h.probe.create_publisher(Bool, ESTOP_TOPIC,
                                       BEST_EFFORT if reliability == "best_effort" else RELIABLE)
        h.wait_for(lambda: pub.get_subscription_count() > 0, what="/estop subscription matched")
        speed = float(np.max(np.abs(h.driver.stack.velocity) / h.emb.max_velocity))
        t0 = time.monotonic()
        pub.publish(Bool(data=True))
        h.wait_for(lambda: h.driver.stack is not None and h.driver.stack.state is SafetyState.ESTOP
                   and h.driver.stack.standing_still, what="e-stop and a standing arm")
        settled = time.monotonic()
        h.wait_for(lambda: len(h.ticks.since(settled)) >= 3, what="a few ticks after the stop")
    finally:
        if flooder is not None:
            flooder.stop()
    ticks = [(t, cycle.tick.state, cycle.sent) for t, _, cycle in h.ticks.since(t0)]
    first = next(i for i, (_, state, _) in enumerate(ticks) if state is SafetyState.ESTOP)
    writes = [(t, sent) for t, _, sent in ticks[max(first - 1, 0):] if sent is not None]
    reaction = ticks[first][0] - t0
    if not writes:  # nothing commanded yet (no chunk ran, no heartbeat): the e-stop had nothing to stop
        return EstopLatency(h.emb.name, h.emb.tick_rate_hz, reliability, flood_steps, reaction, reaction, 0, speed)
    last_change = writes[0][0]
    for (_, a), (t, b) in itertools.pairwise(writes):
        if not np.array_equal(a, b):
            last_change = t
    braking = sum(1 for t, _ in writes[1:] if t <= last_change)
    return EstopLatency(h.emb.name, h.emb.tick_rate_hz, reliability, flood_steps, reaction,
                        max(last_change - t0, reaction), braking, speed)
