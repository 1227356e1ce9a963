"""Fault tests that start the real driver node keep DDS on loopback, in a ROS domain of this process's own.

Overridden, not defaulted (as in tests/node): a developer shell whose ROS_DOMAIN_ID reaches a live robot
must never hear, or command, it from a test.
"""

import os

from molmoact2_ros.nodes.runtime_env import private_domain_id

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(private_domain_id(os.getpid()))
