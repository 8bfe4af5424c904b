"""``concurrent-dirty perf``: the harness's ``dirty_log_perf_test``.

For each point of a sweep (algorithm x number of vCPUs x dirty fraction of
one slot) and for each round: put the VM on fresh state, dirty the chosen
fraction of the slot's pages through the algorithm's own fault path
(``read_side``, ``mmu_lock``, ``mark_page_dirty``, make the page writable),
then start the vCPU writer threads and, while they run, harvest the slot as
userspace does: ``get_dirty_log`` (and, for ``manual_protect`` algorithms,
one ``clear_dirty_log`` over the whole slot, as ``dirty_log_perf_test``
does). Timed: GET and CLEAR, per round; pages harvested per second; and,
from the writers' side, how long each vCPU operation that needed something
the harvest may hold waited for it:

* **fault wait**: a guest write to a write-protected page faults; the fault
  enters the algorithm's read-side section and waits for ``mmu_lock``
  (which ``xchg`` holds for its whole scan, ``srcu`` only to write-protect
  after its grace period, ``manual`` during CLEAR);
* **exit wait**: a share of vCPU operations (``exit_rate``) are exits to
  userspace, for I/O, say, that need the userspace lock the harvester holds
  across the ioctl (QEMU's global lock around the dirty-log sync). This is
  the path behind the seed's "guest reading a file during migration" figure;
* **ring-full wait** (``ring-N``, the dirty ring with N entries a vCPU):
  a vCPU whose ring reaches its soft limit exits (KVM_EXIT_DIRTY_RING_FULL)
  and reaps on its own thread under the userspace lock, as QEMU does; the
  time from the exit to re-entry is the wait. ``ring`` alone in the
  algorithm list means every size of ``ring_sizes``.

Writers are real threads (the atomic operations release the GIL), so the
waits are real waits. Everything is Python: absolute numbers are orders of
magnitude above the kernel's, and only the shapes (how each algorithm
scales with the dirty fraction, who waits for what) carry over.
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dirtylog import DirtyLogAlgorithm, algorithm_name
from ..errors import ConcurrentDirtyError, UsageError
from ..model.arena import Arena
from ..model.kvm import WRITABLE, Kvm
from ..model.memslot import MemslotFlags, MemslotTable
from .perf_cost import parse_spec

__all__ = [
    "DEFAULT_PAGES",
    "MAX_PAGES",
    "PerfConfig",
    "PerfPoint",
    "PerfReport",
    "default_fractions",
    "run_perf",
]

DEFAULT_PAGES = 65536
MAX_PAGES = 1 << 22  # 16 GiB of 4 KiB pages; the arena holds 8 bytes a page
MAX_VCPUS = 64
HANDFUL = 8  # "a handful of pages": the sweep's first point


def default_fractions(pages: int) -> list[float]:
    """From a handful of pages to all of them, about a decade apart."""
    fractions = [HANDFUL / pages, 1e-3, 1e-2, 0.1, 0.5, 1.0]
    return sorted({f for f in fractions if 0 < f <= 1 and f >= HANDFUL / pages})


@dataclass
class PerfConfig:
    algorithms: list[str] = field(default_factory=lambda: ["srcu", "xchg", "manual", "ring"])
    #: The sizes ``ring`` in ``algorithms`` stands for (entries a vCPU).
    ring_sizes: list[int] = field(default_factory=lambda: [256, 4096])
    vcpus: list[int] = field(default_factory=lambda: [2])
    pages: int = DEFAULT_PAGES
    #: None: :func:`default_fractions`.
    fractions: list[float] | None = None
    rounds: int = 3
    #: Budget per point: no new round starts after it (one round always runs).
    seconds: float = 10.0
    #: Pause of each writer between two operations (a guest doing other work).
    think_us: float = 100.0
    #: Share of vCPU operations that exit to userspace.
    exit_rate: float = 0.05
    seed: int = 0
    lock_timeout: float = 30.0

    def validate(self) -> None:
        if not isinstance(self.pages, int) or not 1 <= self.pages <= MAX_PAGES:
            raise UsageError(f"expected --pages between 1 and {MAX_PAGES}, got {self.pages!r}")
        for f in self.fractions or []:
            if not isinstance(f, (int, float)) or math.isnan(f) or not 0 < f <= 1:
                raise UsageError(f"expected a dirty fraction in (0, 1], got {f!r}")
        for v in self.vcpus:
            if not isinstance(v, int) or not 1 <= v <= MAX_VCPUS:
                raise UsageError(f"expected --vcpus between 1 and {MAX_VCPUS}, got {v!r}")
        if not self.algorithms or not self.vcpus:
            raise UsageError("expected at least one algorithm and one vCPU count, got none")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise UsageError(f"expected --rounds >= 1, got {self.rounds!r}")
        if not 0 <= self.exit_rate <= 1:
            raise UsageError(f"expected --exit-rate in [0, 1], got {self.exit_rate!r}")
        for spec in self.specs():
            parse_spec(spec)  # AlgorithmError (a UsageError) names the problem

    def specs(self) -> list[str]:
        """The algorithms, ``ring`` expanded to ``ring-N`` for each ring size."""
        out: list[str] = []
        for spec in self.algorithms:
            out += [f"ring-{n}" for n in self.ring_sizes] if spec == "ring" else [spec]
        return list(dict.fromkeys(out))

    def fraction_list(self) -> list[float]:
        return list(self.fractions) if self.fractions else default_fractions(self.pages)

    def to_json(self) -> dict[str, Any]:
        return {"algorithms": self.specs(), "vcpus": self.vcpus, "pages": self.pages,
                "fractions": self.fraction_list(), "rounds": self.rounds,
                "seconds": self.seconds, "think_us": self.think_us,
                "exit_rate": self.exit_rate, "seed": self.seed}


def _stats_us(samples: Sequence[float]) -> dict[str, float | int]:
    """count, p50, p99 and max of samples in seconds, in microseconds."""
    if not samples:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"count": len(ordered), "p50": round(statistics.median(ordered) * 1e6, 1),
            "p99": round(p99 * 1e6, 1), "max": round(ordered[-1] * 1e6, 1)}


@dataclass
class PerfPoint:
    """One point of the sweep: its rounds' measurements."""

    algorithm: str
    vcpus: int
    pages: int
    fraction: float
    dirty_pages: int
    get_seconds: list[float] = field(default_factory=list)
    clear_seconds: list[float] = field(default_factory=list)
    harvested: list[int] = field(default_factory=list)
    fault_waits: list[float] = field(default_factory=list)
    exit_waits: list[float] = field(default_factory=list)
    #: ``ring-N``: each ring-full exit, from the exit to re-entry (reaped).
    ring_full_waits: list[float] = field(default_factory=list)
    writes: int = 0
    dirty_seconds: float = 0.0

    @property
    def rounds(self) -> int:
        return len(self.get_seconds)

    @property
    def pages_per_second(self) -> float:
        spent = sum(self.get_seconds) + sum(self.clear_seconds)
        return sum(self.harvested) / spent if spent else 0.0

    def ms(self, which: list[float]) -> dict[str, float]:
        if not which:
            return {"p50": 0.0, "max": 0.0}
        return {"p50": round(statistics.median(which) * 1e3, 4),
                "max": round(max(which) * 1e3, 4)}

    def to_json(self) -> dict[str, Any]:
        both = self.fault_waits + self.exit_waits + self.ring_full_waits
        return {
            "algorithm": self.algorithm, "vcpus": self.vcpus, "pages": self.pages,
            "fraction": self.fraction, "dirty_pages": self.dirty_pages, "rounds": self.rounds,
            "get_ms": self.ms(self.get_seconds), "clear_ms": self.ms(self.clear_seconds),
            "get_ms_rounds": [round(s * 1e3, 4) for s in self.get_seconds],
            "clear_ms_rounds": [round(s * 1e3, 4) for s in self.clear_seconds],
            "harvested_pages": round(statistics.mean(self.harvested), 1)
            if self.harvested else 0,
            "pages_per_second": round(self.pages_per_second),
            "vcpu_wait_us": _stats_us(both),
            "fault_wait_us": _stats_us(self.fault_waits),
            "exit_wait_us": _stats_us(self.exit_waits),
            "ring_full_wait_us": _stats_us(self.ring_full_waits),
            "writes": self.writes,
            "dirtying_seconds": round(self.dirty_seconds, 3),
        }


