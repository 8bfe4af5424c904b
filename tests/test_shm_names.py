"""Shared-memory segments are named ``cd-<pid>-<hex>``; a run sweeps the
segments of dead runs from /dev/shm and never touches anything else."""

import os
import re
import subprocess
import sys

import pytest

from concurrent_dirty.model.arena import Arena, Layout, new_segment_name, sweep_dead_segments

needs_dev_shm = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")


def _dead_pid():
    """The pid of a process that existed, exited and was reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def _touch(directory, name):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(b"\0" * 64)
    return path


def test_names_are_short_and_name_their_creator():
    name = new_segment_name()
    assert re.fullmatch(rf"cd-{os.getpid()}-[0-9a-f]{{8}}", name), name
    assert len("/" + name) <= 31  # macOS's PSHMNAMLEN, the tightest limit


def test_sweep_removes_only_dead_runs_segments_and_says_so(tmp_path, capsys):
    dead = _dead_pid()
    for name in (f"cd-{dead}-abc", f"cd-{os.getpid()}-x", f"cd-{os.getppid()}-1f",
                 f"psm_{dead}", f"cd-{dead}", f"cd-{dead}-xyz!", f"xcd-{dead}-abc"):
        _touch(tmp_path, name)
    assert sweep_dead_segments(str(tmp_path)) == [f"cd-{dead}-abc"]
    assert capsys.readouterr().err == (
        f"concurrent-dirty: removed 1 shared-memory segment(s) left by dead runs: "
        f"cd-{dead}-abc\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f"cd-{os.getpid()}-x", f"cd-{os.getppid()}-1f", f"psm_{dead}", f"cd-{dead}",
        f"cd-{dead}-xyz!", f"xcd-{dead}-abc"])


def test_sweep_is_silent_when_nothing_is_removed(tmp_path, capsys):
    _touch(tmp_path, f"cd-{os.getpid()}-ab")
    assert sweep_dead_segments(str(tmp_path)) == []
    assert capsys.readouterr().err == ""


@needs_dev_shm
def test_a_shared_arena_sweeps_dev_shm_before_it_creates(capsys, shm_guard):
    dead = _dead_pid()
    stale = _touch("/dev/shm", f"cd-{dead}-abc")
    mine = _touch("/dev/shm", f"cd-{os.getpid()}-x")
    other = _touch("/dev/shm", f"concurrent-dirty-test-{os.getpid()}")
    try:
        layout = Layout()
        layout.add("w", 4)
        with Arena(layout, shared=True) as arena:
            assert re.fullmatch(rf"cd-{os.getpid()}-[0-9a-f]{{8}}", arena.name or "")
            assert os.path.exists(os.path.join("/dev/shm", arena.name or ""))
        assert not os.path.exists(stale)
        assert os.path.exists(mine) and os.path.exists(other)
        assert f"cd-{dead}-abc" in capsys.readouterr().err
    finally:
        for path in (stale, mine, other):
            if os.path.exists(path):
                os.unlink(path)
