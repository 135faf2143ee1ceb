#!/usr/bin/env bash
# The GPU path proven on a real GPU (issue 11), in under 8 minutes on one card:
#   1. the tests that touch CUDA (tests/test_gpu.py: Policy on CUDA in fp32/bf16 against the CPU, a bf16
#      training run through the real trainer),
#   2. bench/gpu_check.py: Policy.act latency fp32/bf16 for the tiny config and a ~0.5B-shaped backbone built from
#      config (random weights), stage-2 training steps/s on the same shapes, and a 2-process `accelerate launch`
#      smoke run when more than one GPU is present (else it says so) -> results/gpu_check.json, the card named.
# On a machine without a CUDA GPU it says so and exits 0.
#
#   bash bench/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: skipped: no CUDA GPU visible to torch on this machine ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo 'torch not importable'))."
  echo "gpu_check: results/gpu_check.json is still owed from a GPU machine."
  exit 0
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
start=$(date +%s)
timeout 180 "$PY" -m pytest tests/test_gpu.py -q -x -p no:cacheprovider
timeout 420 "$PY" bench/gpu_check.py --device cuda "$@"
echo "gpu_check: done in $(( $(date +%s) - start )) s"
