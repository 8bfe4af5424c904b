"""``srcu``: the bitmap swap under SRCU, the 2009 algorithm.

KVM b050b015abbe ("KVM: use SRCU for dirty log", Marcelo Tosatti, 2009),
with the preallocated second half of 515a01279a18 (2010): the slot's two
halves take turns as the live bitmap, and a per-slot word says which half
is live (the ``rcu_assign_pointer``'d memslot array's bitmap pointer).

Writers read that word and set their bit inside an SRCU read-side section
(``read_side``), which spans the fault's dirty mark and the SPTE it makes
writable, as KVM's vCPU loop holds ``kvm->srcu`` around the whole fault.
The harvester publishes the other, zeroed half, waits for a real grace
period (:class:`~concurrent_dirty.model.sync.Srcu`), write-protects the pages
whose bits the old half holds and flushes TLBs under ``mmu_lock``, copies
the old half out and zeroes it for its next turn.

Why nothing is lost. After the grace period no section that could have read
the old pointer is running, so the old half is final: every bit set in it is
copied, and later marks land in the new half. A page made writable by a
fault has its bit in the half the fault read; that half's harvest
write-protects the page after the fault's section ended, so a write through
the writable page happened before the copy that follows. (The 2009 code
write-protected the slot before the swap; a fault between the two could
mark the old bitmap and leave the page writable after its copy. We order it
after the grace period, as the issue and DOMAIN.md describe.) The cost is
the grace period on every call: the millisecond latencies the seed removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..model.atomic import AtomicWords
from ..model.kvm import Kvm
from ..model.memslot import MemslotTable
from ..model.sync import HARVESTER
from ._context import MarkContext
from ._protocol import ALL_MODEL_OPTIONS, DirtyLogAlgorithm, for_each_set_bit

__all__ = ["SrcuDirtyLog"]


class SrcuDirtyLog(DirtyLogAlgorithm):
    name = "srcu"
    #: Correct with the fast page fault and with PML (its GET kicks the
    #: vCPUs first): the default search draws them.
    varies = ALL_MODEL_OPTIONS

    def __init__(self, kvm: Kvm) -> None:
        super().__init__(kvm)
        self._live = kvm.words("live_half")
        self._index = {slot.id: i for i, slot in enumerate(kvm.memslots)}

    @classmethod
    def shared_words(cls, memslots: MemslotTable) -> dict[str, int]:
        return {"live_half": len(memslots)}

    def read_side(self, vcpu_id: int) -> contextlib.AbstractContextManager[None]:
        return self._section(vcpu_id)

    @contextlib.contextmanager
    def _section(self, vcpu_id: int) -> Iterator[None]:
        srcu = self.kvm.srcu
        srcu.read_lock(vcpu_id)
        try:
            yield
        finally:
            srcu.read_unlock(vcpu_id)

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        slot = self._slot_of(gfn)
        half = self._live.load(self._index[slot.id])  # srcu_dereference
        self.kvm.dirty_bitmap(slot.id).set_bit(half * slot.nwords * 64 + gfn - slot.base_gfn)

    def _grace_period(self) -> None:
        self.kvm.srcu.synchronize()  # synchronize_srcu_expedited

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        n = slot.nwords
        self._sync_dirty_log()
        index = self._index[slot_id]
        old = self._live.load(index)
        self._live.store(index, 1 - old)  # rcu_assign_pointer: the zeroed half
        self._grace_period()
        words = [bitmap.load(old * n + i) for i in range(n)]
        if any(words):
            with kvm.mmu_lock.held(HARVESTER):
                for i, mask in enumerate(words):
                    offset = slot.base_gfn + 64 * i
                    for bit in for_each_set_bit(mask):
                        kvm.write_protect(offset + bit)
                kvm.flush_remote_tlbs()
            self._zero_half(bitmap, old * n, words)
        return words

    @staticmethod
    def _zero_half(bitmap: AtomicWords, base: int, words: list[int]) -> None:
        """Zero the harvested half's non-zero words, ready for its next turn
        (no writer can reach it: the grace period ended)."""
        for i, mask in enumerate(words):
            if mask:
                bitmap.store(base + i, 0)
