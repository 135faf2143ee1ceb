"""The GPU path: bench/gpu_check.sh and its Python entry point (exercised on CPU here), and the CUDA tests that
gpu_check.sh runs on a GPU machine (skipped without CUDA)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs these)")


def test_gpu_check_sh_skips_cleanly_without_a_gpu():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "skipped: no CUDA GPU" in res.stdout and "torch 2" in res.stdout


@pytest.mark.slow
def test_gpu_check_entry_point_on_cpu_with_tiny_shapes(tmp_path):
    """The same code that runs on a GPU (latency, chunked actions/s, stage-2 training steps/s, the multi-GPU
    decision), on CPU with the tiny config."""
    out = tmp_path / "gpu_check.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--small",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["gpu"] is None and r["small_shapes"] is True
    heads = {row["head"]: row for row in r["latency"]}
    assert len(heads) == 2 and all(row["single_step_median_ms"] > 0 for row in heads.values())
    assert heads["continuous(7)+latent, chunk 8"]["chunked_actions_per_s"] > 0
    (train,) = r["training_stage2"]
    assert train["steps_per_s"] > 0 and np.isfinite(train["final_loss"])
    assert "skipped" in r["multi_gpu"] and r["command"].startswith("python")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_policy_on_cuda_matches_cpu(tmp_path, precision):
    from lapa_learning.vla.policy import Policy
    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ck", chunk_size=4, head="continuous", seed=2)
    cpu, gpu = Policy.load(ckpt, device="cpu"), Policy.load(ckpt, device="cuda", precision=precision)
    assert gpu.device == "cuda" and gpu.precision == precision
    imgs = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ins = ["push the puck to the goal", "open the door", "push"]
    a_cpu, _ = cpu.predict_chunk(imgs, ins)
    a_gpu, lat = gpu.predict_chunk(imgs, ins)
    tol = 1e-3 if precision == "fp32" else 0.1  # dataset units; bf16 keeps ~3 significant digits
    np.testing.assert_allclose(a_gpu[..., :-1], a_cpu[..., :-1], atol=tol)
    assert lat.shape == (3, 4)
    for env in (0, 1):  # the batched evaluator's per-env queues on CUDA
        assert gpu.act_batch([imgs[env]], [ins[env]], envs=[env])[0].chunk_index == 0


@cuda
@pytest.mark.slow
def test_bf16_latent_pretraining_on_cuda(tmp_path):
    from lapa_learning.vla.testing import make_toy_dataset

    data = make_toy_dataset(tmp_path / "toy", episodes=6, length=12)
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "vla", "pretrain", "--data", str(data), "--out",
                          str(tmp_path / "run"), "--config", "tiny", "--max-steps", "6", "--batch-size", "4",
                          "--eval-every", "3", "--save-every", "6", "--device", "cuda", "--precision", "bf16",
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "checkpoint" / "train_record.json").read_text())
    assert record["precision"] == "bf16" and record["device"].startswith("cuda")
