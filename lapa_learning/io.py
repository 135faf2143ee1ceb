"""The one atomic writer: a file or directory is either the old one or the complete new one, never half.

    atomic_write_bytes(path, data)   atomic_write_text(path, text)   atomic_write_json(path, obj)
    with atomic_path(path) as tmp:   # a third-party writer (pyarrow, np.savez, safetensors) writes `tmp`
        pq.write_table(table, tmp)
    with atomic_path(run / "step_0005", directory=True) as tmp:   # a whole directory, e.g. a checkpoint
        save_file(weights, tmp / "model.safetensors")

How: the content goes to a hidden temporary sibling (same filesystem), is fsynced, and is renamed onto `path`
with os.replace, after which the parent directory is fsynced. On an exception the temporary is removed and
`path` is untouched. A process killed mid-write (SIGKILL) leaves `path` as it was, plus at worst a hidden
`.<name>.*.tmp` sibling. Replacing an existing *directory* takes two renames (old away, new in): a kill between
them leaves no `path` but the complete old one as `.<name>.*.old`, which recover_replaced_dir(path) puts back;
the next directory written to `path` removes such leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory (the directories last)."""
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync(Path(root) / name)
            _fsync(Path(root))
    else:
        _fsync(path)


def _umask() -> int:
    """This process's umask (read from /proc where it can be, as setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_usual_mode(path: Path) -> None:
    """mkdtemp/mkstemp create 0700 / 0600 whatever the umask, and some writers create their files 0600
    (safetensors); every file and directory of the result should have the mode an ordinary mkdir / open would give
    it (0777 / 0666 less the umask), so that other users or a container's uid can read a checkpoint as they could
    any other file the user writes."""
    paths = [path]
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            paths += [Path(root, name) for name in dirs + files]
    mask = _umask()
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _leftovers(path: Path) -> list[Path]:
    """The `.<name>.XXXXXXXX.tmp` / `.old` directories that interrupted replacements of directory `path` left."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(tmp|old)")
    return [p for p in path.parent.glob(f".{glob.escape(path.name)}.*") if pattern.fullmatch(p.name) and p.is_dir()]


def interrupted_replacement(path: str | os.PathLike) -> Path | None:
    """The last complete version of directory `path` that a kill between the two renames replacing it
    (atomic_path(directory=True)) left as a non-empty `.<name>.*.old` while `path` is missing (the one with the
    newest files if several: an older one may be half removed); None when there is none. (An empty .old is one
    mkdtemp made before the kill; the .tmp beside it may be complete but nothing says so.)"""
    path = Path(path)
    if path.exists() or path.is_symlink():
        return None
    olds = [p for p in _leftovers(path) if p.name.endswith(".old") and any(p.iterdir())]
    return max(olds, key=lambda p: max(f.stat().st_mtime for f in p.iterdir())) if olds else None


def recover_replaced_dir(path: str | os.PathLike) -> Path | None:
    """Put back the interrupted_replacement of `path` (by its writer, under its lock: a reader only reads it),
    warn, remove the other leftovers, and return `path`; None when there is nothing to recover."""
    import warnings

    path = Path(path)
    old = interrupted_replacement(path)
    if old is None:
        return None
    os.replace(old, path)
    for p in _leftovers(path):
        _remove(p)
    warnings.warn(f"{path}: missing after an interrupted save; restored the last complete version from {old.name}",
                  stacklevel=2)
    return path


