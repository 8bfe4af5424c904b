"""``perf --cost-mode kernel``: the model's harvest under the controlled
engine, priced on a virtual clock with the kernel's measured costs.

One point (an algorithm, a slot of ``pages`` pages, ``dirty`` of them
dirtied beforehand through the algorithm's own fault path) is one
controlled execution: vCPU threads that each make a few guest writes
(faulting on write-protected pages, exiting at a full dirty ring) and a
harvester thread that runs one GET (and, for ``manual``, one CLEAR of what
GET returned), under a seeded :class:`~concurrent_dirty.schedulers.random.
RandomScheduler`. The runtime's ``observe`` hook (an existing seam of
:class:`~concurrent_dirty._core.runtime.Runtime`, called after a switch
point goes through) records every operation in the order the schedule ran
them; nothing is charged while the execution runs, so **the cost mode
changes no schedule**: the same seed gives the same interleaving with and
without it (``tests/test_perf_cost.py`` compares the schedules and traces).

:func:`price` then replays the recorded operations on a virtual clock, one
clock per thread, each operation charged what it costs on the kernel
(:class:`Costs`, from ``dirty_log_perf_kvm.json`` or a fresh kernel sweep):

* a bitmap word's load, store, ``xchg`` or ``fetch_andnot`` (and the ring's
  index words, the srcu live-half word): ``word_ns``;
* a harvester's write-protect of a page (an atomic AND on its SPTE):
  ``protect_ns``; with ``srcu_protect="slot"``, ``srcu``'s first
  write-protect of a GET instead costs the whole slot, ``pages x
  slot_protect_ns``, and the rest nothing (b050b015 write-protected the
  whole slot when anything was dirty; the model's ``srcu.py`` protects only
  the harvested pages: see the README's performance section);
* the SRCU grace period (``synchronize_srcu_expedited``): ``sync_ns``, the
  parameter the 2012 crossover turns on, plus the wait for every vCPU whose
  read-side section began before it and ended after;
* a lock acquire: ``lock_ns``, plus the wait for the holder when the holder
  took the lock before the acquirer reached it in virtual time and released
  it after (a hand-off the schedule made but virtual time did not need
  costs no wait: the random schedule is not time-ordered);
* a guest page write (the CMPXCHG on a writable page): ``write_ns``; a
  write fault (a vCPU's ``mmu_lock`` acquire): ``fault_ns``; a ring push:
  ``push_ns``; userspace collecting one ring entry: ``reap_ns``; the
  harvester's ioctl entry: ``ioctl_ns``; a remote TLB flush: ``flush_ns``;
  copying a page to the destination: ``copy_ns``.

Pricing is a pure function of the recorded operations and the costs, so a
point is simulated once and priced under every ``sync_ns`` of the
crossover sweep; everything is deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .._core import switch as _switch
from .._core.runtime import Runtime, Verdict
from .._core.switch import Op
from ..dirtylog import DirtyLogAlgorithm, resolve_algorithm
from ..errors import ConcurrentDirtyError, UsageError
from ..model.arena import Arena
from ..model.kvm import WRITABLE, Kvm
from ..model.memslot import MemslotFlags, MemslotTable
from ..schedulers.random import RandomScheduler

__all__ = ["COST_ALGORITHMS", "Costs", "CostConfig", "CostPoint", "DEFAULT_COSTS",
           "DEFAULT_SYNC_US", "Event", "Recorder", "SYNC_RANGE_US", "SYNC_SWEEP_US",
           "SYNC_SOURCE", "costs_from_kernel", "crossover", "crossover_lines", "format_cost",
           "parse_spec", "plot_cost", "price", "run_cost_sweep", "simulate"]

#: The 2012 ``synchronize_srcu_expedited``: 60c34612's message says the
#: srcu GET "sometimes gives us ms order of latency" (with VGA, the
#: grace period being the part the seed removed): 1 ms.
DEFAULT_SYNC_US = 1000.0
SYNC_SOURCE = ("60c34612's commit message: the srcu GET 'sometimes gives us ms order of "
               "latency' (1 ms); swept as a parameter")
SYNC_SWEEP_US = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
SYNC_RANGE_US = (0.0, 1e6)  # (exclusive, inclusive)
#: An uncontended spin_lock + spin_unlock (a locked cmpxchg and a store, ~20
#: cycles at ~1 GHz per Agner Fog's tables): not measurable from userspace.
LOCK_NS = 20.0

#: (thread, op, target, index); a mark is ``op = "mark:<name>"`` with a
#: count in ``index``.
Event = tuple[int, str, str, int]


@dataclass(frozen=True)
class Costs:
    """Virtual nanoseconds per model operation (see the module docstring)."""

    ioctl_ns: float
    word_ns: float
    protect_ns: float
    slot_protect_ns: float
    sync_ns: float
    lock_ns: float
    write_ns: float
    fault_ns: float
    push_ns: float
    reap_ns: float
    flush_ns: float
    copy_ns: float
    #: "slot": srcu's GET write-protects the whole slot (b050b015); "harvested":
    #: only the pages it harvested (the model's ``srcu.py``).
    srcu_protect: str = "slot"
    #: Where the numbers come from.
    source: str = ""

    def with_sync_us(self, sync_us: float) -> Costs:
        return replace(self, sync_ns=sync_us * 1e3)

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


def _fit(report: dict[str, Any], protocol: str) -> dict[str, Any] | None:
    fits = [f for f in report.get("fits", {}).values() if f["protocol"] == protocol]
    return max(fits, key=lambda f: f["pages"]) if fits else None


def _interval_ns(report: dict[str, Any], protocol: str) -> float | None:
    """Nanoseconds between two guest writes of one vCPU on the smallest
    running slot under ``protocol`` (``ring-N``: the largest ring)."""
    rows = [r for r in report.get("running", []) if r["vcpus"] == 1
            and (r["protocol"] == protocol or (protocol == "ring"
                                               and r["protocol"].startswith("ring")))
            and r.get("writes_per_s")]
    if not rows:
        return None
    row = min(rows, key=lambda r: (r["pages"], -r.get("ring_entries", 0)))
    return 1e9 / float(row["writes_per_s"])


def costs_from_kernel(report: dict[str, Any], sync_us: float = DEFAULT_SYNC_US,
                      srcu_protect: str = "slot") -> Costs:
    """The costs a kernel sweep (``perf --engine kvm``'s JSON) measured:

    * ``ioctl_ns``, ``protect_ns``: the GET line's intercept and ns per
      dirty page on the largest slot; ``word_ns``: its ns per bitmap word
      over the three times xchg's GET touches a word (the buffer's memset,
      the test-and-xchg, the copy out);
    * ``slot_protect_ns``: turning logging on over a fully mapped slot, per
      page (the memslot flip);
    * ``write_ns``: one vCPU's time per write with no logging; ``fault_ns``:
      its time per write under GET harvesting (every write faults) minus
      ``write_ns``; ``push_ns``: under the ring, minus GET's;
    * ``reap_ns``: the ring's reap per entry (userspace, in Python) at the
      most entries; ``copy_ns``: the copy per page at the most dirty pages.
    """
    get = _fit(report, "get")
    flip = report.get("memslot_flip") or {}
    if get is None or "slot_write_protect_ns_per_page" not in flip:
        raise UsageError("expected a perf --engine kvm report with GET fits and the memslot "
                         "flip, got one without")
    none_ns = _interval_ns(report, "none")
    get_ns = _interval_ns(report, "get")
    ring_ns = _interval_ns(report, "ring")
    write_ns = none_ns if none_ns is not None else DEFAULT_COSTS.write_ns
    fault_ns = max(0.0, get_ns - write_ns) if get_ns is not None else DEFAULT_COSTS.fault_ns
    push_ns = (max(0.0, ring_ns - get_ns) if ring_ns is not None and get_ns is not None
               else DEFAULT_COSTS.push_ns)
    ring = [s for s in report.get("stopped", []) if s["protocol"] == "ring"
            and s.get("reap_ns_per_entry")]
    reap_ns = (float(max(ring, key=lambda s: s["dirty_pages"])["reap_ns_per_entry"])
               if ring else DEFAULT_COSTS.reap_ns)
    copies = [s for s in report.get("stopped", []) if s["protocol"] == "get" and "copy_us" in s
              and s["harvested"]]
    copy_ns = (float(max(copies, key=lambda s: s["harvested"])["copy_us"]["p50"]) * 1e3
               / float(max(copies, key=lambda s: s["harvested"])["harvested"])
               if copies else DEFAULT_COSTS.copy_ns)
    host = report.get("host", {})
    return Costs(ioctl_ns=float(get["intercept_us"]) * 1e3,
                 word_ns=float(get["ns_per_bitmap_word"]) / 3,
                 protect_ns=float(get["ns_per_dirty_page"]),
                 slot_protect_ns=float(flip["slot_write_protect_ns_per_page"]),
                 sync_ns=sync_us * 1e3, lock_ns=LOCK_NS, write_ns=write_ns,
                 fault_ns=fault_ns, push_ns=push_ns, reap_ns=reap_ns, flush_ns=0.0,
                 copy_ns=copy_ns, srcu_protect=srcu_protect,
                 source=f"perf --engine kvm on Linux {host.get('kernel', '?')} "
                        f"({host.get('hypervisor', '?')}, {host.get('cores', '?')} cores)")


#: ``costs_from_kernel`` of ``docs/perf/dirty_log_perf_kvm.json`` (Linux
#: 6.18.44, kvm_pvm, 2 cores; regenerate with the README's command), so that
#: the model's ``perf --cost-mode kernel`` needs no /dev/kvm.
DEFAULT_COSTS = Costs(ioctl_ns=16620.0, word_ns=1.36, protect_ns=55.16,
                      slot_protect_ns=100.88, sync_ns=DEFAULT_SYNC_US * 1e3, lock_ns=LOCK_NS,
                      write_ns=4120.02, fault_ns=6984.79, push_ns=1416.78, reap_ns=341.8,
                      flush_ns=0.0, copy_ns=5772.97, srcu_protect="slot",
                      source="docs/perf/dirty_log_perf_kvm.json (Linux 6.18.44-fc-v1147, "
                             "kvm_pvm, 2 cores)")


# -- the simulation ----------------------------------------------------------------

#: The algorithms the cost mode runs; ``ring`` takes a size: ``ring-256``.
COST_ALGORITHMS = ("srcu", "xchg", "manual", "ring")


def parse_spec(spec: str) -> tuple[type[DirtyLogAlgorithm], int]:
    """``ring-N`` -> (the ring, N entries); anything else: (class, 0)."""
    name, _, size = spec.partition("-")
    if name == "ring" and size and size.lstrip("+-").isdigit():
        if not 16 <= int(size) <= 65536:
            raise UsageError(f"expected a ring size from 16 to 65536 entries (ring-N), "
                             f"got {spec!r}")
        return resolve_algorithm("ring"), int(size)
    cls = resolve_algorithm(spec)
    return cls, (256 if getattr(cls, "model", {}).get("dirty_ring") else 0)


class Recorder:
    """The runtime's observer: every operation that goes through, in order,
    plus the harvester's marks (phases, ioctls, copies)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, thread: int, op: Op, target: str, index: int) -> None:
        self.events.append((thread, op.value, target, index))

    def mark(self, thread: int, name: str, count: int = 0) -> None:
        self.events.append((thread, f"mark:{name}", "", count))


