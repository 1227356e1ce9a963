#!/usr/bin/env bash
# Idempotent setup from scratch: Python 3.12, a venv in .venv, and this package with the extras for a
# pip-only all-in-one host (policy + ROS wheels + bags + dev tools). Re-running is cheap: pip is only
# invoked when setup.py changed since the last successful install.
#   EXTRAS=policy,ros     bash scripts/setup.sh   # choose host-role extras (README: install by host role)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-policy,ros,bags,dev}"
VENV="${VENV:-.venv}"

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

# System libraries: pyrealsense2 loads Debian's libusb-1.0-0 (its tests skip without it).
if command -v dpkg-query >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && \
   ! dpkg-query -W -f='${Status}' libusb-1.0-0 2>/dev/null | grep -q "ok installed"; then
  echo "[setup] apt-get install libusb-1.0-0"
  { apt-get update -qq && apt-get install -y -qq libusb-1.0-0; } >/dev/null 2>&1 || echo "[setup] libusb-1.0-0 not installed: RealSense tests will be skipped" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python)
  echo "[setup] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.molmoact2_ros-installed"
want="$(cat setup.py | sha256sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing molmoact2_ros[$EXTRAS] (first time: torch + LeRobot + ROS wheels, a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v -i 'warning' || true
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v -i -E 'warning|is ignored' || true
  "$VENV/bin/python" -c 'import molmoact2_ros' # fail loudly if the install did not work
  echo "$want" > "$stamp"
fi
