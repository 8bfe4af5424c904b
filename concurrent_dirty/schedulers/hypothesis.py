"""``hypothesis``: scheduling decisions drawn from Hypothesis, as a list.

Hypothesis draws the list of decision values up front (so no draw can
depend on thread timing); decision ``i`` reads value ``v = choices[i]``
(0 when the list has run out). Where the current thread could go on, 0
keeps it and ``v > 0`` preempts it for the ``(v-1) % len(others)``-th other
runnable thread; elsewhere ``v`` picks ``runnable[v % len(runnable)]``.
Hypothesis shrinks lists toward shorter and values toward 0, which here
means toward fewer preemptions: a failure shrinks to the fewest
preemptions, the way trio and loom want a counterexample.
"""

from __future__ import annotations

from collections.abc import Sequence

from .replay import OneExecution

__all__ = ["ChoiceScheduler"]


class ChoiceScheduler(OneExecution):
    def __init__(self, choices: Sequence[int]) -> None:
        self.choices = list(choices)
        self._pos = 0

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        v = self.choices[self._pos] if self._pos < len(self.choices) else 0
        self._pos += 1
        if current is not None and current in runnable:
            if v == 0:
                return current
            others = [t for t in runnable if t != current]
            return others[(v - 1) % len(others)] if others else current
        return runnable[v % len(runnable)]
