"""Deliberately broken algorithms the harness must catch.

Importable as ``tests.broken_algorithms:NAME`` from the repository root, so
that writer processes can rebuild them by reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurrent_dirty import HARVESTER, ManualDirtyLog, XchgDirtyLog
from concurrent_dirty.mutants.xchg import NonatomicClear


class NonatomicClearXchg(NonatomicClear):
    """The tests' own broken algorithm: the seed harvest with its ``xchg``
    split into a load and a store (the ``nonatomic-clear`` mutant). An
    on-behalf write, which takes no ``mmu_lock``, that sets a bit between
    the two is erased, and its page is never copied again."""


class NotAnAlgorithm:
    """Has no mark_page_dirty: resolving it must fail clearly."""

    def get_dirty_log(self, slot_id: int) -> list[int]:
        return []


class ForgetsToUnlock(XchgDirtyLog):
    """Returns from GET still holding mmu_lock: the next fault deadlocks."""

    name = "forgets-to-unlock"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        words = super().get_dirty_log(slot_id)
        if self.kvm.mmu_lock.holder() is None:
            self.kvm.mmu_lock.acquire(HARVESTER)  # BUG: never released
        return words


class CrashesInWriter(XchgDirtyLog):
    """A writer dies abruptly (SIGKILL in a process, an exception in a
    thread) on its first dirty mark."""

    name = "crashes-in-writer"

    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:
        import os
        import signal
        import threading

        # A writer process runs its vCPU on its main thread; a writer thread
        # never does.
        if threading.current_thread() is threading.main_thread():
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("writer crashed on purpose")


class SpinsWithoutYield(XchgDirtyLog):
    """Waits for a bit that never comes, polling without a yield."""

    name = "spins-without-yield"

    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:
        slot = self._slot_of(gfn)
        bitmap = self.kvm.dirty_bitmap(slot.id)
        while not bitmap.load(slot.nwords):  # BUG: nobody ever sets it
            pass


class RaisesInConstructor(XchgDirtyLog):
    """The constructor raises: a failure of the code under test, reported
    like any other (the table, the verdict, exit 1), never a traceback."""

    breaks = "xchg"  # usable as a mutant: --mutant tests.broken_algorithms:RaisesInConstructor
    name = "raises-in-constructor"

    def __init__(self, kvm: object) -> None:
        super().__init__(kvm)  # type: ignore[arg-type]
        _helper_that_fails("constructor")


class RaisesInSharedWords(XchgDirtyLog):
    """``shared_words`` raises."""

    name = "raises-in-shared-words"

    @classmethod
    def shared_words(cls, memslots: object) -> dict[str, int]:
        _helper_that_fails("shared_words")
        return {}


class RaisesInEnable(XchgDirtyLog):
    """``enable_dirty_logging`` raises."""

    name = "raises-in-enable"

    def enable_dirty_logging(self, slot: object) -> None:
        _helper_that_fails("enable_dirty_logging")


def _helper_that_fails(where: str) -> None:
    raise ValueError(f"broken on purpose in {where}")


class HangsInGet(XchgDirtyLog):
    """GET loops forever without touching shared state (after the first
    round): the free-running watchdog must end the run with its stack."""

    breaks = "xchg"  # usable as a mutant: --mutant tests.broken_algorithms:HangsInGet
    name = "hangs-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        spins = 0
        while True:  # BUG: waits for nothing, touches no shared word
            spins += 1


class SpinsInGet(XchgDirtyLog):
    """GET spins forever on ``cpu_relax()`` (harness code, called in a
    loop): the watchdog must see that the call never returns."""

    breaks = "xchg"
    name = "spins-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        from concurrent_dirty import cpu_relax

        while True:  # BUG: spins for nothing
            cpu_relax()


class HangsForGoodInGet(XchgDirtyLog):
    """GET loops forever and swallows every exception, the watchdog's
    asynchronous HangError too: the run must be abandoned, cleanly."""

    breaks = "xchg"  # usable as a mutant: a hang that ends a zoo run for good
    name = "hangs-for-good-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        while True:
            try:
                while True:
                    pass
            except BaseException:  # BUG: nothing unwinds it
                pass


class HangsInMark(XchgDirtyLog):
    """A writer loops forever in mark_page_dirty without touching shared
    state (a thread or a process)."""

    breaks = "xchg"  # usable as a mutant: --mutant tests.broken_algorithms:HangsInMark
    name = "hangs-in-mark"

    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:
        spins = 0
        while True:  # BUG
            spins += 1


class SpinsOnWordsInGet(XchgDirtyLog):
    """GET spins forever on a shared word that never changes, with a switch
    point at every load (harness code, called in a loop): a call into the
    algorithm that never returns is a hang, whatever it calls meanwhile."""

    breaks = "xchg"
    name = "spins-on-words-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        bitmap = self.kvm.dirty_bitmap(slot_id)
        while bitmap.load(0) != -1:  # BUG: waits for a value no word ever holds
            pass
        return []


class SleepsInGet(XchgDirtyLog):
    """GET sleeps in a loop forever (a real sleep, not a modelled wait)."""

    breaks = "xchg"
    name = "sleeps-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        import time

        while True:  # BUG
            time.sleep(0.01)


class BlocksForeverInGet(XchgDirtyLog):
    """GET blocks in C for good (a real OS lock taken twice): the watchdog's
    asynchronous exception can never be raised in it."""

    breaks = "xchg"
    name = "blocks-forever-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        import threading

        lock = threading.Lock()
        lock.acquire()
        lock.acquire()  # BUG: never returns
        return []


class LoopsOverTheLockInGet(XchgDirtyLog):
    """GET takes and releases mmu_lock forever: every wait ends at once, so
    no lock timeout fires; the watchdog must see the call never return."""

    breaks = "xchg"
    name = "loops-over-the-lock-in-get"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        from concurrent_dirty import HARVESTER

        lock = self.kvm.mmu_lock
        while True:  # BUG: waits for nothing, forever
            lock.acquire(HARVESTER)
            lock.release(HARVESTER)


class SpinsOnCpuRelaxInMark(XchgDirtyLog):
    """A writer's mark_page_dirty spins forever on ``cpu_relax()``."""

    breaks = "xchg"
    name = "spins-on-cpu-relax-in-mark"

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *, context: object = None) -> None:
        from concurrent_dirty import cpu_relax

        while True:  # BUG
            cpu_relax()


