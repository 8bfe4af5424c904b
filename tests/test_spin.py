"""Spin loops need no hint (issue 20): the controlled engine takes a thread
that keeps loading the same words, reading the same values, with nothing
else in between, to be waiting for another thread (GenMC's spin-assume,
CHESS's fair scheduling). Correct code without cpu_relax() passes; a
livelock, or a wait for something that never comes, is still step-bound."""

import pytest

from concurrent_dirty import Program, Scenario, explore, run_controlled
from concurrent_dirty._core.runtime import _period
from concurrent_dirty.harness.program import ProgramSpace
from concurrent_dirty.schedulers import RandomScheduler

SRCU = "tests.spin_algorithms:PlainLoadSrcu"
LIVELOCK = "tests.spin_algorithms:WaitsForEachOther"


@pytest.mark.parametrize("scheduler", ["dfs", "pct", "auto"])
def test_a_correct_srcu_that_spins_on_plain_loads_passes(scheduler):
    # Before: dfs's first schedule and pct's priorities let the grace
    # period spin until the step bound (step-bound within 25 executions).
    report = explore(SRCU, Scenario(algorithm=SRCU), scheduler=scheduler, executions=100,
                     seconds=600.0, space=None if scheduler == "dfs" else ProgramSpace())
    assert report.failure is None, report.failure.outcome.message
    assert report.executions == 100


def test_a_livelock_of_plain_load_spins_is_still_step_bound():
    program = Program(writes=(((0, False),), ((1, False),)), rounds=1)
    scheduler = RandomScheduler(0)
    scheduler.new_execution()
    r = run_controlled(LIVELOCK, Scenario(algorithm=LIVELOCK, writers=2), program, scheduler,
                       max_steps=500)
    assert r.outcome.kind == "step-bound"
    # vcpu 1 waits for mmu_lock, which vcpu 0 holds in its fault while it spins.
    assert r.outcome.message == (
        "the execution exceeded 500 steps (max_steps) at vcpu 0's load on algo:flags[16]: a "
        "livelock or a wait for something that never comes; vcpu 0 keeps loading "
        "algo:flags[16] (= 0x0); harvester keeps loading algo:flags[0] (= 0x0), with no "
        "store in between, and no other thread changes them")


@pytest.mark.parametrize("loads, period", [
    ([("w", 0, 0)] * 3, 0),  # three reads are not yet a spin
    ([("w", 0, 0)] * 4, 1),
    ([("w", 0, 1)] + [("w", 0, 0)] * 4, 1),
    ([("a", 0, 0), ("b", 1, 5)] * 4, 2),
    ([("a", 0, 0), ("b", 1, 5)] * 3 + [("a", 0, 0), ("b", 1, 6)], 0),  # a value changed
    ([("a", i, 0) for i in range(9)] * 4, 0),  # a cycle longer than SPIN_PERIOD
    ([("a", i, 0) for i in range(8)] * 4, 8),
])
def test_a_spin_is_a_short_cycle_of_loads_seen_four_times(loads, period):
    assert _period(loads) == period
