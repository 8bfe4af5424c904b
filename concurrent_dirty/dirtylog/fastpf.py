"""``xchg-fast-pf``: the seed harvest once faults are fixed without
``mmu_lock``.

KVM c7ba5b48cc8d ("KVM: MMU: fast page fault", Xiao Guangrong, 2012). A
write fault on a present SPTE that is write-protected only for dirty logging
(MMU-writable but not writable) is fixed locklessly: the vCPU reads the
SPTE, cmpxchg's it to writable from the value read and, only if that
succeeded, marks the page dirty (:func:`~concurrent_dirty.dirtylog.fast_page_fault`).
The harvest is the seed's (``xchg`` each non-zero word under ``mmu_lock``,
write-protect its pages, copy out), with the two rules the fast path
imposes on it:

* write protection clears the writable bit with one atomic step
  (``spte_write_protect`` through ``mmu_spte_update``'s ``xchg`` of an SPTE
  with volatile bits): a plain store would undo a fix made between its read
  and its write;
* the harvester flushes remote TLBs when an SPTE it protected *was*
  writable, judged from the value the atomic step replaced
  (``flush |= spte_write_protect(...)``), not from an earlier read.

Why nothing is lost. The seed's invariant "a writable page has its bit set"
no longer holds for an instant: the fix makes the SPTE writable, then marks.
What holds instead is "a writable SPTE, or a TLB entry made from one, has
its bit set or a mark on its way from a fix that succeeded", and a vCPU
writes only after its fix returned, so after the mark. A harvest that takes
the bit write-protects the SPTE atomically: if the fix came first, the
protection sees a writable SPTE and flushes; if the protection came first,
the fix's cmpxchg (from the value it read, writable bit clear) only
succeeds against the protected value, and its mark lands in the live bitmap
after the ``xchg``: the next round reports it. A flush is skipped only when
the replaced SPTE was not writable, and then no vCPU holds a writable
translation made after the last flush of that SPTE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .xchg import ReplacedValueFlush

__all__ = ["FastPfXchgDirtyLog"]


class FastPfXchgDirtyLog(ReplacedValueFlush):
    """The seed harvest with atomic write protection and a flush decided by
    the SPTE values it replaced. Seam: :meth:`_write_protect` (one SPTE;
    whether it was writable)."""

    name = "xchg-fast-pf"
    model: ClassVar[Mapping[str, Any]] = {"fast_page_fault": True}

    def _protect(self, gfn: int) -> bool:
        return self._write_protect(gfn)

    def _write_protect(self, gfn: int) -> bool:
        """Protect one SPTE; whether it was writable (``fetch_and``'s old value)."""
        return self.kvm.write_protect(gfn)
