"""Mutants of the dirty ring (``ring``): the publication order of an
entry, the reaper's order of reset and copy, writes with no vCPU, the soft
limit, and what a reset may recycle."""

from __future__ import annotations

from ..dirtylog.ring import DirtyRingLog
from ..model.kvm import RING_DIRTY

__all__ = ["RingAllToBitmap", "RingCopyBeforeReset", "RingGfnBeforeFlags", "RingIgnoreSoftLimit",
           "RingNoBitmap", "RingResetEachRing", "RingResetUnharvested"]


class RingGfnBeforeFlags(DirtyRingLog):
    """The reaper reads an entry's (slot, offset) word before its flags
    (no acquire order between them).

    The entry the vCPU is pushing still holds the word of its last lap (or
    zero, slot 0 page 0, on its first). The reaper reads that stale word;
    the vCPU writes page P's word and publishes DIRTY; the reaper reads
    DIRTY and collects the stale page, marking the entry HARVESTED. The
    reset (which reads the word again) re-protects P and recycles the
    entry, but userspace's bitmap got the stale page instead of P: P's
    write is never copied, and its next write faults into a new entry only
    if there is one."""

    name = "ring-gfn-before-flags"

    def _read_entry(self, entry: int, flags: int) -> int | None:
        ring = self.kvm.ring
        packed = ring.load(entry)  # BUG: read before the flags publish it
        if ring.load(flags) != RING_DIRTY:
            return None
        return packed


class RingCopyBeforeReset(DirtyRingLog):
    """The migration thread's sync collects and hands the pages over for
    copying, and resets the rings only at its next sync.

    Page P's entry is collected and P is copied while P is still writable
    (its re-protection waits for the next reset). The vCPU writes P again
    through its writable SPTE: no fault, no entry. The next sync's reset
    re-protects P, but that write is in no entry and no bitmap: the
    destination keeps the copy made before it."""

    name = "ring-copy-before-reset"

    def _sync_reap(self) -> None:
        self._reset()  # BUG: the previous sync's entries, after their copy
        for vcpu in range(self.kvm.nvcpus):
            self._collect(vcpu, self.kvm.ring_entries)


class RingNoBitmap(DirtyRingLog):
    """A mark with no running vCPU goes nowhere (a dirty ring without
    ``KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP``).

    A device writes page P (no vCPU runs the write): the data lands, and
    the mark has no ring to push into. No harvest ever reports P: the
    destination keeps P's old contents."""

    name = "ring-no-bitmap"

    def _mark_no_vcpu(self, slot_id: int, offset: int) -> None:
        return  # BUG: dropped


class RingIgnoreSoftLimit(DirtyRingLog):
    """The vCPU enters the guest whatever its ring holds (the soft-full
    request is never raised, or cleared while the ring is still full).

    With the ring full, the next push wraps onto the oldest entry, still
    DIRTY (not yet collected): that entry's page is overwritten by the new
    one and never collected, though its write completed."""

    name = "ring-ignore-soft-limit"

    def ring_soft_full(self, vcpu_id: int) -> bool:
        return False  # BUG


class RingResetUnharvested(DirtyRingLog):
    """``KVM_RESET_DIRTY_RINGS`` recycles every pushed entry up to
    ``dirty_index``, harvested or not.

    A vCPU pushes page P's entry after the reaper's collection pass and
    before its reset. The reset re-protects P and recycles the entry,
    which no reaper has read: P's write is never copied."""

    name = "ring-reset-unharvested"

    def _recyclable(self, vcpu: int, index: int, flags: int) -> bool:
        # BUG: DIRTY entries too, not only HARVESTED: all up to dirty_index.
        return index < self.kvm.ring_index.load(self.kvm.ring_dirty_index(vcpu))


class RingAllToBitmap(DirtyRingLog):
    """Benign: every on-behalf mark goes to the bitmap beside the rings,
    even with a vCPU running. The bitmap is harvested every round like the
    rings, so nothing is lost (only the ring's ordering is)."""

    name = "ring-all-to-bitmap"

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *, context: object = None) -> None:
        from ..dirtylog._context import FAULT, MarkContext

        if isinstance(context, MarkContext) and context.source != FAULT:
            slot = self._slot_of(gfn)
            self._mark_no_vcpu(slot.id, gfn - slot.base_gfn)
            return
        super().mark_page_dirty(gfn, vcpu_id, context=context)  # type: ignore[arg-type]


class RingResetEachRing(DirtyRingLog):
    """Benign: the reaper resets after each ring's collection rather than
    once after all rings (more KVM_RESET_DIRTY_RINGS calls and flushes;
    every collected page is still re-protected before it is copied)."""

    name = "ring-reset-each-ring"

    def _ring_collected(self, n: int) -> None:
        if n:
            self._reset()

    def _pass_collected(self) -> None:
        return  # every ring was reset as it was collected
