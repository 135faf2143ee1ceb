"""The LAQ training loop (the `lapa laq train` verb is train.py): data, resumable batches, RNG state, train().

Episodes are split into training and held-out ones (never mixed). Every `eval_every` steps the held-out metrics
(see metrics.py) are logged to TensorBoard and saved beside the checkpoint. Checkpoints hold everything needed to
resume (optimizer, step, RNG states, quantizer usage). Several GPUs work through accelerate.Accelerator (on a
machine without GPUs it is one CPU process).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lapa_learning.errors import ConfigError, DatasetError
from lapa_learning.io import atomic_write_json
from lapa_learning.laq import checkpoint as ckpt
from lapa_learning.laq.configuration_laq import LAQTrainConfig
from lapa_learning.laq.metrics import evaluate
from lapa_learning.laq.modeling_laq import LAQ
from lapa_learning.laq.quantizer import replacement_due

# Fields that may differ between a run and its resumption (the schedule, not the model or the data).
RESUMABLE_CHANGES = {"max_steps", "eval_every", "eval_max_pairs", "save_every", "log_every", "keep_checkpoints",
                     "num_workers"}


# ----------------------------------------------------------------------------------------------------- data
def open_source(path, video_fps: float | None = None, camera: str | None = None):
    """An EpisodeDataset when `path` holds meta/info.json (reading `camera`, default its recorded one), else a
    VideoFolder (frame rate `video_fps`, default 30)."""
    from lapa_learning.data import open_video_source

    path = Path(path)
    is_dataset = (path / "meta" / "info.json").is_file()
    if video_fps is not None and not 0 < video_fps < math.inf:
        raise ConfigError(f"--video-fps must be positive, got {video_fps}")
    if video_fps is not None and not is_dataset:
        return open_video_source(path, camera=camera, fps=video_fps)
    return open_video_source(path, camera=camera)


def make_datasets(source, cfg: LAQTrainConfig, progress: bool = False):
    from lapa_learning.data import FramePairDataset, split_episodes

    ids = [ep.index for ep in source.episodes]
    if not ids:
        raise DatasetError(f"{getattr(source, 'root', source)} holds no episodes or videos")
    train_ids, val_ids = split_episodes(ids, cfg.val_fraction, cfg.seed)
    if cfg.offset_seconds is not None:
        from lapa_learning.data.video_folder import warn_other_rates

        warn_other_rates(source, f"--offset-seconds {cfg.offset_seconds:g}")
    kw = dict(offset_frames=cfg.offset_frames, offset_seconds=cfg.offset_seconds,
              image_size=cfg.model.image_size)
    try:
        train_set = FramePairDataset(source, augment=cfg.augment, episodes=train_ids, progress=progress, **kw)
        val_set = FramePairDataset(source, episodes=val_ids, progress=progress, **kw) if val_ids else None
    except ValueError as err:  # a bad offset
        raise ConfigError(f"frame offset: {err}") from err
    return train_set, val_set, train_ids, val_ids


def extra_pairs_dataset(extra_data, source, offset: int, cfg: LAQTrainConfig, video_fps: float | None,
                        progress: bool = False, camera: str | None = None):
    """Every frame pair of `extra_data` (all its episodes). With cfg.offset_seconds, its H in frames comes from its
    own fps (the same time step as the main data's, whatever each frame rate); with offset_frames it is the main
    data's H in frames, which needs the same fps (else it would be another time step)."""
    from lapa_learning.data import FramePairDataset

    extra = open_source(extra_data, video_fps, camera)
    if not extra.episodes:
        raise DatasetError(f"--extra-data {extra_data}: holds no episodes or videos")
    if cfg.offset_seconds is not None:
        from lapa_learning.data.video_folder import warn_other_rates

        warn_other_rates(extra, f"--offset-seconds {cfg.offset_seconds:g}")
        kw = dict(offset_seconds=cfg.offset_seconds)
    else:
        if abs(float(extra.fps) - float(source.fps)) > 1e-6:
            raise ConfigError(f"--extra-data {extra_data}: {extra.fps} fps, but --data runs at {source.fps} fps; the "
                              f"offset H = {offset} frames would mean another time step (give H with "
                              f"--offset-seconds to convert it with each source's fps)")
        kw = dict(offset_frames=offset)
    try:
        return FramePairDataset(extra, image_size=cfg.model.image_size, augment=cfg.augment, progress=progress, **kw)
    except ValueError as err:  # a bad offset
        raise ConfigError(f"--extra-data {extra_data}: frame offset: {err}") from err


class StepBatches(torch.utils.data.Sampler):
    """Batches of indices for steps start_step, start_step+1, ...: epoch e is the permutation seeded by
    (seed, e), cut into floor(n / B) batches (the rest dropped). A batch depends only on the step number, so a
    resumed run sees exactly the batches the interrupted one would have. Each process takes batch[rank::world]."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start_step = n, min(batch_size, n), seed, start_step
        self.rank, self.world = rank, world
        self.per_epoch = max(1, n // self.batch)

    def batch_for_step(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return perm[i * self.batch:(i + 1) * self.batch][self.rank::self.world]

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch_for_step(step).tolist()
            step += 1

    def __len__(self) -> int:  # infinite in practice; DataLoader only needs a number
        return 2 ** 31


def _collate(items):
    return {"frames": torch.stack([it["frames"] for it in items]),
            "episode": torch.tensor([it["episode"] for it in items]),
            "t": torch.tensor([it["t"] for it in items])}


def eval_loader(val_set, cfg: LAQTrainConfig):
    n = len(val_set)
    keep = np.linspace(0, n - 1, num=min(n, cfg.eval_max_pairs)).round().astype(int)
    subset = torch.utils.data.Subset(val_set, np.unique(keep).tolist())
    # Its own generator: creating an iterator must not draw from the global RNG (resumed runs stay identical).
    return torch.utils.data.DataLoader(subset, batch_size=cfg.batch_size, shuffle=False, collate_fn=_collate,
                                       generator=torch.Generator().manual_seed(cfg.seed))


# ------------------------------------------------------------------------------------------------ RNG state
def rng_state() -> dict:
    """torch, python and numpy global RNG states as tensors (so torch.load(weights_only=True) can read them)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"torch": torch.get_rng_state(),
             "python": torch.tensor([version, *internal], dtype=torch.int64),
             "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
             "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_rest": torch.tensor([pos, has_gauss, cached], dtype=torch.float64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    ints = state["python"].tolist()
    gauss = float(state["python_gauss"].item())
    random.setstate((ints[0], tuple(ints[1:]), None if math.isnan(gauss) else gauss))
    pos, has_gauss, cached = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------- train
def _check_resume_config(saved: LAQTrainConfig, wanted: LAQTrainConfig, step_dir: Path) -> LAQTrainConfig:
    a, b = dataclasses.asdict(saved), dataclasses.asdict(wanted)
    diffs = [f"model.{k}" for k in a["model"] if a["model"][k] != b["model"][k]]
    diffs += [k for k in a if k != "model" and a[k] != b[k] and k not in RESUMABLE_CHANGES]
    if diffs:
        raise ConfigError(f"cannot resume {step_dir} with a different config: {diffs} differ "
                          f"(use another --out, or --fresh after deleting the old run)")
    return wanted


def _holding_run_lock(fn):
    """Run `fn(cfg, data, out, ...)` holding the lock of the run directory `out` (cli_args.lock_run_dir): a second
    process training into the same directory is refused instead of overwriting this one's checkpoints."""
    @functools.wraps(fn)
    def wrapper(cfg, data, out, *args, **kwargs):
        from lapa_learning.cli_args import lock_run_dir, unlock_run_dir

        took = lock_run_dir(out)
        try:
            return fn(cfg, data, out, *args, **kwargs)
        finally:
            if took:
                unlock_run_dir(out)  # a run refused before writing anything leaves no empty folder behind

    return wrapper


@_holding_run_lock
def train(cfg: LAQTrainConfig, data, out, max_minutes: float | None = None, device: str = "auto",
          mixed_precision: str = "no", progress: bool = True, resume: str = "auto",
          config_given: bool = True, video_fps: float | None = None, extra_data=None, extra_repeat: int = 1,
          camera: str | None = None, _interrupt_at: int | None = None) -> dict:
    """Train (or resume) an LAQ run in `out`; returns a summary dict with the final held-out metrics.

    extra_data: a second episode dataset (or video folder) whose frame pairs are added to the training pairs,
    `extra_repeat` times (e.g. a small labelled robot set next to videos of another embodiment); held-out pairs
    come from `data` only, so the held-out metrics stay comparable.

    camera: the camera read from `data` and `extra_data` when they are episode datasets with several (a video
    key or its last part); None reads each one's recorded camera. A resumed run must read the same cameras.

    resume: "auto" (resume when `out` holds a checkpoint), "require", or "never" (fail if it does).
    config_given: False means the caller did not choose a config, so a resumed run takes the saved one.
    """
    from accelerate import Accelerator
    from tqdm import tqdm

    out = Path(out)
    started = time.time()
    if extra_repeat < 1:
        raise ConfigError(f"--extra-repeat must be at least 1, got {extra_repeat}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    main = accelerator.is_main_process

    # ---- resume or start
    state = None
    if ckpt.has_checkpoint(out):
        if resume == "never":
            raise ConfigError(f"{out} already holds a checkpoint; drop --fresh to resume it, or use another --out")
        step_dir = ckpt.resolve_checkpoint(out)
        saved_cfg = ckpt.load_train_config_from_checkpoint(step_dir)
        if config_given:
            cfg = _check_resume_config(saved_cfg, cfg, step_dir)
        else:  # keep the saved run's config, but let the schedule (e.g. max_steps) come from the caller
            cfg = dataclasses.replace(saved_cfg, **{k: getattr(cfg, k) for k in ("max_steps",)})
        state = ckpt.load_training_state(step_dir)
        saved = ckpt.read_config(step_dir)
        saved_data = saved.get("dataset")
        if main and saved_data and Path(saved_data).resolve() != Path(data).resolve():
            warnings.warn(f"--data {data}: resuming the run in {out}, which was trained on {saved_data}")
        was = (saved.get("extra_dataset"), saved.get("extra_repeat", 0) if saved.get("extra_dataset") else 0)
        now = (str(Path(extra_data).resolve()) if extra_data else None, extra_repeat if extra_data else 0)
        if "dataset" in saved and was != now:
            raise ConfigError(f"cannot resume {step_dir} with other extra training data: it was trained with "
                              f"--extra-data {was[0]} x{was[1]}, asked for {now[0]} x{now[1]} (use another --out)")
    elif resume == "require":
        raise ConfigError(f"--resume: {out} holds no checkpoint ({ckpt.LATEST} not found)")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    source = open_source(data, video_fps, camera)
    if state is not None and "camera" in saved and saved["camera"] != source.video_key:
        reads = f"--camera {camera} reads" if camera is not None else "the dataset's recorded camera is"
        raise ConfigError(f"cannot resume {step_dir} with another camera: it was trained on camera "
                          f"{saved.get('camera')}, {reads} {source.video_key} (use another --out)")
    if extra_data is not None and Path(extra_data).resolve() == Path(data).resolve():
        raise ConfigError(f"--extra-data {extra_data} is --data itself: its held-out episodes would be trained on "
                          f"(and every pair counted twice); give another dataset, or none")
    train_set, val_set, train_ids, val_ids = make_datasets(source, cfg, progress=progress and main)
    offset = train_set.offset
    if state is not None and "offset" in saved and (int(saved["offset"]), float(saved.get("fps", source.fps))) \
            != (offset, float(source.fps)):  # e.g. another --video-fps with --offset-seconds: other pairs
        raise ConfigError(f"cannot resume {step_dir} with another frame offset: it was trained on pairs (x_t, "
                          f"x_t+{saved['offset']}) at {float(saved.get('fps', source.fps)):g} fps, now (x_t, "
                          f"x_t+{offset}) at {float(source.fps):g} fps (give the same --video-fps, or use another "
                          f"--out)")
    extra_pairs, extra_offset, extra_fps = 0, None, None
    if extra_data is not None:
        extra_set = extra_pairs_dataset(extra_data, source, offset, cfg, video_fps, progress and main, camera)
        extra_pairs = len(extra_set) * extra_repeat
        extra_offset, extra_fps = extra_set.offset, float(extra_set.source.fps)  # H per source with offset_seconds
        train_set = torch.utils.data.ConcatDataset([train_set] + [extra_set] * extra_repeat)

    model = LAQ(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                 weight_decay=cfg.weight_decay)
    step, train_seconds = 0, 0.0
    if state is not None:
        weights, _ = ckpt.load_laq(step_dir)
        model.load_state_dict(weights.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        step, train_seconds = int(state["step"]), float(state["train_seconds"])
        model.quantizer.usage_counts.copy_(state["usage_counts"])
        model.quantizer.usage_batches.copy_(state["usage_batches"])
        set_rng_state(state["rng"])
        if main:
            print(f"resuming {step_dir} at step {step}")
    model, optimizer = accelerator.prepare(model, optimizer)
    core: LAQ = accelerator.unwrap_model(model)
    model.train()

    sampler = StepBatches(len(train_set), cfg.batch_size, cfg.seed, start_step=step,
                          rank=accelerator.process_index, world=accelerator.num_processes)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         collate_fn=_collate, persistent_workers=cfg.num_workers > 0,
                                         generator=torch.Generator().manual_seed(cfg.seed + step))
    val_loader = eval_loader(val_set, cfg) if val_set is not None else None
    extra = {"offset": offset, "fps": float(source.fps), "dataset": str(Path(data).resolve()),
             "camera": source.video_key,
             "train_episodes": len(train_ids), "val_episodes": len(val_ids), "train_pairs": len(train_set),
             "num_params": core.num_params(),
             **({"extra_dataset": str(Path(extra_data).resolve()), "extra_repeat": extra_repeat,
                 "extra_pairs": extra_pairs, "extra_offset": extra_offset, "extra_fps": extra_fps}
                if extra_data is not None else {})}

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        out.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out / "tb"), purge_step=step if step else None)
        other_h = f", H={extra_offset} frames at its {extra_fps:g} fps" if extra_pairs and extra_offset != offset \
            else ""
        print(f"LAQ {core.num_params() / 1e6:.2f}M params, H={offset} frames ({offset / source.fps:.3f} s), "
              f"{len(train_set)} training pairs from {len(train_ids)} episodes"
              f"{f' ({extra_pairs} of them from {extra_data}, x{extra_repeat}' if extra_pairs else ''}"
              f"{other_h}{')' if extra_pairs else ''}, "
              f"{len(val_set) if val_set else 0} held-out pairs from {len(val_ids)} episodes, "
              f"device {accelerator.device}")

    def training_state() -> dict:
        return {"optimizer": optimizer.state_dict(), "step": step,
                "train_seconds": train_seconds + (time.time() - started),
                "usage_counts": core.quantizer.usage_counts.cpu(),
                "usage_batches": core.quantizer.usage_batches.cpu(), "rng": rng_state()}

    last_eval: dict = {}

    def do_eval() -> dict:
        if val_loader is None or not main:
            return {}
        metrics = evaluate(core, val_loader, accelerator.device)
        metrics["step"] = step
        for key in ("mse", "psnr", "psnr_copy_baseline", "psnr_changed", "psnr_changed_copy_baseline",
                    "codes_used_fraction"):
            writer.add_scalar(f"val/{key}", metrics[key], step)
        for k, p in enumerate(metrics["perplexity_per_position"]):
            writer.add_scalar(f"val/perplexity_token{k}", p, step)
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({k: v for k, v in metrics.items() if k != "code_counts"}) + "\n")
        return metrics

    def save(metrics: dict | None):
        accelerator.wait_for_everyone()
        bad = next((name for name, p in core.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:  # a diverged run is never saved (nor resumed from); the last good checkpoint stays
            raise ConfigError(f"training diverged by step {step}: weight {bad} is not finite, so no checkpoint was "
                              f"saved; lower the learning rate (lr {cfg.lr:g}) or check --set values")
        if main:
            ckpt.save_checkpoint(out, step, core, cfg, extra, state=training_state(), metrics=metrics or None,
                                 keep=cfg.keep_checkpoints)

    bar = tqdm(total=cfg.max_steps, initial=step, desc="laq train", unit="step", disable=not (progress and main),
               dynamic_ncols=True)
    deadline = None if max_minutes is None else started + 60 * max_minutes
    stop_reason = "max_steps"
    tick, tick_step = time.time(), step
    try:
        for batch in loader:
            if step >= cfg.max_steps:
                break
            if deadline is not None and time.time() >= deadline:
                stop_reason = "max_minutes"
                break
            if _interrupt_at is not None and step == _interrupt_at:  # tests: a crash between checkpoints
                raise RuntimeError(f"simulated crash at step {step}")
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            frames = batch["frames"].to(accelerator.device, non_blocking=True)
            with accelerator.autocast():
                loss = model(frames)["loss"]
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            replaced = core.quantizer.replace_dead_codes() if replacement_due(step) else None
            bar.update(1)
            if main and step % cfg.log_every == 0:
                loss_v = loss.item()
                now = time.time()
                writer.add_scalar("train/loss", loss_v, step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                writer.add_scalar("train/steps_per_sec", (step - tick_step) / max(now - tick, 1e-9), step)
                tick, tick_step = now, step
                bar.set_postfix(loss=f"{loss_v:.4f}")
                if not math.isfinite(loss_v):
                    raise ConfigError(f"training loss became {loss_v} at step {step}: the run diverged; lower the "
                                      f"learning rate (--lr, now {cfg.lr:g})")
            if main and replaced is not None:
                writer.add_scalar("train/codes_replaced", replaced, step)
            metrics = None
            if step % cfg.eval_every == 0 and step < cfg.max_steps:
                last_eval = metrics = do_eval()
            if step % cfg.save_every == 0 and step < cfg.max_steps:
                save(metrics)
    except KeyboardInterrupt:
        bar.close()
        if main:
            print(f"\ninterrupted at step {step}: saving a checkpoint to resume from")
        save(None)
        raise
    bar.close()
    final_metrics = do_eval()
    last_eval = final_metrics or last_eval
    save(final_metrics)
    summary = {"is_main": main, "step": step, "stop_reason": stop_reason, "offset": offset,
               "train_minutes": round((train_seconds + time.time() - started) / 60, 3),
               "checkpoint": str(ckpt.resolve_checkpoint(out)) if main else None, "eval": last_eval}
    if main:
        atomic_write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "is_main"})
        writer.close()
    return summary
