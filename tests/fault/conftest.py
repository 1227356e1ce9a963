"""Fault tests that start the real driver node keep DDS on loopback, in a ROS domain of this process's own.

Overridden, not defaulted (as in tests/node): a developer shell whose ROS_DOMAIN_ID reaches a live robot
must never hear, or command, it from a test.
"""

import os

import pytest

from molmoact2_ros.nodes.runtime_env import private_domain_id

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(private_domain_id(os.getpid()))


@pytest.fixture
def harness_factory():
    """Start driver harnesses (``node_harness.DriverHarness``); each is closed, and its writes audited, after
    the test."""
    from node_harness import DriverHarness

    made: list[DriverHarness] = []

    def make(embodiment="so101", **params) -> DriverHarness:
        h = DriverHarness(embodiment, **params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
