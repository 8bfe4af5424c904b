"""A writer: one vCPU running the guest, plus the writes KVM makes for it.

A guest write follows KVM's protocol. If the page's SPTE is writable the
store goes straight through, with no lock and no dirty mark; the check and
the store are one compare-exchange on the page word. Otherwise the write
faults: inside the algorithm's read-side section and under ``mmu_lock``,
mark the page dirty, make it writable, release, and retry the store.

An on-behalf write (``kvm_write_guest``) stores the data through the host
mapping, whatever the SPTE says, then marks the page dirty without
``mmu_lock``: data first, bit second.

After each write completes, the writer publishes it for the oracle: the
page's ``completed`` word is raised to the write's value (a version-max
compare-exchange loop). Publishing after the fact makes the oracle see
writes late, never early, so it cannot report a write as missed before the
write was really done.
"""

from __future__ import annotations

from ..dirtylog import DirtyLogAlgorithm
from ..model.atomic import AtomicWords
from ..model.kvm import WRITABLE, Kvm, make_page, page_version

__all__ = ["Vcpu"]


class Vcpu:
    def __init__(self, vcpu_id: int, kvm: Kvm, algorithm: DirtyLogAlgorithm,
                 completed: AtomicWords) -> None:
        self.id = vcpu_id
        self.kvm = kvm
        self.algorithm = algorithm
        self.completed = completed
        self.writes = 0
        self.faults = 0
        self.on_behalf = 0
        self.executions = 0
        #: Pages whose writable translation this vCPU caches, and the flush
        #: phase they were cached in.
        self.tlb: set[int] = set()
        self._tlb_phase = -1

    def guest_write(self, gfn: int) -> None:
        kvm, pages, vid = self.kvm, self.kvm.pages, self.id
        while True:
            if kvm.tlb is not None:
                new = self._write_in_guest_mode(gfn)
                if new is not None:
                    break
            else:
                old = pages.load(gfn)
                if old & WRITABLE:
                    new = make_page(page_version(old >> 1) + 1, vid, True)
                    ok, _ = pages.compare_exchange(gfn, old, new)
                    if ok:
                        break
                    continue
            # Write-protected: the page fault path (outside guest mode).
            self.faults += 1
            with self.algorithm.read_side(vid):
                kvm.mmu_lock.acquire(vid)
                try:
                    self.algorithm.mark_page_dirty(gfn, vid)
                    kvm.make_writable(gfn)
                finally:
                    kvm.mmu_lock.release(vid)
        self.writes += 1
        self._publish(gfn, new >> 1)

    def new_execution(self, algorithm: DirtyLogAlgorithm | None = None) -> None:
        """Fresh state: the VM's words were zeroed, so cached translations
        from the previous execution must not survive, nor anything the
        algorithm object kept (a fresh one replaces it)."""
        if algorithm is not None:
            self.algorithm = algorithm
        self.tlb.clear()
        self._tlb_phase = -1

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
            old = pages.load(gfn)
            while hit or old & WRITABLE:
                new = make_page(page_version(old >> 1) + 1, vid, bool(old & WRITABLE))
                ok, old = pages.compare_exchange(gfn, old, new)
                if ok:
                    self.tlb.add(gfn)
                    return new
            return None
        finally:
            tlb.read_unlock(vid)

    def write_on_behalf(self, gfn: int) -> None:
        pages, vid, algorithm = self.kvm.pages, self.id, self.algorithm
        bit_first = getattr(algorithm, "mark_before_data", False)
        with algorithm.read_side(vid):
            if bit_first:  # only mutants: the order KVM must never use
                algorithm.mark_page_dirty(gfn, vid)
            old = pages.load(gfn)
            while True:
                new = make_page(page_version(old >> 1) + 1, vid, bool(old & WRITABLE))
                ok, old = pages.compare_exchange(gfn, old, new)
                if ok:
                    break
            if not bit_first:
                algorithm.mark_page_dirty(gfn, vid)
        self.writes += 1
        self.on_behalf += 1
        self._publish(gfn, new >> 1)

    def _publish(self, gfn: int, value: int) -> None:
        completed = self.completed
        version = page_version(value)
        current = completed.load(gfn)
        while page_version(current) < version:
            ok, current = completed.compare_exchange(gfn, current, value)
            if ok:
                return
