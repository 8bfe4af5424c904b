"""One execution, defined once for every engine.

An execution is: fresh VM state (every word zeroed, fresh algorithm
objects, dirty logging enabled), writers that each run their writes
(:func:`run_writes`), and a harvester that migrates guest memory round by
round and checks the oracles (:func:`run_harvester`). The engines only
decide how these threads run: free-running threads, processes, or one at a
time under a scheduler. Nothing here knows which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from .._core.runtime import Outcome, Verdict
from ..dirtylog import DirtyLogAlgorithm, algorithm_name
from ..errors import (
    AlgorithmError,
    AlgorithmMisuse,
    DeadlockError,
    ExecutionFailed,
    HangError,
    InvariantViolation,
    StepBoundExceeded,
)
from ..model.arena import Arena, Layout
from ..model.kvm import Kvm
from ..model.memslot import MemslotFlags, MemslotTable
from .oracle import Migration
from .program import Program, Write, build_memslots
from .scenario import Scenario
from .usercode import call_user
from .vcpu import Vcpu

__all__ = ["COMPLETED", "ExecutionResult", "Vm", "apply_model", "attach_kvm", "make_vcpu",
           "new_algorithm", "raise_first", "run_harvester", "run_writes", "slot_flags"]

#: The oracle's record of completed writes (harness bookkeeping, quiet).
COMPLETED = "harness:completed"
#: Lockless fixes in flight per page (fast page fault: between the cmpxchg
#: that makes an SPTE writable and its dirty mark), for the oracle.
FIXING = "harness:fixing"


def slot_flags(cls: type[DirtyLogAlgorithm]) -> MemslotFlags:
    """The memslot flags an algorithm needs, derived from its
    ``manual_protect`` (KVM_MEM_MANUAL_PROTECT for GET + CLEAR)."""
    return MemslotFlags.MANUAL_PROTECT if getattr(cls, "manual_protect", False) \
        else MemslotFlags.NONE


def _declared(cls: type[DirtyLogAlgorithm], method: str, memslots: MemslotTable) -> dict[str, int]:
    fn = getattr(cls, method, None)
    value = call_user(f"{cls.__name__}.{method}", fn, memslots) if fn is not None else {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in value.items()):
        raise AlgorithmError(f"expected {algorithm_name(cls)}.{method}() to return a dict of "
                             f"name: positive int, got {value!r}")
    return value


def vm_layout(cls: type[DirtyLogAlgorithm], memslots: MemslotTable, nvcpus: int,
              ring_entries: int = 0) -> Layout:
    """The shared words of one VM for ``cls``, plus the oracle's."""
    layout = Kvm.layout(memslots, nvcpus, _declared(cls, "shared_words", memslots),
                        _declared(cls, "shared_locks", memslots), ring_entries=ring_entries)
    layout.add(COMPLETED, memslots.total_gfns, quiet=True)
    layout.add(FIXING, memslots.total_gfns, quiet=True)
    return layout


def attach_kvm(arena: Arena, memslots: MemslotTable, scenario: Scenario) -> Kvm:
    """A view of the VM in ``arena`` (each writer process builds its own)."""
    return Kvm(arena, memslots, scenario.writers, scenario.lock_timeout, tlb=scenario.tlb,
               fast_page_fault=scenario.fast_page_fault, pml=scenario.pml,
               pml_entries=scenario.pml_entries, dirty_ring=scenario.dirty_ring,
               ring_entries=scenario.ring_entries, ring_soft_limit=scenario.ring_soft_limit,
               ring_batch=scenario.ring_batch)


def apply_model(cls: type[DirtyLogAlgorithm], scenario: Scenario) -> Scenario:
    """``scenario`` with the model options ``cls`` is written for turned on
    (its class attribute ``model``, e.g. ``{"fast_page_fault": True}``)."""
    model = getattr(cls, "model", None) or {}
    if not isinstance(model, Mapping) or not all(
            k in _MODEL_OPTIONS and isinstance(v, type(getattr(scenario, k)))
            for k, v in model.items()):
        raise AlgorithmError(f"expected {algorithm_name(cls)}.model to map model options "
                             f"{sorted(_MODEL_OPTIONS)} to values, got {model!r}")
    changed = {k: v for k, v in model.items() if getattr(scenario, k) != v}
    return replace(scenario, **changed) if changed else scenario


