"""The free-running engines' watchdog: a call into the code under test
that has not returned within ``seconds`` is a hang, whatever it calls
meanwhile (``cpu_relax``, switch points, atomic words, sleeps); it ends the
run with its thread's or process's stack.

**The rule.** A separate thread samples, a few times a second, each watched
party's heartbeat: a counter the harness bumps when a call into the
algorithm returns (each write of a writer, each harvest round of the
harvester, each execution) and, now and then, inside a *modelled* wait (a
lock acquire, an SRCU grace period, a full dirty ring: see
``_core/switch.wait_until``). So time in a modelled wait does not count,
and ``--lock-timeout`` still reports a deadlock as a deadlock. A thread of
this process that a sample finds in the harness's own code between two
calls (no frame of the code under test on its stack: resetting state,
the oracle, waiting for writers) is not in a call and is not timed. What
is timed is the rest: a stack that holds a frame of the code under test
(the built-in algorithms, the mutants, a user's class), whatever it calls
below that frame. A writer process is not sampled: its heartbeat alone is
the rule (it beats at each write and in modelled waits only). The
controlled engine has no watchdog: its step bound ends an endless loop.
When a party's call has not returned within ``seconds``:

* a thread: its stack from ``sys._current_frames()``, then an asynchronous
  :class:`~concurrent_dirty.errors.HangError` raised in it
  (``PyThreadState_SetAsyncExc``) to unwind it. If it is not unwound within
  ``grace`` seconds (a C call that never returns, a loop that swallows
  every exception), ``on_stuck`` runs from the watchdog's thread: the
  engine stops its writers, unlinks its shared memory, reports and exits;
* a process: ``faulthandler`` (registered on ``SIGUSR1`` in every writer
  process, writing to its error pipe) dumps its stack, then it is killed.

Either way :meth:`Watchdog.check` raises the ``HangError`` with the report in
the driver, which ends the run as for any error.
"""

from __future__ import annotations

import os
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core.asyncexc import raise_in
from .._core.switch import wait_until
from ..errors import HangError
from ..harness.usercode import harness_frame

__all__ = ["DEFAULT_WATCHDOG", "STACK_SIGNAL", "Unwound", "Watchdog"]

#: Seconds without progress before the watchdog fires (``--watchdog``).
DEFAULT_WATCHDOG = 10.0
#: The signal on which a writer process dumps its stack (faulthandler).
STACK_SIGNAL = signal.SIGUSR1


@dataclass
class _Watched:
    name: str
    beat: Callable[[], int]
    ident: int | None = None  # a thread of this process
    dump: Callable[[], str] | None = None  # a process: its stack, then kill it
    last: int = -1
    since: float = 0.0
    #: The modelled wait it was in at the last sample (its frame), if any.
    wait: Any = None


