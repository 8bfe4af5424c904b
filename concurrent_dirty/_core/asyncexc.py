"""Raising an exception in another thread, without the trap it hides.

Every watchdog of the harness unwinds a stuck thread the one way CPython
offers: ``PyThreadState_SetAsyncExc`` (the exception is raised in that
thread at its next bytecode boundary). The call also sets an
interpreter-wide "an asynchronous exception is pending" flag, and CPython
clears that flag only when a thread *consumes* its exception. The flag goes
stale, set with nothing pending, when:

* the exception is cancelled (``SetAsyncExc(ident, NULL)``): the slot is
  emptied, the flag is not;
* the thread ends, or stays blocked in C, before it reaches a bytecode
  boundary.

A stale flag keeps the eval breaker on in every thread. Measured on Python
3.11.7 (2026-12-03): after one cancel, ``hypothesis_search`` in the same
process never returned; its main thread spun in ``eval_frame_handle_pending``
at the entry of Hypothesis's ``execute_once``, and a CI run's long tests hung
until the run's limit. :func:`raise_in` and :func:`cancel` are therefore the
only ways the package raises in another thread, and every episode ends with
:func:`resync`, which clears a stale flag by raising and catching a
sentinel in the calling thread (consuming an exception is what clears it).

Layer 1: imports nothing of the package.
"""

from __future__ import annotations

import ctypes
import signal
import threading

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc  # (ident, exc or NULL) -> found


class _Resync(BaseException):
    """Raised in the calling thread by :func:`resync` and caught there."""


def raise_in(ident: int, exc: type[BaseException]) -> bool:
    """Raise ``exc`` in the thread ``ident`` at its next bytecode boundary;
    whether such a thread exists. End the episode with :func:`resync` once
    the thread has unwound, ended or been given up on."""
    return int(_set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc))) > 0


def cancel(ident: int) -> None:
    """Withdraw an exception :func:`raise_in` sent to ``ident`` and not yet
    raised there (it must not land in whatever that thread runs next), and
    clear the flag the withdrawal leaves set. Called from the thread
    ``ident`` itself, once the call the exception was meant for returned."""
    _set_async_exc(ctypes.c_ulong(ident), None)  # NULL: empties the slot
    resync()


def _boundary() -> None:
    """A call: its entry checks the eval breaker, where a pending
    asynchronous exception is raised."""


def _drain() -> None:
    """Raise and catch a :class:`_Resync` still pending in this thread."""
    try:
        for _ in range(100):
            _boundary()
    except _Resync:
        pass


def resync() -> None:
    """Clear the interpreter's "asynchronous exception pending" flag if it is
    stale: raise a sentinel in the calling thread and catch it. Consuming it
    clears the flag; an exception still pending in another thread is raised
    there at its next eval-breaker check (a GIL hand-off), as before.

    A signal landing in that window is not lost: CPython runs a signal's
    Python handler before it raises a pending exception, so the sentinel may
    cut the handler short (the signal is raised again) or the handler's
    KeyboardInterrupt may come first (the sentinel is drained, then the
    KeyboardInterrupt goes on)."""
    me = threading.get_ident()
    try:
        _set_async_exc(ctypes.c_ulong(me), ctypes.py_object(_Resync))
        for _ in range(10_000):  # the first call raises it; the rest are a margin
            _boundary()
    except _Resync as caught:
        _redeliver(caught)
        return
    except BaseException:
        _drain()
        raise


def _redeliver(caught: _Resync) -> None:
    """If the sentinel cut a signal handler short (its innermost frame is not
    ours and has the handler's ``signum``), raise that signal again."""
    tb = caught.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code in (_boundary.__code__, resync.__code__):
        return
    signum = tb.tb_frame.f_locals.get("signum")
    if isinstance(signum, int):
        signal.raise_signal(signum)
