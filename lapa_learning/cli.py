"""The `lapa` command line.

Every verb lives in its own module with two functions:

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None

and is registered in COMMANDS below by dotted path, so a verb's heavy imports (torch, mujoco, ...)
happen only when that verb runs. `lapa --help` therefore stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import sys
import warnings
from pathlib import Path

from lapa_learning.errors import LapaError

_PACKAGE_DIR = Path(__file__).resolve().parent

# (group, verb) -> (module, one-line help).  A group of None means a top-level verb (`lapa eval`).
COMMANDS: dict[tuple[str | None, str], tuple[str, str]] = {
    ("data", "generate"): ("lapa_learning.data.generate", "roll out scripted experts into an episode dataset"),
    ("data", "info"): ("lapa_learning.data.info", "print what an episode dataset holds"),
    ("data", "import-bag"): ("lapa_learning.data.import_bag", "convert rosbag2 recordings into an episode dataset"),
    ("laq", "train"): ("lapa_learning.laq.train", "stage 1: train the latent action quantizer"),
    ("laq", "label"): ("lapa_learning.laq.label", "label every (t, t+H) pair of a dataset with latent actions"),
    ("laq", "explain"): ("lapa_learning.laq.explain", "show what each latent code does (image grid, probe)"),
    ("vla", "pretrain"): ("lapa_learning.vla.pretrain", "stage 2: latent (or true-action) pretraining"),
    ("vla", "pretrain-vision"): ("lapa_learning.vla.pretrain_vision",
                                 "control: pretrain only the vision tower on videos (future-frame prediction)"),
    ("vla", "finetune"): ("lapa_learning.vla.finetune", "stage 3: action finetuning"),
    ("vpt", "train"): ("lapa_learning.vpt.train", "VPT baseline: train the inverse-dynamics model on labelled data"),
    ("vpt", "label"): ("lapa_learning.vpt.label", "VPT baseline: pseudo-label action-free videos with the IDM"),
    (None, "eval"): ("lapa_learning.eval.evaluate", "closed-loop success rate of a policy in Meta-World"),
    (None, "demo"): ("lapa_learning.demo", "the whole LAPA pipeline on built-in simulated data"),
}

GROUP_HELP = {
    "data": "episode datasets",
    "laq": "stage 1: latent action quantization",
    "vla": "stages 2-3: the vision-language-action model",
    "vpt": "the VPT baseline: an inverse-dynamics model that pseudo-labels videos",
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported like every other bad input: one `lapa: error:` line, exit code 2
    (instead of the whole usage text); the verb's --help lists the options."""

    def error(self, message: str):
        sys.stderr.write(f"lapa: error: {message} (`{self.prog} --help` lists the options)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lapa", description="LAPA: latent action pretraining from videos.")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, verb), (module, help_text) in COMMANDS.items():
        if not _available(module):
            continue  # a verb whose module is not part of this installation
        if group is None:
            sub = top.add_parser(verb, help=help_text, description=help_text)
        else:
            if group not in groups:
                verbs = [v for (g, v), (m, _) in COMMANDS.items() if g == group and _available(m)]
                text = f"{GROUP_HELP[group]} ({', '.join(verbs)})"  # the verb list cannot go stale
                g = top.add_parser(group, help=text, description=text)
                groups[group] = g.add_subparsers(dest="verb", metavar="VERB", required=True)
            sub = groups[group].add_parser(verb, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        # Arguments are added lazily only for the verb being run (see main), so that --help of the
        # top level does not import torch.  For `lapa <verb> --help` the module is imported.
        sub.set_defaults(_parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Anything below may start ROS (bag import, demo): keep discovery on this machine.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # One CPU thread per process unless the user says otherwise: on small or shared machines torch's default
    # (one thread per core) was seen 10-50x slower for these batch sizes. GPU work is unaffected.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = build_parser()
    # First pass: find which verb is asked for, without its own arguments.
    known, _ = _parse_verb(parser, argv)
    module = importlib.import_module(known._module)
    module.add_arguments(known._parser)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # restores Python's warning printer when main returns (tests call main)
        warnings.showwarning = _show_warning
        try:
            return int(module.run(args) or 0)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except LapaError as err:  # bad input: a clear message, no traceback
            print(f"lapa: error: {err}", file=sys.stderr)
            return 2
        finally:
            from lapa_learning.cli_args import release_run_locks

            release_run_locks()  # run directories locked by the verb (tests call main several times)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """The project's own warnings (a skipped video, a skipped episode) as one `lapa: warning:` line; those of
    libraries keep Python's format, with the file and line that tell their authors where to look."""
    out = sys.stderr if file is None else file
    if Path(filename).resolve().is_relative_to(_PACKAGE_DIR):
        out.write(f"lapa: warning: {message}\n")
    else:
        out.write(warnings.formatwarning(message, category, filename, lineno, line))


def _parse_verb(parser: argparse.ArgumentParser, argv: list[str]):
    """Parse only far enough to know the verb; `--help` after a verb is honoured by the second pass."""
    stripped = [a for a in argv if a not in ("-h", "--help")]
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return parser.parse_known_args(stripped)
        except SystemExit:
            pass
    parser.parse_args(argv)  # prints the proper usage or help, then exits
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
