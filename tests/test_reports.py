"""Issue 20, items 1 and 2: every line of a report agrees with every other
(one model, rendered in search/report.py), and a failure's header says
which model its program ran under, what was drawn and how to pin it."""

import json
import shlex

import pytest

from concurrent_dirty import Scenario
from concurrent_dirty.cli.main import main
from concurrent_dirty.harness.program import ProgramSpace
from concurrent_dirty.search.hypothesis import hypothesis_search
from concurrent_dirty.search.report import render
from concurrent_dirty.search.runner import explore
from tests.report_invariants import check_report

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"
SMALL = Scenario(algorithm=BROKEN, slots=1, pages=2, writers=2, writes=2, on_behalf=0.3)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _trace_rows(text):
    return [line for line in text.splitlines() if line[:5].strip().isdigit()]


@pytest.mark.parametrize("scheduler", ["random", "auto"])
def test_a_violation_reports_one_step_one_preemption_count_one_execution(scheduler):
    # "violation after 40 operations" beside "at step 41"; the counterexample
    # header and the minimisation line disagreeing on the preemptions.
    r = explore(BROKEN, SMALL, scheduler=scheduler, executions=None, seconds=60, seed=1)
    text = check_report(r, seed=1)
    out = r.failure.outcome
    assert f"violation at step {out.step} with {out.preemptions} preemption" in text
    assert len(_trace_rows(text)) == out.step


def test_a_deadlock_says_deadlock_once():
    from concurrent_dirty._core.runtime import Outcome, Verdict
    from concurrent_dirty.harness.trace import verdict_line

    out = Outcome(kind=Verdict.DEADLOCK, message="deadlock: no thread can run; vcpu 0 waits")
    assert verdict_line(out) == "deadlock: no thread can run; vcpu 0 waits"


def test_a_deadlock_at_a_switch_point_is_its_last_row():
    r = explore("tests.report_algorithms:KeepsItsLock", SMALL, scheduler="random",
                executions=None, seconds=60)
    assert r.failure is not None and r.failure.outcome.kind == "deadlock"
    text = check_report(r, seed=0)
    assert "deadlock: deadlock:" not in text and "\ndeadlock: no thread can run;" in text
    out = r.failure.outcome
    assert out.trace[-1].pending and out.trace[-1].index == out.step
    assert "(reached, not run: the execution ended here)" in _trace_rows(text)[-1]


def test_a_step_bound_report_has_as_many_rows_as_its_step():
    r = explore("tests.broken_algorithms:SpinsWithoutYield", SMALL, scheduler="random",
                executions=5, seconds=60, max_steps=300)
    assert r.failure is not None and r.failure.outcome.kind == "step-bound"
    check_report(r, seed=0)
    assert r.failure.outcome.step == 301 == len(r.failure.outcome.trace)


def test_a_hang_header_gives_its_step_not_zero_operations():
    r = explore("tests.broken_algorithms:HangsInMark", SMALL, scheduler="random",
                executions=3, seconds=60, watchdog=0.5)
    assert r.failure is not None and r.failure.outcome.kind == "hang"
    text = check_report(r, seed=0)
    assert "after 0 operations" not in text
    assert (f"hang at step {r.failure.outcome.step} with "
            f"{r.failure.outcome.preemptions} preemption") in text
    assert "(no trace: a hang is not run again; its stack is below)" in text


def test_the_oracle_line_names_no_execution_the_verdict_does(capsys, tmp_path):
    # "LOST DIRTY BIT [... execution 1]" under a verdict at execution 22.
    path = tmp_path / "r.json"
    code, out, _ = run(capsys, "fuzz", "--algorithm", BROKEN, "--scheduler", "random",
                       "--seconds", "30", "--jobs", "1", "--json", str(path))
    assert code == 1
    assert "LOST DIRTY BIT [nonatomic-clear/controlled] slot" in out
    assert "controlled seed" not in out
    (result,) = json.loads(path.read_text())["results"]
    assert (f"first found at execution {result['first_failure_execution']} "
            in out.split("verdict: FAIL", 1)[1])
    assert "controlled seed" not in result["message"]


@pytest.mark.slow  # Hypothesis shrinks for its whole budget
def test_hypothesis_prints_the_seed_it_used_and_no_other():
    r = hypothesis_search("nonatomic-clear", seed=7, seconds=30)
    assert r.failure is not None
    text = check_report(r, seed=7)
    assert "seed 0" not in text and "controlled seed" not in text


def test_first_failure_seconds_is_in_the_json_at_zero_preemptions():
    r = explore("tests.broken_algorithms:ForgetsToUnlock", SMALL, scheduler="dfs",
                executions=None, seconds=60, preemptions=0, vary_program=False)
    assert r.failure is not None and r.failure.outcome.preemptions == 0
    data = r.to_json()
    assert data["first_failure_execution"] >= 1 and "first_failure_seconds" in data
    check_report(r, seed=0)


