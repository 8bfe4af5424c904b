"""A writer: one vCPU running the guest, plus the writes KVM makes for it.

A guest write follows KVM's protocol. If the page's SPTE is writable the
store goes straight through, with no lock and no dirty mark; the check and
the store are one compare-exchange on the page word. Otherwise the write
faults: inside the algorithm's read-side section and under ``mmu_lock``,
mark the page dirty, make it writable, release, and retry the store.

With the fast page fault (``kvm.fast_page_fault``, c7ba5b48cc8d), a fault
on an SPTE that is MMU-writable but not writable is fixed without
``mmu_lock``: read the SPTE, cmpxchg it to writable from the value read,
and only if that succeeded mark the page dirty; then retry the store. An
SPTE that is not MMU-writable (never mapped since the reset) takes the slow
path, which maps it MMU-writable.

An on-behalf write (``kvm_write_guest``) stores the data through the host
mapping, whatever the SPTE says, then marks the page dirty without
``mmu_lock``: data first, bit second.

With hardware Dirty bits and PML (``kvm.pml``), a write that does not hit
a cached dirty translation sets the SPTE's Dirty bit in the same
compare-exchange as the data and, if the bit was clear, appends the gfn to
this vCPU's 512-entry PML buffer (the CPU's own log, read only by this
vCPU's exit handler). The buffer is drained into the bitmap, through
``mark_page_dirty`` with the ``pml`` context, at a VM exit: when the
harvester's kick is seen at the next guest entry, when the buffer is full,
and on the way out to userspace at the end of the writes.

With the dirty ring (``kvm.dirty_ring``), the algorithm's mark pushes an
entry into this vCPU's ring. Before every write (a guest entry, or the
ioctl that writes on the guest's behalf) the vCPU checks the ring's soft
limit (the algorithm's ``ring_soft_full``, ``kvm_dirty_ring_soft_full``);
at the limit it exits with ``KVM_EXIT_DIRTY_RING_FULL`` and runs
userspace's handler, as QEMU does on the vCPU thread: the algorithm's
``reap`` (collect, reset). If that made no room it waits for the reaper
(a modelled block: the harvester reaps every round), and a wait that
never ends is reported as a deadlock naming the vCPU.

A device write (``kind`` 2 in a program) is an on-behalf write made with
no running vCPU (a VM ioctl or a device model's DMA): its mark has no
vCPU, so a ring algorithm must log it in the bitmap beside the rings
(``KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP``).

After each write completes, the writer publishes it for the oracle: the
page's ``completed`` word is raised to the write's value (a version-max
compare-exchange loop). Publishing after the fact makes the oracle see
writes late, never early, so it cannot report a write as missed before the
write was really done.
"""

from __future__ import annotations

from .._core.switch import Op, wait_until
from ..dirtylog import DirtyLogAlgorithm, fast_page_fault
from ..dirtylog._context import FAULT, ON_BEHALF, PML, MarkContext, marker
from ..model.atomic import AtomicWords
from ..model.kvm import (
    DIRTY,
    MMU_WRITABLE,
    SPTE_MASK,
    WRITABLE,
    Kvm,
    make_page,
    page_value,
    page_version,
)

__all__ = ["Vcpu"]

# Enum members are slow to look up on Python 3.11 (about 0.15 us each):
# the hot paths use these.
_OP_WAIT = Op.WAIT


