"""Harvest protocols: the userspace half of dirty logging, as QEMU does it,
against the real kernel.

Three protocols, one per kernel interface, each a class whose steps are
seams (``_get``, ``_clear``, ``_sync_range``, ``_copy``, ``_reap``,
``_reap_all``, ``_reset``) so a user's
variant or a mutant overrides one step instead of copying a loop:

* ``kvm-get`` (:class:`GetProtocol`): ``KVM_GET_DIRTY_LOG`` per slot, the
  seed's interface (60c34612b707): the kernel collects, clears and
  write-protects, flushes TLBs, then userspace copies the reported pages.
* ``kvm-clear`` (:class:`ClearProtocol`): manual protect (2a31b9db1535):
  GET only snapshots; just before copying a range, userspace
  ``KVM_CLEAR_DIRTY_LOG``\\ s exactly the bits it will copy (``clear_words``
  words per call, 0 for the whole slot), with or without INITIALLY_SET.
* ``kvm-ring`` (:class:`RingProtocol`): the dirty ring with ACQ_REL
  ordering: reap every vCPU's ring (an entry is ours once its flags read
  DIRTY), mark entries harvested, ``KVM_RESET_DIRTY_RINGS`` (re-protect),
  then copy: resetting before reading contents is what makes a write
  between the two visible again.

x86 only: its loads are acquire and its stores release, so the ring's
flags are read and written with plain accesses (QEMU's
``qatomic_load_acquire``/``store_release`` compile to plain moves there).
"""

from __future__ import annotations

import ctypes
import struct
from typing import TYPE_CHECKING, ClassVar

from . import _abi
from .guest import PAGE

if TYPE_CHECKING:
    from .migration import KernelMigration
    from .program import KernelProgram
    from .vcpu import KvmVcpu
    from .vm import KvmVm, Memslot

__all__ = ["PROTOCOLS", "ClearProtocol", "GetProtocol", "KernelProtocol", "RingProtocol"]


class KernelProtocol:
    """The userspace side of one migration over a :class:`KvmVm`.

    ``interface`` says which kernel interface it drives (``"bitmap"``,
    ``"manual"`` or ``"ring"``); the engine enables it (:meth:`prepare`)
    before any vCPU exists. One object per execution."""

    name: ClassVar[str] = ""
    interface: ClassVar[str] = "bitmap"
    #: One line for the zoo's table.
    description: ClassVar[str] = ""
    #: For a mutant: the errors (exception names) that count as finding
    #: its bug besides a lost bit; any other error is not a detection.
    found_by_error: ClassVar[tuple[str, ...]] = ()

    def __init__(self, vm: KvmVm, program: KernelProgram, migration: KernelMigration) -> None:
        self.vm = vm
        self.program = program
        self.migration = migration
        self.vcpus: list[KvmVcpu] = []
        self._bitmaps: dict[int, ctypes.Array[ctypes.c_char]] = {}

    def prepare(self) -> None:
        """Enable the interface; called before the vCPUs are created."""

    def harvest(self) -> None:
        """One round: collect every logging slot and copy what it reports."""
        raise NotImplementedError

    def final(self) -> None:
        """The last round, with every vCPU stopped."""
        self.harvest()

    def restart(self, slot: Memslot) -> None:
        """Logging was just turned back on for ``slot`` (a cancelled
        migration restarted): what was written while it was off is in no
        log, so the slot is copied whole again, after logging is on."""
        for offset in range(slot.npages):
            self._copy(slot, offset)

    # -- seams -----------------------------------------------------------------
    def _buffer(self, slot: Memslot) -> ctypes.Array[ctypes.c_char]:
        buf = self._bitmaps.get(slot.id)
        if buf is None:
            buf = self._bitmaps[slot.id] = ctypes.create_string_buffer(8 * slot.nwords)
        return buf

    def _get(self, slot: Memslot) -> list[int]:
        """KVM_GET_DIRTY_LOG: the slot's bitmap as ``slot.nwords`` words."""
        buf = self._buffer(slot)
        self.vm.get_dirty_log(slot, buf)
        return memoryview(buf).cast("B").cast("Q").tolist()

    def _copy(self, slot: Memslot, offset: int) -> None:
        """Send one page to the destination (live migration's copy)."""
        self.migration.copy(slot, offset, slot.memory[offset * PAGE:(offset + 1) * PAGE])

    def _copy_word(self, slot: Memslot, word: int, mask: int) -> None:
        while mask:
            low = mask & -mask
            self._copy(slot, 64 * word + low.bit_length() - 1)
            mask ^= low

    def _logging_slots(self) -> list[Memslot]:
        return [s for s in self.vm.slots if s.logging]


class GetProtocol(KernelProtocol):
    name = "kvm-get"
    interface = "bitmap"
    description = "KVM_GET_DIRTY_LOG per slot (collect+clear+protect in the kernel), then copy"

    def harvest(self) -> None:
        for slot in self._logging_slots():
            bitmap = self._get(slot)
            self.migration.collected(slot, bitmap)
            for word, mask in enumerate(bitmap):
                if mask:
                    self._copy_word(slot, word, mask)


