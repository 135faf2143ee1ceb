"""What ran a measurement: the one `machine()` of every results JSON (benchmarks, scripts, the demo).

    machine()   -> {"cpu", "logical_cpus", "platform", "python", "torch", "transformers", "torch_threads",
                    "load_average", "gpu" (when CUDA is there)}
    summary()   -> "AMD EPYC, x86_64 2-core CPU, no GPU, torch threads per process: 1" (the demo's one line)
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> dict:
    import torch
    import transformers

    info = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    gpu = _gpu()
    if gpu is not None:
        info["gpu"] = gpu
    return info


def summary() -> str:
    """One line: CPU model, architecture, cores, GPU, torch threads per process (OMP_NUM_THREADS)."""
    return f"{cpu_name()}, {platform.machine()} {os.cpu_count()}-core CPU, {_gpu() or 'no GPU'}, torch threads per process: " \
           f"{os.environ.get('OMP_NUM_THREADS', 'default')}"
