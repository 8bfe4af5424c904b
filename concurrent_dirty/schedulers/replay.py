"""``replay``: runs a recorded schedule, then keeps going deterministically.

The schedule is the list of thread ids chosen at each decision. Where the
recorded choice is not runnable (the code changed, or the token is replayed
against the fixed algorithm) or the schedule has run out, it keeps the
current thread if it can, else the lowest runnable id, and counts the
divergence so that a report can say so.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["OneExecution", "ReplayScheduler"]


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
