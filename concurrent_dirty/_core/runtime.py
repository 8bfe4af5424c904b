"""The controlled engine's core: real OS threads, exactly one running.

Every switch point (``_switch.switch_point``) lands in :class:`Runtime`,
which asks a scheduler which thread runs next and hands the CPU over with a
per-thread semaphore. Everything scheduling-related lives here; the
primitives stay facades (loom's ``rt`` and shuttle's ``runtime`` are built
the same way).

Blocking is modelled, not spun: a thread at a ``lock`` switch point is not
runnable while ``mmu_lock`` is held; a thread in :meth:`Runtime.wait_for` is
not runnable until the threads it waits for have finished; a ``yield``
(``_switch.cpu_relax``, a spin-wait iteration) makes the scheduler pick
someone else if anyone else can run. No runnable thread left while some are
unfinished is a deadlock, reported with each thread's wait. A run longer
than ``max_steps`` stops with a message that suggests a spin loop.

An exception in any thread ends the execution: the runtime records it, then
wakes every other thread, which unwinds from its next switch point with a
private ``BaseException``; no thread is left running.
"""

from __future__ import annotations

import _thread
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import DeadlockError, InvariantViolation, UsageError
from ..model.atomic import AtomicWords

__all__ = ["Scheduler", "Runtime", "Step", "Outcome"]


class Scheduler(Protocol):
    """The scheduling protocol: state that persists across executions.

    ``new_execution()`` starts an execution, or returns False when the
    scheduler has nothing left to try (dfs exhausted, replay done).
    ``next_thread(runnable, current)`` picks one id from ``runnable``
    (sorted); ``current`` is the id of the thread asking if it could go on
    (so that picking another is a preemption), else None. ``next_u64()``
    gives a random number for the code under test.
    """

    def new_execution(self) -> bool: ...

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int: ...

    def next_u64(self) -> int: ...


class _Abort(BaseException):
    """Unwinds a controlled thread when its execution has ended."""


@dataclass
class Step:
    """One switch point that went through: ``thread`` performs ``op``."""

    index: int
    thread: int
    op: str
    target: str
    word: int
    before: int | None
    after: int | None = None
    #: The thread this step's thread took the CPU from, if that was a preemption.
    preempted: int | None = None


@dataclass
class Outcome:
    """How an execution ended. ``kind``: ok, violation, deadlock,
    step-bound, error."""

    kind: str = "ok"
    message: str = ""
    step: int = 0
    thread: str | None = None
    steps: int = 0
    preemptions: int = 0
    switches: int = 0
    schedule: list[int] = field(default_factory=list)
    trace: list[Step] = field(default_factory=list)
    exception: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.kind != "ok"


