"""The pictures of `lapa laq explain`: the decoded-variants grid and the probe plot (small palette PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lapa_learning.io import atomic_write_bytes
from lapa_learning.laq.metrics import CHANGE_THRESHOLD

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
    atomic_write_bytes(path, out.getvalue())


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
