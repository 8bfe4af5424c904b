"""Hypothesis drives the controlled engine: a strategy of interleavings
(the shape and every scheduling decision drawn from Hypothesis, nothing
from thread timing, so a failure shrinks) and iterative preemption bounding
to make a counterexample's preemptions provably minimal."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from ..dirtylog import resolve_algorithm
from ..engines.controlled import run_controlled
from ..errors import InvariantViolation
from ..harness.execution import ExecutionResult
from ..harness.program import Program
from ..harness.scenario import Scenario
from ..schedulers import Budget, ChoiceScheduler, DfsScheduler, ReplayScheduler
from .runner import _fresh

__all__ = ["Interleaving", "interleavings", "minimize_preemptions"]


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
        dfs = DfsScheduler(bound)
        budget = Budget(dfs, executions=max_executions)
        while time.monotonic() < deadline and budget.new_execution():
            result = run_controlled(found.algorithm_ref, found.scenario, found.program, budget)
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

