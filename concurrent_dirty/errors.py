"""One exception hierarchy for everything the harness raises on purpose.

Two families, as hypothesis and trio keep them:

* :class:`UsageError` (exit code 2): a bad argument, a bad configuration, an
  algorithm that cannot be found or does not implement the protocol. Fix the
  call or the command line.
* :class:`ExecutionFailed` (exit code 1): the code under test failed in an
  execution: a lost dirty bit (:class:`InvariantViolation`), a deadlock
  (:class:`DeadlockError`), a run that never ends (:class:`StepBoundExceeded`,
  :class:`HangError`), a writer that died (:class:`WorkerDied`), a misuse of
  the harness's primitives (:class:`AlgorithmMisuse`). ``result`` holds the
  execution (with its counterexample and replay token) when one is known.

:class:`InternalError` is a bug in the harness itself ("cannot happen"):
please report it with the replay token if there is one.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "AlgorithmError",
    "AlgorithmMisuse",
    "CodeUnderTestError",
    "ConcurrentDirtyError",
    "DeadlockError",
    "ExecutionFailed",
    "FailedExecution",
    "HangError",
    "InternalError",
    "InvariantViolation",
    "StepBoundExceeded",
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
    :class:`~concurrent_dirty.DirtyLogAlgorithm` protocol."""


class InternalError(ConcurrentDirtyError):
    """The harness broke one of its own invariants: a bug in
    concurrent-dirty, not in the code under test. Please report it."""


class FailedExecution(Protocol):
    """What an :class:`ExecutionFailed` says of its execution: the
    :class:`~concurrent_dirty.ExecutionResult` satisfies it. A protocol, so
    that this module, the bottom layer, imports nothing from above (the
    package has no import circle, type-checking imports included)."""

    @property
    def algorithm(self) -> str: ...

    @property
    def failed(self) -> bool: ...

    @property
    def token(self) -> str: ...

    def counterexample(self) -> str: ...


class ExecutionFailed(ConcurrentDirtyError):
    """The code under test failed during an execution.

    ``result`` is the :class:`~concurrent_dirty.ExecutionResult` when the
    failure came from a controlled execution (its ``token`` replays it), else
    None; it is typed as the :class:`FailedExecution` protocol it satisfies.
    """

    def __init__(self, message: str, *, result: FailedExecution | None = None) -> None:
        super().__init__(message)
        self.result: FailedExecution | None = result


class DeadlockError(ExecutionFailed):
    """No thread can go on, or a thread waited longer than the run's bound.

    The message names each waiting thread, what it waits for and who holds
    it. Look for a path that returns without releasing a lock, a lock taken
    twice, or a wait for an event that never comes.
    """


class StepBoundExceeded(ExecutionFailed):
    """A controlled execution ran past ``max_steps`` switch points: a
    livelock, or a spin-wait for something that never comes (the message
    names each spinning thread and the words it keeps reading), or a loop
    that keeps storing without progress."""


class HangError(ExecutionFailed):
    """Code under test ran for longer than the watchdog allows without
    reaching a switch point (a loop that never touches shared state, a real
    OS lock, a sleep). The message holds the thread's Python stack."""


class AlgorithmMisuse(ExecutionFailed):
    """The algorithm misused a primitive of the harness: a CLEAR outside
    KVM's alignment rules, a lock released by a thread that does not hold
    it."""


class CodeUnderTestError(ExecutionFailed):
    """A method of the code under test raised outside an execution's
    threads: the algorithm's constructor, ``shared_words``,
    ``shared_locks`` or ``enable_dirty_logging``. The message names the
    method and holds the exception with its traceback trimmed to the
    code under test's frames."""


class InvariantViolation(ExecutionFailed):
    """An oracle proved that a dirty bit was lost (or is stuck).

    ``violations`` holds the structured reports; the message is the first
    one, with the command that reruns it.
    """

    def __init__(self, message: str, violations: list[object] | None = None, *,
                 result: FailedExecution | None = None) -> None:
        super().__init__(message, result=result)
        self.violations = violations or []


class WorkerDied(ExecutionFailed):
    """A writer thread or process ended with an exception or a signal.

    The message carries the worker's traceback or exit code; every other
    worker has been stopped and every shared-memory segment unlinked.
    """
