"""Mutants that misread what ``mark_page_dirty`` is told (its
:class:`~concurrent_dirty.dirtylog.MarkContext`)."""

from __future__ import annotations

from ..dirtylog import MarkContext, XchgDirtyLog

__all__ = ["LockTrustingMark", "ContextCheckingMark"]


class LockTrustingMark(XchgDirtyLog):
    """Sets the dirty bit with a plain load, or and store when the context
    says ``mmu_lock`` is held, trusting the lock to exclude other markers.

    The lock excludes the harvester and other slow faults, not the markers
    that run without it: KVM writing guest memory for the guest (and the
    fast page fault, and PML drains). A vCPU's slow fault loads the bitmap
    word under ``mmu_lock``; an on-behalf write sets another bit of the same
    word with its atomic ``set_bit``; the fault's store puts the old word
    back with only its own bit added. The on-behalf write's bit is gone, and
    its page is never copied. This is why ``mark_page_dirty_in_slot`` uses
    the atomic ``set_bit_le`` whatever lock its caller holds.
    """

    name = "lock-trusting-mark"

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        if context is None or not context.mmu_lock:
            super().mark_page_dirty(gfn, vcpu_id, context=context)
            return
        slot = self._slot_of(gfn)
        bitmap = self.kvm.dirty_bitmap(slot.id)
        bit = gfn - slot.base_gfn
        word = bitmap.load(bit // 64)
        bitmap.store(bit // 64, word | 1 << bit % 64)  # BUG: not atomic against set_bit


class ContextCheckingMark(XchgDirtyLog):
    """Checks its context on every call (the source is known, the vCPU is
    the caller's or None for a device write, ``mmu_lock`` is held only on
    the slow fault) and marks atomically.

    Benign: reading the context changes nothing; the mark is the seed's."""

    name = "context-checking-mark"

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        if context is None or context.vcpu not in (vcpu_id, None) \
                or context.mmu_lock != (context.source == "fault"):
            raise AssertionError(f"unexpected mark context {context!r} for vcpu {vcpu_id}")
        super().mark_page_dirty(gfn, vcpu_id, context=context)