@dataclass
class Simulated:
    algorithm: str
    pages: int
    dirty: int
    vcpus: int
    ring_entries: int
    harvested: int
    #: Ring entries the vCPUs reaped at ring-full exits while the pages were
    #: dirtied (not part of the harvest's time).
    exit_reaped: int
    events: list[Event]
    schedule: list[int]
    trace: list[tuple[int, str, str, int]] = field(default_factory=list)
    steps: int = 0


class _Rig:
    def __init__(self, cls: type[DirtyLogAlgorithm], pages: int, vcpus: int,
                 ring_entries: int) -> None:
        flags = MemslotFlags.LOG_DIRTY_PAGES | getattr(cls, "slot_flags", MemslotFlags.NONE)
        self.memslots = MemslotTable.contiguous(1, pages, flags)
        self.slot = next(iter(self.memslots))
        locks = cls.shared_locks(self.memslots) if hasattr(cls, "shared_locks") else {}
        layout = Kvm.layout(self.memslots, vcpus, cls.shared_words(self.memslots), locks,
                            ring_entries=ring_entries)
        self.arena = Arena(layout, shared=False)
        self.kvm = Kvm(self.arena, self.memslots, vcpus, 30.0, tlb=True,
                       dirty_ring=bool(ring_entries), ring_entries=ring_entries or 8)
        self.cls = cls
        self.ring = bool(ring_entries)

    def words(self, region: str) -> Any:
        return self.arena.words(region) if region in self.arena.layout.regions else None

    def fresh(self) -> DirtyLogAlgorithm:
        for region in self.arena.layout.regions:
            self.arena.zero(region)
        algorithm = self.cls(self.kvm)
        if getattr(self.cls, "enable_dirty_logging", None) is not \
                DirtyLogAlgorithm.enable_dirty_logging:
            algorithm.enable_dirty_logging(self.slot)
        return algorithm

    def close(self) -> None:
        self.arena.close()