@dataclass
class PerfReport:
    config: PerfConfig
    points: list[PerfPoint] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None

    def crossovers(self) -> list[dict[str, Any]]:
        """Per vCPU count: where ``xchg``'s GET becomes slower than
        ``srcu``'s as the dirty fraction grows (the seed's "unless we have
        too many dirty pages")."""
        out = []
        for v in self.config.vcpus:
            by = {(p.algorithm, p.fraction): p for p in self.points if p.vcpus == v}
            fractions = sorted({f for (a, f) in by if a == "xchg"} & {f for (a, f) in by
                                                                      if a == "srcu"})
            if not fractions:
                continue
            ratios = [(f, statistics.median(by["xchg", f].get_seconds)
                       / max(1e-12, statistics.median(by["srcu", f].get_seconds)))
                      for f in fractions]
            slower = [f for f, r in ratios if r > 1]
            out.append({"vcpus": v,
                        "xchg_over_srcu_get": {f"{f:g}": round(r, 3) for f, r in ratios},
                        "xchg_slower_from_fraction": slower[0] if slower else None})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"tool": "concurrent-dirty", "command": "perf",
                "python": platform.python_version(),
                "machine": f"{platform.system()} {platform.machine()}",
                "interrupted": self.interrupted, "error": self.error,
                "verdict": "interrupted" if self.interrupted else
                "error" if self.error else "pass",
                "seconds": round(self.seconds, 3), "config": self.config.to_json(),
                "points": [p.to_json() for p in self.points],
                "crossovers": self.crossovers()}


