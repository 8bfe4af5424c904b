"""``replay``: runs a recorded schedule, then keeps going deterministically.

The schedule is the list of thread ids chosen at each decision. Where the
recorded choice is not runnable (the code changed, or the token is replayed
against the fixed algorithm) or the schedule has run out, it keeps the
current thread if it can, else the lowest runnable id, and counts the
divergence so that a report can say so.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["OneExecution", "PointsRecorder", "ReplayScheduler", "ThreadPoint", "ThreadPoints"]


class OneExecution:
    """Schedulers that drive exactly one execution (a replay, one drawn
    case): ``new_execution`` says yes once."""

    execution = 0

    def new_execution(self) -> bool:
        if self.execution:
            return False
        self.execution = 1
        return True

    def report(self) -> str:
        return ""


class ReplayScheduler(OneExecution):
    def __init__(self, schedule: Sequence[int]) -> None:
        self.schedule = list(schedule)
        self.diverged_at: int | None = None
        #: At the divergence: the recorded choice and the runnable threads.
        self.divergence: tuple[int, tuple[int, ...]] | None = None
        self._pos = 0

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        pos = self._pos
        self._pos += 1
        if pos < len(self.schedule) and self.schedule[pos] in runnable:
            return self.schedule[pos]
        if pos < len(self.schedule) and self.diverged_at is None:
            self.diverged_at = pos
            self.divergence = (self.schedule[pos], tuple(runnable))
        return current if current is not None else runnable[0]


#: A point of one thread's own progress: (thread id, how many decisions that
#: thread had asked for before this one); ``None`` for the runtime's start.
ThreadPoint = tuple[int | None, int]


class ThreadPoints(OneExecution):
    """A schedule as preemptions at points of each thread's own progress.

    ``preempt`` maps a :data:`ThreadPoint` to the thread that takes the CPU
    there from the running one (if it is runnable; else the running thread
    goes on); ``follow`` maps a point at which the running thread cannot go
    on (it blocks, yields or ends) to the thread that runs next (if it is
    runnable; else the lowest runnable id). Everywhere else the running
    thread keeps the CPU. A point names a thread's own count of decisions,
    not the execution's, so dropping one preemption leaves the others where
    they were in their threads' code: the minimisation's unit
    (:func:`~concurrent_dirty.search.minimize.fewest_within`). ``applied``
    lists the preemptions that took place, in order."""

    def __init__(self, preempt: dict[ThreadPoint, int],
                 follow: dict[ThreadPoint, int] | None = None) -> None:
        self.preempt = preempt
        self.follow = follow or {}
        self.applied: list[ThreadPoint] = []
        self._last: int | None = None
        self._count: dict[int | None, int] = {}

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        me = self._last
        n = self._count.get(me, 0)
        self._count[me] = n + 1
        if current is not None:
            target = self.preempt.get((me, n))
            if target is not None and target != current and target in runnable:
                self.applied.append((me, n))
                choice = target
            else:
                choice = current
        else:
            target = self.follow.get((me, n))
            choice = target if target is not None and target in runnable else runnable[0]
        self._last = choice
        return choice


class PointsRecorder(ReplayScheduler):
    """A replay that also writes its schedule as :class:`ThreadPoints`'
    ``preempt`` and ``follow`` maps (what :class:`ThreadPoints` needs to run
    the same schedule again)."""

    def __init__(self, schedule: Sequence[int]) -> None:
        super().__init__(schedule)
        self.preempt: dict[ThreadPoint, int] = {}
        self.follow: dict[ThreadPoint, int] = {}
        self._last: int | None = None
        self._count: dict[int | None, int] = {}

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        choice = super().next_thread(runnable, current)
        me = self._last
        n = self._count.get(me, 0)
        self._count[me] = n + 1
        if current is None:
            self.follow[(me, n)] = choice
        elif choice != current:
            self.preempt[(me, n)] = choice
        self._last = choice
        return choice
