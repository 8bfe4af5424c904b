"""Schedulers for the controlled engine, one per module, behind the
:class:`~concurrent_dirty._core.runtime.Scheduler` protocol; the wrappers
that count (:class:`Metrics`) and stop (:class:`Budget`) any of them; and
the one registry that maps names to factories, used by the CLI, the zoo,
the pytest plugin and the benchmarks.

Layer 2 (beside ``model``): a scheduler sees thread ids and nothing else.
May import: errors, ``_core``.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

from .._core.runtime import Keep, Outcome, Scheduler
from ..errors import UsageError
from .dfs import DfsScheduler
from .hypothesis import ChoiceScheduler, PreemptionPoints
from .pct import PctScheduler
from .random import RandomScheduler
from .replay import PointsRecorder, ReplayScheduler, ThreadPoints

__all__ = ["SCHEDULERS", "Budget", "ChoiceScheduler", "DfsScheduler", "Metrics", "PctScheduler",
           "PointsRecorder", "PreemptionPoints", "RandomScheduler", "ReplayScheduler", "Scheduler",
           "SchedulerOptions", "ThreadPoints", "make_scheduler", "report_of"]


class Metrics:
    """Wraps a scheduler and counts executions, decisions, preemptions and
    context switches (a wrapper, not a flag in each scheduler).

    Counted once per execution, from its outcome (``account``, which
    ``run_controlled`` calls), not at every decision: the runtime takes
    the inner scheduler's ``next_thread`` and ``keep`` from this wrapper
    once per execution and calls them directly."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.executions = 0
        self.decisions = 0
        self.preemptions = 0
        self.switches = 0

    def new_execution(self) -> bool:
        if not self.inner.new_execution():
            return False
        self.executions += 1
        return True

    @property
    def next_thread(self) -> Callable[[Sequence[int], int | None], int]:
        return self.inner.next_thread

    @property
    def keep(self) -> Keep | None:
        return getattr(self.inner, "keep", None)

    def account(self, outcome: Outcome) -> None:
        """Count an execution that ended: its decisions, its preemptions
        (a decision that took the CPU from a thread that could go on) and
        its switches (a decision that picked another thread than the one
        before)."""
        schedule = outcome.schedule
        self.decisions += len(schedule)
        self.preemptions += outcome.preemptions
        self.switches += sum(map(operator.ne, schedule, islice(schedule, 1, None)))


class Budget:
    """Wraps a scheduler and says "done" once ``executions`` executions
    have started or ``seconds`` have passed since the first (shuttle's
    stoppable wrapper): a bound on every campaign, in one place."""

    def __init__(self, inner: Scheduler, *, executions: int | None = None,
                 seconds: float | None = None, stop: Callable[[], bool] | None = None,
                 stop_reason: str = "stopped") -> None:
        self.inner = inner
        self.executions = executions
        self.seconds = seconds
        #: Asked before each execution: true ends the campaign (another job
        #: found a failure, say).
        self.stop = stop
        self.stop_reason = stop_reason
        self.started = 0
        self._deadline: float | None = None
        #: Why the budget ended the campaign ("executions", "seconds"), if it did.
        self.stopped_by: str | None = None

    def new_execution(self) -> bool:
        now = time.monotonic()
        if self._deadline is None and self.seconds is not None:
            self._deadline = now + self.seconds
        if self.executions is not None and self.started >= self.executions:
            self.stopped_by = "executions"
            return False
        if self._deadline is not None and now >= self._deadline:
            self.stopped_by = "seconds"
            return False
        if self.stop is not None and self.stop():
            self.stopped_by = self.stop_reason
            return False
        if not self.inner.new_execution():
            return False
        self.started += 1
        return True

    @property
    def next_thread(self) -> Callable[[Sequence[int], int | None], int]:
        return self.inner.next_thread  # a pass-through costs nothing per decision

    @property
    def keep(self) -> Keep | None:
        return getattr(self.inner, "keep", None)


@dataclass(frozen=True)
class SchedulerOptions:
    """What a factory may use: the seed, PCT's depth, DFS's bound."""

    seed: int = 0
    #: PCT's bug depth; None cycles 1-5.
    depth: int | None = None
    #: DFS's preemption bound; None: iterative bounds 0-3.
    preemptions: int | None = None


SchedulerFactory = Callable[[SchedulerOptions], Scheduler]

#: Name -> factory. The controlled search strategies a user can name.
SCHEDULERS: dict[str, SchedulerFactory] = {
    "random": lambda o: RandomScheduler(o.seed),
    "pct": lambda o: PctScheduler(o.seed, depth=o.depth),
    "dfs": lambda o: DfsScheduler(o.preemptions),
}


def make_scheduler(name: str, options: SchedulerOptions | None = None) -> Scheduler:
    """A fresh scheduler by its registered name."""
    factory = SCHEDULERS.get(name)
    if factory is None:
        import difflib

        close = difflib.get_close_matches(name, list(SCHEDULERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"expected a scheduler in {sorted(SCHEDULERS)}, got {name!r}{hint}")
    return factory(options or SchedulerOptions())


def report_of(scheduler: Scheduler) -> str:
    """What a scheduler (under any wrappers) says it guaranteed."""
    inner: object = scheduler
    while isinstance(inner, (Metrics, Budget)):
        inner = inner.inner
    report = getattr(inner, "report", None)
    return report() if callable(report) else ""
