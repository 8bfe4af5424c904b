"""Stress suites: free-running threads and processes for a budget.

    python -m pytest stress -m stress --cd-budget 600      # ten minutes a cell
    python -m pytest stress -m stress --cd-budget 2        # CI smoke

The budget option and the ``cd_budget`` fixture come from the package's
pytest plugin; every test here is marked ``stress``.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    # Nothing hangs: each cell gets a timeout scaled to its budget, after
    # which pytest-timeout dumps every thread's stack and fails it.
    seconds = config.getoption("--cd-budget")
    for item in items:
        item.add_marker(pytest.mark.timeout(max(seconds, 30) * 3 + 120))


@pytest.fixture
def budget(cd_budget):
    return cd_budget
