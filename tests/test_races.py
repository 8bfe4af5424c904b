"""The race-directed preemption bounding of the small scope
(``search/races.py``): the same schedules as iterative DFS, each once, in
an order that reaches the fast page fault's two-preemption race in tens of
executions."""

from __future__ import annotations

import pytest

from concurrent_dirty import MUTANTS
from concurrent_dirty.engines.controlled import run_controlled
from concurrent_dirty.harness.program import GUEST, ON_BEHALF, Program
from concurrent_dirty.harness.scenario import Scenario
from concurrent_dirty.schedulers import DfsScheduler
from concurrent_dirty.search.races import RaceBounded

#: One vCPU writes page 0 on the guest's behalf, another writes it twice
#: as the guest, over two rounds (the fast page fault's races).
FAST_PF = Program((((0, ON_BEHALF),), ((0, GUEST), (0, GUEST))), 2)


def _schedules(search, ref, scenario, program, limit=5000):
    out = []
    while len(out) < limit and search.new_execution():
        r = run_controlled(ref, scenario, program, search,
                           observe=getattr(search, "observe", None))
        out.append(tuple(r.outcome.schedule))
    return out


@pytest.mark.parametrize("bound", [0, 1, 2])
def test_it_runs_every_schedule_dfs_runs_each_once(bound):
    sc = Scenario(algorithm="xchg", writers=2, slots=1, pages=2, writes=1)
    program = Program((((0, ON_BEHALF),), ((1, GUEST),)), 1)
    dfs = _schedules(DfsScheduler(bound), "xchg", sc, program)
    search = RaceBounded(bound)
    races = _schedules(search, "xchg", sc, program)
    assert search.exhausted and len(races) == len(set(races)) == search.execution
    assert set(races) == set(dfs) and len(dfs) > 4 + 20 * bound


@pytest.mark.parametrize("name", ["fast-pf-flush-from-read", "fast-pf-plain-write-protect"])
def test_it_reaches_the_fast_page_faults_race_in_tens_of_executions(name):
    # Iterative DFS backtracks from the end: about a thousand executions
    # on this program (990 and 1018, measured); the races first: 39.
    ref = MUTANTS[name].ref
    sc = Scenario(algorithm=ref, writers=2, slots=1, pages=2, writes=2)
    search = RaceBounded(2, races_only=True)
    runs = 0
    while search.new_execution():
        runs += 1
        r = run_controlled(ref, sc, FAST_PF, search, observe=search.observe)
        if r.failed:
            break
    assert r.failed and runs <= 64 and r.outcome.preemptions == 2
    # Its order depends on the executions alone.
    again = RaceBounded(2, races_only=True)
    for _ in range(runs):
        assert again.new_execution()
        last = run_controlled(ref, sc, FAST_PF, again, observe=again.observe)
    assert last.outcome.schedule == r.outcome.schedule


def test_races_only_stops_before_the_rest_and_knows_which_bounds_it_ran():
    sc = Scenario(algorithm="xchg-fast-pf", writers=2, slots=1, pages=2, writes=2)
    program = Program((((0, ON_BEHALF),), ((0, GUEST),)), 1)
    search = RaceBounded(2, races_only=True)
    some = _schedules(search, "xchg-fast-pf", sc, program)
    assert not search.exhausted and 0 < len(some)
    assert search.exhausted_below(0)  # nothing below no preemption
    assert not search.exhausted_below(2)  # schedules with one preemption left
    full = RaceBounded(2)
    everything = _schedules(full, "xchg-fast-pf", sc, program)
    assert full.exhausted and full.exhausted_below(3) and set(some) < set(everything)
    assert len(everything) > 2 * len(some)


@pytest.mark.parametrize("name", ["ring-gfn-before-flags", "fast-pf-flush-from-read",
                                  "lock-trusting-mark"])
def test_the_hypothesis_engine_starts_with_the_small_scopes_first_cases(name):
    # Found there, with at most 2 preemptions, before Hypothesis draws; more
    # than one of those cases fails for the ring (a run of explicit
    # examples would end in an exception group).
    from concurrent_dirty.search.hypothesis import TINY_EXECUTIONS, TINY_HEAD, hypothesis_search

    r = hypothesis_search(name, seed=0, seconds=30)
    assert r.failure is not None and "hypothesis" not in r.extra
    assert r.extra["first_failure_execution"] <= TINY_HEAD * TINY_EXECUTIONS
    assert r.failure.outcome.preemptions <= 2
