"""How the stages run: in dependency order, `jobs` at a time, each a `lapa ...` subprocess (or a small in-process
call) with its output in <out>/logs/<stage>.log.

A stage that finished before with the same arguments on the same finished inputs (its marker
<out>/stages/<stage>.json records both) is reused, also across invocations with other methods or options in the
same --out: one that re-ran a shared stage makes its dependants run again.

A training stage that was interrupted (a kill, a failed sibling) resumes from its last checkpoint (training
resumes exactly: tests/test_vla_train.py) or, with none, starts over. Only an interrupted attempt with the same
arguments and the same finished inputs is resumed: each start writes <out>/stages/<stage>.started.json (its
arguments and the digests of its dependencies' markers), removed when the stage finishes; a stage that re-runs
for any other reason (its arguments changed, or a stage it depends on ran again) first deletes what an earlier
run left in its run directory, so it never continues from a different run.

One run at a time per --out: execute() holds an exclusive lock on <out>/.lock and hands it to every stage
process, so the lock lasts while any of them runs (a stage that outlives a killed runner still holds it); the kernel
releases it when the last holder ends, so no stale lock is left. A second run in the same --out is refused at once."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from lapa_learning.demo.plan import Plan, Stage
from lapa_learning.errors import ConfigError
from lapa_learning.io import atomic_write_json


@contextmanager
def exclusive(out: Path):
    """Hold <out>/.lock while running: two runs in one --out would train into the same directories. Yields the
    lock's file descriptor (stage processes inherit it)."""
    import fcntl

    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / ".lock", "a+")
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot be the demo's directory ({err.strerror or err}); expected a writable "
                          f"directory path") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"--out {out}: {holder} is running in it (or a stage it started still runs); wait for it "
                          "to finish or choose another --out")
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(sys.argv)})")
        f.flush()
        yield f.fileno()
    finally:
        f.close()  # closing releases the lock


def execute(plan: Plan, jobs: int) -> str | None:
    """Run the stages in dependency order, `jobs` at a time. Returns the name of a failed stage, or None."""
    with exclusive(plan.out) as plan.lock_fd:
        try:
            return _execute(plan, jobs)
        finally:
            plan.lock_fd = None


def _execute(plan: Plan, jobs: int) -> str | None:
    (plan.out / "logs").mkdir(parents=True, exist_ok=True)
    (plan.out / "stages").mkdir(parents=True, exist_ok=True)
    _refuse_foreign_outputs(plan)
    done: dict[str, bool] = {}

    def reusable(name: str) -> bool:  # finished with the same arguments, and so did everything it depends on
        if name not in done:
            stage = plan.stages[name]
            done[name] = _is_done(plan, stage) and all(reusable(d) for d in stage.deps)
        return done[name]

    for stage in plan.stages.values():
        if reusable(stage.name):
            stage.status = "reused"
    running: dict[Future, Stage] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            for stage in plan.stages.values():
                ready = stage.status == "waiting" and all(
                    plan.stages[d].status in ("done", "reused") for d in stage.deps)
                if ready and len(running) < jobs:
                    stage.status, stage.started = "running", time.time()
                    running[pool.submit(_run_stage, plan, stage)] = stage
            if not running:
                break
            done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            for future in done:
                stage = running.pop(future)
                stage.seconds = time.time() - stage.started
                stage.status = "done" if future.result() == 0 else "failed"
                clear = "\r\033[K" if sys.stdout.isatty() else ""
                print(f"{clear}[{stage.status:>6}] {stage.name} ({stage.seconds / 60:.1f} min)", flush=True)
            if any(s.status == "failed" for s in plan.stages.values()):
                for stage in running.values():  # stop the sibling stage; its outputs are kept for a resume
                    if stage.process is not None and stage.process.poll() is None:
                        stage.process.terminate()
                    stage.status = "stopped"
                return next(s.name for s in plan.stages.values() if s.status == "failed")
            _print_progress(plan, running.values())
    for stage in plan.stages.values():
        if stage.status == "reused":
            print(f"[reused] {stage.name}")
    return None


def _refuse_foreign_outputs(plan: Plan) -> None:
    """A stage deletes its outputs before it runs again (fresh ones, and the run it does not resume): only what an
    attempt of it wrote (it left a marker or a start record), never a folder that was in --out before."""
    foreign = [path for stage in plan.stages.values()
               if not marker(plan, stage).exists() and not _started(plan, stage).exists()
               for path in ((*stage.outputs,) if stage.fresh else ()) + ((stage.resume_dir,) if stage.resume_dir else ())
               if path.is_file() or (path.is_dir() and any(path.iterdir()))]
    if foreign:
        raise ConfigError(f"--out {plan.out} holds {', '.join(str(p) for p in foreign[:3])}"
                          f"{f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''}, which no demo stage wrote "
                          f"and which the demo would replace; move it away or choose another --out")


