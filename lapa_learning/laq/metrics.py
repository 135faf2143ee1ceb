"""Held-out evaluation of an LAQ model.

Metrics (all on frames in [0, 1], the model in eval mode, i.e. hard nearest-code quantization):
    mse, psnr                       reconstruction of x_t+H from (x_t, tokens)
    mse_copy_baseline, psnr_copy_baseline   the trivial prediction x̂_t+H = x_t
    psnr_changed, psnr_changed_copy_baseline   the same, restricted to "changed" pixels: pixels whose largest
                                    absolute channel difference between x_t and x_t+H exceeds CHANGE_THRESHOLD
                                    (0.05, about 13 of 255 grey levels); errors are pooled over all changed
                                    pixels of all pairs before taking the PSNR
    changed_fraction                fraction of pixels that changed
    codes_used_per_position         for each token position, the fraction of the codebook used at least once
    perplexity_per_position         exp(entropy) of each position's code distribution (max = codebook_size)
    codes_used_fraction             used (position, code) combinations / (num_tokens * codebook_size)
    codes_used_any_position         fraction of codes used at any position
    distinct_actions                number of distinct token tuples seen
PSNR = 10 log10(1 / MSE).
"""

from __future__ import annotations

import math

import numpy as np
import torch

CHANGE_THRESHOLD = 0.05


def psnr(mse: float) -> float:
    if math.isnan(mse):  # a diverged model: never a perfect score
        return float("nan")
    return float(10 * math.log10(1.0 / mse)) if mse > 0 else float("inf")


@torch.no_grad()
def evaluate(model, loader, device, max_batches: int | None = None) -> dict:
    was_training = model.training
    model.eval()
    K, C = model.cfg.num_tokens, model.cfg.codebook_size
    sums = dict(se=0.0, se_copy=0.0, n=0, se_ch=0.0, se_ch_copy=0.0, n_ch=0)
    counts = np.zeros((K, C), dtype=np.int64)
    tuples: set = set()
    pairs = 0
    for b, batch in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        frames = batch["frames"].to(device)
        out = model(frames)
        x0, x1, pred = frames[:, 0], frames[:, 1], out["recon"].clamp(0, 1)
        err, err_copy = (pred - x1) ** 2, (x0 - x1) ** 2  # (B, 3, S, S)
        changed = ((x1 - x0).abs().amax(dim=1, keepdim=True) > CHANGE_THRESHOLD).expand_as(err)  # (B, 3, S, S)
        sums["se"] += err.sum().item()
        sums["se_copy"] += err_copy.sum().item()
        sums["n"] += err.numel()
        sums["se_ch"] += err[changed].sum().item()
        sums["se_ch_copy"] += err_copy[changed].sum().item()
        sums["n_ch"] += int(changed.sum().item())
        idx = out["indices"].cpu().numpy()  # (B, K)
        for k in range(K):
            counts[k] += np.bincount(idx[:, k], minlength=C)
        tuples.update(map(tuple, idx.tolist()))
        pairs += len(idx)
    if was_training:
        model.train()
    if pairs == 0:
        return {}
    mse, mse_copy = sums["se"] / sums["n"], sums["se_copy"] / sums["n"]
    n_ch = max(sums["n_ch"], 1)
    mse_ch, mse_ch_copy = sums["se_ch"] / n_ch, sums["se_ch_copy"] / n_ch
    return {
        "pairs": pairs,
        "mse": mse, "psnr": psnr(mse),
        "mse_copy_baseline": mse_copy, "psnr_copy_baseline": psnr(mse_copy),
        "mse_changed": mse_ch, "psnr_changed": psnr(mse_ch),
        "mse_changed_copy_baseline": mse_ch_copy, "psnr_changed_copy_baseline": psnr(mse_ch_copy),
        "changed_fraction": sums["n_ch"] / sums["n"],
        "change_threshold": CHANGE_THRESHOLD,
        **usage_stats(counts),
        "distinct_actions": len(tuples),
    }


def usage_stats(counts: np.ndarray) -> dict:
    """counts: (K, C) how often each code appeared at each token position."""
    K, C = counts.shape
    probs = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    return {
        "codes_used_per_position": ((counts > 0).sum(axis=1) / C).tolist(),
        "perplexity_per_position": np.exp(ent).tolist(),
        "codes_used_fraction": float((counts > 0).sum() / (K * C)),
        "codes_used_any_position": float((counts.sum(axis=0) > 0).sum() / C),
        "code_counts": counts.tolist(),
    }
