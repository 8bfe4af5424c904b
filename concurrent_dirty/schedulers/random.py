"""``random``: a seeded random walk over the runnable threads.

With probability ``stay`` the thread that is running keeps the CPU (when it
can); otherwise any runnable thread is picked uniformly. Each execution
draws from its own generator, seeded from ``(seed, execution)``, so any one
execution can be reproduced alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ..errors import UsageError

__all__ = ["RandomScheduler"]


class RandomScheduler:
    def __init__(self, seed: int = 0, *, stay: float = 0.5) -> None:
        if not 0.0 <= stay < 1.0:
            raise UsageError(f"expected 0 <= stay < 1 for the random scheduler, got {stay!r}")
        self.seed = seed
        self.stay = stay
        self.execution = 0
        self._rng = random.Random()
        self._declined = False

    def new_execution(self) -> bool:
        self.execution += 1
        self._rng = random.Random(f"random:{self.seed}:{self.execution}")
        self._declined = False
        return True

    def keep(self, current: int, free: Sequence[int], held: Sequence[int],
             can_run: Callable[[int], bool]) -> bool:
        """The runtime's fast step (``runtime.Keep``): the stay coin alone
        decides that the running thread goes on; if it says no, the
        ``next_thread`` that follows picks among the runnable threads
        without tossing it again (the same draws as ``next_thread``)."""
        if self._rng.random() < self.stay:
            return True
        self._declined = True
        return False

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        rng = self._rng
        if current is not None:
            if self._declined:
                self._declined = False
            elif rng.random() < self.stay:
                return current
        return runnable[rng.randrange(len(runnable))]

    def report(self) -> str:
        """A random walk guarantees nothing; say so."""
        return "random walk: no guarantee (the executions above are all it tried)"