class Watchdog:
    def __init__(self, seconds: float, *, grace: float = 2.0,
                 on_stuck: Callable[[str], None] | None = None) -> None:
        self.seconds = seconds
        self.grace = grace
        self.on_stuck = on_stuck
        #: The report once the watchdog has fired (the first hang only).
        self.fired: str | None = None
        #: Set by the engine once the hung party has been unwound.
        self.unwound = threading.Event()
        self._firing = threading.Event()
        self._fired_set = threading.Event()
        self._watched: list[_Watched] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch_thread(self, name: str, ident: int, beat: Callable[[], int]) -> None:
        self._watched.append(_Watched(name, beat, ident=ident))

    def watch_process(self, name: str, beat: Callable[[], int],
                      dump: Callable[[], str]) -> None:
        self._watched.append(_Watched(name, beat, dump=dump))

    def start(self) -> None:
        now = time.monotonic()
        for w in self._watched:
            w.since = now
        self._thread = threading.Thread(target=self._run, name="cd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.grace + 5)

    def check(self) -> None:
        """Raise the hang in the caller (the driver) once fired."""
        if self._firing.is_set():
            self._fired_set.wait(10)  # a process dumping its stack: wait for the report
        if self.fired is not None:
            raise HangError(self.fired)

    # -- the watchdog's thread ------------------------------------------------------
    def _run(self) -> None:
        period = min(0.1, self.seconds / 20)
        while not self._stop.wait(period):
            now = time.monotonic()
            frames = sys._current_frames()
            for w in self._watched:
                try:
                    value = w.beat()
                except Exception:  # the arena is going away: the run is ending
                    return
                frame = frames.get(w.ident) if w.ident is not None else None
                wait = modelled_wait(frame) if frame is not None else None
                # One wait across two samples is waiting, not hanging; a
                # loop of short waits (new frames each time) is not.
                if value != w.last or (frame is not None and not in_call(frame)) or (
                        wait is not None and wait is w.wait):
                    w.last, w.since, w.wait = value, now, wait
                    continue
                w.wait = wait
                if w.ident is not None and frame is None:
                    w.since = now  # the thread has ended: nothing to watch
                    continue
                if now - w.since >= self.seconds:
                    self._fire(w, frame)
                    return

    def _fire(self, w: _Watched, frame: object) -> None:
        call = _call_name(frame) if frame is not None else "a write or a harvest round"
        head = (f"{w.name} made no progress for {self.seconds:g}s: its call into the code under "
                f"test ({call}) has not returned (an endless loop, a spin on cpu_relax or "
                f"shared words, a real OS lock or a sleep; a modelled wait does not count; a "
                f"call that may legitimately take longer needs a larger --watchdog); "
                f"its stack:\n")
        self._firing.set()
        try:
            if w.dump is not None:
                self.fired = head + w.dump()
                return
            stack = "Stack (most recent call last):\n" + "".join(
                traceback.format_stack(frame))  # type: ignore[arg-type]
            self.fired = head + stack.rstrip()
        finally:
            self._fired_set.set()
        assert w.ident is not None
        raise_in(w.ident, Unwound)  # the engine resyncs once its threads stopped
        if self.unwound.wait(self.grace) or self._stop.is_set():
            return
        if not any(t.ident == w.ident for t in threading.enumerate()):
            return  # it ended
        self.fired += (f"\n(it could not be unwound within {self.grace:g}s: the run was "
                       f"abandoned)")
        if self.on_stuck is not None:
            self.on_stuck(self.fired)


class Unwound(HangError):
    """Raised asynchronously in a hung thread to unwind it (the report is
    the watchdog's ``fired``)."""

    def __init__(self) -> None:
        super().__init__("unwound by the watchdog")


def _under_test(code: Any) -> bool:
    """A frame of the code under test: not the harness's, not the standard
    library's (which the harness calls too), not a frozen module's."""
    filename = code.co_filename
    if harness_frame(filename) or filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    return path.startswith(_INSTALLED) or not path.startswith(_STDLIB)


def _stack(frame: Any) -> list[Any]:
    """The frames from the outermost (the thread's start) to ``frame``."""
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    return out[::-1]


def _calls(frame: Any) -> list[Any]:
    """The frames of the code under test that the harness called into: on
    the stack after its first harness frame (what runs before it, a test
    runner or a thread's start, is not a call the harness made)."""
    stack = _stack(frame)
    first = next((i for i, f in enumerate(stack) if harness_frame(f.f_code.co_filename)),
                 len(stack))
    return [f for f in stack[first:] if _under_test(f.f_code)]


def modelled_wait(frame: Any) -> Any:
    """The frame of the modelled wait (a lock, a grace period, a flush:
    :func:`~concurrent_dirty._core.switch.wait_until`) that a thread sampled
    at ``frame`` is in, or None. The same frame at two samples is one wait
    going on: waiting is not hanging (the party it waits for is watched, and
    a wait nobody ends is the lock timeout's deadlock). Its beat, every 64
    spins, is too rare for a short watchdog when the holder spins on the
    GIL: a harvester waiting for the ``mmu_lock`` of a writer hung in
    ``mark_page_dirty`` was once blamed for the writer's hang. A loop of
    short waits that each end (new frames) is still a hang."""
    while frame is not None:
        if frame.f_code is _WAIT_CODE:
            return frame
        frame = frame.f_back
    return None


def in_call(frame: Any) -> bool:
    """Whether a thread sampled at ``frame`` is inside a call into the code
    under test (whatever that call is running at the moment)."""
    return bool(_calls(frame))


def _call_name(frame: Any) -> str:
    calls = _calls(frame)
    return calls[0].f_code.co_name if calls else "no call"


_WAIT_CODE = wait_until.__code__
_PATHS = sysconfig.get_paths()
_STDLIB = tuple(os.path.abspath(_PATHS[k]) + os.sep for k in ("stdlib", "platstdlib"))
#: Installed packages (a user's algorithm may live there), inside the stdlib's folder.
_INSTALLED = tuple(os.path.abspath(_PATHS[k]) + os.sep for k in ("purelib", "platlib"))


def read_dump(fd: int, timeout: float) -> str:
    """What a process's faulthandler wrote to ``fd`` within ``timeout``."""
    import select

    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
        if b"File " in b"".join(chunks) and not select.select([fd], [], [], 0.2)[0]:
            break
    return b"".join(chunks).decode(errors="replace").rstrip()
