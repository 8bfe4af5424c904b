"""The default stress suite as pytest cells: correct algorithms stay clean
for the whole budget; the broken one is caught within it."""

import pytest

from concurrent_dirty import Scenario, run_cell

pytestmark = pytest.mark.stress

ALGORITHMS = ["srcu", "xchg", "manual"]
ENGINES = ["threads", "processes"]


def _report(r):
    return (f"{r.algorithm}/{r.engine}: {r.executions} executions, {r.writes} writes, "
            f"{r.rounds} rounds in {r.seconds:.1f}s; error={r.error}; "
            f"violations={[v.describe() for v in r.violations[:3]]}")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_short_executions_lose_nothing(algorithm, engine, budget):
    r = run_cell(Scenario(algorithm=algorithm, engine=engine, seconds=budget, on_behalf=0.3))
    assert r.error is None and not r.violations, _report(r)
    assert r.executions > 0 and r.writes > 0, _report(r)


@pytest.mark.parametrize("workload", ["uniform", "hot", "sequential"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_long_migration_loses_nothing(algorithm, workload, budget):
    r = run_cell(Scenario(algorithm=algorithm, engine="processes", mode="long", slots=4,
                          pages=500, writers=2, workload=workload, seconds=budget))
    assert r.error is None and not r.violations, _report(r)
    assert r.writes > 0 and r.rounds > 1, _report(r)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_noise_keeps_correct_algorithms_clean(algorithm, budget):
    r = run_cell(Scenario(algorithm=algorithm, engine="threads", noise=0.3,
                          switch_interval=1e-5, seconds=budget))
    assert r.error is None and not r.violations, _report(r)


def test_manual_initially_set_loses_nothing(budget):
    r = run_cell(Scenario(algorithm="manual", engine="processes", initially_set=True,
                          pages=100, seconds=budget))
    assert r.error is None and not r.violations, _report(r)


def test_broken_clear_is_caught_within_the_budget(budget):
    r = run_cell(Scenario(algorithm="tests.broken_algorithms:NonatomicClearXchg",
                          engine="processes", seconds=max(budget, 30)))
    assert r.violations, f"not caught: {_report(r)}"
