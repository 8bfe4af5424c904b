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


# -- every model option fuzz takes, checked as fuzz checks it ----------------------

def _cases(strategy, n=40):
    """``n`` cases drawn from ``strategy``, deterministically."""
    from hypothesis import Phase

    out = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def collect(case):
        out.append(case)
    collect()
    return out


@pytest.mark.parametrize("algorithm,pins", [
    ("ring", {"ring_entries": 16}),
    ("ring", {"ring_entries": 8, "ring_soft_limit": 3, "ring_batch": 1}),
    ("xchg", {"fast_page_fault": True}),
    ("xchg", {"pml": True, "pml_entries": 2}),
    ("xchg", {"fast_page_fault": False, "pml": False}),
    ("xchg", {"initially_set": True}),
    ("manual", {"clear_words": 4, "stuck_rounds": 0, "tlb": False}),
])
def test_interleavings_honours_every_pinned_model_option(algorithm, pins):
    cases = _cases(interleavings(algorithm, **pins))
    for name, value in pins.items():
        assert {getattr(c.scenario, name) for c in cases} == {value}, name


def test_interleavings_draws_what_is_left_out_from_fuzzs_distribution():
    ring = _cases(interleavings("ring"), 80)
    assert len({c.scenario.ring_entries for c in ring}) > 1
    assert len({c.scenario.ring_batch for c in ring}) > 1
    xchg = _cases(interleavings("xchg"), 120)
    for name in ("fast_page_fault", "pml", "initially_set"):
        assert {getattr(c.scenario, name) for c in xchg} == {False, True}, name
    # A soft limit alone: every ring drawn is larger than it.
    assert {c.scenario.ring_entries for c in _cases(interleavings("ring", ring_soft_limit=9))} \
        <= {16, 32}


def test_interleavings_takes_fuzzs_on_behalf_share():
    guest = _cases(interleavings("xchg", on_behalf=0))
    assert {k for c in guest for w in c.program.writes for _, k in w} == {0}
    theirs = _cases(interleavings("xchg", on_behalf=1.0))
    assert {k for c in theirs for w in c.program.writes for _, k in w} <= {1, 2}


@pytest.mark.parametrize("algorithm,kw,message", [
    ("ring", {"ring_entries": 12}, "expected a power of two from 4 to 65536 for ring_entries"),
    ("ring", {"ring_entries": 8, "ring_soft_limit": 8}, "expected a ring soft limit from 2 to 7"),
    ("xchg", {"ring_entries": 8}, "expected a ring algorithm (algorithm 'ring') with "
                                  "ring_entries=8, got xchg"),
    ("xchg-pml", {"pml": False}, "expected no pml=False with algorithm 'xchg-pml' (its model "
                                 "turns it on), got both"),
    ("ring", {"pml": True}, "expected the dirty ring or PML, got both"),
    ("xchg", {"pml_entries": 0}, "expected a number of PML entries from 1 to 512"),
    ("xchg", {"writers": 0}, "expected an int from 1 to 64 for writers"),
    ("manual", {"clear_words": -1}, "expected a number of words per CLEAR"),
    ("xchg", {"rounds": -1}, "expected a number of rounds from 0 to 1000"),
    ("xchg", {"on_behalf": 1.5}, "expected a probability from 0 to 1"),
])
def test_an_invalid_option_is_a_one_line_error_before_anything_is_drawn(algorithm, kw, message):
    from concurrent_dirty.errors import UsageError

    with pytest.raises(UsageError) as info:
        interleavings(algorithm, **kw)  # the strategy is not even drawn from
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_cli_refuses_the_same_conflicts_in_its_own_words(capsys):
    from concurrent_dirty.cli.main import main

    for argv, message in [
        (["--algorithm", "xchg-pml", "--no-pml"],
         "expected no --no-pml with --algorithm xchg-pml (its model turns it on), got both"),
        (["--algorithm", "xchg", "--ring-entries", "8"],
         "expected a ring algorithm (--algorithm ring) with --ring-entries, got xchg"),
    ]:
        assert main(["fuzz", *argv, "--seconds", "1"]) == 2
        assert capsys.readouterr().err == f"concurrent-dirty: error: {message}\n"
