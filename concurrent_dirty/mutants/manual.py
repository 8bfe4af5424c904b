"""Mutants of manual reprotect (``manual``, 2a31b9db1535)."""

from __future__ import annotations

from ..dirtylog import ManualDirtyLog, for_each_set_bit
from ..model.atomic import AtomicWords

__all__ = ["ManualBitwiseClear", "ManualClearUnsynced", "ManualNonatomicAndnot", "ManualStuckBit"]


class ManualClearUnsynced(ManualDirtyLog):
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


class ManualNonatomicAndnot(ManualDirtyLog):
    """CLEAR with a load, an and-not and a store instead of
    ``atomic_long_fetch_andnot``: an on-behalf write's bit set in between
    (no ``mmu_lock`` on that path) is erased, and its page never copied."""

    name = "manual-nonatomic-andnot"

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        old = bitmap.load(i)
        bitmap.store(i, old & ~m)
        return m & old


class ManualStuckBit(ManualDirtyLog):
    """CLEAR re-protects the pages but never clears their bits.

    No write is lost (a set bit is reported every round, so every write is
    copied), which is why no safety oracle can see it: GET reports the same
    pages round after round with nothing new in them, and the migration
    never converges. The liveness oracle catches it: after the final round,
    with no writer left, the same pages are reported again and again.
    """

    name = "manual-stuck-bit"

    def _clear_word(self, bitmap: AtomicWords, i: int, m: int) -> int:
        return m & bitmap.load(i)  # BUG: reads the bits, clears none


class ManualBitwiseClear(ManualDirtyLog):
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
