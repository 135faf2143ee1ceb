#!/usr/bin/env bash
# A separate virtual environment with the LeRobot release that reads the dataset layout this project writes
# (LeRobotDataset codebase v2.1), for scripts/lerobot_compat.py. Not part of `make demo` / `make test`.
#
#   scripts/setup_lerobot.sh        # prints the venv's Python on its last line
#
#   venv     ${LAPA_LEROBOT_VENV:-.venv-lerobot}   (gitignored; about 5 GB)
#   Python   ${PYTHON:-python3}
#
# Why these pins: lerobot 0.3.3 is the last release that reads codebase v2.1 (0.4 reads v3.0 only). It asks for
# torch<2.8 and torchvision<0.23, and it decodes videos with torchvision.io.VideoReader (video_backend="pyav"),
# which later torchvision releases no longer have. The local CPU torch 2.13.0 wheel is therefore refused by the
# resolver, and PyPI's torchvision does not import beside it; torch 2.7.1 + torchvision 0.22.1 from PyPI (a CUDA
# build, which runs on the CPU) is what pip can get here. torchcodec (also pulled in) is not used.
# Idempotent: a stamp records what was installed.
#
#   scripts/setup_lerobot.sh --v3   # instead: .venv-lerobot3 with lerobot 0.4.4, which writes and reads codebase v3.0
#                                   # (for scripts/lerobot_v3_compat.py; its own pins resolve from PyPI, about 8 GB)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--v3" ]; then
    VENV=${LAPA_LEROBOT_VENV:-$ROOT/.venv-lerobot3}
    PACKAGES=(lerobot==0.4.4)
else
    VENV=${LAPA_LEROBOT_VENV:-$ROOT/.venv-lerobot}
    PACKAGES=(lerobot==0.3.3 torch==2.7.1 torchvision==0.22.1)
fi
case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=${PYTHON:-python3}

want_stamp=$( { printf '%s\n' "${PACKAGES[@]}"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
STAMP=$VENV/.lapa-lerobot-stamp
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want_stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    echo "[setup_lerobot] installing ${PACKAGES[*]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PACKAGES[@]}" 2>&1 \
        | grep -v -E "^WARNING: Location .* is ignored" >&2 || true
    "$VENV/bin/python" -c 'import lerobot.datasets.lerobot_dataset' \
        || { echo "[setup_lerobot] error: lerobot does not import in $VENV" >&2; exit 1; }
    echo "$want_stamp" >"$STAMP"
fi
echo "$VENV/bin/python"
