"""Schedulers for the controlled engine, one per module, behind the
:class:`~concurrent_dirty._core.runtime.Scheduler` protocol; and the
:class:`Metrics` wrapper that counts what any of them did.

Layer 2 (beside ``model``): a scheduler sees thread ids and nothing else.
May import: errors, ``_core``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._core.runtime import Scheduler
from .dfs import DfsScheduler
from .hypothesis import ChoiceScheduler
from .pct import PctScheduler
from .random import RandomScheduler
from .replay import ReplayScheduler

__all__ = ["ChoiceScheduler", "DfsScheduler", "Metrics", "PctScheduler", "RandomScheduler",
           "ReplayScheduler", "Scheduler"]


class Metrics:
    """Wraps a scheduler and counts executions, decisions, preemptions and
    context switches (a wrapper, not a flag in each scheduler)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.executions = 0
        self.decisions = 0
        self.preemptions = 0
        self.switches = 0
        self._last: int | None = None

    def new_execution(self) -> bool:
        if not self.inner.new_execution():
            return False
        self.executions += 1
        self._last = None
        return True

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        choice = self.inner.next_thread(runnable, current)
        self.decisions += 1
        if current is not None and choice != current:
            self.preemptions += 1
        if self._last is not None and choice != self._last:
            self.switches += 1
        self._last = choice
        return choice

    def next_u64(self) -> int:
        return self.inner.next_u64()
