"""The one inference API shared by the ROS node, the simulator evaluator and the benchmarks.

    policy = Policy.load("outputs/finetune/checkpoint")          # CPU or CUDA ("auto")
    policy.reset()                                                # at the start of every episode
    action = policy.act(image_hwc_uint8, "push the puck to the goal")
    action.values        # (A,) float32 in dataset units, order = policy.action_names
    action.gripper       # last dim (Meta-World: -1 open .. 1 close)
    action.latent_tokens # (K,) int64 predicted latent action (when the model has a latent head), else None
    action.chunk_index   # position inside the current action chunk (0 right after a re-plan)

A chunked policy (chunk_size T > 1) predicts T actions per model call and hands them out one per `act`;
it re-plans after `replan_every` actions (default T).  `policy.will_replan` says whether the next `act` runs the
model; while it is False, `act` reads no image and accepts image=None (the simulator evaluator skips rendering
those steps).

Several environments at once (batched evaluation): `act_batch(images, instructions, envs=[0, 1, ...])` keeps a
chunk queue per environment id, exactly as `act` does for one, and plans every row whose queue is empty in one
forward pass; `will_replan_for(env)`, `reset(env)`.  Without `envs`, `act_batch` is stateless (a fresh plan for
every row, its first action).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lapa_learning.cli_args import pick_device
from lapa_learning.errors import CheckpointError, ConfigError, InputError


@dataclass
class Action:
    values: np.ndarray  # (A,) float32, un-normalised, in dataset units, order = policy.action_names
    gripper: float  # the gripper command (last dim), in dataset units (Meta-World: -1 open .. 1 close)
    latent_tokens: np.ndarray | None  # (K,) int64 when the model has a latent head, else None
    chunk_index: int  # index of this action inside the current chunk (0 right after a re-plan)


def check_envs(envs) -> None:
    """act_batch's `envs`: a list of hashable environment ids, one per row."""
    if not isinstance(envs, (list, tuple)) or not all(isinstance(e, Hashable) for e in envs):
        raise InputError(f"envs: expected a list of environment ids (ints or strings, one per row), got {envs!r}")


def data_action_scales(record: dict | None, where: str = "train_record.json") -> dict[str, float] | None:
    """The action_scales every finetuning dataset of a checkpoint's train_record.json recorded (one set of them), or
    None when any did not record them or they differ."""
    datasets = (record or {}).get("datasets") or []
    if not isinstance(datasets, list):
        raise CheckpointError(f"{where}: 'datasets': expected a list, got {type(datasets).__name__}")
    scales = [d.get("action_scales") if isinstance(d, dict) else None for d in datasets]
    if not scales or any(not isinstance(s, dict) for s in scales) or any(s != scales[0] for s in scales):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scales[0].values()):
        raise CheckpointError(f"{where}: 'datasets' -> 'action_scales' must map names to numbers, got {scales[0]!r}")
    return {str(k): float(v) for k, v in scales[0].items()}


