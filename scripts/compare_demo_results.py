"""Compare two `lapa demo` results.json files (e.g. before and after a refactor) and save the comparison.

    python scripts/compare_demo_results.py /tmp/before/results.json /tmp/after/results.json \
        --out results/demo_quick_before_after.json

Everything except timings, the command line and output paths must be equal; the script says which keys differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lapa_learning.cli_args import command_line  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402

IGNORED = ("command", "minutes", "stage_minutes")  # wall-clock and how it was called


def differences(a, b, where="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys if k not in IGNORED for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    return [] if a == b else [where or "."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    before, after = (json.loads(p.read_text(encoding="utf-8")) for p in (args.before, args.after))
    diff = differences(before, after)
    pick = ("methods", "laq", "latent_pretraining")
    result = {"command": command_line(), "machine": after.get("machine"), "seed": after.get("seed"),
              "eval_seed": after.get("eval_seed"), "preset": after.get("preset"),
              "before": {"command": before.get("command"), "minutes": before.get("minutes"),
                         **{k: before.get(k) for k in pick}},
              "after": {"command": after.get("command"), "minutes": after.get("minutes"),
                        **{k: after.get(k) for k in pick}},
              "identical_except": list(IGNORED), "differences": diff, "identical": not diff}
    atomic_write_json(args.out, result)
    print(f"{'identical' if not diff else 'DIFFERENT: ' + ', '.join(diff)}; wrote {args.out}")
    return 0 if not diff else 1


if __name__ == "__main__":
    sys.exit(main())