def _fault(rig: _Rig, algorithm: DirtyLogAlgorithm, gfn: int, v: int) -> None:
    kvm = rig.kvm
    with algorithm.read_side(v):
        kvm.mmu_lock.acquire(v)
        try:
            algorithm.mark_page_dirty(gfn, v)
            kvm.make_writable(gfn)
        finally:
            kvm.mmu_lock.release(v)


def _ring_exit(rig: _Rig, algorithm: DirtyLogAlgorithm, v: int) -> int:
    """KVM_EXIT_DIRTY_RING_FULL: the vCPU's thread reaps before it
    re-enters; the entries it reaped."""
    if rig.ring and algorithm.ring_soft_full(v):  # type: ignore[attr-defined]
        return int(algorithm.reap(v))  # type: ignore[attr-defined]
    return 0


def _writes(rig: _Rig, algorithm: DirtyLogAlgorithm, v: int, gfns: list[int]) -> None:
    """One vCPU's guest writes: through a writable page, else the fault."""
    kvm = rig.kvm
    pages, tlb = kvm.pages, kvm.tlb
    for gfn in gfns:
        while True:
            _ring_exit(rig, algorithm, v)
            if tlb is not None:
                tlb.read_lock(v)
            try:
                old = pages.load(gfn)
                done = bool(old & WRITABLE) and pages.compare_exchange(
                    gfn, old, old + (1 << 16))[0]
            finally:
                if tlb is not None:
                    tlb.read_unlock(v)
            if done:
                break
            if not old & WRITABLE:
                _fault(rig, algorithm, gfn, v)


