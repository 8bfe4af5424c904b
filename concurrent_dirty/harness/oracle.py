"""The harvester (userspace migration) and the oracles that prove no dirty
bit was lost.

Each round the harvester takes every slot's log (for ``manual_protect``
algorithms: GET, then CLEAR just before copying those pages, in ranges of
``clear_words`` words, 0 for the whole slot at once; a range that reaches
the slot's end covers just its remaining pages, ending in a partial word)
and copies every reported page into a destination image. Three oracles:

(a) **end of run**: after the writers stop and a final round, the
    destination equals the source, page for page;
(b) **during the run**, in the spirit of the kernel's ``dirty_log_test``:
    before a round collects a slot, it reads which writes have completed
    (the writers' ``completed`` words); after the round's copies, every one
    of those writes must be in the destination, reported by this round or an
    earlier one. Completion is published after the write, so the oracle sees
    writes late, never early: a correct algorithm cannot fail it. One
    exception, KVM's own: a page whose lockless fast-page-fault fix is in
    flight when the round starts (its SPTE already writable, its mark not
    yet made) is not demanded from that round, as the kernel's test lets a
    write that raced the collection be reported by the next round;
(c) a statistic, not a failure: reported pages whose content had not
    changed since their last copy (``spurious``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .._core import switch as _switch
from ..dirtylog import DirtyLogAlgorithm
from ..errors import AlgorithmMisuse
from ..model.atomic import AtomicWords
from ..model.kvm import Kvm, page_value, page_version, page_writer
from .histogram import LatencyHistogram

__all__ = ["Migration", "Violation"]


@dataclass(frozen=True)
class Violation:
    """One lost write. ``kind`` is ``"missed"`` (oracle b) or ``"final"``
    (oracle a)."""

    kind: str
    algorithm: str
    engine: str
    seed: int
    execution: int
    round: int
    slot: int
    gfn: int
    page: int
    write_vcpu: int
    write_version: int
    copied_version: int
    rerun: str = ""
    #: More about the lost write, where the engine knows it (the kvm
    #: engine: the write's TSC and the harvest's).
    detail: str = ""

    @property
    def where(self) -> str:
        """``algorithm/engine seed S execution N``: a free-running engine's
        rerun needs them. A controlled execution is named by its replay
        token, and its report's header gives the campaign's seed and
        execution: the one number a reader sees for each."""
        if self.engine == "controlled":
            return f"{self.algorithm}/{self.engine}"
        return f"{self.algorithm}/{self.engine} seed {self.seed} execution {self.execution}"

    def describe(self) -> str:
        who = f"vcpu {self.write_vcpu}" if self.write_vcpu >= 0 else "nobody"
        if self.kind == "stuck":
            text = (f"STUCK DIRTY BIT [{self.where}] slot {self.slot} page {self.page} (gfn "
                    f"{self.gfn}): reported by each of the {self.round} harvest rounds after "
                    f"the final one, with no writer left and its copy unchanged: its bit is "
                    f"never cleared (a liveness bug: the migration never converges)")
            return text + (f"\n  rerun: {self.rerun}" if self.rerun else "")
        if self.kind == "missed":
            what = (f"write #{self.write_version} by {who} completed before round {self.round} "
                    f"collected slot {self.slot}, but after that round the destination holds "
                    f"#{self.copied_version}: its dirty bit was lost")
        else:
            what = (f"after the final round {self.round} the source holds write "
                    f"#{self.write_version} by {who} but the destination holds "
                    f"#{self.copied_version}: the migrated copy is stale")
        text = (f"LOST DIRTY BIT [{self.where}] slot {self.slot} page {self.page} "
                f"(gfn {self.gfn}): {what}")
        if self.detail:
            text += f"\n  {self.detail}"
        if self.rerun:
            text += f"\n  rerun: {self.rerun}"
        return text

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Migration:
    """Userspace: harvests rounds into a destination image and checks it."""

    def __init__(self, kvm: Kvm, algorithm: DirtyLogAlgorithm, completed: AtomicWords,
                 *, algorithm_name: str, engine: str, seed: int, rerun: str = "",
                 clear_words: int = 1, fixing: AtomicWords | None = None) -> None:
        self.kvm = kvm
        self.algorithm = algorithm
        self.completed = completed
        self.manual = bool(getattr(algorithm, "manual_protect", False))
        #: Words per CLEAR call (0: the whole slot in one call).
        self.clear_words = clear_words
        #: Lockless fixes in flight per page (see harness/vcpu.py).
        self.fixing = fixing
        self.label = dict(algorithm=algorithm_name, engine=engine, seed=seed)
        self.rerun = rerun
        self.dest: list[int] = []
        self.execution = 0
        self.round_no = 0
        self.rounds = 0
        self.bits = 0
        self.copied = 0
        self.spurious = 0
        self.latencies = LatencyHistogram()  # fixed memory, however long the run
        #: Called each time a call into the algorithm returns (a free-running
        #: engine's watchdog heartbeat: it times each call, not a round).
        self.returned: Callable[[], None] | None = None
        self.violations: list[Violation] = []
        self._reported: set[tuple[int, int]] = set()
        self._round_reported: set[int] = set()

    def begin(self, execution: int, algorithm: DirtyLogAlgorithm | None = None) -> None:
        """Fresh destination: guest memory starts all zero on both sides
        (and, if given, a fresh algorithm object to harvest with)."""
        if algorithm is not None:
            self.algorithm = algorithm
        self.execution = execution
        self.round_no = 0
        self._reported = set()
        self.dest = [0] * self.kvm.memslots.total_gfns

    def harvest_round(self) -> set[int]:
        """One round over every logging slot; returns the gfns it reported."""
        # A new round may re-read bitmap words that did not change: that
        # is no spin-wait (see _core/switch.progress).
        _switch.progress()
        self.round_no += 1
        self.rounds += 1
        self._round_reported = set()
        for slot in self.kvm.memslots:
            if slot.logging:
                self._harvest_slot(slot.id)
        return self._round_reported

    def check_stuck(self, rounds: int, pages: set[int]) -> None:
        """The liveness oracle: ``pages`` were reported by each of ``rounds``
        rounds after the final one, with no writer left."""
        for gfn in sorted(pages):
            slot = self.kvm.gfn_to_memslot(gfn)
            assert slot is not None
            value = self.dest[gfn]
            self.violations.append(Violation(
                kind="stuck", execution=self.execution, round=rounds, slot=slot.id, gfn=gfn,
                page=gfn - slot.base_gfn, write_vcpu=page_writer(value),
                write_version=page_version(value), copied_version=page_version(value),
                rerun=self.rerun, **self.label))  # type: ignore[arg-type]

    def _harvest_slot(self, slot_id: int) -> None:
        kvm, algorithm = self.kvm, self.algorithm
        slot = kvm.id_to_memslot(slot_id)
        base, npages = slot.base_gfn, slot.npages
        completed = self.completed
        # (b) which writes are done before this round starts collecting.
        needed = [completed.load(base + p) for p in range(npages)]
        fixing = self.fixing
        if fixing is not None:
            # Read after `completed`: a fix not in flight now has marked its
            # page before this round collects, so the write must be there.
            needed = [0 if fixing.load(base + p) else v for p, v in enumerate(needed)]
        t0 = time.perf_counter()
        bitmap = algorithm.get_dirty_log(slot_id)
        spent = time.perf_counter() - t0
        returned = self.returned
        if returned is not None:
            returned()
        if not isinstance(bitmap, list) or len(bitmap) != slot.nwords:
            got = f"{len(bitmap)} words" if isinstance(bitmap, list) else type(bitmap).__name__
            raise AlgorithmMisuse(f"expected get_dirty_log({slot_id}) to return a list of "
                                 f"{slot.nwords} ints, got {got}")
        for i, mask in enumerate(bitmap):
            if mask >> min(64, npages - 64 * i):
                raise AlgorithmMisuse(f"get_dirty_log({slot_id}) reported bits past the slot's "
                                     f"{npages} pages in word {i}: {mask:#x}")
        step = self.clear_words or slot.nwords
        for first in range(0, slot.nwords, step):
            masks = bitmap[first:first + step]
            if not any(masks):
                continue
            if self.manual:
                # CLEAR the range just before copying it: num_pages is a
                # multiple of 64 unless the range reaches the slot's end.
                num_pages = min(64 * len(masks), npages - 64 * first)
                t1 = time.perf_counter()
                algorithm.clear_dirty_log(slot_id, 64 * first, masks, num_pages)
                spent += time.perf_counter() - t1
                if returned is not None:
                    returned()
            for k, mask in enumerate(masks):
                if mask:
                    self._copy(base + 64 * (first + k), mask)
        self.latencies.record(spent)
        dest = self.dest
        for p, value in enumerate(needed):
            if value and page_version(dest[base + p]) < page_version(value):
                self._violation("missed", slot_id, base + p, value, dest[base + p])

    def _copy(self, first_gfn: int, mask: int) -> None:
        dest, read_page = self.dest, self.kvm.read_page
        self.bits += mask.bit_count()
        while mask:
            low = mask & -mask
            gfn = first_gfn + low.bit_length() - 1
            mask ^= low
            value = read_page(gfn)
            self._round_reported.add(gfn)
            if dest[gfn] == value:
                self.spurious += 1
            dest[gfn] = value
            self.copied += 1

    def final_check(self) -> None:
        """(a): call after the writers stopped and a final round. The oracle
        reads the source with ``peek``: nothing runs any more, so these reads
        are not switch points (they would only lengthen every execution by
        a step per page)."""
        pages, dest = self.kvm.pages, self.dest
        for slot in self.kvm.memslots:
            for gfn in range(slot.base_gfn, slot.end_gfn):
                source = page_value(pages.peek(gfn))
                if dest[gfn] != source:
                    self._violation("final", slot.id, gfn, source, dest[gfn])

    def _violation(self, kind: str, slot_id: int, gfn: int, value: int, copied: int) -> None:
        key = (gfn, value)
        if key in self._reported:
            return  # the same lost write, seen again by a later round
        self._reported.add(key)
        slot = self.kvm.id_to_memslot(slot_id)
        self.violations.append(Violation(
            kind=kind, execution=self.execution, round=self.round_no, slot=slot_id, gfn=gfn,
            page=gfn - slot.base_gfn, write_vcpu=page_writer(value),
            write_version=page_version(value), copied_version=page_version(copied),
            rerun=self.rerun, **self.label))  # type: ignore[arg-type]
