"""The math of `lapa laq explain`: encode a dataset's frame pairs and probe how much of the true motion the latent
tokens explain (one-hot tokens -> ridge regression, R^2 cross-validated over episodes; a token-tuple lookup probe;
the mean action per code). No plotting here (pictures.py draws).
"""

from __future__ import annotations

import numpy as np

from lapa_learning.errors import ConfigError


# ------------------------------------------------------------------------------------------------- encoding
def encode_source(model, source, episodes, offset: int, device, batch_size: int = 256):
    """Tokens of every pair of the given episodes: (episode (N,), t (N,), tokens (N, K)). An episode whose video
    cannot be decoded is skipped with a warning (as training and labelling do); none readable is a DatasetError."""
    import warnings

    from lapa_learning.data.pairs import resize_square
    from lapa_learning.errors import DatasetError
    from lapa_learning.laq.label import encode_episode

    eps, ts, toks = [], [], []
    for index in episodes:
        try:
            frames = resize_square(source.frames(index), model.cfg.image_size)
        except DatasetError as err:
            warnings.warn(f"skipping episode {index}: {err}", stacklevel=2)
            continue
        t, tokens = encode_episode(model, frames, offset, batch_size, device)
        eps.append(np.full(len(t), index))
        ts.append(t)
        toks.append(tokens)
    if not eps:
        raise DatasetError(f"{getattr(source, 'root', 'the data')}: none of its {len(episodes)} episodes could be "
                           f"decoded")
    return np.concatenate(eps), np.concatenate(ts), np.concatenate(toks)


def action_targets(source, episodes, offset: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Per pair (t, t+H) of the given episodes, in encode_source's order: the summed true action over t .. t+H-1
    (N, A), and the end-effector displacement state[t+H, :3] - state[t, :3] (N, 3) when the source has states."""
    targets, disp = [], []
    has_states = bool(getattr(source, "state_names", ()))
    for e in episodes:
        acts = source.actions(e).astype(np.float64)
        n = len(acts) - offset
        if n <= 0:
            continue
        csum = np.vstack([np.zeros((1, acts.shape[1])), np.cumsum(acts, axis=0)])
        targets.append(csum[offset:offset + n] - csum[:n])  # sum of actions t .. t+H-1
        if has_states:
            st = source.states(e).astype(np.float64)
            disp.append(st[offset:offset + n, :3] - st[:n, :3])
    return np.concatenate(targets), (np.concatenate(disp) if disp else None)


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


def mean_or_none(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def nan_to_none(x):
    arr = np.asarray(x, dtype=float)
    return [None if not np.isfinite(v) else round(float(v), 6) for v in arr.reshape(-1)] if arr.ndim <= 1 \
        else [nan_to_none(row) for row in arr]