def simulate(spec: str, pages: int, dirty: int, *, vcpus: int = 1, writes: int = 8,
             seed: int = 0, trace: bool = False, record: bool = True,
             max_steps: int = 5_000_000) -> Simulated:
    """One point as one controlled execution (see the module docstring).
    ``record=False`` runs the same execution with no observer (the test that
    the cost mode changes no schedule)."""
    cls, ring_entries = parse_spec(spec)
    rig = _Rig(cls, pages, vcpus, ring_entries)
    try:
        algorithm = rig.fresh()
        rng = random.Random(f"cost:{seed}:{spec}:{pages}:{dirty}")
        base = rig.slot.base_gfn
        # the dirtying phase, uncontrolled (no hook: no step, no cost)
        exit_reaped = 0
        for i, p in enumerate(rng.sample(range(pages), dirty)):
            v = i % vcpus
            exit_reaped += _ring_exit(rig, algorithm, v)
            _fault(rig, algorithm, base + p, v)
        plan = [[base + rng.randrange(pages) for _ in range(writes)] for _ in range(vcpus)]
        recorder = Recorder() if record else None
        scheduler = RandomScheduler(seed)
        scheduler.new_execution()
        runtime = Runtime(scheduler, max_steps=max_steps, words=rig.words, trace=trace,
                          observe=recorder)
        harvested: list[int] = []
        me = vcpus  # the harvester's thread id (spawned last)

        def harvest() -> None:
            mark = recorder.mark if recorder is not None else (lambda *a: None)
            slot = rig.slot
            mark(me, "begin:get")
            mark(me, "ioctl")
            words = algorithm.get_dirty_log(slot.id)
            mark(me, "end:get")
            if getattr(cls, "manual_protect", False) and any(words):
                mark(me, "begin:clear")
                mark(me, "ioctl")
                algorithm.clear_dirty_log(slot.id, 0, words)
                mark(me, "end:clear")
            n = sum(w.bit_count() for w in words)
            mark(me, "copy", n)
            harvested.append(n)

        for v in range(vcpus):
            runtime.spawn(f"vcpu {v}", lambda v=v: _writes(rig, algorithm, v, plan[v]))  # type: ignore[misc]
        runtime.spawn("harvester", harvest)
        previous = _switch.install(runtime)
        try:
            outcome = runtime.run()
        finally:
            _switch.install(previous)
        if outcome.kind is not Verdict.OK:
            raise ConcurrentDirtyError(f"the cost-mode execution of {spec} ({pages} pages, "
                                       f"{dirty} dirty) ended {outcome.kind}: "
                                       f"{outcome.message.splitlines()[0]}")
        return Simulated(algorithm=spec, pages=pages, dirty=dirty, vcpus=vcpus,
                         ring_entries=ring_entries, harvested=harvested[0],
                         exit_reaped=exit_reaped,
                         events=recorder.events if recorder is not None else [],
                         schedule=list(outcome.schedule),
                         trace=[(s.thread, s.op.value, s.target, s.word)
                                for s in outcome.trace], steps=outcome.steps)
    finally:
        rig.close()


# -- the virtual clock -------------------------------------------------------------

@dataclass
class Priced:
    """A priced execution: the harvester's phases and the vCPUs' waits."""

    phases: dict[str, float]   # "get", "clear", "copy": virtual ns
    clocks: dict[int, float]
    vcpu_waits: list[float]    # ns a vCPU waited for a lock or a grace period

    @property
    def harvest_ns(self) -> float:
        return self.phases.get("get", 0.0) + self.phases.get("clear", 0.0)


