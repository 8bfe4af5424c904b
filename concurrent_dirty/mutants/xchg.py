"""Mutants of the seed algorithm (``xchg``, 60c34612b707)."""

from __future__ import annotations

from ..dirtylog import XchgDirtyLog
from ..model.atomic import AtomicWords

__all__ = ["NonatomicClear", "SkipWriteProtect", "NoTlbFlush", "FlushAfterCopy",
           "BitBeforeData", "XchgNoZeroSkip", "XchgFlushAfterUnlock"]


class NonatomicClear(XchgDirtyLog):
    """Clears each word with a load and a store instead of one ``xchg``.

    ``mmu_lock`` keeps faults out, but an on-behalf write
    (``kvm_write_guest``) sets its bit without the lock: if it lands between
    the load and the store, the store erases it. The page was written, its
    bit is gone, and no round will copy it: the destination keeps stale data.
    The seed commit's whole point is this ``xchg``.
    """

    name = "nonatomic-clear"

    def _take_word(self, bitmap: AtomicWords, i: int) -> int:
        mask = bitmap.load(i)
        if mask:
            bitmap.store(i, 0)  # BUG: a set_bit between the load and here is erased
        return mask


class SkipWriteProtect(XchgDirtyLog):
    """Takes the bits but leaves the pages writable.

    The next write to a harvested page goes straight through its writable
    SPTE, without a fault, so nothing marks it dirty again: every write after
    the copy is lost. (The write protection is what makes writes visible.)
    """

    name = "skip-write-protect"

    def _write_protect_word(self, first_gfn: int, mask: int) -> None:
        pass  # BUG: the pages stay writable


class NoTlbFlush(XchgDirtyLog):
    """Write-protects the SPTEs but never flushes remote TLBs.

    A vCPU that cached the writable translation keeps writing through it
    after the harvest: no fault, no dirty bit, and the copy was already
    taken. KVM flushes after write-protecting, under ``mmu_lock`` in the
    seed commit.
    """

    name = "no-tlb-flush"

    def _flush(self) -> None:
        pass  # BUG: stale writable translations survive the harvest


class FlushAfterCopy(XchgDirtyLog):
    """Defers the flush to the next GET, after userspace copied the pages.

    Between the return of GET and the deferred flush, userspace reads the
    pages while a vCPU may still write through a stale translation; those
    writes set no bit, and the late flush does not bring it back.
    """

    name = "flush-after-copy"
    _pending = False

    def _flush(self) -> None:
        self._pending = True  # BUG: deferred past the copy

    def get_dirty_log(self, slot_id: int) -> list[int]:
        if self._pending:
            self._pending = False
            self.kvm.flush_remote_tlbs()  # the previous copy already ran
        return super().get_dirty_log(slot_id)


class BitBeforeData(XchgDirtyLog):
    """An on-behalf write that marks the page dirty before storing the data.

    The ``xchg`` harvester does not serialise with ``kvm_write_guest`` (no
    lock): it can take the bit and copy the page between the mark and the
    store, and the data that lands after the copy has no bit left to report
    it. KVM stores the data first, then calls ``mark_page_dirty``.
    """

    name = "bit-before-data"
    mark_before_data = True


class XchgNoZeroSkip(XchgDirtyLog):
    """Exchanges every word, even one that reads zero.

    Benign: the seed commit skips zero words with a plain load first; both
    are correct, since a bit set after the test is simply harvested next
    round."""

    name = "xchg-no-zero-skip"

    def _take_word(self, bitmap: AtomicWords, i: int) -> int:
        return bitmap.exchange(i, 0)


class XchgFlushAfterUnlock(XchgDirtyLog):
    """Flushes after dropping ``mmu_lock`` instead of under it.

    Benign: the flush still comes before userspace reads a page, which is
    all the ordering needs."""

    name = "xchg-flush-after-unlock"
    _pending = False

    def _flush(self) -> None:
        self._pending = True

    def get_dirty_log(self, slot_id: int) -> list[int]:
        words = super().get_dirty_log(slot_id)  # mmu_lock is dropped on return
        if self._pending:
            self._pending = False
            self.kvm.flush_remote_tlbs()
        return words
