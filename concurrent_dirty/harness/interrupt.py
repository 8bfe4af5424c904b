"""How every subcommand ends on Ctrl-C (SIGINT) or SIGTERM: its partial
report, one line on stderr that starts with ``interrupted:``, exit code
130, no traceback.

:func:`signals_interrupt` makes SIGTERM raise :class:`KeyboardInterrupt`
in the main thread, as Ctrl-C does, so one ``except KeyboardInterrupt``
covers both. The engines clean up on that exception (writers stopped,
segments unlinked: see ``engines.free.run_cell``); a subcommand catches it where
it still holds its partial figures, prints them, and calls
:func:`interrupted`, which also ignores further signals so that a second
Ctrl-C cannot cut the report short with a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["EXIT_INTERRUPTED", "deferred_interrupts", "hold_signals", "interrupted",
           "signals_interrupt"]

EXIT_INTERRUPTED = 130
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for s, handler in previous.items():
        if handler is not None:
            signal.signal(s, handler)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (like SIGINT) raises KeyboardInterrupt."""
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        _restore(previous)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block is done, then raise
    KeyboardInterrupt if one came: for steps that must not be cut in half,
    such as starting a writer process and handing it its set-up. Only in
    the main thread (signal handlers live there); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s, handler in previous.items():
        if callable(handler):  # one that raises: SIG_DFL and SIG_IGN stay as they are
            signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        _restore(previous)
    if caught:
        raise KeyboardInterrupt


def hold_signals() -> None:
    """From now on, ignore SIGINT and SIGTERM: the run is already ending."""
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def interrupted(what: str) -> int:
    """Say that the run was interrupted (``what`` was done about it) and
    return the exit code."""
    hold_signals()
    sys.stderr.write(f"\ninterrupted: {what}\n")
    sys.stderr.flush()
    return EXIT_INTERRUPTED