class _Rig:
    """One VM (one slot) and an algorithm class, reused by every round of
    the points that share them."""

    def __init__(self, cls: type[DirtyLogAlgorithm], vcpus: int, config: PerfConfig,
                 ring_entries: int = 0) -> None:
        self.cls = cls
        self.vcpus = vcpus
        flags = MemslotFlags.LOG_DIRTY_PAGES | getattr(cls, "slot_flags", MemslotFlags.NONE)
        self.memslots = MemslotTable.contiguous(1, config.pages, flags)
        self.slot = next(iter(self.memslots))
        layout = Kvm.layout(self.memslots, vcpus, cls.shared_words(self.memslots),
                            cls.shared_locks(self.memslots), ring_entries=ring_entries)
        self.arena = Arena(layout, shared=False)
        self.kvm = Kvm(self.arena, self.memslots, vcpus, config.lock_timeout, tlb=True,
                       dirty_ring=bool(ring_entries), ring_entries=ring_entries or 8)
        #: The dirty ring: a vCPU at its soft limit exits and reaps first.
        self.ring = bool(ring_entries)
        self.manual = bool(getattr(cls, "manual_protect", False))
        base_enable = DirtyLogAlgorithm.enable_dirty_logging
        self.own_enable = getattr(cls, "enable_dirty_logging", None) is not base_enable

    def fresh(self) -> DirtyLogAlgorithm:
        """Fresh state: zeroed words are every page write-protected and no
        bit set, which is what the base ``enable_dirty_logging`` leaves; an
        algorithm with its own runs it."""
        for region in self.arena.layout.regions:
            self.arena.zero(region)
        algorithm = self.cls(self.kvm)
        if self.own_enable:
            algorithm.enable_dirty_logging(self.slot)
        return algorithm

    def close(self) -> None:
        self.arena.close()