def test_the_pct_bound_for_merging_stays_out_of_the_json():
    r = explore("xchg", SMALL, scheduler="pct", executions=30, seconds=30, depth=2,
                vary_program=False)
    assert "_pct_bound" in r.extra  # what jobs merge
    assert not [k for k in r.to_json() if k.startswith("_")]


def test_a_saved_failure_replayed_from_db_reports_its_own_counts(capsys, tmp_path):
    db = str(tmp_path / "db")
    argv = ["fuzz", "--algorithm", BROKEN, "--scheduler", "random", "--seconds", "30",
            "--jobs", "1", "--db", db]
    assert run(capsys, *argv)[0] == 1
    code, out, _ = run(capsys, *argv)
    assert code == 1 and "under saved failure (--db)" in out
    rows = len(_trace_rows(out))
    assert f"; 1 execution, {rows} switch points, " in out
    assert ", 0 switch points" not in out


def test_fuzz_execution_header_says_one_program_not_every_dimension_drawn(capsys):
    code, out, _ = run(capsys, "fuzz", "--algorithm", "xchg", "--execution", "1",
                       "--seconds", "0.3", "--jobs", "1")
    assert code == 0
    assert "every dimension drawn" not in out
    assert "one program, nothing drawn: the writes of execution 1" in out


def test_a_passing_replay_prints_its_verdict_only(capsys, tmp_path):
    path = tmp_path / "r.json"
    run(capsys, "fuzz", "--algorithm", BROKEN, "--scheduler", "random", "--seconds", "30",
        "--jobs", "1", "--json", str(path))
    token = json.loads(path.read_text())["results"][0]["token"]
    code, out, _ = run(capsys, "replay", token, "--algorithm", "xchg")
    assert code == 0
    assert "counterexample:" not in out and "\nok: " not in out and not out.startswith("ok")
    assert out.startswith("verdict: PASS against xchg") and len(out.splitlines()) == 1


@pytest.mark.parametrize("algorithm, says", [
    ("ReportsTooMany", "misuse: expected get_dirty_log(0) to return"),
    ("ReleasesUnheld", "released mmu_lock held by"),
])
def test_a_misuse_report_shows_the_code_under_test_not_the_harness(algorithm, says):
    r = explore(f"tests.report_algorithms:{algorithm}", SMALL, scheduler="random",
                executions=5, seconds=30)
    assert r.failure is not None and r.failure.outcome.kind == "misuse"
    text = check_report(r, seed=0)
    message = r.failure.outcome.message
    assert "Traceback" not in message and "_core/" not in message
    assert "concurrent_dirty/harness" not in message and "concurrent_dirty/model" not in message
    assert says in text
    if algorithm == "ReleasesUnheld":  # raised inside its call: its own frame is shown
        assert "where the code under test did it" in text and "report_algorithms.py" in text


# -- item 2: the model in every header ----------------------------------------------


def test_the_header_names_the_model_what_was_drawn_why_and_the_pins(capsys):
    code, out, _ = run(capsys, "fuzz", "--algorithm", "tests.report_algorithms:NoSyncXchg",
                       "--seconds", "30", "--jobs", "1")
    assert code == 1
    lines = out.splitlines()
    model = next(line for line in lines if line.startswith("model of the failing program: "))
    assert "PML on (" in model and "INITIALLY_SET" in model and "CLEAR 1 word" in model
    drawn = next(line for line in lines if line.startswith("drawn per execution: "))
    assert "because XchgDirtyLog declares `varies`" in drawn
    pins = drawn.split("these flags pin the model: ")[1].split()
    assert "--pml" in pins and "--no-fast-page-fault" in pins and "--clear-words" in pins
    # Where the harness knows the step the algorithm lacks, it says so (with
    # "only under drawn options" when the program with PML off is proven
    # clean up to the counterexample's preemptions within the budget).
    lacks = next(line for line in lines if "get_dirty_log never called _sync_dirty_log" in line)
    assert lacks.startswith(("only under drawn options: with PML off, every schedule",
                             "PML was drawn: ")) and "pin --no-pml" in lacks
    # The pins are fuzz flags that parse, and --no-pml makes it pass.
    code, out, _ = run(capsys, "fuzz", "--algorithm", "tests.report_algorithms:NoSyncXchg",
                       "--seconds", "0.5", "--jobs", "1", "--no-pml")
    assert code == 0, out


