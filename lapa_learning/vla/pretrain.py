"""`lapa vla pretrain`: stage 2, latent pretraining (or the ActionVLA baseline on true actions).

    lapa vla pretrain --data outputs/data/videos --out outputs/vla/pretrain              # latent labels
    lapa vla pretrain --data A --data B --out RUN --max-minutes 30                       # several datasets mixed
    lapa vla pretrain --data robot_set --targets actions --out RUN                       # ActionVLA baseline
    lapa vla pretrain --data videos --targets pseudo-actions --out RUN                   # VPT (lapa vpt label)
    lapa vla pretrain --data videos --init VISION_RUN --out RUN                          # on a pretrained model

Each --data directory is an episode dataset or a video folder with `latent_actions.parquet` beside it
(written by `lapa laq label`).  Samples of all datasets are pooled (each pair equally likely).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lapa_learning.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.vla.heads import HEADS, head_help
    from lapa_learning.cli_args import add_common_arguments

    parser.add_argument("--data", action="append", required=True, type=Path,
                        help="dataset with latent labels (repeat to mix several)")
    parser.add_argument("--targets", choices=["latents", "actions", "pseudo-actions"], default=None,
                        help="latents (LAPA), true actions (the ActionVLA baseline) or the pseudo-actions of "
                             "`lapa vpt label` (the VPT baseline) (default: latents; with --resume: the run's)")
    parser.add_argument("--action-head", choices=list(HEADS), default=None,
                        help=f"with action targets: the action head ({head_help()}) (default: discrete; with "
                             f"--resume: the run's)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="with action targets: actions per step (default: 1; with --resume: the run's)")
    parser.add_argument("--gripper", choices=["auto", "binary", "continuous"], default="auto",
                        help="with action targets: is the last action dim a binary gripper? auto: when it is named "
                             "gripper or takes two values in --data (default: %(default)s)")
    parser.add_argument("--init", type=Path,
                        help="start from this checkpoint (run dir or checkpoint dir, e.g. `lapa vla pretrain-vision`'s "
                             "video-pretrained tower) instead of a fresh model; its vision tower, projector, LM and "
                             "tokenizer are kept, the target head is new where it does not fit")
    parser.add_argument("--shuffle-labels", action="store_true",
                        help="with --targets latents: permute the latent labels across samples (a control: same "
                             "marginal, no relation to the image)")
    add_common_arguments(parser, default_steps=3000, default_lr=3e-4)


def run(args: argparse.Namespace) -> int:
    import torch

    from lapa_learning import cli_args
    from lapa_learning.vla import trainer as T
    from lapa_learning.vla.checkpoint import carried_on_resume, init_summary, load_checkpoint
    from lapa_learning.vla.configuration_vla import ActionHeadConfig, LatentHeadConfig, load_config_arg
    from lapa_learning.vla.data import build_action_samples, build_latent_samples, majority_baseline
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import ActionProcessor, build_tokenizer, gripper_binary_for

    cli_args.set_threads(args.threads)
    tcfg = cli_args.train_config_from_args(args)
    if not args.resume:
        cli_args.resolve_head_flags(args, None, targets=True)  # the defaults; --chunk-size >= 1
        if args.shuffle_labels and args.targets != "latents":  # before --out is touched
            raise ConfigError("--shuffle-labels: only with --targets latents")
    T.seed_everything(tcfg.seed)
    run_dir, state = cli_args.prepare_run_dir(args)
    if state is not None:  # the checkpoint's targets and head; flags asking for others are errors
        cli_args.resolve_head_flags(args, run_dir, targets=True)
    if args.shuffle_labels and args.targets != "latents":
        raise ConfigError("--shuffle-labels: only with --targets latents")
    from_init, cfg, init_record = state is None and args.init is not None, None, None
    processor = resumed = None
    if state is not None:
        model, tokenizer, processor, _, resumed = load_checkpoint(run_dir / "checkpoint", device="cpu")
        tcfg = T.resume_config(args, tcfg, run_dir, state, model.config, resumed)  # flags it cannot take: errors
        shuffled = bool((resumed or {}).get("shuffled_labels"))
        if args.shuffle_labels and not shuffled:
            raise ConfigError(f"--shuffle-labels with --resume: the run in --out {run_dir} trains on the true labels "
                              f"(drop --shuffle-labels, or start another run in a new --out)")
        args.shuffle_labels = shuffled  # not given: the run's
        image_size = model.config.image_size
    elif from_init:
        model, tokenizer, _, _, init_record = load_checkpoint(args.init, device="cpu")
        check_init_flags(args, model.config.name)
        image_size = model.config.image_size
    else:
        cfg = load_config_arg(cli_args.vla_config_name(args), **cli_args.config_overrides_from_args(args))
        image_size = cfg.image_size
    progress = not args.no_progress

    latent = args.targets == "latents"
    if latent:
        train, val, info = build_latent_samples(args.data, image_size, tcfg.val_fraction, tcfg.seed, progress,
                                                camera=args.camera)
        if args.shuffle_labels:
            shuffle_latent_labels((train, val), tcfg.seed)
    else:
        train, val, info = build_action_samples(args.data, image_size, args.chunk_size, tcfg.val_fraction,
                                                tcfg.seed, progress, pseudo=args.targets == "pseudo-actions",
                                                camera=args.camera)

    if state is not None:  # the datasets (and actions) the run was trained on
        T.check_resume_data(run_dir, "--data", (resumed or {}).get("datasets"), info["datasets"])
        if not latent:
            T.check_resume_actions(run_dir, processor, info["action_names"])
        model.train()
        cli_args.apply_flag_overrides(model, args)
    else:
        if not latent:
            names = info["action_names"]
            binary = gripper_binary_for(train.actions[:, 0], names, args.gripper)
            acfg = ActionHeadConfig(type=args.action_head, action_dim=len(names), chunk_size=args.chunk_size,
                                    gripper_binary=binary)
            processor = ActionProcessor.fit(train.actions[:, 0], names, num_bins=acfg.num_bins, gripper_binary=binary)
        if from_init:  # the checkpoint's tower, projector, LM and tokenizer; a new target head where it does not fit
            model.train()
            cli_args.apply_flag_overrides(model, args)
            if latent:
                model.ensure_latent_head(info["num_tokens"], info["codebook_size"])
            else:
                model.ensure_action_head(acfg)
        else:
            if latent:
                cfg.latent = LatentHeadConfig(num_tokens=info["num_tokens"], codebook_size=info["codebook_size"])
            else:
                cfg.action = acfg
            corpus = T.corpus_for_tokenizer(cfg.prompt_template, train.instructions, val.instructions)
            tokenizer = build_tokenizer(cfg.language, corpus)
            model = VLAModel(cfg, vocab_size=len(tokenizer))
    print(f"{T.describe(model)}; {len(train)} training / {len(val)} held-out samples "
          f"from {len(args.data)} dataset(s)")
    record = {"command": cli_args.command_line(), "stage": "pretrain", "targets": args.targets,
              "shuffled_labels": bool(args.shuffle_labels),
              "datasets": info["datasets"], "model": model.config.name,
              "init": str(args.init) if from_init else None, "init_record": init_summary(init_record),
              **carried_on_resume(resumed)}
    if latent:
        record.update(majority_baseline(train, val))
        sources = {d["labels_source"] for d in info["datasets"]}  # the LAQ that labelled each dataset
        record["laq"] = sources.pop() if len(sources) == 1 and "" not in sources else None  # for LatentPreview
    head = model.latent if latent else model.head
    final = T.train(run_dir, model, tokenizer, processor, train, val, head, tcfg, record, state, progress)
    m = final["metrics"]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}))
    if latent and "majority_baseline_accuracy" in final:
        print(f"held-out latent token accuracy {m['latent_token_accuracy']:.3f} vs most-frequent-code baseline "
              f"{final['majority_baseline_accuracy']:.3f}")
    print(f"checkpoint: {run_dir / 'checkpoint'}")
    return 0


def check_init_flags(args, init_model: str) -> None:
    """With --init the architecture comes from the checkpoint: flags that would build another one are errors."""
    if args.config is not None and args.config != init_model:
        raise ConfigError(f"--config {args.config} with --init {args.init}: the checkpoint holds a {init_model} "
                          f"model; drop --config or pass --config {init_model}")
    built = [flag for flag, value in (("--vision-path", args.vision_path), ("--lm-path", args.lm_path),
                                      ("--lora-rank", args.lora_rank)) if value is not None]
    if built:
        raise ConfigError(f"{', '.join(built)} with --init {args.init}: the model comes from the checkpoint; "
                          f"set these when it is first built")


def shuffle_latent_labels(sample_sets, seed: int) -> None:
    """The lapa-shuffled control: each sample gets another sample's latent tokens (permuted within each set), so
    the label marginal is unchanged but the labels no longer depend on the image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for s in sample_sets:
        if len(s):
            s.latent = s.latent[rng.permutation(len(s))]
