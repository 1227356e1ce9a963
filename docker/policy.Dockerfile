# GPU policy host: ROS 2 Kilted (distro rclpy) + MolmoAct2 through LeRobot 0.6.1 + CUDA torch.
# Build: docker build -f docker/policy.Dockerfile -t molmoact2-ros-policy .
FROM ros:kilted-ros-base
ENV DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 \
    ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET HF_HOME=/models/hf
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-venv git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /ws/src/molmoact2_ros
COPY . .
# rclpy comes from the distro here: never install the ros-* PyPI wheels over it (no `ros` extra).
RUN pip3 install --no-cache-dir -e ".[policy]"
# Multi-host on purpose: this container talks to the robot PC over the lab subnet (SUBNET above);
# apply the measured transport profile for camera frames.
ENV FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
CMD ["bash", "-c", ". /opt/ros/kilted/setup.bash && python3 -m molmoact2_ros.nodes.policy_node --ros-args -p device:=cuda -p dtype:=bf16 -p embodiment:=${EMBODIMENT:-so101}"]