#: The Scenario fields an algorithm's ``model`` may turn on.
_MODEL_OPTIONS = frozenset({"fast_page_fault", "clear_words", "tlb", "pml", "pml_entries",
                            "dirty_ring"})


def make_vcpu(cls: type[DirtyLogAlgorithm], kvm: Kvm, vcpu_id: int) -> Vcpu:
    return Vcpu(vcpu_id, kvm, new_algorithm(cls, kvm), kvm.arena.words(COMPLETED),
                fixing=kvm.arena.words(FIXING))


def new_algorithm(cls: type[DirtyLogAlgorithm], kvm: Kvm) -> DirtyLogAlgorithm:
    """``cls(kvm)``; an exception in the constructor is the code under
    test's (a :class:`~concurrent_dirty.errors.CodeUnderTestError`)."""
    return call_user(f"{cls.__name__}.__init__ (the constructor)", cls, kvm)


class Vm:
    """The state of one VM shape, over an arena that may outlive an
    execution: :meth:`begin` puts it on fresh state, so that an engine can
    reuse the views and objects (building them costs more than a tiny
    execution) and still start every execution from scratch."""

    def __init__(self, cls: type[DirtyLogAlgorithm], scenario: Scenario, *, shared: bool,
                 harness_regions: dict[str, int] | None = None, engine: str,
                 rerun: str = "") -> None:
        self.cls = cls
        self.scenario = scenario = apply_model(cls, scenario)
        self.memslots = build_memslots(scenario, slot_flags(cls))
        layout = vm_layout(cls, self.memslots, scenario.writers,
                           scenario.ring_entries if scenario.dirty_ring else 0)
        for name, nwords in (harness_regions or {}).items():
            layout.add(name, nwords, quiet=True)
        self.layout = layout
        self._fresh = [r for r in layout.regions
                       if r in (COMPLETED, FIXING) or not r.startswith("harness:")]
        self.arena = Arena(layout, shared=shared)
        try:
            self.kvm = self.attach(self.arena)
            self.completed = self.arena.words(COMPLETED)
            self.algorithm = new_algorithm(cls, self.kvm)
            self.migration = Migration(self.kvm, self.algorithm, self.completed,
                                       algorithm_name=algorithm_name(cls), engine=engine,
                                       seed=scenario.seed, rerun=rerun,
                                       clear_words=scenario.clear_words,
                                       fixing=self.arena.words(FIXING))
        except BaseException:
            self.arena.close()
            raise
        self.execution = 0
        self._vcpus: list[Vcpu] = []

    def attach(self, arena: Arena) -> Kvm:
        """A view of this VM over ``arena`` (a writer process's own)."""
        return attach_kvm(arena, self.memslots, self.scenario)

    def begin(self, execution: int, *, fresh_stats: bool = False) -> None:
        """Fresh state for ``execution``: only while no writer runs. The
        migration's violations start empty; its statistics (rounds, bits,
        latencies) add up across executions unless ``fresh_stats``."""
        for region in self._fresh:
            self.arena.zero(region)
        # Fresh algorithm objects too: whatever Python state one keeps must
        # not leak from one execution into the next (replays depend on it).
        self.algorithm = new_algorithm(self.cls, self.kvm)
        for slot in self.memslots:
            if slot.logging:
                call_user(f"{self.cls.__name__}.enable_dirty_logging",
                          self.algorithm.enable_dirty_logging, slot)
        self.migration.begin(execution, self.algorithm)
        self.migration.violations.clear()
        if fresh_stats:
            self.migration.latencies.clear()
        self.execution = execution
        for vcpu in self._vcpus:
            vcpu.new_execution(new_algorithm(self.cls, self.kvm))

    def vcpu(self, vcpu_id: int) -> Vcpu:
        """A writer over this VM's own view."""
        return make_vcpu(self.cls, self.kvm, vcpu_id)

    def local_vcpus(self) -> list[Vcpu]:
        """Writers over this VM's own view, kept across executions and
        refreshed by :meth:`begin`."""
        if not self._vcpus:
            self._vcpus = [self.vcpu(w) for w in range(self.scenario.writers)]
        return self._vcpus

    def close(self) -> None:
        self.arena.close()


