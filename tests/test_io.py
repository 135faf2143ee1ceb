"""lapa_learning.io: the one atomic writer (files, third-party writers, directories; failures and kills)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lapa_learning.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_bytes_text_json(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "b.txt", "hé")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "hé"
    assert (tmp_path / "c.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    atomic_write_json(tmp_path / "c.json", {"y": 1}, indent=None)
    assert (tmp_path / "c.json").read_text() == '{"y": 1}'
    assert _names(tmp_path) == ["a.bin", "c.json", "sub"]


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".parquet"  # writers that look at the suffix
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["labels.parquet"]


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_path(tmp_path / "x.npz"):
            pass
    assert _names(tmp_path) == []


def test_directory_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "step_0000005"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "b").write_text("2")
            raise KeyboardInterrupt
    assert _names(target) == ["a"] and _names(tmp_path) == ["step_0000005"]
    with atomic_path(target, directory=True) as tmp:  # replacing an existing directory
        (tmp / "b").write_text("2")
    assert _names(target) == ["b"] and _names(tmp_path) == ["step_0000005"]


CHILD = r"""
import sys, time
from lapa_learning.io import atomic_path
path, size = sys.argv[1], int(sys.argv[2])
with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
        for i in range(size):
            f.write(b"n" * 1024)
            f.flush()
            if i == size // 2:
                print("half", flush=True)
                time.sleep(float(sys.argv[3]))
print("done", flush=True)
"""


@pytest.mark.parametrize("pause", [30.0, 0.0])
def test_a_kill_leaves_the_old_or_the_new_file_never_half(tmp_path, pause):
    path = tmp_path / "big.bin"
    path.write_bytes(b"o" * 1000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "512", str(pause)], stdout=subprocess.PIPE,
                             text=True, env=env)
    assert child.stdout.readline().strip() == "half"
    if pause:  # killed in the middle of writing: the old file stays
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert path.read_bytes() == b"o" * 1000
    else:  # let it finish: the new file, complete
        assert child.stdout.readline().strip() == "done"
        child.wait(timeout=30)
        assert path.read_bytes() == b"n" * 1024 * 512
    leftovers = [n for n in _names(tmp_path) if n != "big.bin"]
    assert all(n.startswith(".big.bin.") and n.endswith(".tmp.bin") for n in leftovers), leftovers
    assert len(leftovers) == (1 if pause else 0)


def test_kill_at_random_moments_never_leaves_a_partial_file(tmp_path):
    """Kill a writer that rewrites the file in a loop at several moments: the file is always one whole version."""
    path = tmp_path / "state.json"
    loop = ("import sys, json\nfrom lapa_learning.io import atomic_write_json\n"
            "i = 0\nwhile True:\n    atomic_write_json(sys.argv[1], {'i': i, 'pad': 'x' * 200000})\n"
            "    i += 1\n    print(i, flush=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.05, 0.2, 0.35):
        child = subprocess.Popen([sys.executable, "-c", loop, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        child.stdout.readline()  # at least one version exists
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        data = json.loads(path.read_text())
        assert data["pad"] == "x" * 200000 and data["i"] >= 0


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_get_the_modes_of_the_umask_not_mkdtemp_s_0700(tmp_path, umask):
    """A checkpoint directory (mkdtemp: 0700) and a file written through atomic_path are readable by whoever the
    umask lets read what the user writes (another user, a container's uid), as with mkdir / open."""
    from lapa_learning.io import _umask

    old = os.umask(umask)
    try:
        assert _umask() == umask
        with atomic_path(tmp_path / "checkpoint", directory=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"w")
        with atomic_path(tmp_path / "checkpoint", directory=True) as tmp:  # replacing an existing one
            (tmp / "model.safetensors").write_bytes(b"w2")
        atomic_write_json(tmp_path / "record.json", {"a": 1})
        with atomic_path(tmp_path / "x.npz") as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # a writer that creates its file 0600
            os.close(fd)
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "checkpoint") == 0o777 & ~umask
    assert mode(tmp_path / "checkpoint" / "model.safetensors") == 0o666 & ~umask
    assert mode(tmp_path / "record.json") == 0o666 & ~umask
    assert mode(tmp_path / "x.npz") == 0o666 & ~umask
