"""A user's algorithm with a lock of its own (one per memslot), written
against the public API only: the harness must block, schedule and report
deadlocks on it exactly as on ``mmu_lock``, with no change to the runtime.
Importable as ``tests.user_lock_algorithm:NAME`` so that writer processes
can rebuild it."""

from __future__ import annotations

from concurrent_dirty import HARVESTER, AtomicWords, MemslotTable, XchgDirtyLog


class PerSlotLock(XchgDirtyLog):
    """The seed harvest, with every bitmap update of a slot serialised by
    that slot's own lock as well (always taken after mmu_lock, never
    before): correct, and slower."""

    name = "per-slot-lock"
    _slot = 0

    @classmethod
    def shared_locks(cls, memslots: MemslotTable) -> dict[str, int]:
        return {"slot_lock": len(memslots)}

    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:
        slot = self._slot_of(gfn)
        with self.kvm.lock("slot_lock", slot.id).held(vcpu_id):
            super().mark_page_dirty(gfn, vcpu_id)

    def get_dirty_log(self, slot_id: int) -> list[int]:
        self._slot = slot_id
        return super().get_dirty_log(slot_id)

    def _take_word(self, bitmap: AtomicWords, i: int) -> int:
        with self.kvm.lock("slot_lock", self._slot).held(HARVESTER):
            return super()._take_word(bitmap, i)


class SlotLockInversion(PerSlotLock):
    """Takes the slot lock *before* mmu_lock in GET, while a fault holds
    mmu_lock and then takes the slot lock in mark_page_dirty: an ABBA
    deadlock."""

    name = "slot-lock-inversion"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        with self.kvm.lock("slot_lock", slot_id).held(HARVESTER):
            return XchgDirtyLog.get_dirty_log(self, slot_id)

    def _take_word(self, bitmap: AtomicWords, i: int) -> int:
        return XchgDirtyLog._take_word(self, bitmap, i)
