"""The one switch-point function every visible shared-state effect goes through.

Every atomic word operation, every lock acquire and release, every
read-side section entry and exit calls :func:`switch_point` *before* its
visible effect, with an :class:`Op`, the name of the object touched and an
index. The free-running engines install a noise hook here (random yields
and short sleeps, in the manner of IBM's ConTest) and the controlled
runtime installs itself here without a single change to the algorithms:
the primitives are facades that keep no scheduling logic (tokio-rs/loom and
awslabs/shuttle are built the same way).

Waiting is part of the seam too. A facade that cannot go on until another
thread acts (a held lock, a grace period, a full ring) calls
:func:`wait_until` with a condition and a reason. Free-running, that is a
bounded spin; under the controlled runtime (a hook that ``models_blocking``)
the thread is simply not runnable until the condition holds, and a deadlock
report quotes the reason. The runtime never needs to know what a lock is.

The hook is per process and held in a module global so that the hot path is
one global load and one ``is None`` test when no hook is installed (the
controlled runtime, and the free-running engines with ``noise=0``); the
free-running engines' default swarm noise costs one call more, about 0.2 us,
at each switch point of a thread whose level is 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from ..errors import DeadlockError

__all__ = ["NOISE_LEVELS", "BlockingHook", "NoiseHook", "Op", "SwitchHook", "begin_execution",
           "cpu_relax", "current", "install", "progress", "switch_point", "wait_until"]


class Op(StrEnum):
    """What a switch point is about to do. The values are what traces show."""

    LOAD = "load"
    STORE = "store"
    XCHG = "xchg"
    CMPXCHG = "cmpxchg"
    FETCH_OR = "fetch_or"
    FETCH_AND = "fetch_and"
    FETCH_ANDNOT = "fetch_andnot"
    FETCH_ADD = "fetch_add"
    SET_BIT = "set_bit"
    CLEAR_BIT = "clear_bit"
    TEST_AND_SET_BIT = "test_and_set_bit"
    TEST_AND_CLEAR_BIT = "test_and_clear_bit"
    #: Take a lock (the switch point of a possibly blocking acquire).
    ACQUIRE = "lock"
    RELEASE = "unlock"
    #: Enter / leave a read-side section (SRCU, guest mode).
    ENTER = "enter"
    EXIT = "exit"
    #: Wait for a condition (a grace period, threads to finish, room in a ring).
    WAIT = "wait"
    #: Start a synchronisation that waits for others (a remote TLB flush).
    SYNCHRONIZE = "synchronize"
    #: A spin-wait iteration (:func:`cpu_relax`).
    YIELD = "yield"


SwitchHook = Callable[[Op, str, int], None]


class BlockingHook(Protocol):
    """A hook that models blocking (the controlled runtime)."""

    models_blocking: bool

    def __call__(self, op: Op, target: str, index: int) -> None: ...

    def block_until(self, ready: Callable[[], bool], reason: Callable[[], str], op: Op,
                    target: str, index: int) -> None: ...


#: The installed hook, or None. Read directly by the hot paths.
HOOK: SwitchHook | None = None


def switch_point(op: Op, target: str, index: int = 0) -> None:
    """Announce that the calling thread is about to perform ``op`` on
    ``target[index]``. A no-op unless a hook is installed."""
    hook = HOOK
    if hook is not None:
        hook(op, target, index)


def cpu_relax(target: str = "spin", index: int = 0) -> None:
    """One iteration of a spin-wait: the caller cannot progress until
    another thread acts. Call it in every loop that waits on shared words
    (the kernel's ``cpu_relax()``). Free-running, it gives up the CPU; under
    the controlled runtime it is a ``yield`` switch point after which the
    scheduler runs someone else if anyone else can run, so a spin loop never
    exhausts the step bound of a correct algorithm."""
    hook = HOOK
    if hook is not None and getattr(hook, "models_blocking", False):
        hook(Op.YIELD, target, index)
    else:
        time.sleep(0)


def progress() -> None:
    """The calling thread moved on in a way its loads do not show: the next
    turn of a loop that ends by itself (a harvester's next round re-reads
    words that may not have changed). Not a switch point. Under the
    controlled runtime, the loads before it no longer count towards a spin
    (a thread that keeps loading the same words and reading the same values
    is taken to wait for another thread; see ``runtime``)."""
    progressed = getattr(HOOK, "progress", None)  # only a hook that looks for spins has it
    if progressed is not None:
        progressed()


def wait_until(ready: Callable[[], bool], reason: Callable[[], str], op: Op, target: str,
               index: int = 0, *, timeout: float,
               on_wait: Callable[[], None] | None = None, waiter: str = "") -> None:
    """Return once ``ready()`` holds (it must not be a switch point: read
    words with ``peek``).

    Under the controlled runtime the calling thread is blocked until the
    condition holds (a modelled wait: no steps are spent, and if nobody can
    make it true the deadlock report says ``<thread> waits for <reason()>``).
    Free-running, spin with :func:`cpu_relax`, call ``on_wait`` now and then
    (a driver checks there that its partners are alive) and raise
    :class:`DeadlockError` naming ``waiter`` and ``reason()`` after
    ``timeout`` seconds.
    """
    hook = HOOK
    if hook is not None and getattr(hook, "models_blocking", False):
        hook.block_until(ready, reason, op, target, index)  # type: ignore[attr-defined]
        return
    if hook is not None:
        hook(op, target, index)
    if ready():
        return
    deadline = time.monotonic() + timeout
    spins = 0
    while not ready():
        time.sleep(0)
        spins += 1
        if spins & 63:
            continue
        if on_wait is not None:
            on_wait()
        if time.monotonic() > deadline:
            who = f"{waiter} " if waiter else ""
            raise DeadlockError(f"{who}waited {timeout:g}s for {reason()}")


def install(hook: SwitchHook | None) -> SwitchHook | None:
    """Install ``hook`` for this process; return the previous one."""
    global HOOK
    previous, HOOK = HOOK, hook
    return previous


def current() -> SwitchHook | None:
    return HOOK


#: The noise levels drawn per execution and thread when no level is pinned
#: (swarm noise): none half the time, else a yield at 1%, 5% or 20% of the
#: switch points.
NOISE_LEVELS = (0.0, 0.0, 0.0, 0.01, 0.05, 0.2)


class NoiseHook:
    """ConTest-style noise: at each switch point, with a probability, give
    up the CPU (``sleep(0)``) or, one time in four, sleep for a few
    microseconds.

    The probability is ``probability`` if given. If it is None (swarm
    noise, the free-running engines' default), each thread draws its own
    level from :data:`NOISE_LEVELS` for each execution (:meth:`begin_execution`): a
    quiet writer beside a noisy harvester opens the harvester's windows
    wide, and the reverse opens the writer's (with the GIL a thread is
    preempted only every switch interval, and between processes a window of
    a few microseconds is rarely hit; a yield there is what lets the other
    side run inside it). Each thread draws from its own generator, seeded
    from ``seed``, the execution and the thread's role, so noise needs no
    lock."""

    def __init__(self, probability: float | None, seed: int) -> None:
        self.probability = probability
        self.seed = seed
        self._local = threading.local()

    def begin_execution(self, execution: int, role: str) -> None:
        """This thread starts ``execution`` as ``role`` (``vcpu-0``,
        ``harvester``): its generator and, for swarm noise, its level."""
        rng = random.Random(f"noise:{self.seed}:{execution}:{role}")
        local = self._local
        local.rng = rng
        local.p = self.probability if self.probability is not None \
            else rng.choice(NOISE_LEVELS)

    def level(self) -> float:
        """This thread's probability now."""
        p: float | None = getattr(self._local, "p", None)
        if p is None:
            self.begin_execution(0, threading.current_thread().name)
            p = self._local.p
        return p

    def __call__(self, op: Op, target: str, index: int) -> None:
        local = self._local  # a switch point: one thread-local lookup
        p = getattr(local, "p", None)
        if p is None:
            p = self.level()
        if not p:
            return
        rng = local.rng
        if rng.random() < p:
            if rng.random() < 0.25:
                time.sleep(rng.random() * 20e-6)
            else:
                time.sleep(0)


def begin_execution(execution: int, role: str) -> None:
    """Tell this process's hook (if it has per-execution state, as swarm
    noise does) that this thread starts ``execution`` as ``role``."""
    if isinstance(HOOK, NoiseHook):
        HOOK.begin_execution(execution, role)