class SlowHarvestUnderLock(XchgDirtyLog):
    """Correct, but slow: its first GET holds mmu_lock while it waits (a
    modelled wait, as for a slow partner) ``HOLD`` seconds before
    harvesting, so the writers' faults wait that long on the lock. Neither
    is a hang: time in a modelled wait does not count towards the watchdog."""

    name = "slow-harvest-under-lock"
    HOLD = 2.5

    def get_dirty_log(self, slot_id: int) -> list[int]:
        import time

        from concurrent_dirty._core.switch import Op, wait_until

        kvm = self.kvm
        if _SLOW_HELD.get(id(kvm.arena)):  # once per cell (the harvester's arena)
            return super().get_dirty_log(slot_id)
        _SLOW_HELD[id(kvm.arena)] = True
        until = time.monotonic() + self.HOLD
        with kvm.mmu_lock.held(HARVESTER):
            wait_until(lambda: time.monotonic() >= until, lambda: "the slow partner", Op.WAIT,
                       "slow", timeout=kvm.lock_timeout, on_wait=kvm._watch,
                       waiter="the harvester")
        return super().get_dirty_log(slot_id)


_SLOW_HELD: dict[int, bool] = {}


class SlowClears(ManualDirtyLog):
    """Correct, but each KVM_CLEAR_DIRTY_LOG takes ``DELAY`` seconds (a
    sleep in the code under test): with one word per CLEAR, a harvest round
    makes many such calls, far longer together than the watchdog, but each
    call returns well within it. Not a hang."""

    name = "slow-clears"
    DELAY = 0.05

    def clear_dirty_log(self, slot_id: int, first_page: int, mask: Sequence[int],
                        num_pages: int | None = None) -> None:
        import time

        time.sleep(self.DELAY)
        super().clear_dirty_log(slot_id, first_page, mask, num_pages)
