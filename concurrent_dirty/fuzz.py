"""Fuzzing interleavings: many controlled executions under a scheduler, the
Hypothesis strategy that draws them, and replay.

``explore`` runs executions until the scheduler is done, the budget is
spent, or one fails; a failure is re-run under its recorded schedule with
the trace on, so the report shows the interleaving step by step, and comes
with a replay token. Before each execution the pending token can be written
to a file, so that a crash or a hang still leaves something to replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ._output import write_text
from ._token import decode
from .controlled import DEFAULT_MAX_STEPS, ExecutionResult, Program, make_program, run_controlled
from .dirtylog import algorithm_name, resolve_algorithm
from .errors import InvariantViolation, UsageError
from .scenario import Scenario
from .scheduler import (
    ChoiceScheduler,
    DfsScheduler,
    Metrics,
    PctScheduler,
    RandomScheduler,
    ReplayScheduler,
)

__all__ = ["FuzzReport", "Interleaving", "SCHEDULERS", "explore", "interleavings",
           "minimize_preemptions", "regression_test", "replay"]

SCHEDULERS = ("random", "pct", "dfs", "hypothesis")


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


def explore(algorithm: str, scenario: Scenario, *, scheduler: str = "pct",
            executions: int | None = 1000, seconds: float = 10.0, depth: int = 2,
            preemptions: int | None = 2, rounds: int = 2, seed: int = 0,
            max_steps: int = DEFAULT_MAX_STEPS, token_file: str | None = None,
            program: Program | None = None, vary_program: bool | None = None,
            progress: Callable[[FuzzReport], None] | None = None) -> FuzzReport:
    """Fuzz ``algorithm`` with ``scheduler`` (random, pct or dfs) within
    ``executions`` and ``seconds``; stops at the first failure.

    ``vary_program``: draw new writes for every execution (more coverage,
    the default for random) or keep one program (``program``, else the
    scenario's for its seed), which dfs needs and which pct's guarantee is
    about (the default for both)."""
    cls = resolve_algorithm(algorithm)
    if scheduler == "random":
        inner: Any = RandomScheduler(seed, max_executions=executions)
    elif scheduler == "pct":
        inner = PctScheduler(seed, depth=depth, max_executions=executions)
    elif scheduler == "dfs":
        inner = DfsScheduler(preemptions, max_executions=executions)
    else:
        raise UsageError(f"expected a scheduler in ['random', 'pct', 'dfs'] for explore, "
                         f"got {scheduler!r}")
    metrics = Metrics(inner)
    report = FuzzReport(algorithm=algorithm_name(cls), scheduler=scheduler)
    if vary_program is None:
        vary_program = scheduler == "random" and program is None
    fixed = None if vary_program else (program or make_program(scenario, rounds))
    start = time.monotonic()
    deadline = start + seconds
    last_tick = start
    while time.monotonic() < deadline and metrics.new_execution():
        current = fixed or make_program(scenario, rounds, execution=metrics.executions)
        if token_file:
            _write_pending(token_file, f"pending: {scheduler} seed {seed} execution "
                                       f"{metrics.executions} of {algorithm}")
        result = run_controlled(cls, scenario, current, metrics, max_steps=max_steps)
        report.steps += result.outcome.steps
        if result.failed:
            # Re-run the same schedule with the trace on: same steps, same failure.
            traced = run_controlled(cls, scenario, current,
                                    _fresh(ReplayScheduler(result.outcome.schedule)),
                                    max_steps=max_steps, trace=True)
            if (traced.outcome.kind, traced.outcome.step) != (result.outcome.kind,
                                                              result.outcome.step):
                report.extra["nondeterministic"] = (
                    f"the failure ({result.outcome.kind} at step {result.outcome.step}) did "
                    f"not reproduce under its own schedule ({traced.outcome.kind} at step "
                    f"{traced.outcome.step}): the code under test depends on something "
                    f"outside the switch points (time, randomness, state across executions)")
            else:
                result = traced
            report.failure = result
            if token_file:
                _write_pending(token_file, result.token)
            break
        now = time.monotonic()
        if progress is not None and now - last_tick > 0.2:
            last_tick = now
            _fill(report, metrics, start)
            progress(report)
    _fill(report, metrics, start)
    if isinstance(inner, DfsScheduler):
        report.exhausted = inner.exhausted
        report.extra["preemption_bound"] = preemptions
    if isinstance(inner, PctScheduler) and report.failure is None:
        if fixed is None:
            report.guarantee = ("pct guarantee: none stated, the program varied between "
                                "executions (the bound is per program)")
        else:
            n, k, valid, p, q = inner.miss_bound()
            report.guarantee = (
                f"pct guarantee for this program: with n={n} threads and at most k={k} steps, "
                f"each execution finds a given depth-{depth} bug with probability >= "
                f"1/(n*k^{depth - 1}) = {p:.3g}; after {valid} clean executions within their "
                f"k (of {report.executions}) the chance such a bug was missed is <= {q:.3g}")
    return report


def _fresh(scheduler: Any) -> Any:
    scheduler.new_execution()
    return scheduler


def _fill(report: FuzzReport, metrics: Metrics, start: float) -> None:
    report.executions = metrics.executions
    report.preemptions = metrics.preemptions
    report.switches = metrics.switches
    report.seconds = time.monotonic() - start


def replay(token: str, *, algorithm: str | None = None, trace: bool = True,
           max_steps: int = DEFAULT_MAX_STEPS) -> ExecutionResult:
    """Rerun a token's execution (against ``algorithm`` instead of the
    token's own, to check a fix). ``result.check()`` raises while it fails."""
    case = decode(token)
    scheduler = _fresh(ReplayScheduler(case.schedule))
    result = run_controlled(algorithm or case.algorithm, case.scenario, case.program,
                            scheduler, max_steps=max_steps, trace=trace)
    return result


def regression_test(token: str) -> str:
    """A pytest function that turns ``token`` into a regression test."""
    return (f"def test_replay_regression():\n"
            f"    from concurrent_dirty import replay\n"
            f"    replay({token!r}).check()  # raises while the bug is there\n")


# -- Hypothesis -------------------------------------------------------------------
@dataclass(frozen=True)
class Interleaving:
    """One drawn case: a scenario's shape and the scheduling decisions."""

    algorithm: str
    scenario: Scenario
    program: Program
    choices: tuple[int, ...]

    def run(self, *, trace: bool = False) -> ExecutionResult:
        return run_controlled(self.algorithm, self.scenario, self.program,
                              _fresh(ChoiceScheduler(self.choices)), trace=trace)

    def check(self) -> None:
        """Run it and raise if it fails. In Hypothesis's final run (the
        shrunk example it reports), first minimise the preemptions with
        iterative preemption bounding, then raise with the counterexample
        and the replay token."""
        self.check_result(self.run())

    def check_result(self, result: ExecutionResult) -> None:
        """:meth:`check` for a result the caller already has."""
        if not result.failed:
            return
        if not _is_final():
            raise InvariantViolation(f"{result.outcome.kind}: {result.outcome.message}")
        minimize_preemptions(result).check()


def _is_final() -> bool:
    try:
        from hypothesis.control import current_build_context

        return bool(current_build_context().is_final)
    except Exception:  # outside a Hypothesis test: report in full
        return True


def minimize_preemptions(found: ExecutionResult, *, max_executions: int = 20_000,
                         seconds: float = 30.0) -> ExecutionResult:
    """The same program's failing schedule with the fewest preemptions:
    exhaustive search with bound 0, 1, ... below what ``found`` used
    (Musuvathi and Qadeer's iterative context bounding). Returns the traced
    result; ``found`` itself (traced) if no smaller bound fails within the
    budget."""
    deadline = time.monotonic() + seconds
    for bound in range(found.outcome.preemptions):
        dfs = DfsScheduler(bound, max_executions=max_executions)
        while time.monotonic() < deadline and dfs.new_execution():
            result = run_controlled(found.algorithm_ref, found.scenario, found.program, dfs)
            if result.outcome.kind == found.outcome.kind:
                return run_controlled(found.algorithm_ref, found.scenario, found.program,
                                      _fresh(ReplayScheduler(result.outcome.schedule)),
                                      trace=True)
        if not dfs.exhausted:
            break  # out of budget: the bound is not proven minimal
    return run_controlled(found.algorithm_ref, found.scenario, found.program,
                          _fresh(ReplayScheduler(found.outcome.schedule)), trace=True)


def interleavings(algorithm: str, *, writers: Any = None, writes: Any = None, pages: Any = None,
                  rounds: Any = None, on_behalf: bool | None = None,
                  max_decisions: int = 400) -> Any:
    """A Hypothesis strategy of :class:`Interleaving` cases for ``algorithm``.

    The shape (writers, writes per writer, pages of the one slot, harvest
    rounds, which writes are on-behalf) and every scheduling decision are
    drawn from Hypothesis, nothing from thread timing, so a failure shrinks
    to the smallest workload and the fewest preemptions and is saved in the
    example database. Each argument takes an int (fixed) or a strategy.
    """
    from hypothesis import strategies as st

    resolve_algorithm(algorithm)

    def as_strategy(value: Any, default: Any) -> Any:
        if value is None:
            return default
        return value if isinstance(value, st.SearchStrategy) else st.just(value)

    @st.composite
    def build(draw: Any) -> Interleaving:
        n_writers = draw(as_strategy(writers, st.integers(1, 3)))
        n_pages = draw(as_strategy(pages, st.integers(1, 8)))
        n_rounds = draw(as_strategy(rounds, st.integers(0, 3)))
        flag = st.booleans() if on_behalf is None else st.just(on_behalf)
        per_writer = as_strategy(writes, st.integers(1, 3))
        program = []
        for _ in range(n_writers):
            k = draw(per_writer)
            program.append(tuple((draw(st.integers(0, n_pages - 1)), draw(flag))
                                 for _ in range(k)))
        choices = draw(st.lists(st.integers(0, 7), max_size=max_decisions))
        scenario = replace(Scenario(algorithm=algorithm), slots=1, pages=n_pages,
                           writers=n_writers)
        return Interleaving(algorithm, scenario, Program(tuple(program), n_rounds),
                            tuple(choices))

    return build()

