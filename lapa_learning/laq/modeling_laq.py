"""The LAQ model: encoder(x_t, x_t+H) -> latent action tokens -> NSVQ -> decoder(x_t, tokens) -> x̂_t+H.

Encoder (C-ViViT style, like the reference):
    1. both frames are cut into p x p patches and embedded by ONE shared patch embedding;
    2. a learned spatial position embedding is added and a spatial transformer runs on each frame alone;
    3. a learned time embedding (2 steps) is added and a temporal transformer runs across the 2 frames of each
       patch with a real causal mask (frame t sees only itself, frame t+H sees both);
    4. per frame, tokens are projected dim -> code_dim, laid out as a (code_dim, g, g) grid and reduced by a small
       CNN to an s x s grid = num_tokens latent tokens;
    5. the latent action is the difference of the two frames' reduced tokens: CNN(t+H) - CNN(t).

Two deliberate differences from the reference implementation, which has two known quirks:
    * its "causal" temporal transformer does not actually mask the future; ours does (see TemporalTransformer);
    * its positional encoding is a depthwise 3-D conv (PEG) applied to a tensor whose time and space axes are laid
      out differently in the temporal stage, which scrambles the time layout; we use learned absolute spatial and
      temporal embeddings added once to tensors whose layout is explicit, so every token keeps its (t, h, w).

Decoder: the queries are frame t's patch embeddings (its own embedding + position); each block runs
self-attention over the patches, cross-attention to the (quantized) latent action tokens and an MLP; a linear
layer maps every token back to a p x p x 3 patch. It predicts x_t+H directly (or x_t+H - x_t with
`predict_residual`). The loss is pixel MSE.

Shapes: B batch, T = 2 time steps, N = g*g patches per frame, D = dim, K = num_tokens, E = code_dim.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lapa_learning.laq.configuration_laq import LAQConfig
from lapa_learning.laq.quantizer import NSVQ


# ----------------------------------------------------------------------------------------------- building blocks
class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None. `causal` masks later positions."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * inner, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        B, L, _ = x.shape
        ctx = x if context is None else context
        q = self.to_q(x).view(B, L, self.heads, -1).transpose(1, 2)  # (B, h, L, dh)
        k, v = self.to_kv(ctx).chunk(2, dim=-1)
        k = k.view(B, ctx.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, S, dh)
        v = v.view(B, ctx.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, S, dh)
        mask = causal_mask(L, x.device) if causal else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, L, -1))  # (B, L, D)


def causal_mask(length: int, device=None) -> torch.Tensor:
    """(L, L) bool, True where attention is allowed: position i attends to positions j <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block: (causal) self-attention, optional cross-attention, MLP."""

    def __init__(self, cfg: LAQConfig, cross: bool = False):
        super().__init__()
        D = cfg.dim
        self.norm1 = nn.LayerNorm(D)
        self.attn = Attention(D, cfg.heads, cfg.dim_head, cfg.dropout)
        self.cross = None
        if cross:
            self.norm_x, self.norm_ctx = nn.LayerNorm(D), nn.LayerNorm(D)
            self.cross = Attention(D, cfg.heads, cfg.dim_head, cfg.dropout)
        self.norm2 = nn.LayerNorm(D)
        self.mlp = MLP(D, cfg.mlp_ratio, cfg.dropout)

    def forward(self, x, context=None, causal: bool = False):
        x = x + self.attn(self.norm1(x), causal=causal)
        if self.cross is not None:
            x = x + self.cross(self.norm_x(x), context=self.norm_ctx(context))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, N, D): p x p patches, LayerNorm, Linear, LayerNorm (as in the reference)."""

    def __init__(self, cfg: LAQConfig):
        super().__init__()
        self.p = cfg.patch_size
        patch_dim = cfg.channels * cfg.patch_size ** 2
        self.net = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, cfg.dim), nn.LayerNorm(cfg.dim))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(patchify(img, self.p))