def price(events: Sequence[Event], costs: Costs, *, pages: int, harvester: int,
          srcu_algorithm: bool = False) -> Priced:
    """Replay ``events`` on one virtual clock per thread (see the module
    docstring). ``harvester``: the harvester's thread id; ``pages``: the
    slot's size (the whole-slot write-protect); ``srcu_algorithm``: the
    events are ``srcu``'s (its write-protects follow ``costs.srcu_protect``)."""
    clock: dict[int, float] = {}
    lock_from: dict[str, float] = {}
    lock_until: dict[str, float] = {}
    entered: dict[tuple[str, int], float] = {}
    exited: dict[tuple[str, int], float] = {}
    inside: dict[tuple[str, int], bool] = {}
    snapshot: dict[str, tuple[float, set[int]]] = {}
    began: dict[str, float] = {}
    phases: dict[str, float] = {}
    waits: list[float] = []
    slot_done = False
    for tid, op, target, index in events:
        now = clock.get(tid, 0.0)
        cost = 0.0
        if op.startswith("mark:"):
            name = op[5:]
            if name == "ioctl":
                cost = costs.ioctl_ns
            elif name == "copy":
                phases["copy"] = index * costs.copy_ns
            elif name.startswith("begin:"):
                began[name[6:]] = now
                slot_done = False
            elif name.startswith("end:"):
                phases[name[4:]] = now - began.pop(name[4:], now)
            clock[tid] = now + cost
            continue
        if op == "lock":
            start = now
            if lock_from.get(target, math.inf) <= now < lock_until.get(target, -math.inf):
                now = lock_until[target]
            if tid != harvester:
                waits.append(now - start)
                if target == "mmu_lock":
                    cost = costs.fault_ns
            lock_from[target] = now
            cost += costs.lock_ns
            clock[tid] = now + cost
            lock_until[target] = math.inf
            continue
        if op == "unlock":
            lock_until[target] = now
            continue
        if op in ("enter", "exit"):
            key = (target, index)
            inside[key] = op == "enter"
            (entered if op == "enter" else exited)[key] = now
            continue
        if op == "fetch_add" and target in ("srcu_gp", "tlb_gen"):
            kind = "srcu" if target == "srcu_gp" else "tlb"
            snapshot[kind] = (now, {r for (k, r), on in inside.items() if k == kind and on})
            cost = costs.sync_ns if kind == "srcu" else costs.flush_ns
        elif op == "wait" and target in snapshot:
            start_at, readers = snapshot[target]
            key = (target, index)
            if index in readers and entered.get(key, math.inf) <= start_at:
                if tid != harvester:
                    waits.append(max(0.0, exited.get(key, now) - now))
                now = max(now, exited.get(key, now))
        elif target == "pages":
            if tid == harvester and op == "fetch_and":
                if srcu_algorithm and costs.srcu_protect == "slot":
                    cost = 0.0 if slot_done else pages * costs.slot_protect_ns
                    slot_done = True
                else:
                    cost = costs.protect_ns
            elif tid != harvester and op == "cmpxchg":
                cost = costs.write_ns
        elif target.startswith(("dirty_bitmap:", "algo:live_half", "ring_index")):
            cost = costs.word_ns
        elif target.startswith("algo:collected"):
            cost = costs.reap_ns if op == "set_bit" else costs.word_ns
        elif target == "ring":
            cost = costs.push_ns / 2 if tid != harvester and op == "store" else costs.word_ns
        clock[tid] = now + cost
    return Priced(phases=phases, clocks=clock, vcpu_waits=waits)


# -- the sweep -----------------------------------------------------------------------

