"""Stress suites: free-running threads and processes for a budget.

    python -m pytest stress -m stress --stress-seconds 600      # ten minutes a cell
    python -m pytest stress -m stress --stress-seconds 2        # CI smoke

Every test here is marked ``stress``; the budget is per cell.
"""

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("concurrent-dirty stress")
    group.addoption("--stress-seconds", type=float, default=5.0,
                    help="budget per stress cell in seconds (default 5)")


@pytest.fixture
def budget(request):
    seconds = request.config.getoption("--stress-seconds")
    if not seconds > 0:
        raise pytest.UsageError(f"expected --stress-seconds > 0, got {seconds}")
    return seconds


def pytest_collection_modifyitems(config, items):
    # Nothing hangs: each cell gets a timeout scaled to its budget, after
    # which pytest-timeout dumps every thread's stack and fails it.
    seconds = config.getoption("--stress-seconds")
    for item in items:
        item.add_marker(pytest.mark.timeout(max(seconds, 30) * 3 + 120))
