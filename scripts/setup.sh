#!/usr/bin/env bash
# Set up everything lapa_ros needs in a project-local virtual environment (.venv). Idempotent: a second run with
# unchanged setup files returns at once.
#
#   - Debian packages for headless MuJoCo rendering (EGL/OSMesa), only when missing and apt is usable
#   - .venv, seeing the system's packages when the system already has torch (e.g. a CUDA build) so it is kept
#   - torch 2.13.0 (CPU wheel) only when no torch is importable
#   - this project with its extras: sim, dev; and the ROS 2 wheels from PyPI only when no ROS 2 is sourced
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LAPA_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.lapa-setup-stamp"
want_stamp=$(cat setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)-ros:${ROS_DISTRO:-none}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && [ -x "$VENV/bin/lapa" ]; then
    exit 0
fi

log() { printf '[setup] %s\n' "$*"; }

# 1. Headless rendering libraries for MuJoCo (libEGL + Mesa, or OSMesa).
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' && ! ldconfig -p 2>/dev/null | grep -q 'libOSMesa'; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        log "installing Debian packages for headless MuJoCo rendering (libegl1, libgl1, libgles2, mesa)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libgles2 libegl-mesa0 libgl1-mesa-dri >/dev/null
    elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
        log "installing Debian packages for headless MuJoCo rendering (sudo)"
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libgles2 libegl-mesa0 libgl1-mesa-dri >/dev/null
    else
        log "WARNING: no libEGL/libOSMesa found and apt-get is not usable: install EGL or OSMesa for the simulator"
    fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    if "$PY" -c "import torch" 2>/dev/null; then
        log "the system Python already has torch $("$PY" -c 'import torch; print(torch.__version__)'): keeping it"
        "$PY" -m venv --system-site-packages "$VENV"
    else
        "$PY" -m venv "$VENV"
    fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# 3. torch: keep any torch already importable (a CUDA build, say); else the pinned CPU wheel.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    log "installing torch 2.13.0"
    "${PIP[@]}" install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import torch" || { log "ERROR: torch did not install"; exit 1; }
fi

# 4. The project, editable, with its extras. ROS 2 wheels only when no ROS 2 installation is sourced.
extras="sim,dev"
if [ -z "${ROS_DISTRO:-}" ]; then
    extras="$extras,ros"
else
    log "ROS 2 $ROS_DISTRO is sourced: using its rclpy and messages (not installing the PyPI ROS wheels)"
fi
log "installing lapa_ros[$extras] into $VENV"
"${PIP[@]}" install -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import lapa_learning, torch" || { log "ERROR: installation failed"; exit 1; }
echo "$want_stamp" > "$STAMP"
log "ready: $VENV (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
