"""``mmu_lock`` and SRCU, built on atomic words so that they work the same
between threads and between processes.

``MmuLock`` is a test-and-test-and-set spinlock: the word holds 0 when free
and the holder's id + 1 otherwise, so a deadlock report can name the holder.
Waiters yield the CPU on every failed attempt (the machine has two cores and
the holder may be waiting for one) and give up after the run's lock timeout
with a :class:`~concurrent_dirty.DeadlockError`.

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

import time
from collections.abc import Callable

from .._core import switch as _switch
from ..errors import DeadlockError, UsageError
from .atomic import AtomicWords

__all__ = ["HARVESTER", "MmuLock", "Srcu", "actor_name"]

#: The id the harvester (userspace, the ioctl caller) uses as lock holder.
HARVESTER = 0xFFFF


def actor_name(actor: int) -> str:
    return "harvester" if actor == HARVESTER else f"vcpu {actor}"


class MmuLock:
    """The ``kvm->mmu_lock`` stand-in. Use ``with lock.held(actor):`` or
    :meth:`acquire` / :meth:`release`."""

    def __init__(self, word: AtomicWords, timeout: float,
                 on_wait: Callable[[], None] | None = None) -> None:
        self._word = word
        self.timeout = timeout
        #: Called now and then while waiting; the driver checks here that
        #: the holder is still alive (a writer that died holding the lock).
        self.on_wait = on_wait

    def holder(self) -> int | None:
        value = self._word.load(0)
        return None if value == 0 else value - 1

    def acquire(self, actor: int) -> None:
        _switch.switch_point("lock", "mmu_lock", actor)
        word = self._word
        ok, value = word.compare_exchange(0, 0, actor + 1)
        if ok:
            return
        if value == actor + 1:
            raise DeadlockError(f"{actor_name(actor)} tried to take mmu_lock, which it "
                                f"already holds: a recursive lock or a missing unlock")
        deadline = time.monotonic() + self.timeout
        spins = 0
        while True:
            # Test before test-and-set: spin on a load, not on a locked op.
            if word.load(0) == 0:
                ok, value = word.compare_exchange(0, 0, actor + 1)
                if ok:
                    return
            _switch.cpu_relax("mmu_lock", actor)
            spins += 1
            if spins & 63:
                continue
            if self.on_wait is not None:
                self.on_wait()
            if time.monotonic() > deadline:
                holder = self.holder()
                raise DeadlockError(
                    f"{actor_name(actor)} waited {self.timeout:g}s for mmu_lock, held by "
                    f"{'nobody' if holder is None else actor_name(holder)}: a path that "
                    f"returns without unlocking, or a holder that is itself blocked")

    def release(self, actor: int) -> None:
        _switch.switch_point("unlock", "mmu_lock", actor)
        ok, value = self._word.compare_exchange(0, actor + 1, 0)
        if not ok:
            holder = "nobody" if value == 0 else actor_name(value - 1)
            raise UsageError(f"{actor_name(actor)} released mmu_lock held by {holder}")

    def held(self, actor: int) -> _Held:
        return _Held(self, actor)


class _Held:
    __slots__ = ("_actor", "_lock")

    def __init__(self, lock: MmuLock, actor: int) -> None:
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
        "srcu": ("srcu_read_lock", "srcu_read_unlock", "grace period",
                 "stayed in its SRCU read-side section"),
        "tlb": ("guest_enter", "guest_exit", "remote TLB flush",
                "never left guest mode to acknowledge it"),
    }

    def __init__(self, gp: AtomicWords, readers: AtomicWords, timeout: float,
                 on_wait: Callable[[], None] | None = None, kind: str = "srcu") -> None:
        self._gp = gp
        self._readers = readers
        self.timeout = timeout
        self.on_wait = on_wait
        self.kind = kind
        self._enter, self._exit, self._what, self._stuck = self._KINDS[kind]

    def read_lock(self, reader: int) -> None:
        _switch.switch_point(self._enter, self.kind, reader)
        phase = self._gp.load(0)
        self._readers.store(reader, (phase << 1) | 1)

    def phase(self) -> int:
        """The current phase. Read it *inside* a section, after
        ``read_lock``, like any data the section protects: a phase read
        before the section's store could predate a grace period that the
        updater's scan then ends without waiting for us."""
        return self._gp.load(0)

    def read_unlock(self, reader: int) -> None:
        _switch.switch_point(self._exit, self.kind, reader)
        self._readers.store(reader, 0)

    def synchronize(self) -> None:
        """Wait until every read-side section that began before this call has
        ended (``synchronize_srcu_expedited``)."""
        target = self._gp.fetch_add(0, 1) + 1
        readers = self._readers
        # Under a controlled scheduler, waiting is bounded by its step bound
        # and deadlock detection; a wall-clock deadline would make replays
        # depend on timing.
        controlled = bool(getattr(_switch.HOOK, "handles_yield", False))
        deadline = time.monotonic() + self.timeout
        for r in range(readers.nwords):
            spins = 0
            while True:
                value = readers.load(r)
                if not value & 1 or value >> 1 >= target:
                    break
                _switch.cpu_relax(self.kind, r)
                spins += 1
                if spins & 63:
                    continue
                if self.on_wait is not None:
                    self.on_wait()
                if not controlled and time.monotonic() > deadline:
                    raise DeadlockError(
                        f"harvester waited {self.timeout:g}s for a {self._what}: "
                        f"{actor_name(r)} {self._stuck}")
