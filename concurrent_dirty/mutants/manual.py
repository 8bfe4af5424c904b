"""Mutants of manual reprotect (``manual``, 2a31b9db1535)."""

from __future__ import annotations

from collections.abc import Sequence

from .._atomic import AtomicWords
from .._sync import HARVESTER
from ..dirtylog import ManualDirtyLog, check_clear_range, for_each_set_bit

__all__ = ["ManualClearUnsynced", "ManualNonatomicAndnot", "ManualBitwiseClear"]


class _Clear(ManualDirtyLog):
    """KVM_CLEAR_DIRTY_LOG with its clearing step replaceable."""

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        return m & bitmap.fetch_andnot(i, m)

    def clear_dirty_log(self, slot_id: int, first_page: int, mask: Sequence[int],
                        num_pages: int | None = None) -> None:
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        num_pages = check_clear_range(slot, first_page, mask, num_pages)
        bitmap = kvm.dirty_bitmap(slot_id)
        flush = False
        with kvm.mmu_lock.held(HARVESTER):
            for k in range((num_pages + 63) // 64):
                i = first_page // 64 + k
                if not mask[k]:
                    continue
                m = self._clear_word(bitmap, i, mask[k])
                if m:
                    flush = True
                    for bit in for_each_set_bit(m):
                        kvm.write_protect(slot.base_gfn + 64 * i + bit)
        if flush:
            kvm.flush_remote_tlbs()


class ManualClearUnsynced(_Clear):
    """CLEAR clears the whole word, not just the bits GET returned.

    Bits set between GET and CLEAR are cleared and their pages
    write-protected, but userspace only copies what GET reported: those
    writes are never sent. QEMU 9f4bf4baa8b8 ("migration: Fix potential data
    loss with clear dirty log") describes this loss when clearing a range
    wider than the synced bitmap.
    """

    name = "manual-clear-unsynced"

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        return bitmap.fetch_andnot(i, (1 << 64) - 1)


class ManualNonatomicAndnot(_Clear):
    """CLEAR with a load, an and-not and a store instead of
    ``atomic_long_fetch_andnot``: an on-behalf write's bit set in between
    (no ``mmu_lock`` on that path) is erased, and its page never copied."""

    name = "manual-nonatomic-andnot"

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        old = bitmap.load(i)
        bitmap.store(i, old & ~m)
        return m & old


class ManualBitwiseClear(_Clear):
    """Clears bit by bit with ``test_and_clear_bit``.

    Benign: slower, but each step is still atomic and clears exactly the
    bits GET returned."""

    name = "manual-bitwise-clear"

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        got = 0
        for bit in for_each_set_bit(m):
            if bitmap.test_and_clear_bit(64 * i + bit):
                got |= 1 << bit
        return got
