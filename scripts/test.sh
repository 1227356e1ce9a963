#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, type-check the core, then pytest
# (unit, node, fault-injection and system tests). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# DDS stays on this host; each test process picks its own ROS_DOMAIN_ID (tests/conftest.py).
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export MOLMOACT2_ROS_CACHE="${MOLMOACT2_ROS_CACHE:-$PWD/.cache}"
# A required dependency that does not import fails the run instead of skipping tests (tests/conftest.py).
export MOLMOACT2_ROS_REQUIRE_DEPS=1
.venv/bin/ruff check .
.venv/bin/mypy molmoact2_ros/core
# -rs: every skip that remains is listed with its reason.
.venv/bin/python -m pytest -q -rs "$@"
