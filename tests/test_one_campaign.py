"""Issue 19, the second part: stress and mutants build one checked
campaign value too, one job and N jobs are the same code (the parent runs
the first job itself while the others start: issue 18's "search starts at
once"), the pytest plugin builds the CLI's campaign value, the watchdog's
rule (a call into the code under test that has not returned is a hang,
whatever it calls; a modelled wait does not count), replay and start-up
Ctrl-C, and the same interrupt text whatever --jobs is."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from concurrent_dirty.cli.main import main
from concurrent_dirty.errors import UsageError


def campaign_of(*args, **kwargs):
    from concurrent_dirty.cli.main import campaign_of

    return campaign_of(*args, **kwargs)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 120


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_usage_error(code, out, err, message):
    assert code == 2, (out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


# -- stress and mutants: conflicts and usage errors, whatever --jobs is -----------------

STRESS_ERRORS = [
    (["--algorithm", "xchg", "--ring-entries", "8"],
     "expected a ring algorithm (--algorithm ring) with --ring-entries, got xchg"),
    (["--algorithm", "srcu", "--ring-batch", "2", "--ring-soft-limit", "3"],
     "expected a ring algorithm (--algorithm ring) with --ring-soft-limit, --ring-batch"),
    (["--algorithm", "ring", "--pml"], "expected the dirty ring or PML, got both"),
    (["--algorithm", "no-such-algorithm"], "no-such-algorithm"),
    (["--slots", "4096", "--pages", "65536"], "expected --slots x --pages at most"),
]


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("argv, message", STRESS_ERRORS)
def test_stress_usage_errors_are_one_line_whatever_jobs(capsys, shm_guard, argv, message,
                                                       jobs):
    code, out, err = run(capsys, "stress", "--engine", "threads", "--seconds", "0.1",
                         "--jobs", jobs, *argv)
    _one_line_usage_error(code, out, err, message)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_mutants_usage_errors_are_one_line_whatever_jobs(capsys, jobs):
    code, out, err = run(capsys, "mutants", "--mutant", "no-such-mutant", "--jobs", jobs)
    _one_line_usage_error(code, out, err, "no-such-mutant")


def test_stress_campaign_is_a_checked_value():
    campaign = campaign_of("stress", algorithm=["xchg", "srcu"], engine=["threads"],
                           seconds=0.5, jobs=4, shard="2/2")
    assert [c.algorithm for c in campaign.cells] == ["srcu"]  # cell 2 of 2: shard 2/2
    assert campaign.jobs == 1  # never more jobs than cells
    assert campaign.reruns[0].startswith("concurrent-dirty stress --algorithm srcu")
    with pytest.raises(UsageError, match="expected a ring algorithm"):
        campaign_of("stress", algorithm=["xchg"], ring_entries=8)


def test_zoo_campaign_is_a_checked_value():
    campaign = campaign_of("mutants", mutant=["xchg-no-zero-skip"], engine=["pct", "random"],
                           correct=False, jobs=8)
    assert [cell[-1] for cell in campaign.plan] == ["pct", "random"]
    assert campaign.jobs == 2 and campaign.split == ((0,), (1,))


def test_fuzz_campaign_of_gives_the_cli_errors():
    with pytest.raises(UsageError, match="expected --depth with --scheduler pct only"):
        campaign_of("fuzz", algorithm=["xchg"], scheduler="random", depth=2)
    with pytest.raises(UsageError, match="expected one of --pml and --no-pml, got both"):
        campaign_of("fuzz", algorithm=["xchg"], pml=[True, False])


# -- the pytest plugin builds the same value ----------------------------------------

def test_the_plugin_refuses_what_the_cli_refuses():
    from _concurrent_dirty_pytestplugin import Dirty

    dirty = Dirty(0.5, "controlled")
    with pytest.raises(pytest.fail.Exception,
                       match="concurrent-dirty: error: expected --depth with --scheduler pct "
                             "only"):
        dirty.run("xchg", scheduler="random", depth=2)
    with pytest.raises(pytest.fail.Exception, match="expected a ring algorithm"):
        dirty.run("xchg", ring_entries=8)
    with pytest.raises(pytest.fail.Exception, match="expected a ring algorithm"):
        Dirty(0.5, "threads").run("xchg", ring_entries=8)


@pytest.mark.slow  # the plugin in a child pytest, campaigns of seconds
def test_the_plugin_runs_the_clis_campaign():
    from _concurrent_dirty_pytestplugin import Dirty

    # A budget far above what the search and its minimisation (by
    # executions) need, so that a loaded machine's time never cuts either.
    report = Dirty(120.0, "controlled").run("nonatomic-clear", scheduler="random", seed=3)
    assert report.failure is not None
    # The same campaign on the command line: the same failing execution.
    assert report.failure.token == _fuzz_token("nonatomic-clear", "--scheduler", "random",
                                                "--seed", "3", "--seconds", "120")


def _fuzz_token(*argv):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.json")
        subprocess.run([sys.executable, "-m", "concurrent_dirty", "fuzz", "--algorithm", *argv,
                        "--jobs", "1", "--quiet", "--json", path], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                       timeout=300)
        with open(path) as f:
            return json.load(f)["results"][0]["token"]


# -- one code path: the parent runs the first job itself ----------------------------

@pytest.mark.jobs
def test_stress_two_jobs_run_the_first_in_this_process(capsys, tmp_path, shm_guard):
    path = tmp_path / "stress.json"
    code, _, _ = run(capsys, "stress", "--algorithm", "xchg", "--algorithm", "srcu",
                     "--engine", "threads", "--seconds", "0.2", "--jobs", "2", "--quiet",
                     "--json", str(path))
    assert code == 0
    split = json.loads(path.read_text())["job_split"]
    assert [s["job"] for s in split] == [1, 2]
    assert split[0]["pid"] == os.getpid() and split[1]["pid"] != os.getpid()
    assert split[0]["cells"] == ["xchg/threads"] and split[1]["cells"] == ["srcu/threads"]


@pytest.mark.jobs
def test_mutants_two_jobs_run_the_first_in_this_process(capsys, tmp_path):
    path = tmp_path / "zoo.json"
    code, _, _ = run(capsys, "mutants", "--mutant", "nonatomic-clear", "--engine", "pct",
                     "--engine", "random", "--no-correct", "--seeds", "1", "--budget", "5",
                     "--jobs", "2", "--quiet", "--json", str(path))
    assert code == 0
    split = json.loads(path.read_text())["job_split"]
    assert split[0]["pid"] == os.getpid() and split[1]["pid"] != os.getpid()


# -- the watchdog: a call that has not returned is a hang, whatever it calls ----------

def _stress(*argv, timeout=150):
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "concurrent_dirty", "stress", *argv, "--quiet"], cwd=ROOT,
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": ROOT})
    except subprocess.TimeoutExpired:
        pytest.fail(f"stress {' '.join(argv)} did not end within {timeout}s")
    return proc


HANGS = [
    ("SpinsOnWordsInGet", "the harvester (the driver thread)", "get_dirty_log"),
    ("SleepsInGet", "the harvester (the driver thread)", "get_dirty_log"),
    ("SpinsInGet", "the harvester (the driver thread)", "get_dirty_log"),
    ("SpinsOnCpuRelaxInMark", "vcpu ", "mark_page_dirty"),
]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("algorithm, who, where", HANGS)
def test_a_call_that_never_returns_is_a_hang_whatever_it_calls(engine, algorithm, who, where):
    proc = _stress("--algorithm", f"tests.broken_algorithms:{algorithm}", "--engine", engine,
                   "--watchdog", "1", "--seconds", "30")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "HangError: " + who in proc.stdout, proc.stdout
    assert "made no progress for 1s: its call into the code under test" in proc.stdout
    assert where in proc.stdout  # the stack (or, for a process, its call) names it
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_a_long_modelled_wait_on_a_lock_is_not_a_hang(engine, tmp_path):
    # The harvester waits 2.5 s under mmu_lock (a modelled wait) and the
    # writers' faults wait that long for the lock: a correct algorithm.
    path = tmp_path / "stress.json"
    proc = _stress("--algorithm", "tests.broken_algorithms:SlowHarvestUnderLock", "--engine",
                   engine, "--watchdog", "1", "--lock-timeout", "30", "--seconds", "1",
                   "--json", str(path))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    (result,) = json.loads(path.read_text())["results"]
    assert result["status"] == "ok"
    assert result["harvest_latency_ms"]["max"] >= 2000  # it did wait, for longer than 1 s


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_many_short_calls_in_one_round_are_not_a_hang(engine):
    # One word per CLEAR over 4096 pages: a round makes up to 64 calls of
    # 50 ms each, seconds in all, but every call returns well within the
    # 1 s watchdog, which times each call, not the round.
    proc = _stress("--algorithm", "tests.broken_algorithms:SlowClears", "--engine", engine,
                   "--slots", "1", "--pages", "4096", "--clear-words", "1", "--on-behalf", "0",
                   "--writes", "64", "--watchdog", "1", "--seconds", "4")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "HangError" not in proc.stdout


@pytest.mark.slow
def test_lock_timeout_still_reports_a_deadlock_as_a_deadlock():
    proc = _stress("--algorithm", "tests.broken_algorithms:ForgetsToUnlock", "--engine",
                   "threads", "--watchdog", "0.5", "--lock-timeout", "2", "--seconds", "10")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "DeadlockError" in proc.stdout and "HangError" not in proc.stdout


# -- Ctrl-C: replay from its first instruction, the CLI during its start-up -----------

def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _started(*argv):
    """The CLI in a child with SIGINT at its default whatever ours is, its
    imports reported on stderr (``-X importtime``): the line naming
    ``concurrent_dirty`` says the package's own code is running."""
    return subprocess.Popen([sys.executable, "-X", "importtime", "-m", "concurrent_dirty",
                             *argv], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_sigint_default)


