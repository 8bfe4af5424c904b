"""The README's plug-in example runs as written and is attacked for real."""

from concurrent_dirty import Scenario, run_cell


def test_the_readme_example_algorithm_runs_clean_on_both_engines(shm_guard):
    for engine in ("threads", "processes"):
        r = run_cell(Scenario(algorithm="examples.bitwise_harvest:BitwiseHarvest",
                              engine=engine, seconds=30, max_executions=20))
        assert (r.algorithm, r.error, r.violations) == ("bitwise", None, [])
        assert r.writes == 20 * 2 * 16