class _Writers:
    """vCPU threads that run from :meth:`start` to :meth:`stop`: guest
    writes to random pages (faulting on write-protected ones) and, with
    probability ``exit_rate``, exits that need the userspace lock."""

    def __init__(self, rig: _Rig, algorithm: DirtyLogAlgorithm, userspace: threading.Lock,
                 config: PerfConfig, seed: int) -> None:
        self.rig = rig
        self.algorithm = algorithm
        self.userspace = userspace
        self.config = config
        self.stopping = False
        self.started = threading.Barrier(rig.vcpus + 1)
        self.fault_waits: list[list[float]] = [[] for _ in range(rig.vcpus)]
        self.exit_waits: list[list[float]] = [[] for _ in range(rig.vcpus)]
        self.ring_waits: list[list[float]] = [[] for _ in range(rig.vcpus)]
        self.writes = [0] * rig.vcpus
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(v, seed * 1009 + v),
                                         name=f"perf-vcpu-{v}", daemon=True)
                        for v in range(rig.vcpus)]

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.started.wait(timeout=60)

    def stop(self) -> None:
        self.stopping = True
        for t in self.threads:
            t.join(timeout=self.config.lock_timeout + 5)
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            raise ConcurrentDirtyError(f"writers did not stop: {', '.join(stuck)}")
        if self.errors:
            exc = self.errors[0]
            raise ConcurrentDirtyError(f"a writer failed: {type(exc).__name__}: {exc}")

    def _run(self, v: int, seed: int) -> None:
        try:
            self.started.wait(timeout=60)
            self._loop(v, random.Random(seed))
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)

    def _loop(self, v: int, rng: random.Random) -> None:
        kvm, algorithm = self.rig.kvm, self.algorithm
        pages, tlb, lock = kvm.pages, kvm.tlb, kvm.mmu_lock
        base, npages = self.rig.slot.base_gfn, self.rig.slot.npages
        faults, exits, fulls = self.fault_waits[v], self.exit_waits[v], self.ring_waits[v]
        ring = self.rig.ring
        exit_rate, think = self.config.exit_rate, self.config.think_us / 1e6
        clock, sleep = time.perf_counter, time.sleep
        writes = 0
        while not self.stopping:
            if exit_rate and rng.random() < exit_rate:
                t0 = clock()
                with self.userspace:
                    exits.append(clock() - t0)
            else:
                gfn = base + rng.randrange(npages)
                while True:
                    if ring and algorithm.ring_soft_full(v):  # type: ignore[attr-defined]
                        t0 = clock()  # KVM_EXIT_DIRTY_RING_FULL: reap under the BQL
                        with self.userspace:
                            algorithm.reap(v)  # type: ignore[attr-defined]
                        fulls.append(clock() - t0)
                    if tlb is not None:
                        tlb.read_lock(v)  # guest mode: a TLB flush waits for us
                    try:
                        old = pages.load(gfn)
                        done = bool(old & WRITABLE) and pages.compare_exchange(
                            gfn, old, old + (1 << 16))[0]
                    finally:
                        if tlb is not None:
                            tlb.read_unlock(v)
                    if done:
                        break
                    if old & WRITABLE:
                        continue  # lost a race with another writer: retry
                    t0 = clock()  # the fault path
                    with algorithm.read_side(v):
                        lock.acquire(v)
                        faults.append(clock() - t0)
                        try:
                            algorithm.mark_page_dirty(gfn, v)
                            kvm.make_writable(gfn)
                        finally:
                            lock.release(v)
                writes += 1
            if think:
                sleep(think)
        self.writes[v] = writes


def _dirty(rig: _Rig, algorithm: DirtyLogAlgorithm, gfns: list[int]) -> None:
    """The dirtying phase: each page takes the fault path once (vCPUs in
    turn), exactly as a guest's first write after a harvest does."""
    kvm, lock = rig.kvm, rig.kvm.mmu_lock
    vcpus = rig.vcpus
    for i, gfn in enumerate(gfns):
        v = i % vcpus
        if rig.ring and algorithm.ring_soft_full(v):  # type: ignore[attr-defined]
            algorithm.reap(v)  # type: ignore[attr-defined]  # a ring-full exit
        with algorithm.read_side(v):
            lock.acquire(v)
            try:
                algorithm.mark_page_dirty(gfn, v)
                kvm.make_writable(gfn)
            finally:
                lock.release(v)


def _round(rig: _Rig, point: PerfPoint, config: PerfConfig, rng: random.Random,
           round_seed: int) -> None:
    algorithm = rig.fresh()
    slot = rig.slot
    gfns = [slot.base_gfn + p for p in rng.sample(range(slot.npages), point.dirty_pages)]
    t0 = time.perf_counter()
    _dirty(rig, algorithm, gfns)
    point.dirty_seconds += time.perf_counter() - t0
    userspace = threading.Lock()  # QEMU's global lock, held across the ioctls
    writers = _Writers(rig, algorithm, userspace, config, round_seed)
    writers.start()
    try:
        with userspace:
            t0 = time.perf_counter()
            words = algorithm.get_dirty_log(slot.id)
            t1 = time.perf_counter()
        if not isinstance(words, list) or len(words) != slot.nwords:
            raise ConcurrentDirtyError(f"expected get_dirty_log to return {slot.nwords} words, "
                                       f"got {type(words).__name__}")
        clear = 0.0
        if rig.manual and any(words):
            with userspace:
                t2 = time.perf_counter()
                algorithm.clear_dirty_log(slot.id, 0, words)
                clear = time.perf_counter() - t2
    finally:
        writers.stop()
    point.get_seconds.append(t1 - t0)
    if rig.manual:
        point.clear_seconds.append(clear)
    point.harvested.append(sum(w.bit_count() for w in words))
    for waits in writers.fault_waits:
        point.fault_waits.extend(waits)
    for waits in writers.exit_waits:
        point.exit_waits.extend(waits)
    for waits in writers.ring_waits:
        point.ring_full_waits.extend(waits)
    point.writes += sum(writers.writes)