def _wait_for_package(proc):
    seen = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 1.0)[0]:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.rstrip().endswith("| concurrent_dirty"):
                return "".join(seen)
    proc.kill()
    pytest.fail(f"the package never loaded: {''.join(seen)[-2000:]!r}")


def _regression_token():
    with open(os.path.join(ROOT, "tests", "regression_tokens.json")) as f:
        data = json.load(f)
    entry = data[0] if isinstance(data, list) else next(iter(data.values()))
    return entry["token"] if isinstance(entry, dict) else entry[-1]


@pytest.mark.signals
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4])
@pytest.mark.parametrize("command", ["replay", "fuzz"])
def test_ctrl_c_from_the_first_instruction_is_exit_130_without_traceback(command, delay):
    argv = (["replay", _regression_token()] if command == "replay" else
            ["fuzz", "--algorithm", "xchg", "--seconds", "600", "--jobs", "2"])
    proc = _started(*argv)
    _wait_for_package(proc)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    if command == "replay" and proc.returncode in (0, 1):
        assert "verdict: " in out  # it finished before the signal: its verdict stands
        return
    assert proc.returncode == 130, (out, err)
    assert "\ninterrupted: " in "\n" + err, err


# -- the same interrupt text, whatever --jobs is --------------------------------------

def _interrupt_text(*argv, progress):
    proc = subprocess.Popen([sys.executable, "-m", "concurrent_dirty", *argv], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_sigint_default)
    seen = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 1.0)[0]:
            line = proc.stderr.readline()
            seen.append(line)
            if not line or progress in line:
                break
    try:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, "".join(seen) + err)
    lines = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    assert len(lines) == 1, err
    return re.sub(r"\d+", "N", lines[0]).replace("(the last one partial)", "").strip()


