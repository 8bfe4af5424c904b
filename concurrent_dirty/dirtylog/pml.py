"""``xchg-pml``: the seed harvest over hardware Dirty bits and PML.

Intel EPT accessed/dirty bits with Page Modification Logging (KVM's PML
support, 2015; the TDP MMU's ba3a6120a4e7, 2022, "Use atomic XCHG to write
TDP MMU SPTEs with volatile bits"). SPTEs stay writable while logging; the
CPU sets an SPTE's Dirty bit itself, atomically, on its first write through
a translation and appends the gfn to its vCPU's 512-entry PML buffer, which
KVM drains into the bitmap at VM exits. The harvest:

1. ``kvm_arch_sync_dirty_log``: kick every running vCPU and wait until each
   has drained its buffer (``kvm.sync_dirty_log``);
2. under ``mmu_lock``, ``xchg`` each non-zero bitmap word, and for each of
   its pages clear the SPTE's Dirty bit (``kvm_mmu_clear_dirty_pt_masked``)
   instead of write-protecting it; an SPTE whose Dirty bit reads clear is
   skipped, one that reads set is rewritten with an atomic exchange of its
   bits (ba3a6120a4e7), never a plain store: the CPU writes SPTEs outside
   ``mmu_lock``;
3. flush remote TLBs if an SPTE's replaced value had Dirty set: a CPU that
   cached a dirty translation would otherwise write through it without
   setting Dirty, so without logging.

Why nothing is lost. A write is logged when it sets a clear Dirty bit, or
made through a translation cached when Dirty was set. (1) brings every
logged gfn of a write made before the harvest into the bitmap. A page whose
bit (2) takes has its Dirty bit cleared atomically: a CPU setting it after
our read finds it set and logs nothing, but then our exchange returns it
set and (3) flushes; a CPU setting it after the exchange logs the page,
which the next harvest reports. After the flush no CPU holds a dirty
translation made before the clear, so its next write sets Dirty and logs.
An SPTE read with Dirty clear is left alone: no CPU holds a dirty
translation of it made since the last flush, and a CPU that sets it now
logs the page for the next round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..model.kvm import DIRTY
from .xchg import ReplacedValueFlush

__all__ = ["PmlXchgDirtyLog"]


class PmlXchgDirtyLog(ReplacedValueFlush):
    """Kick, take the words, clear Dirty bits, flush if any was set. Seam:
    :meth:`_clear_dirty` (one SPTE; whether its replaced value was dirty)."""

    name = "xchg-pml"
    model: ClassVar[Mapping[str, Any]] = {"pml": True}

    def _protect(self, gfn: int) -> bool:
        return self._clear_dirty(gfn)

    def _clear_dirty(self, gfn: int) -> bool:
        kvm = self.kvm
        spte = kvm.read_spte(gfn)
        if not spte & DIRTY:
            return False
        return bool(kvm.exchange_spte(gfn, spte & ~DIRTY) & DIRTY)
