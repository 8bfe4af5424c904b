"""``dfs``: exhaustive depth-first search with a preemption bound.

Musuvathi and Qadeer, "Iterative Context Bounding for Systematic Testing of
Multithreaded Programs", PLDI 2007: most concurrency bugs need few
preemptions, so enumerate every schedule with at most ``max_preemptions``
of them. A decision point's options are the current thread first (no
preemption), then the others, which are offered only while the bound
allows; where the current thread cannot go on, every runnable thread is
free. Each execution replays the previous one's prefix and takes the next
option at the deepest decision that has one left; when none has, the space
is exhausted. ``max_steps`` optionally stops branching past a depth.

The search needs the code under test to be deterministic: a prefix that
replays to different runnable sets raises a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError

__all__ = ["DfsScheduler"]


@dataclass
class _Node:
    """One decision: the options in the order tried, the one taken now, and
    the runnable set seen (to detect nondeterminism on replay)."""

    options: list[int]
    index: int
    runnable: list[int]


class DfsScheduler:
    def __init__(self, max_preemptions: int | None = 2, *, max_steps: int | None = None) -> None:
        if max_preemptions is not None and max_preemptions < 0:
            raise UsageError(f"expected a preemption bound >= 0, got {max_preemptions!r}")
        self.max_preemptions = max_preemptions
        self.max_steps = max_steps
        self.execution = 0
        self.exhausted = False
        self.truncated = False
        self._stack: list[_Node] = []
        self._pos = 0
        self._preemptions = 0

    def new_execution(self) -> bool:
        if self.execution:
            while self._stack:
                node = self._stack[-1]
                if node.index + 1 < len(node.options):
                    node.index += 1
                    break
                self._stack.pop()
            if not self._stack:
                self.exhausted = not self.truncated
                return False
        self.execution += 1
        self._pos = 0
        self._preemptions = 0
        return True

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        if self._pos < len(self._stack):
            node = self._stack[self._pos]
            if node.runnable != list(runnable):
                raise UsageError(
                    f"dfs replay diverged at decision {self._pos}: expected runnable threads "
                    f"{node.runnable}, got {list(runnable)}; the code under test is not "
                    f"deterministic under a fixed schedule")
        else:
            if current is not None and current in runnable:
                others = [t for t in runnable if t != current]
                bounded = self.max_preemptions is not None \
                    and self._preemptions >= self.max_preemptions
                deep = self.max_steps is not None and self._pos >= self.max_steps
                if deep and others:
                    self.truncated = True  # branches cut by depth: not exhaustive
                options = [current] if bounded or deep else [current, *others]
            else:
                options = list(runnable)
            node = _Node(options, 0, list(runnable))
            self._stack.append(node)
        choice = node.options[node.index]
        if current is not None and choice != current:
            self._preemptions += 1
        self._pos += 1
        return choice

    def report(self) -> str:
        n = self.max_preemptions
        bound = "no bound" if n is None else f"at most {n} preemption{'' if n == 1 else 's'}"
        if self.exhausted:
            return (f"dfs: every schedule with {bound} of this program was run "
                    f"({self.execution} executions): the space was exhausted")
        why = "branches were cut by the depth cap" if self.truncated else "the budget ran out"
        return f"dfs: the space of schedules with {bound} was NOT exhausted ({why})"
