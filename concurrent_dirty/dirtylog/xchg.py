"""``xchg``: get_dirty_log without SRCU, the seed commit.

KVM 60c34612b707 ("KVM: Switch to srcu-less get_dirty_log()", Takuya
Yoshikawa, 2012). Under ``mmu_lock``, for each non-zero word of the live
bitmap: ``mask = xchg(&bitmap[i], 0)``, store ``mask`` in the second half,
write-protect the pages of ``mask`` with the lowest-set-bit loop; flush
remote TLBs; drop the lock; copy the second half out.

Why nothing is lost. Invariant: a writable page has its bit set. A fault
sets the bit and then makes the page writable, under ``mmu_lock``; the
harvest clears bits and write-protects exactly those pages under the same
lock, so no one sees a writable page with a clear bit. A write that goes
straight through a writable page therefore lands before the harvest that
takes its bit has write-protected it, and that harvest's copy (after the
lock) sees the write. A bit set by an on-behalf write after its data store
is either taken by the ``xchg`` (the copy follows, so it sees the data) or
left for the next round. The ``xchg`` is what makes this true: between a
separate load and store, a concurrent ``set_bit`` would be erased.
Skipping words that read zero first is the kernel's optimisation, and safe:
a bit set after that read is simply harvested next round.
"""

from __future__ import annotations

from ..model.atomic import AtomicWords
from ..model.sync import HARVESTER
from ._context import MarkContext
from ._protocol import ALL_MODEL_OPTIONS, DirtyLogAlgorithm, for_each_set_bit

__all__ = ["ReplacedValueFlush", "XchgDirtyLog"]


class XchgDirtyLog(DirtyLogAlgorithm):
    """The seed harvest. Its steps are seams that a variant overrides one at
    a time: :meth:`_take_word` (test and exchange one word),
    :meth:`_write_protect_word` (the ``__ffs`` loop) and :meth:`_flush`
    (under the lock, when anything was dirty)."""

    name = "xchg"
    #: Correct with the fast page fault and with PML (its GET kicks the
    #: vCPUs first): the default search draws them.
    varies = ALL_MODEL_OPTIONS

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        slot = self._slot_of(gfn)
        self.kvm.dirty_bitmap(slot.id).set_bit(gfn - slot.base_gfn)

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        n = slot.nwords
        self._sync_dirty_log()
        is_dirty = False
        with kvm.mmu_lock.held(HARVESTER):
            for i in range(n):
                bitmap.store(n + i, 0)  # memset(dirty_bitmap_buffer, 0, n)
            for i in range(n):
                mask = self._take_word(bitmap, i)
                if not mask:
                    continue
                is_dirty = True
                bitmap.store(n + i, mask)
                self._write_protect_word(slot.base_gfn + 64 * i, mask)
            if is_dirty:
                self._flush()
        return [bitmap.load(n + i) for i in range(n)]  # copy_to_user

    def _take_word(self, bitmap: AtomicWords, i: int) -> int:
        """Skip a word that reads zero (the kernel's optimisation: a bit set
        after the test is harvested next round), else ``xchg`` it with 0."""
        if not bitmap.load(i):
            return 0
        return bitmap.exchange(i, 0)

    def _write_protect_word(self, first_gfn: int, mask: int) -> None:
        kvm = self.kvm
        for bit in for_each_set_bit(mask):
            kvm.write_protect(first_gfn + bit)

    def _flush(self) -> None:
        self.kvm.flush_remote_tlbs()


class ReplacedValueFlush(XchgDirtyLog):
    """The seed harvest where each page's protection is one atomic update of
    its SPTE, and the flush is decided by the values those updates replaced
    (flush only if one of them could still be cached writable or dirty),
    never by an earlier read. Seam: :meth:`_protect` (one SPTE; whether
    the value it replaced needs a flush). The fast page fault and PML
    algorithms are this, with their own ``_protect``."""

    _flush_needed = False

    def get_dirty_log(self, slot_id: int) -> list[int]:
        self._flush_needed = False
        return super().get_dirty_log(slot_id)

    def _write_protect_word(self, first_gfn: int, mask: int) -> None:
        for bit in for_each_set_bit(mask):
            if self._protect(first_gfn + bit):
                self._flush_needed = True

    def _protect(self, gfn: int) -> bool:
        raise NotImplementedError

    def _flush(self) -> None:
        if self._flush_needed:
            self.kvm.flush_remote_tlbs()