class Vcpu:
    def __init__(self, vcpu_id: int, kvm: Kvm, algorithm: DirtyLogAlgorithm,
                 completed: AtomicWords, *, fixing: AtomicWords | None = None) -> None:
        self.id = vcpu_id
        self.kvm = kvm
        self.algorithm = algorithm
        self.completed = completed
        #: The oracle's count of lockless fixes in flight per page (quiet).
        self.fixing = fixing
        self.writes = 0
        self.faults = 0
        self.fast_faults = 0
        self.on_behalf = 0
        self._mark = marker(algorithm)
        self._fault_context = MarkContext.of(FAULT, vcpu_id)
        self._on_behalf_context = MarkContext.of(ON_BEHALF, vcpu_id)
        self._device_context = MarkContext.of(ON_BEHALF, None)
        self._pml_context = MarkContext.of(PML, vcpu_id)
        #: The PML buffer (gfns, in logging order), the last kick drained,
        #: and whether this vCPU has entered the guest in this execution.
        self.pml_buffer: list[int] = []
        self._pml_acked = 0
        self._pml_running = False
        self.executions = 0
        #: Pages whose writable translation this vCPU caches, and the flush
        #: phase they were cached in.
        self.tlb: set[int] = set()
        self._tlb_phase = -1

    def guest_write(self, gfn: int) -> None:
        kvm, pages, vid = self.kvm, self.kvm.pages, self.id
        if kvm.pml:
            self._pml_entry()
        ring = kvm.dirty_ring
        while True:
            if ring:  # every guest entry, the retry after a fault too
                self._ring_entry()
            if kvm.tlb is not None:
                new = self._write_in_guest_mode(gfn)
                if new is not None:
                    break
            else:
                old = pages.load(gfn)
                if old & WRITABLE:
                    bits = old & SPTE_MASK | (DIRTY if kvm.pml else 0)
                    new = make_page(page_version(page_value(old)) + 1, vid, bits)
                    ok, _ = pages.compare_exchange(gfn, old, new)
                    if ok:
                        if kvm.pml and not old & DIRTY:
                            self.pml_buffer.append(gfn)
                        break
                    continue
            # Write-protected: the page fault path (outside guest mode).
            self.faults += 1
            with self.algorithm.read_side(vid):
                if kvm.fast_page_fault:
                    spte = kvm.read_spte(gfn)
                    if spte & WRITABLE:
                        continue  # fixed meanwhile: retry the write
                    if spte & MMU_WRITABLE:
                        # fast_page_fault: no mmu_lock; whatever the cmpxchg
                        # did, re-enter the guest and retry (RET_PF_RETRY).
                        self.fast_faults += 1
                        self._fast_fix(gfn, spte)
                        continue
                kvm.mmu_lock.acquire(vid)
                try:
                    self._mark(gfn, vid, self._fault_context)
                    kvm.make_writable(gfn)
                finally:
                    kvm.mmu_lock.release(vid)
        self.writes += 1
        self._publish(gfn, page_value(new))
        if len(self.pml_buffer) >= self.kvm.pml_entries:
            self.drain_pml(full=True)  # the PML-full VM exit

    # -- the dirty ring ---------------------------------------------------------
    def _ring_entry(self) -> None:
        """Before a guest entry: at the soft limit, exit to userspace
        (KVM_EXIT_DIRTY_RING_FULL), whose handler reaps; if that made no
        room, wait for the reaper."""
        kvm, vid, algorithm = self.kvm, self.id, self.algorithm
        soft_full = getattr(algorithm, "ring_soft_full", None) or kvm.ring_soft_full
        while soft_full(vid):
            # The harness's progress check, not the code under test's: peek.
            used = kvm.ring_used(vid, peek=True)
            algorithm.reap(vid)  # type: ignore[attr-defined]
            if kvm.ring_used(vid, peek=True) < used:
                continue
            wait_until(lambda: not kvm.ring_soft_full(vid, peek=True),
                       lambda: f"vcpu {vid}'s dirty ring at its soft limit "
                               f"({kvm.ring_used(vid, peek=True)} "
                               f"of {kvm.ring_entries} entries used, limit "
                               f"{kvm.ring_soft_limit}) after "
                               f"KVM_EXIT_DIRTY_RING_FULL: waiting for the reaper to reset it",
                       _OP_WAIT, "ring", vid, timeout=kvm.lock_timeout,
                       on_wait=kvm._watch, waiter=f"vcpu {vid}")

    # -- PML ------------------------------------------------------------------
    def _pml_entry(self) -> None:
        """Guest entry: announce that this vCPU runs, and if the harvester
        kicked it since its last drain, take the exit and drain first."""
        kvm = self.kvm
        if not self._pml_running:
            self._pml_running = True
            kvm.pml_set_running(self.id, True)
        kick = kvm.pml_kick_generation()
        if kick > self._pml_acked:
            self.drain_pml()
            self._pml_acked = kick
            kvm.pml_acknowledge(self.id, kick)

    def drain_pml(self, full: bool = False) -> None:
        """``vmx_flush_pml_buffer`` at a VM exit: every logged gfn goes into
        the dirty log, then the buffer is empty. ``full``: the PML-full
        exit (the algorithm's ``pml_entries_to_mark`` seam sees it)."""
        if not self.pml_buffer:
            return
        seam = getattr(self.algorithm, "pml_entries_to_mark", None)
        entries = list(seam(self.pml_buffer, full)) if seam is not None else self.pml_buffer
        with self.algorithm.read_side(self.id):
            for gfn in entries:
                self._mark(gfn, self.id, self._pml_context)
        self.pml_buffer.clear()

    def exit_to_userspace(self) -> None:
        """The vCPU stops running (its writes are done): the exit drains
        its PML buffer, and the harvester no longer waits for it."""
        if self.kvm.pml and self._pml_running:
            self.drain_pml()
            self._pml_running = False
            self.kvm.pml_set_running(self.id, False)

    def _fast_fix(self, gfn: int, spte: int) -> None:
        """The algorithm's fast fix, bracketed for the oracle: between the
        cmpxchg and the mark, another vCPU may write through the SPTE with
        no bit set yet (KVM has the same window; the mark that follows
        covers the write, so a round that collects meanwhile may miss it and
        the next one reports it). The oracle does not demand such a page
        from a round that starts while the fix is in flight."""
        fixing = self.fixing
        if fixing is not None:
            fixing.fetch_add(gfn, 1)
        try:
            fix = getattr(self.algorithm, "fast_page_fault", None)
            if fix is not None:
                fix(gfn, spte, self.id)
            else:
                fast_page_fault(self.algorithm, gfn, spte, self.id)
        finally:
            if fixing is not None:
                fixing.fetch_add(gfn, -1)

    def new_execution(self, algorithm: DirtyLogAlgorithm | None = None) -> None:
        """Fresh state: the VM's words were zeroed, so cached translations
        from the previous execution must not survive, nor anything the
        algorithm object kept (a fresh one replaces it)."""
        if algorithm is not None:
            self.algorithm = algorithm
            self._mark = marker(algorithm)
        self.tlb.clear()
        self._tlb_phase = -1
        self.pml_buffer.clear()
        self._pml_acked = 0
        self._pml_running = False

    def _write_in_guest_mode(self, gfn: int) -> int | None:
        """One attempt in guest mode; the new page word, or None to fault.

        A cached translation is used without looking at the SPTE, as a TLB
        hit does; that is what makes a missing or late flush lose writes.
        """
        tlb, pages, vid = self.kvm.tlb, self.kvm.pages, self.id
        assert tlb is not None
        tlb.read_lock(vid)
        try:
            phase = tlb.phase()
            if phase != self._tlb_phase:
                self.tlb.clear()  # a flush happened since we cached
                self._tlb_phase = phase
            hit = gfn in self.tlb
            pml = self.kvm.pml
            old = pages.load(gfn)
            while hit or old & WRITABLE:
                # A cached (dirty) translation writes without touching the
                # SPTE's bits; a walk sets Dirty and logs it if it was clear.
                bits = old & SPTE_MASK | (DIRTY if pml and not hit else 0)
                new = make_page(page_version(page_value(old)) + 1, vid, bits)
                seen = old
                ok, old = pages.compare_exchange(gfn, old, new)
                if ok:
                    if pml and not hit and not seen & DIRTY:
                        self.pml_buffer.append(gfn)
                    self.tlb.add(gfn)
                    return new
            return None
        finally:
            tlb.read_unlock(vid)

    def write_on_behalf(self, gfn: int, running: bool = True) -> None:
        """``kvm_write_guest`` for the guest: data first, then the mark.
        ``running``: on this vCPU (an ioctl on it); False: with no running
        vCPU (a device write, whose mark has no vCPU)."""
        pages, vid, algorithm = self.kvm.pages, self.id, self.algorithm
        context = self._on_behalf_context if running else self._device_context
        if running and self.kvm.pml:
            self._pml_entry()
        if running and self.kvm.dirty_ring:
            self._ring_entry()
        bit_first = getattr(algorithm, "mark_before_data", False)
        with algorithm.read_side(vid):
            if bit_first:  # only mutants: the order KVM must never use
                self._mark(gfn, vid, context)
            old = pages.load(gfn)
            while True:
                new = make_page(page_version(page_value(old)) + 1, vid, old & SPTE_MASK)
                ok, old = pages.compare_exchange(gfn, old, new)
                if ok:
                    break
            if not bit_first:
                self._mark(gfn, vid, context)
        self.writes += 1
        self.on_behalf += 1
        self._publish(gfn, page_value(new))

    def _publish(self, gfn: int, value: int) -> None:
        completed = self.completed
        version = page_version(value)
        current = completed.load(gfn)
        while page_version(current) < version:
            ok, current = completed.compare_exchange(gfn, current, value)
            if ok:
                return
