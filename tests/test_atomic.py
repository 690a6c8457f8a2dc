"""Atomic writes (fastnn.atomic): which temporary files a save removes, and which it
never touches. The rule is in fastnn/atomic.py's docstring; a save killed by SIGKILL
is in tests/test_checkpoint.py."""

import os
import subprocess
import sys
import time

import pytest

import fastnn
from fastnn import atomic, datasets
from fastnn.layers import Dense

pytestmark = pytest.mark.skipif(atomic.fcntl is None, reason="needs flock (POSIX)")

OLD = time.time() - 2 * atomic.STALE_AFTER


def leftover(folder, name="model.npz", age=None, **owner):
    """A temporary file for ``name`` as a writer described by ``owner`` would leave it."""
    path = folder / atomic.temporary_name(name, **owner)
    path.write_bytes(b"PK half a checkpoint")
    if age is not None:
        os.utime(path, (age, age))
    return path


def dead_pid():
    """The pid of a process that has ended."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def locked(path):
    """Hold ``path``'s lock as a live writer does (another open file: another owner)."""
    fd = os.open(path, os.O_RDWR)
    atomic.fcntl.flock(fd, atomic.fcntl.LOCK_EX)
    return fd


def test_this_hosts_leftover_goes_once_its_writer_is_dead(tmp_path):
    gone = leftover(tmp_path, pid=dead_pid())
    alive = leftover(tmp_path, pid=os.getppid())  # pytest's parent: a live process
    mine = leftover(tmp_path)  # this process: another thread may be writing it
    removed = atomic.remove_leftovers(str(tmp_path), "model.npz")
    assert removed == [str(gone)]
    assert alive.exists() and mine.exists()


def test_a_locked_leftover_is_never_removed(tmp_path):
    """The lock is a live writer's, whatever else the name says (a reused pid, another
    host, an old file: a writer stalled on a slow disk)."""
    paths = [leftover(tmp_path, pid=dead_pid()), leftover(tmp_path, host="elsewhere", age=OLD),
             leftover(tmp_path, boot="deadbeef", age=OLD)]
    fds = [locked(path) for path in paths]
    try:
        assert atomic.remove_leftovers(str(tmp_path), "model.npz") == []
        assert all(path.exists() for path in paths)
    finally:
        for fd in fds:
            os.close(fd)
    assert sorted(atomic.remove_leftovers(str(tmp_path), "model.npz")) == sorted(map(str, paths))


def test_another_hosts_leftover_goes_only_when_an_hour_old(tmp_path):
    """Its pid means nothing here, and its file system's locks may not reach this host."""
    recent = leftover(tmp_path, pid=dead_pid(), host="node-7")
    old = leftover(tmp_path, pid=dead_pid(), host="node-7", age=OLD)
    assert atomic.remove_leftovers(str(tmp_path), "model.npz") == [str(old)]
    assert recent.exists()


def test_a_leftover_from_before_a_reboot_goes_whatever_its_pid(tmp_path):
    path = leftover(tmp_path, pid=os.getppid(), boot="deadbeef")  # that pid is reused now
    if atomic.temporary_name("x").split("-")[2].startswith("deadbeef"):
        pytest.skip("this boot's id begins with deadbeef")
    assert atomic.remove_leftovers(str(tmp_path), "model.npz") == [str(path)]


def test_the_old_form_goes_only_when_an_hour_old(tmp_path):
    """fastnn wrote .NAME.<12 hex digits>.tmp before, without a lock or an owner."""
    recent, old = tmp_path / ".model.npz.0123456789ab.tmp", tmp_path / ".model.npz.ba9876543210.tmp"
    for path in (recent, old):
        path.write_bytes(b"PK")
    os.utime(old, (OLD, OLD))
    assert atomic.remove_leftovers(str(tmp_path), "model.npz") == [str(old)]
    assert recent.exists()


def test_nothing_but_fastnns_own_leftovers_of_that_path_is_touched(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"yours")
    kept = [
        leftover(tmp_path, name="other.npz", pid=dead_pid()),  # another path's
        tmp_path / ".model.npz.backup.tmp",  # not our form
        tmp_path / ".model.npz.0123456789ab-1-00000000@h.tmp.bak",
        tmp_path / "model.npz.0123456789ab.tmp",  # no leading dot
        tmp_path / ".model.npz.0123456789AB.tmp",  # not lower-case hex
    ]
    for path in kept[1:]:
        path.write_bytes(b"yours")
    folder = tmp_path / ".model.npz.00000000000a.tmp"  # a folder of our form
    folder.mkdir()
    link = tmp_path / atomic.temporary_name("model.npz", pid=dead_pid())  # a link of our form
    link.symlink_to(target)
    fifo = tmp_path / atomic.temporary_name("model.npz", pid=dead_pid())  # a pipe of our form
    os.mkfifo(fifo)
    for path in [*kept, folder, link, fifo, target]:
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    assert atomic.remove_leftovers(str(tmp_path), "model.npz") == []
    assert all(path.exists() for path in kept) and folder.is_dir() and link.is_symlink()
    assert fifo.exists()
    assert target.read_bytes() == b"yours"


def test_a_live_savers_temp_file_survives_another_save_to_the_same_path(tmp_path):
    """Another process is inside a save (its temporary file written, not yet renamed)
    while this one saves to the same path: its file stays, and its save completes."""
    path = tmp_path / "model.npz"
    X, y = datasets.moons(40, seed=0)
    ours = fastnn.Sequential([Dense(2, 4, "relu"), Dense(4, 1, "sigmoid")], seed=1)
    ours.save(path)
    script = f"""
import sys
import numpy as np
import fastnn
from fastnn import checkpoint
model = fastnn.load({str(path)!r})
model.fit(*fastnn.datasets.moons(40, seed=0), epochs=3)
real_savez = np.savez
def savez_and_wait(file, **arrays):
    real_savez(file, **arrays)
    file.flush()
    print("written", flush=True)
    sys.stdin.readline()
checkpoint.np.savez = savez_and_wait
model.save({str(path)!r})
print("saved", flush=True)
"""
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout.readline() == "written\n", child.stderr.read()
            theirs = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            assert len(theirs) == 1
            ours.fit(X, y, epochs=1)
            ours.save(path)
            assert theirs[0].exists()
            child.stdin.write("\n")
            child.stdin.flush()
            out, errors = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == 0 and out == "saved\n", errors
    assert os.listdir(tmp_path) == ["model.npz"]
    assert fastnn.load(path).epochs_trained == 3  # theirs, the last save to finish
