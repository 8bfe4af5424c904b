"""The protocol every dirty-log algorithm implements, built-in or user's.

An algorithm is a class built as ``cls(kvm)`` in every process (the
harvester's and each writer's) at the start of every execution, over a
:class:`~concurrent_dirty.Kvm` whose words are shared. State shared between
writers and the harvester must live in words; Python attributes are private
to one process and last one execution. The harness calls:

* ``mark_page_dirty(gfn, vcpu_id, context=...)`` from a vCPU's fault path,
  holding ``mmu_lock``, from the fast page fault and from writes KVM makes
  on the guest's behalf, without it; all inside ``read_side(vcpu_id)``.
  ``context`` (a :class:`~concurrent_dirty.dirtylog._context.MarkContext`)
  says which path, which vCPU, and whether ``mmu_lock`` is held; a method
  with the old signature ``(gfn, vcpu_id)`` is called without it;
* ``get_dirty_log(slot_id)`` from the harvester (``KVM_GET_DIRTY_LOG``): it
  returns the slot's bitmap as a list of ``slot.nwords`` ints; without
  ``manual_protect`` it must also clear the reported bits and write-protect
  their pages, so that the next write to them faults and is logged again;
* ``clear_dirty_log(slot_id, first_page, mask)`` (``KVM_CLEAR_DIRTY_LOG``)
  only when ``manual_protect`` is true: the harvester calls it, word by
  word, with the bits GET returned, just before it copies those pages;
* for an algorithm whose ``model`` turns the dirty ring on: ``reap(vcpu)``
  from a vCPU at its ring-full exit, and ``ring_soft_full(vcpu)`` (if
  defined; else ``kvm.ring_soft_full``) before every guest entry (see
  :mod:`~concurrent_dirty.dirtylog.ring`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import AlgorithmMisuse
from ..model.kvm import Kvm
from ..model.memslot import Memslot, MemslotTable
from ._context import FAST_FAULT, MarkContext, marker

__all__ = ["ALL_MODEL_OPTIONS", "DirtyLogAlgorithm", "check_clear_range", "fast_page_fault",
           "for_each_set_bit"]

#: The model options the default search can vary (see
#: ``DirtyLogAlgorithm.varies``).
ALL_MODEL_OPTIONS: frozenset[str] = frozenset({"fast_page_fault", "pml", "pml_entries"})


def fast_page_fault(algorithm: Any, gfn: int, spte: int, vcpu_id: int) -> bool:
    """KVM's fast page fault fix (c7ba5b48cc8d), without ``mmu_lock``:
    cmpxchg the SPTE from the value the fault read (``spte``) to writable,
    and only if that succeeded mark the page dirty. Marking first, or on a
    failed cmpxchg, reports a page that a concurrent write protection may
    already have harvested. Returns whether this fix made it writable."""
    if not algorithm.kvm.fast_pf_fix(gfn, spte):
        return False
    marker(algorithm)(gfn, vcpu_id, MarkContext.of(FAST_FAULT, vcpu_id))
    return True


def for_each_set_bit(mask: int) -> Iterator[int]:
    """The seed commit's ``__ffs`` loop: yield the lowest set bit and clear
    it, instead of scanning every position (``find_next_bit``)."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def check_clear_range(slot: Memslot, first_page: int, mask: Sequence[int],
                      num_pages: int | None) -> int:
    """Apply ``kvm_clear_dirty_log_protect``'s -EINVAL rules; return the
    number of pages the CLEAR covers."""
    if not isinstance(first_page, int) or first_page < 0 or first_page & 63:
        raise AlgorithmMisuse(f"KVM_CLEAR_DIRTY_LOG on slot {slot.id}: expected first_page to be a "
                         f"non-negative multiple of 64, got {first_page!r}")
    if first_page >= slot.npages:
        raise AlgorithmMisuse(f"KVM_CLEAR_DIRTY_LOG on slot {slot.id}: expected first_page < "
                         f"{slot.npages} (the slot's npages), got {first_page}")
    if num_pages is None:
        num_pages = min(64 * len(mask), slot.npages - first_page)
    if not isinstance(num_pages, int) or num_pages <= 0 \
            or num_pages > slot.npages - first_page:
        raise AlgorithmMisuse(f"KVM_CLEAR_DIRTY_LOG on slot {slot.id}: expected 1 <= num_pages <= "
                         f"{slot.npages - first_page}, got {num_pages!r}")
    if num_pages & 63 and first_page + num_pages != slot.npages:
        raise AlgorithmMisuse(f"KVM_CLEAR_DIRTY_LOG on slot {slot.id}: expected num_pages to be a "
                         f"multiple of 64 unless the range reaches the slot's end "
                         f"({slot.npages}), got {num_pages} from page {first_page}")
    need = (num_pages + 63) // 64
    if len(mask) < need:
        raise AlgorithmMisuse(f"KVM_CLEAR_DIRTY_LOG on slot {slot.id}: mask too small: expected "
                         f"{need} words for {num_pages} pages, got {len(mask)}")
    return num_pages


