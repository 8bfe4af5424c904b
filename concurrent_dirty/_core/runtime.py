"""The controlled engine's core: real OS threads, exactly one running.

Every switch point (``_switch.switch_point``) lands in :class:`Runtime`,
which asks a scheduler which thread runs next and hands the CPU over with a
per-thread semaphore. Everything scheduling-related lives here; the
primitives stay facades (loom's ``rt`` and shuttle's ``runtime`` are built
the same way).

The runtime knows no domain (loom's ``rt`` against its ``sync``): it never
names a lock. Blocking is modelled, not spun: a facade that must wait (a
held lock, a grace period, threads to finish) calls
:meth:`Runtime.block_until` through ``switch.wait_until`` with a condition
and a reason, and the thread is not runnable until the condition holds; a
``yield`` (``switch.cpu_relax``, a spin-wait iteration) makes the scheduler
pick someone else if anyone else can run. No runnable thread left while
some are unfinished is a deadlock, reported with each thread's reason. A
run longer than ``max_steps`` stops with a message that suggests a spin
loop; a thread that runs for ``watchdog`` seconds without reaching a switch
point is reported as a hang, with its stack.

Spin loops need no hint. A thread that keeps loading the same words and
reading the same values, with no other operation in between (no store, no
read-modify-write, no lock, no ``yield``), cannot change anything by going
on: it waits for another thread. Once its loads have repeated a cycle of
at most :data:`SPIN_PERIOD` loads :data:`SPIN_REPEATS` times, each further
load is treated as a ``yield``, as GenMC's spin-assume prunes a spin
iteration that reads the same values and writes nothing (Kokologiannakis
et al., "Effective lock handling in stateless model checking", OOPSLA
2019) and CHESS's fair scheduler deprioritises a thread that yields
without progress (Musuvathi and Qadeer, "Fair stateless model checking",
PLDI 2008). So a correct grace period that spins on plain loads passes,
and every scheduler (pct's priorities, dfs's first schedule) lets the
others run. Unlike an explicit ``yield``, a detected spin that no other
thread can end is not called a deadlock (a few repeated loads are a
heuristic, not the code's word): the thread goes on, and if it really
waits for nothing the step bound reports it, as it reports a livelock of
threads that wait on each other, with the words it spins on. A loop that
ends by itself but may re-read unchanged words (a next round) calls
``switch.progress`` each turn, so that it is never taken for a spin.

An exception in any thread ends the execution: the runtime records it, then
wakes every other thread, which unwinds from its next switch point with a
private ``BaseException``; no thread is left running.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn, Protocol

from ..errors import (
    AlgorithmMisuse,
    DeadlockError,
    InternalError,
    InvariantViolation,
    UsageError,
)
from .asyncexc import raise_in, resync
from .switch import Op

__all__ = ["DEFAULT_WATCHDOG", "SPIN_PERIOD", "SPIN_REPEATS", "Keep", "Observer", "Outcome",
           "Runtime", "Scheduler", "Step", "Verdict"]

#: Seconds a controlled thread may run without reaching a switch point.
DEFAULT_WATCHDOG = 10.0

#: A spin is a cycle of at most ``SPIN_PERIOD`` loads (same words, same
#: values, nothing else in between) seen ``SPIN_REPEATS`` times in a row.
SPIN_PERIOD = 8
SPIN_REPEATS = 4
_SPIN_KEPT = SPIN_PERIOD * SPIN_REPEATS

_LOAD = Op.LOAD
_YIELD = Op.YIELD
_get_ident = threading.get_ident


#: ``observe(thread, op, target, index)``: a switch point went through.
Observer = Callable[[int, Op, str, int], None]


class Verdict(StrEnum):
    """How an execution ended."""

    OK = "ok"
    #: An oracle proved a dirty bit lost.
    VIOLATION = "violation"
    #: No thread could run (each one's wait is in the message).
    DEADLOCK = "deadlock"
    #: More than ``max_steps`` switch points: a livelock, or a spin that never ends.
    STEP_BOUND = "step-bound"
    #: A thread ran ``watchdog`` seconds without reaching a switch point.
    HANG = "hang"
    #: The code under test misused a primitive (a bad CLEAR range...).
    MISUSE = "misuse"
    #: Any other exception in the code under test.
    ERROR = "error"


class Scheduler(Protocol):
    """The scheduling protocol: state that persists across executions.

    ``new_execution()`` starts an execution, or returns False when the
    scheduler has nothing left to try (dfs exhausted, replay done); the
    runner calls it, never the runtime. ``next_thread(runnable, current)``
    picks one id from ``runnable`` (sorted); ``current`` is the id of the
    thread asking if it could go on (so that picking another is a
    preemption), else None. (The code under test draws no random numbers,
    so the protocol has no ``next_u64``.)
    """

    def new_execution(self) -> bool: ...

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int: ...


#: ``keep(current, free, held, can_run)``, an optional scheduler method the
#: runtime asks first at a switch point where the running thread
#: ``current`` could go on. ``free``: the unfinished threads' ids that wait
#: for nothing (they can run; ``current`` among them); ``held``: those
#: whose wait's condition must be asked, ``can_run(tid)``, which evaluates
#: it (so ask only about the threads that matter); a thread waiting for
#: others to finish is in neither (it cannot run). True means the
#: scheduler picks ``current`` at this decision whatever the others'
#: state, its own state advanced exactly as ``next_thread`` would have
#: advanced it; False means it needs the runnable threads, and the
#: runtime then calls ``next_thread(runnable, current)`` for this same
#: decision, which completes it. So the common step, the running thread
#: going on, costs no list of runnable threads, no wait's condition but
#: those asked and no wrapper, and every schedule stays what
#: ``next_thread`` alone would have made.
Keep = Callable[[int, Sequence[int], Sequence[int], Callable[[int], bool]], bool]


class _Abort(BaseException):
    """Unwinds a controlled thread when its execution has ended."""


@dataclass
class Step:
    """One switch point that went through: ``thread`` performs ``op``."""

    index: int
    thread: int
    op: Op
    target: str
    word: int
    before: int | None
    after: int | None = None
    #: The thread this step's thread took the CPU from, if that was a preemption.
    preempted: int | None = None
    #: Reached but not performed: the thread was at this switch point when
    #: the execution ended (every switch point reached counts as a step).
    pending: bool = False
    #: Earlier preemptions by this step's thread that no step of its own
    #: followed (it took the CPU, then lost it at its first switch point
    #: before performing it), oldest first.
    also_preempted: tuple[int, ...] = ()


@dataclass
class Outcome:
    """How an execution ended, and what it did."""

    kind: Verdict = Verdict.OK
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
        return self.kind is not Verdict.OK


def _current_keep(keep: Any) -> Keep | None:
    """``keep`` as the runtime calls it. A scheduler written for the earlier
    three-argument form, ``keep(current, live, can_run)`` (2026-12-02), gets
    ``free`` and ``held`` together as ``live``: ``can_run`` answers for
    every one of them, so its decisions are the same."""
    if keep is None:
        return None
    code = getattr(getattr(keep, "__func__", keep), "__code__", None)
    bound = hasattr(keep, "__self__")
    if code is None or code.co_flags & 0x04 or code.co_argcount - bound != 3:  # 0x04: *args
        return keep  # type: ignore[no-any-return]
    old = keep

    def adapted(current: int, free: Sequence[int], held: Sequence[int],
                can_run: Callable[[int], bool]) -> bool:
        return bool(old(current, (*free, *held), can_run))
    return adapted


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
    __slots__ = ("tid", "name", "fn", "sem", "done", "blocker", "reason", "yielded",
                 "last", "pending_preempt", "os_thread", "loads", "spinning", "at",
                 "earlier_preempts", "waits", "started")

    def __init__(self, tid: int, name: str, fn: Callable[[], None]) -> None:
        self.tid = tid
        self.name = name
        self.fn = fn
        self.sem = _Signal()
        self.done = False
        self.blocker: Callable[[], bool] | None = None  # runnable iff it returns True
        self.reason: Callable[[], str] | None = None  # what it waits for
        #: Waiting for threads to finish: the condition, asked when one
        #: does (its blocker meanwhile says no without asking).
        self.waits: Callable[[], bool] | None = None
        self.yielded = False
        self.last: Step | None = None
        self.pending_preempt: int | None = None
        self.earlier_preempts: list[int] = []
        #: The switch point it has reached and not yet performed (traced
        #: executions): its step number, op, words and index.
        self.at: tuple[int, Op, str, int] | None = None
        self.os_thread: threading.Thread | None = None
        #: Handed the CPU once (it runs on a carrier from then on).
        self.started = False
        #: The loads since this thread's last other operation: (words,
        #: index, value read), the latest last, at most _SPIN_KEPT.
        self.loads: list[tuple[str, int, int]] = []
        #: Its loads repeat a cycle: it waits for another thread (the spin's
        #: period), or 0.
        self.spinning = 0


class Runtime:
    """One controlled execution. Install it as the switch hook, ``spawn``
    the threads, then ``run()``."""

    #: Waits through ``switch.wait_until`` are modelled blocking here.
    models_blocking = True

    def __init__(self, scheduler: Scheduler, *, max_steps: int,
                 words: Callable[[str], AtomicWordsLike | None] | None = None,
                 trace: bool = False, watchdog: float = DEFAULT_WATCHDOG,
                 observe: Observer | None = None) -> None:
        self.scheduler = scheduler
        self.max_steps = max_steps
        #: Finds the words a switch point names, to show values in traces.
        self.words = words
        self.tracing = trace
        self.watchdog = watchdog
        #: Told of every switch point that goes through (coverage feedback).
        self.observe = observe
        self.threads: list[_Thread] = []
        self.outcome = Outcome()
        self._by_ident: dict[int, _Thread] = {}
        self._aborted = False
        self._all_done = _Signal()
        # Resolved once per execution: a wrapper (Metrics, Budget, the
        # portfolio) hands out its inner scheduler's methods, so that a
        # decision is one call, not one per wrapper.
        self._next: Callable[[Sequence[int], int | None], int] = scheduler.next_thread
        self._keep: Keep | None = _current_keep(getattr(scheduler, "keep", None))
        #: The unfinished threads; their ids for ``keep`` (``_regroup``).
        self._live: list[_Thread] = []
        self._free_ids: tuple[int, ...] = ()
        self._held_ids: tuple[int, ...] = ()
        #: Each region's words, looked up once (spin detection peeks at
        #: every load).
        self._words: dict[str, AtomicWordsLike | None] = {}
        #: Each region's plain reader for spin detection (``_plain_words``).
        self._plain: dict[str, tuple[Any, int]] = {}
        self._can_run_fn = self._can_run  # one bound method, not one per step
        #: A step is observed or traced (else it only decides and records).
        self._told = trace or observe is not None

    # -- building ---------------------------------------------------------------
    def spawn(self, name: str, fn: Callable[[], None]) -> int:
        t = _Thread(len(self.threads), name, fn)
        self.threads.append(t)
        self._live.append(t)
        self._regroup()
        return t.tid

    def _regroup(self) -> None:
        """The unfinished threads' ids for ``keep``, after a thread blocked,
        resumed or finished: those with no wait (they can run) and those
        whose wait's condition must be asked (threads that wait for
        others to finish are in neither: only a thread's end frees them)."""
        free: list[int] = []
        held: list[int] = []
        for t in self._live:
            if t.blocker is None:
                free.append(t.tid)
            elif t.blocker is not _not_yet:
                held.append(t.tid)
        self._free_ids = tuple(free)
        self._held_ids = tuple(held)

    def name_of(self, tid: int) -> str:
        return self.threads[tid].name

    # -- the hook -----------------------------------------------------------------
    def _me(self) -> _Thread | None:
        ident = threading.get_ident()
        me = self._by_ident.get(ident)
        if me is None:
            if ident in _OWNER:
                raise _Abort  # a controlled thread of an earlier, aborted execution
            return None  # the driver, or any thread the runtime does not own
        if self._aborted:
            raise _Abort
        return me

    def __call__(self, op: Op, target: str, index: int) -> None:
        # The hot path, every switch point: decide and record, nothing else.
        # The common step (the running thread goes on, as the scheduler's
        # keep() says) is inlined here; every other decision is
        # _decide_step's.
        me = self._by_ident.get(_get_ident())  # self._me(), inlined
        if me is None or self._aborted:
            me = self._me()
            if me is None:
                return
        if op is not _LOAD:
            if op is _YIELD:
                me.yielded = True
            if me.loads:
                me.loads.clear()
                me.spinning = 0
        out = self.outcome
        steps = out.steps = out.steps + 1
        if self.tracing:  # (only a traced step has a last step to close)
            if me.last is not None:
                self._close_step(me)
            me.at = (steps, op, target, index)
        if steps > self.max_steps:
            self._fail_at(Verdict.STEP_BOUND, self._step_bound_report(me, op, target, index),
                          me, op, target, index)
        keep = self._keep
        if keep is not None and me.blocker is None and not me.yielded and not me.spinning \
                and keep(me.tid, self._free_ids, self._held_ids, self._can_run_fn):
            # The running thread goes on: no list of runnable threads.
            out.schedule.append(me.tid)
            if self._told:
                if self.observe is not None:
                    self.observe(me.tid, op, target, index)
                if self.tracing:
                    self._record(me, op, target, index)
        else:
            self._decide_step(me, op, target, index)
        if op is _LOAD:
            # Spin detection: ``me`` is about to load target[index] (nobody
            # runs before it does): remember what it reads, and whether its
            # loads now repeat a cycle.
            plain = self._plain.get(target)
            if plain is None:
                plain = self._plain_words(target)
            if 0 <= index < plain[1]:
                load = (target, index, plain[0][index])
                loads = me.loads
                loads.append(load)
                if len(loads) >= SPIN_REPEATS:
                    if len(loads) > _SPIN_KEPT:
                        del loads[0]
                    # The cheap test first: a cycle of at most SPIN_PERIOD
                    # loads ends with a load seen within the SPIN_PERIOD
                    # before it.
                    me.spinning = _period(loads) if load in loads[-SPIN_PERIOD - 1:-1] else 0

    # -- spin loops -----------------------------------------------------------------
    def progress(self) -> None:
        """``switch.progress``: the calling thread's loads so far are not a spin."""
        me = self._me()
        if me is not None:
            me.loads.clear()
            me.spinning = 0

    def _plain_words(self, target: str) -> tuple[Any, int]:
        """How spin detection reads ``target``'s words: (a reader indexed
        by word, the number of words); no words (0) where the runtime
        cannot read them, and then no spin is claimed. A plain read, not a
        foreign call: one thread runs at a time."""
        words = self._lookup(target)
        plain: tuple[Any, int] = (None, 0)
        if words is not None:
            reader = getattr(words, "plain", None)
            plain = (reader(), words.nwords) if reader is not None \
                else (_Peeker(words), words.nwords)
        self._plain[target] = plain
        return plain

    def _spins(self, me: _Thread) -> str:
        """What ``me`` spins on, for a report: ``words[i] (= value)``, ..."""
        cycle = me.loads[-me.spinning:]
        return ", ".join(f"{t}[{i}] (= {v:#x})" for t, i, v in cycle)

    def block_until(self, ready: Callable[[], bool], reason: Callable[[], str], op: Op,
                    target: str, index: int) -> None:
        """A switch point at which the calling thread is not runnable until
        ``ready()`` holds; a deadlock report says it waits for ``reason()``.
        When it returns, ``ready()`` held at the decision that resumed it,
        and no other thread has run since."""
        me = self._me()
        if me is None:
            if ready():
                return
            raise InternalError(f"a thread the runtime does not own would block on "
                                f"{reason()}")
        me.blocker = ready
        me.reason = reason
        self._regroup()
        self._switch(me, op, target, index)

    def wait_for(self, tids: Sequence[int]) -> None:
        """Block the calling controlled thread until ``tids`` have finished."""
        waited = [self.threads[t] for t in tids]
        names = " and ".join(t.name for t in waited)

        def finished() -> bool:
            return all(t.done for t in waited)

        me = self._me()
        if me is not None and not finished():
            # Only a thread's end can make it true: asked then (_finish),
            # not at every other thread's step.
            me.waits = finished
            self.block_until(_not_yet, lambda: f"{names} to finish", Op.WAIT, "threads", 0)
            return
        self.block_until(finished, lambda: f"{names} to finish", Op.WAIT, "threads", 0)

    def _can_run(self, tid: int) -> bool:
        t = self.threads[tid]
        return not t.done and (t.blocker is None or t.blocker())

    def _runnable(self, me: _Thread | None) -> list[int]:
        ready = [t.tid for t in self._live
                 if t.blocker is None or (t.blocker is not _not_yet and t.blocker())]
        if me is not None and (me.yielded or me.spinning) and len(ready) > 1 \
                and me.tid in ready:
            ready.remove(me.tid)
        return ready

    def _switch(self, me: _Thread, op: Op, target: str, index: int) -> None:
        """A switch point at which ``me`` waits (``block_until``)."""
        out = self.outcome
        if me.last is not None:
            self._close_step(me)
        out.steps += 1
        if self.tracing:
            me.at = (out.steps, op, target, index)
        if out.steps > self.max_steps:
            self._fail_at(Verdict.STEP_BOUND, self._step_bound_report(me, op, target, index),
                          me, op, target, index)
        self._decide_step(me, op, target, index)

    def _decide_step(self, me: _Thread, op: Op, target: str, index: int) -> None:
        """The decision at a step (already counted) that the fast one did
        not take: the scheduler picks among the runnable threads."""
        out = self.outcome
        ready = self._runnable(me)
        if not ready:
            self._fail_at(Verdict.DEADLOCK, self._deadlock_report(), me, op, target, index)
        if me.yielded and ready == [me.tid]:
            # Spinning while nobody else can run: nothing will ever change.
            spun = f"{target}[{index}] (spinning; no other thread can run)"
            me.reason = lambda: spun
            self._fail_at(Verdict.DEADLOCK, self._deadlock_report(), me, op, target, index)
        current = me.tid if me.tid in ready and not me.yielded and not me.spinning else None
        choice = self._decide(ready, current)
        if choice != me.tid:
            nxt = self.threads[choice]
            if current is not None:
                out.preemptions += 1
                if nxt.pending_preempt is not None:
                    nxt.earlier_preempts.append(nxt.pending_preempt)
                nxt.pending_preempt = me.tid
            out.switches += 1
            self._wake(nxt)
            me.sem.wait()
            if self._aborted:
                raise _Abort
        if me.blocker is not None:
            me.blocker = None
            self._regroup()
        me.reason = None
        me.yielded = False
        if self.observe is not None:
            self.observe(me.tid, op, target, index)
        if self.tracing:
            self._record(me, op, target, index)

    def _fail_at(self, kind: Verdict, message: str, me: _Thread, op: Op, target: str,
                 index: int) -> NoReturn:
        """Fail at this switch point (a step: see :meth:`_pending_rows`)."""
        self._fail(kind, message, me)
        raise _Abort

    def _step_bound_report(self, me: _Thread, op: Op, target: str, index: int) -> str:
        text = (f"the execution exceeded {self.max_steps} steps (max_steps) at {me.name}'s "
                f"{op} on {target}[{index}]")
        spinners = [t for t in self.threads if not t.done and t.spinning]
        if not spinners:
            return (text + ": a spin loop that does not call concurrent_dirty.cpu_relax() "
                    "can do this (or a livelock)")
        waits = "; ".join(f"{t.name} keeps loading {self._spins(t)}" for t in spinners)
        return (text + f": a livelock or a wait for something that never comes; {waits}, "
                "with no store in between, and no other thread changes them")

    def _decide(self, ready: list[int], current: int | None) -> int:
        choice = self._next(ready, current)
        if choice not in ready:
            raise InternalError(f"expected the scheduler to pick one of the runnable threads "
                             f"{ready}, got {choice!r}")
        self.outcome.schedule.append(choice)
        return choice

    # -- trace --------------------------------------------------------------------
    def _lookup(self, target: str) -> AtomicWordsLike | None:
        cache = self._words
        if target in cache:
            return cache[target]
        words = cache[target] = self.words(target) if self.words is not None else None
        return words

    def _peek(self, target: str, index: int) -> int | None:
        words = self._lookup(target)
        if words is None or not 0 <= index < words.nwords:
            return None
        return words.peek(index)

    def _pending_rows(self) -> None:
        """The switch points reached and not performed when the execution
        ends (the failing thread's, where it failed at one; the others'
        where they wait), as the trace's last rows: every switch point
        reached is a step, so a failure at step N has N rows."""
        waiting = [(t.at, t) for t in self.threads if t.at is not None]
        for (_, op, target, index), t in sorted(waiting, key=lambda w: w[0][0]):
            self.outcome.trace.append(Step(
                index=len(self.outcome.trace) + 1, thread=t.tid, op=op, target=target,
                word=index, before=self._peek(target, index), preempted=t.pending_preempt,
                pending=True, also_preempted=tuple(t.earlier_preempts)))
            t.pending_preempt = None
            t.earlier_preempts = []
            t.at = None

    def _record(self, me: _Thread, op: Op, target: str, index: int) -> None:
        me.at = None
        step = Step(index=len(self.outcome.trace) + 1, thread=me.tid, op=op, target=target,
                    word=index, before=self._peek(target, index), preempted=me.pending_preempt,
                    also_preempted=tuple(me.earlier_preempts) if me.earlier_preempts else ())
        me.pending_preempt = None
        if me.earlier_preempts:
            me.earlier_preempts = []
        me.last = step
        self.outcome.trace.append(step)

    def _close_step(self, me: _Thread) -> None:
        last = me.last
        if last is not None:
            last.after = self._peek(last.target, last.word)
            me.last = None

    # -- life cycle ---------------------------------------------------------------
    def _wake(self, t: _Thread) -> None:
        """Hand the CPU to ``t``: the first time, by starting it on a
        carrier (a thread starts when it is first picked, not before: one
        wake-up, not two), then by posting its semaphore."""
        if t.started:
            t.sem.post()
            return
        t.started = True
        t.os_thread = _Carrier.submit(lambda: self._thread_main(t))

    def _thread_main(self, t: _Thread) -> None:
        ident = threading.get_ident()
        self._by_ident[ident] = t
        _OWNER[ident] = self
        try:
            if not self._aborted:
                t.fn()
        except _Abort:
            pass
        except InvariantViolation as exc:
            self._fail(Verdict.VIOLATION, str(exc), t, exc)
        except DeadlockError as exc:
            self._fail(Verdict.DEADLOCK, str(exc), t, exc)
        except AlgorithmMisuse as exc:
            self._fail(Verdict.MISUSE, f"{exc}\n{traceback.format_exc()}", t, exc)
        except BaseException as exc:
            self._fail(Verdict.ERROR, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                       t, exc)
        finally:
            self._by_ident.pop(ident, None)
            _OWNER.pop(ident, None)
            self._finish(t)

    def _finish(self, t: _Thread) -> None:
        if self.tracing:
            self._close_step(t)
        t.done = True
        if t in self._live:
            self._live.remove(t)
        for x in self._live:
            if x.waits is not None and x.waits():
                x.waits = x.blocker = None
        self._regroup()
        if self._aborted:
            if all(x.done for x in self.threads):
                self._all_done.post()
            return
        try:
            ready = self._runnable(None)
            if ready:
                self._wake(self.threads[self._decide(ready, None)])
                return
            if all(x.done for x in self.threads):
                self._all_done.post()
                return
            self._fail(Verdict.DEADLOCK, self._deadlock_report(), t)
        except BaseException as exc:  # the scheduler failed: end the execution, say why
            self._fail(Verdict.ERROR, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                       t, exc)
        if all(x.done for x in self.threads):
            self._all_done.post()

    def _fail(self, kind: Verdict, message: str, t: _Thread | None,
              exc: BaseException | None = None) -> None:
        if self._aborted:
            return  # the first failure is the one reported
        out = self.outcome
        out.kind, out.message, out.step, out.thread, out.exception = (
            kind, message, out.steps, t.name if t is not None else None, exc)
        self._aborted = True
        if self.tracing:
            self._pending_rows()
        for other in self.threads:
            if other is not t and not other.done:
                self._wake(other)

    def _deadlock_report(self) -> str:
        parts = []
        for t in self.threads:
            if t.done:
                continue
            what = t.reason() if t.reason is not None else "nothing (runnable)"
            parts.append(f"{t.name} waits for {what}")
        return "deadlock: no thread can run; " + "; ".join(parts)

    def run(self) -> Outcome:
        """Run the execution to its end; returns how it ended."""
        if not self.threads:
            raise UsageError("expected at least one spawned thread, got none")
        first = self._decide([t.tid for t in self.threads], None)
        self._wake(self.threads[first])
        # The watchdog: one thread runs at a time, so no new step for
        # `watchdog` seconds means the running thread is stuck outside the
        # switch points (an endless loop that touches no shared word, a real
        # OS lock, a sleep).
        last_steps, last_change = -1, time.monotonic()
        while not self._all_done.wait(min(0.25, self.watchdog)):
            now = time.monotonic()
            if self.outcome.steps != last_steps:
                last_steps, last_change = self.outcome.steps, now
                continue
            if now - last_change < self.watchdog:
                continue
            running = self._running()
            self._fail(Verdict.HANG, self._hang_report(), running)
            if running is not None and running.os_thread is not None \
                    and running.os_thread.ident is not None:
                # Unwind it (it is caught in _thread_main), so that a hung
                # thread does not keep spinning through later executions.
                raise_in(running.os_thread.ident, _Abort)
            self._all_done.wait(1.0)
            resync()  # the thread may still be stuck in C: no stale flag left
            break
        return self.outcome

    def _running(self) -> _Thread | None:
        frames = sys._current_frames()
        for t in self.threads:
            if not t.done and t.blocker is None and t.os_thread is not None:
                frame = frames.get(t.os_thread.ident or -1)
                if frame is not None and not _parked(frame):
                    return t
        return None

    def _hang_report(self) -> str:
        running = self._running()
        who = running.name if running is not None else "a thread"
        text = (f"{who} ran for {self.watchdog:g}s without reaching a switch point (an "
                f"endless loop that touches no shared word, a real OS lock or a sleep in the "
                f"code under test); its stack:")
        frames = sys._current_frames()
        if running is not None and running.os_thread is not None:
            frame = frames.get(running.os_thread.ident or -1)
            if frame is not None:
                text += "\n" + "".join(traceback.format_stack(frame))
        return text


