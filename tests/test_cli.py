"""The command line: verdicts, exit codes, one-line usage errors, JSON."""

import json
import os
import subprocess
import sys
import time

import pytest

from concurrent_dirty import Scenario
from concurrent_dirty.cli.main import main
from concurrent_dirty.cli.stress import rerun_command

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--algorithm", "xhcg"],
     "expected an algorithm in ['manual', 'ring', 'srcu', 'xchg', 'xchg-fast-pf', 'xchg-pml'], a "
     "mutant name (concurrent-dirty mutants lists them), a kernel protocol (kvm-get, kvm-clear, "
     "kvm-ring: --engine kvm) or module:Class, got 'xhcg'; did you "
     "mean 'xchg'?"),
    (["--engine", "thread"],
     "argument --engine: expected an engine in ['threads', 'processes', 'kvm'], got 'thread'; "
     "did you mean 'threads'?"),
    (["--seconds", "0"], "argument --seconds: expected a number of seconds > 0 and <= 10000000, "
                       "got '0'"),
    (["--seconds", "soon"], "argument --seconds: expected a number of seconds > 0 and <= 10000000, "
                          "got 'soon'"),
    (["--seconds", "inf"], "argument --seconds: expected a number of seconds > 0 and <= 10000000, "
                         "got 'inf'"),
    (["--pages", "0"], "argument --pages: expected a number of pages per slot from 1 to 262144, "
                     "got '0'"),
    (["--writers", "-2"],
     "argument --writers: expected a number of writers from 1 to 64, got '-2'"),
    (["--workload", "random"],
     "argument --workload: expected a workload in ['uniform', 'hot', 'sequential', 'edges', "
     "'word-bits'], got 'random'"),
    (["--algorithm", "no_such_module:Algo"],
     "expected an importable module for algorithm 'no_such_module:Algo', got "
     "ModuleNotFoundError: No module named 'no_such_module'"),
    (["--algorithm", "tests.broken_algorithms:Missing"],
     "expected tests.broken_algorithms to define Missing for algorithm "
     "'tests.broken_algorithms:Missing', got no attribute 'Missing'"),
    (["--algorithm", "tests.broken_algorithms:NotAnAlgorithm"],
     "expected 'tests.broken_algorithms:NotAnAlgorithm' to implement the DirtyLogAlgorithm "
     "protocol, got a class missing mark_page_dirty, shared_words, enable_dirty_logging, "
     "read_side"),
    (["--json", "/no/such/dir/out.json"],
     "expected --json in an existing directory, got '/no/such/dir/out.json' "
     "(/no/such/dir does not exist)"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, shm_guard, argv, message):
    with pytest.raises(SystemExit) if argv[0] in ("--engine", "--seconds", "--pages",
                                                  "--writers", "--workload") \
            else _returns() as box:
        box.value = main(["stress", *argv])
    out, err = capsys.readouterr()
    code = box.value.code if isinstance(box.value, SystemExit) else box.value
    assert code == 2
    assert err == f"concurrent-dirty: error: {message}\n"
    assert out == ""


class _returns:
    value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_no_subcommand_prints_the_help_and_exits_0(capsys):
    code = main([])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out.startswith("usage: concurrent-dirty ")
    assert "{stress,fuzz,replay,mutants,perf}" in out


def test_clean_run_exits_0_with_a_table_and_json(capsys, tmp_path, shm_guard):
    path = tmp_path / "out.json"
    code, out, err = run(capsys, "stress", "--algorithm", "xchg", "--engine", "threads",
                         "--engine", "processes", "--executions", "20", "--seconds", "30",
                         "--json", str(path), "--quiet")
    assert code == 0, out
    assert out.splitlines()[0].split()[:3] == ["algorithm", "engine", "verdict"]
    assert "verdict: PASS (no dirty bit lost; 2 cells, 40 executions, 1280 writes" in out
    report = json.loads(path.read_text())
    assert report["verdict"] == "pass"
    assert [(r["algorithm"], r["engine"]) for r in report["results"]] == [
        ("xchg", "threads"), ("xchg", "processes")]
    for r in report["results"]:
        assert r["writes"] == 640 and r["violations"] == 0 and r["rounds"] > 0
        assert r["seconds"] > 0 and r["executions"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


def test_broken_algorithm_exits_1_with_report_and_rerun(capsys, tmp_path, shm_guard):
    path = tmp_path / "out.json"
    code, out, err = run(capsys, "stress", "--algorithm", BROKEN, "--engine", "processes",
                         "--on-behalf", "0.5", "--seconds", "60", "--json", str(path),
                         "--quiet")
    assert code == 1
    assert "verdict: FAIL (1 violations" in out or "verdict: FAIL (" in out
    assert "LOST DIRTY BIT [nonatomic-clear/processes seed 0 execution" in out
    assert (f"rerun: concurrent-dirty stress --algorithm {BROKEN} --engine processes "
            f"--seed 0 --on-behalf 0.5 --seconds 60.0") in out
    report = json.loads(path.read_text())
    assert report["verdict"] == "fail" and report["results"][0]["violations"] >= 1


def test_rerun_command_names_every_non_default_option():
    s = Scenario(algorithm="manual", engine="processes", seed=7, pages=100,
                 initially_set=True, max_executions=5)
    assert rerun_command(s) == ("concurrent-dirty stress --algorithm manual --engine processes "
                                "--seed 7 --pages 100 --executions 5 --initially-set")


def _descendants(pid):
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(entry))
    return kids


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigint_stops_children_and_unlinks_shared_memory(shm_guard):
    proc = subprocess.Popen(
        [sys.executable, "-m", "concurrent_dirty", "stress", "--engine", "processes",
         "--algorithm", "xchg", "--seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stderr.readline()  # the first progress line: writers are running
        assert "[xchg/processes]" in line, line
        children = _descendants(proc.pid)
        assert len(children) >= 2
        os.killpg(proc.pid, 2)  # Ctrl-C reaches the whole process group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted: every job's writers stopped, shared memory unlinked" in err
    assert "xchg" in out  # the partial table still prints
    # The resource tracker notices its parent's exit a moment later.
    deadline = time.monotonic() + 10
    while [c for c in children if _alive(c)] and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {c: _cmdline(c) for c in children if _alive(c)}
    assert not left, f"processes left behind: {left}"

