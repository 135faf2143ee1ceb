"""The training loop shared by `lapa vla pretrain` and `lapa vla finetune`.

AdamW with linear warm-up and cosine decay, gradient clipping, held-out loss / token accuracy every
`eval_every` steps, TensorBoard scalars, tqdm progress, atomic checkpoints (`<run>/checkpoint/`, the latest, which
`Policy.load(<run>)` accepts) with the optimizer state for `--resume`, and a step or wall-clock budget.
Devices and precision come from accelerate: CPU (fp32), one or several GPUs (`accelerate launch`, bf16).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lapa_learning.errors import CheckpointError, ConfigError


@dataclass
class TrainConfig:
    max_steps: int = 2000  # optimizer steps (the run stops at whichever of max_steps / max_minutes comes first)
    max_minutes: float | None = None  # wall-clock budget, counted across resumes
    batch_size: int = 32  # per process
    lr: float = 3e-4  # peak learning rate (LAPA on a 7B LM: 2e-5; tiny from scratch: 3e-4 .. 1e-3)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_samples: int = 1024  # held-out samples per evaluation (a fixed, evenly spread subset)
    save_every: int = 500
    log_every: int = 10
    augment: bool = True  # random crop + colour jitter (the reference finetuning recipe)
    seed: int = 0
    val_fraction: float = 0.1  # episodes held out
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16"

    def __post_init__(self):
        if self.max_steps < 1:
            raise ConfigError(f"--max-steps {self.max_steps}: expected >= 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"--max-minutes {self.max_minutes}: expected > 0")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: expected >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr {self.lr}: expected > 0")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"--weight-decay {self.weight_decay}: expected >= 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps {self.warmup_steps}: expected >= 0 (0: no warm-up)")
        if not 0 <= self.seed < 2 ** 31:
            raise ConfigError(f"--seed {self.seed}: expected an integer in [0, 2^31)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction {self.val_fraction}: expected in [0, 1)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"--precision {self.precision!r}: expected auto, fp32 or bf16")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device {self.device!r}: expected auto, cpu or cuda")
        for name in ("eval_every", "eval_samples", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected >= 1")


# ---- --resume: what a resumed run keeps ----------------------------------------------------------------------

STATE_KEYS = ("optimizer", "scheduler", "batcher", "torch_rng", "step")  # of training_state.pt, as train() reads it
KEPT_ON_RESUME = (("--lr", "lr"), ("--weight-decay", "weight_decay"),  # its optimizer state holds these
                  ("--seed", "seed"), ("--val-fraction", "val_fraction"))  # these chose its held-out episodes


def resume_config(args, cfg: TrainConfig, run_dir: Path, state, model_config, record: dict | None) -> TrainConfig:
    """--resume continues the run in run_dir with its model, its optimizer state and its held-out episodes: a flag
    asking for others is a ConfigError naming the run's value (as cli_args.resolve_head_flags), one not given takes
    the run's value. Returns `cfg` with the run's values; --max-steps may not go below the step reached."""
    path = run_dir / "checkpoint" / "training_state.pt"
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise CheckpointError(f"{path}: no {missing[0]!r} entry (a training state holds {', '.join(STATE_KEYS)}); "
                              f"cannot resume from it")
    run, record = f"the run in --out {run_dir}", record or {}
    init = [str(Path(p).resolve()) if p else None for p in (args.init, record.get("init"))]
    vision, lang = model_config.vision, model_config.language
    for flag, given, have in (("--config", args.config, model_config.name), ("--init", *init),
                              ("--vision-path", args.vision_path, vision.path), ("--lm-path", args.lm_path, lang.path),
                              ("--lora-rank", args.lora_rank, lang.lora_rank)):
        if given is not None and given != have:
            raise ConfigError(f"{flag} {given} with --resume: {run} was started with {flag} "
                              f"{'(none)' if have is None else have}; a resumed run keeps its model (drop {flag}, "
                              f"or start another run in a new --out)")
    trainability = (("--train-vision", args.train_vision and vision.frozen, "a frozen vision tower"),
                    ("--freeze-vision", args.freeze_vision and not vision.frozen, "a trained vision tower"),
                    ("--freeze-lm", args.freeze_lm and lang.trainable, "a trained language model"))
    for flag, conflict, what in trainability:
        if conflict:
            raise ConfigError(f"{flag} with --resume: {run} has {what}, and its optimizer state holds the parameters "
                              f"it trains (drop {flag}, or start another run in a new --out)")
    saved, kept = record.get("train_config") or {}, {}
    for flag, name in KEPT_ON_RESUME:
        given, have = getattr(cfg, name), saved.get(name)
        if have is None or given == have:
            continue
        if getattr(args, name) is not None:  # given on the command line (cli_args: None otherwise)
            raise ConfigError(f"{flag} {given} with --resume: {run} was trained with {flag} {have}; a resumed run "
                              f"keeps its learning rate and weight decay (its optimizer state holds them) and its "
                              f"held-out episodes (--seed, --val-fraction) (drop {flag}, or start another run in a "
                              f"new --out)")
        kept[name] = have
    step = int(state["step"])
    if cfg.max_steps < step:
        raise ConfigError(f"--max-steps {cfg.max_steps} with --resume: {run} is at step {step} already; give a "
                          f"--max-steps of at least {step}")
    return replace(cfg, **kept)


def check_resume_data(run_dir: Path, flag: str, saved, datasets: list[dict]) -> None:
    """A resumed run goes on with the datasets its record lists (`saved`; its batch order indexes their samples):
    other paths, another order, another camera or changed contents are a ConfigError naming what differs."""
    if saved is None:  # a record from before datasets were recorded
        return
    if not (isinstance(saved, list) and all(isinstance(d, dict) and isinstance(d.get("root"), str) for d in saved)):
        raise CheckpointError(f"{run_dir / 'checkpoint' / 'train_record.json'}: {flag}'s datasets: expected a list "
                              f"of {{'root': ...}} objects, got {saved!r:.200}")
    now = json.loads(json.dumps(datasets, default=str))  # as the record holds them
    if [Path(d["root"]).resolve() for d in saved] != [Path(d["root"]).resolve() for d in now]:
        listed = [" ".join(str(d["root"]) for d in ds) or "(none)" for ds in (now, saved)]
        raise ConfigError(f"{flag} {listed[0]} with --resume: the run in --out {run_dir} was trained with {flag} "
                          f"{listed[1]}; resume it with the same datasets in the same order, or start another run in "
                          f"a new --out")
    for was, d in zip(saved, now):
        for key in sorted((set(was) | set(d)) - {"root", "labels"}):
            if was.get(key) != d.get(key):
                raise ConfigError(f"{flag} {d['root']} with --resume: its {key} is {d.get(key)}, but the run in --out "
                                  f"{run_dir} was trained on it with {key} {was.get(key)} (another --camera, or the "
                                  f"dataset changed since); resume it on the data it was trained on, or start "
                                  f"another run in a new --out")


def check_resume_actions(run_dir: Path, processor, names: list) -> None:
    """The actions of --data must be those the resumed run learns (its action statistics and head)."""
    if processor is not None and list(processor.names) != list(names):
        raise ConfigError(f"--data actions {list(names)} with --resume: the run in --out {run_dir} learns the "
                          f"{len(processor.names)} actions {list(processor.names)}; resume it on data with those "
                          f"actions, or start another run in a new --out")


# ---- the loop --------------------------------------------------------------------------------------------------

def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine down to 10%
    return f


def _make_optimizer(model, cfg: TrainConfig):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    if not decay and not no_decay:
        raise ConfigError("nothing to train: every parameter is frozen (check --freeze-lm / --freeze-vision)")
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


def train(run_dir: Path, model, tokenizer, action_processor, train_set, val_set, head, cfg: TrainConfig,
          record: dict, resume_state: dict | None = None, progress: bool = True) -> dict:
    """Train `model` on `train_set` with the targets of `head` (model.latent or model.head, vla/heads.py).
    Returns the final train record."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from lapa_learning.vla.checkpoint import save_checkpoint
    from lapa_learning.vla.data import Batcher, collate, eval_indices

    if len(train_set) == 0:
        raise ConfigError("no training samples (are all episodes held out, or the labels empty?)")
    use_cuda = cfg.device in ("auto", "cuda") and torch.cuda.is_available()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    bf16 = use_cuda and cfg.precision in ("auto", "bf16")
    if cfg.precision == "bf16" and not use_cuda:
        print("note: bf16 is about 2x slower than fp32 on CPU here; training in bf16 autocast anyway", file=sys.stderr)
        bf16 = True
    acc = Accelerator(cpu=not use_cuda, mixed_precision="bf16" if bf16 else "no",
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = acc.is_main_process
    torch.manual_seed(cfg.seed + acc.process_index)

    model.train()
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, cfg.max_steps))
    batcher = Batcher(train_set, cfg.batch_size, seed=cfg.seed * 1000 + acc.process_index)
    step, elapsed_before, history = 0, 0.0, []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        batcher.load_state_dict(resume_state["batcher"])
        torch.set_rng_state(resume_state["torch_rng"])
        step = int(resume_state["step"])
        elapsed_before = float(resume_state.get("elapsed_s", 0.0))
        history = list(resume_state.get("history", []))
    model, optimizer = acc.prepare(model, optimizer)
    device = acc.device
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 7919 + acc.process_index)
    if resume_state is not None and "augment_rng" in resume_state:
        gen.set_state(resume_state["augment_rng"])

    writer = SummaryWriter(str(run_dir / "tensorboard")) if main else None
    record = dict(record)
    kind = head.name
    record.update(train_config=asdict(cfg), kind=kind, device=str(device), precision="bf16" if bf16 else "fp32",
                  num_processes=acc.num_processes,
                  num_parameters=acc.unwrap_model(model).num_parameters(),
                  trainable_parameters=acc.unwrap_model(model).num_parameters(trainable_only=True),
                  train_samples=len(train_set), val_samples=len(val_set))
    if resume_state is not None:
        record["resumed_at_step"] = step
    eval_set = val_set if len(val_set) else train_set
    record["eval_split"] = "val" if len(val_set) else "train (no held-out episodes)"

    def evaluate() -> dict:
        """Held-out loss and token accuracy; for actions also the L1 error in dataset units of the decoded
        (teacher-forced) prediction, per dim and averaged, over valid chunk steps."""
        model.eval()
        tot, n, correct = 0.0, 0, 0.0
        abs_err, n_act = 0.0, 0
        with torch.no_grad():
            for idx in eval_indices(len(eval_set), cfg.eval_samples, cfg.batch_size):
                batch = collate(eval_set, idx, head, tokenizer, acc.unwrap_model(model).config, action_processor,
                                augment=False, device=device)
                with acc.autocast():
                    loss, m, pred = model(batch, return_pred=True)
                w = m.get("tokens", len(idx))
                tot += m["loss"] * w
                n += w
                correct += m.get(head.token_metric, 0.0) * w
                if head.decodes_actions:
                    dec = head.decode(action_processor, pred)  # (B, T, A) dataset units
                    valid = eval_set.action_mask[idx]  # (B, T)
                    abs_err = abs_err + (np.abs(dec - eval_set.actions[idx]) * valid[..., None]).sum((0, 1))
                    n_act += int(valid.sum())
        model.train()
        out = {"val_loss": tot / max(n, 1), "step": step}
        if head.token_metric:
            out[head.token_metric] = correct / max(n, 1)
        if head.decodes_actions:
            per_dim = abs_err / max(n_act, 1)
            out["action_l1"] = float(np.mean(per_dim))
            out["action_l1_per_dim"] = [round(float(x), 4) for x in per_dim]
        return out

    def save(final: bool = False) -> None:
        acc.wait_for_everyone()
        if not main:
            return
        rec = dict(record, steps=step, metrics=history[-1] if history else {}, history=history,
                   time_s=round(elapsed_before + time.time() - t0, 1), finished=final,
                   saved_at=time.strftime("%Y-%m-%d %H:%M:%S"))
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "batcher": batcher.state_dict(), "torch_rng": torch.get_rng_state(), "augment_rng": gen.get_state(),
                 "step": step,
                 "elapsed_s": elapsed_before + time.time() - t0, "history": history}
        save_checkpoint(run_dir / "checkpoint", acc.unwrap_model(model), tokenizer, action_processor, rec, state)
        (run_dir / "train_record.json").write_text(json.dumps(rec, indent=2, default=str))

    t0 = time.time()
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and main), desc=f"vla {kind}", unit="step",
               dynamic_ncols=True)
    stop_reason = "max_steps"
    last_saved = step
    try:
        while step < cfg.max_steps:
            if budget_s is not None and elapsed_before + time.time() - t0 >= budget_s:
                stop_reason = "max_minutes"
                break
            batch = collate(train_set, batcher.next_indices(), head, tokenizer, acc.unwrap_model(model).config,
                            action_processor, augment=cfg.augment, device=device, generator=gen)
            with acc.autocast():
                loss, metrics = model(batch)
            acc.backward(loss)
            if cfg.grad_clip:
                acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if writer is not None and step % cfg.log_every == 0:
                for k, v in metrics.items():
                    if k != "tokens":
                        writer.add_scalar(f"train/{k}", v, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                ev = evaluate()
                history.append(ev)
                if writer is not None:
                    for k, v in ev.items():
                        if isinstance(v, float):
                            writer.add_scalar(f"val/{k}", v, step)
                bar.set_postfix({k: f"{v:.3f}" for k, v in ev.items() if isinstance(v, float)})
            if step % cfg.save_every == 0:
                save()
                last_saved = step
    except KeyboardInterrupt:
        if step > last_saved:
            save()  # keep the progress, then stop
        bar.close()
        raise
    bar.close()
    if not history or history[-1]["step"] != step:
        history.append(evaluate())
    record["stop_reason"] = stop_reason
    save(final=True)
    if writer is not None:
        writer.close()
    return dict(record, steps=step, metrics=history[-1], history=history)


def corpus_for_tokenizer(template: str, *instruction_lists) -> list[str]:
    """Prompts of the datasets' instructions plus every Meta-World phrasing (so later finetuning prompts are
    covered; the byte-level BPE encodes any other text too, only less compactly)."""
    from lapa_learning.vla.processor_vla import prompt_corpus
    from lapa_learning.vla.testing import tiny_corpus

    texts = [t for lst in instruction_lists for t in lst if t]
    return prompt_corpus(template, texts + tiny_corpus())


def describe(model) -> str:
    n = model.num_parameters()
    t = model.num_parameters(trainable_only=True)
    return f"{model.config.name}: {n / 1e6:.2f}M parameters, {t / 1e6:.2f}M trained"


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