def _period(loads: list[tuple[str, int, int]]) -> int:
    """The shortest cycle of at most :data:`SPIN_PERIOD` loads that the
    last ones repeat :data:`SPIN_REPEATS` times in a row, or 0."""
    n = len(loads)
    last = loads[-1] if loads else None
    for p in range(1, min(SPIN_PERIOD, n // SPIN_REPEATS) + 1):
        if loads[n - 1 - p] != last:  # the cheap test first: most stretches are no spin
            continue
        cycle = loads[n - p:]
        if all(loads[n - k * p - p:n - k * p] == cycle for k in range(1, SPIN_REPEATS)):
            return p
    return 0


def _not_yet() -> bool:
    """The blocker of a thread that waits for others to finish (see
    ``Runtime.wait_for``): runnable only once ``_finish`` clears it."""
    return False


def _parked(frame: object) -> bool:
    """Whether a controlled thread's innermost frame is the runtime's own
    hand-off wait (so it is not the thread that hangs)."""
    code = getattr(frame, "f_code", None)
    return code is not None and code.co_name == "wait" and code.co_filename == __file__


class _Peeker:
    """Words read through ``peek`` (words with no plain reader)."""

    __slots__ = ("_peek",)

    def __init__(self, words: AtomicWordsLike) -> None:
        self._peek = words.peek

    def __getitem__(self, i: int) -> int:
        return self._peek(i)


class AtomicWordsLike(Protocol):
    """What a trace needs of the words a switch point names."""

    @property
    def nwords(self) -> int: ...

    def peek(self, i: int) -> int: ...