def run_perf(config: PerfConfig, *,
             progress: Callable[[int, int, PerfPoint], None] | None = None) -> PerfReport:
    """Run the sweep. Bad configuration raises :class:`UsageError` before
    anything runs; an error of the code under test (a deadlock, a writer
    that failed) ends the sweep and lands in ``report.error``; Ctrl-C ends
    it with ``report.interrupted`` and the points finished so far."""
    config.validate()
    fractions = config.fraction_list()
    specs = config.specs()
    classes = [parse_spec(spec) for spec in specs]
    report = PerfReport(config)
    total = len(classes) * len(config.vcpus) * len(fractions)
    start = time.monotonic()
    n = 0
    rig: _Rig | None = None
    try:
        for vcpus in config.vcpus:
            for spec, (cls, ring_entries) in zip(specs, classes, strict=True):
                rig = _Rig(cls, vcpus, config, ring_entries)
                for fraction in fractions:
                    n += 1
                    dirty = min(config.pages,
                                max(1, math.ceil(fraction * config.pages - 1e-9)))
                    point = PerfPoint(algorithm=spec if ring_entries else algorithm_name(cls),
                                      vcpus=vcpus,
                                      pages=config.pages, fraction=fraction, dirty_pages=dirty)
                    rng = random.Random(f"{config.seed}/{fraction}")
                    began = time.monotonic()
                    for r in range(config.rounds):
                        if r and time.monotonic() - began >= config.seconds:
                            break
                        _round(rig, point, config, rng, config.seed * 7919 + r)
                    report.points.append(point)
                    if progress is not None:
                        progress(n, total, point)
                rig.close()
                rig = None
    except KeyboardInterrupt:
        report.interrupted = True
    except ConcurrentDirtyError as exc:
        if isinstance(exc, UsageError) and not report.points:
            raise
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        if rig is not None:
            rig.close()
        report.seconds = time.monotonic() - start
    return report


# -- output --------------------------------------------------------------------

_COLUMNS = ("algorithm", "vcpus", "fraction", "dirty", "rounds", "GET ms", "CLEAR ms",
            "harvested", "pages/s", "wait p50 us", "wait p99 us", "wait max us",
            "fault p99", "exit p99", "ring full p99")


