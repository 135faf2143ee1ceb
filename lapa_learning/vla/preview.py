"""Live latent preview: what the policy intends to happen, drawn by the LAQ it was trained from.

A LAPA policy with a latent head predicts K latent action tokens from frame t. The LAQ decoder turns frame t and
such tokens into its picture of frame t+H, so the pair (frame t, decoded t+H) shows what the policy intends:

    preview = LatentPreview.load(policy)             # or a checkpoint dir; laq= overrides the recorded LAQ
    strip = preview.render(image, action.latent_tokens)   # (H, 2W, 3) uint8: the frame | the decoded t+H

The finetuned checkpoint names its LAQ in train_record.json ("laq": the checkpoint that labelled the latent
pretraining data; stage 2 records it, finetune carries it on from --init). A relative path is resolved against
the policy checkpoint directory. No ROS here: policy_node and `lapa eval --preview` share it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lapa_learning.errors import CheckpointError, InputError


def recorded_laq(record: dict | None, checkpoint_dir: Path) -> Path:
    """The LAQ checkpoint a policy checkpoint's record names, resolved; CheckpointError when none or moved."""
    laq = (record or {}).get("laq")
    if not laq:
        raise CheckpointError(f"{checkpoint_dir}: its train_record.json names no LAQ checkpoint (trained without "
                              f"latent pretraining, or before LAQs were recorded); pass one: --preview-laq (lapa "
                              f"eval) or the preview_laq parameter (policy_node)")
    path = Path(laq) if Path(laq).is_absolute() else Path(checkpoint_dir) / laq
    if not path.exists():
        raise CheckpointError(f"{checkpoint_dir}: trained from the LAQ checkpoint {laq}, which is not there (moved "
                              f"or deleted?); pass where it is now: --preview-laq (lapa eval) or the preview_laq "
                              f"parameter (policy_node)")
    return path


class LatentPreview:
    def __init__(self, laq_model, laq_dir: Path, device: str = "cpu"):
        self.model = laq_model.eval()
        self.laq_dir = Path(laq_dir)
        self.device = device
        self.size: int = laq_model.cfg.image_size  # S: the LAQ's square input
        self.num_tokens: int = laq_model.cfg.num_tokens
        self.codebook_size: int = laq_model.cfg.codebook_size

    @classmethod
    def load(cls, policy_or_checkpoint, laq=None, device: str | None = None) -> "LatentPreview":
        """From a Policy (its record and device) or a policy checkpoint directory; `laq` overrides the record."""
        from lapa_learning.laq.checkpoint import load_laq, resolve_checkpoint
        from lapa_learning.vla.checkpoint import RECORD_FILE, resolve_checkpoint_dir

        policy = None if isinstance(policy_or_checkpoint, (str, Path)) else policy_or_checkpoint
        if policy is None:
            ckpt = resolve_checkpoint_dir(policy_or_checkpoint)
            try:
                record = json.loads((ckpt / RECORD_FILE).read_text())
            except (OSError, ValueError) as err:
                raise CheckpointError(f"{ckpt / RECORD_FILE}: missing or not JSON ({err})") from err
        else:
            ckpt, record = policy.checkpoint_dir, policy.record
        path = Path(laq) if laq else recorded_laq(record, ckpt)
        if not path.exists():
            raise CheckpointError(f"LAQ checkpoint {path} does not exist")
        dev = device or (policy.device if policy is not None else "cpu")
        model, _ = load_laq(resolve_checkpoint(path), device=dev)
        preview = cls(model, path, dev)
        if policy is not None and (policy.num_latent_tokens, policy.codebook_size) != (preview.num_tokens,
                                                                                         preview.codebook_size):
            raise CheckpointError(f"LAQ {path} makes {preview.num_tokens} tokens x codebook {preview.codebook_size}, "
                                  f"but the policy {ckpt} predicts {policy.num_latent_tokens} x {policy.codebook_size}")
        return preview

    def decode(self, image: np.ndarray, latent_tokens) -> np.ndarray:
        """image (H, W, 3) uint8, latent_tokens (K,) -> the decoder's frame t+H (S, S, 3) uint8."""
        from lapa_learning.data.pairs import resize_square

        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise InputError(f"image: expected a (H, W, 3) uint8 array, got {got}")
        tokens = np.asarray(latent_tokens).reshape(-1)
        if tokens.shape != (self.num_tokens,) or tokens.min() < 0 or tokens.max() >= self.codebook_size:
            raise InputError(f"latent_tokens: expected {self.num_tokens} ints in [0, {self.codebook_size}), "
                             f"got {tokens.tolist()}")
        x = torch.from_numpy(resize_square(image[None], self.size)[0]).permute(2, 0, 1).float().div(255)  # (3, S, S)
        idx = torch.from_numpy(tokens.astype(np.int64))[None].to(self.device)  # (1, K)
        with torch.inference_mode():
            out = self.model.decode_indices(x[None].to(self.device), idx)[0]  # (3, S, S) in [0, 1]
        return (out.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    def render(self, image: np.ndarray, latent_tokens) -> np.ndarray:
        """(H, W, 3) uint8 frame, (K,) tokens -> (H, 2W, 3) uint8: the frame next to the decoded frame t+H."""
        import cv2

        decoded = self.decode(image, latent_tokens)  # (S, S, 3)
        h, w = image.shape[:2]
        if decoded.shape[:2] != (h, w):
            decoded = cv2.resize(decoded, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.concatenate([image, decoded], axis=1)
