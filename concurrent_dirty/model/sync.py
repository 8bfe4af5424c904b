"""``mmu_lock`` and SRCU, built on atomic words so that they work the same
between threads and between processes.

``Lock`` (``mmu_lock`` is one) is a test-and-test-and-set spinlock: the
word holds 0 when free and the holder's id + 1 otherwise, so a deadlock
report can name the holder. Free-running, waiters yield the CPU on every
failed attempt (the machine has two cores and the holder may be waiting for
one) and give up after the run's lock timeout with a
:class:`~concurrent_dirty.DeadlockError`; under the controlled runtime a
waiter is blocked until the lock is free. Both come from one call,
:func:`~concurrent_dirty._core.switch.wait_until`: the runtime knows no lock.

``Srcu`` is a real grace-period mechanism, not a sleep. Each reader owns one
word: ``read_lock`` stores ``(gp << 1) | 1`` where ``gp`` is the grace-period
counter it just read, ``read_unlock`` stores 0. ``synchronize`` (called after
the updater published a new pointer) advances the counter to ``g`` and waits
until no reader word holds an odd value whose phase is below ``g``.

Why it is enough (every operation is sequentially consistent): a reader
that read the counter at or after the advance read it after the updater's
publish, so its pointer load sees the new pointer. A reader that read it
before the advance stores a phase below ``g``; if the updater's scan reads
that word before the store, the reader's pointer load comes after the scan
and so after the publish; otherwise the scan sees the section and waits.
The argument assumes what the harness guarantees: sections do not nest (a
reader owns one word) and there is one updater at a time (the harvester).
"""

from __future__ import annotations

from collections.abc import Callable

from .._core import switch as _switch
from .._core.switch import Op, wait_until
from ..errors import AlgorithmMisuse, DeadlockError
from .atomic import AtomicWords

__all__ = ["HARVESTER", "Lock", "MmuLock", "Srcu", "actor_name"]

# Enum members are slow to look up on Python 3.11 (about 0.15 us each):
# the hot paths use these.
_OP_ACQUIRE = Op.ACQUIRE
_OP_ENTER = Op.ENTER
_OP_EXIT = Op.EXIT
_OP_RELEASE = Op.RELEASE
_OP_WAIT = Op.WAIT

#: The id the harvester (userspace, the ioctl caller) uses as lock holder.
HARVESTER = 0xFFFF


def actor_name(actor: int) -> str:
    return "harvester" if actor == HARVESTER else f"vcpu {actor}"


class Lock:
    """A spinlock over one word (0 free, holder id + 1 held), so that a
    deadlock report can name the holder. ``mmu_lock`` is one; an algorithm
    can declare its own (``DirtyLogAlgorithm.shared_locks``: one per memslot,
    a ring lock) and gets the same blocking and deadlock reports.

    Use ``with lock.held(actor):`` or :meth:`acquire` / :meth:`release`. The
    word must be quiet (not a switch point): the lock announces its own
    ``lock``/``unlock`` switch points, and waits through
    :func:`~concurrent_dirty._core.switch.wait_until`, which is a bounded
    spin when free-running and a modelled block under the controlled
    runtime.
    """

    def __init__(self, word: AtomicWords, timeout: float, *, index: int = 0,
                 name: str = "mmu_lock", on_wait: Callable[[], None] | None = None) -> None:
        self._word = word
        self._index = index
        self.name = name
        self.timeout = timeout
        #: Called now and then while waiting; the driver checks here that
        #: the holder is still alive (a writer that died holding the lock).
        self.on_wait = on_wait

    def holder(self) -> int | None:
        value = self._word.peek(self._index)
        return None if value == 0 else value - 1

    def _free(self) -> bool:
        return self._word.peek(self._index) == 0

    def _held_by(self) -> str:
        holder = self.holder()
        return f"{self.name}, held by {'nobody' if holder is None else actor_name(holder)}"

    def acquire(self, actor: int) -> None:
        word, i = self._word, self._index
        if word.peek(i) == actor + 1:
            raise DeadlockError(f"{actor_name(actor)} tried to take {self.name}, which it "
                                f"already holds: a recursive lock or a missing unlock")
        while True:
            # Test before test-and-set: wait on a plain read, not a locked op.
            wait_until(self._free, self._held_by, _OP_ACQUIRE, self.name, i,
                       timeout=self.timeout, on_wait=self.on_wait, waiter=actor_name(actor))
            ok, _ = word.compare_exchange(i, 0, actor + 1)
            if ok:
                return

    def release(self, actor: int) -> None:
        _switch.switch_point(_OP_RELEASE, self.name, self._index)
        ok, value = self._word.compare_exchange(self._index, actor + 1, 0)
        if not ok:
            holder = "nobody" if value == 0 else actor_name(value - 1)
            raise AlgorithmMisuse(f"{actor_name(actor)} released {self.name} held by {holder}")

    def held(self, actor: int) -> _Held:
        return _Held(self, actor)


#: The ``kvm->mmu_lock`` stand-in is a :class:`Lock` named ``mmu_lock``.
MmuLock = Lock


class _Held:
    __slots__ = ("_actor", "_lock")

    def __init__(self, lock: Lock, actor: int) -> None:
        self._lock = lock
        self._actor = actor

    def __enter__(self) -> None:
        self._lock.acquire(self._actor)

    def __exit__(self, *exc: object) -> None:
        self._lock.release(self._actor)


class Srcu:
    """Sleepable RCU over one counter word and one word per reader.

    The same mechanism models a remote TLB flush (``kind="tlb"``): a vCPU in
    guest mode is a reader, the flush's IPIs and their acknowledgements are
    the grace period, and a vCPU that enters guest mode in a later phase
    drops the translations it cached (see :meth:`phase`).
    """

    _KINDS = {
        "srcu": ("grace period", "stayed in its SRCU read-side section"),
        "tlb": ("remote TLB flush", "never left guest mode to acknowledge it"),
    }

    def __init__(self, gp: AtomicWords, readers: AtomicWords, timeout: float,
                 on_wait: Callable[[], None] | None = None, kind: str = "srcu") -> None:
        self._gp = gp
        self._readers = readers
        self.timeout = timeout
        self.on_wait = on_wait
        self.kind = kind
        self._what, self._stuck = self._KINDS[kind]

    def read_lock(self, reader: int) -> None:
        _switch.switch_point(_OP_ENTER, self.kind, reader)
        phase = self._gp.load(0)
        self._readers.store(reader, (phase << 1) | 1)

    def phase(self) -> int:
        """The current phase. Read it *inside* a section, after
        ``read_lock``, like any data the section protects: a phase read
        before the section's store could predate a grace period that the
        updater's scan then ends without waiting for us."""
        return self._gp.load(0)

    def read_unlock(self, reader: int) -> None:
        _switch.switch_point(_OP_EXIT, self.kind, reader)
        self._readers.store(reader, 0)

    def synchronize(self) -> None:
        """Wait until every read-side section that began before this call has
        ended (``synchronize_srcu_expedited``)."""
        target = self._gp.fetch_add(0, 1) + 1
        readers = self._readers
        for r in range(readers.nwords):
            def quiescent(r: int = r) -> bool:
                value = readers.peek(r)
                return not value & 1 or value >> 1 >= target

            def reason(r: int = r) -> str:
                return f"a {self._what}: {actor_name(r)} {self._stuck}"

            wait_until(quiescent, reason, _OP_WAIT, self.kind, r, timeout=self.timeout,
                       on_wait=self.on_wait, waiter=actor_name(HARVESTER))
