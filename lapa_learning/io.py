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
them leaves no `path` but the complete old one as `.<name>.*.old`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


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


def _give_usual_mode(path: Path, directory: bool) -> None:
    """mkdtemp/mkstemp create 0700 / 0600 whatever the umask; the result should have the mode an ordinary
    mkdir / open would give it (0777 / 0666 less the umask), so that other users or a container's uid can read a
    checkpoint as they could any other file the user writes."""
    if path.is_symlink():
        return
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
        _give_usual_mode(tmp, tmp.is_dir())
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
