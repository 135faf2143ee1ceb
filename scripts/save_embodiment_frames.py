"""Save the same frame (task, layout seed, step of the scripted expert) in every embodiment, side by side.

    python scripts/save_embodiment_frames.py            # writes docs/images/embodiments.png

One row per task. Left block: the 64 px frames a dataset holds (upscaled 3x, nearest, to see the pixels);
right block: the same frames rendered at 192 px.
"""

import argparse

import cv2
import numpy as np

from lapa_learning.sim.embodiment import embodiment_names
from lapa_learning.sim.metaworld_env import MetaWorldEnv


def frame_at(task: str, embodiment: str, size: int, seed: int, step: int) -> np.ndarray:
    """The image after `step` scripted-expert steps (or at the episode's end, if it is shorter)."""
    with MetaWorldEnv(task, image_size=size, max_steps=200, embodiment=embodiment) as env:
        obs = env.reset(seed)
        for _ in range(step):
            obs, _, done = env.step(env.expert_action(), render=False)
            if done:
                break
        return env.render()


def label(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, image.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="push-v3,pick-place-v3,sweep-into-v3")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--step", type=int, default=30, help="expert steps before the frame (default: 30)")
    parser.add_argument("--out", default="docs/images/embodiments.png")
    args = parser.parse_args()
    names, gap = embodiment_names(), np.full((192, 8, 3), 255, dtype=np.uint8)
    rows = []
    for task in args.tasks.split(","):
        small = [cv2.resize(frame_at(task, n, 64, args.seed, args.step), (192, 192), interpolation=cv2.INTER_NEAREST)
                 for n in names]
        large = [frame_at(task, n, 192, args.seed, args.step) for n in names]
        rows.append(np.concatenate([*small, gap, *large], axis=1))
        print(f"{task}: seed {args.seed}, step {args.step}")
    titles = [f"{n}, 64 px" for n in names] + [""] + [f"{n}, 192 px" for n in names]
    widths = [192] * len(names) + [8] + [192] * len(names)
    header = np.concatenate([label(np.zeros((0, w, 3), np.uint8), t) for t, w in zip(titles, widths)], axis=1)
    spacer = np.full((6, header.shape[1], 3), 255, dtype=np.uint8)
    grid = np.concatenate([header] + [part for row in rows for part in (row, spacer)][:-1], axis=0)
    cv2.imwrite(args.out, grid[:, :, ::-1])
    print(f"saved {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
