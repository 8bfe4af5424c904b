"""Issue 19: a campaign is one value, whatever the number of jobs: the same
errors, the same report shape, merged counts that are sums, a hang that
ends the run in every job, finished reports kept on Ctrl-C."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from concurrent_dirty.cli.main import main
from tests.test_signals import (
    ROOT,
    START_TIMEOUT,
    _assert_interrupted,
    _finish,
    _wait_for_line,
)

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"
HANGS_IN_GET = "tests.broken_algorithms:HangsInGet"


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- usage errors and conflicts: one line, exit 2, whatever --jobs is ------------------

CONFLICTS = [
    (["--scheduler", "random", "--depth", "2"], "expected --depth with --scheduler pct only"),
    (["--scheduler", "auto", "--depth", "2"], "expected --depth with --scheduler pct only"),
    (["--scheduler", "pct", "--preemptions", "2"],
     "expected --preemptions with --scheduler dfs only"),
    (["--initially-set", "--no-initially-set"],
     "expected one of --initially-set and --no-initially-set, got both"),
    (["--no-pml", "--pml"], "expected one of --pml and --no-pml, got both"),
    (["--fast-page-fault", "--no-fast-page-fault"],
     "expected one of --fast-page-fault and --no-fast-page-fault, got both"),
    (["--algorithm", "xchg-pml", "--no-pml"],
     "expected no --no-pml with --algorithm xchg-pml (its model turns it on)"),
    (["--algorithm", "xchg-fast-pf", "--no-fast-page-fault"],
     "expected no --no-fast-page-fault with --algorithm xchg-fast-pf"),
    (["--algorithm", "xchg", "--ring-entries", "8"],
     "expected a ring algorithm (--algorithm ring) with --ring-entries, got xchg"),
    (["--algorithm", "ring", "--pml"], "expected the dirty ring or PML, got both"),
    (["--scheduler", "hypothesis", "--jobs", "2"],
     "expected --jobs 1 with --scheduler hypothesis"),
]


@pytest.mark.parametrize("jobs", [[], ["--jobs", "1"], ["--jobs", "2"]])
@pytest.mark.parametrize("argv, message", CONFLICTS)
def test_a_conflict_is_one_line_and_exit_2_whatever_jobs(capsys, tmp_path, argv, message,
                                                         jobs):
    if "--jobs" in argv and jobs:
        pytest.skip("--jobs given by the case")
    path = tmp_path / "out.json"
    code, out, err = run(capsys, "fuzz", *argv, *jobs, "--seconds", "0.2", "--quiet",
                         "--json", str(path))
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("concurrent-dirty: error: "), err
    assert message in err
    assert out == "" and not path.exists()


def test_the_options_that_go_together_still_run(capsys):
    code, out, err = run(capsys, "fuzz", "--algorithm", "ring", "--ring-entries", "8",
                         "--no-pml", "--scheduler", "pct", "--depth", "2", "--executions", "5",
                         "--jobs", "1", "--quiet")
    assert code == 0, (out, err)


def test_hypothesis_without_jobs_gets_one_job_and_no_note(capsys, tmp_path):
    path = tmp_path / "h.json"
    code, out, err = run(capsys, "fuzz", "--algorithm", "xchg", "--scheduler", "hypothesis",
                         "--executions", "3", "--quiet", "--json", str(path))
    assert code == 0, (out, err)
    assert "runs in one process" not in err
    assert json.loads(path.read_text())["jobs"] == 1


# -- one report: the same shape, counts that add up -----------------------------------

def _fuzz_json(capsys, tmp_path, *argv):
    path = tmp_path / f"fuzz{len(list(tmp_path.iterdir()))}.json"
    code, out, err = run(capsys, "fuzz", *argv, "--quiet", "--json", str(path))
    return code, out, json.loads(path.read_text())


def test_one_job_and_two_jobs_give_the_same_report_shape(capsys, tmp_path):
    argv = ["--algorithm", "xchg", "--executions", "60", "--seconds", "30"]
    code1, out1, one = _fuzz_json(capsys, tmp_path, *argv, "--jobs", "1")
    code2, out2, two = _fuzz_json(capsys, tmp_path, *argv, "--jobs", "2")
    assert code1 == code2 == 0
    assert set(one) == set(two)
    assert one["interrupted"] is False and two["interrupted"] is False
    assert one["verdict"] == two["verdict"] == "pass"
    r1, r2 = one["results"][0], two["results"][0]
    assert set(r1) == set(r2)
    for key in ("algorithm", "scheduler", "status", "executions", "violations"):
        assert r1[key] == r2[key], key
    assert [line.split(":")[0] for line in out1.splitlines()] == \
        [line.split(":")[0] for line in out2.splitlines()]


def test_two_jobs_portfolio_tries_are_the_sum_of_both_jobs(capsys, tmp_path):
    code, out, data = _fuzz_json(capsys, tmp_path, "--algorithm", "xchg", "--executions", "80",
                                 "--seconds", "60", "--jobs", "2")
    assert code == 0
    result = data["results"][0]
    split = result["job_split"]
    assert len(split) == 2
    assert result["executions"] == sum(s["executions"] for s in split) == 80
    tries = result["portfolio"]["executions"]
    assert sum(tries.values()) == 80, tries
    line = next(x for x in out.splitlines() if "auto portfolio tried:" in x)
    for member in ("random", "pct"):
        assert f"{member} {tries[member]}" in line, line


def test_two_jobs_failure_time_and_execution_are_the_finders(capsys, tmp_path):
    code, out, data = _fuzz_json(capsys, tmp_path, "--algorithm", BROKEN, "--scheduler",
                                 "random", "--executions", "20000", "--seconds", "60",
                                 "--jobs", "2")
    assert code == 1
    result = data["results"][0]
    finder = result["first_failure_job"]
    job = next(s for s in result["job_split"] if s["job"] == finder)
    assert job["status"] == "FAIL" and job["token"] == result["token"]
    assert result["first_failure_execution"] <= job["executions"]
    assert result["seconds"] == job["seconds"]
    others = [s for s in result["job_split"] if s["job"] != finder]
    # The other job was stopped, and did not minimise a failure of its own.
    assert all(s["status"] == "ok" or s["token"] for s in others)


def test_shard_with_one_job_writes_the_token_file(capsys, tmp_path):
    token = tmp_path / "token.txt"
    code, out, err = run(capsys, "fuzz", "--algorithm", BROKEN, "--scheduler", "random",
                         "--executions", "20000", "--seconds", "60", "--jobs", "1",
                         "--shard", "1/2", "--token-file", str(token), "--quiet")
    assert code == 1
    assert token.read_text().strip().startswith("cd2")


# -- mutants: the first hang ends the run in every job ---------------------------------

def test_mutants_two_jobs_stop_at_the_first_hang(capsys, tmp_path, shm_guard):
    path = tmp_path / "zoo.json"
    code, out, err = run(capsys, "mutants", "--mutant", HANGS_IN_GET, "--engine", "threads",
                         "--seeds", "1", "--budget", "2", "--watchdog", "0.5", "--jobs", "2",
                         "--quiet", "--json", str(path))
    assert code == 1 and "Traceback" not in err
    assert "the run ended at the first hang, in hangs-in-get/threads" in out
    cells = json.loads(path.read_text())["cells"]
    statuses = [(c["subject"], c["status"]) for c in cells]
    assert statuses[0] == ("hangs-in-get", "run")
    # Job 1 ran the hang (cell 0); its later cells (2, 4, 6) are not run.
    assert [statuses[i][1] for i in (2, 4, 6)] == ["not run"] * 3, statuses
    not_run = sum(s == "not run" for _, s in statuses)
    assert f"{not_run} cells not run" in out


# -- interrupts keep the finished reports ----------------------------------------------

def _start(*argv):
    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "concurrent_dirty", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for_stdout(proc, needle):
    """Read stdout (unbuffered, so that nothing is lost to the rest of the
    test) until ``needle``; return what was read."""
    seen = b""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            data = os.read(proc.stdout.fileno(), 1 << 16)
            if not data:
                break
            seen += data
            if needle.encode() in seen:
                return seen.decode()
    proc.kill()
    proc.communicate()
    pytest.fail(f"no {needle!r} on stdout within {START_TIMEOUT}s: {seen!r}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_two_jobs_interrupted_after_an_algorithm_keep_its_report(tmp_path, sig):
    path = tmp_path / "fuzz.json"
    proc = _start("fuzz", "--algorithm", BROKEN, "--algorithm", "xchg", "--scheduler",
                  "random", "--seconds", "600", "--executions", "1000000000", "--jobs", "2",
                  "--json", str(path))
    before = _wait_for_stdout(proc, "verdict: ")  # the first algorithm's report, whole
    code, out, err = _finish(proc, sig, group=True)
    out = before + out
    _assert_interrupted(code, out, err)
    assert "verdict: FAIL" in out and "replay token: cd2" in out
    # The second algorithm's partial report is job 1's (this process), if it had begun.
    assert ("fuzzing stopped after 1 of 2 algorithm(s);" in err
            or "fuzzing stopped after 2 of 2 algorithm(s) (the last one partial)" in err), err
    data = json.loads(path.read_text())
    assert data["interrupted"] is True and data["verdict"] == "interrupted"
    assert data["results"][0]["status"] == "FAIL" and len(data["results"]) <= 2
    assert "Fatal Python error" not in err


def test_json_verdict_is_interrupted_in_stress(tmp_path):
    path = tmp_path / "stress.json"
    proc = _start("stress", "--algorithm", "xchg", "--engine", "threads", "--seconds", "600",
                  "--json", str(path))
    _wait_for_line(proc, "[xchg/threads]")
    code, out, err = _finish(proc, signal.SIGINT)
    _assert_interrupted(code, out, err)
    data = json.loads(path.read_text())
    assert data["interrupted"] is True and data["verdict"] == "interrupted"


def test_two_jobs_interrupted_list_every_cell_of_the_campaign(tmp_path):
    # Cells still running in a job process, or not begun, have no figures,
    # but the report lists them, so a reader sees what the run did not cover.
    path = tmp_path / "stress.json"
    proc = _start("stress", "--algorithm", "xchg", "--algorithm", "srcu", "--algorithm",
                  "manual", "--engine", "threads", "--seconds", "600", "--jobs", "2",
                  "--json", str(path))
    _wait_for_line(proc, "[xchg/threads]")
    code, out, err = _finish(proc, signal.SIGINT, group=True)
    _assert_interrupted(code, out, err)
    data = json.loads(path.read_text())
    assert data["verdict"] == "interrupted"
    assert sorted(r["algorithm"] for r in data["results"]) == ["manual", "srcu", "xchg"]
    assert {r["status"] for r in data["results"]} == {"interrupted"}
    rows = [line.split()[0] for line in out.splitlines()[2:5]]
    assert sorted(rows) == ["manual", "srcu", "xchg"], out


# -- the watchdog: a call into the algorithm that never returns is a hang --------------

@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_watchdog_ends_a_get_dirty_log_spinning_on_cpu_relax(engine):
    # A subprocess with a timeout: before the fix this ran forever.
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "concurrent_dirty", "stress", "--algorithm",
             "tests.broken_algorithms:SpinsInGet", "--engine", engine, "--watchdog", "0.5",
             "--seconds", "30", "--quiet"], cwd=ROOT, capture_output=True, text=True,
            timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        pytest.fail("the watchdog did not end a get_dirty_log spinning on cpu_relax()")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "HangError: the harvester (the driver thread) made no progress" in proc.stdout
    assert "in get_dirty_log" in proc.stdout and "Traceback" not in proc.stderr


# -- parity: one job whole, one job over all its shards, two jobs ----------------------

def _three_ways(capsys, tmp_path, command, *argv, token=False):
    """(exit code, JSON keys, results' keys, token file text) per way; the
    sharded way gives one tuple per shard."""
    out = {}
    ways = {"whole": [["--jobs", "1"]], "sharded": [["--jobs", "1", "--shard", "1/2"],
                                                    ["--jobs", "1", "--shard", "2/2"]],
            "two jobs": [["--jobs", "2"]]}
    for way, runs in ways.items():
        got = []
        for n, extra in enumerate(runs):
            path = tmp_path / f"{command}-{way}-{n}.json"
            tok = tmp_path / f"{command}-{way}-{n}.token"
            code, _, err = run(capsys, command, *argv, *extra, "--quiet", "--json", str(path),
                               *(["--token-file", str(tok)] if token else []))
            data = json.loads(path.read_text())
            rows = data.get("results", data.get("cells", []))
            got.append((code, sorted(data), sorted({k for r in rows for k in r}),
                        tok.read_text().strip()[:3] if token and tok.exists() else None))
        out[way] = got
    return out


def test_fuzz_parity_three_ways(capsys, tmp_path):
    ways = _three_ways(capsys, tmp_path, "fuzz", "--algorithm", BROKEN, "--scheduler", "random",
                       "--executions", "20000", "--seconds", "60", token=True)
    whole = ways["whole"][0]
    assert whole[0] == 1 and whole[3] == "cd2"
    assert ways["two jobs"][0] == whole
    for shard in ways["sharded"]:
        assert shard == whole


def test_stress_parity_three_ways(capsys, tmp_path, shm_guard):
    ways = _three_ways(capsys, tmp_path, "stress", "--algorithm", "xchg", "--algorithm", "srcu",
                       "--engine", "threads", "--seconds", "0.2")
    whole = ways["whole"][0]
    assert whole[0] == 0
    assert ways["two jobs"][0] == whole
    for shard in ways["sharded"]:
        assert shard == whole


def test_mutants_parity_three_ways(capsys, tmp_path, shm_guard):
    ways = _three_ways(capsys, tmp_path, "mutants", "--mutant", "xchg-no-zero-skip",
                       "--engine", "pct", "--engine", "threads", "--no-correct", "--seeds",
                       "1", "--budget", "2")
    whole = ways["whole"][0]
    assert ways["two jobs"][0] == whole
    for shard in ways["sharded"]:
        assert shard[0] == whole[0] and shard[1] == whole[1]
