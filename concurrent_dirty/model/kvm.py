"""The shared state of one VM: guest pages with their write protection, the
memslots' double-size dirty bitmaps, ``mmu_lock`` and SRCU.

This is what an algorithm receives. Every field lives in one
:class:`~concurrent_dirty.model.arena.Arena`, so the same object works over a
``bytearray`` (threads) and over a ``SharedMemory`` segment attached by
several processes. An algorithm object is built once per process over its
own ``Kvm``; anything that writers and the harvester share must therefore
live in words (declare them with ``DirtyLogAlgorithm.shared_words``), never
in Python attributes.

A page is one 64-bit word: the low three bits are its SPTE's bits that
dirty logging reads, bits 3-15 the writer (vCPU id + 1, 0 for a page never
written) and bits 16-63 a version that every write increments. The SPTE
bits: bit 0 ``WRITABLE`` (the hardware may write through it), bit 1
``MMU_WRITABLE`` (write-protected only for dirty logging, so the fast page
fault may make it writable again without ``mmu_lock``, c7ba5b48cc8d) and
bit 2 ``DIRTY`` (the hardware Dirty bit that a CPU sets on its first write
through the translation). Keeping the SPTE bits and the value in one word
makes "check writable, then store" a single compare-exchange, as it is in
the MMU: a write can never land on a page that was write-protected after
the check. (In the machine the SPTE and the page are separate memory:
:meth:`Kvm.store_spte`, a plain SPTE store, therefore replaces the SPTE
bits only and keeps the data.)
"""

from __future__ import annotations

from collections.abc import Callable

from .._core import switch as _switch
from .._core.switch import Op, wait_until
from .arena import Arena, Layout
from .atomic import AtomicWords
from .memslot import Memslot, MemslotFlags, MemslotTable
from .sync import Lock, Srcu

__all__ = ["DIRTY", "MMU_WRITABLE", "PML_ENTRIES", "RING_DIRTY", "RING_HARVESTED", "SPTE_BITS",
           "SPTE_MASK", "WRITABLE", "Kvm",
           "make_page", "page_value", "page_version", "page_writer"]

# Enum members are slow to look up on Python 3.11 (about 0.15 us each):
# the hot paths use these.
_OP_SYNCHRONIZE = Op.SYNCHRONIZE
_OP_WAIT = Op.WAIT

WRITABLE = 1
MMU_WRITABLE = 2
DIRTY = 4
#: The SPTE bits at the bottom of a page word, and their mask.
SPTE_BITS = 3
SPTE_MASK = (1 << SPTE_BITS) - 1
_WRITER_BITS = 16 - SPTE_BITS
_WRITER_MASK = (1 << _WRITER_BITS) - 1
MAX_VCPUS = _WRITER_MASK - 1
#: A dirty ring entry's flags: published by KVM (``KVM_DIRTY_GFN_F_DIRTY``),
#: collected by userspace (``KVM_DIRTY_GFN_F_RESET``), 0 once recycled.
RING_DIRTY = 1
RING_HARVESTED = 2
#: Entries of a vCPU's Page Modification Log (one 4 KiB page of GPAs).
PML_ENTRIES = 512


def make_page(version: int, writer: int, spte: int | bool) -> int:
    """A page word: ``spte`` is the SPTE bits (``True`` for ``WRITABLE``)."""
    bits = (WRITABLE if spte else 0) if isinstance(spte, bool) else spte & SPTE_MASK
    return (version << 16) | ((writer + 1) << SPTE_BITS) | bits


def page_value(word: int) -> int:
    """What the guest sees: the word without its SPTE bits."""
    return word >> SPTE_BITS


def page_version(value: int) -> int:
    """The version of a page value (as returned by :func:`page_value`)."""
    return value >> _WRITER_BITS


def page_writer(value: int) -> int:
    """The vCPU that wrote a page value, or -1 for a never-written page."""
    return (value & _WRITER_MASK) - 1