class DirtyLogAlgorithm:
    """Base class of the dirty-log algorithms; subclass it for your own.

    Class attributes: ``name`` (shown in reports) and ``manual_protect``
    (GET only snapshots; the harvester then calls CLEAR). Override
    ``shared_words`` to get words shared by every process (``kvm.words``),
    and ``read_side`` if writers must announce themselves (SRCU).
    """

    name: ClassVar[str] = ""
    #: GET only snapshots; the harvester then calls CLEAR (and the slots get
    #: ``KVM_MEM_MANUAL_PROTECT``, derived by the harness from this flag).
    manual_protect: ClassVar[bool] = False
    #: For mutants only: an on-behalf write marks the page dirty *before*
    #: storing the data (KVM stores first, then marks).
    mark_before_data: ClassVar[bool] = False
    #: Model options (Scenario fields) this algorithm is written for; the
    #: harness turns them on for it, e.g. ``{"fast_page_fault": True}``.
    model: ClassVar[Mapping[str, Any]] = {}
    #: The model options the default search may draw for this algorithm,
    #: per execution, when neither the user nor ``model`` pins them: any of
    #: ``ALL_MODEL_OPTIONS`` (``fast_page_fault``, ``pml``,
    #: ``pml_entries``). None by default: an algorithm written for the
    #: 2012 model may rightly rely on faults holding ``mmu_lock`` (untrue
    #: with the fast page fault) or read the bitmap without kicking vCPUs
    #: first (:meth:`_sync_dirty_log`, needed with PML). Declare
    #: ``varies = ALL_MODEL_OPTIONS`` once yours handles them; the
    #: built-ins do, and their mutants inherit it.
    varies: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm

    @classmethod
    def shared_words(cls, memslots: MemslotTable) -> dict[str, int]:
        """Names and sizes of the words this algorithm shares between
        processes (``kvm.words(name)``); each is zeroed before every
        execution."""
        return {}

    @classmethod
    def shared_locks(cls, memslots: MemslotTable) -> dict[str, int]:
        """Names and counts of the locks this algorithm owns besides
        ``mmu_lock`` (``kvm.lock(name, i)``), e.g. ``{"slot_lock":
        len(memslots)}``. They block, and report deadlocks, exactly like
        ``mmu_lock`` under every engine."""
        return {}

    def enable_dirty_logging(self, slot: Memslot) -> None:
        """Called once per slot on fresh state, before any writer runs."""
        self.kvm.enable_dirty_logging(slot)

    def read_side(self, vcpu_id: int) -> contextlib.AbstractContextManager[None]:
        """The section a vCPU is in while it can touch the bitmap."""
        return contextlib.nullcontext()

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *,
                        context: MarkContext | None = None) -> None:
        """Mark ``gfn`` dirty. ``context`` says where the mark comes from
        (see :mod:`~concurrent_dirty.dirtylog._context`); a subclass may keep
        the old ``(gfn, vcpu_id)`` signature and is then called without it."""
        raise NotImplementedError(f"{type(self).__name__} must implement mark_page_dirty")

    def get_dirty_log(self, slot_id: int) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} must implement get_dirty_log")

    def clear_dirty_log(self, slot_id: int, first_page: int, mask: Sequence[int],
                        num_pages: int | None = None) -> None:
        raise AlgorithmMisuse(f"expected an algorithm with manual_protect for KVM_CLEAR_DIRTY_LOG, "
                         f"got {type(self).__name__}, which clears in get_dirty_log")

    def _sync_dirty_log(self) -> None:
        """``kvm_arch_sync_dirty_log``, which KVM's generic GET calls first:
        with PML, kick the running vCPUs so their buffers reach the bitmap
        (a no-op, and no switch point, without PML). A seam for mutants."""
        self.kvm.sync_dirty_log()

    def pml_entries_to_mark(self, buffer: Sequence[int], full: bool) -> Sequence[int]:
        """The gfns a PML drain marks dirty (``vmx_flush_pml_buffer``):
        every logged entry, in order, full buffer or not. A seam for
        mutants of the drain."""
        return buffer

    def fast_page_fault(self, gfn: int, spte: int, vcpu_id: int) -> bool:
        """The fast page fault's fix (see :func:`fast_page_fault`); a seam
        for mutants of the fault path."""
        return fast_page_fault(self, gfn, spte, vcpu_id)

    # -- helpers shared by the built-in algorithms ---------------------------
    def _slot_of(self, gfn: int) -> Memslot:
        slot = self.kvm.gfn_to_memslot(gfn)
        if slot is None:
            raise AlgorithmMisuse(f"expected a gfn inside a memslot, got {gfn}")
        return slot
