"""Target heads of the VLA: what the LM's hidden states at the target slots are turned into.

An action head is one class: its parameters, its training targets (its part of the action processor), its
loss, and its decoding (greedy, token by token, or all slots at once). It is registered in HEADS by name, the
value of `action.type` in a model config and of `--action-head` on the CLI:

    @register
    class MyHead(ActionHead):
        name = "my-head"
        ...

VLAModel, collate, the trainer, Policy and the CLIs ask the head; none of them knows the kinds. The latent head
of stage 2 (LatentTokens) has the same interface but is not an action head (not in HEADS).

A head's parameters are built by `build(D)` as {attribute name: module}; the model registers them under those
names, which are the checkpoint keys (`action_embed.weight`, `action_queries`, ...), so checkpoints written
before heads were classes load unchanged.

Shapes: B batch, T chunk size (actions per call), A action dim, D LM width, nb bins, K latent tokens,
C codebook size, M = T*A discrete action tokens, S target slots.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lapa_learning.errors import CheckpointError, ConfigError

IGNORE = -100  # target value that is left out of the loss


def init_weights(*modules) -> None:
    for m in modules:
        for p in m.modules():
            if isinstance(p, (nn.Linear, nn.Embedding)):
                nn.init.normal_(p.weight, std=0.02)
                if getattr(p, "bias", None) is not None:
                    nn.init.zeros_(p.bias)


def cross_entropy(logits, target, name: str):
    """logits (B, S, V), target (B, S) with IGNORE -> loss, {"loss", f"{name}_token_accuracy", "tokens"}."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
    with torch.no_grad():
        valid = target != IGNORE
        correct = ((logits.argmax(-1) == target) & valid).sum().item()
        n = max(int(valid.sum().item()), 1)
    return loss, {"loss": loss.item(), f"{name}_token_accuracy": correct / n, "tokens": n}