def test_a_failure_only_under_a_drawn_option_says_so():
    from concurrent_dirty.search.model import only_under

    r = explore("tests.report_algorithms:NoSyncXchg", SMALL, scheduler="dfs",
                executions=None, seconds=30, preemptions=1, vary_program=False,
                space=None, program=None)
    assert r.failure is None  # PML is off in SMALL: it is correct there
    from dataclasses import replace

    pml = replace(SMALL, algorithm="tests.report_algorithms:NoSyncXchg", pml=True)
    r = explore("tests.report_algorithms:NoSyncXchg", pml, scheduler="dfs",
                executions=None, seconds=30, preemptions=1, vary_program=False)
    assert r.failure is not None
    only = only_under(r.failure, ["pml"], max_steps=20_000, seconds=30)
    assert only is not None and only["options"] == ["pml"], only
    assert only_under(r.failure, ["fast_page_fault"], max_steps=20_000, seconds=30) is None


def test_only_under_tries_the_counterexamples_kinds_of_preemption_exhaustively():
    # With every ordered pair of threads allowed, its search is dfs's own:
    # the same executions to exhaust the same program's space.
    from dataclasses import replace

    from concurrent_dirty.engines.controlled import run_controlled
    from concurrent_dirty.harness.program import make_program
    from concurrent_dirty.schedulers import DfsScheduler
    from concurrent_dirty.search.model import _PairsDfs

    sc = replace(SMALL, algorithm="xchg", writers=2, writes=1)
    program = make_program(sc, 1)
    every = frozenset((a, b) for a in range(3) for b in range(3) if a != b)

    def count(scheduler):
        n = 0
        while scheduler.new_execution():
            n += 1
            assert not run_controlled("xchg", sc, program, scheduler, max_steps=20_000).failed
        return n

    for bound in (0, 1):
        dfs, pairs = DfsScheduler(bound), _PairsDfs(bound, every)
        assert count(pairs) == count(dfs) and pairs.exhausted and dfs.exhausted
    # Only the harvester preempted by vcpu 1: fewer, and none elsewhere.
    assert count(_PairsDfs(1, frozenset({(2, 1)}))) < count(DfsScheduler(1))


def test_the_default_fuzz_says_which_preemptions_its_only_under_line_covers(capsys):
    # The default search on an SRCU mutant (its failing program drawn with
    # the fast page fault and PML on): the line claims the space it
    # exhausted, counted in executions: the same on every machine. (Since
    # session 7's race-directed small phase, the non-atomic clear is found
    # with both off, and its report has no such line.)
    code, out, _ = run(capsys, "fuzz", "--algorithm", "srcu-protect-before-swap", "--jobs", "1")
    assert code == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("only under drawn options"))
    assert line.startswith(
        "only under drawn options: with the fast page fault and PML off, every schedule of the "
        "same program with at most 1 preemption, of vcpu 0 by the harvester as in the "
        "counterexample, passes (448 executions)"), line
    assert out.count("<== preempts") == out.count("<== preempts vcpu 0") == 1  # the kind named


def test_a_pinned_model_is_said_to_be_pinned():
    r = explore(BROKEN, SMALL, scheduler="random", executions=None, seconds=60,
                space=ProgramSpace(fast_page_fault=False, pml=False, initially_set=False))
    assert r.failure is not None and r.extra["model"]["drawn"] == []
    assert "nothing drawn: the model is pinned (--no-fast-page-fault --no-pml " \
           "--no-initially-set --clear-words 1)" in render(r)


@pytest.mark.parametrize("algorithm, expected", [
    ("xchg", ["--no-fast-page-fault", "--no-pml", "--no-initially-set", "--clear-words", "1"]),
    ("ring", ["--no-fast-page-fault", "--ring-entries", "8", "--ring-soft-limit", "7",
              "--ring-batch", "0", "--no-initially-set", "--clear-words", "1"]),
    ("xchg-pml", ["--no-fast-page-fault", "--pml-entries", "512", "--no-initially-set",
                  "--clear-words", "1"]),
])
def test_the_stress_to_fuzz_command_pins_every_model_option(capsys, algorithm, expected):
    from concurrent_dirty.cli.stress import explore_command

    command = explore_command(Scenario(algorithm=algorithm, mode="short"), 3)
    words = shlex.split(command)
    for i in range(len(expected)):
        assert expected[i] in words, (expected[i], command)
    # It runs: fuzz accepts every flag it pins.
    code, out, err = run(capsys, *words[1:], "--seconds", "0.3", "--jobs", "1")
    assert code == 0, (command, out, err)
    assert "one program, nothing drawn" in out


def test_one_job_with_a_seed_prints_the_same_report_twice(capsys):
    # What runs after the first failure (minimisation, the only-under
    # check) is counted in executions, not seconds: the same report, but
    # for the times and rates, run after run (and machine after machine).
    import re

    def report(bug):
        code, out, _ = run(capsys, "fuzz", "--algorithm", bug, "--jobs", "1", "--seed", "3")
        assert code == 1
        return re.sub(r"[0-9.]+s\b|\([0-9]+ executions/s, [0-9]+ switch points/s\)", "#", out)

    for bug in ("nonatomic-clear", "bit-before-data"):
        first = report(bug)
        assert "counterexample: " in first and report(bug) == first
