"""Deliberately broken algorithms the harness must catch.

Importable as ``tests.broken_algorithms:NAME`` from the repository root, so
that writer processes can rebuild them by reference.
"""

from __future__ import annotations

from concurrent_dirty import HARVESTER, XchgDirtyLog, for_each_set_bit


class NonatomicClearXchg(XchgDirtyLog):
    """The seed algorithm with its ``xchg`` split into a load and a store.

    ``mmu_lock`` keeps faults out, but writes KVM makes on the guest's
    behalf set bits without it: one that lands between the load and the
    store is erased, and the page it names is never copied again.
    """

    name = "nonatomic-clear"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        n = slot.nwords
        words = [0] * n
        with kvm.mmu_lock.held(HARVESTER):
            for i in range(n):
                mask = bitmap.load(i)
                if not mask:
                    continue
                bitmap.store(i, 0)  # BUG: a bit set since the load is erased
                words[i] = mask
                for bit in for_each_set_bit(mask):
                    kvm.write_protect(slot.base_gfn + 64 * i + bit)
            kvm.flush_remote_tlbs()
        return words


class NotAnAlgorithm:
    """Has no mark_page_dirty: resolving it must fail clearly."""

    def get_dirty_log(self, slot_id: int) -> list[int]:
        return []
