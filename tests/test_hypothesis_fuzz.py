"""Hypothesis drives the schedule: failures shrink to one preemption, and
the reported failure carries a replay token that reproduces it."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concurrent_dirty import InvariantViolation, interleavings, replay

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=interleavings("xchg", writers=st.integers(1, 2)))
def test_xchg_loses_no_bit_under_drawn_interleavings(case):
    case.check()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=interleavings("manual"))
def test_manual_loses_no_bit_under_drawn_interleavings(case):
    case.check()


def test_hypothesis_shrinks_the_broken_clear_to_one_preemption():
    @settings(max_examples=5000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=interleavings(BROKEN, writers=2, slots=1, pages=st.sampled_from([1, 2, 63, 64])))
    def search(case):
        case.check()

    with pytest.raises(InvariantViolation) as info:
        search()
    result = info.value.result
    assert result.outcome.kind == "violation"
    assert result.outcome.preemptions == 1
    text = str(info.value)
    assert "with 1 preemption\n" in text and "LOST DIRTY BIT" in text
    assert f"concurrent-dirty replay {result.token}" in text
    again = replay(result.token)
    assert (again.outcome.kind, again.outcome.step) == ("violation", result.outcome.step)
    assert replay(result.token, algorithm="xchg").outcome.kind == "ok"


def test_draws_do_not_depend_on_timing():
    @settings(max_examples=20, deadline=None, database=None, derandomize=True)
    @given(case=interleavings("srcu"))
    def twice(case):
        a, b = case.run(trace=True), case.run(trace=True)
        assert [(s.thread, s.op, s.target, s.word, s.before, s.after) for s in a.outcome.trace] \
            == [(s.thread, s.op, s.target, s.word, s.before, s.after) for s in b.outcome.trace]

    twice()


def test_the_strategy_draws_both_scopes_and_every_write_kind():
    shapes, kinds, small_writes = set(), set(), set()

    @settings(max_examples=80, derandomize=True, database=None, deadline=None)
    @given(case=interleavings("xchg"))
    def collect(case):
        sc = case.scenario
        shapes.add((sc.slots, sc.pages, sc.writers))
        kinds.update(k for w in case.program.writes for _, k in w)
        if (sc.slots, sc.pages) == (1, 1):
            small_writes.update(len(w) for w in case.program.writes)

    collect()
    assert (1, 1, 2) in shapes  # the small scope
    assert any(p > 1 for _, p, _ in shapes)  # the wide one
    assert kinds == {0, 1, 2}
    assert small_writes & {5, 6, 8}


def test_interleavings_takes_mutant_names_and_the_report_says_the_count_is_minimal():
    from concurrent_dirty.search.hypothesis import hypothesis_search

    with pytest.raises(Exception, match="expected an algorithm"):
        interleavings("no-such-mutant")
    r = hypothesis_search("nonatomic-clear", seed=0, seconds=60, executions=400)
    assert r.failure is not None and r.failure.outcome.preemptions <= 2
    m = r.extra["minimized"]
    assert m["fewest"] and m["preemptions"] == r.failure.outcome.preemptions
    assert "the fewest on this program (every smaller bound exhausted)" in r.summary()
