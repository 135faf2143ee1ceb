"""The GPU path on one machine (bench/gpu_check.sh runs this after the CUDA tests): Policy.act latency in fp32 and
bf16 for the tiny config and a ~0.5B-shaped backbone built from config (random weights), stage-2 (latent
pretraining) training steps/s on the same shapes, and a 2-process `accelerate launch` smoke run when more than one
GPU is present. Writes results/gpu_check.json with the card named.

    python bench/gpu_check.py                                   # CUDA, the real shapes
    python bench/gpu_check.py --device cpu --small --out X.json # the same code on CPU with tiny shapes (tests)

Targets (issue 11, H100-class): the ~0.5B backbone single-step >= 50 Hz in bf16, >= 200 actions/s with chunking.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.policy_latency import INSTRUCTION, machine  # noqa: E402
from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.vla.policy import Policy  # noqa: E402


def build_checkpoint(out: Path, preset_name: str, head: str, chunk_size: int, action_dim: int = 7) -> tuple[Path, int]:
    """A random-weight checkpoint of `preset_name` (no download) with a latent head and the given action head."""
    from lapa_learning.vla.checkpoint import save_checkpoint
    from lapa_learning.vla.configuration_vla import preset
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import ActionProcessor, prompt_corpus, train_tokenizer
    from lapa_learning.vla.testing import tiny_corpus

    cfg = preset(preset_name, latent=dict(num_tokens=4, codebook_size=8),
                 action=dict(type=head, action_dim=action_dim, chunk_size=chunk_size))
    tok = train_tokenizer(prompt_corpus(cfg.prompt_template, tiny_corpus()), cfg.language.tokenizer_vocab_size)
    torch.manual_seed(0)
    vocab = cfg.language.overrides.get("vocab_size", len(tok))
    model = VLAModel(cfg, vocab_size=max(vocab, len(tok)))
    acts = np.random.default_rng(0).uniform(-1, 1, (2000, action_dim)).astype(np.float32)
    acts[:, -1] = np.sign(acts[:, -1])
    ap = ActionProcessor.fit(acts, tuple(f"a{i}" for i in range(action_dim - 1)) + ("gripper",))
    save_checkpoint(out, model, tok, ap, {"command": "bench/gpu_check.py", "note": "random weights"})
    return out, model.num_parameters()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_act(policy: Policy, image: np.ndarray, n: int) -> dict:
    """Single-step (reset before every call) and, for a chunked policy, mean per action over whole chunks."""
    single = []
    for i in range(n + 3):
        policy.reset()
        _sync(policy.device)
        t = time.perf_counter()
        policy.act(image, INSTRUCTION)
        _sync(policy.device)
        if i >= 3:
            single.append((time.perf_counter() - t) * 1e3)
    out = {"single_step_median_ms": round(statistics.median(single), 3),
           "single_step_hz": round(1e3 / statistics.median(single), 1)}
    if policy.chunk_size > 1:
        policy.reset()
        _sync(policy.device)
        t = time.perf_counter()
        steps = max(n, policy.chunk_size) // policy.chunk_size * policy.chunk_size
        for _ in range(steps):
            policy.act(image, INSTRUCTION)
        _sync(policy.device)
        out["chunked_actions_per_s"] = round(steps / (time.perf_counter() - t), 1)
    return out


def train_steps_per_s(ckpt: Path, device: str, precision: str, batch_size: int, steps: int) -> dict:
    """Stage-2 steps on random images and latent targets: forward, backward, AdamW, as the trainer does."""
    from lapa_learning.vla.checkpoint import load_checkpoint
    from lapa_learning.vla.processor_vla import encode_prompts

    model, tok, *_ = load_checkpoint(ckpt, device=device)
    model.train()
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    ids, mask = encode_prompts(tok, cfg.prompt_template, [INSTRUCTION] * batch_size, cfg.language.max_text_tokens)
    batch = {"pixels": torch.rand(batch_size, 3, cfg.image_size, cfg.image_size, generator=g).to(device),
             "ids": ids.to(device), "mask": mask.to(device),
             "latent_tokens": torch.randint(0, cfg.latent.codebook_size, (batch_size, cfg.latent.num_tokens),
                                            generator=g).to(device)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    use_bf16 = precision == "bf16"
    ctx = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16)
    times = []
    for i in range(steps + 2):
        _sync(device)
        t = time.perf_counter()
        with ctx:
            loss, _ = model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    out = {"batch_size": batch_size, "steps_per_s": round(1 / statistics.median(times), 2),
           "samples_per_s": round(batch_size / statistics.median(times), 1), "final_loss": round(float(loss), 4)}
    if device.startswith("cuda"):
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def accelerate_smoke(tmp: Path, timeout: int = 240) -> dict:
    """`accelerate launch --num_processes 2` of a few latent-pretraining steps on a toy dataset."""
    from lapa_learning.vla.testing import make_toy_dataset

    data = make_toy_dataset(tmp / "toy", episodes=6, length=12)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
           "-m", "lapa_learning.cli", "vla", "pretrain", "--data", str(data), "--out", str(tmp / "ddp"),
           "--config", "tiny", "--max-steps", "5", "--batch-size", "4", "--eval-every", "5", "--save-every", "5",
           "--no-progress", "--overwrite"]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return {"command": " ".join(cmd[1:]), "returncode": res.returncode, "seconds": round(time.perf_counter() - t, 1),
            "checkpoint_written": (tmp / "ddp" / "checkpoint" / "model.safetensors").is_file(),
            "stderr_tail": res.stderr[-1500:] if res.returncode else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a check of this script itself)")
    ap.add_argument("--small", action="store_true", help="tiny shapes only and few repetitions (CPU tests)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check.json")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; nothing to check (use --device cpu to test the script)")
        return 0
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    n = 5 if args.small else 50
    tmp = Path(tempfile.mkdtemp(prefix="lapa_gpu_check_"))
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    # (name, preset) pairs: the tiny CPU config, and a ~0.5B backbone (SigLIP-base + Qwen2.5-0.5B shapes)
    models = [("tiny", "tiny")] + ([] if args.small else [("qwen0.5b-random", "qwen0.5b-random")])
    precisions = ["fp32", "bf16"] if args.device.startswith("cuda") else ["fp32"]
    latency, training = [], []
    for name, preset_name in models:
        single, nparams = build_checkpoint(tmp / f"{name}_single", preset_name, "discrete", 1)
        chunked, _ = build_checkpoint(tmp / f"{name}_chunk", preset_name, "continuous", 8)
        for precision in precisions:
            for head, ckpt in (("discrete(7)+latent, chunk 1", single), ("continuous(7)+latent, chunk 8", chunked)):
                pol = Policy.load(ckpt, device=args.device, precision=precision)
                row = dict(model=name, params_m=round(nparams / 1e6, 1), precision=precision, head=head,
                           **time_act(pol, image, n))
                latency.append(row)
                print(row, flush=True)
                del pol
            row = dict(model=name, precision=precision,
                       **train_steps_per_s(single, args.device, precision, 4 if args.small else 16, 3 if args.small else 20))
            training.append(row)
            print(row, flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    if gpus > 1:
        multi = accelerate_smoke(tmp)
    else:
        multi = {"skipped": f"{gpus} GPU{'s' if gpus != 1 else ''} visible: the 2-process accelerate run needs 2"}
    print(multi, flush=True)
    big = [r for r in latency if r["model"] == "qwen0.5b-random" and r["precision"] == "bf16"]
    result = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if gpus else None, "gpu_count": gpus,
              "latency": latency, "training_stage2": training, "multi_gpu": multi,
              "targets": {"qwen0.5b_bf16_single_step_hz>=50": any(r["single_step_hz"] >= 50 for r in big) if big else None,
                          "qwen0.5b_bf16_chunked_actions_per_s>=200":
                              any(r.get("chunked_actions_per_s", 0) >= 200 for r in big) if big else None},
              "machine": machine(), "command": script_command(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cuda_version": torch.version.cuda,
              "small_shapes": args.small, "env_cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
