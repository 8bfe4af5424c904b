"""pytest plugin of concurrent-dirty (registered under ``pytest11``).

Options (group ``concurrent-dirty``): ``--cd-budget`` seconds per stress or
fuzz cell, ``--cd-engine`` (threads, processes or controlled) for the
``dirty`` fixture, ``--cd-replay TOKEN`` (repeatable) to run replay tokens
as tests. Markers: ``stress`` and ``fuzz``. Fixtures: ``cd_budget`` and
``dirty``. Works beside pytest-timeout and pytest-xdist: nothing here is
shared between workers.

Kept tiny and top-level so that pytest can load it without importing the
package until a fixture or a replay needs it.
"""

from __future__ import annotations

from typing import Any

import pytest

_ENGINES = ("threads", "processes", "controlled")


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("concurrent-dirty", "concurrent-dirty race testing")
    group.addoption("--cd-budget", type=float, default=2.0, metavar="SECONDS",
                    help="budget per stress or fuzz cell (default 2)")
    group.addoption("--cd-engine", choices=_ENGINES, default="threads",
                    help="engine of the `dirty` fixture (default threads)")
    group.addoption("--cd-replay", action="append", default=[], metavar="TOKEN",
                    help="run a replay token as a test (repeatable)")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "stress: free-running stress cells bounded by "
                                       "--cd-budget (select with -m stress)")
    config.addinivalue_line("markers", "fuzz: controlled-scheduler fuzzing bounded by "
                                       "--cd-budget (select with -m fuzz)")
    budget = config.getoption("--cd-budget")
    if not budget > 0:
        raise pytest.UsageError(f"expected --cd-budget > 0, got {budget}")


def pytest_report_header(config: Any) -> str:
    from concurrent_dirty import __version__

    return (f"concurrent-dirty {__version__}: engine={config.getoption('--cd-engine')}, "
            f"budget={config.getoption('--cd-budget'):g}s per cell, "
            f"replay tokens={len(config.getoption('--cd-replay'))}")


class ReplayItem(pytest.Item):
    """One ``--cd-replay`` token: fails while its execution fails."""

    def __init__(self, *, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token

    def runtest(self) -> None:
        from concurrent_dirty import replay

        replay(self.token).check()

    def reportinfo(self) -> tuple[Any, int, str]:
        return self.path, 0, f"replay {self.token[:24]}..."


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    for n, token in enumerate(config.getoption("--cd-replay")):
        items.append(ReplayItem.from_parent(session, name=f"cd-replay[{n}]", token=token))


class Dirty:
    """What the ``dirty`` fixture gives a test: scenarios within the budget,
    run under the configured engine."""

    def __init__(self, budget: float, engine: str) -> None:
        self.budget = budget
        self.engine = engine

    def scenario(self, algorithm: str, **kw: Any) -> Any:
        from concurrent_dirty import Scenario

        engine = kw.pop("engine", self.engine)
        return Scenario(algorithm=algorithm, seconds=kw.pop("seconds", self.budget),
                        engine="threads" if engine == "controlled" else engine, **kw)

    def run(self, algorithm: str, **kw: Any) -> Any:
        """A CellResult (threads, processes) or a FuzzReport (controlled)."""
        from concurrent_dirty import explore, run_cell
        from concurrent_dirty.mutants import algorithm_spec

        algorithm = algorithm_spec(algorithm)  # a mutant's name, as the CLI takes
        engine = kw.get("engine", self.engine)
        scheduler = kw.pop("scheduler", "auto")
        if engine == "controlled":
            # fuzz's defaults: every execution's shape and writes drawn from
            # the program space; a shape argument pins its dimension.
            from concurrent_dirty.harness.program import ProgramSpace

            shape = {k: kw[k] for k in ("writers", "slots", "pages", "writes", "initially_set",
                                        "fast_page_fault", "pml", "pml_entries")
                     if k in kw}
            space = ProgramSpace(**shape, rounds=kw.pop("rounds", None))
            scenario = self.scenario(algorithm, **kw)
            return explore(algorithm, scenario, scheduler=scheduler, executions=None,
                           seconds=scenario.seconds, space=None if space.pinned else space)
        return run_cell(self.scenario(algorithm, **kw))

    def check(self, algorithm: str, **kw: Any) -> Any:
        """Run, and fail the test with the full report on any violation."""
        result = self.run(algorithm, **kw)
        failure = getattr(result, "failure", None)
        if failure is not None:
            failure.check()
        if getattr(result, "violations", None) or getattr(result, "error", None):
            texts = [v.describe() for v in result.violations] or [result.error]
            pytest.fail("\n".join(texts), pytrace=False)
        return result


@pytest.fixture
def cd_budget(request: Any) -> float:
    return float(request.config.getoption("--cd-budget"))


@pytest.fixture
def dirty(request: Any) -> Dirty:
    return Dirty(float(request.config.getoption("--cd-budget")),
                 request.config.getoption("--cd-engine"))
