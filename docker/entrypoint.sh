#!/usr/bin/env bash
# Container entrypoint for both images: distro ROS 2 + the venv, the two-hosts DDS setup, then the command.
# Discovery is never left to Fast DDS's default (multicast on every interface): the compose file (or docker run
# -e) must say SUBNET, or LOCALHOST with ROS_STATIC_PEERS naming the other host (docs/two_hosts.md).
set -eo pipefail
# shellcheck disable=SC1091
source /opt/ros/kilted/setup.bash
# shellcheck disable=SC1091
source /opt/venv/bin/activate
case "${ROS_AUTOMATIC_DISCOVERY_RANGE:-}" in
  SUBNET) ;;
  LOCALHOST)
    if [ -z "${ROS_STATIC_PEERS:-}" ]; then
      echo "entrypoint: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST without ROS_STATIC_PEERS never reaches the other host;" \
           "set ROS_STATIC_PEERS to its address (or use SUBNET)" >&2
      exit 2
    fi ;;
  *)
    echo "entrypoint: set ROS_AUTOMATIC_DISCOVERY_RANGE to SUBNET, or LOCALHOST with ROS_STATIC_PEERS" \
         "(got '${ROS_AUTOMATIC_DISCOVERY_RANGE:-}'); see docs/two_hosts.md" >&2
    exit 2 ;;
esac
# Frames between hosts go over UDP only, with large socket buffers (config/dds/fastdds_two_hosts.xml says why).
# An explicit choice in the environment wins; molmoact2-ros bringup then leaves it alone too.
if [ -z "${FASTDDS_DEFAULT_PROFILES_FILE:-}${FASTDDS_BUILTIN_TRANSPORTS:-}" ]; then
  export FASTDDS_DEFAULT_PROFILES_FILE=/ws/src/molmoact2_ros/config/dds/fastdds_two_hosts.xml
fi
exec "$@"
