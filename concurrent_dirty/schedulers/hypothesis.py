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

import random
from collections.abc import Sequence

from .replay import OneExecution

__all__ = ["ChoiceScheduler", "PreemptionPoints"]


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


class PreemptionPoints(OneExecution):
    """A schedule as a few preemption points, for Hypothesis.

    ``points`` maps a decision index to a value ``v >= 1``. At a listed
    decision where the running thread could go on, it is preempted for the
    ``(v-1) % len(others)``-th other runnable thread; everywhere else the
    running thread keeps the CPU while it can, and when it blocks or ends the
    lowest runnable id (or, at a listed decision, ``runnable[v % n]``) runs.
    With no points nothing is preempted; each point adds at most one
    preemption, so Hypothesis's shrinking (fewer, earlier points) is a
    shrinking toward the fewest preemptions. PCT's change points, drawn by
    Hypothesis instead of at random.

    ``rate`` (0-16) adds background preemptions: at each other decision,
    with probability ``rate/16``, a seeded random preemption. Hypothesis
    draws it too and shrinks it toward 0, so it finds bugs whose window a
    few drawn points rarely hit, and then gives them up where points
    suffice; the reported counterexample's preemptions are minimised by
    iterative bounding in any case.
    """

    def __init__(self, points: Sequence[tuple[int, int]], *, rate: int = 0,
                 seed: int = 0) -> None:
        self.points = dict(points)
        self.rate = rate
        self._rng = random.Random(f"points:{seed}") if rate else None
        self._pos = 0

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        v = self.points.get(self._pos, 0)
        self._pos += 1
        if not v and self._rng is not None and self._rng.random() * 16 < self.rate:
            v = self._rng.randrange(1, 4)
        if current is not None and current in runnable:
            if not v:
                return current
            others = [t for t in runnable if t != current]
            return others[(v - 1) % len(others)] if others else current
        return runnable[v % len(runnable)]
