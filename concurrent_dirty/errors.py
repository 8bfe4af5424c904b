"""One exception hierarchy for everything the harness raises on purpose.

User errors (a bad argument, a bad configuration, an algorithm that does not
implement the protocol, a deadlock in the code under test, a lost dirty bit)
derive from :class:`ConcurrentDirtyError`. Anything else escaping the harness
is a bug in the harness itself.
"""

from __future__ import annotations

__all__ = [
    "AlgorithmError",
    "ConcurrentDirtyError",
    "DeadlockError",
    "InvariantViolation",
    "UsageError",
    "WorkerDied",
]


class ConcurrentDirtyError(Exception):
    """Base class of every error the harness raises deliberately."""


class UsageError(ConcurrentDirtyError, ValueError):
    """A bad argument: fix the call or the command line.

    The message says what was expected and what arrived. The CLI prints it on
    one line and exits with code 2.
    """


class AlgorithmError(UsageError):
    """An algorithm could not be found, imported, or does not implement the
    :class:`~concurrent_dirty.DirtyLogAlgorithm` protocol, or it misused the
    harness (for example a CLEAR that breaks KVM's alignment rules)."""


class DeadlockError(ConcurrentDirtyError):
    """A thread waited for a lock longer than the run's bound.

    The message names the waiting thread, the lock and its holder. Look for a
    path that returns without releasing ``mmu_lock``, or a lock taken twice.
    """


class InvariantViolation(ConcurrentDirtyError):
    """An oracle proved that a dirty bit was lost.

    ``violations`` holds the structured reports; the message is the first
    one, with the command that reruns it.
    """

    def __init__(self, message: str, violations: list[object] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []


class WorkerDied(ConcurrentDirtyError):
    """A writer thread or process ended with an exception or a signal.

    The message carries the worker's traceback or exit code; every other
    worker has been stopped and every shared-memory segment unlinked.
    """
