# Robot PC: drivers + cameras, no torch. Build: docker build -f docker/robot.Dockerfile -t molmoact2-ros-robot .
FROM ros:kilted-ros-base
ENV DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip libusb-1.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /ws/src/molmoact2_ros
COPY . .
# Pick the hardware family's extra at build time: so100 (Feetech), yam (i2rt/CAN), franka, realsense.
ARG HW_EXTRA=so100
RUN pip3 install --no-cache-dir -e ".[${HW_EXTRA},realsense]"
ENV FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
CMD ["bash", "-c", ". /opt/ros/kilted/setup.bash && molmoact2-ros bringup --embodiment ${EMBODIMENT:-so101} --no-policy"]
