"""docs/your_data.md stays true: its `lapa` and `python -m` commands run, in the order written, on a folder of video
clips and a hand-built LeRobot v3.0 dataset (step counts cut to a few)."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from lapa_learning.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "your_data.md"


def documented_commands() -> list[list[str]]:
    """The `lapa ...` and `python -m ...` lines of the doc's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and (words[0] == "lapa" or words[:2] == ["python", "-m"]):
                commands.append(words)
    return commands


def shrunk(words: list[str], paths: dict[str, Path]) -> list[str]:
    """The command with the doc's inputs replaced by the test's and its training cut to 3 steps."""
    out, it = [], iter(words)
    for w in it:
        if w in ("--max-minutes", "--max-steps"):
            next(it)
            out += ["--max-steps", "3"]
        else:
            first = w.split("/")[0]
            out.append(str(paths[first] / w[len(first) + 1:]) if first in paths and "/" in w else
                       str(paths[w]) if w in paths else w)
    return out


@pytest.mark.slow
def test_the_documented_commands_run_in_order(tmp_path):
    from lapa_learning.data.testing import write_lerobot_v3
    from lapa_learning.data.video import write_video
    from lapa_learning.laq.testing import moving_square_frames

    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    with open(videos / "instructions.jsonl", "w") as f:
        for i in range(5):
            write_video(videos / f"clip{i}.mp4", moving_square_frames(rng, length=16)[0], fps=30)
            f.write(json.dumps({"video": f"clip{i}.mp4", "instruction": "move the square"}) + "\n")
    robot = tmp_path / "robot"
    write_lerobot_v3(robot, lengths=(7, 9, 6, 8, 7, 9))
    paths = {"videos": videos, "robot_demos": robot, "robot_demos_heldout": robot, "runs": tmp_path / "runs"}

    commands = documented_commands()
    verbs = [" ".join(c[1:3]) if c[0] == "lapa" else c[2] for c in commands]
    assert verbs == ["data info", "laq train", "laq explain", "laq label", "vla pretrain", "vla finetune",
                     "lapa_learning.vla.offline_eval"], verbs  # the doc changed: update this test with it
    for words in commands:
        args = shrunk(words, paths)
        if args[0] == "lapa":
            code = main(args[1:] + (["--no-progress"] if args[1:3] in (["laq", "train"], ["laq", "label"],
                                                                        ["vla", "pretrain"], ["vla", "finetune"])
                                    else []))
        else:
            from lapa_learning.vla.offline_eval import main as offline_eval

            code = offline_eval(args[3:])
        assert code == 0, args
    record = json.loads((tmp_path / "runs/lapa/checkpoint/train_record.json").read_text())
    assert record["datasets"][0]["camera"] == "observation.images.wrist" and record["init"]
