"""Training samples for the VLA: (image x_t, instruction, target) from one or several datasets.

    latent targets : every labelled pair (episode, t) of `latent_actions.parquet` -> its K latent tokens
    action targets : every frame t of an episode dataset -> the chunk a_t .. a_t+T-1 (mask past the episode end)

Frames are decoded once per episode, resized to the model's image size and kept in memory as uint8 (64 px:
12 KB a frame).  Batches are drawn with a seeded generator (each process of a multi-GPU run has its own seed),
then turned into tensors (and augmented) in `collate`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lapa_learning.errors import DatasetError


def open_source(root, camera: str | None = None):
    from lapa_learning.data.video_folder import open_video_source

    return open_video_source(Path(root), camera=camera)


def open_labelled(root, camera: str | None, labelled: str | None, what: str):
    """The source of `what` (latent labels or pseudo-actions), read through `labelled`, the camera they were
    computed from, unless --camera asks for another, which is an error (the targets belong to those frames)."""
    source = open_source(root, camera or labelled)  # resolves a short name ("wrist") to its key
    if camera is not None and labelled is not None and source.video_key != labelled:
        raise DatasetError(f"--camera {camera}: the {what} of {root} were computed from the camera "
                           f"{labelled}; relabel with --camera {camera}, or drop --camera")
    return source


@dataclass
class SampleSet:
    """Flat arrays of samples over several sources (all of one target kind)."""

    frames: list[np.ndarray] = field(default_factory=list)  # per loaded episode: (T, S, S, 3) uint8
    instructions: list[str] = field(default_factory=list)  # per loaded episode
    episode_slot: list[int] = field(default_factory=list)  # per sample: index into frames/instructions
    t: list[int] = field(default_factory=list)  # per sample: frame index
    latent: list[np.ndarray] = field(default_factory=list)  # per sample: (K,) int (latent targets)
    actions: list[np.ndarray] = field(default_factory=list)  # per sample: (T, A) float32 (action targets)
    action_mask: list[np.ndarray] = field(default_factory=list)  # per sample: (T,) bool
    names: list[str] = field(default_factory=list)  # "<dataset root>:<episode>" per loaded episode

    def __len__(self) -> int:
        return len(self.t)

    def finalize(self):
        self.episode_slot = np.asarray(self.episode_slot, dtype=np.int64)
        self.t = np.asarray(self.t, dtype=np.int64)
        if self.latent:
            self.latent = np.stack(self.latent).astype(np.int64)  # (N, K)
        if self.actions:
            self.actions = np.stack(self.actions).astype(np.float32)  # (N, T, A)
            self.action_mask = np.stack(self.action_mask)  # (N, T)
        return self


def _check_labelled_episodes(keys, source, path, what: str, relabel: str, added_is_error: bool = False) -> None:
    """Refuse labels of other episodes (the videos changed since labelling); episodes added since have none:
    a warning (latent labels: those episodes are left out) or an error (pseudo-actions cover every frame)."""
    from lapa_learning.data.reader import check_episode_keys

    added = check_episode_keys(keys, source, path, relabel)
    if added:
        message = (f"{path}: {len(added)} of {source.num_episodes} episodes (e.g. episode {added[0]}) were added "
                   f"after labelling and have no {what}")
        if added_is_error:
            raise DatasetError(f"{message}; relabel with `{relabel}`")
        import warnings

        warnings.warn(f"{message}, so they are not trained on; relabel with `{relabel}` to use them", stacklevel=3)


def _load_frames(source, ep: int, size: int) -> np.ndarray:
    from lapa_learning.data.pairs import resize_square

    return resize_square(source.frames(ep), size)


def build_latent_samples(roots: Sequence, image_size: int, val_fraction: float, seed: int, progress: bool = True,
                         camera: str | None = None):
    """-> (train SampleSet, val SampleSet, info) for latent pretraining on several datasets with labels; the
    frames come from the camera the labels were computed from (see open_labelled)."""
    from lapa_learning.data.latent_labels import LatentLabels

    train, val = SampleSet(), SampleSet()
    K = C = None
    info = {"datasets": []}
    for root in roots:
        labels = LatentLabels.load(root)
        source = open_labelled(root, camera, labels.camera, "latent labels")
        _check_labelled_episodes(labels.episode_keys, source, labels.path, "latent labels",
                                 "lapa laq label --checkpoint LAQ --data DIR")
        if K is None:
            K, C = labels.num_tokens, labels.codebook_size
        elif (labels.num_tokens, labels.codebook_size) != (K, C):
            raise DatasetError(f"{root}: latent labels have {labels.num_tokens} tokens x codebook "
                               f"{labels.codebook_size}, but the first dataset has {K} x {C}; label every "
                               f"dataset with the same LAQ")
        order = np.argsort(labels.episode, kind="stable")
        eps, starts = np.unique(labels.episode[order], return_index=True)
        rows_of = {int(e): order[s:(starts[i + 1] if i + 1 < len(starts) else len(order))]
                   for i, (e, s) in enumerate(zip(eps, starts))}

        def targets(ep, length, labels=labels, rows_of=rows_of):
            rows = rows_of.get(int(ep), [])
            return [(int(labels.t[i]), labels.tokens[i]) for i in rows if labels.t[i] < length]

        _add_split(source, root, image_size, val_fraction, seed, train, val, progress, targets, latent=True)
        info["datasets"].append({"root": str(root), "camera": source.video_key,
                                 "labels": str(labels.path), "pairs": len(labels), "offset": labels.offset,
                                 "labels_source": labels.source})
    info.update(num_tokens=K, codebook_size=C)
    return train.finalize(), val.finalize(), info


def build_action_samples(roots: Sequence, image_size: int, chunk_size: int, val_fraction: float, seed: int,
                         progress: bool = True, pseudo: bool = False, camera: str | None = None):
    """-> (train, val, info) for action targets (finetuning, or ActionVLA pretraining). pseudo=True reads the
    IDM's `pseudo_actions.parquet` beside each dataset instead of its recorded actions (the VPT baseline)."""
    from lapa_learning.vpt.pseudo_actions import PseudoActions

    train, val = SampleSet(), SampleSet()
    names = None
    info = {"datasets": []}
    for root in roots:
        if pseudo:
            labels = PseudoActions.load(root)
            action_names, actions_of = labels.action_names, labels.actions  # actions_of(ep, length) -> (L, A)
            source = open_labelled(root, camera, labels.camera, "pseudo-actions")
            _check_labelled_episodes(labels.episode_keys, source, labels.path, "pseudo-actions",
                                     "lapa vpt label --checkpoint IDM --data DIR", added_is_error=True)
        else:
            source = open_source(root, camera)
            if not source.has_actions:
                raise DatasetError(f"{root}: action-free dataset; action training needs recorded actions "
                                   f"(use --targets latents with latent labels, or --targets pseudo-actions after "
                                   f"`lapa vpt label`, for action-free video)")

            def actions_of(ep, length, source=source):
                return source.actions(ep)

            action_names = source.action_names
        if names is None:
            names = tuple(action_names)
        elif tuple(action_names) != names:
            raise DatasetError(f"{root}: actions {list(action_names)} differ from the first dataset's "
                               f"{list(names)}")

        def targets(ep, length, actions_of=actions_of):
            a = actions_of(ep, length)  # (L, A)
            out = []
            for t in range(length):
                chunk = a[t:t + chunk_size]
                m = np.zeros(chunk_size, dtype=bool)
                m[:len(chunk)] = True
                if len(chunk) < chunk_size:  # past the episode end: repeat the last action, masked out
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], chunk_size - len(chunk), 0)])
                out.append((t, (chunk, m)))
            return out

        _add_split(source, root, image_size, val_fraction, seed, train, val, progress, targets, latent=False)
        info["datasets"].append({"root": str(root), "camera": source.video_key,
                                 "episodes": source.num_episodes, "frames": source.num_frames,
                                 # teleop/bag sets: the velocity per action unit (policy_node checks its own)
                                 "action_scales": None if pseudo else getattr(source, "action_scales", None)})
    info["action_names"] = list(names)
    _check_action_scales(info["datasets"])
    return train.finalize(), val.finalize(), info


