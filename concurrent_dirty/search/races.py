"""Race-directed preemption bounding: every schedule of one program with at
most ``bound`` preemptions, the ones that reverse a race first.

A schedule is named by its *deviations* from the default one (the running
thread goes on while it can; where it cannot, the lowest runnable id
runs): the decisions at which it picks another thread, in order. Each
schedule has exactly one such list, and a schedule's children are those
with one more deviation after its last one, so the tree of deviation lists
holds every schedule once; a deviation where the running thread could have
gone on is a preemption and costs one of the bound.

Which children run first is the point. Iterative preemption bounding with
depth-first search (``dfs``) backtracks from an execution's end, so it
tries the last decisions first and reaches a preemption early in the run
only after most of the others: on the fast page fault's two-preemption race
on a tiny program, about a thousand executions. Here each execution's
conflicting operations are read as DPOR reads them (Flanagan and Godefroid,
POPL 2005): for every operation, the latest earlier operation of another
thread on the same word, one of them a write, that happens-before does not
order (vector clocks over the operations' conflicts). Reversing such a
race is the deviation worth making: preempt the earlier operation's thread
just before it for the later one's, or, as bounded partial-order reduction
does (Coons, Musuvathi and McKinley, OOPSLA 2013), switch to the later
one's thread where the earlier thread's run began, which is free when that
was not a preemption. A child whose deviations all come from races runs
before any child with one that does not; among equals, fewer preemptions
first. So the search still runs every schedule within the bound, once each
(``exhausted`` when done), and on the fast page fault's race it needs tens
of executions, not a thousand.

Deterministic: the order is a function of the executions alone. The
scheduler asks for each operation through ``observe`` (the controlled
runtime's observer); it has no ``keep``, so it sees every decision.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence

from .._core.switch import Op

__all__ = ["RaceBounded"]

#: Operations that only read their word (two of them never conflict).
_READS = frozenset({Op.LOAD, Op.ENTER, Op.EXIT, Op.YIELD, Op.WAIT})
#: Operations on an object rather than one of its words (a lock, a
#: read-side section, a wait): any two on the same object may conflict.
_WHOLE = frozenset({Op.ENTER, Op.EXIT, Op.WAIT, Op.SYNCHRONIZE, Op.ACQUIRE, Op.RELEASE})

#: A deviation's weight when it reverses no race (an earlier race of an
#: operation weighs 1, its latest 0): a schedule's weight is its
#: deviations' sum, and the lightest run first.
NOT_A_RACE = 100

#: A deviation: (decision index, the thread picked there).
Deviation = tuple[int, int]


class RaceBounded:
    """Every schedule of one program with at most ``bound`` preemptions
    (see the module docstring), one per execution: ``new_execution`` says
    no when none is left (``exhausted``)."""

    def __init__(self, bound: int = 2, *, races_only: bool = False) -> None:
        self.bound = bound
        #: Stop (``new_execution`` says no) once every schedule whose
        #: deviations all reverse races has run: the rest are not tried.
        self.races_only = races_only
        self.execution = 0
        self.exhausted = False
        # (priority, order, deviations, cost, non-race deviations)
        self._queue: list[tuple[tuple[int, int], int, tuple[Deviation, ...], int, int]] = [
            ((0, 0), 0, (), 0, 0)]
        self._order = itertools.count(1)
        #: Queued schedules by their preemptions (what ``exhausted_below`` reads).
        self._queued = [1] + [0] * bound
        self._devs: dict[int, int] = {}
        self._node: tuple[tuple[Deviation, ...], int, int] | None = None
        self._ran = False
        #: This execution: each decision's (current, runnable, operations
        #: before it) and the thread picked; each operation's (thread,
        #: object, writes).
        self._decisions: list[tuple[int | None, tuple[int, ...], int]] = []
        self._chosen: list[int] = []
        self._ops: list[tuple[int, tuple[str, int], bool]] = []
        #: Preemptions of the schedule running now.
        self.cost = 0

    # -- the scheduler protocol ---------------------------------------------------
    def new_execution(self) -> bool:
        if self._ran:
            self._expand()
        if not self._queue:
            self.exhausted = True
            self._node = None
            return False
        if self.races_only and self._queue[0][0][0] >= NOT_A_RACE:
            self._node = None
            return False
        _, _, devs, cost, nonrace = heapq.heappop(self._queue)
        self._queued[cost] -= 1
        self._node = (devs, cost, nonrace)
        self.cost = cost
        self._devs = dict(devs)
        self._decisions = []
        self._chosen = []
        self._ops = []
        self._ran = True
        self.execution += 1
        return True

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        d = len(self._decisions)
        if current is not None and current not in runnable:
            current = None
        self._decisions.append((current, tuple(runnable), len(self._ops)))
        t = self._devs.get(d)
        if t is None or t not in runnable:
            t = current if current is not None else runnable[0]
        self._chosen.append(t)
        return t

    @property
    def observe(self) -> Callable[[int, Op, str, int], None]:
        return self._observe

    def _observe(self, tid: int, op: Op, target: str, index: int) -> None:
        self._ops.append((tid, (target, -1) if op in _WHOLE else (target, index),
                          op not in _READS))

    def exhausted_below(self, preemptions: int) -> bool:
        """Whether every schedule with fewer than ``preemptions`` has run
        (none is queued: a child never costs less than its parent)."""
        return not any(self._queued[:max(0, min(preemptions, self.bound + 1))])

    def report(self) -> str:
        n = self.bound
        what = f"every schedule with at most {n} preemption{'' if n == 1 else 's'}"
        return (f"race-directed bounding: {what} was run ({self.execution} executions)"
                if self.exhausted else f"race-directed bounding: {what} was NOT run")

    # -- the tree -----------------------------------------------------------------
    def _expand(self) -> None:
        """Queue the children of the schedule that just ran."""
        self._ran = False
        assert self._node is not None
        devs, cost, nonrace = self._node
        decisions = self._decisions
        racy = self._race_points()
        last = devs[-1][0] if devs else -1
        for d in range(last + 1, len(decisions)):
            current, runnable, _ = decisions[d]
            default, c = (current, 1) if current is not None else (runnable[0], 0)
            if cost + c > self.bound:
                continue
            for t in runnable:
                if t == default:
                    continue
                n = nonrace + racy.get((d, t), NOT_A_RACE)
                heapq.heappush(self._queue, ((n, cost + c), next(self._order),
                                             (*devs, (d, t)), cost + c, n))
                self._queued[cost + c] += 1

    def _race_points(self) -> dict[Deviation, int]:
        """The deviations that reverse a race of this execution (see the
        module docstring), each with its weight: 0 for an operation's latest
        race, 1 for an earlier one."""
        ops, decisions, chosen = self._ops, self._decisions, self._chosen
        # The decision after which each operation ran, and where each
        # thread's run (its consecutive decisions) began.
        before: dict[int, int] = {}
        start: list[int] = []
        for d, (current, _, n) in enumerate(decisions):
            before[n] = d
            start.append(d if chosen[d] != current or not d else start[d - 1])
        clocks: dict[int, dict[int, int]] = {}
        writes: dict[tuple[str, int], dict[int, int]] = {}
        reads: dict[tuple[str, int], dict[int, int]] = {}
        history: dict[tuple[str, int], list[tuple[int, int, bool, int]]] = {}
        points: dict[Deviation, int] = {}
        for j, (t, key, write) in enumerate(ops):
            clock = clocks.setdefault(t, {})
            clock[t] = clock.get(t, 0) + 1
            past = history.setdefault(key, [])
            latest = True
            for i, u, w, epoch in reversed(past):
                if u != t and (w or write) and clock.get(u, 0) < epoch:
                    at = before.get(i)
                    if at is not None and chosen[at] == u:
                        weight = 0 if latest else 1
                        for p in ((at, t), (start[at], t)):
                            if points.get(p, 2) > weight:
                                points[p] = weight
                    latest = False
            # Happens-before through the word: a read after the last write,
            # a write after every access.
            _join(clock, writes.get(key))
            if write:
                _join(clock, reads.get(key))
                writes[key] = dict(clock)
            else:
                _join(reads.setdefault(key, {}), clock)
            past.append((j, t, write, clock[t]))
        return points


def _join(into: dict[int, int], other: dict[int, int] | None) -> None:
    if other:
        for k, v in other.items():
            if into.get(k, 0) < v:
                into[k] = v
