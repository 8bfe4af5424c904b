"""Run one stress cell (an algorithm on an engine) and measure it.

The driver thread is the harvester. It starts the writers, then for each
execution: puts the VM on fresh state, starts the writers, harvests rounds
until they are done, harvests a final round and runs the end-of-run oracle.
It stops at the first execution with a violation, when the budget is spent,
or on any error; the writers are stopped and the shared memory unlinked on
every path out, Ctrl-C included.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _switch
from ._arena import Arena
from ._interrupt import deferred_interrupts
from ._sync import actor_name
from ._workers import (
    CTL_DONE,
    CTL_END,
    CTL_GEN,
    CTL_READY,
    CTL_WORDS,
    STAT_EXECUTIONS,
    STAT_FAULTS,
    STAT_ON_BEHALF,
    STAT_WORDS,
    STAT_WRITES,
    ProcessWorkers,
    ThreadWorkers,
    WorkerSpec,
)
from .dirtylog import algorithm_name, algorithm_ref, resolve_algorithm
from .errors import ConcurrentDirtyError, DeadlockError, UsageError
from .kvm import Kvm
from .memslot import MemslotFlags, MemslotTable
from .oracle import Migration, Violation
from .scenario import Scenario

__all__ = ["CellResult", "Progress", "run_cell"]

_MAX_VIOLATIONS = 50


@dataclass
class Progress:
    """A live snapshot, passed to the progress callback a few times a second."""

    algorithm: str
    engine: str
    elapsed: float
    budget: float
    executions: int
    writes: int
    rounds: int
    violations: int


@dataclass
class CellResult:
    algorithm: str
    engine: str
    scenario: dict[str, Any]
    seconds: float = 0.0
    executions: int = 0
    writes: int = 0
    faults: int = 0
    on_behalf: int = 0
    rounds: int = 0
    bits: int = 0
    copied: int = 0
    spurious: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None
    rerun: str = ""
    #: Ctrl-C (or SIGTERM) ended the cell early; its figures are partial.
    interrupted: bool = False

    @property
    def status(self) -> str:
        if self.interrupted and not self.violations and not self.error:
            return "interrupted"
        if self.error:
            return "ERROR"
        return "FAIL" if self.violations else "ok"

    @property
    def executions_per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm, "engine": self.engine, "status": self.status,
            "seconds": round(self.seconds, 3), "executions": self.executions,
            "executions_per_second": round(self.executions_per_second, 1),
            "writes": self.writes, "faults": self.faults, "on_behalf": self.on_behalf,
            "rounds": self.rounds, "bits_harvested": self.bits, "pages_copied": self.copied,
            "spurious_reports": self.spurious, "harvest_latency_ms": self.latency_ms,
            "violations": len(self.violations),
            "violation_reports": [v.to_json() for v in self.violations],
            "error": self.error, "interrupted": self.interrupted, "rerun": self.rerun,
            "scenario": self.scenario,
        }


def build_memslots(scenario: Scenario, slot_flags: MemslotFlags) -> MemslotTable:
    flags = MemslotFlags.LOG_DIRTY_PAGES | slot_flags
    if scenario.initially_set:
        flags |= MemslotFlags.INITIALLY_SET
    return MemslotTable.contiguous(scenario.slots, scenario.pages, flags)


def run_cell(scenario: Scenario, *, progress: Callable[[Progress], None] | None = None,
             rerun: str = "") -> CellResult:
    """Run ``scenario`` within its budget. Violations and errors of the code
    under test land in the result; bad arguments raise :class:`UsageError`."""
    cls = resolve_algorithm(scenario.algorithm)
    name = algorithm_name(cls)
    memslots = build_memslots(scenario, getattr(cls, "slot_flags", MemslotFlags.NONE))
    extra = cls.shared_words(memslots)
    if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in extra.items()):
        raise UsageError(f"expected {name}.shared_words() to return a dict of name: positive "
                         f"int, got {extra!r}")
    layout = Kvm.layout(memslots, scenario.writers, extra)
    layout.add("harness:ctl", CTL_WORDS)
    layout.add("harness:stats", STAT_WORDS * scenario.writers)
    layout.add("harness:completed", memslots.total_gfns)
    result = CellResult(algorithm=name, engine=scenario.engine, scenario=scenario.to_dict(),
                        rerun=rerun)
    processes = scenario.engine == "processes"
    arena: Arena | None = None
    spec = WorkerSpec(layout, memslots, scenario, algorithm_ref(cls))
    workers: ThreadWorkers | ProcessWorkers | None = None
    previous_hook = _switch.current()
    previous_interval = sys.getswitchinterval()
    migration: Migration | None = None
    start = time.monotonic()
    try:
        arena = Arena(layout, shared=processes)
        kvm = Kvm(arena, memslots, scenario.writers, scenario.lock_timeout, tlb=scenario.tlb)
        algorithm = cls(kvm)
        migration = Migration(kvm, algorithm, arena.words("harness:completed"),
                              algorithm_name=name, engine=scenario.engine, seed=scenario.seed,
                              rerun=rerun)
        if scenario.noise:
            _switch.install(_switch.NoiseHook(scenario.noise, scenario.seed * 1000 + 999))
        if scenario.switch_interval is not None and not processes:
            sys.setswitchinterval(scenario.switch_interval)
        workers = ProcessWorkers(arena, spec) if processes else ThreadWorkers(arena, spec, cls)
        with deferred_interrupts():  # never leave a child started but not set up
            workers.start()
        # A writer that dies holding mmu_lock or inside a read-side section
        # must end the run now, not after the lock timeout.
        kvm.mmu_lock.on_wait = kvm.srcu.on_wait = workers.check
        if kvm.tlb is not None:
            kvm.tlb.on_wait = workers.check
        _wait_ready(arena, scenario, workers)
        _drive(scenario, kvm, cls, arena, migration, workers, result, progress)
    except ConcurrentDirtyError as exc:
        if isinstance(exc, UsageError) and migration is None:
            raise
        result.error = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        _switch.install(previous_hook)
        sys.setswitchinterval(previous_interval)
        if workers is not None:
            stuck = workers.stop()
            if stuck and result.error is None:
                result.error = f"writers did not stop: {', '.join(stuck)}"
        if not result.seconds:
            result.seconds = time.monotonic() - start
        if arena is not None:
            _collect(arena, scenario, migration, result)
            arena.close()
    return result


def _wait_ready(arena: Arena, scenario: Scenario, workers: ThreadWorkers | ProcessWorkers) -> None:
    ctl = arena.words("harness:ctl")
    deadline = time.monotonic() + 120
    while ctl.load(CTL_READY) < scenario.writers:
        workers.check()
        if time.monotonic() > deadline:
            raise DeadlockError("writers did not start within 120s")
        time.sleep(0.002)


def _drive(scenario: Scenario, kvm: Kvm, cls: Any, arena: Arena, migration: Migration,
           workers: ThreadWorkers | ProcessWorkers, result: CellResult,
           progress: Callable[[Progress], None] | None) -> None:
    ctl = arena.words("harness:ctl")
    stats = arena.words("harness:stats")
    start = time.monotonic()
    result.seconds = 0.0
    deadline = start + scenario.seconds
    short = scenario.mode == "short"
    stall_after = 2 * scenario.lock_timeout + 5
    logging_slots = [s for s in kvm.memslots if s.logging]
    next_tick = start
    execution = 0
    while True:
        now = time.monotonic()
        if now >= deadline or migration.violations or (
                scenario.max_executions is not None and execution >= scenario.max_executions):
            break
        execution += 1
        for region in arena.layout.regions:
            if not region.startswith("harness:") or region == "harness:completed":
                arena.zero(region)
        algorithm = cls(kvm)  # fresh per execution, like the state
        for slot in logging_slots:
            algorithm.enable_dirty_logging(slot)
        migration.begin(execution, algorithm)
        ctl.store(CTL_DONE, 0)
        ctl.store(CTL_END, 0)
        ctl.store(CTL_GEN, execution)
        last_seen, last_change = -1, now
        while ctl.load(CTL_DONE) < scenario.writers:
            now = time.monotonic()
            if not short and now >= deadline:
                ctl.store(CTL_END, 1)
            migration.harvest_round()
            if now >= next_tick:
                next_tick = now + 0.05
                workers.check()
                seen = _sum_stat(stats, scenario.writers, STAT_WRITES) + ctl.load(CTL_DONE)
                if seen != last_seen:
                    last_seen, last_change = seen, now
                elif now - last_change > stall_after:
                    holder = kvm.mmu_lock.holder()
                    raise DeadlockError(
                        f"no writer made progress for {stall_after:g}s in execution "
                        f"{execution}; mmu_lock held by "
                        f"{'nobody' if holder is None else actor_name(holder)}")
                if progress is not None:
                    progress(_progress(migration, stats, scenario, start, execution))
            if scenario.interval:
                time.sleep(scenario.interval)
        workers.check()
        migration.harvest_round()
        migration.final_check()
        result.executions = execution
    del migration.violations[_MAX_VIOLATIONS:]
    result.seconds = time.monotonic() - start
    if progress is not None:
        progress(_progress(migration, stats, scenario, start, execution))


def _sum_stat(stats: Any, writers: int, which: int) -> int:
    return sum(stats.load(w * STAT_WORDS + which) for w in range(writers))


def _progress(migration: Migration, stats: Any, scenario: Scenario, start: float,
              execution: int) -> Progress:
    return Progress(algorithm=migration.label["algorithm"],  # type: ignore[arg-type]
                    engine=scenario.engine, elapsed=time.monotonic() - start,
                    budget=scenario.seconds, executions=execution,
                    writes=_sum_stat(stats, scenario.writers, STAT_WRITES),
                    rounds=migration.rounds, violations=len(migration.violations))


def _collect(arena: Arena, scenario: Scenario, migration: Migration | None,
             result: CellResult) -> None:
    try:
        stats = arena.words("harness:stats")
        result.writes = _sum_stat(stats, scenario.writers, STAT_WRITES)
        result.faults = _sum_stat(stats, scenario.writers, STAT_FAULTS)
        result.on_behalf = _sum_stat(stats, scenario.writers, STAT_ON_BEHALF)
        if not result.executions:
            result.executions = max(
                (stats.load(w * STAT_WORDS + STAT_EXECUTIONS) for w in range(scenario.writers)),
                default=0)
    except ConcurrentDirtyError:
        pass
    if migration is not None:
        result.rounds = migration.rounds
        result.bits = migration.bits
        result.copied = migration.copied
        result.spurious = migration.spurious
        result.latency_ms = migration.latencies.percentiles_ms()
        result.violations = migration.violations