def _restart_flags(stage: Stage) -> list[str]:
    """For a `vla pretrain` stage resuming an interrupted attempt of itself: --resume from its training state,
    or --overwrite when the kill came before the first one was saved. Not part of the stage's arguments, so the
    marker of the finished stage matches an uninterrupted run's. (A `laq train` run resumes by itself.)"""
    if stage.resume_dir is None or not (stage.resume_dir / "checkpoint").exists():
        return []
    return ["--resume"] if (stage.resume_dir / "checkpoint" / "training_state.pt").is_file() else ["--overwrite"]


def marker(plan: Plan, stage: Stage) -> Path:
    """The record of a finished stage: {"args", "seconds", "deps": {dependency: digest of its marker}}."""
    return plan.out / "stages" / f"{stage.name}.json"


def _dep_digests(plan: Plan, stage: Stage) -> dict[str, str | None]:
    """The finished inputs a stage ran on: a digest of each dependency's marker (which changes whenever that
    stage runs again: it records the run's time)."""
    out = {}
    for d in stage.deps:
        try:
            out[d] = hashlib.sha256(marker(plan, plan.stages[d]).read_bytes()).hexdigest()[:16]
        except OSError:
            out[d] = None
    return out


def _attempt(plan: Plan, stage: Stage) -> dict:
    """What identifies one attempt at a stage: its arguments and the finished inputs it starts from."""
    return {"args": stage.args, "deps": _dep_digests(plan, stage)}


def _started(plan: Plan, stage: Stage) -> Path:
    return plan.out / "stages" / f"{stage.name}.started.json"


def _resumes(plan: Plan, stage: Stage, attempt: dict) -> bool:
    """True when the last attempt at this stage was this very attempt and did not finish (a kill)."""
    try:
        return json.loads(_started(plan, stage).read_text()) == attempt
    except (OSError, ValueError):
        return False


def _is_done(plan: Plan, stage: Stage) -> bool:
    """Finished with these arguments on the inputs that are there now. A marker written before markers recorded
    their inputs counts as done when it is at least as new as each dependency's (as make judges)."""
    path = marker(plan, stage)
    try:
        record = json.loads(path.read_text())
        if record["args"] != stage.args:
            return False
        if "deps" in record:
            return record["deps"] == _dep_digests(plan, stage)
        return all(path.stat().st_mtime >= marker(plan, plan.stages[d]).stat().st_mtime for d in stage.deps)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _run_stage(plan: Plan, stage: Stage) -> int:
    attempt = _attempt(plan, stage)
    resume = _resumes(plan, stage, attempt)
    if stage.resume_dir is not None and not resume and stage.resume_dir.exists():
        shutil.rmtree(stage.resume_dir)  # another run's (other arguments or inputs): never continue from it
    atomic_write_json(_started(plan, stage), attempt)
    if stage.fresh:
        for path in stage.outputs:
            if path.exists():
                shutil.rmtree(path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    log = plan.out / "logs" / f"{stage.name}.log"
    with open(log, "w") as f:
        args = [*stage.args, *_restart_flags(stage)] if resume and not stage.call else stage.args  # as run
        args = [*args, *stage.speed]
        f.write(("# in process: " if stage.call else "$ lapa ") + " ".join(shlex.quote(a) for a in args) + "\n")
        f.flush()
        if stage.call is not None:  # in this worker thread: no redirect_stdout, which would swap the process's
            try:                    # sys.stdout under the other threads (two at once left it a closed log file)
                message = stage.call()
                if message:
                    f.write(message + "\n")
                code = 0
            except Exception:  # noqa: BLE001 - reported in the stage's log like a failed subprocess
                f.write(traceback.format_exc())
                code = 1
        else:
            stage.process = subprocess.Popen([sys.executable, "-m", "lapa_learning.cli", *args], stdout=f,
                                             pass_fds=() if plan.lock_fd is None else (plan.lock_fd,),
                                             stderr=subprocess.STDOUT, env=env)
            code = stage.process.wait()
    if code == 0:
        atomic_write_json(marker(plan, stage), {**attempt, "seconds": time.time() - stage.started})
        _started(plan, stage).unlink(missing_ok=True)
    return code


def _print_progress(plan: Plan, running) -> None:
    finished = sum(s.status in ("done", "reused") for s in plan.stages.values())
    parts = []
    for stage in running:
        parts.append(f"{stage.name}: {_last_progress(plan.out / 'logs' / f'{stage.name}.log')}")
    line = f"[{finished}/{len(plan.stages)}] " + " | ".join(parts)
    width = max(40, _terminal_width() - 1)
    if sys.stdout.isatty():
        print("\r\033[K" + line[:width], end="", flush=True)
    else:  # a log file: one line every ~30 s is plenty
        now = time.time()
        if now - getattr(_print_progress, "last", 0.0) > 30:
            _print_progress.last = now
            print(line[:200], flush=True)


def _last_progress(log: Path) -> str:
    """The newest progress-bar state in a log (tqdm writes carriage returns)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 400))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "starting"
    pieces = [p.strip() for p in tail.replace("\n", "\r").split("\r") if p.strip()]
    return (pieces[-1] if pieces else "starting")[:70]


def _terminal_width() -> int:
    return shutil.get_terminal_size((120, 20)).columns
