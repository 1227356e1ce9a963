#!/usr/bin/env bash
# Idempotent setup from scratch: Python 3.12, a venv in .venv, and this package with the extras for a
# pip-only all-in-one host (policy + ROS wheels + bags + dev tools + the hardware libraries, which the
# emulated-device tests drive). Re-running is cheap: pip is only
# invoked when setup.py, the install check or the extras changed since the last successful install.
# Any failure (apt, pip, the install check) fails this script with the failing step's output.
#   EXTRAS=policy,ros     bash scripts/setup.sh   # choose host-role extras (README: install by host role)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-policy,ros,bags,sim,dev,so100,yam,franka}"
VENV="${VENV:-.venv}"
ROOT="$PWD"
case "$VENV" in /*) VENV_ABS="$VENV" ;; *) VENV_ABS="$ROOT/$VENV" ;; esac

find_python() {
  for cand in "${PYTHON:-}" python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python" /root/.pyenv/versions/3.12.1/bin/python; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && { echo "$cand"; return; }
  done
  if command -v pyenv >/dev/null 2>&1 && py=$(pyenv which python 2>/dev/null) && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "$py"; return
  fi
  # Debian/Ubuntu: 3.12 is in Ubuntu 24.04 and Debian 13; older releases need pyenv (see README).
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq python3.12 python3.12-venv >/dev/null 2>&1 && command -v python3.12 && return
  fi
  echo "molmoact2_ros needs Python 3.12 (LeRobot 0.6.1 does): install it (pyenv install 3.12) and re-run" >&2
  exit 1
}

# Quiet, but never silent about a failure: each step's output goes to a log, shown when the step fails.
LOG=$(mktemp "${TMPDIR:-/tmp}/molmoact2_ros-setup.XXXXXX.log")
trap 'rm -f "$LOG"' EXIT
step() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[setup] FAILED: $*" >&2
    tail -n 60 "$LOG" >&2
    trap - EXIT  # keep the log to read
    echo "[setup] full output: $LOG" >&2
    exit 1
  fi
}

# System libraries: pyrealsense2 (dev and realsense extras) loads Debian's libusb-1.0-0. Required, not
# best-effort: without it the RealSense source and its tests cannot run. Off Debian/Ubuntu or without
# root, the install check below names what is missing.
if [[ ",$EXTRAS," == *,dev,* || ",$EXTRAS," == *,realsense,* ]] && command -v dpkg-query >/dev/null 2>&1 && \
   ! dpkg-query -W -f='${Status}' libusb-1.0-0 2>/dev/null | grep -q "ok installed"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install libusb-1.0-0"
    step apt-get update -qq
    step env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0
  fi
fi

# sim: MuJoCo renders offscreen through EGL with Mesa's software drivers (osmesa as the fallback).
if [[ ",$EXTRAS," == *,sim,* ]] && command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install ${missing[*]}"
    step apt-get update -qq
    step env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python)
  echo "[setup] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
# Re-install (and re-check) when setup.py, the install check or the extras change; otherwise start at once.
stamp="$VENV/.molmoact2_ros-installed"
want="$(cat setup.py scripts/check_install.py | sha256sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -f "$stamp"
  echo "[setup] installing molmoact2_ros[$EXTRAS] (first time: torch + LeRobot + ROS wheels, a few minutes)"
  step "$VENV/bin/python" -m pip install -q --upgrade pip
  step "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  # From outside the source tree: the install, not the working directory, must provide everything.
  echo "[setup] checking the install"
  if ! (cd / && "$VENV_ABS/bin/python" "$ROOT/scripts/check_install.py" "$EXTRAS"); then
    echo "[setup] the install is incomplete (see above); fix it and re-run" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
