"""Userspace mutants: realistic VMM bugs in the harvest loop, to prove the
oracles bite on the real kernel. Each overrides one seam of a correct
protocol (:mod:`.protocols`); the kernel under them is the same.

Each is a bug a VMM could ship:

* ``kvm-clear-copy-first``: copies a range, then CLEARs it. A write after
  the copy goes straight through (the page is still writable, its bit
  still set) and the CLEAR drops its bit: the destination keeps the copy
  from before the write.
* ``kvm-clear-all-ones``: CLEARs whole words instead of the bits GET
  returned, so a bit set between the GET and the CLEAR is cleared
  without being copied (DOMAIN: "a CLEAR that covers bits userspace has
  not yet synced").
* ``kvm-get-skip-tail``: walks ``npages // 64`` bitmap words, so the last,
  partial word of a slot whose size is not a multiple of 64 pages is
  collected (the kernel cleared it) but never copied.
* ``kvm-get-stale-snapshot``: copies from a snapshot of guest memory taken
  before the GET (a VMM sending from a cached buffer): a write between
  the snapshot and the GET is consumed by the GET and never sent.
* ``kvm-toggle-no-recopy``: after logging is turned off and back on (a
  cancelled migration restarted), trusts the log alone: writes made while
  logging was off are in no log and are never sent.
* ``kvm-ring-copy-before-reset``: reaps, copies, then resets the rings: a
  write between the copy and the RESET goes through the still-writable
  page with no new entry, and the reset re-protects it unseen.
* ``kvm-ring-no-reset``: reaps without ever calling KVM_RESET_DIRTY_RINGS.
  A page's entry is pushed when its write faults, before the store lands;
  only the reset's re-protection makes a store that lands after the copy
  fault (and push) again, so without it such a store is lost (seen within
  a few executions here). Where no such store comes first, the entries are
  never recycled, the rings fill, and the vCPUs wait in DIRTY_RING_FULL
  forever: a deadlock, reported after ``watchdog`` seconds.
"""

from __future__ import annotations

from .guest import PAGE
from .protocols import ClearProtocol, GetProtocol, KernelProtocol, RingProtocol
from .vm import Memslot

__all__ = ["KERNEL_MUTANTS"]


class ClearCopyFirst(ClearProtocol):
    name = "kvm-clear-copy-first"
    description = "copies a range before it CLEARs it (a write in between is lost)"

    def _sync_range(self, slot: Memslot, first_word: int, masks: list[int]) -> None:
        for k, mask in enumerate(masks):
            self._copy_word(slot, first_word + k, mask)
        self._clear(slot, first_word, masks)


class ClearAllOnes(ClearProtocol):
    name = "kvm-clear-all-ones"
    description = "CLEARs whole words, not the bits GET returned (unsynced bits dropped)"

    def _clear(self, slot: Memslot, first_word: int, masks: list[int]) -> None:
        ones = [(1 << 64) - 1] * len(masks)
        last = -(-slot.npages // 64) - 1
        if first_word + len(masks) - 1 == last and slot.npages % 64:
            ones[-1] = (1 << (slot.npages % 64)) - 1  # the kernel refuses bits past the end
        super()._clear(slot, first_word, ones)


class GetSkipTail(GetProtocol):
    name = "kvm-get-skip-tail"
    description = "copies npages // 64 words of each bitmap (a partial last word is dropped)"

    def _get(self, slot: Memslot) -> list[int]:
        return super()._get(slot)[:slot.npages // 64]


class GetStaleSnapshot(GetProtocol):
    name = "kvm-get-stale-snapshot"
    description = "sends pages from a snapshot taken before the GET"

    def harvest(self) -> None:
        self._snapshots = {s.id: s.memory[:] for s in self._logging_slots()}
        super().harvest()

    def _copy(self, slot: Memslot, offset: int) -> None:
        snap = getattr(self, "_snapshots", {}).get(slot.id)
        if snap is None:
            super()._copy(slot, offset)
            return
        self.migration.copy(slot, offset, snap[offset * PAGE:(offset + 1) * PAGE])


class ToggleNoRecopy(GetProtocol):
    name = "kvm-toggle-no-recopy"
    description = "after logging is turned back on, trusts the log (no full recopy)"

    def restart(self, slot: Memslot) -> None:
        pass


class RingCopyBeforeReset(RingProtocol):
    name = "kvm-ring-copy-before-reset"
    description = "copies the reaped pages, then resets the rings"

    def harvest(self) -> None:
        pages = self._reap_all()
        self._copy_collected(pages)
        self._reset()


class RingNoReset(RingProtocol):
    name = "kvm-ring-no-reset"
    description = "reaps without KVM_RESET_DIRTY_RINGS (the rings fill; vCPUs wait forever)"
    found_by_error = ("DeadlockError",)

    def _reset(self) -> None:
        pass


KERNEL_MUTANTS: dict[str, type[KernelProtocol]] = {
    cls.name: cls for cls in (ClearCopyFirst, ClearAllOnes, GetSkipTail, GetStaleSnapshot,
                              ToggleNoRecopy, RingCopyBeforeReset, RingNoReset)}

