"""Replay tokens: round trip, clear errors, and committed regressions."""

import json
import pathlib

import pytest

from concurrent_dirty import Program, Scenario, UsageError, regression_test, replay, run_controlled
from concurrent_dirty.harness.token import decode, encode
from concurrent_dirty.schedulers import ReplayScheduler

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"

# Failures of the broken clear found by dfs (1 preemption), pct and random,
# each with the step it fails at (tools/make_regression_tokens.py writes
# them). Replaying them must fail the same way on the broken algorithm and
# pass on the seed algorithm it breaks.
_TOKENS = json.loads((pathlib.Path(__file__).parent / "regression_tokens.json").read_text())
REGRESSIONS = [(key.split("/")[1], entry["step"], entry["token"])
               for key, entry in sorted(_TOKENS.items()) if key.startswith("broken-clear/")]


@pytest.mark.parametrize("found_by, step, token", REGRESSIONS)
def test_committed_token_fails_the_same_way_on_the_broken_algorithm(found_by, step, token):
    for _ in range(3):
        r = replay(token)
        assert (r.outcome.kind, r.outcome.step) == ("violation", step)


@pytest.mark.parametrize("found_by, step, token", REGRESSIONS)
def test_committed_token_passes_on_the_algorithm_it_breaks(found_by, step, token):
    assert replay(token, algorithm="xchg").outcome.kind == "ok"


def test_token_round_trips_everything_needed_to_replay():
    scenario = Scenario(algorithm="xchg", slots=2, pages=5, initially_set=True, seed=9)
    program = Program(writes=(((0, True), (7, False)), ((3, False),)), rounds=3)
    sched = ReplayScheduler([0, 1, 2, 2, 1])
    sched.new_execution()
    result = run_controlled("xchg", scenario, program, sched)
    case = decode(encode(result))
    assert case.algorithm == "xchg"
    assert (case.scenario.slots, case.scenario.pages, case.scenario.initially_set,
            case.scenario.seed) == (2, 5, True, 9)
    assert case.program == program
    assert list(case.schedule) == result.outcome.schedule
    assert (case.expect_kind, case.expect_step) == ("ok", 0)


@pytest.mark.parametrize("token, message", [
    ("", "expected a replay token like cd2.<base64>, got ''"),
    ("hello", "expected a replay token like cd2.<base64>, got 'hello'"),
    ("cd9.eNpVTs", "expected a version 2 replay token, got version 9: it was made by another "
                   "release of concurrent-dirty, whose schedules differ; rerun the fuzz command "
                   "that found it to get a new token (committed ones: python3 "
                   "tools/make_regression_tokens.py)"),
    ("cd1.eNpVTs", "expected a version 2 replay token, got version 1: it was made by another "
                   "release of concurrent-dirty, whose schedules differ; rerun the fuzz command "
                   "that found it to get a new token (committed ones: python3 "
                   "tools/make_regression_tokens.py)"),
    ("cd2.abc", "expected a replay token like cd2.<base64>, got a damaged one (its body "
                "does not decompress: truncated or mistyped?)"),
    ("cd2.eJyrrgUAAXUA-Q", "expected a replay token like cd2.<base64>, got a damaged one "
                           "(its payload has no 'algorithm')"),
])
def test_malformed_foreign_or_future_tokens_are_one_line_errors(token, message):
    with pytest.raises(UsageError) as info:
        decode(token)
    assert str(info.value) == message


def test_non_string_token_is_refused():
    with pytest.raises(UsageError, match=r"^expected a replay token string like "
                                         r"cd2.<base64>, got int$"):
        decode(5)


def test_regression_snippet_is_a_runnable_pytest_function():
    token = REGRESSIONS[0][2]
    namespace: dict = {}
    exec(regression_test(token), namespace)
    with pytest.raises(Exception, match="LOST DIRTY BIT"):
        namespace["test_replay_regression"]()
