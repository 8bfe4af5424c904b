"""``ring``: the dirty ring (KVM_CAP_DIRTY_LOG_RING, 2020), with the bitmap
beside it for writes made with no running vCPU (..._RING_WITH_BITMAP, 2022),
and userspace's reaper as QEMU runs it (b4420f198dd8).

Kernel side. ``mark_page_dirty`` on a vCPU pushes an entry into that
vCPU's own ring (``kvm_dirty_ring_push``): write the entry's (slot, offset)
word, then publish its flags as DIRTY, then advance ``dirty_index``. A mark
with no running vCPU sets the page's bit in the slot's bitmap instead. A
vCPU checks its ring before every guest entry: at the soft limit it exits
with KVM_EXIT_DIRTY_RING_FULL (the harness's vCPU model does this, asking
:meth:`DirtyRingLog.ring_soft_full`), so the entries reserved above the
limit absorb the write in flight and a push never overwrites.
``KVM_RESET_DIRTY_RINGS`` (:meth:`DirtyRingLog._reset`) walks each ring
from ``reset_index`` while entries are HARVESTED: re-protect the page under
``mmu_lock``, recycle the entry (flags 0), advance ``reset_index``; then
flush remote TLBs if it re-protected anything.

Userspace side, under one reaper lock (QEMU's ``kvm_slots_lock`` around
``kvm_dirty_ring_reap``, taken with the BQL held): collect each ring's
published entries from userspace's fetch index (read an entry's flags
first, and only if they read DIRTY its word; set the page in userspace's
own bitmap; mark the entry HARVESTED), at most ``kvm.ring_batch`` entries
per ring per pass (0: all in one pass) and the ring's size in all, with a
reset after each pass. QEMU reaps on the
vCPU thread at a ring-full exit (:meth:`reap`) and on the migration thread
at every sync (:meth:`get_dirty_log`, which then takes the slot's bits
from userspace's bitmap, still under the lock, and GETs the bitmap of the
writes made with no vCPU).

Why nothing is lost. Invariant: a writable page has an entry pushed since
it was last re-protected that is not yet recycled. A fault pushes before it
makes the page writable, under ``mmu_lock``; an on-behalf write stores its
data, then pushes. A write that completed before a sync is therefore in an
entry that is DIRTY (the sync collects it), or HARVESTED (in userspace's
bitmap, which the sync takes). Every page in userspace's bitmap was
re-protected and flushed before the lock was dropped, so the copy that
follows the sync sees every write made before the re-protection, and a
write after it faults and pushes a new entry. Reading flags before the
word matters: an entry being reused is written, then published, so a word
read before its DIRTY flags may be the stale one of the entry's last lap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from ..model.kvm import RING_DIRTY, RING_HARVESTED
from ..model.memslot import MemslotTable
from ..model.sync import HARVESTER
from ._context import MarkContext
from .xchg import XchgDirtyLog

__all__ = ["DirtyRingLog"]


class DirtyRingLog(XchgDirtyLog):
    """Per-vCPU rings, a bitmap for no-vCPU writes, a reaper. Seams:
    :meth:`_push`, :meth:`_read_entry` (one entry, for the reaper),
    :meth:`_recyclable` (one entry, for the reset), :meth:`_collect` (one
    ring), :meth:`_reset` (every ring), :meth:`_sync` (the migration
    thread's reap and take), :meth:`_sync_reap` (its reap),
    :meth:`_mark_no_vcpu` and :meth:`ring_soft_full`. Its GET of the no-vCPU
    bitmap is ``xchg``'s."""

    name = "ring"
    model: ClassVar[Mapping[str, Any]] = {"dirty_ring": True}
    #: The program space varies the fast page fault for the ring (its marks
    #: are pushes like any other); PML is refused with the ring.
    varies: ClassVar[frozenset[str]] = frozenset({"fast_page_fault"})
    #: Who runs the reaper now (the vCPU at its ring-full exit, or the
    #: harvester): the holder of the locks it takes.
    _who = HARVESTER

    @classmethod
    def shared_words(cls, memslots: MemslotTable) -> dict[str, int]:
        # Userspace's own dirty bitmap (QEMU's per-RAMBlock bitmap), which
        # reaps on any thread fill and the migration thread takes.
        return {f"collected:{slot.id}": slot.nwords for slot in memslots}

    @classmethod
    def shared_locks(cls, memslots: MemslotTable) -> dict[str, int]:
        return {"reaper": 1}

    # -- kernel: the push and the soft limit ---------------------------------
    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        slot = self._slot_of(gfn)
        vcpu = vcpu_id if context is None else context.vcpu
        if vcpu is None:
            self._mark_no_vcpu(slot.id, gfn - slot.base_gfn)
        else:
            self._push(vcpu, slot.id, gfn - slot.base_gfn)

    def _mark_no_vcpu(self, slot_id: int, offset: int) -> None:
        """A mark with no running vCPU: the bitmap beside the rings."""
        self.kvm.dirty_bitmap(slot_id).set_bit(offset)

    def _push(self, vcpu: int, slot_id: int, offset: int) -> None:
        """``kvm_dirty_ring_push``: the entry, then its flags, then the
        index (only ``vcpu`` pushes into its ring)."""
        kvm = self.kvm
        at = kvm.ring_dirty_index(vcpu)
        index = kvm.ring_index.load(at)
        entry, flags = kvm.ring_entry(vcpu, index)
        kvm.ring.store(entry, kvm.ring_pack(slot_id, offset))
        kvm.ring.store(flags, RING_DIRTY)
        kvm.ring_index.store(at, index + 1)

    def ring_soft_full(self, vcpu_id: int) -> bool:
        """Whether ``vcpu_id`` must exit before it enters the guest
        (``kvm_dirty_ring_check_request``)."""
        return self.kvm.ring_soft_full(vcpu_id)

    # -- userspace: the reaper -----------------------------------------------
    def reap(self, vcpu_id: int | None = None) -> int:
        """``kvm_dirty_ring_reap`` on the calling thread (a vCPU at its
        ring-full exit, or None for the migration thread): the entries
        collected."""
        with self._reaper(HARVESTER if vcpu_id is None else vcpu_id):
            return self._reap_locked()

    @contextlib.contextmanager
    def _reaper(self, who: int) -> Iterator[None]:
        """The reaper lock, held by ``who`` (also the holder of the
        ``mmu_lock`` its resets take)."""
        self._who = who
        with self.kvm.lock("reaper").held(who):
            yield

    def _reap_locked(self) -> int:
        """``kvm_dirty_ring_reap_locked``: collect each ring's published
        entries, at most ``kvm.ring_batch`` per ring between two resets (0:
        all in one pass), and at most the ring's size per ring in all: an
        entry stays HARVESTED until a reset, so a ring holds no more than
        that many published entries when the reap begins, and vCPUs that
        keep pushing cannot hold the reaper in its loop."""
        kvm = self.kvm
        left = [kvm.ring_entries] * kvm.nvcpus
        batch = kvm.ring_batch or kvm.ring_entries
        total = 0
        while True:
            found = 0
            for v in range(kvm.nvcpus):
                n = self._collect(v, min(batch, left[v])) if left[v] else 0
                left[v] -= n
                found += n
                self._ring_collected(n)
            if not found:
                return total
            total += found
            self._pass_collected()

    def _ring_collected(self, n: int) -> None:
        """After one ring's collection (``n`` entries): nothing."""

    def _pass_collected(self) -> None:
        """After a pass over every ring that collected something: reset."""
        self._reset()

    def _collect(self, vcpu: int, most: int) -> int:
        """Collect up to ``most`` published entries of ``vcpu``'s ring, from
        userspace's fetch index, into userspace's bitmap; the number
        collected (``kvm_dirty_ring_reap_one``). Only the flags say whether
        an entry is published: ``dirty_index`` is the kernel's."""
        kvm = self.kvm
        ring, at = kvm.ring, kvm.ring_fetch_index(vcpu)
        fetch = kvm.ring_index.load(at)
        n = 0
        while n < most:
            entry, flags = kvm.ring_entry(vcpu, fetch)
            packed = self._read_entry(entry, flags)
            if packed is None:
                break
            self._collected(packed)
            ring.store(flags, RING_HARVESTED)
            fetch += 1
            n += 1
        if n:
            kvm.ring_index.store(at, fetch)
        return n

    def _read_entry(self, entry: int, flags: int) -> int | None:
        """An entry's word if its flags say it is published (read first:
        acquire), else None."""
        ring = self.kvm.ring
        if ring.load(flags) != RING_DIRTY:
            return None
        return ring.load(entry)

    def _collected(self, packed: int) -> None:
        """Userspace's ``kvm_dirty_ring_mark_page``: an entry naming no page
        is skipped, as QEMU does."""
        if self.kvm.ring_gfn(packed) is not None:
            self.kvm.words(f"collected:{packed >> 32}").set_bit(packed & 0xFFFF_FFFF)

    def _reset(self) -> None:
        """``KVM_RESET_DIRTY_RINGS``: recycle every ring's HARVESTED
        entries from ``reset_index``, re-protecting their pages, then flush."""
        kvm = self.kvm
        ring = kvm.ring
        cleared = False
        for vcpu in range(kvm.nvcpus):
            at = kvm.ring_reset_index(vcpu)
            reset = start = kvm.ring_index.load(at)
            while True:
                entry, flags = kvm.ring_entry(vcpu, reset)
                if not self._recyclable(vcpu, reset, flags):
                    break
                gfn = kvm.ring_gfn(ring.load(entry))
                ring.store(flags, 0)
                reset += 1
                if gfn is not None:
                    self._reprotect(gfn)
                    cleared = True
            if reset != start:
                kvm.ring_index.store(at, reset)
        if cleared:
            kvm.flush_remote_tlbs()

    def _recyclable(self, vcpu: int, index: int, flags: int) -> bool:
        """Whether the reset may recycle entry ``index`` (flags word at
        ``flags``): only a HARVESTED one."""
        return self.kvm.ring.load(flags) == RING_HARVESTED

    def _reprotect(self, gfn: int) -> None:
        """``kvm_reset_dirty_gfn``: write-protect under ``mmu_lock``."""
        with self.kvm.mmu_lock.held(self._who):
            self.kvm.write_protect(gfn)

    # -- the migration thread's sync ------------------------------------------
    def get_dirty_log(self, slot_id: int) -> list[int]:
        """Reap every ring and take the slot's collected bits (under the
        reaper lock), then GET the bitmap of no-vCPU writes."""
        taken = self._sync(slot_id)
        bitmap = super().get_dirty_log(slot_id)
        return [a | b for a, b in zip(taken, bitmap, strict=True)]

    def _sync(self, slot_id: int) -> list[int]:
        """Under the reaper lock: reap (:meth:`_sync_reap`), then take the
        slot's words of userspace's bitmap."""
        nwords = self.kvm.id_to_memslot(slot_id).nwords
        collected = self.kvm.words(f"collected:{slot_id}")
        with self._reaper(HARVESTER):
            self._sync_reap()
            return [collected.exchange(i, 0) if collected.load(i) else 0
                    for i in range(nwords)]

    def _sync_reap(self) -> None:
        """The migration thread's reap: collect and reset, so that every
        collected page is re-protected before the bits are taken."""
        self._reap_locked()
