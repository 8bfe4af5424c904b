"""Fuzzing interleavings: many controlled executions under a scheduler, the
Hypothesis strategy that draws them, and replay.

``explore`` runs executions until the scheduler is done, the budget is
spent, or one fails; a failure is re-run under its recorded schedule with
the trace on, so the report shows the interleaving step by step, and comes
with a replay token. Before each execution the pending token can be written
to a file, so that a crash or a hang still leaves something to replay.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._core.runtime import DEFAULT_WATCHDOG, Scheduler, Verdict
from ..dirtylog import DirtyLogAlgorithm, algorithm_name, algorithm_ref, resolve_algorithm
from ..engines.controlled import DEFAULT_MAX_STEPS, run_controlled
from ..harness.execution import ExecutionResult
from ..harness.output import write_text
from ..harness.program import Program, ProgramSpace, make_program
from ..harness.scenario import Scenario
from ..harness.token import decode, encode
from ..schedulers import (
    Budget,
    DfsScheduler,
    Metrics,
    PctScheduler,
    PreemptionPoints,
    RandomScheduler,
    ReplayScheduler,
    SchedulerOptions,
    make_scheduler,
    report_of,
)

#: What one execution runs: the VM's shape and the writers' program.
Case = tuple[Scenario, Program]

__all__ = ["Case", "FuzzReport", "Runner", "check_dfs", "check_pct", "check_random", "explore",
           "fewest_preemptions", "minimize_preemptions", "pending_token", "regression_test",
           "replay"]


@dataclass
class FuzzReport:
    algorithm: str
    scheduler: str
    executions: int = 0
    steps: int = 0
    preemptions: int = 0
    switches: int = 0
    seconds: float = 0.0
    exhausted: bool | None = None
    failure: ExecutionResult | None = None
    guarantee: str = ""
    #: What ended a clean campaign: "executions", "seconds", or None (the
    #: scheduler had nothing left to try).
    stopped_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    @property
    def executions_per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        tried = (f"{self.executions} executions, {self.steps} switch points, "
                 f"{self.preemptions} preemptions in {self.seconds:.2f}s "
                 f"({self.executions_per_second:.0f} executions/s, "
                 f"{self.steps_per_second:.0f} switch points/s)")
        if self.failure is not None:
            out = self.failure.outcome
            text = (f"verdict: FAIL ({out.kind} at step {out.step} of execution "
                    f"{self.executions}; {tried})")
            if "nondeterministic" in self.extra:
                text += f"\nwarning: {self.extra['nondeterministic']}"
            m = self.extra.get("minimized")
            if m and m.get("by") == "search":
                text += (f"\ncounterexample: {m['preemptions']} preemption(s), the fewest on "
                         f"this program (found under iterative preemption bounding: every "
                         f"smaller bound exhausted first)")
            elif m:
                fewest = ("the fewest on this program (every smaller bound exhausted)"
                          if m["fewest"] else "not proven the fewest (the budget ran out)")
                text += (f"\ncounterexample: {m['preemptions']} preemption(s), {fewest}; the "
                         f"search's first had {m['preemptions_found']} (minimized in "
                         f"{m['seconds']:.2f}s: preemption points sampled, then iterative "
                         f"preemption bounding)")
            return text
        text = f"verdict: PASS (no failure; {tried})"
        if self.exhausted is not None:
            text += "; the space was exhausted" if self.exhausted \
                else "; the space was NOT exhausted (budget ran out)"
        if self.guarantee:
            text += f"\n{self.guarantee}"
        return text

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "algorithm": self.algorithm, "scheduler": self.scheduler,
            "status": "FAIL" if self.failure else "ok", "executions": self.executions,
            "steps": self.steps, "preemptions": self.preemptions, "switches": self.switches,
            "seconds": round(self.seconds, 3), "exhausted": self.exhausted,
            "guarantee": self.guarantee, "violations": 1 if self.failure else 0,
        }
        if self.failure is not None:
            data.update(failure_kind=self.failure.outcome.kind,
                        failure_step=self.failure.outcome.step,
                        message=self.failure.outcome.message, token=self.failure.token,
                        counterexample=self.failure.counterexample())
        data.update(self.extra)
        return data


def _write_pending(path: str, text: str) -> None:
    write_text(path, text + "\n")  # atomic for a file, plain for a device or FIFO


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
        observe = getattr(self.inner, "observe", None)
        while metrics.new_execution():
            scenario, current = cases(metrics.executions)
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
                _fill(report, metrics, start)
                progress(report)
        _fill(report, metrics, start)
        report.stopped_by = self.budget.stopped_by
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

    ``first`` and ``stride`` select a stream of the campaign (execution n
    runs case ``first + stride * (n - 1)``; jobs and shards take disjoint
    streams); ``stop()``, asked before each execution, ends it early.
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
    if space is not None:
        # The model options this algorithm sets, or does not support, are
        # pinned; the others are drawn with the shape.
        cls = resolve_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
        space = space.for_algorithm(cls, scenario)
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
        from .portfolio import MEMBERS, Portfolio

        tiny = draw = arms = None
        if space is not None and fixed is None:
            drawn = space

            def draw(n: int, features: Mapping[str, Any]) -> Case:
                return drawn.draw(scenario, first + stride * (n - 1), features)

            arms = _arms(space) if scheduler == "auto" else None
            if not space.shape_pinned:
                # The small scope's cases: the shards take disjoint ones.
                def tiny(i: int) -> Case:
                    return drawn.tiny(scenario, first - 1 + stride * i)

        portfolio = Portfolio(seed, cases, fixed=fixed is not None,
                              members=MEMBERS if scheduler == "auto" else ("dfs",),
                              dfs_max_bound=3 if preemptions is None or scheduler == "auto"
                              else preemptions, tiny=tiny, draw=draw, arms=arms)
        if scheduler == "dfs":
            portfolio.dfs_max_bound = 3 if preemptions is None else preemptions
        runner = Runner(portfolio, executions=executions, seconds=seconds,
                        max_steps=max_steps, token_file=token_file, name=scheduler, stop=stop,
                        stop_reason=stop_reason, watchdog=watchdog)
        report = runner.run(algorithm, portfolio.case, progress)
        report.extra["portfolio"] = portfolio.summary()
        if report.failure is not None:
            report.extra["found_by"] = portfolio.current
            if portfolio.current in ("dfs", "small"):
                # Found under iterative bounds, every smaller one exhausted
                # first: the fewest on its program already.
                p = report.failure.outcome.preemptions
                report.extra["minimized"] = {"preemptions_found": p, "preemptions": p,
                                             "fewest": True, "seconds": 0.0, "by": "search"}
                if found is not None:
                    found()
            else:
                minimize(report)
        report.guarantee = portfolio.report()
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
                                "and pct's bound holds per program (pin one with --execution "
                                "or a full set of shape options)")
        elif not isinstance(inner, DfsScheduler):
            report.guarantee = report_of(inner)
            if isinstance(inner, PctScheduler):
                # For merging jobs' bounds (search/scale.py): the bounds multiply.
                report.extra["_pct_bound"] = inner.miss_bound()
    return report


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


def fewest_preemptions(found: ExecutionResult, *, max_executions: int = 20_000,
                       seconds: float = 30.0,
                       max_steps: int = DEFAULT_MAX_STEPS) -> tuple[ExecutionResult, bool]:
    """The same program's failing schedule with the fewest preemptions, in
    two phases within the budget:

    1. sampling: schedules with k preemption points (k = 1, 2, ... below the
       best so far; the running thread keeps the CPU elsewhere, see
       :class:`~concurrent_dirty.schedulers.PreemptionPoints`), every single
       point in a shuffled order for k = 1, random ones above, for up to half
       the time: a random walk's counterexample with thirty preemptions
       usually needs one or two, and this finds them in a few hundred runs;
    2. proof: exhaustive search with bound 0, 1, ... below the best
       (Musuvathi and Qadeer's iterative context bounding).

    Returns the traced result and whether its count is proven the fewest
    (every smaller bound exhausted); ``found`` itself (traced) if nothing
    smaller fails within the budget."""
    start = time.monotonic()
    deadline = start + seconds
    best = found
    runs = 0

    def run(scheduler: Any) -> ExecutionResult:
        nonlocal runs
        runs += 1
        return run_controlled(found.algorithm_ref, found.scenario, found.program, scheduler,
                              max_steps=max_steps)

    # 1. sampling, for up to half the budget
    sampling = start + seconds / 2
    decisions = max(1, len(found.outcome.schedule))
    rng = random.Random(f"fewest:{decisions}:{found.outcome.step}")
    k = 1
    while k < best.outcome.preemptions and time.monotonic() < sampling \
            and runs < max_executions // 2:
        if k == 1:
            singles = [(i, v) for i in range(decisions) for v in (1, 2)]
            rng.shuffle(singles)
            tries: Any = ([p] for p in singles)
        else:
            tries = ([(rng.randrange(decisions), rng.randrange(1, 3)) for _ in range(k)]
                     for _ in range(4 * decisions))
        for points in tries:
            if time.monotonic() >= sampling or runs >= max_executions // 2:
                break
            result = run(_fresh(PreemptionPoints(points)))
            if result.outcome.kind == found.outcome.kind \
                    and result.outcome.preemptions < best.outcome.preemptions:
                best = result
                break
        k += 1
    # 2. proof: every bound below the best, exhausted
    for bound in range(best.outcome.preemptions):
        dfs = DfsScheduler(bound)
        budget = Budget(dfs, executions=max(1, max_executions - runs))
        while time.monotonic() < deadline and budget.new_execution():
            result = run(budget)
            if result.outcome.kind == found.outcome.kind:
                return _retrace(result, max_steps), True
        if not dfs.exhausted:
            return _retrace(best, max_steps), False  # out of budget: not proven
    return _retrace(best, max_steps), True


def _retrace(found: ExecutionResult, max_steps: int) -> ExecutionResult:
    """``found`` again under its own schedule, with the trace on (``found``
    itself if it already has its trace: not run twice)."""
    if found.outcome.trace:
        return found
    return run_controlled(found.algorithm_ref, found.scenario, found.program,
                          _fresh(ReplayScheduler(found.outcome.schedule)), trace=True,
                          max_steps=max_steps)


def minimize_preemptions(found: ExecutionResult, *, max_executions: int = 20_000,
                         seconds: float = 30.0,
                         max_steps: int = DEFAULT_MAX_STEPS) -> ExecutionResult:
    """:func:`fewest_preemptions`'s result alone."""
    return fewest_preemptions(found, max_executions=max_executions, seconds=seconds,
                              max_steps=max_steps)[0]


#: The most a search spends minimizing its failure's preemptions (and never
#: more than what is left of its seconds).
MINIMIZE_SECONDS = 2.0


def _minimize(report: FuzzReport, seconds: float, max_steps: int,
              token_file: str | None) -> None:
    """Give a search's failure the fewest preemptions on its program, in
    what is left of ``seconds`` (at most :data:`MINIMIZE_SECONDS`): a random
    walk's counterexample has dozens of preemptions, most of them
    irrelevant; one with one or two is read at a glance. On a small program
    the bounds below it are soon exhausted; on a wide one the budget may run
    out first, and the report says the count is not proven the fewest. The
    first failure's time and execution stay in ``extra``."""
    found = report.failure
    if found is None or found.outcome.kind == Verdict.HANG \
            or "nondeterministic" in report.extra or not found.outcome.preemptions:
        return
    report.extra["first_failure_seconds"] = round(report.seconds, 4)
    report.extra["first_failure_execution"] = report.executions
    left = min(seconds - report.seconds, MINIMIZE_SECONDS)
    if left <= 0:
        report.extra["minimized"] = {"preemptions_found": found.outcome.preemptions,
                                     "preemptions": found.outcome.preemptions,
                                     "fewest": False, "seconds": 0.0}
        return
    start = time.monotonic()
    result, fewest = fewest_preemptions(found, seconds=left, max_steps=max_steps)
    report.failure = result
    report.extra["minimized"] = {"preemptions_found": found.outcome.preemptions,
                                 "preemptions": result.outcome.preemptions,
                                 "fewest": fewest,
                                 "seconds": round(time.monotonic() - start, 4)}
    if token_file:
        _write_pending(token_file, result.token)


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


def pending_token(cls: type[DirtyLogAlgorithm], scenario: Scenario, program: Program) -> str:
    """A token for an execution that has not ended yet: its program with an
    empty schedule (replay then runs it under a deterministic default)."""
    from .._core.runtime import Outcome

    pending = ExecutionResult(algorithm=algorithm_name(cls), algorithm_ref=algorithm_ref(cls),
                              scenario=scenario, program=program, outcome=Outcome())
    return encode(pending)


def _fresh(scheduler: Any) -> Any:
    scheduler.new_execution()
    return scheduler


def _fill(report: FuzzReport, metrics: Metrics, start: float) -> None:
    report.executions = metrics.executions
    report.preemptions = metrics.preemptions
    report.switches = metrics.switches
    report.seconds = time.monotonic() - start


def replay(token: str, *, algorithm: str | None = None, trace: bool = True,
           max_steps: int = DEFAULT_MAX_STEPS,
           watchdog: float = DEFAULT_WATCHDOG) -> ExecutionResult:
    """Rerun a token's execution (against ``algorithm`` instead of the
    token's own, to check a fix). ``result.check()`` raises while it fails."""
    case = decode(token)
    scheduler = _fresh(ReplayScheduler(case.schedule))
    return run_controlled(algorithm or case.algorithm, case.scenario, case.program,
                          scheduler, max_steps=max_steps, trace=trace, watchdog=watchdog)


def regression_test(token: str) -> str:
    """A pytest function that turns ``token`` into a regression test."""
    return (f"def test_replay_regression():\n"
            f"    from concurrent_dirty import replay\n"
            f"    replay({token!r}).check()  # raises while the bug is there\n")


