# Robot PC: ROS 2 Kilted (distro rclpy) + cameras + one arm family's hardware library; perception and driver.
# Build (from the repository root), ARM = the arm family's extra:
#   docker build -f docker/Dockerfile.robot --build-arg ARM=yam -t molmoact2-ros-robot .
#   yam    -> dreamscale-i2rt + python-can (YAM bimanual, CAN)             no torch
#   franka -> pylibfranka (Franka, DROID setup)                             no torch
#   so100  -> LeRobot 0.6.1's Feetech bus + scservo_sdk (SO-100 / SO-101)   BRINGS TORCH: LeRobot depends on it
#             (CPU-sized, but ~1 GB more; README "Install by host role" says the same)
# Cameras for every ARM: pyrealsense2 (the realsense extra, CAMERAS='' drops it) and OpenCV for USB / V4L2 /
# RTSP cameras and JPEG encoding (opencv-python-headless: no extra of setup.py carries it without LeRobot).
FROM ros:kilted-ros-base

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip python3-venv libusb-1.0-0 can-utils \
    && rm -rf /var/lib/apt/lists/*

# Distro rclpy, seen from the venv; the `ros` extra (PyPI ROS wheels) is never installed over it.
RUN python3 -m venv --system-site-packages /opt/venv

WORKDIR /ws/src/molmoact2_ros
COPY setup.py setup.cfg pyproject.toml package.xml ./
COPY resource/ resource/
COPY molmoact2_ros/ molmoact2_ros/
COPY launch/ launch/
COPY config/ config/

ARG ARM=yam
# Camera extra: realsense (pyrealsense2); '' for none.
ARG CAMERAS=realsense
RUN case "${ARM}" in so100|yam|franka) ;; \
      *) echo "ARM must be so100, yam or franka (got '${ARM}')" >&2; exit 2 ;; esac \
    && /opt/venv/bin/pip install --no-cache-dir -e ".[${ARM}${CAMERAS:+,${CAMERAS}}]" \
         "opencv-python-headless>=4.9,<5"

COPY docker/two_hosts_params.yaml docker/
COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["molmoact2-ros", "bringup", "--embodiment", "so101", "--no-policy", "--params-file", \
     "docker/two_hosts_params.yaml"]
