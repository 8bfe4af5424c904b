"""Mutants of the PML harvest (``xchg-pml``): Dirty bits written by the CPU
outside ``mmu_lock``, and buffers that must be drained before a harvest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..dirtylog.pml import PmlXchgDirtyLog
from ..model.kvm import DIRTY

__all__ = ["PmlAtomicAndClear", "PmlFullDropsLast", "PmlNoDrain", "PmlPlainClearDirty",
           "PmlSmallBuffers"]


class PmlPlainClearDirty(PmlXchgDirtyLog):
    """Clears the Dirty bit with a plain read-modify-write under
    ``mmu_lock``, and judges the flush from what it read: the TDP MMU bug
    that ba3a6120a4e7 fixed with an atomic XCHG.

    Page P's bit was set by an on-behalf write, so the harvester that takes
    it reads P's SPTE with Dirty clear. A vCPU's first write through P sets
    Dirty (logging P in its PML buffer) and caches the dirty translation.
    The harvester's store puts Dirty back to clear and, having read it
    clear, does not flush. The PML entry reaches the bitmap and the next
    round reports P, but finds its Dirty bit clear and skips the flush too;
    the vCPU's next write goes through its cached dirty translation after
    that round's copy, with no Dirty bit to set and nothing logged: lost.
    """

    name = "pml-plain-clear-dirty"

    def _clear_dirty(self, gfn: int) -> bool:
        kvm = self.kvm
        spte = kvm.read_spte(gfn)
        kvm.store_spte(gfn, spte & ~DIRTY)  # BUG: clobbers a Dirty bit set since the read
        return bool(spte & DIRTY)


class PmlNoDrain(PmlXchgDirtyLog):
    """Harvests without kicking running vCPUs to drain their PML buffers
    (no ``kvm_arch_sync_dirty_log``).

    A vCPU's write sets P's Dirty bit and logs P in its buffer, then the
    vCPU keeps running. The harvest reads the bitmap, where P is not yet,
    and reports nothing for it; userspace copies what GET reported, so the
    write that completed before GET is missing from this round (and, if
    the vCPU never exits again before the end, from every round)."""

    name = "pml-no-drain"

    def _sync_dirty_log(self) -> None:
        pass  # BUG: logged gfns stay in the running vCPUs' buffers


class PmlAtomicAndClear(PmlXchgDirtyLog):
    """Clears each Dirty bit with one atomic AND, without reading first
    (Linux 6.4's ``tdp_mmu_clear_spte_bits``).

    Benign: the AND returns the replaced value, so the flush is judged
    from what was really cleared, and a Dirty bit set concurrently is
    either cleared with the flush it needs or set after, logged anew."""

    name = "pml-atomic-and-clear"

    def _clear_dirty(self, gfn: int) -> bool:
        return self.kvm.clear_dirty(gfn)


class PmlFullDropsLast(PmlXchgDirtyLog):
    """The drain of a full PML buffer starts one entry late and drops the
    last gfn logged (an off-by-one on the underflowed PML index).

    A vCPU's write fills its buffer: the CPU sets P's Dirty bit and logs P
    as the last entry, and the PML-full exit drains every entry but that
    one. P's Dirty bit stays set, so the vCPU's later writes to P log
    nothing either, and no harvest ever sees P: its writes are lost. Run
    with two-entry buffers (``model``), so that a small execution fills one.
    """

    name = "pml-full-drops-last"
    model: ClassVar[Mapping[str, Any]] = {"pml": True, "pml_entries": 2}

    def pml_entries_to_mark(self, buffer: Sequence[int], full: bool) -> Sequence[int]:
        return buffer[:-1] if full else buffer  # BUG: the last entry of a full buffer


class PmlSmallBuffers(PmlXchgDirtyLog):
    """``xchg-pml`` with two-entry PML buffers: many PML-full exits.

    Benign: a full buffer is drained whole, like any other."""

    name = "pml-small-buffers"
    model: ClassVar[Mapping[str, Any]] = {"pml": True, "pml_entries": 2}