def set_aside(root: Path, entries: list[Path], name: str) -> None:
    """Move `entries` (paths inside `root`) to root/<name>, each at its path relative to `root`, so that put_back
    can undo it. Through root/<name>.partial: a kill halfway leaves a partial copy that only ever moves back, never
    one that looks complete."""
    partial = root / f"{name}.partial"
    partial.mkdir(exist_ok=True)
    for entry in entries:
        (partial / entry.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(entry, partial / entry.relative_to(root))
    os.replace(partial, root / name)


def put_back(root: Path, name: str, entries) -> bool:
    """Undo an unfinished set_aside(root, ..., name): delete what entries(root) lists now (what replaced the set-aside
    content), move that content back; True when there was any. Each step can be cut by a kill and redone; after
    discard_set_aside began there is nothing to put back."""
    discard, aside, partial = (root / f"{name}{suffix}" for suffix in (".discard", "", ".partial"))
    _remove(discard)
    if aside.is_dir():
        for entry in entries(root):
            _remove(entry)
        os.replace(aside, partial)
    if not partial.is_dir():
        return False
    for entry in entries(partial):
        os.replace(entry, root / entry.relative_to(partial))
    shutil.rmtree(partial)
    return True


def discard_set_aside(root: Path, name: str) -> None:
    """Make what replaced root/<name> final: delete the set-aside content (renamed first: a kill mid-deletion leaves
    nothing that put_back would take for complete)."""
    if (root / name).is_dir():
        os.replace(root / name, root / f"{name}.discard")
        shutil.rmtree(root / f"{name}.discard")


_STALE: dict[Path, list[Path]] = {}  # path -> what to delete once atomic_path has replaced it (delete_on_replace)


def delete_on_replace(path: str | os.PathLike, stale: Iterable[str | os.PathLike] = ()) -> None:
    """Delete `stale` once atomic_path next replaces `path` in this process (the tensorboard events of a run that
    --overwrite replaces go when the new run saves its first checkpoint, not before). No `stale`: forget them."""
    key, stale = Path(path).resolve(), [Path(p) for p in stale]
    if stale:
        _STALE[key] = stale
    else:
        _STALE.pop(key, None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write instead of `path`; on a clean exit it replaces `path` atomically.

    directory=False: the temporary path does not exist yet (the writer creates the file; its suffix is kept, for
    writers that look at it). directory=True: the temporary directory exists and is empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        tmp = Path(name)
        tmp.unlink()  # the writer creates it (some writers refuse to overwrite)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {path}: the writer did not create {tmp}")
        _give_usual_mode(tmp)
        _fsync_tree(tmp)
        if directory and path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old)  # a directory cannot be replaced onto a non-empty one in one rename
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        _remove(tmp)
        raise
    for p in (_leftovers(path) if directory else []) + _STALE.pop(path.resolve(), []):
        _remove(p)  # what killed writers left, and what delete_on_replace asked


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> None:
    """JSON with indent=2 and a final newline, unless dumps_kwargs say otherwise (e.g. indent=None)."""
    dumps_kwargs.setdefault("indent", 2)
    newline = "\n" if dumps_kwargs["indent"] is not None else ""
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + newline)


class LockUnsupported(OSError):
    """The filesystem refuses the lock itself (NFS without lockd, some FUSE mounts), not because it is held."""


def try_exclusive_lock(path: str | os.PathLike) -> int | None:
    """Open `path` (a regular file, created if missing; opened for writing, as NFS needs) and take an exclusive
    flock on it without waiting. Returns the descriptor, which holds the lock until it is closed or the process
    ends (kill -9 included), or None when another process holds it. LockUnsupported when the filesystem cannot
    lock: the caller decides whether to go on without."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise LockUnsupported(err.errno, err.strerror) from None
    return fd


def lock_or_warn(path: str | os.PathLike, busy: Exception, without: str) -> int | None:
    """try_exclusive_lock for a writer that may go on unlocked: raises `busy` when another process holds the lock;
    on a filesystem that cannot lock, warns "<path>: cannot lock (<reason>); <without>" and returns None."""
    import warnings

    try:
        fd = try_exclusive_lock(path)
    except LockUnsupported as err:
        warnings.warn(f"{path}: cannot lock ({err.strerror}); {without}", stacklevel=3)
        return None
    if fd is None:
        raise busy
    return fd