class TargetHead:
    """What every head answers. Token heads (autoregressive=True) decode greedily over the KV cache: one start
    slot, then `step` for each of `length` tokens; other heads read all their slots in one pass (`from_slots`)."""

    name = ""  # the kind, as in train records and `action.type`
    help = ""  # one line for the CLI's --action-head help
    key = ""  # batch key of its targets and predict()'s output key
    token_metric: str | None = None  # teacher-forced token accuracy metric, for token heads
    autoregressive = False
    decodes_actions = True  # False for the latent head (its predictions are codes, not actions)

    def __init__(self, cfg, hidden_size: int):
        self.cfg = cfg
        self.params = self.build(hidden_size)

    def build(self, D: int) -> dict:
        raise NotImplementedError

    # ---- training ----
    def targets(self, samples, idx: np.ndarray, processor, device) -> dict:
        """Samples -> the batch entries this head trains on (dataset units encoded by its processor part)."""
        acts = samples.actions[idx]  # (B, T, A)
        return {"action_mask": torch.from_numpy(samples.action_mask[idx]).to(device),
                self.key: self.encode(processor, acts).to(device)}

    def encode(self, processor, actions: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def train_slots(self, batch: dict) -> torch.Tensor:
        """Teacher-forced slot inputs (B, S, D)."""
        raise NotImplementedError

    def loss(self, h: torch.Tensor, batch: dict):
        """hidden (B, S, D) at the slots -> loss, metrics dict, teacher-forced prediction (what decode reads)."""
        raise NotImplementedError

    # ---- inference ----
    def first_slots(self, B: int, device) -> torch.Tensor:
        """The slots (B, S0, D) that go into the first LM call with the prefix."""
        raise NotImplementedError

    def from_slots(self, h: torch.Tensor) -> torch.Tensor:
        """Non-autoregressive heads: hidden (B, S0, D) -> prediction."""
        raise NotImplementedError

    @property
    def length(self) -> int:  # token heads: tokens to decode
        raise NotImplementedError

    def step(self, h: torch.Tensor, j: int):
        """Token heads: hidden (B, D) at slot j -> greedy token (B,), embedding of that token (B, D)."""
        raise NotImplementedError

    def finish(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token heads: decoded tokens (B, length) -> prediction."""
        return tokens

    def decode(self, processor, pred: torch.Tensor) -> np.ndarray:
        """Prediction -> actions (B, T, A) float32 in dataset units."""
        raise NotImplementedError

    def check_processor(self, processor, where: str) -> None:
        """Raise CheckpointError if a checkpoint's action statistics do not fit this head."""


class ActionHead(TargetHead):
    """Base of the action heads (registered in HEADS)."""


HEADS: dict[str, type[ActionHead]] = {}


def register(cls: type[ActionHead]) -> type[ActionHead]:
    """Class decorator: make a head available as `action.type` / `--action-head` `cls.name`."""
    HEADS[cls.name] = cls
    return cls


def build_head(cfg, hidden_size: int) -> ActionHead:
    if cfg.type not in HEADS:
        raise ConfigError(f"action.type {cfg.type!r}: expected one of {sorted(HEADS)}")
    return HEADS[cfg.type](cfg, hidden_size)


class LatentTokens(TargetHead):
    """Stage 2: K latent-action tokens from the LAQ codebook, autoregressive.   embed (C+1, D), head D -> C."""

    name = "latent"
    key = "latent_tokens"
    token_metric = "latent_token_accuracy"
    autoregressive = True
    decodes_actions = False

    def build(self, D):
        self.embed = nn.Embedding(self.cfg.codebook_size + 1, D)  # last row: the start-of-latents token
        self.head = nn.Linear(D, self.cfg.codebook_size)
        init_weights(self.embed, self.head)
        return {"latent_embed": self.embed, "latent_head": self.head}

    def targets(self, samples, idx, processor, device):
        return {self.key: torch.from_numpy(samples.latent[idx]).to(device)}

    def train_slots(self, batch):
        tokens = batch[self.key]  # (B, K) -> [start, z_1 .. z_{K-1}]
        start = torch.full((tokens.shape[0], 1), self.cfg.codebook_size, device=tokens.device, dtype=torch.long)
        return self.embed(torch.cat([start, tokens[:, :-1].clamp(min=0)], dim=1))  # (B, K, D)

    def loss(self, h, batch):
        logits = self.head(h).float()  # (B, K, C)
        loss, m = cross_entropy(logits, batch[self.key], "latent")
        return loss, m, logits.argmax(-1)

    def first_slots(self, B, device):
        return self.embed(torch.full((B,), self.cfg.codebook_size, dtype=torch.long, device=device))[:, None]

    @property
    def length(self):
        return self.cfg.num_tokens

    def step(self, h, j):
        z = self.head(h).argmax(-1)
        return z, self.embed(z)


@register
class DiscreteBins(ActionHead):
    """LAPA's head: T*A bin tokens, autoregressive, cross-entropy. Dim d of every action uses its own slice of
    the embedding; the gripper (last dim, when binary) has 2 classes.   embed (A*nb+1, D), head D -> nb."""

    name = "discrete"
    help = "256 quantile bins per dim, cross-entropy (LAPA)"
    key = "action_tokens"
    token_metric = "action_token_accuracy"
    autoregressive = True

    def build(self, D):
        c = self.cfg
        self.embed = nn.Embedding(c.action_dim * c.num_bins + 1, D)  # last row: start token
        self.head = nn.Linear(D, c.num_bins)
        init_weights(self.embed, self.head)
        return {"action_embed": self.embed, "action_head": self.head}

    def encode(self, processor, actions):
        return processor.to_tokens(actions)  # (B, T, A) bin ids

    def _ids(self, tokens):
        """bin ids (B, M), dims cycling 0..A-1 -> embedding rows (B, M)."""
        dims = torch.arange(tokens.shape[1], device=tokens.device) % self.cfg.action_dim  # (M,)
        return dims * self.cfg.num_bins + tokens.clamp(min=0)

    def train_slots(self, batch):
        tok = batch[self.key]
        B = tok.shape[0]
        start = torch.full((B, 1), self.cfg.action_dim * self.cfg.num_bins, device=tok.device, dtype=torch.long)
        return self.embed(torch.cat([start, self._ids(tok.reshape(B, -1))[:, :-1]], dim=1))  # (B, M, D)

    def logits(self, h, first_index: int = 0):
        """hidden (B, M, D) -> logits (B, M, nb), gripper slots restricted to 2 classes."""
        c = self.cfg
        logits = self.head(h).float()
        if c.gripper_binary:
            M = logits.shape[1]
            is_grip = (torch.arange(first_index, first_index + M, device=h.device) % c.action_dim) == c.action_dim - 1
            block = torch.zeros(c.num_bins, dtype=torch.bool, device=h.device)
            block[2:] = True
            logits = logits.masked_fill(is_grip[:, None] & block[None, :], float("-inf"))
        return logits

    def loss(self, h, batch):
        tok = batch[self.key]  # (B, T, A)
        B, T, A = tok.shape
        valid = batch.get("action_mask", torch.ones(B, T, dtype=torch.bool, device=tok.device))
        target = tok.masked_fill(~valid.bool()[..., None], IGNORE).reshape(B, T * A)  # (B, M)
        logits = self.logits(h)  # (B, M, nb)
        loss, m = cross_entropy(logits, target, "action")
        return loss, m, logits.argmax(-1).view(B, T, A)

    def first_slots(self, B, device):
        start = self.cfg.action_dim * self.cfg.num_bins
        return self.embed(torch.full((B,), start, dtype=torch.long, device=device))[:, None]

    @property
    def length(self):
        return self.cfg.chunk_size * self.cfg.action_dim

    def step(self, h, j):
        c = self.cfg
        logits = self.head(h).float()  # (B, nb)
        d = j % c.action_dim
        if c.gripper_binary and d == c.action_dim - 1:
            logits = logits[:, :2]  # the gripper slot has 2 classes (what `logits` masks in training)
        y = logits.argmax(-1)
        return y, self.embed(d * c.num_bins + y)

    def finish(self, tokens):
        return tokens.view(tokens.shape[0], self.cfg.chunk_size, -1)  # (B, T, A)

    def decode(self, processor, pred):
        return processor.from_tokens(pred.cpu().numpy())

    def check_processor(self, processor, where):
        if processor.num_bins != self.cfg.num_bins:
            raise CheckpointError(f"{where}: {processor.num_bins} bins but the model config says {self.cfg.num_bins}")


@register
class ContinuousChunk(ActionHead):
    """T learned query slots, one forward pass predicts the whole chunk, L1 on normalised actions.
    queries (T, D), MLP D -> hidden_dim -> A."""

    name = "continuous"
    help = "L1 on a chunk in one forward pass"
    key = "actions_norm"

    def build(self, D):
        c = self.cfg
        self.queries = nn.Parameter(torch.randn(c.chunk_size, D) * 0.02)  # (T, D)
        self.head = nn.Sequential(nn.Linear(D, c.hidden_dim), nn.GELU(), nn.Linear(c.hidden_dim, c.action_dim))
        init_weights(self.head)
        return {"action_queries": self.queries, "action_head": self.head}

    def encode(self, processor, actions):
        return processor.normalize(actions)  # (B, T, A)

    def train_slots(self, batch):
        return self.first_slots(batch[self.key].shape[0], None)

    def loss(self, h, batch):
        target = batch[self.key]  # (B, T, A)
        B, T = target.shape[:2]
        pred = self.head(h).float()  # (B, T, A)
        valid = batch.get("action_mask", torch.ones(B, T, dtype=torch.bool, device=target.device)).float()
        err = (pred - target.float()).abs().mean(-1)  # (B, T)
        loss = (err * valid).sum() / valid.sum().clamp(min=1)
        return loss, {"loss": loss.item(), "action_l1_normalized": loss.item()}, pred.detach()

    def first_slots(self, B, device):
        return self.queries[None].expand(B, -1, -1)  # (B, T, D)

    def from_slots(self, h):
        return self.head(h).float()  # (B, T, A)

    def decode(self, processor, pred):
        return processor.unnormalize(pred.float().cpu().numpy())


def head_help() -> str:
    """The --action-head help: every registered head and what it does."""
    return "; ".join(f"{name}: {cls.help}" for name, cls in HEADS.items())
