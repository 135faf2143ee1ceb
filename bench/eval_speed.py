"""Sequential against batched closed-loop evaluation (`lapa eval --num-envs N`), side by side on the same episodes.

    .venv/bin/python bench/eval_speed.py                  # demo tasks, 16 episodes each
    .venv/bin/python bench/eval_speed.py --quick          # 1 task, 4 episodes (a smoke run)
    .venv/bin/python bench/eval_speed.py --settings today,1,4,8x2

Settings: "today" = the evaluator of commit --baseline (before batched evaluation; read from git history) with
today's Policy; "filed" = that evaluator with the VLA inference code of commit --filed-inference too (a2d5688:
the code when the speed issue was filed, before any decoding speed-up), i.e. evaluation as it ran then;
"N" = `lapa eval --num-envs N`; "NxW" = `--num-envs N --workers W`.

The policy has the demo's shape (`tiny-resnet`, continuous head, chunks of 4, latent head; random weights), the
episodes are the demo's (150 steps, 64 px); without --videos only the frames the policy reads are drawn, which is
what a demo evaluation does once each task has its two videos (a random policy never succeeds, so with videos it
would draw every frame of every episode). Every setting runs the same episodes; the first setting
is repeated at the end, to see how much the load from other jobs on a shared machine moved. Episodes/s includes
making the environments and starting worker processes. Writes results/eval_speed.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.policy_latency import baseline_policy, machine  # noqa: E402
from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.eval.evaluate import evaluate  # noqa: E402
from lapa_learning.vla.policy import Policy  # noqa: E402
from lapa_learning.vla.testing import make_tiny_checkpoint  # noqa: E402

DEMO_TASKS = ("button-press-topdown-v3", "plate-slide-v3", "window-open-v3")


def old_evaluate(commit: str):
    """`evaluate` of lapa_learning/eval/evaluate.py at `commit`, from git history."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:lapa_learning/eval/evaluate.py"],
                         capture_output=True, text=True, check=True).stdout
    mod = sys.modules[f"evaluate_{commit}"] = types.ModuleType(f"evaluate_{commit}")  # dataclasses need it
    exec(compile(src, mod.__name__, "exec"), mod.__dict__)  # noqa: S102 - our own code from git history
    return mod.evaluate