CAMPAIGNS = {
    "fuzz": (["fuzz", "--algorithm", "xchg", "--scheduler", "random", "--seconds", "600",
              "--executions", "1000000000"], "[xchg/random]"),
    "stress": (["stress", "--algorithm", "xchg", "--algorithm", "srcu", "--engine", "threads",
                "--seconds", "600"], "xchg/threads]"),
    # Every cell on processes: each creates its shared-memory segment.
    "mutants": (["mutants", "--mutant", "xchg-no-zero-skip", "--engine", "processes",
                 "--seeds", "1", "--budget", "600"], None),
}


@pytest.mark.jobs
@pytest.mark.signals
@pytest.mark.parametrize("command", sorted(CAMPAIGNS))
def test_the_interrupt_text_is_the_same_whatever_jobs(command):
    argv, progress = CAMPAIGNS[command]
    texts = set()
    for extra in (["--jobs", "1"], ["--jobs", "1", "--shard", "1/2"], ["--jobs", "2"]):
        if progress is None:  # mutants: no progress line before a cell ends
            texts.add(_interrupt_after_segment([*argv, *extra]))
        else:
            texts.add(_interrupt_text(*argv, *extra, progress=progress))
    assert len(texts) == 1, texts


def _interrupt_after_segment(argv):
    proc = subprocess.Popen([sys.executable, "-m", "concurrent_dirty", *argv], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_sigint_default)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if any(n.startswith(f"cd-{proc.pid}-") for n in os.listdir("/dev/shm")):
            break
        time.sleep(0.02)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    assert len(lines) == 1, err
    return re.sub(r"\d+", "N", lines[0])
