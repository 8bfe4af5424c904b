"""Mutants of the fast page fault era (``xchg-fast-pf``, c7ba5b48cc8d): the
rules a lockless SPTE fix imposes on the harvester and on the fix itself."""

from __future__ import annotations

from ..dirtylog import MarkContext, XchgDirtyLog
from ..dirtylog._context import FAST_FAULT, marker
from ..dirtylog.fastpf import FastPfXchgDirtyLog
from ..model.kvm import WRITABLE

__all__ = ["FastPfAlwaysFlush", "FastPfFlushFromRead", "FastPfMarkAfterFailedFix",
           "FastPfMarkBeforeFix", "FastPfPlainWriteProtect"]


class FastPfPlainWriteProtect(FastPfXchgDirtyLog):
    """Write-protects an SPTE with a plain store of a value computed from an
    earlier read, the ``mmu_spte_update`` that c7ba5b48cc8d had to make
    atomic.

    The harvester takes page P's bit (set by an on-behalf write; P's SPTE is
    protected but MMU-writable) and reads P's SPTE: not writable. A vCPU's
    fast fault on P cmpxchg's it to writable, marks P and writes through the
    translation it now caches. The harvester's store puts the old protected
    value back, undoing the fix, and, having replaced (it believes) a
    protected SPTE, does not flush. The next round takes the fix's bit and
    finds P protected, so it does not flush either; the vCPU's next write
    goes through its stale translation after that round's copy, with no
    fault and no bit: lost.
    """

    name = "fast-pf-plain-write-protect"

    def _write_protect(self, gfn: int) -> bool:
        kvm = self.kvm
        spte = kvm.read_spte(gfn)
        kvm.store_spte(gfn, spte & ~WRITABLE)  # BUG: undoes a fix made since the read
        return bool(spte & WRITABLE)


class FastPfFlushFromRead(FastPfXchgDirtyLog):
    """Protects atomically but decides the flush from an earlier read of the
    SPTE, not from the value the atomic step replaced.

    The harvester reads P's SPTE (protected, MMU-writable) to decide; a
    vCPU's fast fault makes it writable, marks P and caches the writable
    translation; the harvester's ``fetch_and`` protects it, but the decision
    was taken on the stale read: no flush. Later rounds find P protected and
    skip the flush too, and a write through the stale translation after the
    last copy that reports P is lost.
    """

    name = "fast-pf-flush-from-read"

    def _write_protect(self, gfn: int) -> bool:
        kvm = self.kvm
        spte = kvm.read_spte(gfn)
        kvm.write_protect(gfn)
        return bool(spte & WRITABLE)  # BUG: not the value fetch_and replaced


class FastPfMarkBeforeFix(FastPfXchgDirtyLog):
    """The fast fix marks the page dirty before its cmpxchg (so even when the
    cmpxchg will fail), not after it succeeded.

    The vCPU reads P's SPTE (protected, MMU-writable) and marks P. The
    harvester takes that bit, finds the SPTE already protected, and copies
    P. The vCPU's cmpxchg from the value it read still succeeds (the
    protection changed nothing), so P is writable with no bit set, and the
    write that follows, already past the copy, is never reported.
    """

    name = "fast-pf-mark-before-fix"

    def fast_page_fault(self, gfn: int, spte: int, vcpu_id: int) -> bool:
        marker(self)(gfn, vcpu_id, MarkContext.of(FAST_FAULT, vcpu_id))  # BUG: too early
        return self.kvm.fast_pf_fix(gfn, spte)


class FastPfMarkAfterFailedFix(FastPfXchgDirtyLog):
    """Marks the page dirty after its cmpxchg, whether or not it succeeded.

    Benign: a failed cmpxchg means the SPTE changed under the fault; the
    extra mark only makes the next round report a page that may not have
    changed (a spurious copy). The order is what matters: the mark follows
    the attempt, so it can only be later than a correct one."""

    name = "fast-pf-mark-after-failed-fix"

    def fast_page_fault(self, gfn: int, spte: int, vcpu_id: int) -> bool:
        ok = self.kvm.fast_pf_fix(gfn, spte)
        marker(self)(gfn, vcpu_id, MarkContext.of(FAST_FAULT, vcpu_id))
        return ok


class FastPfAlwaysFlush(FastPfXchgDirtyLog):
    """Flushes whenever a word had bits, as the seed did, whatever the
    replaced SPTEs were.

    Benign: more flushes than needed, never fewer (it is ``xchg`` run with
    the fast page fault)."""

    name = "fast-pf-always-flush"

    def _flush(self) -> None:
        XchgDirtyLog._flush(self)