def run_writes(vcpu: Vcpu, writes: Iterable[Write],
               stop: Callable[[int], bool] | None = None) -> int:
    """A writer's loop: each write as the guest (a fault if the page is
    write-protected) or on its behalf, on the vCPU or (kind 2) with no
    running vCPU. ``stop(n)`` is asked before each
    write (n made so far) and ends the loop early. Returns the writes made."""
    n = 0
    for gfn, kind in writes:
        if stop is not None and stop(n):
            break
        if kind:
            vcpu.write_on_behalf(gfn, running=kind == 1)
        else:
            vcpu.guest_write(gfn)
        n += 1
    vcpu.exit_to_userspace()
    return n


def raise_first(migration: Migration) -> None:
    if migration.violations:
        raise InvariantViolation(migration.violations[0].describe(), list(migration.violations))


def run_harvester(migration: Migration, *, rounds: int | None,
                  writers_done: Callable[[], bool], wait_writers: Callable[[], None],
                  after_round: Callable[[], None] = lambda: None,
                  stuck_rounds: int = 0) -> None:
    """The harvester (userspace migrating the guest): harvest ``rounds``
    rounds (None: until ``writers_done()``), wait for the writers, harvest a
    final round and check that the destination equals the source; then
    ``stuck_rounds`` more rounds, with no writer left: a page that every one
    of them reports is a stuck bit (the liveness oracle; a correct algorithm
    reports nothing once the final round has taken every bit). Raises
    :class:`InvariantViolation` at the end of the first round that proves a
    bit lost or stuck."""
    done = 0
    while (done < rounds) if rounds is not None else not writers_done():
        migration.harvest_round()
        done += 1
        raise_first(migration)
        after_round()
    wait_writers()
    migration.harvest_round()
    raise_first(migration)
    migration.final_check()
    raise_first(migration)
    if stuck_rounds:
        stuck: set[int] | None = None
        for _ in range(stuck_rounds):
            reported = migration.harvest_round()
            raise_first(migration)
            stuck = reported if stuck is None else stuck & reported
        migration.check_stuck(stuck_rounds, stuck or set())
        raise_first(migration)


@dataclass
class ExecutionResult:
    """One controlled execution: what ran, and how it ended."""

    algorithm: str
    algorithm_ref: str
    scenario: Scenario
    program: Program
    outcome: Outcome
    names: list[str] = field(default_factory=list)
    #: Where a replay left its recorded schedule (None: it followed it).
    diverged_at: int | None = None
    #: There: the recorded thread and the runnable ones (ids into ``names``).
    divergence: tuple[int, tuple[int, ...]] | None = None
    #: The destination's guest memory at the end (page values, by gfn).
    image: tuple[int, ...] = ()

    @property
    def failed(self) -> bool:
        return self.outcome.failed

    @property
    def token(self) -> str:
        from .token import encode

        return encode(self)

    def counterexample(self) -> str:
        from .trace import format_trace

        return format_trace(self)

    def error(self) -> ExecutionFailed | None:
        """The typed failure (with the counterexample and the replay token
        in its message, and ``.result`` set), or None if it passed."""
        out = self.outcome
        if not out.failed:
            return None
        text = (f"{self.counterexample()}\n\nreplay token: {self.token}\n"
                f"  concurrent-dirty replay {self.token}")
        if out.kind is Verdict.VIOLATION:
            violations = out.exception.violations \
                if isinstance(out.exception, InvariantViolation) else []
            return InvariantViolation(text, violations, result=self)
        kinds: dict[Verdict, type[ExecutionFailed]] = {
            Verdict.DEADLOCK: DeadlockError, Verdict.STEP_BOUND: StepBoundExceeded,
            Verdict.HANG: HangError, Verdict.MISUSE: AlgorithmMisuse}
        return kinds.get(out.kind, ExecutionFailed)(text, result=self)

    def check(self) -> None:
        """Raise :meth:`error` if the execution failed."""
        exc = self.error()
        if exc is not None:
            raise exc
