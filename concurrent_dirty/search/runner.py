"""Fuzzing interleavings: many controlled executions under a scheduler.

``explore`` runs executions until the scheduler is done, the budget is
spent, or one fails; a failure is re-run under its recorded schedule with
the trace on, so the report shows the interleaving step by step, and comes
with a replay token. Before each execution the pending token can be written
to a file, so that a crash or a hang still leaves something to replay.
The report is :mod:`.report`'s, the minimisation :mod:`.minimize`'s and the
replay :mod:`.replay`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .._core.runtime import DEFAULT_WATCHDOG, Scheduler, Verdict
from ..dirtylog import DirtyLogAlgorithm, algorithm_name, algorithm_ref, resolve_algorithm
from ..engines.controlled import DEFAULT_MAX_STEPS, run_controlled
from ..harness.execution import ExecutionResult
from ..harness.program import Program, ProgramSpace, make_program
from ..harness.scenario import Scenario
from ..schedulers import (
    Budget,
    DfsScheduler,
    Metrics,
    PctScheduler,
    RandomScheduler,
    ReplayScheduler,
    SchedulerOptions,
    make_scheduler,
    report_of,
)
from .minimize import _minimize
from .model import drawn_options, explain
from .portfolio import Case
from .replay import _fresh, _write_pending, pending_token
from .report import FuzzReport

__all__ = ["Runner", "check_dfs", "check_pct", "check_random", "explore"]


class Runner:
    """Drives one scheduler through executions of one algorithm (shuttle's
    ``Runner``): it owns ``new_execution()``, the budget and the metrics as
    wrappers, the pending-token file, and turns the first failure into a
    traced, replayable result."""

    def __init__(self, scheduler: Scheduler, *, executions: int | None = 1000,
                 seconds: float | None = 10.0, max_steps: int = DEFAULT_MAX_STEPS,
                 token_file: str | None = None, name: str = "",
                 stop: Callable[[], bool] | None = None,
                 stop_reason: str = "stopped", watchdog: float = DEFAULT_WATCHDOG) -> None:
        self.inner = scheduler
        self.budget = Budget(scheduler, executions=executions, seconds=seconds, stop=stop,
                             stop_reason=stop_reason)
        self.metrics = Metrics(self.budget)
        self.max_steps = max_steps
        self.token_file = token_file
        self.name = name or type(scheduler).__name__
        self.watchdog = watchdog

    def run(self, algorithm: str | type[DirtyLogAlgorithm], cases: Callable[[int], Case],
            progress: Callable[[FuzzReport], None] | None = None) -> FuzzReport:
        """Run executions until the scheduler is done, the budget is spent
        or one fails. ``cases(n)`` gives execution n's scenario and program
        (asked after the scheduler started execution n)."""
        cls = resolve_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
        metrics = self.metrics
        report = FuzzReport(algorithm=algorithm_name(cls), scheduler=self.name)
        start = time.monotonic()
        last_tick = start
        while metrics.new_execution():
            scenario, current = cases(metrics.executions)
            # Asked per execution: a portfolio's depends on its member.
            observe = getattr(self.inner, "observe", None)
            if self.token_file:
                # What is running now, as a token that replay accepts: a crash
                # or a hang that kills this process still leaves it behind.
                _write_pending(self.token_file, pending_token(cls, scenario, current))
            result = run_controlled(cls, scenario, current, metrics, max_steps=self.max_steps,
                                    observe=observe, watchdog=self.watchdog)
            report.steps += result.outcome.steps
            executed = getattr(self.inner, "executed", None)
            if executed is not None:
                executed(result)
            if result.failed:
                report.failure = self._traced(cls, scenario, current, result, report)
                if self.token_file:
                    _write_pending(self.token_file, report.failure.token)
                break
            now = time.monotonic()
            if progress is not None and now - last_tick > 0.2:
                last_tick = now
                _take_metrics(report, metrics, start)
                progress(report)
        _take_metrics(report, metrics, start)
        report.stopped_by = self.budget.stopped_by
        if report.failure is not None:
            # Where the search first found it (before any minimisation).
            report.extra["first_failure_execution"] = report.executions
            report.extra["first_failure_seconds"] = round(report.seconds, 4)
        return report

    def _traced(self, cls: type[DirtyLogAlgorithm], scenario: Scenario, program: Program,
                result: ExecutionResult, report: FuzzReport) -> ExecutionResult:
        """The same schedule again with the trace on: same steps, same failure."""
        if result.outcome.kind == Verdict.HANG:
            return result  # not another watchdog period: the hang has its stack
        traced = run_controlled(cls, scenario, program,
                                _fresh(ReplayScheduler(result.outcome.schedule)),
                                max_steps=self.max_steps, trace=True)
        if (traced.outcome.kind, traced.outcome.step) == (result.outcome.kind,
                                                          result.outcome.step):
            return traced
        report.extra["nondeterministic"] = (
            f"the failure ({result.outcome.kind} at step {result.outcome.step}) did not "
            f"reproduce under its own schedule ({traced.outcome.kind} at step "
            f"{traced.outcome.step}): the code under test depends on something outside the "
            f"switch points (time, randomness, state across executions)")
        return result


def explore(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario, *,
            scheduler: str = "auto", executions: int | None = 1000, seconds: float = 10.0,
            depth: int | None = None, preemptions: int | None = None, rounds: int = 2,
            seed: int = 0,
            max_steps: int = DEFAULT_MAX_STEPS, token_file: str | None = None,
            watchdog: float = DEFAULT_WATCHDOG,
            program: Program | None = None, vary_program: bool | None = None,
            space: ProgramSpace | None = None, first: int = 1, stride: int = 1,
            small: bool = True,
            stop: Callable[[], bool] | None = None, stop_reason: str = "stopped",
            progress: Callable[[FuzzReport], None] | None = None,
            found: Callable[[], None] | None = None) -> FuzzReport:
    """Fuzz ``algorithm`` with a registered ``scheduler`` (or ``"auto"``,
    the portfolio) within ``executions`` and ``seconds``; stops at the first
    failure.

    What each execution runs: ``program`` if given (pinned); else, with a
    ``space``, a shape and program drawn from it for every execution (swarm
    testing: what the CLI does by default); else the scenario's shape with
    new writes every execution (``vary_program``, the default except for
    dfs) or one program for all (which dfs needs and which pct's guarantee
    is about).

    ``auto`` over a ``space`` starts with the small scope's phase (its
    cases under the race-directed search, ``search/races.py``), except for
    an algorithm written for PML (the random walk finds the zoo's PML
    bugs within a few executions, and the phase only made them later). An
    algorithm written for the fast page fault, PML or the ring (its
    ``model`` turns one on) gets cases that race two harvest rounds instead
    of one (an SPTE fixed again after a second round, a ring entry
    collected in one round and reset in the next) and, for the fast page
    fault and PML, its own first case (an on-behalf write beside two guest
    writes of one page: the two-preemption races on one SPTE, in tens of
    executions) and the phase from the second slice on (the random walk's
    first slice finds those paths' shallow races within a few executions).

    ``first`` and ``stride`` select a stream of the campaign (execution n
    runs case ``first + stride * (n - 1)``; jobs and shards take disjoint
    streams); ``small=False`` skips the small scope's phase (a job other than
    the first: the first runs that phase as the single stream does);
    ``stop()``, asked before each execution, ends it early.
    ``found()`` is called at a failure, before it is minimised (a job tells
    the others to stop at once); a failure found once ``stop()`` holds
    (another job's came first) is not minimised."""

    def minimize(report: FuzzReport) -> None:
        if report.failure is None:
            return
        if found is not None:
            found()
        if stop is None or not stop():
            _minimize(report, seconds, max_steps, token_file)

    if program is not None:
        space = None
    on_a_path = False
    drawn_model: list[str] = []
    if space is not None:
        # The model options this algorithm sets, or does not support, are
        # pinned; the others are drawn with the shape.
        cls = resolve_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
        space = space.for_algorithm(cls, scenario)
        on_a_path = any((getattr(cls, "model", None) or {}).get(k) for k in PATH_OPTIONS)
        drawn_model = drawn_options(space, cls)
    if vary_program is None:
        vary_program = scheduler != "dfs" and program is None
    fixed = None if (vary_program or space is not None) \
        else (scenario, program or make_program(scenario, rounds))

    def cases(n: int) -> Case:
        if fixed is not None:
            return fixed
        # The portfolio's dfs asks for its own programs with n <= 0.
        index = first + stride * (n - 1) if n > 0 else -(first + stride * -n)
        if space is not None:
            return space.draw(scenario, index)
        return scenario, make_program(scenario, rounds, execution=index)

    if scheduler == "auto" or (scheduler == "dfs" and (fixed is None or preemptions is None)):
        # dfs over varied programs, or without a bound: iterative bounds
        # 0-3 on one program at a time, the portfolio's dfs member alone.
        from .portfolio import MEMBERS, SMALL_BUDGET, SMALL_FIRST_BUDGET, Portfolio

        tiny = draw = arms = None
        small_first = True
        first_budget = SMALL_BUDGET
        if space is not None and fixed is None:
            drawn = space

            def draw(n: int, features: Mapping[str, Any]) -> Case:
                return drawn.draw(scenario, first + stride * (n - 1), features)

            arms = _arms(space) if scheduler == "auto" else None
            model = getattr(cls, "model", None) or {}
            ring = bool(model.get("dirty_ring"))
            # PML's algorithms get no small phase under auto: the random
            # walk finds the zoo's PML bugs within a few executions, but for
            # pml-plain-clear-dirty, which the small scope does not show
            # within 3 preemptions; the phase only made them later.
            pml = bool(model.get("pml")) and not model.get("fast_page_fault")
            if small and not space.shape_pinned and not (scheduler == "auto" and pml):
                # A ring's races need a second round (an entry collected,
                # then reset), and so do the fast page fault's and PML's
                # (an SPTE fixed again after a second round): their cases
                # race two rounds, not one.
                tiny_rounds = 2 if on_a_path else 1
                # The fast page fault's and PML's own cases come first.
                path = on_a_path and not ring
                small_first = not path
                if not path:
                    first_budget = SMALL_FIRST_BUDGET

                # The small scope's cases: the shards take disjoint ones.
                def tiny(i: int) -> Case:
                    index = first - 1 + stride * i
                    if tiny_rounds == 1:
                        return drawn.tiny(scenario, index)
                    return drawn.tiny(scenario, index, rounds=tiny_rounds, path=path)

        portfolio = Portfolio(seed, cases, fixed=fixed is not None,
                              members=MEMBERS if scheduler == "auto" else ("dfs",),
                              dfs_max_bound=3 if preemptions is None or scheduler == "auto"
                              else preemptions, tiny=tiny, draw=draw, arms=arms,
                              small_first=small_first, small_first_budget=first_budget)
        if scheduler == "dfs":
            portfolio.dfs_max_bound = 3 if preemptions is None else preemptions
        runner = Runner(portfolio, executions=executions, seconds=seconds,
                        max_steps=max_steps, token_file=token_file, name=scheduler, stop=stop,
                        stop_reason=stop_reason, watchdog=watchdog)
        report = runner.run(algorithm, portfolio.case, progress)
        report.extra["portfolio"] = portfolio.summary()
        if report.failure is not None:
            report.extra["found_by"] = portfolio.current
            p = report.failure.outcome.preemptions
            if portfolio.current == "dfs" or (portfolio.current == "small"
                                              and portfolio.small_fewest(p)):
                # Found with every smaller bound exhausted first (iterative
                # bounds; the small phase's race search, when it got there):
                # the fewest on its program already.
                report.extra["minimized"] = {"preemptions_found": p, "preemptions": p,
                                             "fewest": True, "seconds": 0.0, "by": "search"}
                if found is not None:
                    found()
            else:
                minimize(report)
        report.guarantee = portfolio.report()
        explain(report, drawn_model, max_steps=max_steps)
        return report
    inner = make_scheduler(scheduler, SchedulerOptions(seed=seed, depth=depth,
                                                       preemptions=preemptions))
    runner = Runner(inner, executions=executions, seconds=seconds, max_steps=max_steps,
                    token_file=token_file, name=scheduler, stop=stop, stop_reason=stop_reason,
                    watchdog=watchdog)
    report = runner.run(algorithm, cases, progress)
    if isinstance(inner, (RandomScheduler, PctScheduler)):
        minimize(report)
    if isinstance(inner, DfsScheduler):
        report.exhausted = inner.exhausted
        report.extra["preemption_bound"] = preemptions
    if report.failure is None:
        if fixed is None and isinstance(inner, PctScheduler) and not inner.cycling:
            report.guarantee = ("pct guarantee: none; the program varied between executions "
                                "and pct's bound holds per program (pin one with --execution: "
                                "shape options alone still vary the writes)")
        elif not isinstance(inner, DfsScheduler):
            report.guarantee = report_of(inner)
            if isinstance(inner, PctScheduler):
                # For merging jobs' bounds (search/scale.py): the bounds multiply.
                report.extra["_pct_bound"] = inner.miss_bound()
    explain(report, drawn_model, max_steps=max_steps)
    return report


#: An algorithm whose ``model`` turns one of these on is written for a path
#: after 2012: ``auto`` runs no small-scope phase for it (see ``explore``).
PATH_OPTIONS = ("fast_page_fault", "pml", "dirty_ring")


def _arms(space: ProgramSpace) -> dict[str, tuple[tuple[Any, ...], tuple[float, ...]]]:
    """The bandit's arms for ``space``: the scope, and each model option
    it does not pin, with the program space's own shares as priors."""
    from ..harness.program import SCOPE_SHARES, SCOPES

    arms: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {
        "scope": (SCOPES, SCOPE_SHARES)}
    if space.fast_page_fault is None:
        arms["fast_page_fault"] = ((False, True), (0.75, 0.25))
    if space.pml is None:
        arms["pml"] = ((False, True), (0.75, 0.25))
    if space.initially_set is None:
        arms["initially_set"] = ((False, True), (0.8, 0.2))
    return arms


def check_random(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario | None = None,
                 **options: Any) -> None:
    """Fuzz with the random scheduler; raise the failure if one is found."""
    _check("random", algorithm, scenario, options)


def check_pct(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario | None = None,
              **options: Any) -> None:
    """Fuzz with PCT; raise the failure if one is found."""
    _check("pct", algorithm, scenario, options)


def check_dfs(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario | None = None,
              **options: Any) -> None:
    """Exhaustive search with a preemption bound; raise the failure if one
    is found."""
    _check("dfs", algorithm, scenario, options)


def _check(scheduler: str, algorithm: str | type[DirtyLogAlgorithm],
           scenario: Scenario | None, options: dict[str, Any]) -> None:
    name = algorithm if isinstance(algorithm, str) else algorithm_ref(algorithm)
    sc = scenario or Scenario(algorithm=name, slots=1, pages=4, writes=2, on_behalf=0.5)
    report = explore(algorithm, sc, scheduler=scheduler, **options)
    if report.failure is not None:
        report.failure.check()


def _take_metrics(report: FuzzReport, metrics: Metrics, start: float) -> None:
    report.executions = metrics.executions
    report.preemptions = metrics.preemptions
    report.switches = metrics.switches
    report.seconds = time.monotonic() - start


