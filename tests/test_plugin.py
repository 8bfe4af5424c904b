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


# -- every model option pins its dimension, as the CLI's fuzz does ------------------

def _drawn_scenarios(monkeypatch):
    """Every scenario the controlled engine runs from now on."""
    from concurrent_dirty.search import runner

    seen = []
    run = runner.run_controlled

    def spy(cls, scenario, *args, **kwargs):
        seen.append(scenario)
        return run(cls, scenario, *args, **kwargs)

    monkeypatch.setattr(runner, "run_controlled", spy)
    return seen


PINS = [
    ("ring", {"ring_entries": 16}),
    ("ring", {"ring_entries": 8, "ring_soft_limit": 3, "ring_batch": 1}),
    ("xchg", {"fast_page_fault": True}),
    ("xchg", {"pml": True, "pml_entries": 2}),
    ("xchg", {"fast_page_fault": False, "pml": False}),
    ("xchg", {"initially_set": True}),
    ("manual", {"clear_words": 1}),
]


@pytest.mark.parametrize("scheduler", ["auto", "random", "dfs", "pct"])
@pytest.mark.parametrize("algorithm,pins", PINS)
def test_dirty_run_pins_every_model_option_it_is_given(monkeypatch, algorithm, pins,
                                                      scheduler):
    from _concurrent_dirty_pytestplugin import Dirty

    seen = _drawn_scenarios(monkeypatch)
    report = Dirty(30.0, "controlled").run(algorithm, scheduler=scheduler, executions=25,
                                           seed=1, **pins)
    assert report.executions == 25 and len(seen) >= 25
    for name, value in pins.items():
        assert {getattr(s, name) for s in seen} == {value}, name


def test_dirty_run_draws_the_ring_left_out_even_with_the_rest_pinned(monkeypatch):
    # Every shape and model dimension pinned but the ring's geometry: it is
    # still drawn per execution (it was fixed at the default 8 entries).
    from _concurrent_dirty_pytestplugin import Dirty

    seen = _drawn_scenarios(monkeypatch)
    Dirty(30.0, "controlled").run("ring", scheduler="random", executions=40, writers=2,
                                  slots=1, pages=2, writes=3, rounds=1, initially_set=False,
                                  fast_page_fault=False, pml=False)
    assert len({s.ring_entries for s in seen}) > 1
    assert len({s.ring_soft_limit for s in seen}) > 1


# -- a budget the user sets ----------------------------------------------------------

@pytest.mark.parametrize("key", ["executions", "max_executions"])
def test_dirty_run_takes_an_executions_budget(key):
    from _concurrent_dirty_pytestplugin import Dirty

    report = Dirty(30.0, "controlled").run("xchg", scheduler="random", **{key: 7})
    assert report.executions == 7 and report.stopped_by != "seconds"


def test_dirty_run_takes_a_seconds_budget():
    from _concurrent_dirty_pytestplugin import Dirty

    report = Dirty(30.0, "controlled").run("xchg", scheduler="random", seconds=0.3,
                                           executions=10**9)
    assert report.stopped_by == "seconds"


@pytest.mark.parametrize("kw,message", [
    ({"executions": 0}, "argument --executions: expected a number of executions from 1"),
    ({"executions": 2.5}, "argument --executions: expected a number of executions from 1"),
    ({"seconds": 0}, "argument --seconds: expected a number of seconds > 0"),
    ({"seconds": "soon"}, "argument --seconds: expected a number of seconds > 0"),
    ({"ring_entries": 12}, "argument --ring-entries: expected a power of two from 4"),
])
def test_a_bad_budget_or_option_is_the_clis_one_line_error(kw, message):
    from _concurrent_dirty_pytestplugin import Dirty

    with pytest.raises(pytest.fail.Exception) as info:
        Dirty(1.0, "controlled").check("ring", **kw)
    text = str(info.value)
    assert text.startswith("concurrent-dirty: error: " + message) and "\n" not in text
