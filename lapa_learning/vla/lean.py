"""The transformers towers of the VLA as plain tensor operations, for inference: the Llama / Qwen2 decoder layers
(`LeanDecoder`) and the SigLIP vision encoder (`LeanSiglipVision`).

`VLAModel.predict` runs the vision tower once and the LM 1 + K times per plan (the prefix, then one token per
step).  At the sizes the robot runs on a CPU (2 layers, 128 wide) the cost of a call is not arithmetic but
Python: the transformers model wrapper (argument merging, output capture, mask building), about a dozen nested
module calls per layer and hundreds of module attribute lookups.  Both classes look the weights up once, holding
the same Parameter objects (`.to()`, `load_state_dict` and optimiser steps change those in place, so nothing here
goes stale), and compute what the wrapped call computes with the same operations in the same order and the
library's own SDPA attention function: the result is the same to the bit (tests/test_vla_policy.py compares
hidden states, KV caches and decoded tokens with the wrapped calls).

`supports(...)` says where that holds: Llama / Qwen2 whose layers are all full attention with no sliding window,
SigLIP vision models, in both cases with plain `nn.Linear` projections (LoRA adapters replace them: such models
keep the wrapped call). The caller checks at call time that attention is SDPA (it can be switched after loading)
and that no projection was replaced since (`projections.current()`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _linear(m: nn.Linear) -> tuple:
    return m.weight, m.bias


def _projection_slots(layers, names: dict) -> list[tuple[nn.Module, str]]:
    """(owner module, attribute) of every projection the lean code reads; names: {"self_attn": (...), ...}."""
    return [(getattr(layer, owner), name) for layer in layers for owner, attrs in names.items() for name in attrs]


def _all_plain(layers, names: dict) -> bool:
    return all(type(owner._modules[name]) is nn.Linear for owner, name in _projection_slots(layers, names))


class _Projections:
    """Which Linear modules the lean towers read, to notice one being replaced after they were built (a LoRA
    adapter injected later): then `current()` is False and the caller takes the transformers call."""

    def __init__(self, layers, names: dict):
        self.items = [(owner._modules, name, owner._modules[name]) for owner, name in _projection_slots(layers, names)]

    def current(self) -> bool:
        return all(modules.get(name) is module for modules, name, module in self.items)


def _sdpa():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS["sdpa"]


# ---- language model ------------------------------------------------------------------------------------------

class _DecoderLayer(NamedTuple):
    attn: nn.Module  # the attention module: the library's attention function reads its GQA groups
    scaling: float
    head_dim: int
    norm1: tuple  # (weight, eps) of the RMSNorm before attention
    q: tuple  # (weight, bias or None) of each projection
    k: tuple
    v: tuple
    o: tuple
    norm2: tuple
    gate: tuple
    up: tuple
    down: tuple
    act: object  # the MLP activation (SiLU)


class LeanDecoder:
    """What `base_model(inputs_embeds=..., attention_mask=<ready 4-D mask>, position_ids=..., cache=...)` of a
    Llama / Qwen2 model computes: rotary embedding, the layers over a DynamicCache, the final norm."""

    FAMILIES = ("llama", "qwen2")
    PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}

    def __init__(self, body: nn.Module):
        c = body.config
        self.rotary = body.rotary_emb
        self.final_norm = (body.norm.weight, body.norm.variance_epsilon)
        self.layers = []
        self.projections = _Projections(body.layers, self.PROJECTIONS)
        for layer in body.layers[: c.num_hidden_layers]:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_DecoderLayer(
                attn=a, scaling=a.scaling, head_dim=a.head_dim,
                norm1=(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                q=_linear(a.q_proj), k=_linear(a.k_proj), v=_linear(a.v_proj), o=_linear(a.o_proj),
                norm2=(layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                gate=_linear(m.gate_proj), up=_linear(m.up_proj), down=_linear(m.down_proj), act=m.act_fn))

    @classmethod
    def supports(cls, body: nn.Module) -> bool:
        c = body.config
        full = all(t == "full_attention" for t in (getattr(c, "layer_types", None) or ["full_attention"]))
        if c.model_type not in cls.FAMILIES or not full or getattr(c, "use_sliding_window", False):
            return False
        return _all_plain(body.layers, cls.PROJECTIONS)

    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        """embeds (B, T, D), mask a ready 4-D SDPA mask (B, 1, T, past + T), pos (B, T), cache a DynamicCache
        (updated in place) -> hidden states after the final norm (B, T, D)."""
        attention = _sdpa()
        B, T, _ = embeds.shape
        cos, sin = self.rotary(embeds, position_ids=pos)  # (B, T, hd) each
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hd)
        h = embeds
        for i, L in enumerate(self.layers):
            x = _rms_norm(h, *L.norm1)
            q = F.linear(x, *L.q).view(B, T, -1, L.head_dim).transpose(1, 2)  # (B, H, T, hd)
            k = F.linear(x, *L.k).view(B, T, -1, L.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
            v = F.linear(x, *L.v).view(B, T, -1, L.head_dim).transpose(1, 2)
            k, v = cache.update(_rotate(k, cos, sin), v, i)  # (B, Hkv, past + T, hd)
            o, _ = attention(L.attn, _rotate(q, cos, sin), k, v, mask, dropout=0.0, scaling=L.scaling)  # (B, T, H, hd)
            h = h + F.linear(o.reshape(B, T, -1).contiguous(), *L.o)
            x = _rms_norm(h, *L.norm2)
            h = h + F.linear(L.act(F.linear(x, *L.gate)) * F.linear(x, *L.up), *L.down)
        return _rms_norm(h, *self.final_norm)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm / Qwen2RMSNorm: normalise in float32, scale in the input dtype."""
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (B, H, T, hd) with cos/sin (B, 1, T, hd)."""
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


# ---- vision tower --------------------------------------------------------------------------------------------

class _EncoderLayer(NamedTuple):
    attn: nn.Module
    scaling: float
    head_dim: int
    norm1: tuple  # (weight, bias, eps) of the LayerNorm before attention
    q: tuple  # (weight, bias) of each projection
    k: tuple
    v: tuple
    o: tuple
    norm2: tuple
    fc1: tuple
    fc2: tuple
    act: object  # GELU (tanh approximation)


class LeanSiglipVision:
    """What a transformers SiglipVisionModel returns as last_hidden_state: patch + position embedding, the
    encoder layers, the final LayerNorm -> (B, N, Dv). The attention-pooling head is not run (the VLA never
    reads it); an input size that needs interpolated positions takes the wrapped call (`handles`)."""

    PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "out_proj"), "mlp": ("fc1", "fc2")}

    def __init__(self, model: nn.Module):
        vm = getattr(model, "vision_model", model)  # older transformers nest the transformer one level down
        emb = vm.embeddings
        self.patch = emb.patch_embedding
        self.num_positions = emb.num_positions
        self.position_embedding, self.position_ids = emb.position_embedding, emb.position_ids
        post = vm.post_layernorm
        self.final_norm = (post.weight, post.bias, post.eps)
        self.layers = []
        self.projections = _Projections(vm.encoder.layers, self.PROJECTIONS)
        for layer in vm.encoder.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_EncoderLayer(
                attn=a, scaling=a.scale, head_dim=a.head_dim,
                norm1=(layer.layer_norm1.weight, layer.layer_norm1.bias, layer.layer_norm1.eps),
                q=_linear(a.q_proj), k=_linear(a.k_proj), v=_linear(a.v_proj), o=_linear(a.out_proj),
                norm2=(layer.layer_norm2.weight, layer.layer_norm2.bias, layer.layer_norm2.eps),
                fc1=_linear(m.fc1), fc2=_linear(m.fc2), act=m.activation_fn))

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        if getattr(model.config, "model_type", None) != "siglip_vision_model":
            return False
        return _all_plain(getattr(model, "vision_model", model).encoder.layers, cls.PROJECTIONS)

    def handles(self, pixels: torch.Tensor) -> bool:
        """Whether these pixels give as many patches as there are position embeddings."""
        kh, kw = self.patch.kernel_size
        return (pixels.shape[-2] // kh) * (pixels.shape[-1] // kw) == self.num_positions

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S), normalised -> last_hidden_state (B, N, Dv)."""
        attention = _sdpa()
        patches = self.patch(pixels.to(dtype=self.patch.weight.dtype))  # (B, Dv, h, w)
        h = patches.flatten(2).transpose(1, 2) + self.position_embedding(self.position_ids)  # (B, N, Dv)
        B, N, D = h.shape
        for L in self.layers:
            x = F.layer_norm(h, (D,), *L.norm1)
            q = F.linear(x, *L.q).view(B, N, -1, L.head_dim).transpose(1, 2)  # (B, H, N, hd)
            k = F.linear(x, *L.k).view(B, N, -1, L.head_dim).transpose(1, 2)
            v = F.linear(x, *L.v).view(B, N, -1, L.head_dim).transpose(1, 2)
            o, _ = attention(L.attn, q, k, v, None, is_causal=False, scaling=L.scaling, dropout=0.0)  # (B, N, H, hd)
            h = h + F.linear(o.reshape(B, N, -1).contiguous(), *L.o)
            x = F.layer_norm(h, (D,), *L.norm2)
            h = h + F.linear(L.act(F.linear(x, *L.fc1)), *L.fc2)
        return F.layer_norm(h, (D,), *self.final_norm)
