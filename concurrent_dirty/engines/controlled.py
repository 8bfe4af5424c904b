"""One controlled execution of a scenario, and the programs it runs.

A :class:`Program` is the scenario's shape as plain data: for each writer,
its writes in order (gfn, and whether KVM makes it on the guest's behalf),
and how many harvest rounds race them before the final one. The writers and
the harvester are real threads under a :class:`~concurrent_dirty._core.runtime.
Runtime`; the harvester's oracles raise at the end of the round that proves
a bit lost, so a failure has a step number that replay reproduces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .._core import switch as _switch
from .._core.runtime import Outcome, Runtime, Scheduler
from ..dirtylog import DirtyLogAlgorithm, algorithm_name, algorithm_ref, resolve_algorithm
from ..errors import ConcurrentDirtyError, DeadlockError, InvariantViolation, UsageError
from ..harness.oracle import Migration
from ..harness.scenario import Scenario
from ..model.arena import Arena
from ..model.atomic import AtomicWords
from ..model.kvm import Kvm
from ..model.memslot import MemslotFlags
from ..model.vcpu import Vcpu, workload_picker
from .free import build_memslots

__all__ = ["Program", "ExecutionResult", "run_controlled", "make_program", "DEFAULT_MAX_STEPS"]

DEFAULT_MAX_STEPS = 20_000
# Harness bookkeeping that must not be a switch point: the oracle's words.
_IGNORED = frozenset({"harness:completed"})


@dataclass(frozen=True)
class Program:
    writes: tuple[tuple[tuple[int, bool], ...], ...]
    rounds: int = 2

    def __post_init__(self) -> None:
        if not self.writes:
            raise UsageError("expected at least one writer in the program, got none")
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise UsageError(f"expected rounds >= 0, got {self.rounds!r}")

    def to_json(self) -> dict[str, Any]:
        return {"writes": [[[g, int(b)] for g, b in w] for w in self.writes],
                "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: Any) -> Program:
        return cls(writes=tuple(tuple((int(g), bool(b)) for g, b in w) for w in data["writes"]),
                   rounds=int(data["rounds"]))


def make_program(scenario: Scenario, rounds: int = 2, execution: int = 0) -> Program:
    """The writes the free-running engines would make, fixed in advance."""
    memslots = build_memslots(scenario, MemslotFlags.NONE)
    writes = []
    for w in range(scenario.writers):
        rng = random.Random(f"{scenario.seed}:{execution}:{w}")
        pick = workload_picker(scenario, memslots, w, rng)
        writes.append(tuple((pick(), rng.random() < scenario.on_behalf)
                            for _ in range(scenario.writes)))
    return Program(tuple(writes), rounds)


@dataclass
class ExecutionResult:
    algorithm: str
    algorithm_ref: str
    scenario: Scenario
    program: Program
    outcome: Outcome
    names: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome.failed

    @property
    def token(self) -> str:
        from ..harness.token import encode

        return encode(self)

    def counterexample(self) -> str:
        from ..harness.trace import format_trace

        return format_trace(self)

    def check(self) -> None:
        """Raise if the execution failed: :class:`InvariantViolation` for a
        lost bit, :class:`DeadlockError` for a deadlock or a step bound,
        with the counterexample and the replay token in the message."""
        out = self.outcome
        if not out.failed:
            return
        text = (f"{self.counterexample()}\n\nreplay token: {self.token}\n"
                f"  concurrent-dirty replay {self.token}")
        exc: ConcurrentDirtyError
        if out.kind == "violation":
            exc = InvariantViolation(text, getattr(out.exception, "violations", []))
        elif out.kind in ("deadlock", "step-bound"):
            exc = DeadlockError(text)
        else:
            exc = ConcurrentDirtyError(text)
        exc.result = self  # type: ignore[attr-defined]
        raise exc


class _Vm:
    """The state of one VM shape, kept across executions: building views
    and objects costs more than a tiny execution, so each execution only
    zeroes the words and restarts logging (fresh state all the same)."""

    def __init__(self, cls: type[DirtyLogAlgorithm], scenario: Scenario, nwriters: int) -> None:
        self.memslots = build_memslots(scenario, getattr(cls, "slot_flags", MemslotFlags.NONE))
        layout = Kvm.layout(self.memslots, nwriters, cls.shared_words(self.memslots))
        layout.add("harness:completed", self.memslots.total_gfns)
        self.layout = layout
        self.arena = Arena(layout, shared=False)
        self.kvm = Kvm(self.arena, self.memslots, nwriters, scenario.lock_timeout,
                       tlb=scenario.tlb)
        self.cls = cls
        self.algorithm = cls(self.kvm)
        self.completed = self.arena.words("harness:completed")
        self.vcpus = [Vcpu(w, self.kvm, cls(self.kvm), self.completed) for w in range(nwriters)]
        self.migration = Migration(self.kvm, self.algorithm, self.completed,
                                   algorithm_name=algorithm_name(cls), engine="controlled",
                                   seed=scenario.seed)

    def reset(self) -> None:
        for region in self.layout.regions:
            self.arena.zero(region)
        # Fresh algorithm objects too: whatever Python state one keeps must
        # not leak from one execution into the next (replays depend on it).
        self.algorithm = self.cls(self.kvm)
        for slot in self.memslots:
            if slot.logging:
                self.algorithm.enable_dirty_logging(slot)
        self.migration.begin(1, self.algorithm)
        self.migration.violations.clear()
        self.migration.latencies.clear()
        for vcpu in self.vcpus:
            vcpu.new_execution(self.cls(self.kvm))

    def words(self, region: str) -> AtomicWords | None:
        return self.arena.words(region) if region in self.layout.regions else None


_VMS: dict[tuple[Any, ...], _Vm] = {}
_VMS_KEPT = 4


def _vm(cls: type[DirtyLogAlgorithm], scenario: Scenario, nwriters: int) -> _Vm:
    key = (cls, scenario.slots, scenario.pages, scenario.initially_set, scenario.lock_timeout,
           scenario.tlb, scenario.seed, nwriters)
    vm = _VMS.pop(key, None)
    if vm is None:
        vm = _Vm(cls, scenario, nwriters)
        while len(_VMS) >= _VMS_KEPT:
            _VMS.pop(next(iter(_VMS))).arena.close()
    _VMS[key] = vm  # most recently used last
    return vm


def run_controlled(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario,
                   program: Program, scheduler: Scheduler, *,
                   max_steps: int = DEFAULT_MAX_STEPS, trace: bool = False) -> ExecutionResult:
    """Run ``program`` once under ``scheduler`` (whose ``new_execution`` the
    caller has already called), on fresh state."""
    cls = resolve_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
    total = scenario.slots * scenario.pages
    for w, writes in enumerate(program.writes):
        for gfn, _ in writes:
            if not 0 <= gfn < total:
                raise UsageError(f"expected gfns in [0, {total}) for writer {w}, got {gfn}")
    vm = _vm(cls, scenario, len(program.writes))
    vm.reset()
    migration = vm.migration
    runtime = Runtime(scheduler, max_steps=max_steps, lock_word=vm.arena.words("mmu_lock"),
                      words=vm.words, ignore=_IGNORED, trace=trace)
    writer_ids = [runtime.spawn(f"vcpu {w}", _writer(vm.vcpus[w], writes))
                  for w, writes in enumerate(program.writes)]

    def harvester() -> None:
        for _ in range(program.rounds):
            migration.harvest_round()
            _raise_first(migration)
        runtime.wait_for(writer_ids)
        migration.harvest_round()
        _raise_first(migration)
        migration.final_check()
        _raise_first(migration)

    runtime.spawn("harvester", harvester)
    previous = _switch.install(runtime)
    try:
        outcome = runtime.run()
    finally:
        _switch.install(previous)
    return ExecutionResult(algorithm=algorithm_name(cls), algorithm_ref=algorithm_ref(cls),
                           scenario=scenario, program=program, outcome=outcome,
                           names=[t.name for t in runtime.threads])


def _writer(vcpu: Vcpu, writes: tuple[tuple[int, bool], ...]) -> Any:
    def run() -> None:
        for gfn, on_behalf in writes:
            if on_behalf:
                vcpu.write_on_behalf(gfn)
            else:
                vcpu.guest_write(gfn)
    return run


def _raise_first(migration: Migration) -> None:
    if migration.violations:
        raise InvariantViolation(migration.violations[0].describe(), list(migration.violations))