class ClearProtocol(KernelProtocol):
    name = "kvm-clear"
    interface = "manual"
    description = ("manual protect: GET snapshots, CLEAR each range (clear_words) just "
                   "before copying it")

    def prepare(self) -> None:
        self.vm.enable_manual_protect(self.program.initially_set)

    def harvest(self) -> None:
        for slot in self._logging_slots():
            bitmap = self._get(slot)
            self.migration.collected(slot, bitmap)
            step = self.program.clear_words or slot.nwords
            for first in range(0, slot.nwords, step):
                masks = bitmap[first:first + step]
                if any(masks):
                    self._sync_range(slot, first, masks)

    def _sync_range(self, slot: Memslot, first_word: int, masks: list[int]) -> None:
        """One range of a round: CLEAR exactly its bits, then copy them
        (clearing first makes a write after the copy fault and set the bit
        again)."""
        self._clear(slot, first_word, masks)
        for k, mask in enumerate(masks):
            if mask:
                self._copy_word(slot, first_word + k, mask)

    def _clear(self, slot: Memslot, first_word: int, masks: list[int]) -> None:
        """KVM_CLEAR_DIRTY_LOG of ``masks`` from word ``first_word``:
        num_pages a multiple of 64 unless the range reaches the slot's end."""
        num_pages = min(64 * len(masks), slot.npages - 64 * first_word)
        buf = ctypes.create_string_buffer(struct.pack(f"<{len(masks)}Q", *masks))
        self.vm.clear_dirty_log(slot, 64 * first_word, num_pages, buf)
        self.migration.cleared += sum(m.bit_count() for m in masks)


class RingProtocol(KernelProtocol):
    name = "kvm-ring"
    interface = "ring"
    description = "dirty ring (ACQ_REL): reap every ring, RESET_DIRTY_RINGS, then copy"

    def __init__(self, vm: KvmVm, program: KernelProgram, migration: KernelMigration) -> None:
        super().__init__(vm, program, migration)
        #: Per vCPU: the next ring index to look at (free-running, as KVM's).
        self.fetch: dict[int, int] = {}

    def prepare(self) -> None:
        self.vm.enable_ring(self.program.ring_entries)

    def harvest(self) -> None:
        pages = self._reap_all()
        self._reset()
        self._copy_collected(pages)

    def _reap_all(self) -> dict[int, set[int]]:
        """Every vCPU's published entries, as offsets by slot id."""
        pages: dict[int, set[int]] = {}
        for vcpu in self.vcpus:
            for slot_id, offset in self._reap(vcpu):
                pages.setdefault(slot_id, set()).add(offset)
        return pages

    def _copy_collected(self, pages: dict[int, set[int]]) -> None:
        by_id = {s.id: s for s in self.vm.slots}
        for slot_id, offsets in sorted(pages.items()):
            slot = by_id.get(slot_id)
            if slot is None:
                continue  # the system slot is never logged; nothing else is here
            self.migration.collected_pages(slot, len(offsets))
            for offset in sorted(offsets):
                self._copy(slot, offset)

    def _reap(self, vcpu: KvmVcpu) -> list[tuple[int, int]]:
        """Collect ``vcpu``'s published entries, marking each harvested.
        The flags are read before the entry (acquire), written after
        (release): plain accesses on x86."""
        ring = vcpu.ring
        assert ring is not None
        entries = len(ring) // _abi.DIRTY_GFN.size
        index = self.fetch.get(vcpu.id, 0)
        out: list[tuple[int, int]] = []
        for _ in range(entries):
            at = (index % entries) * _abi.DIRTY_GFN.size
            flags, slot, offset = _abi.DIRTY_GFN.unpack_from(ring, at)
            if not flags & _abi.KVM_DIRTY_GFN_F_DIRTY:
                break
            out.append((slot & 0xFFFF, offset))
            struct.pack_into("<I", ring, at, _abi.KVM_DIRTY_GFN_F_RESET)
            index += 1
        self.fetch[vcpu.id] = index
        self.migration.reaped += len(out)
        return out

    def _reset(self) -> None:
        self.migration.reset += self.vm.reset_dirty_rings()

    def stall_report(self, vcpu: KvmVcpu) -> str | None:
        """Why ``vcpu`` may wait for room forever although this protocol
        reaps and resets: the kernel published entries away from the next
        index (the ring lost step: more entries were pushed than it holds
        since the last reset), so no reader that follows the ring in order,
        QEMU's included, can collect them. None if the ring is in step."""
        ring = vcpu.ring
        if ring is None:
            return None
        size = _abi.DIRTY_GFN.size
        entries = len(ring) // size
        index = self.fetch.get(vcpu.id, 0)
        flags = [_abi.DIRTY_GFN.unpack_from(ring, i * size)[0] for i in range(entries)]
        published = [i for i, f in enumerate(flags) if f & _abi.KVM_DIRTY_GFN_F_DIRTY]
        at = index % entries
        if not published or flags[at] & _abi.KVM_DIRTY_GFN_F_DIRTY:
            return None
        first = min(published, key=lambda i: (i - at) % entries)
        return (f"vcpu {vcpu.id}'s dirty ring lost step: the next entry (index {index}, "
                f"position {at}) is empty while {len(published)} of its {entries} entries "
                f"are published, the first at position {first}: the kernel pushed entries "
                f"this reader never saw published (more than the ring holds since the last "
                f"KVM_RESET_DIRTY_RINGS would do it: an overflow past the soft limit), and no "
                f"reader that follows the ring in order, QEMU's included, can collect them")

    def final(self) -> None:
        # With every vCPU stopped, one pass reaps everything they pushed.
        self.harvest()


#: The correct protocols, by name.
PROTOCOLS: dict[str, type[KernelProtocol]] = {
    cls.name: cls for cls in (GetProtocol, ClearProtocol, RingProtocol)}