class _Signal:
    """A binary semaphore on a raw lock: several times cheaper than
    ``threading.Semaphore``, and a hand-off is two of these."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def post(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:
            pass  # already posted (an abort wakes everyone, some twice)

    def wait(self, timeout: float = -1) -> bool:
        return self._lock.acquire(True, timeout)


class _Carrier:
    """A reusable OS thread that runs controlled threads' bodies, so that an
    execution does not pay for starting threads (most of a tiny execution's
    cost otherwise)."""

    _idle: list[_Carrier] = []
    _lock = threading.Lock()
    _count = 0

    def __init__(self) -> None:
        self._go = _Signal()
        self._job: Callable[[], None] | None = None
        with _Carrier._lock:
            _Carrier._count += 1
            n = _Carrier._count
        self.thread = threading.Thread(target=self._loop, name=f"controlled-carrier-{n}",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self._go.wait()
            job, self._job = self._job, None
            try:
                if job is not None:
                    job()
            except BaseException:  # never let a pooled thread die idle
                traceback.print_exc()
            finally:
                with _Carrier._lock:
                    _Carrier._idle.append(self)

    @classmethod
    def submit(cls, job: Callable[[], None]) -> threading.Thread:
        with cls._lock:
            carrier = cls._idle.pop() if cls._idle else None
        if carrier is None:
            carrier = cls()
        carrier._job = job
        carrier._go.post()
        return carrier.thread


#: Which runtime owns each controlled OS thread: a thread left over from an
#: earlier execution (a wall-timeout abort) must not run uncontrolled in a
#: later one, so the later runtime's hook unwinds it.
_OWNER: dict[int, Runtime] = {}


class _Thread:
    __slots__ = ("tid", "name", "fn", "sem", "done", "blocker", "waits_for", "yielded",
                 "last", "pending_preempt", "os_thread")

    def __init__(self, tid: int, name: str, fn: Callable[[], None]) -> None:
        self.tid = tid
        self.name = name
        self.fn = fn
        self.sem = _Signal()
        self.done = False
        self.blocker: Callable[[], bool] | None = None  # runnable iff it returns True
        self.waits_for = ""
        self.yielded = False
        self.last: Step | None = None
        self.pending_preempt: int | None = None
        self.os_thread: threading.Thread | None = None


class Runtime:
    """One controlled execution. Install it as the switch hook, ``spawn``
    the threads, then ``run()``."""

    handles_yield = True

    def __init__(self, scheduler: Scheduler, *, max_steps: int,
                 lock_word: AtomicWords | None = None,
                 words: Callable[[str], AtomicWords | None] | None = None,
                 ignore: frozenset[str] = frozenset(), trace: bool = False,
                 wall_timeout: float = 120.0) -> None:
        self.scheduler = scheduler
        self.max_steps = max_steps
        self.lock_word = lock_word
        self.words = words
        self.ignore = ignore
        self.tracing = trace
        self.wall_timeout = wall_timeout
        self.threads: list[_Thread] = []
        self.outcome = Outcome()
        self._by_ident: dict[int, _Thread] = {}
        self._aborted = False
        self._all_done = _Signal()

    # -- building ---------------------------------------------------------------
    def spawn(self, name: str, fn: Callable[[], None]) -> int:
        t = _Thread(len(self.threads), name, fn)
        self.threads.append(t)
        return t.tid

    def name_of(self, tid: int) -> str:
        return self.threads[tid].name

    # -- the hook -----------------------------------------------------------------
    def __call__(self, op: str, target: str, index: int) -> None:
        ident = threading.get_ident()
        me = self._by_ident.get(ident)
        if me is None:
            if ident in _OWNER:
                raise _Abort  # a controlled thread of an earlier, aborted execution
            return  # the driver, or any thread the runtime does not own
        if self._aborted:
            raise _Abort
        if target in self.ignore or (target == "mmu_lock" and op not in ("lock", "unlock")):
            return  # bookkeeping, or the lock's own internals (atomic to the scheduler)
        if op == "lock":
            me.blocker = self._lock_free
            me.waits_for = "mmu_lock"
        elif op == "yield":
            me.yielded = True
        self._switch(me, op, target, index)

    def wait_for(self, tids: Sequence[int]) -> None:
        """Block the calling controlled thread until ``tids`` have finished."""
        me = self._by_ident.get(threading.get_ident())
        if me is None:
            raise UsageError("Runtime.wait_for() called from a thread the runtime does not own")
        if self._aborted:
            raise _Abort
        waited = [self.threads[t] for t in tids]
        me.blocker = lambda: all(t.done for t in waited)
        me.waits_for = " and ".join(t.name for t in waited) + " to finish"
        self._switch(me, "join", "threads", 0)

    def _lock_free(self) -> bool:
        return self.lock_word is None or self.lock_word.peek(0) == 0

    def _runnable(self, me: _Thread | None) -> list[int]:
        ready = [t.tid for t in self.threads
                 if not t.done and (t.blocker is None or t.blocker())]
        if me is not None and me.yielded and len(ready) > 1 and me.tid in ready:
            ready.remove(me.tid)
        return ready

    def _switch(self, me: _Thread, op: str, target: str, index: int) -> None:
        out = self.outcome
        self._close_step(me)
        out.steps += 1
        if out.steps > self.max_steps:
            self._fail("step-bound", f"the execution exceeded {self.max_steps} steps "
                                     f"(max_steps) at {me.name}'s {op} on {target}[{index}]: a "
                                     f"spin loop without a yield (cpu_relax) can do this", me)
            raise _Abort
        ready = self._runnable(me)
        if not ready:
            self._fail("deadlock", self._deadlock_report(), me)
            raise _Abort
        if me.yielded and ready == [me.tid]:
            # Spinning while nobody else can run: nothing will ever change.
            me.waits_for = f"{target}[{index}] (spinning; no other thread can run)"
            self._fail("deadlock", self._deadlock_report(), me)
            raise _Abort
        current = me.tid if me.tid in ready and not me.yielded else None
        choice = self._decide(ready, current)
        if choice != me.tid:
            nxt = self.threads[choice]
            if current is not None:
                out.preemptions += 1
                nxt.pending_preempt = me.tid
            out.switches += 1
            nxt.sem.post()
            me.sem.wait()
            if self._aborted:
                raise _Abort
        me.blocker = None
        me.waits_for = ""
        me.yielded = False
        if self.tracing:
            self._record(me, op, target, index)

    def _decide(self, ready: list[int], current: int | None) -> int:
        choice = self.scheduler.next_thread(ready, current)
        if choice not in ready:
            raise UsageError(f"expected the scheduler to pick one of the runnable threads "
                             f"{ready}, got {choice!r}")
        self.outcome.schedule.append(choice)
        return choice

    # -- trace --------------------------------------------------------------------
    def _peek(self, target: str, index: int) -> int | None:
        if target == "mmu_lock":
            index = 0  # lock/unlock carry the actor as index; show the lock word
        words = self.words(target) if self.words is not None else None
        if words is None or not 0 <= index < words.nwords:
            return None
        return words.peek(index)

    def _record(self, me: _Thread, op: str, target: str, index: int) -> None:
        step = Step(index=len(self.outcome.trace) + 1, thread=me.tid, op=op, target=target,
                    word=index, before=self._peek(target, index), preempted=me.pending_preempt)
        me.pending_preempt = None
        me.last = step
        self.outcome.trace.append(step)

    def _close_step(self, me: _Thread) -> None:
        last = me.last
        if last is not None:
            last.after = self._peek(last.target, last.word)
            me.last = None

    # -- life cycle ---------------------------------------------------------------
    def _thread_main(self, t: _Thread) -> None:
        ident = threading.get_ident()
        self._by_ident[ident] = t
        _OWNER[ident] = self
        t.sem.wait()
        try:
            if not self._aborted:
                t.fn()
        except _Abort:
            pass
        except InvariantViolation as exc:
            self._fail("violation", str(exc), t, exc)
        except DeadlockError as exc:
            self._fail("deadlock", str(exc), t, exc)
        except BaseException as exc:
            self._fail("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", t, exc)
        finally:
            self._by_ident.pop(ident, None)
            _OWNER.pop(ident, None)
            self._finish(t)

    def _finish(self, t: _Thread) -> None:
        if self.tracing:
            self._close_step(t)
        t.done = True
        if self._aborted:
            if all(x.done for x in self.threads):
                self._all_done.post()
            return
        try:
            ready = self._runnable(None)
            if ready:
                self.threads[self._decide(ready, None)].sem.post()
                return
            if all(x.done for x in self.threads):
                self._all_done.post()
                return
            self._fail("deadlock", self._deadlock_report(), t)
        except BaseException as exc:  # the scheduler failed: end the execution, say why
            self._fail("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                       t, exc)
        if all(x.done for x in self.threads):
            self._all_done.post()

    def _fail(self, kind: str, message: str, t: _Thread | None,
              exc: BaseException | None = None) -> None:
        if self._aborted:
            return  # the first failure is the one reported
        out = self.outcome
        out.kind, out.message, out.step, out.thread, out.exception = (
            kind, message, out.steps, t.name if t is not None else None, exc)
        self._aborted = True
        for other in self.threads:
            if other is not t and not other.done:
                other.sem.post()

    def _deadlock_report(self) -> str:
        parts = []
        for t in self.threads:
            if t.done:
                continue
            if t.waits_for == "mmu_lock":
                value = self.lock_word.peek(0) if self.lock_word is not None else 0
                holder = "nobody" if value == 0 else self._actor(value - 1)
                parts.append(f"{t.name} waits for mmu_lock, held by {holder}")
            else:
                parts.append(f"{t.name} waits for {t.waits_for or 'nothing (runnable)'}")
        return "deadlock: no thread can run; " + "; ".join(parts)

    def _actor(self, actor: int) -> str:
        from ..model.sync import actor_name

        return actor_name(actor)

    def run(self) -> Outcome:
        """Run the execution to its end; returns how it ended."""
        if not self.threads:
            raise UsageError("expected at least one spawned thread, got none")
        for t in self.threads:
            t.os_thread = _Carrier.submit(lambda t=t: self._thread_main(t))  # type: ignore[misc]
        first = self._decide([t.tid for t in self.threads], None)
        self.threads[first].sem.post()
        if not self._all_done.wait(self.wall_timeout):
            frames = sys._current_frames()
            stacks = ""
            for t in self.threads:
                frame = frames.get(t.os_thread.ident or -1) if t.os_thread else None
                if not t.done and frame is not None:
                    stacks += f"\n--- {t.name} ---\n" + "".join(traceback.format_stack(frame))
            self._fail("deadlock", f"the execution made no progress for {self.wall_timeout:g}s: "
                                   f"a thread blocked outside the switch points (a real OS "
                                   f"lock or a sleep?){stacks}", None)
            self._all_done.wait(5)
        return self.outcome