def format_table(report: PerfReport) -> str:
    rows = []
    for p in report.points:
        j = p.to_json()
        wait = j["vcpu_wait_us"]
        rows.append((p.algorithm, str(p.vcpus), f"{p.fraction:.3g}", str(p.dirty_pages),
                     str(p.rounds), f"{j['get_ms']['p50']:.3f}",
                     f"{j['clear_ms']['p50']:.3f}" if p.clear_seconds else "-",
                     f"{j['harvested_pages']:g}", f"{j['pages_per_second']:.0f}",
                     f"{wait['p50']:.0f}", f"{wait['p99']:.0f}", f"{wait['max']:.0f}",
                     f"{j['fault_wait_us']['p99']:.0f}", f"{j['exit_wait_us']['p99']:.0f}",
                     f"{j['ring_full_wait_us']['p99']:.0f}" if p.ring_full_waits else "-"))
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(_COLUMNS)]
    left = {0}
    lines = ["  ".join(c.ljust(w) if i in left else c.rjust(w)
                       for i, (c, w) in enumerate(zip(_COLUMNS, widths, strict=True))),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i in left else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def summary_lines(report: PerfReport) -> list[str]:
    c = report.config
    lines = [f"perf: {len(report.points)} points, {c.pages} pages, rounds <= {c.rounds}, "
             f"{report.seconds:.1f}s (GET/CLEAR ms: median over rounds; waits: every "
             f"fault and exit of every round; Python, not the kernel: compare shapes, "
             f"not absolute numbers)"]
    for x in report.crossovers():
        ratios = ", ".join(f"{f}: {r:g}x" for f, r in x["xchg_over_srcu_get"].items())
        where = x["xchg_slower_from_fraction"]
        verdict = ("xchg's GET is faster than srcu's at every fraction" if where is None
                   else f"xchg's GET is slower than srcu's from fraction {where:g}")
        lines.append(f"crossover ({x['vcpus']} vcpus): {verdict} (xchg/srcu GET {ratios})")
    if report.interrupted:
        lines.append("interrupted: the table holds the points finished so far")
    if report.error:
        lines.append(f"ERROR: {report.error}")
    return lines


PLOT_FILES = ("dirty_log_perf.png", "dirty_log_perf.svg")


def require_matplotlib() -> None:
    """Raise a one-line :class:`UsageError` naming the extra if matplotlib
    is missing (checked before a sweep starts, not after it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("expected matplotlib for --plot, got none installed: "
                         "pip install 'concurrent-dirty[plot]'") from None


def plot(report: PerfReport, directory: str) -> list[str]:
    """Write the two panels (GET latency; vCPU wait p99; both against the
    dirty fraction) as PNG and SVG into ``directory``; return the paths."""
    require_matplotlib()
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    series: dict[tuple[str, int], list[PerfPoint]] = {}
    for p in report.points:
        series.setdefault((p.algorithm, p.vcpus), []).append(p)
    names = list(dict.fromkeys(p.algorithm for p in report.points))
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    counts = list(dict.fromkeys(p.vcpus for p in report.points))
    styles = ["-", "--", ":", "-."]
    for (name, vcpus), pts in series.items():
        pts.sort(key=lambda p: p.fraction)
        style = dict(color=colors[name], linestyle=styles[counts.index(vcpus) % len(styles)])
        label = f"{name}, {vcpus} vCPU{'s' if vcpus > 1 else ''}"
        xs = [p.fraction for p in pts]
        js = [p.to_json() for p in pts]
        if any(p.clear_seconds for p in pts):
            left.plot(xs, [j["get_ms"]["p50"] + j["clear_ms"]["p50"] for j in js], marker="s",
                      label=f"{label} (GET+CLEAR)", **style)
            left.plot(xs, [j["get_ms"]["p50"] for j in js], marker=".", alpha=0.5,
                      label=f"{label} (GET only)", **style)
        else:
            left.plot(xs, [j["get_ms"]["p50"] for j in js], marker="o", label=label, **style)
        # a point where no vCPU operation waited has no p99: leave a gap
        right.plot(xs, [j["vcpu_wait_us"]["p99"] / 1e3 if j["vcpu_wait_us"]["count"]
                        else math.nan for j in js], marker="o", label=label, **style)
    c = report.config
    for ax in (left, right):
        ax.set_xscale("log")
        values = [y for line in ax.get_lines() for y in line.get_ydata()
                  if isinstance(y, (int, float)) and math.isfinite(y) and y > 0]
        if values:  # a log axis needs at least one positive value
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "nothing to show: no value above 0", ha="center",
                    transform=ax.transAxes)
        ax.set_xlabel(f"dirty fraction of a {c.pages}-page slot")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    left.set_ylabel("harvest latency, ms (median of rounds)")
    left.set_title("KVM_GET_DIRTY_LOG (+ CLEAR) latency")
    right.set_ylabel("vCPU wait p99, ms (faults for mmu_lock, exits for the ioctl)")
    right.set_title("how long a blocked vCPU waits during a harvest")
    fig.suptitle(f"concurrent-dirty perf (Python model, {platform.python_version()}; "
                 f"shapes, not kernel numbers)", fontsize="medium")
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in PLOT_FILES]
    for path in paths:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return paths


def describe_progress(n: int, total: int, point: PerfPoint) -> str:
    j = point.to_json()
    return (f"[{n}/{total}] {point.algorithm} vcpus={point.vcpus} fraction={point.fraction:.3g} "
            f"({point.dirty_pages} pages): GET {j['get_ms']['p50']:.3f} ms, wait p99 "
            f"{j['vcpu_wait_us']['p99']:.0f} us, {point.rounds} rounds")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: concurrent-dirty perf")
