"""One checkpoint layout for every stage (pretrained, finetuned, random test checkpoints):

    <dir>/config.json          {"format": "lapa_vla", "format_version", "vla": VLAConfig, "hf_configs": {vision,
                               language} (full transformers configs, so no backbone directory is needed to load),
                               "vocab_size"}
    <dir>/model.safetensors    all weights (vision tower, projector, LM, heads; LoRA adapters if any)
    <dir>/tokenizer.json, tokenizer_config.json, ...   the tokenizer (save_pretrained)
    <dir>/action_stats.json    action names, mean/std/min/max, 256-bin quantile edges, gripper rule (action head)
    <dir>/train_record.json    command, datasets, steps, metrics, time
    <dir>/training_state.pt    optimizer/scheduler/step/RNG, for `--resume` (training runs only)

A checkpoint is written into a temporary sibling directory, fsynced and swapped in with renames
(lapa_learning.io), so a reader never sees a half-written checkpoint.  Every load problem raises CheckpointError
naming the file and what is wrong.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from lapa_learning.errors import CheckpointError, ConfigError
from lapa_learning.io import atomic_path, interrupted_replacement

FORMAT = "lapa_vla"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "action_stats.json"
RECORD_FILE = "train_record.json"
STATE_FILE = "training_state.pt"


def resolve_checkpoint_dir(path) -> Path:
    """A checkpoint dir, or a training run dir holding `checkpoint/` (the latest) -> the checkpoint dir. Where a
    save killed mid-way left the last complete checkpoint aside (io.interrupted_replacement), that one, read where
    it is: moving it back is for the run's own writer (its --resume), which holds the run's lock."""
    p = Path(path).expanduser()
    for candidate in (p, p / "checkpoint"):
        aside = interrupted_replacement(candidate)
        if aside is not None:
            warnings.warn(f"{candidate} is missing after an interrupted save; loading the last complete checkpoint "
                          f"from {aside} (a --resume of the run puts it back)", stacklevel=2)
            return aside
    if not p.exists():
        raise CheckpointError(f"checkpoint {p}: no such directory")
    if not p.is_dir():
        raise CheckpointError(f"checkpoint {p}: not a directory")
    if not (p / CONFIG_FILE).exists() and (p / "checkpoint" / CONFIG_FILE).exists():
        return p / "checkpoint"
    if not (p / CONFIG_FILE).exists() and not (p / WEIGHTS_FILE).exists():  # (a damaged checkpoint: load says so)
        if (p / "latest.json").is_file() and any(p.glob("step_*")):
            raise CheckpointError(f"checkpoint {p}: an LAQ run (stage 1, `lapa laq train`), not a VLA; a VLA "
                                  f"checkpoint is the --out of `lapa vla finetune` (a policy) or `lapa vla pretrain`")
        raise CheckpointError(f"checkpoint {p}: holds neither {CONFIG_FILE} nor checkpoint/{CONFIG_FILE}; expected "
                              f"the --out of `lapa vla finetune` (a policy) or `lapa vla pretrain`, or its checkpoint/")
    return p


# What a config.json of another kind of run is, for the error when one is given where a VLA is expected.
OTHER_FORMATS = {"lapa-laq": "an LAQ checkpoint (stage 1, `lapa laq train`)",
                 "lapa_idm": "VPT's inverse-dynamics model (`lapa vpt train`)"}


def save_checkpoint(out_dir, model, tokenizer, action_processor=None, record: dict | None = None,
                    training_state: dict | None = None) -> Path:
    """Write a complete checkpoint atomically (staging dir + fsync + rename). Returns the directory."""
    from safetensors.torch import save_model

    out = Path(out_dir)
    with atomic_path(out, directory=True) as stage:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "vla": model.config.to_dict(),
                "hf_configs": {"vision": model.vision.hf_config, "language": model.lm.config.to_dict()},
                "vocab_size": int(model.lm.get_input_embeddings().num_embeddings)}
        (stage / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        save_model(model, str(stage / WEIGHTS_FILE))  # save_model handles tied/shared tensors
        tokenizer.save_pretrained(str(stage))
        if action_processor is not None:
            (stage / STATS_FILE).write_text(json.dumps(action_processor.to_dict()))
        if record is not None:
            (stage / RECORD_FILE).write_text(json.dumps(record, indent=2, default=_json_default))
        if training_state is not None:
            torch.save(training_state, stage / STATE_FILE)
    return out


def _json_default(o):
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, torch.dtype):
        return str(o).replace("torch.", "")
    return str(o)


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def training_cameras(record: dict | None) -> set[str]:
    """The video keys (e.g. observation.images.front) a run's training data was read from, as its record says."""
    return {d["camera"] for d in (record or {}).get("datasets") or [] if d.get("camera")}


