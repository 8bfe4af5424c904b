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
        """The stress cell ``concurrent-dirty stress`` would run for these
        options (checked as the command line checks them)."""
        engine = kw.pop("engine", self.engine)
        campaign = self._campaign("stress", algorithm, engine=[
            "threads" if engine == "controlled" else engine], **kw)
        return campaign.cells[0]

    def _campaign(self, command: str, algorithm: str, **kw: Any) -> Any:
        """The campaign value the command line builds (``cli/main.py``'s
        ``campaign_of``): the same checks, the same one-line errors."""
        from concurrent_dirty.cli.main import campaign_of
        from concurrent_dirty.errors import UsageError

        kw.setdefault("seconds", self.budget)
        try:
            return campaign_of(command, algorithm=[algorithm], jobs=1, **kw)
        except UsageError as exc:
            pytest.fail(f"concurrent-dirty: error: {exc}", pytrace=False)

    def run(self, algorithm: str, **kw: Any) -> Any:
        """A CellResult (threads, processes) or a FuzzReport (controlled):
        the campaign ``concurrent-dirty stress`` or ``fuzz`` builds for the
        same options (a mutant's name as the CLI takes it), run in this
        process."""
        engine = kw.pop("engine", self.engine)
        if engine == "controlled":
            from concurrent_dirty.search.scale import fuzz_streams, run_stream

            campaign = self._campaign("fuzz", algorithm, **kw)
            (spec,) = campaign.algorithms
            (stream,) = fuzz_streams([spec], scheduler=campaign.scheduler,
                                     executions=campaign.executions, seed=campaign.seed,
                                     shard=campaign.shard, jobs=1)[0]
            return run_stream(stream, campaign.scenarios[spec], **campaign.options)
        from concurrent_dirty import run_cell

        campaign = self._campaign("stress", algorithm, engine=[engine], **kw)
        (cell,) = campaign.cells
        return run_cell(cell, rerun=campaign.reruns[0])

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