@dataclass
class CostConfig:
    algorithms: list[str] = field(default_factory=lambda: ["srcu", "xchg", "manual",
                                                           "ring-256", "ring-8192"])
    pages: list[int] = field(default_factory=lambda: [4096, 65536])
    #: Dirty pages per point; None: one page, 1%, 10% and all (the kernel's).
    dirty: list[int] | None = None
    vcpus: int = 1
    writes: int = 8
    seed: int = 0
    sync_us: float = DEFAULT_SYNC_US
    srcu_protect: str = "slot"

    def dirty_for(self, pages: int) -> list[int]:
        if self.dirty:
            return sorted({min(pages, d) for d in self.dirty})
        return sorted({1, max(1, round(0.01 * pages)), max(1, round(0.1 * pages)), pages})

    def validate(self) -> None:
        if not SYNC_RANGE_US[0] < self.sync_us <= SYNC_RANGE_US[1] or math.isnan(self.sync_us):
            raise UsageError(f"expected --srcu-sync-us in (0, {SYNC_RANGE_US[1]:g}], got "
                             f"{self.sync_us!r}")
        if self.srcu_protect not in ("slot", "harvested"):
            raise UsageError(f"expected --srcu-protect slot or harvested, got "
                             f"{self.srcu_protect!r}")
        for spec in self.algorithms:
            parse_spec(spec)
        for p in self.pages:
            if not 64 <= p <= 1 << 18:
                raise UsageError(f"expected cost-mode pages from 64 to {1 << 18}, got {p!r}")
        if not 1 <= self.vcpus <= 8:
            raise UsageError(f"expected 1 to 8 vCPUs in the cost mode, got {self.vcpus!r}")

    def to_json(self) -> dict[str, Any]:
        return {"algorithms": self.algorithms, "pages": self.pages,
                "dirty": {str(p): self.dirty_for(p) for p in self.pages}, "vcpus": self.vcpus,
                "writes_per_vcpu": self.writes, "seed": self.seed, "sync_us": self.sync_us,
                "srcu_protect": self.srcu_protect}


@dataclass
class CostPoint:
    algorithm: str
    pages: int
    dirty: int
    harvested: int
    exit_reaped: int
    steps: int
    get_us: float
    clear_us: float
    copy_us: float
    vcpu_wait_us_max: float
    #: srcu only: the harvest under each sync of the sweep.
    by_sync_us: dict[str, float] = field(default_factory=dict)

    @property
    def harvest_us(self) -> float:
        return self.get_us + self.clear_us

    def to_json(self) -> dict[str, Any]:
        out = {"algorithm": self.algorithm, "pages": self.pages, "dirty_pages": self.dirty,
               "harvested": self.harvested, "exit_reaped": self.exit_reaped,
               "steps": self.steps,
               "get_us": round(self.get_us, 2), "clear_us": round(self.clear_us, 2),
               "harvest_us": round(self.harvest_us, 2), "copy_us": round(self.copy_us, 2),
               "vcpu_wait_us_max": round(self.vcpu_wait_us_max, 2)}
        if self.by_sync_us:
            out["harvest_us_by_sync_us"] = self.by_sync_us
        return out


def _point(sim: Simulated, costs: Costs) -> CostPoint:
    srcu = sim.algorithm == "srcu"
    priced = price(sim.events, costs, pages=sim.pages, harvester=sim.vcpus,
                   srcu_algorithm=srcu)
    point = CostPoint(algorithm=sim.algorithm, pages=sim.pages, dirty=sim.dirty,
                      harvested=sim.harvested, exit_reaped=sim.exit_reaped, steps=sim.steps,
                      get_us=priced.phases.get("get", 0.0) / 1e3,
                      clear_us=priced.phases.get("clear", 0.0) / 1e3,
                      copy_us=priced.phases.get("copy", 0.0) / 1e3,
                      vcpu_wait_us_max=max(priced.vcpu_waits, default=0.0) / 1e3)
    if srcu:
        for s in sorted({*SYNC_SWEEP_US, costs.sync_ns / 1e3}):
            p = price(sim.events, costs.with_sync_us(s), pages=sim.pages,
                      harvester=sim.vcpus, srcu_algorithm=True)
            point.by_sync_us[f"{s:g}"] = round(p.harvest_ns / 1e3, 2)
    return point


def crossover(points: Sequence[CostPoint], sims: dict[tuple[str, int, int], Simulated],
              costs: Costs) -> dict[str, Any]:
    """Per slot size and per sync cost: the first dirty count at which
    xchg's harvest costs more than srcu's, and, where there is none, the
    whole-slot write-protect cost per page below which there would be one
    (at all pages dirty)."""
    rows = []
    for pages in sorted({p.pages for p in points}):
        xchg = {p.dirty: p.harvest_us for p in points if p.algorithm == "xchg"
                and p.pages == pages}
        srcu = {p.dirty: p for p in points if p.algorithm == "srcu" and p.pages == pages}
        dirty = sorted(set(xchg) & set(srcu))
        if not dirty:
            continue
        row: dict[str, Any] = {"pages": pages, "by_sync_us": {}}
        syncs = sorted(srcu[dirty[0]].by_sync_us, key=float)
        for s in syncs:
            slower = [d for d in dirty if xchg[d] > srcu[d].by_sync_us[s]]
            entry: dict[str, Any] = {
                "srcu_harvest_us": {str(d): srcu[d].by_sync_us[s] for d in dirty},
                "srcu_get_us": srcu[dirty[-1]].by_sync_us[s],
                "xchg_harvest_us": {str(d): round(xchg[d], 2) for d in dirty},
                "xchg_slower_from_dirty_pages": slower[0] if slower else None,
                "xchg_slower_from_fraction": round(slower[0] / pages, 4) if slower else None}
            if costs.srcu_protect == "slot":
                entry["crossover_needs_slot_write_protect_below_ns_per_page"] = _needed(
                    sims[("srcu", pages, dirty[-1])], costs.with_sync_us(float(s)),
                    xchg[dirty[-1]])
            row["by_sync_us"][s] = entry
        rows.append(row)
    return {"method": "cost mode (virtual clock)", "sync_us_default": costs.sync_ns / 1e3,
            "sync_us_source": SYNC_SOURCE, "srcu_protect": costs.srcu_protect,
            "slot_write_protect_ns_per_page": round(costs.slot_protect_ns, 2), "by_slot": rows,
            "assumptions": ASSUMPTIONS}


