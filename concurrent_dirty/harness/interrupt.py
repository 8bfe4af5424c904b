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

Python runs a signal's handler between two bytecodes of the main thread,
wherever they are: when that is inside a garbage-collector callback (one
of Hypothesis's measures the collector's time) or a ``__del__``, the
interpreter swallows the ``KeyboardInterrupt`` ("Exception ignored in
...") and the run goes on as if no signal had come. Within
:func:`signals_interrupt` the first signal's interrupt, if swallowed so,
is delivered again (``_thread.interrupt_main``) at once, with no
"Exception ignored" traceback; a later one (a second Ctrl-C landing in the
clean-up the first started) is left as Python leaves it.
"""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

__all__ = ["EXIT_INTERRUPTED", "deferred_interrupts", "exit_process", "hold_signals",
           "interrupted", "signals_interrupt"]

EXIT_INTERRUPTED = 130
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for s, handler in previous.items():
        if handler is not None:
            signal.signal(s, handler)


#: Seconds before a swallowed interrupt is delivered again: the hook and
#: the callback that swallowed it return first.
_AGAIN_AFTER = 0.02


class _Signals:
    """The signals :func:`signals_interrupt`'s handler has seen."""

    def __init__(self) -> None:
        self.count = 0
        self.last = signal.SIGINT
        #: An interrupt swallowed by the interpreter is being delivered again.
        self.again = False
        self.timer: threading.Timer | None = None

    def handler(self, signum: int, frame: object) -> None:
        if self.again:  # the delivery again of the first: not a new signal
            self.again = False
        else:
            self.count += 1
            self.last = signal.Signals(signum)
        raise KeyboardInterrupt

    def _deliver_again(self) -> None:
        # Only if still owed: a real signal in the meantime was delivered
        # in its place (the handler cleared `again`).
        if self.again:
            _thread.interrupt_main(self.last)

    def cancel(self) -> None:
        """The block ends: a delivery still owed is dropped (the run ended
        as the signal came), never raised after the block."""
        self.again = False
        if self.timer is not None:
            self.timer.cancel()

    def hook(self, previous: Any) -> Any:
        def unraisable(info: Any) -> None:
            if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt) \
                    and self.count == 1:
                # The first signal's interrupt raised where the interpreter
                # swallows it (a gc callback, a __del__): delivered again,
                # from a timer thread, so that the handler runs once this
                # hook and the callback have returned (swallowed again, it
                # comes back here and goes once more).
                self.again = True
                self.timer = threading.Timer(_AGAIN_AFTER, self._deliver_again)
                self.timer.daemon = True
                self.timer.start()
                return
            previous(info)
        return unraisable


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (like SIGINT) raises KeyboardInterrupt, and
    the first signal's interrupt is never lost (see the module's text)."""
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    seen = _Signals()
    signal.signal(signal.SIGTERM, seen.handler)
    if previous[signal.SIGINT] is signal.default_int_handler:  # not an inherited SIG_IGN
        signal.signal(signal.SIGINT, seen.handler)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = seen.hook(previous_hook)
    try:
        yield
    finally:
        seen.cancel()
        sys.unraisablehook = previous_hook
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


def exit_process(code: int) -> NoReturn:
    """End the command-line process with ``code``: the exit handlers (the
    segments' unlink among them), the streams flushed, then ``os._exit``,
    without the interpreter's own finalization (tearing down every module
    and object: about 25 ms of CPU after a ``fuzz`` report, a tenth of the
    whole command on a small program, for nothing the process still needs).

    After an interrupt (``code`` 130) it is needed, not only quicker: a
    Ctrl-C that lands inside an ``exec`` of a string (a dataclass or a
    named tuple being built while a module loads) makes CPython kill itself
    with SIGINT at exit, even though the harness caught the
    KeyboardInterrupt and chose its exit code: the caller then sees a death
    by signal (-2), not 130. Measured on 3.11.7, 3.12.1 and 3.13.0, with a
    module that catches it and calls ``sys.exit(3)``; here a test saw it in
    1 of about 90 replays interrupted 0.2 s in.

    A thread that is not a daemon and still runs is one the interpreter's
    exit would wait for: with one, any code but 130 ends through
    ``sys.exit``, as usual."""
    if code != EXIT_INTERRUPTED and any(
            t.is_alive() and not t.daemon for t in threading.enumerate()
            if t is not threading.main_thread()):
        sys.exit(code)
    hold_signals()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)
