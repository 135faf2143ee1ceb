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
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lapa_learning.errors import ConfigError
from lapa_learning.laq import checkpoint as ckpt
from lapa_learning.laq.metrics import CHANGE_THRESHOLD


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
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = explain(args.checkpoint, args.data, out=args.out, prefix=args.prefix, n_frames=args.frames,
                     top=args.top, offset=args.offset_frames, folds=args.folds, ridge=args.ridge,
                     seed=args.seed, probe_actions=not args.no_probe, device=args.device)
    for key, value in result["files"].items():
        print(f"{key}: {value}")
    if result.get("probe"):
        p = result["probe"]
        fmt = lambda r: "n/a" if r is None else f"{r:.3f}"  # noqa: E731  (None: constant target)
        print(f"probe (held-out R^2, summed action over H={p['offset']}): "
              + ", ".join(f"{n} {fmt(r)}" for n, r in zip(p["action_names"], p["r2_action"]))
              + f"; mean over xyz {fmt(p['probe_r2_xyz'])}")
    return 0


# ------------------------------------------------------------------------------------------------- encoding
def encode_source(model, source, episodes, offset: int, device, batch_size: int = 256):
    """Tokens of every pair of the given episodes: (episode (N,), t (N,), tokens (N, K))."""
    from lapa_learning.data.pairs import resize_square
    from lapa_learning.laq.label import encode_episode

    eps, ts, toks = [], [], []
    for index in episodes:
        frames = resize_square(source.frames(index), model.cfg.image_size)
        t, tokens = encode_episode(model, frames, offset, batch_size, device)
        eps.append(np.full(len(t), index))
        ts.append(t)
        toks.append(tokens)
    return np.concatenate(eps), np.concatenate(ts), np.concatenate(toks)


# ---------------------------------------------------------------------------------------------------- probe
def one_hot(tokens: np.ndarray, codebook_size: int) -> np.ndarray:
    """(N, K) -> (N, K * C) float one-hot features."""
    N, K = tokens.shape
    out = np.zeros((N, K * codebook_size))
    out[np.repeat(np.arange(N), K), (np.arange(K) * codebook_size + tokens).reshape(-1)] = 1.0
    return out


def fit_ridge(X: np.ndarray, Y: np.ndarray, ridge: float) -> np.ndarray:
    """Least squares with an (unpenalized) intercept; returns W of shape (F + 1, D)."""
    Xb = np.hstack([X, np.ones((len(X), 1))])
    reg = ridge * np.eye(Xb.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(Xb.T @ Xb + reg, Xb.T @ Y)


def predict_ridge(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((len(X), 1))]) @ W


