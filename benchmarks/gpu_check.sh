#!/usr/bin/env bash
# GPU check: the policy node on a real-size random-weight MolmoAct2 (bf16, CUDA graphs off/on, continuous
# and Think), in one command on a CUDA host; see benchmarks/gpu_check.py. Exit codes: 0 done, 3 no CUDA
# device (nothing built), 4 a configuration skipped to stay within the time limit, 124 over 10 minutes.
#
#   bash benchmarks/gpu_check.sh [--rounds 30] [--rebuild] [--out-dir DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
    echo "gpu_check: $PY not found: run scripts/setup.sh first (or set PYTHON)" >&2
    exit 2
fi
# Nothing may be downloaded: the model is built here from LeRobot's copy of the remote code.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# DDS on loopback, as every benchmark here.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec timeout --signal=INT --kill-after=20 600 "$PY" benchmarks/gpu_check.py "$@"
