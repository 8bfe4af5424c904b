"""A user's own dirty-log algorithm, attacked by the harness.

Harvest bit by bit with ``test_and_clear_bit`` instead of a word ``xchg``:
slower, but each clear is still one atomic step, so nothing is lost.

    concurrent-dirty stress --algorithm examples.bitwise_harvest:BitwiseHarvest
"""

from __future__ import annotations

from concurrent_dirty import HARVESTER, DirtyLogAlgorithm


class BitwiseHarvest(DirtyLogAlgorithm):
    name = "bitwise"

    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:
        slot = self.kvm.gfn_to_memslot(gfn)
        assert slot is not None
        self.kvm.dirty_bitmap(slot.id).set_bit(gfn - slot.base_gfn)

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        words = [0] * slot.nwords
        with kvm.mmu_lock.held(HARVESTER):
            for page in range(slot.npages):
                if bitmap.test_and_clear_bit(page):
                    words[page // 64] |= 1 << (page % 64)
                    kvm.write_protect(slot.base_gfn + page)
            kvm.flush_remote_tlbs()
        return words
