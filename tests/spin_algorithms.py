"""Algorithms that spin-wait on plain loads, without ``cpu_relax()``, for
the controlled engine's spin detection (tests/test_spin.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from concurrent_dirty import HARVESTER, MemslotTable, SrcuDirtyLog

#: Reader words: one per vCPU id (the tests run fewer writers).
READERS = 16


class PlainLoadSrcu(SrcuDirtyLog):
    """A correct hand-written SRCU: the read side stores its phase in its
    own word, the grace period bumps the phase and spins on plain loads of
    every reader's word until none is in an older section. The kernel's
    loop would call ``cpu_relax()``; this one does not, and must pass."""

    name = "plain-load-srcu"

    @classmethod
    def shared_words(cls, memslots: MemslotTable) -> dict[str, int]:
        return {**super().shared_words(memslots), "my_gp": 1, "my_readers": READERS}

    @contextlib.contextmanager
    def _section(self, vcpu_id: int) -> Iterator[None]:
        readers = self.kvm.words("my_readers")
        phase = self.kvm.words("my_gp").load(0)
        readers.store(vcpu_id, (phase << 1) | 1)
        try:
            yield
        finally:
            readers.store(vcpu_id, 0)

    def _grace_period(self) -> None:
        target = self.kvm.words("my_gp").fetch_add(0, 1) + 1
        readers = self.kvm.words("my_readers")
        for r in range(READERS):
            while True:  # spins on a plain load: no cpu_relax()
                value = readers.load(r)
                if not value & 1 or value >> 1 >= target:
                    break


class WaitsForEachOther(SrcuDirtyLog):
    """A true livelock: each vCPU's mark waits on plain loads until the
    harvester's flag is up, and the harvester's GET waits the same way for
    every vCPU's flag, which each raises only after its wait. Nobody stores,
    so nothing ever changes; the harness must still report it."""

    name = "waits-for-each-other"

    @classmethod
    def shared_words(cls, memslots: MemslotTable) -> dict[str, int]:
        return {**super().shared_words(memslots), "flags": READERS + 1}

    def mark_page_dirty(self, gfn: int, vcpu_id: int, *, context: object = None) -> None:
        flags = self.kvm.words("flags")
        while not flags.load(READERS):  # BUG: the harvester raises it only after us
            pass
        flags.store(vcpu_id, 1)
        super().mark_page_dirty(gfn, vcpu_id)

    def get_dirty_log(self, slot_id: int) -> list[int]:
        flags = self.kvm.words("flags")
        while not flags.load(0):  # BUG: vcpu 0 raises it only after the harvester
            pass
        flags.store(READERS, 1)
        return super().get_dirty_log(slot_id)


__all__ = ["HARVESTER", "PlainLoadSrcu", "WaitsForEachOther"]