def init_summary(record: dict | None) -> dict | None:
    """What a run started with --init keeps of its checkpoint's training record."""
    return {k: record.get(k) for k in ("command", "stage", "targets", "steps", "metrics")} if record else None


def carried_on_resume(record: dict | None) -> dict:
    """What a resumed run keeps of the record of the run it continues: what that run started from (its --init, the
    init's record summary, the LAQ of stage 2 that LatentPreview reads)."""
    return {k: record[k] for k in ("init", "init_record", "laq") if record and k in record}


def load_checkpoint(path, device: str | torch.device = "cpu"):
    """-> (model (eval mode, on device), tokenizer, ActionProcessor | None, meta dict, record dict | None)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    from transformers import AutoTokenizer

    from lapa_learning.vla.configuration_vla import VLAConfig
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import ActionProcessor

    ckpt = resolve_checkpoint_dir(path)
    cfg_path = ckpt / CONFIG_FILE
    meta = read_json(cfg_path, "the model configuration")
    if meta.get("format") != FORMAT:
        kind = OTHER_FORMATS.get(meta.get("format"), f"format {meta.get('format')!r}")
        raise CheckpointError(f"{cfg_path}: not a LAPA VLA checkpoint ({FORMAT!r}) but {kind}; a VLA checkpoint is the "
                              f"--out of `lapa vla finetune` (a policy) or `lapa vla pretrain`")
    if not isinstance(meta.get("format_version", 0), int):
        raise CheckpointError(f"{cfg_path}: format_version {meta.get('format_version')!r}: expected an integer")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format_version {meta.get('format_version')} is newer than this code "
                              f"({FORMAT_VERSION}); update lapa_ros")
    try:
        vla = meta["vla"]
        if isinstance(vla, dict) and isinstance(vla.get("language"), dict) and "truncate" not in vla["language"]:
            vla = {**vla, "language": {**vla["language"], "truncate": "start"}}  # how the older ones were trained
        config = VLAConfig.from_dict(vla, where=f"{cfg_path}: vla")
        hf_configs = meta["hf_configs"]
        vocab = int(meta["vocab_size"])
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{cfg_path}: missing or bad entry {err}") from None

    weights = ckpt / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing (the model weights)")
    try:
        model = VLAModel(config, vocab_size=vocab, hf_configs=hf_configs, load_weights=False)
    except ConfigError as err:
        raise CheckpointError(f"{cfg_path}: cannot rebuild the model ({err})") from None
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device="cpu")
    except SafetensorError as err:
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({err})") from None
    except RuntimeError as err:  # shape mismatch
        first = str(err).strip().splitlines()
        raise CheckpointError(f"{weights}: does not match {cfg_path} ({' '.join(first[:3])[:400]})") from None
    except OSError as err:
        raise CheckpointError(f"{weights}: cannot read ({err})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not match {cfg_path}: missing {sorted(missing)[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, unexpected {sorted(unexpected)[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")

    if not (ckpt / "tokenizer.json").is_file() and not (ckpt / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{ckpt / 'tokenizer.json'}: missing (the tokenizer)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    except Exception as err:  # noqa: BLE001 - tokenizers raise many kinds
        raise CheckpointError(f"{ckpt}: cannot load the tokenizer ({type(err).__name__}: {err})") from None
    if len(tokenizer) > vocab:
        raise CheckpointError(f"{ckpt}: the tokenizer has {len(tokenizer)} tokens but the model embeds {vocab}")

    actions = None
    if config.action is not None:
        stats_path = ckpt / STATS_FILE
        actions = ActionProcessor.from_dict(read_json(stats_path, "action statistics and bin edges"), str(stats_path))
        if actions.action_dim != config.action.action_dim:
            raise CheckpointError(f"{stats_path}: {actions.action_dim} action dims but {cfg_path} says "
                                  f"{config.action.action_dim}")
        model.head.check_processor(actions, str(stats_path))
    record = read_json(ckpt / RECORD_FILE, "the training record") if (ckpt / RECORD_FILE).is_file() else None
    model.to(device).eval()
    return model, tokenizer, actions, meta, record
