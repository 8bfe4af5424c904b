"""Memslots: the table of guest-physical memory regions (virt/kvm/kvm_main.c).

``KVM_GET_DIRTY_LOG`` names a slot by id (``id_to_memslot``, 28a37544fb02);
a guest write is routed to its slot by gfn (``gfn_to_memslot``). A logging
slot's dirty bitmap has one bit per page, ``npages`` need not be a multiple
of 64, and KVM allocates it twice over: the live first half and a second
half that the harvest fills before copying out (515a01279a18).
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import UsageError

__all__ = ["Memslot", "MemslotFlags", "MemslotTable", "bitmap_words"]


class MemslotFlags(enum.IntFlag):
    """``KVM_MEM_LOG_DIRTY_PAGES`` and the two manual-protect capabilities."""

    NONE = 0
    LOG_DIRTY_PAGES = 1
    #: KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: GET does not clear or protect.
    MANUAL_PROTECT = 2
    #: KVM_DIRTY_LOG_INITIALLY_SET: logging starts with every bit set and
    #: every page writable, instead of every page write-protected.
    INITIALLY_SET = 4


def bitmap_words(npages: int) -> int:
    """Words in one half of a slot's dirty bitmap (``kvm_dirty_bitmap_bytes``)."""
    return (npages + 63) // 64


@dataclass(frozen=True)
class Memslot:
    """One slot: ``npages`` guest pages from ``base_gfn``."""

    id: int
    base_gfn: int
    npages: int
    flags: MemslotFlags = MemslotFlags.LOG_DIRTY_PAGES

    def __post_init__(self) -> None:
        for field, value, low in (("id", self.id, 0), ("base_gfn", self.base_gfn, 0),
                                  ("npages", self.npages, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UsageError(f"expected an int >= {low} for memslot {field}, got {value!r}")
        object.__setattr__(self, "flags", MemslotFlags(self.flags))

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    @property
    def logging(self) -> bool:
        return bool(self.flags & MemslotFlags.LOG_DIRTY_PAGES)

    @property
    def nwords(self) -> int:
        """Words in one half of the dirty bitmap."""
        return bitmap_words(self.npages)

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.end_gfn


class MemslotTable:
    """An immutable set of non-overlapping memslots with unique ids."""

    def __init__(self, slots: Iterable[Memslot]) -> None:
        ordered = sorted(slots, key=lambda s: s.base_gfn)
        if not ordered:
            raise UsageError("expected at least one memslot, got none")
        ids = [s.id for s in ordered]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UsageError(f"expected unique memslot ids, got id {dup} twice")
        for a, b in itertools.pairwise(ordered):
            if b.base_gfn < a.end_gfn:
                raise UsageError(
                    f"expected non-overlapping memslots, got slot {a.id} "
                    f"[{a.base_gfn}, {a.end_gfn}) overlapping slot {b.id} at gfn {b.base_gfn}")
        self._slots = tuple(ordered)
        self._bases = [s.base_gfn for s in ordered]
        self._by_id = {s.id: s for s in ordered}

    @classmethod
    def contiguous(cls, nslots: int, npages: int,
                   flags: MemslotFlags = MemslotFlags.LOG_DIRTY_PAGES) -> MemslotTable:
        """``nslots`` slots of ``npages`` pages each, ids 0.., back to back."""
        if not isinstance(nslots, int) or nslots <= 0:
            raise UsageError(f"expected a positive number of slots, got {nslots!r}")
        if not isinstance(npages, int) or npages <= 0:
            raise UsageError(f"expected a positive number of pages per slot, got {npages!r}")
        return cls(Memslot(i, i * npages, npages, flags) for i in range(nslots))

    def __iter__(self) -> Iterator[Memslot]:
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __repr__(self) -> str:
        return f"MemslotTable({list(self._slots)!r})"

    @property
    def total_gfns(self) -> int:
        """One past the highest gfn of any slot: the size of guest memory."""
        return self._slots[-1].end_gfn

    def id_to_memslot(self, slot_id: int) -> Memslot:
        try:
            return self._by_id[slot_id]
        except (KeyError, TypeError):
            raise UsageError(
                f"expected a memslot id in {sorted(self._by_id)}, got {slot_id!r}") from None

    def gfn_to_memslot(self, gfn: int) -> Memslot | None:
        """The slot holding ``gfn``, or None (like KVM, for unmapped gfns)."""
        i = bisect.bisect_right(self._bases, gfn) - 1
        if i >= 0 and self._slots[i].contains(gfn):
            return self._slots[i]
        return None
