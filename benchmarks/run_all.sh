#!/usr/bin/env bash
# Run every benchmark in one go (each prints its own side-by-side table). Needs `bash scripts/setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
for b in benchmarks/bench_*.py; do
  echo "=== $b"
  .venv/bin/python "$b" "$@"
done
