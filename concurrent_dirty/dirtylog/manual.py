"""``manual``: KVM_GET_DIRTY_LOG without clearing, plus KVM_CLEAR_DIRTY_LOG.

KVM 2a31b9db1535 ("kvm: introduce manual dirty log reprotect", Paolo
Bonzini, 2018). With ``KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE``, GET only
copies the live bitmap out. CLEAR takes a range whose first page is
64-aligned and whose length is a multiple of 64 unless it reaches the
slot's end, and a mask; under ``mmu_lock``, for each word,
``m &= atomic_long_fetch_andnot(m, &bitmap[i])`` and only the pages whose
bits were really set are write-protected; then remote TLBs are flushed.
Userspace clears a range just before it copies it, which keeps lock holds
short and avoids re-sending pages written between GET and the copy.

Why nothing is lost. The invariant is the same as ``xchg``'s: a writable
page has its bit set, because faults set the bit before making the page
writable and CLEAR write-protects exactly the bits its ``fetch_andnot``
cleared, both under ``mmu_lock``. A write reported by GET is cleared and
write-protected before userspace copies it, so the copy sees it; a write
after the CLEAR faults and sets the bit again. ``fetch_andnot`` is one
atomic step, so a bit set between GET and CLEAR that was not in GET's
mask survives; and ``m &=`` its result means a bit that some other CLEAR
already took is not write-protected twice (harmless but wasteful).
``INITIALLY_SET`` starts with every bit set and every page writable
(``KVM_DIRTY_LOG_INITIALLY_SET``, 3c9bd4006bfc), which keeps the invariant.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model.atomic import AtomicWords
from ..model.sync import HARVESTER
from ._context import MarkContext
from ._protocol import ALL_MODEL_OPTIONS, DirtyLogAlgorithm, check_clear_range, for_each_set_bit

__all__ = ["ManualDirtyLog"]


class ManualDirtyLog(DirtyLogAlgorithm):
    name = "manual"
    #: Correct with the fast page fault and with PML (its GET kicks the
    #: vCPUs first): the default search draws them.
    varies = ALL_MODEL_OPTIONS
    manual_protect = True

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        slot = self._slot_of(gfn)
        self.kvm.dirty_bitmap(slot.id).set_bit(gfn - slot.base_gfn)

    def get_dirty_log(self, slot_id: int) -> list[int]:
        slot = self.kvm.id_to_memslot(slot_id)
        self._sync_dirty_log()
        bitmap = self.kvm.dirty_bitmap(slot_id)
        # With manual protect KVM copies the live bitmap itself.
        return [bitmap.load(i) for i in range(slot.nwords)]

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        """Clear the bits ``m`` of word ``i``; return those that were set."""
        return m & bitmap.fetch_andnot(i, m)

    def clear_dirty_log(self, slot_id: int, first_page: int, mask: Sequence[int],
                        num_pages: int | None = None) -> None:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        num_pages = check_clear_range(slot, first_page, mask, num_pages)
        bitmap = kvm.dirty_bitmap(slot_id)
        n = slot.nwords
        first_word = first_page // 64
        flush = False
        with kvm.mmu_lock.held(HARVESTER):
            for k in range((num_pages + 63) // 64):
                i = first_word + k
                m = mask[k]
                bitmap.store(n + i, m)  # the user's mask lands in the second half
                if not m:
                    continue
                m = self._clear_word(bitmap, i, m)
                if m:
                    flush = True
                    offset = slot.base_gfn + 64 * i
                    for bit in for_each_set_bit(m):
                        kvm.write_protect(offset + bit)
        if flush:
            kvm.flush_remote_tlbs()
