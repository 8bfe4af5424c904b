"""Mutants of the seed algorithm (``xchg``, 60c34612b707)."""

from __future__ import annotations

from ..dirtylog import XchgDirtyLog, for_each_set_bit
from ..model.sync import HARVESTER

__all__ = ["NonatomicClear", "SkipWriteProtect", "NoTlbFlush", "FlushAfterCopy",
           "BitBeforeData", "XchgNoZeroSkip", "XchgFlushAfterUnlock"]


class _Harvest(XchgDirtyLog):
    """The seed harvest with its three steps as switches, for mutants."""

    atomic_clear = True
    write_protect = True
    flush = True

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        n = slot.nwords
        words = [0] * n
        with kvm.mmu_lock.held(HARVESTER):
            for i in range(n):
                if not bitmap.load(i):
                    continue
                if self.atomic_clear:
                    mask = bitmap.exchange(i, 0)
                else:
                    mask = bitmap.load(i)
                    bitmap.store(i, 0)
                words[i] = mask
                if self.write_protect:
                    for bit in for_each_set_bit(mask):
                        kvm.write_protect(slot.base_gfn + 64 * i + bit)
            if self.flush and any(words):
                kvm.flush_remote_tlbs()
        return words


class NonatomicClear(_Harvest):
    """Clears each word with a load and a store instead of one ``xchg``.

    ``mmu_lock`` keeps faults out, but an on-behalf write
    (``kvm_write_guest``) sets its bit without the lock: if it lands between
    the load and the store, the store erases it. The page was written, its
    bit is gone, and no round will copy it: the destination keeps stale data.
    The seed commit's whole point is this ``xchg``.
    """

    name = "nonatomic-clear"
    atomic_clear = False


class SkipWriteProtect(_Harvest):
    """Takes the bits but leaves the pages writable.

    The next write to a harvested page goes straight through its writable
    SPTE, without a fault, so nothing marks it dirty again: every write after
    the copy is lost. (The write protection is what makes writes visible.)
    """

    name = "skip-write-protect"
    write_protect = False


class NoTlbFlush(_Harvest):
    """Write-protects the SPTEs but never flushes remote TLBs.

    A vCPU that cached the writable translation keeps writing through it
    after the harvest: no fault, no dirty bit, and the copy was already
    taken. KVM flushes after write-protecting, under ``mmu_lock`` in the
    seed commit.
    """

    name = "no-tlb-flush"
    flush = False


class FlushAfterCopy(_Harvest):
    """Defers the flush to the next GET, after userspace copied the pages.

    Between the return of GET and the deferred flush, userspace reads the
    pages while a vCPU may still write through a stale translation; those
    writes set no bit, and the late flush does not bring it back.
    """

    name = "flush-after-copy"
    flush = False
    _pending = False

    def get_dirty_log(self, slot_id: int) -> list[int]:
        if self._pending:
            self.kvm.flush_remote_tlbs()  # BUG: the previous copy already ran
        words = super().get_dirty_log(slot_id)
        self._pending = any(words)
        return words


class BitBeforeData(XchgDirtyLog):
    """An on-behalf write that marks the page dirty before storing the data.

    The ``xchg`` harvester does not serialise with ``kvm_write_guest`` (no
    lock): it can take the bit and copy the page between the mark and the
    store, and the data that lands after the copy has no bit left to report
    it. KVM stores the data first, then calls ``mark_page_dirty``.
    """

    name = "bit-before-data"
    mark_before_data = True


class XchgNoZeroSkip(_Harvest):
    """Exchanges every word, even one that reads zero.

    Benign: the seed commit skips zero words with a plain load first; both
    are correct, since a bit set after the test is simply harvested next
    round."""

    name = "xchg-no-zero-skip"

    def get_dirty_log(self, slot_id: int) -> list[int]:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        words = []
        with kvm.mmu_lock.held(HARVESTER):
            for i in range(slot.nwords):
                mask = bitmap.exchange(i, 0)
                words.append(mask)
                for bit in for_each_set_bit(mask):
                    kvm.write_protect(slot.base_gfn + 64 * i + bit)
            if any(words):
                kvm.flush_remote_tlbs()
        return words


class XchgFlushAfterUnlock(_Harvest):
    """Flushes after dropping ``mmu_lock`` instead of under it.

    Benign: the flush still comes before userspace reads a page, which is
    all the ordering needs."""

    name = "xchg-flush-after-unlock"
    flush = False

    def get_dirty_log(self, slot_id: int) -> list[int]:
        words = super().get_dirty_log(slot_id)
        if any(words):
            self.kvm.flush_remote_tlbs()
        return words