def run(policy, setting: str, args, tmp: Path) -> dict:
    kw = dict(max_steps=args.max_steps, seed=args.seed, image_size=64, progress=False,
              video_dir=tmp / f"videos_{setting}_{time.time_ns()}" if args.videos else None)
    if setting in ("today", "filed"):
        fn, n, w = old_evaluate(args.baseline), 1, 1
        if setting == "filed":
            policy = args.filed_policy
    else:
        n, w = (int(x) for x in (setting + "x1").split("x")[:2])
        fn, kw = evaluate, {**kw, "num_envs": n, "workers": w}
    latents = policy.report_latents
    c, t = time.process_time(), time.perf_counter()
    res = fn(policy, list(args.tasks), args.episodes_per_task, **kw)
    wall = time.perf_counter() - t
    policy.report_latents = latents
    episodes = res["overall"]["episodes"]
    row = {"setting": setting, "num_envs": n, "workers": w, "wall_s": round(wall, 2), "episodes": episodes,
           "episodes_per_s": round(episodes / wall, 3), "main_process_cpu_s": round(time.process_time() - c, 2),
           "successes": res["overall"]["successes"], "load_average_after": list(os.getloadavg())}
    if setting == "today":
        row["code"] = f"lapa_learning/eval/evaluate.py of commit {args.baseline}"
    if setting == "filed":
        row["code"] = (f"lapa_learning/eval/evaluate.py of commit {args.baseline}, VLA inference methods of commit "
                       f"{args.filed_inference}")
    row["_outcomes"] = [t_["successes"] for t_ in res["tasks"].values()]
    row["_episodes"] = res.get("episodes")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 task, 4 episodes, settings today,1,4 (a smoke run)")
    ap.add_argument("--settings", default=None, help="comma-separated settings (default: today,1,2,4,8,4x2)")
    ap.add_argument("--baseline", default="28bb350", help="commit of the 'today' evaluator (default: %(default)s)")
    ap.add_argument("--filed-inference", default="a2d5688",
                    help="commit of the VLA inference code of the 'filed' setting (default: %(default)s)")
    ap.add_argument("--episodes-per-task", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", default="continuous", choices=["continuous", "discrete"])
    ap.add_argument("--videos", action="store_true",
                    help="save videos as lapa eval does; with a random policy no episode succeeds, so every frame "
                         "of every episode is then drawn (a trained policy stops that after its first success)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "eval_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.tasks = DEMO_TASKS[:1] if args.quick else DEMO_TASKS
    args.episodes_per_task = args.episodes_per_task or (4 if args.quick else 16)
    settings = (args.settings or ("today,1,4" if args.quick else "today,1,2,4,8,4x2")).split(",")
    tmp = Path(tempfile.mkdtemp(prefix="lapa_eval_speed_"))
    ckpt = make_tiny_checkpoint(tmp / "ckpt", chunk_size=1 if args.head == "discrete" else 4, head=args.head,
                                latent=True, config="tiny-resnet")
    policy = Policy.load(ckpt, device="cpu")
    args.filed_policy = baseline_policy(ckpt, args.filed_inference, "cpu") if "filed" in settings else None
    if "filed" in settings and args.filed_policy is None:
        ap.error(f"setting 'filed' needs git history with commit {args.filed_inference}")
    rows = [run(policy, s, args, tmp) for s in [*settings, settings[0]]]  # the first once more at the end
    first, ref = rows[0], next((r for r in rows if r["setting"] == "1"), None)  # ref: this evaluator, sequential
    for r in rows:
        r["same_successes_per_task_as_first"] = r["_outcomes"] == first["_outcomes"]
        if ref is not None and r["_episodes"] is not None:
            r["identical_episodes_to_sequential"] = r["_episodes"] == ref["_episodes"]  # steps, final states
    for r in rows:
        del r["_outcomes"], r["_episodes"]
    base = [r for r in rows if r["setting"] == first["setting"]]
    base_rate = sum(r["episodes_per_s"] for r in base) / len(base)
    today = [r["episodes_per_s"] for r in rows if r["setting"] == "today"]
    for r in rows:
        r["speedup_vs_first"] = round(r["episodes_per_s"] / base_rate, 2)
        if today:
            r["speedup_vs_today"] = round(r["episodes_per_s"] / (sum(today) / len(today)), 2)
    best = max(rows, key=lambda r: r["episodes_per_s"])
    print(f"{'setting':>8} {'wall s':>8} {'ep/s':>7} {'speedup':>8} {'same successes':>15} {'identical eps':>14}")
    for r in rows:
        print(f"{r['setting']:>8} {r['wall_s']:>8.1f} {r['episodes_per_s']:>7.2f} {r['speedup_vs_first']:>8.2f} "
              f"{str(r['same_successes_per_task_as_first']):>15} {str(r.get('identical_episodes_to_sequential', '-')):>14}")
    result = {"rows": rows, "first_setting": first["setting"], "first_episodes_per_s_mean": round(base_rate, 3),
              "fastest_setting": best["setting"], "fastest_speedup_vs_first": best["speedup_vs_first"],
              "fastest_speedup_vs_today": best.get("speedup_vs_today"),
              "goal_speedup": 2.5, "policy": f"tiny-resnet, {args.head} head"
              + (", chunks of 4" if args.head == "continuous" else "") + ", latent head, random weights",
              "tasks": list(args.tasks), "episodes_per_task": args.episodes_per_task, "max_steps": args.max_steps,
              "eval_seed": args.seed, "videos": args.videos,
              "note": "speedup = episodes/s over the mean of the two runs of the first setting (first and last); the "
                      "CPU is shared with other jobs, so read ratios, not absolute rates",
              "machine": machine(), "command": script_command(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(args.out, result)
    print(f"fastest: {best['setting']}, {best['speedup_vs_first']}x the first setting -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
