"""One execution model: the same scenario and seed give the same program in
every engine, and a user's own lock works under every engine."""

import re
from dataclasses import replace

import pytest

from concurrent_dirty import (
    DfsScheduler,
    RandomScheduler,
    Scenario,
    explore,
    make_program,
    page_version,
    run_cell,
    run_controlled,
)

ENGINES = ("threads", "processes", "controlled")


def _versions(image: tuple[int, ...]) -> list[int]:
    return [page_version(v) for v in image]


def _expected(scenario: Scenario) -> list[int]:
    program = make_program(scenario, execution=1)
    counts = [0] * (scenario.slots * scenario.pages)
    for writes in program.writes:
        for gfn, _ in writes:
            counts[gfn] += 1
    return counts


def _run(engine: str, scenario: Scenario) -> list[int]:
    if engine == "controlled":
        sched = RandomScheduler(3)
        sched.new_execution()
        r = run_controlled(scenario.algorithm, scenario, make_program(scenario, execution=1),
                           sched)
        assert not r.failed
        return _versions(r.image)
    cell = run_cell(replace(scenario, engine=engine, max_executions=1, seconds=60))
    assert (cell.error, cell.violations, cell.executions) == (None, [], 1)
    return _versions(cell.image)


@pytest.mark.parametrize("on_behalf", [0.0, 0.5])
@pytest.mark.parametrize("a, b", [("threads", "processes"), ("threads", "controlled"),
                                  ("processes", "controlled")])
def test_the_same_scenario_and_seed_make_the_same_writes_in_every_engine(a, b, on_behalf,
                                                                         shm_guard):
    # Each page's final version counts the writes made to it: a writer that
    # drew a different page (or skipped a draw) changes the counts.
    sc = Scenario(algorithm="xchg", writers=3, slots=2, pages=40, writes=12, seed=11,
                  on_behalf=on_behalf)
    expected = _expected(sc)
    assert sum(expected) == 36
    assert _run(a, sc) == expected
    assert _run(b, sc) == expected


def test_the_program_counts_would_differ_for_another_seed():
    sc = Scenario(algorithm="xchg", writers=3, slots=2, pages=40, writes=12, seed=11)
    assert _expected(sc) != _expected(replace(sc, seed=12))


USER = "tests.user_lock_algorithm:PerSlotLock"
INVERSION = "tests.user_lock_algorithm:SlotLockInversion"


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_a_user_lock_is_clean_on_the_free_running_engines(engine, shm_guard):
    r = run_cell(Scenario(algorithm=USER, engine=engine, seconds=30, max_executions=20,
                          on_behalf=0.3))
    assert (r.error, r.violations) == (None, [])
    assert r.executions == 20


def test_a_user_lock_is_clean_under_control():
    r = explore(USER, Scenario(algorithm=USER, slots=2, pages=3, writes=2, on_behalf=0.5),
                scheduler="pct", executions=300, seconds=60)
    assert r.failure is None and r.executions == 300


def test_a_user_lock_blocks_and_its_deadlock_names_waiters_and_holders():
    sc = Scenario(algorithm=INVERSION, slots=1, pages=2, writes=1, on_behalf=0.0)
    dfs = DfsScheduler(2)
    found = None
    while found is None and dfs.new_execution():
        r = run_controlled(INVERSION, sc, make_program(sc, rounds=1), dfs)
        if r.failed:
            found = r
    assert found is not None and found.outcome.kind == "deadlock"
    message = found.outcome.message
    assert message.startswith("deadlock: no thread can run; ")
    assert re.search(r"vcpu \d waits for slot_lock, held by harvester", message)
    assert re.search(r"harvester waits for mmu_lock, held by vcpu \d", message)


def test_a_user_lock_deadlock_is_reported_by_a_free_running_engine(shm_guard):
    r = run_cell(Scenario(algorithm=INVERSION, engine="threads", seconds=30, lock_timeout=0.5,
                          writers=2, slots=1, pages=2, writes=64, on_behalf=0.0))
    # Whichever side's wait times out first reports it (a writer's comes
    # back as WorkerDied carrying the DeadlockError).
    assert r.error is not None and "DeadlockError: " in r.error
    assert re.search(r"waited 0.5s for (slot_lock, held by harvester|mmu_lock, held by vcpu)",
                     r.error)
