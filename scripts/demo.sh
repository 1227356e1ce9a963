#!/usr/bin/env bash
# Set up (idempotent) and run the closed-loop demo on the built-in default (a simulated SO-101 on MuJoCo,
# tiny MolmoAct2 checkpoint built on first use). Extra args go to `molmoact2-ros demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec .venv/bin/molmoact2-ros demo "$@"