class Kvm:
    """One VM's shared state, as seen by one process."""

    def __init__(self, arena: Arena, memslots: MemslotTable, nvcpus: int,
                 lock_timeout: float, *, tlb: bool = True, fast_page_fault: bool = False,
                 pml: bool = False, pml_entries: int = PML_ENTRIES, dirty_ring: bool = False,
                 ring_entries: int = 8, ring_soft_limit: int | None = None,
                 ring_batch: int = 0) -> None:
        self.arena = arena
        self.memslots = memslots
        self.nvcpus = nvcpus
        self.pages = arena.words("pages")
        self.lock_timeout = lock_timeout
        self.mmu_lock = Lock(arena.words("mmu_lock"), lock_timeout, name="mmu_lock")
        self._locks: dict[tuple[str, int], Lock] = {}
        self._watch: Callable[[], None] | None = None
        self.srcu = Srcu(arena.words("srcu_gp"), arena.words("srcu_readers"), lock_timeout)
        #: The per-vCPU TLB model: vCPUs cache writable translations while in
        #: guest mode; a remote flush waits until every vCPU has left guest
        #: mode once (so none can still use a stale entry) and each drops
        #: its entries when it next enters. None: no TLB, writes always
        #: check the SPTE.
        self.tlb: Srcu | None = Srcu(arena.words("tlb_gen"), arena.words("tlb_state"),
                                     lock_timeout, kind="tlb") if tlb else None
        #: The fast page fault path (c7ba5b48cc8d): a write fault on an
        #: MMU-writable SPTE is fixed by a cmpxchg without ``mmu_lock``.
        self.fast_page_fault = fast_page_fault
        #: Hardware Dirty bits and PML: a CPU sets the SPTE's Dirty bit on
        #: its first write through a translation and logs the gfn in its
        #: vCPU's PML buffer, drained into the bitmap at VM exits.
        self.pml = pml
        #: Entries of each vCPU's PML buffer.
        self.pml_entries = pml_entries
        self._pml_kick = arena.words("pml_kick")
        self._pml_ack = arena.words("pml_ack")
        self._pml_running = arena.words("pml_running")
        self._bitmaps = {s.id: arena.words(f"dirty_bitmap:{s.id}") for s in memslots}
        self._slots_by_id = {s.id: s for s in memslots}
        #: The dirty ring (KVM_CAP_DIRTY_LOG_RING): see :meth:`ring_entry`.
        self.dirty_ring = dirty_ring
        self.ring_entries = ring_entries
        self.ring_soft_limit = ring_entries - 1 if ring_soft_limit is None else ring_soft_limit
        #: Entries the reaper collects per ring per pass (0: all).
        self.ring_batch = ring_batch
        if dirty_ring:
            self.ring = arena.words("ring")
            self.ring_index = arena.words("ring_index")

    @staticmethod
    def layout(memslots: MemslotTable, nvcpus: int, algorithm_words: dict[str, int],
               algorithm_locks: dict[str, int] | None = None, *,
               ring_entries: int = 0) -> Layout:
        """The VM's words; ``ring_entries``: the dirty ring's, that many
        entries per vCPU (0: no ring)."""
        layout = Layout()
        layout.add("pages", memslots.total_gfns)
        layout.add("mmu_lock", 1, quiet=True)  # the Lock facade announces itself
        layout.add("srcu_gp", 1)
        layout.add("srcu_readers", nvcpus)
        layout.add("tlb_gen", 1)
        layout.add("tlb_state", nvcpus)
        layout.add("pml_kick", 1)
        layout.add("pml_ack", nvcpus)
        layout.add("pml_running", nvcpus)
        for slot in memslots:
            layout.add(f"dirty_bitmap:{slot.id}", 2 * slot.nwords)
        if ring_entries:
            layout.add("ring", 2 * ring_entries * nvcpus)
            layout.add("ring_index", 3 * nvcpus)
        for name, nwords in algorithm_words.items():
            layout.add(f"algo:{name}", nwords)
        for name, count in (algorithm_locks or {}).items():
            layout.add(f"lock:{name}", count, quiet=True)
        return layout

    # -- what algorithms use ------------------------------------------------
    def dirty_bitmap(self, slot_id: int) -> AtomicWords:
        """The slot's double-size bitmap: words ``[0, n)`` are the live
        bitmap, ``[n, 2n)`` the second half (n = ``slot.nwords``)."""
        bitmap = self._bitmaps.get(slot_id)
        if bitmap is None:
            self.memslots.id_to_memslot(slot_id)  # raises the clear error
            raise AssertionError("unreachable")
        return bitmap

    def words(self, name: str) -> AtomicWords:
        """The algorithm's own shared words, declared by ``shared_words``."""
        return self.arena.words(f"algo:{name}")

    def watch(self, on_wait: Callable[[], None] | None) -> None:
        """Call ``on_wait`` now and then from every wait (locks, grace
        periods, flushes): a driver checks there that the thread or process
        it waits for is still alive."""
        self._watch = on_wait
        for primitive in (self.mmu_lock, self.srcu, self.tlb, *self._locks.values()):
            if primitive is not None:
                primitive.on_wait = on_wait

    def lock(self, name: str, index: int = 0) -> Lock:
        """Lock ``index`` of the algorithm's own locks called ``name``
        (declared by ``shared_locks``); it blocks and reports deadlocks like
        ``mmu_lock``."""
        key = (name, index)
        lock = self._locks.get(key)
        if lock is None:
            words = self.arena.words(f"lock:{name}")
            if not 0 <= index < words.nwords:
                raise IndexError(f"expected a lock index from 0 to {words.nwords - 1} for "
                                 f"{name!r}, got {index!r}")
            label = name if words.nwords == 1 else f"{name}[{index}]"
            lock = self._locks[key] = Lock(words, self.lock_timeout, index=index, name=label,
                                           on_wait=self._watch)
        return lock

    def id_to_memslot(self, slot_id: int) -> Memslot:
        return self.memslots.id_to_memslot(slot_id)

    def gfn_to_memslot(self, gfn: int) -> Memslot | None:
        return self.memslots.gfn_to_memslot(gfn)

    def write_protect(self, gfn: int) -> bool:
        """Clear the page's writable bit atomically (keeping MMU-writable:
        protected for dirty logging only); return whether it was writable,
        judged from the value it replaced. Callers hold ``mmu_lock``, as
        KVM's ``spte_write_protect`` does; the fast page fault does not, which
        is why this must be one atomic step."""
        return bool(self.pages.fetch_and(gfn, ~WRITABLE) & WRITABLE)

    def make_writable(self, gfn: int) -> None:
        """The slow fault's fix, under ``mmu_lock``: a writable SPTE that the
        fast path may make writable again after a write protection."""
        self.pages.fetch_or(gfn, WRITABLE | MMU_WRITABLE)

    def read_spte(self, gfn: int) -> int:
        """The page word as the MMU reads it (SPTE bits in ``SPTE_MASK``)."""
        return self.pages.load(gfn)

    def store_spte(self, gfn: int, spte: int) -> None:
        """A plain SPTE store: set the SPTE bits to ``spte`` whatever they are
        now (``mmu_spte_update`` without the ``xchg``). The data bits are
        kept: they stand for the page, which a store to the SPTE never
        touches; only the SPTE bits of a concurrent update are lost."""
        pages = self.pages
        old = pages.load(gfn)
        while True:
            ok, old = pages.compare_exchange(gfn, old, (old & ~SPTE_MASK) | (spte & SPTE_MASK))
            if ok:
                return

    def exchange_spte(self, gfn: int, spte: int) -> int:
        """An atomic exchange of the SPTE bits (``mmu_spte_update``'s
        ``xchg`` for an SPTE with volatile bits, ba3a6120a4e7): set them to
        ``spte`` and return the word it replaced, data kept as in
        :meth:`store_spte`."""
        pages = self.pages
        old = pages.load(gfn)
        while True:
            ok, seen = pages.compare_exchange(gfn, old, (old & ~SPTE_MASK) | (spte & SPTE_MASK))
            if ok:
                return old
            old = seen

    def clear_dirty(self, gfn: int) -> bool:
        """Clear the SPTE's Dirty bit with one atomic AND (Linux 6.4's
        ``tdp_mmu_clear_spte_bits``); whether it was set."""
        return bool(self.pages.fetch_and(gfn, ~DIRTY) & DIRTY)

    # -- PML: kicks and acknowledgements -----------------------------------
    def pml_kick_generation(self) -> int:
        """The latest drain the harvester asked for (a vCPU compares it
        with the last one it acknowledged)."""
        return self._pml_kick.load(0)

    def pml_acknowledge(self, vcpu_id: int, generation: int) -> None:
        """A vCPU has drained its PML buffer for ``generation``."""
        self._pml_ack.store(vcpu_id, generation)

    def pml_set_running(self, vcpu_id: int, running: bool) -> None:
        """A vCPU enters the guest (its buffer may fill) or returns to
        userspace (its buffer was drained on the way out)."""
        self._pml_running.store(vcpu_id, int(running))

    def sync_dirty_log(self) -> None:
        """``kvm_arch_sync_dirty_log``: kick every running vCPU out of the
        guest and return once each has drained its PML buffer into the
        bitmap (or is not running: it drained when it last exited). A no-op
        without PML. Call it before reading the bitmap, without
        ``mmu_lock`` (the vCPUs may need it to exit)."""
        if not self.pml:
            return
        generation = self._pml_kick.fetch_add(0, 1) + 1
        running, ack, n = self._pml_running, self._pml_ack, self.nvcpus

        def pending() -> list[int]:
            return [v for v in range(n) if running.peek(v) and ack.peek(v) < generation]

        wait_until(lambda: not pending(),
                   lambda: f"PML drains of vcpus {pending()} (kick {generation})",
                   _OP_WAIT, "pml", 0, timeout=self.lock_timeout, on_wait=self._watch,
                   waiter="harvester")

    # -- the dirty ring -------------------------------------------------------
    def ring_entry(self, vcpu_id: int, index: int) -> tuple[int, int]:
        """Word positions in ``kvm.ring`` of entry ``index`` (any count:
        taken modulo the ring's size) of ``vcpu_id``'s ring: its (slot,
        offset) word and its flags word (``RING_DIRTY``, ``RING_HARVESTED``
        or 0). The entry is written before its flags publish it."""
        at = 2 * (vcpu_id * self.ring_entries + index % self.ring_entries)
        return at, at + 1

    def ring_dirty_index(self, vcpu_id: int) -> int:
        """Position of ``vcpu_id``'s ``dirty_index`` in ``kvm.ring_index``:
        entries pushed since logging began (written by the vCPU only)."""
        return 3 * vcpu_id

    def ring_reset_index(self, vcpu_id: int) -> int:
        """Position of ``reset_index``: entries recycled by
        ``KVM_RESET_DIRTY_RINGS`` (written by the reset only)."""
        return 3 * vcpu_id + 1

    def ring_fetch_index(self, vcpu_id: int) -> int:
        """Position of userspace's fetch index: entries its reaper has
        collected (written by the reaper only)."""
        return 3 * vcpu_id + 2

    def ring_used(self, vcpu_id: int, *, peek: bool = False) -> int:
        """Entries of ``vcpu_id``'s ring pushed and not yet recycled
        (``peek``: without a switch point, for wait conditions)."""
        read = self.ring_index.peek if peek else self.ring_index.load
        return read(3 * vcpu_id) - read(3 * vcpu_id + 1)

    def ring_soft_full(self, vcpu_id: int, *, peek: bool = False) -> bool:
        """``kvm_dirty_ring_soft_full``: the vCPU must exit to userspace
        (KVM_EXIT_DIRTY_RING_FULL) before it enters the guest again."""
        return self.ring_used(vcpu_id, peek=peek) >= self.ring_soft_limit

    @staticmethod
    def ring_pack(slot_id: int, offset: int) -> int:
        """An entry's (slot, offset) word, as ``struct kvm_dirty_gfn`` has."""
        return (slot_id << 32) | offset

    def ring_gfn(self, packed: int) -> int | None:
        """The gfn an entry's word names, or None if it names no page."""
        slot = self._slots_by_id.get(packed >> 32)
        offset = packed & 0xFFFF_FFFF
        return slot.base_gfn + offset if slot is not None and offset < slot.npages else None

    def fast_pf_fix(self, gfn: int, spte: int) -> bool:
        """``fast_pf_fix_direct_spte``: cmpxchg the SPTE from ``spte`` (the
        value the fault read) to writable; whether it succeeded."""
        ok, _ = self.pages.compare_exchange(gfn, spte, spte | WRITABLE)
        return ok

    def flush_remote_tlbs(self) -> None:
        """``kvm_flush_remote_tlbs``: returns once no vCPU can write through
        a translation cached before the call (a real wait on the vCPUs,
        across threads and processes). Call it after write-protecting and
        before anyone reads the pages."""
        _switch.switch_point(_OP_SYNCHRONIZE, "tlb", 0)
        if self.tlb is not None:
            self.tlb.synchronize()

    def read_page(self, gfn: int) -> int:
        """The page's current value, as userspace reads it to migrate."""
        return self.pages.load(gfn) >> SPTE_BITS

    # -- set-up between executions ------------------------------------------
    def reset(self) -> None:
        """Fresh state: call only while no writer runs."""
        for region in self.arena.layout.regions:
            self.arena.zero(region)

    def enable_dirty_logging(self, slot: Memslot) -> None:
        """What ``KVM_SET_USER_MEMORY_REGION`` with ``LOG_DIRTY_PAGES`` leaves
        behind: every page write-protected and no bit set, or, with
        ``INITIALLY_SET``, every bit set and every page writable. With the
        fast page fault, every SPTE is also MMU-writable (mapped before
        logging started)."""
        bitmap = self.dirty_bitmap(slot.id)
        if slot.flags & MemslotFlags.INITIALLY_SET:
            for i in range(slot.nwords):
                bits = min(64, slot.npages - 64 * i)
                bitmap.store(i, (1 << bits) - 1)
            for gfn in range(slot.base_gfn, slot.end_gfn):
                self.make_writable(gfn)
        else:
            for gfn in range(slot.base_gfn, slot.end_gfn):
                self.write_protect(gfn)
        if self.pml:
            # PML logs writes through Dirty bits, not write faults: the
            # SPTEs stay writable with their Dirty bits clear
            # (kvm_mmu_slot_leaf_clear_dirty).
            for gfn in range(slot.base_gfn, slot.end_gfn):
                self.pages.fetch_or(gfn, WRITABLE | MMU_WRITABLE)
                self.pages.fetch_and(gfn, ~DIRTY)
        elif self.fast_page_fault:
            # The guest ran before logging started: every page is mapped,
            # so its SPTE is MMU-writable and the first write fault is fast.
            for gfn in range(slot.base_gfn, slot.end_gfn):
                self.pages.fetch_or(gfn, MMU_WRITABLE)