def _needed(sim: Simulated, costs: Costs, xchg_us: float) -> float:
    """The largest whole-slot write-protect cost per page at which srcu's
    harvest at ``sim``'s dirty count is still cheaper than ``xchg_us``
    (bisection over the pricing; 0 if none)."""
    def srcu_us(ns: float) -> float:
        return price(sim.events, replace(costs, slot_protect_ns=ns), pages=sim.pages,
                     harvester=sim.vcpus, srcu_algorithm=True).harvest_ns / 1e3
    if srcu_us(0.0) >= xchg_us:
        return 0.0
    lo, hi = 0.0, max(1.0, costs.slot_protect_ns)
    while srcu_us(hi) < xchg_us:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if srcu_us(mid) < xchg_us else (lo, mid)
    return round(lo, 2)


ASSUMPTIONS = (
    "The model's own GET code run under the controlled engine (one vCPU making a few writes "
    "during the harvest, a seeded random schedule), each operation charged this kernel's "
    "measured cost on a per-thread virtual clock; the old srcu GET (b050b015) pays one "
    "synchronize_srcu_expedited (the parameter) and, with srcu_protect=slot, a whole-slot "
    "write-protect at the measured cost per page of turning logging on over a mapped slot "
    "(the model's srcu.py protects only harvested pages: the slot cost is charged in the "
    "cost mode only). Assumes 2012 hardware and a 2012 kernel scale like this host's kernel "
    "(kvm_pvm shadow paging), a fully mapped slot, and that nothing else (allocation of the "
    "new bitmap, the ioctl's copy) differs between the two GETs.")


