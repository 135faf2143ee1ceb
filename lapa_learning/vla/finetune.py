"""`lapa vla finetune`: stage 3, action finetuning on a (small) labelled episode dataset.

    lapa vla finetune --data outputs/data/robot --init outputs/vla/pretrain --out outputs/vla/lapa     # LAPA
    lapa vla finetune --data outputs/data/robot --out outputs/vla/scratch                              # Scratch
    lapa vla finetune --data D --init RUN --action-head continuous --chunk-size 8 --out R2             # L1 chunks

With --init, the vision tower, projector, LM and tokenizer come from the pretrained checkpoint; its latent head
is kept (frozen) so the finetuned policy still reports predicted latent tokens.  A pretrained action head
(ActionVLA) is kept when its type and shape match.  Action statistics and bin edges always come from --data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.vla.heads import HEADS, head_help
    from lapa_learning.cli_args import add_common_arguments

    parser.add_argument("--data", action="append", required=True, type=Path,
                        help="episode dataset with actions (repeat to mix several with the same action names)")
    parser.add_argument("--init", type=Path, help="pretrained checkpoint (run dir or checkpoint dir); "
                                                  "without it the model starts from scratch (the Scratch baseline)")
    parser.add_argument("--action-head", choices=list(HEADS), default=None,
                        help=f"{head_help()} (default: discrete; with --resume: the run's)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="actions predicted per step (default: 1; with --resume: the run's)")
    parser.add_argument("--gripper", choices=["auto", "binary", "continuous"], default="auto",
                        help="is the last action dim a binary gripper (2 classes, decoded to its min/max)? auto: when "
                             "it is named gripper or takes two values in --data (default: %(default)s)")
    parser.add_argument("--val-data", action="append", type=Path,
                        help="held-out episodes from separate datasets; --data is then trained on whole "
                             "(--val-fraction is ignored)")
    add_common_arguments(parser, default_steps=2000, default_lr=3e-4)


def run(args: argparse.Namespace) -> int:
    import torch

    from lapa_learning import cli_args
    from lapa_learning.vla import trainer as T
    from lapa_learning.vla.checkpoint import carried_on_resume, init_summary, load_checkpoint
    from lapa_learning.vla.configuration_vla import ActionHeadConfig, load_config_arg
    from lapa_learning.vla.data import build_action_samples
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.pretrain import check_init_flags
    from lapa_learning.vla.processor_vla import ActionProcessor, build_tokenizer, gripper_binary_for

    cli_args.set_threads(args.threads)
    tcfg = cli_args.train_config_from_args(args)
    cli_args.refuse_val_data_in_data(args.data, args.val_data)
    if args.val_data:
        tcfg.val_fraction = 0.0  # the small labelled set is trained on whole; validation comes from --val-data
    if not args.resume:
        cli_args.resolve_head_flags(args, None)  # the defaults; --chunk-size >= 1
    T.seed_everything(tcfg.seed)
    run_dir, state = cli_args.prepare_run_dir(args)
    if state is not None:  # the checkpoint's head; --action-head/--chunk-size asking for another are errors
        cli_args.resolve_head_flags(args, run_dir)
    progress = not args.no_progress

    init_record, resumed = None, None
    if state is not None:
        model, tokenizer, processor, _, resumed = load_checkpoint(run_dir / "checkpoint", device="cpu")
        tcfg = T.resume_config(args, tcfg, run_dir, state, model.config, resumed)  # flags it cannot take: errors
        model.train()
        cli_args.apply_flag_overrides(model, args)
        model.freeze_latent_head()  # as in the run being resumed
        chunk = model.config.action.chunk_size
    elif args.init is not None:
        model, tokenizer, _, _, init_record = load_checkpoint(args.init, device="cpu")
        check_init_flags(args, model.config.name)
        model.train()
        cli_args.apply_flag_overrides(model, args)
        chunk = args.chunk_size
    else:
        cfg = load_config_arg(cli_args.vla_config_name(args), **cli_args.config_overrides_from_args(args))
        chunk = args.chunk_size

    image_size = model.config.image_size if (state is not None or args.init is not None) else cfg.image_size
    train, val, info = build_action_samples(args.data, image_size, chunk, tcfg.val_fraction, tcfg.seed, progress,
                                            camera=args.camera)
    names = info["action_names"]
    if args.val_data:
        val, _, val_info = build_action_samples(args.val_data, image_size, chunk, 0.0, tcfg.seed, progress,
                                                camera=args.camera)
        if val_info["action_names"] != names:
            from lapa_learning.errors import DatasetError

            raise DatasetError(f"--val-data actions {val_info['action_names']} differ from --data's {names}")
        info["val_datasets"] = val_info["datasets"]
    if state is not None:  # the datasets and actions the run was trained on
        T.check_resume_data(run_dir, "--data", (resumed or {}).get("datasets"), info["datasets"])
        T.check_resume_data(run_dir, "--val-data", (resumed or {}).get("val_datasets"), info.get("val_datasets", []))
        T.check_resume_actions(run_dir, processor, names)

    if state is None:
        binary = gripper_binary_for(train.actions[:, 0], names, args.gripper)
        want = ActionHeadConfig(type=args.action_head, action_dim=len(names), chunk_size=chunk, gripper_binary=binary)
        processor = ActionProcessor.fit(train.actions[:, 0], names, num_bins=want.num_bins, gripper_binary=binary)
        kind = "a binary gripper" if binary else "continuous"
        print(f"actions {list(names)}: last dim {kind} (--gripper {args.gripper})")
        if args.init is None:
            cfg.action = want
            tokenizer = build_tokenizer(cfg.language, T.corpus_for_tokenizer(cfg.prompt_template, train.instructions, val.instructions))
            model = VLAModel(cfg, vocab_size=len(tokenizer))
        else:
            model.ensure_action_head(want)  # the pretrained head if it fits, else a fresh one
            model.freeze_latent_head()  # kept for reporting latent tokens; not trained on actions
    if state is not None:
        was = (resumed or {}).get("init")
        start = (f"resuming {run_dir} at step {int(state.get('step', 0))} "
                 f"({'initialised from ' + str(was) if was else 'trained from scratch'})")
    else:
        start = f"init from {args.init}" if args.init else "from scratch"
    print(f"{T.describe(model)}; {len(train)} training / {len(val)} held-out frames; {start}")
    record = {"command": cli_args.command_line(), "stage": "finetune", "init": str(args.init) if args.init else None,
              "init_record": init_summary(init_record),
              "laq": init_record.get("laq") if init_record else None,  # the LAQ of stage 2, for LatentPreview
              "datasets": info["datasets"], "val_datasets": info.get("val_datasets", []),
              "train_episodes": len(train.frames), "model": model.config.name, **carried_on_resume(resumed)}
    final = T.train(run_dir, model, tokenizer, processor, train, val, model.head, tcfg, record, state, progress)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in final["metrics"].items()}))
    print(f"checkpoint: {run_dir / 'checkpoint'}")
    return 0