class Policy:
    def __init__(self, model, tokenizer, actions, meta: dict, record: dict | None, checkpoint_dir: Path,
                 device: str, replan_every: int | None = None, precision: str = "auto"):
        if actions is None or model.head is None:
            raise CheckpointError(f"{checkpoint_dir}: has no action head (a stage-2 latent checkpoint?); "
                                  f"finetune it first: lapa vla finetune --init {checkpoint_dir} ...")
        self.model = model
        self.tokenizer = tokenizer
        self.actions = actions
        self.meta = meta
        self.record = record
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = device
        cfg = model.config
        self.name: str = cfg.name
        self.image_size: int = cfg.image_size
        self.chunk_size: int = cfg.action.chunk_size
        self.action_names: tuple[str, ...] = tuple(actions.names)
        # The velocity per action unit its finetuning data was recorded with (None: not recorded, or sets that differ)
        self.action_scales: dict[str, float] | None = data_action_scales(record,
                                                                         str(self.checkpoint_dir / "train_record.json"))
        self.num_latent_tokens: int | None = cfg.latent.num_tokens if cfg.latent is not None else None
        self.codebook_size: int | None = cfg.latent.codebook_size if cfg.latent is not None else None
        self.report_latents: bool = cfg.latent is not None  # set False to skip latent decoding (faster)
        replan = self.chunk_size if replan_every is None else replan_every
        if isinstance(replan, bool) or not isinstance(replan, (int, np.integer)) or not 1 <= replan <= self.chunk_size:
            raise ConfigError(f"replan every {replan_every!r} steps (--replan-every, parameter replan_every): expected "
                              f"an integer 1..chunk_size ({self.chunk_size})")
        self.replan_every = int(replan)
        if precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision {precision!r}: expected 'auto', 'fp32' or 'bf16'")
        use_bf16 = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
        self.precision = "bf16" if use_bf16 else "fp32"
        self._queues: dict = collections.defaultdict(collections.deque)  # env id -> planned actions (act: None)
        self._lock = threading.Lock()
        self._prompt_cache: tuple[str, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def load(cls, checkpoint_dir, device: str = "auto", replan_every: int | None = None,
             precision: str = "auto") -> "Policy":
        """Load a checkpoint dir (or a training run dir holding checkpoint/). CheckpointError on any problem."""
        from lapa_learning.vla.checkpoint import load_checkpoint, resolve_checkpoint_dir

        dev = str(pick_device(device, what="device"))
        ckpt = resolve_checkpoint_dir(checkpoint_dir)
        model, tokenizer, actions, meta, record = load_checkpoint(ckpt, device=dev)
        return cls(model, tokenizer, actions, meta, record, ckpt, dev, replan_every, precision)

    # ---- input checks ----
    @staticmethod
    def _check_image(image, what: str = "image") -> None:
        if not isinstance(image, np.ndarray):
            raise InputError(f"{what}: expected a numpy array (H, W, 3) uint8, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"{what}: expected shape (H, W, 3) RGB, got {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"{what}: empty image {image.shape}")
        if image.dtype != np.uint8:
            raise InputError(f"{what}: expected dtype uint8 (0..255), got {image.dtype}")

    @staticmethod
    def _check_instruction(instruction, what: str = "instruction") -> None:
        if not isinstance(instruction, str):
            raise InputError(f"{what}: expected a string, got {type(instruction).__name__}")
        if not instruction.strip():
            raise InputError(f"{what}: empty; expected a task description such as 'push the puck to the goal'")

    # ---- inference ----
    def _prompt(self, instructions: list[str]):
        from lapa_learning.vla.processor_vla import encode_prompts

        cfg = self.model.config
        if len(instructions) == 1:
            cached = self._prompt_cache
            if cached is not None and cached[0] == instructions[0]:
                return cached[1], cached[2]
        ids, mask = encode_prompts(self.tokenizer, cfg.prompt_template, instructions, cfg.language.max_text_tokens,
                                   cfg.language.truncate)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if len(instructions) == 1:
            self._prompt_cache = (instructions[0], ids, mask)
        return ids, mask

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def predict_chunk(self, images: np.ndarray, instructions: list[str]):
        """-> actions (B, T, A) float32 in dataset units, latent tokens (B, K) int64 or None. No checks, no queue."""
        from lapa_learning.vla.processor_vla import preprocess_images

        pixels = preprocess_images(images, self.image_size).to(self.device)
        ids, mask = self._prompt(instructions)
        with torch.inference_mode(), self._autocast():
            out = self.model.predict(pixels, ids, mask, latents=self.report_latents, actions=True)
        acts = self.model.head.decode(self.actions, out[self.model.head.key])  # (B, T, A)
        lat = out.get("latent_tokens")
        return acts.astype(np.float32), (lat.cpu().numpy().astype(np.int64) if lat is not None else None)

    @property
    def will_replan(self) -> bool:
        """True when the next `act` runs the model on its image; False while it hands out a planned chunk."""
        return self.will_replan_for(None)

    def will_replan_for(self, env) -> bool:
        """`will_replan` of environment `env` of `act_batch(..., envs=...)` (None: the queue of `act`)."""
        return not self._queues.get(env)

    def _enqueue(self, env, acts: np.ndarray, lat: np.ndarray | None) -> None:
        """acts (T, A), lat (K,) or None: the first `replan_every` actions of a plan, for `env`."""
        self._queues[env].extend(Action(values=acts[i].copy(), gripper=float(acts[i, -1]),
                                        latent_tokens=None if lat is None else lat.copy(), chunk_index=i)
                                 for i in range(self.replan_every))

    def act(self, image: np.ndarray | None, instruction: str) -> Action:
        """One action for this frame; re-plans when the chunk queue is empty or `replan_every` is reached.

        `image` may be None only while `will_replan` is False (the action comes from the current chunk)."""
        self._check_instruction(instruction)
        with self._lock:
            queue = self._queues[None]
            if image is not None or not queue:
                self._check_image(image)
            if not queue:
                acts, lat = self.predict_chunk(image[None], [instruction])
                self._enqueue(None, acts[0], None if lat is None else lat[0])
            return queue.popleft()

    def act_batch(self, images, instructions: list[str], envs: list | None = None) -> list[Action]:
        """One action per row.

        envs=None: stateless, the first action of a fresh plan for every row; images (B, H, W, 3) uint8.
        envs=[id, ...] (one distinct id per row): row b acts for environment envs[b] with its own chunk queue, like
        `act`; the rows that re-plan are planned together in one forward pass. images: a (B, H, W, 3) array or a
        list whose entries may be None for rows that do not re-plan (`will_replan_for(env)` is False)."""
        if not isinstance(instructions, (list, tuple)):
            raise InputError(f"instructions: expected a list of strings (one per image), got "
                             f"{type(instructions).__name__}")
        for i, ins in enumerate(instructions):
            self._check_instruction(ins, f"instructions[{i}]")
        if envs is None:
            return self._act_batch_stateless(images, instructions)
        check_envs(envs)
        n = len(instructions)
        if not isinstance(images, (list, tuple, np.ndarray)) or len(images) != n or len(envs) != n:
            got = len(images) if isinstance(images, (list, tuple, np.ndarray)) else type(images).__name__
            raise InputError(f"images, instructions, envs: expected one of each per row, got {got} images, "
                             f"{n} instructions and {len(envs)} envs")
        if len(set(envs)) != n:
            raise InputError(f"envs: expected distinct environment ids, got {list(envs)}")
        with self._lock:
            plan = [b for b in range(n) if not self._queues.get(envs[b])]
            for b in plan:
                self._check_image(images[b], f"images[{b}]")
            if plan:
                sizes = {images[b].shape for b in plan}
                if len(sizes) > 1:
                    raise InputError(f"images: the rows that re-plan must share one shape, got {sorted(sizes)}")
                acts, lat = self.predict_chunk(np.stack([images[b] for b in plan]), [instructions[b] for b in plan])
                for i, b in enumerate(plan):
                    self._enqueue(envs[b], acts[i], None if lat is None else lat[i])
            return [self._queues[env].popleft() for env in envs]

    def _act_batch_stateless(self, images, instructions) -> list[Action]:
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
            raise InputError(f"images: expected a numpy array (B, H, W, 3) uint8, got {got}")
        if images.shape[0] == 0:
            raise InputError("images: empty batch (B = 0)")
        self._check_image(images[0], "images[0]")
        if len(instructions) != images.shape[0]:
            raise InputError(f"instructions: expected a list of {images.shape[0]} strings (one per image), "
                             f"got {len(instructions)}")
        acts, lat = self.predict_chunk(images, list(instructions))
        return [Action(values=acts[b, 0].copy(), gripper=float(acts[b, 0, -1]),
                       latent_tokens=None if lat is None else lat[b].copy(), chunk_index=0)
                for b in range(images.shape[0])]

    def reset(self, env=None) -> None:
        """Forget planned chunks (call between episodes): of every queue, or only of environment `env`."""
        with self._lock:
            if env is None:
                self._queues.clear()
            else:
                self._queues.pop(env, None)

    def __repr__(self) -> str:
        return (f"Policy(name={self.name!r}, checkpoint={str(self.checkpoint_dir)!r}, device={self.device!r}, "
                f"actions={self.action_names}, chunk_size={self.chunk_size}, latent_tokens={self.num_latent_tokens})")