@dataclass
class CostReport:
    config: CostConfig
    costs: Costs
    points: list[CostPoint]
    crossover: dict[str, Any]
    sims: dict[tuple[str, int, int], Simulated] = field(repr=False, default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        import os
        import platform

        return {"tool": "concurrent-dirty", "command": "perf --cost-mode kernel",
                "host": {"python": platform.python_version(),
                         "machine": f"{platform.system()} {platform.machine()}",
                         "cores": os.cpu_count(),
                         "note": "virtual time: the numbers do not depend on this host; "
                                 "the costs' host is in costs.source"},
                "mode": "kernel", "config": self.config.to_json(),
                "costs": self.costs.to_json(),
                "points": [p.to_json() for p in self.points], "crossover": self.crossover}


def run_cost_sweep(config: CostConfig, costs: Costs = DEFAULT_COSTS, *,
                   progress: Callable[[str], None] | None = None) -> CostReport:
    """Simulate every point once, price it, and find the crossover."""
    config.validate()
    costs = replace(costs, sync_ns=config.sync_us * 1e3, srcu_protect=config.srcu_protect)
    sims: dict[tuple[str, int, int], Simulated] = {}
    points: list[CostPoint] = []
    for pages in config.pages:
        for spec in config.algorithms:
            for dirty in config.dirty_for(pages):
                sim = simulate(spec, pages, dirty, vcpus=config.vcpus, writes=config.writes,
                               seed=config.seed)
                sims[(spec, pages, dirty)] = sim
                point = _point(sim, costs)
                points.append(point)
                if progress is not None:
                    progress(f"cost mode: {spec} {pages} pages {dirty} dirty: harvest "
                             f"{point.harvest_us:.1f} virtual us ({sim.steps} steps)")
                sim.events = sim.events if spec == "srcu" else []  # keep srcu's for _needed
    return CostReport(config, costs, points, crossover(points, sims, costs), sims)


def format_cost(report: CostReport) -> str:
    """The cost-mode table and the crossover, as text."""
    lines = [f"cost mode (virtual clock, costs from {report.costs.source}; srcu sync "
             f"{report.costs.sync_ns / 1e3:g} us, srcu protects the "
             f"{'whole slot' if report.costs.srcu_protect == 'slot' else 'harvested pages'}):"]
    head = ("algorithm", "pages", "dirty", "harvested", "exit reaped", "steps", "GET us",
            "CLEAR us", "harvest us", "copy us", "vcpu wait max us")
    rows = [(p.algorithm, str(p.pages), str(p.dirty), str(p.harvested), str(p.exit_reaped),
             str(p.steps),
             f"{p.get_us:.1f}", f"{p.clear_us:.1f}", f"{p.harvest_us:.1f}",
             f"{p.copy_us:.1f}", f"{p.vcpu_wait_us_max:.1f}") for p in report.points]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += crossover_lines(report.crossover)
    return "\n".join(lines)


def crossover_lines(cross: dict[str, Any]) -> list[str]:
    """The crossover as a table: a row per slot size, a column per sync
    cost; a cell is the dirty count from which xchg's GET is the slower,
    or ``never`` with the whole-slot write-protect cost per page below
    which there would be one (``never*``: not even with a free one)."""
    lines = [f"2012 crossover from the cost mode: the dirty pages from which xchg's GET is "
             f"slower than srcu's, by synchronize_srcu_expedited cost (default "
             f"{cross['sync_us_default']:g} us: {cross['sync_us_source']}); srcu "
             f"write-protects the "
             + (f"whole slot at {cross['slot_write_protect_ns_per_page']:g} ns/page; 'never "
                f"<X' = a crossover needs the slot write-protect below X ns/page"
                if cross["srcu_protect"] == "slot" else "harvested pages only") + ":"]
    rows = cross["by_slot"]
    if not rows:
        return [*lines, "  no slot with both srcu and xchg points"]
    syncs = list(rows[0]["by_sync_us"])
    head = ["pages", *[f"sync {s} us" for s in syncs]]
    table = []
    for row in rows:
        cells = [str(row["pages"])]
        for s in syncs:
            v = row["by_sync_us"][s]
            if v["xchg_slower_from_dirty_pages"] is not None:
                cells.append(f"from {v['xchg_slower_from_dirty_pages']}")
                continue
            need = v.get("crossover_needs_slot_write_protect_below_ns_per_page")
            cells.append("never" if need is None else "never*" if need <= 0
                         else f"never <{need:g}")
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    lines.append("  " + "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
              for r in table]
    lines.append(f"  assumptions: {cross['assumptions']}")
    return lines


PLOT_FILES = ("dirty_log_perf_cost.png", "dirty_log_perf_cost.svg")


def plot_cost(report: CostReport, directory: str) -> list[str]:
    """Two panels: each algorithm's harvest in virtual us against the
    dirty count; xchg against srcu at each sync cost (the crossover)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    names = list(dict.fromkeys(p.algorithm for p in report.points))
    sizes = sorted({p.pages for p in report.points})
    styles = ["o-", "s--", "^:", "d-."]
    for i, name in enumerate(names):
        for j, pages in enumerate(sizes):
            pts = sorted((p for p in report.points if p.algorithm == name and p.pages == pages),
                         key=lambda p: p.dirty)
            if pts:
                left.plot([p.dirty for p in pts], [max(p.harvest_us, 1e-3) for p in pts],
                          styles[j % len(styles)], color=f"C{i}", label=f"{name}, {pages} pages")
    left.set(xscale="log", yscale="log", xlabel="dirty pages",
             ylabel="harvest (GET, + CLEAR), virtual us", title="the model at the kernel's costs")
    left.legend(fontsize="x-small", ncol=2)
    rows = report.crossover["by_slot"]
    if rows:
        row = max(rows, key=lambda r: r["pages"])
        for k, (sync, v) in enumerate(row["by_sync_us"].items()):
            xs = [int(d) for d in v["srcu_harvest_us"]]
            right.plot(xs, list(v["srcu_harvest_us"].values()), "--", color=f"C{k}",
                       label=f"srcu, sync {sync} us")
            if k == 0:
                right.plot(xs, list(v["xchg_harvest_us"].values()), "k-", lw=2, label="xchg")
        right.set(xscale="log", yscale="log", xlabel=f"dirty pages of {row['pages']}",
                  ylabel="GET, virtual us",
                  title=f"2012 crossover against the srcu sync cost (srcu protects: "
                        f"{report.costs.srcu_protect})")
        right.legend(fontsize="x-small")
    fig.suptitle(f"concurrent-dirty perf --cost-mode kernel: costs from {report.costs.source}",
                 fontsize="medium")
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in PLOT_FILES]
    for path in paths:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return paths