def r2_score(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Per-dimension R^2 = 1 - SSE / SST (SST around the held-out mean); NaN where the target is constant."""
    sse = ((Y - P) ** 2).sum(axis=0)
    sst = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 1e-12, 1 - sse / sst, np.nan)


def episode_folds(episodes, folds: int, seed: int = 0) -> list[list[int]]:
    """Split episode ids into `folds` disjoint groups (shuffled with `seed`)."""
    ids = np.random.default_rng(seed).permutation(sorted(set(int(e) for e in episodes)))
    return [sorted(f.tolist()) for f in np.array_split(ids, min(folds, len(ids))) if len(f)]


def probe(tokens, episode, targets: np.ndarray, codebook_size: int, folds: list[list[int]], ridge: float) -> dict:
    """Cross-validated over episodes: for each fold, fit on the pairs of the other folds' episodes and predict the
    pairs of this fold's episodes; R^2 is computed on all held-out predictions pooled."""
    X = one_hot(tokens, codebook_size)
    lin, look = np.zeros_like(targets, dtype=float), np.zeros_like(targets, dtype=float)
    seen = 0
    for fold in folds:
        val = np.isin(episode, fold)
        if val.all():  # a single fold (one episode): nothing to train on, so predict the mean of nothing
            raise ConfigError("the probe needs at least 2 episodes")
        W = fit_ridge(X[~val], targets[~val], ridge)
        lin[val] = predict_ridge(W, X[val])
        # lookup probe: mean target per token tuple seen in the training folds, else the linear prediction
        table: dict = {}
        for tup, y in zip(map(tuple, tokens[~val].tolist()), targets[~val]):
            acc = table.setdefault(tup, [np.zeros(targets.shape[1]), 0])
            acc[0] += y
            acc[1] += 1
        rows = np.flatnonzero(val)
        look[rows] = lin[rows]
        for i, tup in zip(rows, map(tuple, tokens[val].tolist())):
            if tup in table:
                look[i] = table[tup][0] / table[tup][1]
                seen += 1
    return {"r2_linear": r2_score(targets, lin), "r2_lookup": r2_score(targets, look), "pairs": int(len(targets)),
            "folds": len(folds), "tuples_seen_in_training": seen / max(1, len(targets))}


def mean_action_per_code(tokens: np.ndarray, targets: np.ndarray, codebook_size: int):
    """(K, C, D) mean target of the pairs whose token at position k is c (NaN if unused), and (K, C) counts."""
    N, K = tokens.shape
    means = np.full((K, codebook_size, targets.shape[1]), np.nan)
    counts = np.zeros((K, codebook_size), dtype=np.int64)
    for k in range(K):
        for c in range(codebook_size):
            m = tokens[:, k] == c
            counts[k, c] = int(m.sum())
            if counts[k, c]:
                means[k, c] = targets[m].mean(axis=0)
    return means, counts


def _mean_or_none(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def _nan_to_none(x):
    arr = np.asarray(x, dtype=float)
    return [None if not np.isfinite(v) else round(float(v), 6) for v in arr.reshape(-1)] if arr.ndim <= 1 \
        else [_nan_to_none(row) for row in arr]


# ----------------------------------------------------------------------------------------------------- grid
TINT_GAIN = 8.0  # a brightness change of 0.1 is drawn at 80% opacity


def _cell(img: np.ndarray, base: np.ndarray | None, scale: int, tint_from: np.ndarray | None = None) -> np.ndarray:
    """(S, S, 3) float image -> (S*scale, S*scale, 3) uint8. With `base`: cyan outline of the pixels that differ
    from it by more than CHANGE_THRESHOLD. With `tint_from`: pixels brighter than in `tint_from` are tinted
    magenta, darker ones green, with opacity TINT_GAIN x |mean channel difference| (at most 0.8)."""
    if tint_from is not None:
        diff = (img - tint_from).mean(axis=-1, keepdims=True)  # (S, S, 1)
        alpha = np.clip(np.abs(diff) * TINT_GAIN, 0, 0.8)
        colour = np.where(diff > 0, np.array([1.0, 0.0, 1.0]), np.array([0.0, 0.8, 0.0]))
        img = img * (1 - alpha) + colour * alpha
    big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    out = (np.clip(big, 0, 1) * 255).astype(np.uint8)
    if base is not None:
        changed = np.abs(img - base).max(axis=-1) > CHANGE_THRESHOLD
        m = np.repeat(np.repeat(changed, scale, axis=0), scale, axis=1)
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m & ~inner] = (0, 255, 255)
    return out


@torch.no_grad()
def draw_grid(model, source, examples, offset: int, frequent: list[tuple], path: Path, device) -> Path:
    """One block per example frame: [x_t | x_t+H | x̂ own tokens], K rows of 'code c at position k' (the other
    positions keep the frame's own codes), one row of the most frequent token tuples. Cyan outlines mark pixels
    that differ from x_t. Drawn as one mosaic image with text labels (fast, small PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapa_learning.data.pairs import resize_square

    K, C, S = model.cfg.num_tokens, model.cfg.codebook_size, model.cfg.image_size
    cols = max(C, len(frequent), 3) + 1  # first column: row labels
    rows_per = K + 1 + (1 if frequent else 0)
    scale = max(1, 128 // S)
    cell, band, gap, sep = S * scale, 16, 4, 14  # pixels: image, text band above it, gap, between examples
    ch, cw = cell + band + gap, cell + gap
    mosaic = np.full((ch * rows_per * len(examples) + sep * len(examples) + 24, cw * cols, 3), 255, dtype=np.uint8)
    labels: list[tuple[float, float, str, str]] = []  # (x, y, text, colour)
    top = 24

    def put(r, c, img, title, base=None, color="black", tint_from=None):
        y, x = top + r * ch + (r // rows_per) * sep + band, c * cw
        mosaic[y:y + cell, x:x + cell] = _cell(img, base, scale, tint_from)
        labels.append((x + 1, y - 3, title, color))

    def row_label(r, text):
        labels.append((2, top + r * ch + (r // rows_per) * sep + band + cell / 2, text, "dimgray"))

    tup_s = (lambda tup: "".join(map(str, tup))) if C <= 10 else (lambda tup: "-".join(map(str, tup)))
    for e, (index, t) in enumerate(examples):
        frames = resize_square(source.frames(index), S)
        x0 = torch.from_numpy(frames[t]).permute(2, 0, 1).float().div(255).to(device)  # (3, S, S)
        x1 = torch.from_numpy(frames[t + offset]).permute(2, 0, 1).float().div(255).to(device)
        own = model.encode_indices(torch.stack([x0, x1])[None])[0]  # (K,)
        variants = [own.clone()]
        for k in range(K):
            for c in range(C):
                v = own.clone()
                v[k] = c
                variants.append(v)
        variants += [torch.tensor(tup, device=device) for tup in frequent]
        idx = torch.stack(variants)
        decoded = [model.decode_indices(x0[None].expand(len(chunk), -1, -1, -1), chunk).clamp(0, 1).cpu()
                   for chunk in idx.split(64)]
        imgs = torch.cat(decoded).permute(0, 2, 3, 1).numpy()  # (V, S, S, 3)
        base = x0.permute(1, 2, 0).cpu().numpy()
        own_img = imgs[0]
        r0 = e * rows_per
        row_label(r0, f"ep {index}\nt {t}")
        put(r0, 1, base, "x_t")
        put(r0, 2, x1.permute(1, 2, 0).cpu().numpy(), f"true x_t+{offset}", base)
        put(r0, 3, own_img, f"decoded, own {tup_s(own.tolist())}", None, "tab:red")
        for k in range(K):
            row_label(r0 + 1 + k, f"token {k}\n= code")
            for c in range(C):
                is_own = int(own[k]) == c
                put(r0 + 1 + k, 1 + c, imgs[1 + k * C + c], f"{c}" + (" (own)" if is_own else ""),
                    color="tab:red" if is_own else "black", tint_from=own_img)
        if frequent:
            row_label(r0 + K + 1, "most\nfrequent")
            for j, tup in enumerate(frequent):
                put(r0 + K + 1, 1 + j, imgs[1 + K * C + j], tup_s(tup), color="tab:blue", tint_from=own_img)
    dpi = 100
    h, w = mosaic.shape[:2]
    fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    ax.text(2, 14, f"LAQ latent actions: x̂_t+{offset} decoded from x_t with each code. Variants are tinted where they "
                   f"differ from the own-token decoding (magenta brighter, green darker, x{TINT_GAIN:g}); "
                   f"cyan: pixels that changed from x_t to the true x_t+{offset}", fontsize=7)
    for x, y, text, color in labels:
        ax.text(x, y, text, fontsize=6.5, color=color, va="bottom" if "\n" not in text else "center")
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_small_png(fig, path, dpi)
    return path


MAX_PNG_BYTES = 480_000  # results PNGs are committed: keep them small


def _save_small_png(fig, path: Path, dpi: int) -> None:
    """Save as a palette PNG (about 3x smaller than RGBA for these mosaics): 256 colours, fewer if the file would
    exceed MAX_PNG_BYTES."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    rgb = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    for colours in (256, 128, 64):
        out = io.BytesIO()
        rgb.quantize(colours, method=Image.Quantize.MEDIANCUT).save(out, format="png", optimize=True)
        if out.tell() <= MAX_PNG_BYTES:
            break
    tmp = path.with_name(f".{path.name}.tmp.png")
    tmp.write_bytes(out.getvalue())
    tmp.replace(path)


def draw_probe(result: dict, means: np.ndarray, counts: np.ndarray, names: list[str], path: Path,
               overall: np.ndarray | None = None, min_count: int = 10) -> Path:
    """R^2 bars, and per token position a heat map of each code's mean summed action minus the dataset mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K, C, D = means.shape
    fig, axes = plt.subplots(1, K + 1, figsize=(3.0 * (K + 1), 3.0), gridspec_kw={"width_ratios": [1.3] + [1] * K},
                             layout="constrained")
    ax = axes[0]
    x = np.arange(len(names))
    ax.bar(x - 0.2, np.nan_to_num(result["r2_action"]), width=0.4, label="linear (one-hot)")
    ax.bar(x + 0.2, np.nan_to_num(result["r2_action_lookup"]), width=0.4, label="tuple lookup")
    ax.set_xticks(x, names, fontsize=7)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylim(min(-0.1, np.nanmin(result["r2_action"]) - 0.05), 1)
    ax.set_title(f"held-out R² of summed action\n(t..t+{result['offset'] - 1})", fontsize=8)
    ax.legend(fontsize=6)
    if overall is not None:
        means = means - overall  # what each code does differently from the average pair
    means = np.where((counts >= min_count)[..., None], means, np.nan)  # rare codes: too noisy to colour
    vmax = np.nanmax(np.abs(means)) if np.isfinite(means).any() else 1.0
    for k in range(K):
        a = axes[k + 1]
        im = a.imshow(means[k], cmap="coolwarm", vmin=-vmax, vmax=vmax, aspect="auto")
        a.set_xticks(range(D), names, fontsize=7)
        a.set_yticks(range(C), [f"{c} (n={counts[k, c]})" for c in range(C)], fontsize=6)
        a.set_title(f"token {k}: mean action - overall mean\n(blank: fewer than {min_count} pairs)" if k == 0
                    else f"token {k}", fontsize=8)
    fig.colorbar(im, ax=axes[1:].tolist(), shrink=0.8, label=f"summed action over {result['offset']} steps")
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_small_png(fig, path, 100)
    return path


# ---------------------------------------------------------------------------------------------------- main
def explain(checkpoint, data, out=None, prefix: str = "laq", n_frames: int = 3, top: int = 8,
            offset: int | None = None, folds: int = 5, ridge: float = 1.0, seed: int = 0,
            probe_actions: bool = True, device: str = "auto") -> dict:
    from lapa_learning.laq.label import checkpoint_offset, pick_device
    from lapa_learning.laq.train import open_source

    if n_frames < 1 or top < 0:
        raise ConfigError(f"--frames must be >= 1 and --top >= 0, got {n_frames} and {top}")
    if folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {folds}")
    if not ridge >= 0:
        raise ConfigError(f"--ridge must be >= 0, got {ridge}")
    dev = pick_device(device)
    step_dir = ckpt.resolve_checkpoint(checkpoint)
    model, config = ckpt.load_laq(step_dir, device=dev)
    source = open_source(data, config.get("fps"))  # a video folder gets the checkpoint's frame rate
    H = checkpoint_offset(config, source.fps, offset)
    out = Path(out) if out is not None else step_dir.parent / "explain"
    out.mkdir(parents=True, exist_ok=True)
    C = model.cfg.codebook_size

    ids = [ep.index for ep in source.episodes if ep.length > H]
    if not ids:
        raise ConfigError(f"{data}: no episode is longer than H={H} frames")
    groups = episode_folds(ids, folds, seed)
    episode, t, tokens = encode_source(model, source, ids, H, dev)

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
    summary = {"checkpoint": str(step_dir), "data": str(data), "offset": H, "pairs": int(len(t)),
               "examples": [list(x) for x in examples],
               "frequent_tuples": [{"tokens": list(tup), "count": int(counts[i])} for tup, i in zip(frequent, order)],
               "distinct_tuples": int(len(tuples)), "codebook_size": C, "num_tokens": model.cfg.num_tokens}

    result = {"files": files, "summary": summary}
    if probe_actions and getattr(source, "has_actions", False):
        names = list(source.action_names) or [f"a{i}" for i in range(source.actions(ids[0]).shape[1])]
        targets, disp = [], []
        has_states = bool(getattr(source, "state_names", ()))
        for e in ids:
            acts = source.actions(e).astype(np.float64)
            n = len(acts) - H
            if n <= 0:
                continue
            csum = np.vstack([np.zeros((1, acts.shape[1])), np.cumsum(acts, axis=0)])
            targets.append(csum[H:H + n] - csum[:n])  # sum of actions t .. t+H-1
            if has_states:
                st = source.states(e).astype(np.float64)
                disp.append(st[H:H + n, :3] - st[:n, :3])
        Y = np.concatenate(targets)
        if len(Y) != len(tokens):
            raise ConfigError(f"{data}: {len(Y)} action pairs but {len(tokens)} frame pairs; frames and actions "
                              f"of some episode have different lengths")
        res = probe(tokens, episode, Y, C, groups, ridge)
        means, code_counts = mean_action_per_code(tokens, Y, C)
        p = {"offset": H, "action_names": names, "target": f"sum of actions t..t+{H - 1}",
             "r2_action": _nan_to_none(res["r2_linear"]), "r2_action_lookup": _nan_to_none(res["r2_lookup"]),
             "probe_r2_xyz": _mean_or_none(res["r2_linear"][:3]),
             "probe_r2_xyz_lookup": _mean_or_none(res["r2_lookup"][:3]),
             "evaluation": f"{res['folds']}-fold cross-validation over {len(ids)} episodes (pairs of an episode are "
                           f"only predicted by a probe fit on other episodes)",
             "pairs": res["pairs"], "folds": res["folds"],
             "tuples_seen_in_training": res["tuples_seen_in_training"], "ridge": ridge,
             "mean_action": _nan_to_none(Y.mean(axis=0)),
             "mean_action_per_code": _nan_to_none(means), "code_counts": code_counts.tolist()}
        if disp:
            resd = probe(tokens, episode, np.concatenate(disp), C, groups, ridge)
            p["r2_ee_displacement_xyz"] = _nan_to_none(resd["r2_linear"])
            p["probe_r2_ee_displacement_xyz"] = _mean_or_none(resd["r2_linear"])
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
    ckpt.write_json_atomic(out / f"{prefix}_explain.json", summary)
    return result