def _check_action_scales(datasets: list[dict]) -> None:
    """Sets recorded with other velocities per action unit would give one action two meanings: refused. A mix of
    sets with and without recorded scales trains, with a warning (the policy cannot tell the robot its scales)."""
    recorded = [d for d in datasets if d.get("action_scales") is not None]
    if any(d["action_scales"] != recorded[0]["action_scales"] for d in recorded):
        listed = "; ".join(f"{d['root']}: {d['action_scales']}" for d in recorded)
        raise DatasetError(f"the datasets were recorded with different action scales (velocity per action unit), so "
                           f"one action would mean two velocities: {listed}. Train on sets recorded with the same "
                           f"linear_scale/angular_scale (lapa data info shows them)")
    if recorded and len(recorded) < len(datasets):
        missing = [d["root"] for d in datasets if d.get("action_scales") is None]
        warnings.warn(f"{', '.join(missing)} recorded no action scales, {recorded[0]['root']} recorded "
                      f"{recorded[0]['action_scales']}: the checkpoint will not know its velocity per action unit, "
                      f"so policy_node cannot check its linear_scale/angular_scale", stacklevel=3)


def _add_split(source, root, image_size, val_fraction, seed, train, val, progress, targets_fn, latent: bool):
    from lapa_learning.data.pairs import split_episodes

    ids = [ep.index for ep in source.episodes]
    if not ids:
        raise DatasetError(f"{root}: no episodes")
    tr_ids, va_ids = split_episodes(ids, val_fraction, seed)
    it = [(e, train) for e in tr_ids] + [(e, val) for e in va_ids]
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"loading {Path(root).name}", unit="episode", leave=False)
    for ep, dest in it:
        info = source.episodes[ids.index(ep)]
        rows = targets_fn(ep, info.length)
        if not rows:
            continue
        try:
            frames = _load_frames(source, ep, image_size)
        except DatasetError as err:
            raise DatasetError(f"{root}: episode {ep}: {err}") from None
        slot = len(dest.frames)
        dest.frames.append(frames)
        dest.instructions.append(info.instruction or "")
        dest.names.append(f"{root}:{ep}")
        for t, target in rows:
            if t >= len(frames):
                continue
            dest.episode_slot.append(slot)
            dest.t.append(t)
            if latent:
                dest.latent.append(np.asarray(target, dtype=np.int64))
            else:
                dest.actions.append(target[0])
                dest.action_mask.append(target[1])
    blank = [ep.index for ep in source.episodes if not (ep.instruction or "").strip()]
    if blank:
        import warnings

        warnings.warn(f"{root}: {len(blank)} of {len(ids)} episodes have no instruction (e.g. episode {blank[0]}); "
                      f"they train on an empty one, which Policy.act refuses: give each episode its instruction "
                      f"(meta/episodes.jsonl 'tasks', or the videos' instructions.jsonl / .csv)", stacklevel=3)


