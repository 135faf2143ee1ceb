"""NSVQ: vector quantization by noise substitution (Vali & Bäckström, 2022, arXiv 2202.12128).

In training the quantization error is simulated by noise of the same size:

    out = d + (||d - q|| / ||r||) * r,    r ~ N(0, I),    q = nearest code to d

so gradients reach the encoder (through d) and the codebook (through ||d - q||) without a straight-through
estimator or a commitment loss.  At evaluation `out = q`.

Dead codes: every forward pass in training counts how often each code was chosen.  At the steps of the reference
schedule (`replacement_due`), codes used less than `threshold` times per batch since the last replacement are
overwritten by randomly chosen used codes plus tiny noise, and the counts restart.

Einstein letters: b = batch, k = token position, d = code_dim, c = codebook_size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def replacement_due(step: int) -> bool:
    """The reference schedule: steps 10..90 every 10, 100..900 every 100, 1000..4500 every 500."""
    return (10 <= step < 100 and step % 10 == 0) or (100 <= step < 1000 and step % 100 == 0) \
        or (1000 <= step <= 4500 and step % 500 == 0)


class NSVQ(nn.Module):
    def __init__(self, code_dim: int, codebook_size: int, threshold: float = 0.1, noise_scale: float = 1e-3):
        super().__init__()
        self.codebook_size = codebook_size
        self.threshold = threshold
        self.noise_scale = noise_scale  # replacement noise, relative to the codebook's std
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))  # (c, d)
        # Usage since the last replacement; not part of the weights (the trainer saves them with its state).
        self.register_buffer("usage_counts", torch.zeros(codebook_size), persistent=False)  # (c,)
        self.register_buffer("usage_batches", torch.zeros(()), persistent=False)

    def indices(self, d: torch.Tensor) -> torch.Tensor:
        """(b, k, d) -> (b, k) index of the nearest code (Euclidean)."""
        with torch.autocast(device_type=d.device.type, enabled=False):
            flat = d.float().reshape(-1, d.shape[-1])  # (b*k, d)
            dist = torch.cdist(flat, self.codebook.float())  # (b*k, c)
            return dist.argmin(dim=-1).reshape(d.shape[:-1])

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """(b, k) code indices -> (b, k, d) codes."""
        return F.embedding(idx, self.codebook)

    def forward(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """d: (b, k, d) continuous latent actions -> (out (b, k, d), indices (b, k))."""
        idx = self.indices(d)
        q = self.lookup(idx).to(d.dtype)  # (b, k, d)
        if not self.training:
            return q, idx
        with torch.no_grad():
            self.usage_counts += torch.bincount(idx.reshape(-1), minlength=self.codebook_size).to(self.usage_counts)
            self.usage_batches += 1
        r = torch.randn_like(d)
        err = (d - q).norm(dim=-1, keepdim=True)  # (b, k, 1)
        out = d + err / r.norm(dim=-1, keepdim=True).clamp_min(1e-12) * r
        return out, idx

    @torch.no_grad()
    def replace_dead_codes(self, generator: torch.Generator | None = None) -> int:
        """Replace codes used < threshold times per batch since the last call; returns how many were replaced.

        Under torch.distributed the counts are summed over processes and rank 0's new codebook is broadcast,
        so every process keeps the same weights.
        """
        counts, batches = self.usage_counts.clone(), self.usage_batches.clone()
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if dist:
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(batches)
        replaced = 0
        if batches > 0:
            usage = counts / batches  # (c,) mean uses per batch
            dead = torch.nonzero(usage < self.threshold).flatten()
            used = torch.nonzero(usage >= self.threshold).flatten()
            if len(dead):
                cb = self.codebook.data
                scale = self.noise_scale * cb.std().clamp_min(1e-6)
                if len(used):
                    pick = used[torch.randint(len(used), (len(dead),), generator=generator).to(used.device)]
                    src = cb[pick]
                else:  # nothing reached the threshold: jitter every dead code around the most used one
                    src = cb[counts.argmax()].expand(len(dead), -1)
                noise = torch.randn(src.shape, generator=generator).to(cb) * scale
                cb[dead] = src + noise
                replaced = len(dead)
        if dist:
            torch.distributed.broadcast(self.codebook.data, src=0)
        self.usage_counts.zero_()
        self.usage_batches.zero_()
        return replaced
