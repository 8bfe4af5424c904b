"""Mutants of the SRCU bitmap swap (``srcu``, b050b015abbe)."""

from __future__ import annotations

import contextlib

from ..dirtylog import SrcuDirtyLog
from ..model.sync import HARVESTER

__all__ = ["SrcuNoGracePeriod", "SrcuReaderOutsideSection", "SrcuProtectBeforeSwap"]


class SrcuNoGracePeriod(SrcuDirtyLog):
    """Publishes the new bitmap and reads the old one without waiting for a
    grace period. A writer that loaded the old pointer just before the swap
    sets its bit in the old half after the harvester copied and zeroed it:
    the bit is lost (``synchronize_srcu_expedited`` exists for this)."""

    name = "srcu-no-grace-period"

    def _grace_period(self) -> None:
        pass  # BUG: readers of the old pointer may still be marking it


class SrcuReaderOutsideSection(SrcuDirtyLog):
    """A writer reads the bitmap pointer *before* entering its read-side
    section. The grace period cannot see a reader that has not entered yet,
    so the harvester copies and zeroes the old half while the writer is
    about to set a bit in it."""

    name = "srcu-reader-outside-section"

    def read_side(self, vcpu_id: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # sections are taken in mark_page_dirty

    # The old two-argument signature, on purpose: the harness sees it and
    # calls it without a context (what user algorithms written before the
    # context existed rely on).
    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:  # type: ignore[override]
        slot = self._slot_of(gfn)
        half = self._live.load(self._index[slot.id])  # BUG: outside the section
        self.kvm.srcu.read_lock(vcpu_id)
        try:
            self.kvm.dirty_bitmap(slot.id).set_bit(half * slot.nwords * 64 + gfn - slot.base_gfn)
        finally:
            self.kvm.srcu.read_unlock(vcpu_id)


class SrcuProtectBeforeSwap(SrcuDirtyLog):
    """Write-protects the slot before the swap, as b050b015abbe ordered it.

    A fault between the write protection and the swap marks the *old*
    bitmap and makes its page writable again; the grace period lets that
    bit reach the copy, but the page stays writable afterwards, so later
    writes to it fault no more and set no bit in the new bitmap. (This
    repository's ``srcu`` write-protects after the grace period instead.)
    """

    name = "srcu-protect-before-swap"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        n = slot.nwords
        index = self._index[slot_id]
        old = self._live.load(index)
        base = old * n
        if not any(bitmap.load(base + i) for i in range(n)):
            return [0] * n
        with kvm.mmu_lock.held(HARVESTER):
            for gfn in range(slot.base_gfn, slot.end_gfn):
                kvm.write_protect(gfn)
            kvm.flush_remote_tlbs()
        self._live.store(index, 1 - old)
        kvm.srcu.synchronize()
        words = [bitmap.load(base + i) for i in range(n)]
        self._zero_half(bitmap, base, words)
        return words
