"""Node tests run real rclpy in-process: keep DDS on loopback and in a ROS domain of this process's own.

Set before any test module calls ``rclpy.init``. Both are overridden, not defaulted: a developer shell
with ROS_DOMAIN_ID pointing at a live robot must never hear (or command) it from a test.
"""

import os

from molmoact2_ros.nodes.runtime_env import private_domain_id

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(private_domain_id(os.getpid()))
