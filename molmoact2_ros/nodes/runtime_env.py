"""ROS environment defaults for local runs.

Fast DDS's default discovery multicasts to the whole network. Local runs (demo, tests, simulation,
replay) must stay on this host, so unless the user already chose a discovery range we pin it to
LOCALHOST. A multi-host setup opts in explicitly: ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET (or
ROS_STATIC_PEERS) in its environment.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DISCOVERY_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"


def apply_local_ros_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    env = os.environ if env is None else env
    env.setdefault(DISCOVERY_VAR, "LOCALHOST")
    return env


def private_domain_id(seed: int | None = None) -> int:
    """A ROS_DOMAIN_ID for a self-contained local run, so concurrent runs on one host don't hear each
    other. Kept within 1..101, the range whose DDS ports fit on every platform."""
    seed = os.getpid() if seed is None else seed
    return 1 + seed % 101
