"""Replay tokens: round trip, clear errors, and committed regressions."""

import pytest

from concurrent_dirty import Scenario, UsageError
from concurrent_dirty._token import decode, encode
from concurrent_dirty.controlled import Program, run_controlled
from concurrent_dirty.fuzz import regression_test, replay
from concurrent_dirty.scheduler import ReplayScheduler

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"

# Failures of the broken clear found by dfs (1 preemption), pct and random
# (seed 0), each with the step it fails at. Replaying them must fail the same
# way on the broken algorithm and pass on the seed algorithm it breaks.
REGRESSIONS = [
    ("dfs", 18, "cd1.eNplTkFqxDAM_IvOZomXHkquvfdcMCGojpqIOFawlXaXZf9eeVt6KXOQmNHM6AaYZimsywY9KFWtp_ciK-XxT6j9q2RU2Ti-JMLyFpcZHNBlp6jQ32DlPJn7kyWhsmQTq9IOvX--O9iLzAW3dljkyFM13sGXRZOtIYTO-WFwIfg2B3PUSBkLS7NwZmVM6TpWsrIPTJUcJInrqLyRHEb67tRZD84t8Mn8RPaPUTWJtrpH5kLTkcgaO_eD8wP-F-f_GO7f1QZbqQ"),  # noqa: E501
    ("pct", 34, "cd1.eNptjs1qxDAMhN9FZ7PE2T352nvPBWOC66iJiGMFW-kPy757laVsDy0DlvnkmfEVYp64kswrOBBs0k6vlRcsw2PR3DOXKLxSesoY60uaJzCAnxsmAXeFhcqo7nfiHIW46LIJbuDOl5uBrfJU43o8rLyXsYHrDXxoNOrVe29NF4yeNujwZ53G98pCUHdLWGIlPuxUSCjm_DU01OK3mBsayJyWQWhF3hXa7tRpZ5yO8Iv6EfVvilpmUWTvmTOOe0Zt78x_6u-yD_V_yC_7Ubh9A_omZFk"),  # noqa: E501
    ("random", 28, "cd1.eNo9TstqxDAM_BedzWKnPSy59t5zwYTgOmoi4ljBVvpg2X9fZUnDgO0ZaWZ8g5BGLiTTAi0IVqmXz8Iz5v4c1PadcxBeKL4lDOUjTiMYwN8Vo0B7g5nyoO5v4hSEOOuwCq7QNte7gbXwWMKyLxbe8lBVN_Cj0ahP7_2LcZ3xTk-9vH2yZmedumvEHArxbqdMQiGlv76iFn-FVNFA4jj3QgvypqKzF6udYdzDX9WPqH9TqSYWldwzc8JhS6jtjdEmYxXuwD9vDtiTuVM70N0fXThiNQ"),  # noqa: E501
]


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
    ("", "expected a replay token like cd1.<base64>, got ''"),
    ("hello", "expected a replay token like cd1.<base64>, got 'hello'"),
    ("cd9.eNpVTs", "expected a version 1 replay token, got version 9 (made by another "
                   "release of concurrent-dirty?)"),
    ("cd1.abc", "expected a replay token like cd1.<base64>, got a damaged one (its body "
                "does not decompress: truncated or mistyped?)"),
    ("cd1.eJyrrgUAAXUA-Q", "expected a replay token like cd1.<base64>, got a damaged one "
                           "(its payload has no 'algorithm')"),
])
def test_malformed_foreign_or_future_tokens_are_one_line_errors(token, message):
    with pytest.raises(UsageError) as info:
        decode(token)
    assert str(info.value) == message


def test_non_string_token_is_refused():
    with pytest.raises(UsageError, match=r"^expected a replay token string like "
                                         r"cd1.<base64>, got int$"):
        decode(5)


def test_regression_snippet_is_a_runnable_pytest_function():
    token = REGRESSIONS[0][2]
    namespace: dict = {}
    exec(regression_test(token), namespace)
    with pytest.raises(Exception, match="LOST DIRTY BIT"):
        namespace["test_replay_regression"]()
