"""The pytest plugin: options, markers, header, fixtures, replay items."""

import pytest

pytest_plugins = ["pytester"]

from tests.test_tokens import REGRESSIONS  # noqa: E402

TOKEN = REGRESSIONS[0][2]


def test_header_names_engine_and_budget(pytester):
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest("--cd-engine", "processes", "--cd-budget", "3")
    result.stdout.fnmatch_lines(["concurrent-dirty *: engine=processes, budget=3s per cell, "
                                 "replay tokens=0"])
    assert result.ret == 0


def test_markers_are_registered(pytester):
    pytester.makepyfile("import pytest\n\n@pytest.mark.stress\n@pytest.mark.fuzz\n"
                        "def test_marked():\n    pass\n")
    result = pytester.runpytest("--strict-markers", "-m", "stress and fuzz")
    result.assert_outcomes(passed=1)


def test_bad_budget_is_a_usage_error(pytester):
    result = pytester.runpytest("--cd-budget", "0")
    result.stderr.fnmatch_lines(["*expected --cd-budget > 0, got 0.0*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_dirty_fixture_runs_each_engine(pytester):
    pytester.makepyfile('''
import pytest

@pytest.mark.parametrize("engine", ["threads", "processes", "controlled"])
def test_xchg(dirty, engine):
    r = dirty.check("xchg", engine=engine, max_executions=5) if engine != "controlled" \\
        else dirty.check("xchg", engine=engine)
    assert r is not None
''')
    result = pytester.runpytest_subprocess("--cd-budget", "1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_replay_token_option_adds_a_failing_test(pytester, monkeypatch):
    import pathlib

    # the token names tests.broken_algorithms: importable from the repository
    monkeypatch.setenv("PYTHONPATH", str(pathlib.Path(__file__).parent.parent))
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--cd-replay", TOKEN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LOST DIRTY BIT*"])


def test_dirty_check_under_control_has_fuzz_defaults_and_finds_the_broken_clear(pytester):
    # No scenario: the program space and the auto portfolio, as `fuzz` with no
    # options (the old stress-sized scenario found it in 0 of 5 seeds in 1 s).
    pytester.makepyfile('''
import pytest
from concurrent_dirty import InvariantViolation

def test_broken(dirty):
    with pytest.raises(InvariantViolation, match="LOST DIRTY BIT"):
        dirty.check("concurrent_dirty.mutants.xchg:NonatomicClear", engine="controlled")
''')
    result = pytester.runpytest_subprocess("--cd-budget", "20", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_dirty_check_takes_mutant_names_and_dfs_finds_the_broken_clear(pytester):
    # The case: dfs over the program space missed it; the small
    # scope's phase (tiny programs, every schedule with few preemptions)
    # finds it, and a mutant's name works as in the CLI.
    pytester.makepyfile('''
import pytest
from concurrent_dirty import InvariantViolation

@pytest.mark.parametrize("scheduler", ["dfs", "auto"])
def test_broken(dirty, scheduler):
    with pytest.raises(InvariantViolation, match="LOST DIRTY BIT"):
        dirty.check("nonatomic-clear", engine="controlled", scheduler=scheduler)
''')
    result = pytester.runpytest_subprocess("--cd-budget", "20", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
