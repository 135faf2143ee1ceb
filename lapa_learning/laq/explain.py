"""`lapa laq explain`: what does each latent code do?

    lapa laq explain --checkpoint outputs/laq_tiny --data outputs/data/laq_probe --out results/

1. Image grid (`<prefix>_explain.png`): for a few frames x_t of the dataset, the decoder's x̂_t+H under
   many latent actions: the frame's own tokens; every code at each token position (the other positions keep the
   frame's own codes); and the most frequent token combinations of the dataset. Each variant is tinted where it
   differs from the own-token decoding (magenta brighter, green darker), so what each code changes stands out;
   on the true x_t+H, a cyan outline marks the pixels that changed since x_t.
2. Probe (`<prefix>_probe.json` / `.png`, datasets with actions only): how much of the true motion between t and
   t+H the tokens explain. Targets: the summed true action over t .. t+H-1 (the commanded end-effector motion) and,
   when states exist, the end-effector displacement state[t+H] - state[t]. Features: one-hot tokens (K x C).
   A ridge-regularized linear probe is scored by R^2 per dimension on held-out pairs, cross-validated over
   episodes (k folds of episodes; an episode's pairs are predicted only by a probe fit on the other folds, and
   all held-out predictions are pooled). Also a lookup probe (mean target of each whole token tuple seen in
   the training folds, falling back to the linear probe) and the mean true action per code at each position.
   Use a labelled dataset the LAQ was not trained on.

This module is the verb and the orchestration; the math is probe.py, the pictures pictures.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lapa_learning import cli_args
from lapa_learning.errors import ConfigError
from lapa_learning.io import atomic_write_json
from lapa_learning.laq import checkpoint as ckpt
from lapa_learning.laq.pictures import draw_grid, draw_probe
from lapa_learning.laq.probe import (action_targets, encode_source, episode_folds, mean_action_per_code, mean_or_none,
                                     nan_to_none, probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="LAQ run directory or step_* directory")
    parser.add_argument("--data", required=True, type=Path, help="episode dataset (with actions for the probe) "
                                                                 "or folder of videos")
    parser.add_argument("--out", type=Path, help="output folder (default: <checkpoint run dir>/explain)")
    parser.add_argument("--prefix", default="laq", help="file name prefix (default: laq)")
    parser.add_argument("--frames", type=int, default=3, help="example frames in the grid (default: 3)")
    parser.add_argument("--top", type=int, default=8, help="most frequent token tuples shown (default: 8)")
    parser.add_argument("--offset-frames", type=int, help="H in frames (default: the checkpoint's)")
    parser.add_argument("--folds", type=int, default=5,
                        help="the probe is cross-validated over this many groups of episodes (default: 5)")
    parser.add_argument("--ridge", type=float, default=1.0, help="ridge penalty of the linear probe (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-probe", action="store_true", help="only draw the image grid")
    cli_args.add_camera(parser)
    cli_args.add_device(parser)
    cli_args.add_threads(parser)


def run(args: argparse.Namespace) -> int:
    cli_args.set_threads(args.threads)
    result = explain(args.checkpoint, args.data, out=args.out, prefix=args.prefix, n_frames=args.frames,
                     top=args.top, offset=args.offset_frames, folds=args.folds, ridge=args.ridge,
                     seed=args.seed, probe_actions=not args.no_probe, device=args.device, camera=args.camera)
    for key, value in result["files"].items():
        print(f"{key}: {value}")
    if result.get("probe"):
        p = result["probe"]
        fmt = lambda r: "n/a" if r is None else f"{r:.3f}"  # noqa: E731  (None: constant target)
        print(f"probe (held-out R^2, summed action over H={p['offset']}): "
              + ", ".join(f"{n} {fmt(r)}" for n, r in zip(p["action_names"], p["r2_action"]))
              + f"; mean over xyz {fmt(p['probe_r2_xyz'])}")
    return 0


# ---------------------------------------------------------------------------------------------------- main
def explain(checkpoint, data, out=None, prefix: str = "laq", n_frames: int = 3, top: int = 8,
            offset: int | None = None, folds: int = 5, ridge: float = 1.0, seed: int = 0,
            probe_actions: bool = True, device: str = "auto", camera: str | None = None) -> dict:
    from lapa_learning.laq.label import checkpoint_offset
    from lapa_learning.laq.trainer import open_source

    if n_frames < 1 or top < 0:
        raise ConfigError(f"--frames must be >= 1 and --top >= 0, got {n_frames} and {top}")
    if folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {folds}")
    if not ridge >= 0:
        raise ConfigError(f"--ridge must be >= 0, got {ridge}")
    dev = cli_args.pick_device(device)
    step_dir = ckpt.resolve_checkpoint(checkpoint)
    model, config = ckpt.load_laq(step_dir, device=dev)
    source = open_source(data, config.get("fps"), camera)  # a video folder gets the checkpoint's frame rate
    H = checkpoint_offset(config, source.fps, offset)
    out = Path(out) if out is not None else step_dir.parent / "explain"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder for the explanation's images and JSON")
    out.mkdir(parents=True, exist_ok=True)
    C = model.cfg.codebook_size

    ids = [ep.index for ep in source.episodes if ep.length > H]
    if not ids:
        raise ConfigError(f"{data}: no episode is longer than H={H} frames")
    episode, t, tokens = encode_source(model, source, ids, H, dev)
    decoded = set(episode.tolist())
    ids = [i for i in ids if i in decoded]  # without episodes whose video could not be decoded
    groups = episode_folds(ids, folds, seed)

    # the most frequent token tuples of the whole dataset
    tuples, counts = np.unique(tokens, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    frequent = [tuple(int(v) for v in tuples[i]) for i in order]

    # example frames: from different episodes, preferring frames about 40% into the episode (the arm moves)
    rng = np.random.default_rng(seed)
    pool = list(range(len(episode)))
    picks = rng.choice(pool, size=min(len(pool), max(4 * n_frames, 16)), replace=False)
    scored = []
    for i in picks:
        e, s = int(episode[i]), int(t[i])
        ep_len = next(ep.length for ep in source.episodes if ep.index == e)
        scored.append((e, s, ep_len))
    examples, used_eps = [], set()
    for e, s, L in sorted(scored, key=lambda x: abs(x[1] / max(1, x[2] - H) - 0.4)):
        if e not in used_eps:
            examples.append((e, s))
            used_eps.add(e)
        if len(examples) == n_frames:
            break
    files = {"grid": str(draw_grid(model, source, examples, H, frequent, out / f"{prefix}_explain.png", dev))}
    summary = {"checkpoint": str(step_dir), "data": str(data), "camera": source.video_key,
               "offset": H, "pairs": int(len(t)),
               "examples": [list(x) for x in examples],
               "frequent_tuples": [{"tokens": list(tup), "count": int(counts[i])} for tup, i in zip(frequent, order)],
               "distinct_tuples": int(len(tuples)), "codebook_size": C, "num_tokens": model.cfg.num_tokens}

    result = {"files": files, "summary": summary}
    if probe_actions and getattr(source, "has_actions", False):
        if len(ids) < 2:
            raise ConfigError(f"--data {data}: the action probe needs at least 2 episodes longer than H={H} frames "
                              f"(it is fit on some and scored on the others), found {len(ids)}; pass --no-probe to "
                              f"draw the image grid only")
        names = list(source.action_names) or [f"a{i}" for i in range(source.actions(ids[0]).shape[1])]
        Y, disp = action_targets(source, ids, H)
        if len(Y) != len(tokens):
            raise ConfigError(f"{data}: {len(Y)} action pairs but {len(tokens)} frame pairs; frames and actions "
                              f"of some episode have different lengths")
        res = probe(tokens, episode, Y, C, groups, ridge)
        means, code_counts = mean_action_per_code(tokens, Y, C)
        p = {"offset": H, "action_names": names, "target": f"sum of actions t..t+{H - 1}",
             "r2_action": nan_to_none(res["r2_linear"]), "r2_action_lookup": nan_to_none(res["r2_lookup"]),
             "probe_r2_xyz": mean_or_none(res["r2_linear"][:3]),
             "probe_r2_xyz_lookup": mean_or_none(res["r2_lookup"][:3]),
             "evaluation": f"{res['folds']}-fold cross-validation over {len(ids)} episodes (pairs of an episode are "
                           f"only predicted by a probe fit on other episodes)",
             "pairs": res["pairs"], "folds": res["folds"],
             "tuples_seen_in_training": res["tuples_seen_in_training"], "ridge": ridge,
             "mean_action": nan_to_none(Y.mean(axis=0)),
             "mean_action_per_code": nan_to_none(means), "code_counts": code_counts.tolist()}
        if disp is not None:
            resd = probe(tokens, episode, disp, C, groups, ridge)
            p["r2_ee_displacement_xyz"] = nan_to_none(resd["r2_linear"])
            p["probe_r2_ee_displacement_xyz"] = mean_or_none(resd["r2_linear"])
        plot = {"r2_action": np.array(p["r2_action"], dtype=float), "offset": H,
                "r2_action_lookup": np.array(p["r2_action_lookup"], dtype=float)}
        files["probe_plot"] = str(draw_probe(plot, means, code_counts, names, out / f"{prefix}_probe.png",
                                             overall=Y.mean(axis=0)))
        result["probe"] = p
        summary["probe"] = p
    elif probe_actions:
        summary["probe"] = None
        summary["probe_skipped"] = f"{data} has no actions"
    files["json"] = str(out / f"{prefix}_explain.json")
    atomic_write_json(out / f"{prefix}_explain.json", summary)
    return result
