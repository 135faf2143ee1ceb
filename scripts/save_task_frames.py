"""Save a grid of frames from scripted-expert episodes, to check by eye that a camera view shows each task.

    python scripts/save_task_frames.py --tasks push-v3,pick-place-v3 --camera front --out docs/images/default_tasks.png

One row per task: six frames evenly spaced over an expert episode, upscaled 2x (nearest) for viewing.
"""

import argparse

import cv2
import numpy as np

from lapa_learning.sim.metaworld_env import DEFAULT_TASKS, MetaWorldEnv
from lapa_learning.sim.rollout import expert_episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--camera", default="front")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/images/default_tasks.png")
    args = parser.parse_args()
    rows = []
    for task in args.tasks.split(","):
        with MetaWorldEnv(task, camera=args.camera, image_size=args.image_size, max_steps=200) as env:
            episode = expert_episode(env, seed=args.seed)
        picks = np.linspace(0, len(episode.frames) - 1, 6).astype(int)
        rows.append(np.concatenate([episode.frames[i] for i in picks], axis=1))
        print(f"{task}: {len(episode.frames)} frames, success={episode.success}, '{episode.instruction}'")
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(args.out, cv2.resize(grid[:, :, ::-1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
