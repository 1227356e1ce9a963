"""Every test process keeps DDS on loopback and in a ROS domain of its own (see README, Testing)."""

import os

from molmoact2_ros.nodes.runtime_env import private_domain_id

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(private_domain_id()))
