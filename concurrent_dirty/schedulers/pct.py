"""``pct``: Probabilistic Concurrency Testing.

Burckhardt, Kothari, Musuvathi, Nagarakatte, "A Randomized Scheduler with
Probabilistic Guarantees of Finding Bugs", ASPLOS 2010. Each thread gets a
random distinct priority above ``depth``; ``depth - 1`` change points are
drawn uniformly from the execution's steps ``1..k``; the highest-priority
runnable thread always runs, and at the i-th change point the running
thread's priority drops to ``depth - i``. For ``n`` threads and ``k`` steps,
one execution finds a given bug of depth ``d`` with probability at least
``1 / (n * k**(d-1))``.

Deviations: threads get their priority when they first become runnable
(all are, at the start, here); a step is a decision with a choice (more
than one thread it could pick): where only one thread can run, there is
nothing for a change point to decide, so those steps count neither into
``k`` nor toward a change point, and the bound (which weakens as ``k``
grows) is the stronger for it; ``k`` is not known in
advance, so it is the largest step count seen so far (the first execution
uses ``k_hint``), as shuttle's PCT does. The bound is per program; an execution longer than the
``k`` its change points came from is not covered, so :meth:`miss_bound`
counts only the executions it covers and reports the largest ``k`` they
used.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from ..errors import UsageError

__all__ = ["PctScheduler"]


#: The depths ``depth=None`` cycles through, one per execution.
CYCLE = (1, 2, 3, 4, 5)


class PctScheduler:
    """``depth=None`` cycles the bug depth through 1 to 5, one execution
    each, with ``k`` the recent average length rather than the longest: for
    a stream of varied programs, where no single-depth bound is claimed and
    a few long programs must not push every change point past the end of
    the short ones."""

    def __init__(self, seed: int = 0, *, depth: int | None = 2, k_hint: int = 200) -> None:
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise UsageError(f"expected a bug depth >= 1 for pct, got {depth!r}")
        self.seed = seed
        self.cycling = depth is None
        self.depth = CYCLE[0] if depth is None else depth
        self._k_avg = float(k_hint)
        self.k = k_hint
        self.execution = 0
        self.max_threads = 0
        self._k_seen = 0
        self._k_used = k_hint
        self._closed = True
        #: Executions the bound covers, and the largest k among them.
        self.valid = 0
        self.k_bound = 0
        self._log_miss = 0.0  # sum of log(1 - p_e) over covered executions
        self._rng = random.Random()
        self._priority: dict[int, float] = {}
        self._changes: dict[int, int] = {}
        self._next_change = 0
        #: The ``free`` threads of keep's last yes (held none), valid until
        #: a priority or the running thread changes; whether it counted a step.
        self._lease: Sequence[int] | None = None
        self._lease_counts = False
        self._step = 0
        self._running: int | None = None

    def new_execution(self) -> bool:
        if self.execution:
            self._close()
            # k: the longest execution seen (the hint only serves the first);
            # cycling over varied programs, the recent average.
            self.k = max(1, round(self._k_avg)) if self.cycling else self._k_seen
        if self.cycling:
            self.depth = CYCLE[self.execution % len(CYCLE)]
        self.execution += 1
        self._k_used = self.k
        self._closed = False
        self._rng = rng = random.Random(f"pct:{self.seed}:{self.execution}")
        self._priority = {}
        points = rng.sample(range(1, self.k + 1), min(self.depth - 1, self.k))
        self._changes = {step: self.depth - 1 - i for i, step in enumerate(sorted(points))}
        self._next_change = self._after(0)
        self._lease = None
        self._step = 0
        self._running = None
        return True

    def _after(self, step: int) -> int:
        """The first change point after ``step`` (0: none left)."""
        return min((c for c in self._changes if c > step), default=0)

    def _close(self) -> None:
        """Account for the execution that just ended: the bound holds only
        for executions no longer than the k their change points used."""
        if self._closed or not self.execution:
            return
        self._closed = True
        self._k_seen = max(self._k_seen, self._step)
        self._k_avg += (self._step - self._k_avg) / 8
        if self._step <= self._k_used:
            self.valid += 1
            self.k_bound = max(self.k_bound, self._k_used)
            n = max(1, len(self._priority))
            self._log_miss += math.log1p(-1.0 / (n * max(1, self._k_used) ** (self.depth - 1)))

    def _prio(self, tid: int) -> float:
        p = self._priority.get(tid)
        if p is None:
            # Distinct random priorities above every change-point priority.
            p = self.depth + self._rng.random()
            self._priority[tid] = p
            self.max_threads = max(self.max_threads, len(self._priority))
        return p

    def keep(self, current: int, free: Sequence[int], held: Sequence[int],
             can_run: Callable[[int], bool]) -> bool:
        """The runtime's fast step (``runtime.Keep``): the running thread
        goes on when no other thread can run (a decision without a choice:
        no step counted) or when, after this step's change point (if any),
        no other thread that can run has a higher priority (a held thread's
        condition is asked only if it would outrank the others). Otherwise
        the ``next_thread`` that follows makes this decision (this method
        changed nothing)."""
        if self._running != current:
            return False  # (never: the running thread is the last one picked)
        if free is self._lease and not held:
            # The same threads can run as at the last keep, whose answer
            # was yes, and no priority changed since: yes again, unless
            # this step is a change point.
            if not self._lease_counts:
                return True
            step = self._step + 1
            if step != self._next_change:
                self._step = step
                return True
        prio = self._priority
        best = -1.0  # the highest priority among the others that can run
        try:
            mine = prio[current]
            for t in free:
                if t != current:
                    p = prio[t]
                    if p > best:
                        best = p
            for t in held:
                p = prio[t]
                if p > best and can_run(t):
                    best = p
        except KeyError:
            return False  # (never: every thread is ranked at the first decision)
        if best < 0:
            self._lease, self._lease_counts = (None if held else free), False
            return True  # only ``current`` can run: no choice, no step
        step = self._step + 1
        if step == self._next_change:
            low = self._changes[step]
            if low <= best:
                return False
            prio[current] = low
            self._next_change = self._after(step)
        elif mine <= best:
            return False
        self._step = step
        self._lease, self._lease_counts = (None if held else free), True
        return True

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        self._lease = None  # priorities and the running thread may change
        if len(runnable) > 1:  # a decision with a choice: a step (of k)
            self._step += 1
            if self._step == self._next_change:
                self._next_change = self._after(self._step)
                if self._running is not None and self._running in runnable:
                    # (a finished thread needs no lowering)
                    self._priority[self._running] = self._changes[self._step]
        choice = max(runnable, key=self._prio)
        self._running = choice
        return choice

    def miss_bound(self) -> tuple[int, int, int, float, float]:
        """(n, k, valid, p, q) for one fixed program: each covered execution
        e (no longer than the k_e its change points were drawn from) finds a
        given depth-d bug with probability at least 1/(n*k_e^(d-1)) >= p,
        with k the largest k_e; after ``valid`` clean ones, the chance it was
        missed is at most q = the product of (1 - 1/(n*k_e^(d-1)))."""
        self._close()
        n = max(1, self.max_threads)
        k = max(1, self.k_bound)
        p = 1.0 / (n * k ** (self.depth - 1))
        return n, k, self.valid, p, math.exp(self._log_miss)

    def report(self) -> str:
        """PCT's guarantee for one fixed program (the bound is per program)."""
        if self.cycling:
            return (f"pct cycled its bug depth through {CYCLE[0]}-{CYCLE[-1]} over "
                    f"{self.execution} executions: no single-depth bound is stated (give "
                    f"--depth for one)")
        n, k, valid, p, q = self.miss_bound()
        d = self.depth
        return (f"pct guarantee for this program: with n={n} threads and at most k={k} steps, "
                f"each execution finds a given depth-{d} bug with probability >= "
                f"1/(n*k^{d - 1}) = {p:.3g}; after {valid} clean executions within their "
                f"k (of {self.execution}) the chance such a bug was missed is <= {q:.3g}")
