"""The destination of a live migration off the real kernel, and the
oracles that prove no dirty bit was lost (the harness's, on real pages).

(a) **end of run**: after every vCPU stopped at its last sync point and a
    final harvest, the destination equals the source, byte for byte, on
    every logged page.
(b) **per round**: before a round starts collecting, the harvester reads
    each vCPU's ``done[]`` array in (unlogged) guest memory: the version of
    the last write that vCPU *completed* on each page. A write appears
    there only after its four stores, so its fault (the dirty bit or the
    ring entry) finished before the round began; after the round's
    copies the destination must hold that version or a later one. The
    guest's TSC stamp alone would not do: it is taken before the store,
    whose fault can finish after the collection started (the "older
    iteration" reports of the 2018 ``dirty_log_test``).
(c) a statistic: pages copied whose bytes had not changed (``spurious``).

A page's version is word 0, bumped with ``lock xadd`` by every write, so
"this write or a later one" is ``dest_version >= needed``.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Iterable
from typing import Any

from ..harness.histogram import LatencyHistogram
from ..harness.oracle import Violation
from .guest import PAGE
from .vm import KvmVm, Memslot

__all__ = ["KernelMigration"]

_HEAD = struct.Struct("<4Q")  # version, vcpu, sequence, tsc
#: Slots of at most this many pages are compared whole at the end.
_WHOLE = 16384


class KernelMigration:
    """Userspace's copy of guest memory and the oracles over it."""

    def __init__(self, slots: list[Memslot], *, label: dict[str, Any], execution: int,
                 rerun: str, tsc_hz: float = 0.0) -> None:
        self.slots = list(slots)
        # Anonymous mappings, not bytearrays: zero pages cost nothing until
        # a copy writes them (a 1 GiB slot's bytearray took seconds here).
        self.dest = {s.id: mmap.mmap(-1, s.npages * PAGE) for s in slots}
        KvmVm.live_mappings += len(self.dest)
        #: Per slot, the pages ever copied (the final check compares them
        #: and every page the guest wrote).
        self.touched: dict[int, set[int]] = {s.id: set() for s in slots}
        self.label = label
        self.execution = execution
        self.rerun = rerun
        self.round_no = 0
        #: When the protocol last sent a page (the watchdog's progress).
        self.last_copy = 0.0
        self.bits = 0
        self.copied = 0
        self.spurious = 0
        self.cleared = 0
        self.reaped = 0
        self.reset = 0
        self.latencies = LatencyHistogram()
        self.violations: list[Violation] = []
        self._reported: set[tuple[int, int]] = set()
        self._round_ms = 0.0
        self._verified: list[int] = [0] * sum(s.npages for s in slots)

    # -- what the protocols call ---------------------------------------------------
    def copy(self, slot: Memslot, offset: int, data: bytes) -> None:
        dest = self.dest[slot.id]
        at = offset * PAGE
        if dest[at:at + PAGE] == data:
            self.spurious += 1
        else:
            dest[at:at + PAGE] = data
        self.touched[slot.id].add(offset)
        self.copied += 1
        self.last_copy = time.monotonic()

    def collected(self, slot: Memslot, bitmap: list[int]) -> None:
        self.bits += sum(m.bit_count() for m in bitmap)

    def collected_pages(self, slot: Memslot, n: int) -> None:
        self.bits += n

    # -- oracle (b) --------------------------------------------------------------
    def begin_round(self, elapsed_ms: float) -> None:
        self.round_no += 1
        self._round_ms = elapsed_ms

    def check_round(self, needed: list[int], writers: list[list[int]]) -> None:
        """``needed[p]``: the newest completed write's version on data page
        ``p`` when the round began; ``writers``: each vCPU's done[] then."""
        # A need already verified stays met: the destination's versions
        # only grow. So only pages whose need changed are looked at.
        verified = self._verified
        changed = [i for i, (a, b) in enumerate(zip(needed, verified, strict=True)) if a != b]
        if not changed:
            return
        first, k = 0, 0
        for slot in self.slots:
            dest = self.dest[slot.id]
            end = first + slot.npages
            while k < len(changed) and changed[k] < end:
                i = changed[k]
                k += 1
                want = needed[i]
                verified[i] = want
                p = i - first
                if _HEAD.unpack_from(dest, p * PAGE)[0] < want:
                    vcpu = max(range(len(writers)), key=lambda v: writers[v][i])
                    self._violation("missed", slot, p, want, vcpu)
            first = end

    # -- oracle (a) ----------------------------------------------------------------
    def final_check(self, written: list[int]) -> None:
        """``written[p]``: non-zero for every data page the guest wrote (its
        done[] arrays once every vCPU stopped). Small slots are compared
        whole; in big ones, the pages written or copied (no other page of
        the source can have changed: the guest writes only its list)."""
        first = 0
        for slot in self.slots:
            dest = self.dest[slot.id]
            if slot.npages <= _WHOLE:
                pages: Iterable[int] = range(slot.npages)
            else:
                pages = sorted(self.touched[slot.id].union(
                    p for p in range(slot.npages) if written[first + p]))
            for p in pages:
                at = p * PAGE
                if dest[at:at + PAGE] != slot.memory[at:at + PAGE]:
                    version, vcpu, _, _ = _HEAD.unpack_from(slot.memory, at)
                    self._violation("final", slot, p, version, vcpu)
            first += slot.npages

    def close(self) -> None:
        for dest in self.dest.values():
            if not dest.closed:
                dest.close()
                KvmVm.live_mappings -= 1

    def _violation(self, kind: str, slot: Memslot, page: int, version: int, vcpu: int) -> None:
        key = (slot.id, page)
        if key in self._reported:
            return
        self._reported.add(key)
        src = _HEAD.unpack_from(slot.memory, page * PAGE)
        dst = _HEAD.unpack_from(self.dest[slot.id], page * PAGE)
        detail = (f"source page: version {src[0]} by vcpu {src[1]} (its write #{src[2]}, TSC "
                  f"{src[3]}); destination: version {dst[0]}")
        if kind == "missed":
            detail += (f"; round {self.round_no} began collecting {self._round_ms:.3f} ms "
                       f"into the execution")
        self.violations.append(Violation(
            kind=kind, execution=self.execution, round=self.round_no, slot=slot.id,
            gfn=(slot.gpa // PAGE) + page, page=page, write_vcpu=vcpu, write_version=version,
            copied_version=dst[0], rerun=self.rerun, detail=detail,
            **self.label))

    def record_latency(self, seconds: float) -> None:
        self.latencies.record(seconds)