def patchify(img: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, S, S) -> (B, g*g, p*p*C), patches in row-major order."""
    B, C, H, W = img.shape
    x = img.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, g*g, p*p*C) -> (B, C, g*p, g*p)."""
    B, N, _ = x.shape
    g = int(round(N ** 0.5))
    x = x.reshape(B, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
    return x.reshape(B, channels, g * p, g * p)


class TokenReducer(nn.Module):
    """(B, E, g, g) grid -> (B, K, E): stride-2 3x3 convs while the grid is over twice s, then one unpadded conv
    to exactly s x s (for g = 8, s = 2 this is the reference's 3x3 stride 2 -> ReLU -> 3x3 no pad)."""

    def __init__(self, code_dim: int, grid: int, side: int):
        super().__init__()
        layers: list[nn.Module] = []
        g = grid
        while g // 2 > side and g // 2 >= 2:
            layers += [nn.Conv2d(code_dim, code_dim, 3, stride=2, padding=1), nn.ReLU()]
            g = (g + 1) // 2
        layers.append(nn.Conv2d(code_dim, code_dim, g - side + 1))
        self.net = nn.Sequential(*layers)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        y = self.net(grid)  # (B, E, s, s)
        return y.flatten(2).transpose(1, 2)  # (B, K, E)


# ------------------------------------------------------------------------------------------------------ encoder
class Encoder(nn.Module):
    def __init__(self, cfg: LAQConfig):
        super().__init__()
        self.cfg = cfg
        N = cfg.grid_size ** 2
        self.patch_embed = PatchEmbed(cfg)  # shared by both frames
        self.pos_space = nn.Parameter(torch.randn(1, N, cfg.dim) * 0.02)  # (1, N, D)
        self.pos_time = nn.Parameter(torch.randn(1, 2, cfg.dim) * 0.02)  # (1, T, D)
        self.spatial = nn.ModuleList(Block(cfg) for _ in range(cfg.spatial_depth))
        self.temporal = nn.ModuleList(Block(cfg) for _ in range(cfg.temporal_depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.to_code = nn.Linear(cfg.dim, cfg.code_dim)
        self.reduce = TokenReducer(cfg.code_dim, cfg.grid_size, cfg.token_grid)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T=2, 3, S, S) -> (B, T, N, D) after the spatial and the causal temporal transformer."""
        B, T = frames.shape[:2]
        x = self.patch_embed(frames.flatten(0, 1)) + self.pos_space  # (B*T, N, D)
        for blk in self.spatial:
            x = blk(x)
        N, D = x.shape[1:]
        # Temporal stage: one sequence of T tokens per (batch, patch); the layout is explicit, nothing is scrambled.
        x = x.view(B, T, N, D).transpose(1, 2).reshape(B * N, T, D) + self.pos_time[:, :T]  # (B*N, T, D)
        for blk in self.temporal:
            x = blk(x, causal=True)  # frame t cannot see frame t+H
        return self.norm(x).view(B, N, T, D).transpose(1, 2)  # (B, T, N, D)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3, S, S) -> continuous latent action (B, K, E) = reduced(t+H) - reduced(t)."""
        feats = self.frame_features(frames)  # (B, T, N, D)
        B, T, N, _ = feats.shape
        g = self.cfg.grid_size
        codes = self.to_code(feats)  # (B, T, N, E)
        grid = codes.reshape(B * T, g, g, -1).permute(0, 3, 1, 2)  # (B*T, E, g, g)
        tokens = self.reduce(grid).view(B, T, self.cfg.num_tokens, -1)  # (B, T, K, E)
        return tokens[:, 1] - tokens[:, 0]  # (B, K, E)


# ------------------------------------------------------------------------------------------------------ decoder
class Decoder(nn.Module):
    def __init__(self, cfg: LAQConfig):
        super().__init__()
        self.cfg = cfg
        N = cfg.grid_size ** 2
        self.patch_embed = PatchEmbed(cfg)
        self.pos_space = nn.Parameter(torch.randn(1, N, cfg.dim) * 0.02)  # (1, N, D)
        self.action_in = nn.Linear(cfg.code_dim, cfg.dim)
        self.pos_action = nn.Parameter(torch.randn(1, cfg.num_tokens, cfg.dim) * 0.02)  # (1, K, D)
        self.blocks = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.to_pixels = nn.Linear(cfg.dim, cfg.channels * cfg.patch_size ** 2)
        if cfg.predict_residual:  # start as the copy-x_t predictor instead of adding noise to x_t
            nn.init.zeros_(self.to_pixels.weight)
            nn.init.zeros_(self.to_pixels.bias)

    def forward(self, first: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """first: (B, 3, S, S) frame t, action: (B, K, E) -> predicted frame t+H (B, 3, S, S)."""
        x = self.patch_embed(first) + self.pos_space  # (B, N, D)
        ctx = self.action_in(action) + self.pos_action  # (B, K, D)
        for blk in self.blocks:
            x = blk(x, context=ctx)
        out = unpatchify(self.to_pixels(self.norm(x)), self.cfg.patch_size, self.cfg.channels)  # (B, 3, S, S)
        return first + out if self.cfg.predict_residual else out


# ---------------------------------------------------------------------------------------------------------- LAQ
class LAQ(nn.Module):
    def __init__(self, cfg: LAQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = NSVQ(cfg.code_dim, cfg.codebook_size, cfg.dead_code_threshold)
        self.decoder = Decoder(cfg)

    def forward(self, frames: torch.Tensor) -> dict:
        """frames: (B, 2, 3, S, S) in [0, 1] = (x_t, x_t+H) -> {"loss", "recon" (B, 3, S, S), "indices" (B, K)}."""
        self._check(frames)
        z, idx = self.quantizer(self.encoder(frames))  # (B, K, E), (B, K)
        recon = self.decoder(frames[:, 0], z)
        loss = F.mse_loss(recon, frames[:, 1])
        return {"loss": loss, "recon": recon, "indices": idx}

    @torch.no_grad()
    def encode_indices(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3, S, S) -> (B, K) latent action tokens (nearest codes; no noise)."""
        self._check(frames)
        return self.quantizer.indices(self.encoder(frames))

    @torch.no_grad()
    def decode_indices(self, first: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """first: (B, 3, S, S) frame t, indices: (B, K) -> predicted frame t+H."""
        return self.decoder(first, self.quantizer.lookup(indices))

    def _check(self, frames: torch.Tensor):
        S, C = self.cfg.image_size, self.cfg.channels
        if frames.dim() != 5 or tuple(frames.shape[1:]) != (2, C, S, S):
            raise ValueError(f"LAQ expects frames of shape (B, 2, {C}, {S}, {S}), got {tuple(frames.shape)}")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