def majority_baseline(train: SampleSet, val: SampleSet) -> dict:
    """Held-out accuracy of always answering the most frequent code (globally, and per token position)."""
    if not len(train) or not len(val):
        return {}
    tr, va = np.asarray(train.latent), np.asarray(val.latent)
    glob = np.bincount(tr.reshape(-1)).argmax()
    per_pos = np.array([np.bincount(tr[:, k]).argmax() for k in range(tr.shape[1])])
    # a stronger baseline that sees the instruction but not the image: the most frequent code per position
    # among training pairs with the same instruction
    tr_ins = np.array([train.instructions[s] for s in train.episode_slot])
    va_ins = np.array([val.instructions[s] for s in val.episode_slot])
    hits = 0
    for ins in np.unique(va_ins):
        sel = tr_ins == ins
        maj = np.array([np.bincount(tr[sel, k]).argmax() for k in range(tr.shape[1])]) if sel.any() else per_pos
        hits += int((va[va_ins == ins] == maj[None]).sum())
    return {"majority_baseline_accuracy": float((va == per_pos[None]).mean()),
            "majority_global_accuracy": float((va == glob).mean()),
            "instruction_majority_baseline_accuracy": hits / va.size}


class Batcher:
    """Random batches (with replacement across epochs) and an ordered pass for evaluation."""

    def __init__(self, samples: SampleSet, batch_size: int, seed: int):
        self.samples = samples
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self._perm = np.zeros(0, dtype=np.int64)

    def next_indices(self) -> np.ndarray:
        if len(self._perm) < self.batch_size:
            self._perm = np.concatenate([self._perm, self.rng.permutation(len(self.samples))])
        idx, self._perm = self._perm[: self.batch_size], self._perm[self.batch_size:]
        return idx

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "perm": self._perm.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._perm = np.asarray(state["perm"], dtype=np.int64)


def eval_indices(n: int, max_samples: int, batch_size: int) -> list[np.ndarray]:
    """A fixed, evenly spread subset of at most max_samples, in batches."""
    idx = np.arange(n) if n <= max_samples else np.linspace(0, n - 1, max_samples).round().astype(np.int64)
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def collate(samples: SampleSet, idx: np.ndarray, head, tokenizer, config, action_processor=None,
            augment: bool = False, device="cpu", generator=None) -> dict:
    """Indices -> model batch with the targets of `head` (model.latent or model.head, vla/heads.py)."""
    from lapa_learning.vla.processor_vla import augment_images, encode_prompts, preprocess_images

    slots, ts = samples.episode_slot[idx], samples.t[idx]
    images = np.stack([samples.frames[s][t] for s, t in zip(slots, ts)])  # (B, S, S, 3) uint8
    pixels = preprocess_images(images, config.image_size).to(device)  # (B, 3, S, S)
    if augment:
        pixels = augment_images(pixels, generator=generator)
    ids, mask = encode_prompts(tokenizer, config.prompt_template, [samples.instructions[s] for s in slots],
                               config.language.max_text_tokens, config.language.truncate)
    batch = {"pixels": pixels, "ids": ids.to(device), "mask": mask.to(device)}
    batch.update(head.targets(samples, idx, action_processor, device))
    return batch
