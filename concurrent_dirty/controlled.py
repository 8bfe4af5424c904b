"""One controlled execution of a scenario, and the programs it runs.

A :class:`Program` is the scenario's shape as plain data: for each writer,
its writes in order (gfn, and whether KVM makes it on the guest's behalf),
and how many harvest rounds race them before the final one. The writers and
the harvester are real threads under a :class:`~concurrent_dirty._controlled.
Runtime`; the harvester's oracles raise at the end of the round that proves
a bit lost, so a failure has a step number that replay reproduces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from . import _switch
from ._arena import Arena
from ._controlled import Outcome, Runtime, Scheduler
from ._vcpu import Vcpu, workload_picker
from .dirtylog import DirtyLogAlgorithm, algorithm_name, algorithm_ref, resolve_algorithm
from .errors import ConcurrentDirtyError, DeadlockError, InvariantViolation, UsageError
from .kvm import Kvm
from .memslot import MemslotFlags
from .oracle import Migration
from .scenario import Scenario
from .stress import build_memslots

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
        from ._token import encode

        return encode(self)

    def counterexample(self) -> str:
        from ._trace import format_trace

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
        if out.kind == "violation":
            violations = getattr(out.exception, "violations", [])
            raise InvariantViolation(text, violations)
        if out.kind in ("deadlock", "step-bound"):
            raise DeadlockError(text)
        raise ConcurrentDirtyError(text)


def run_controlled(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario,
                   program: Program, scheduler: Scheduler, *,
                   max_steps: int = DEFAULT_MAX_STEPS, trace: bool = False) -> ExecutionResult:
    """Run ``program`` once under ``scheduler`` (whose ``new_execution`` the
    caller has already called)."""
    cls = resolve_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
    memslots = build_memslots(scenario, getattr(cls, "slot_flags", MemslotFlags.NONE))
    total = memslots.total_gfns
    for w, writes in enumerate(program.writes):
        for gfn, _ in writes:
            if not 0 <= gfn < total:
                raise UsageError(f"expected gfns in [0, {total}) for writer {w}, got {gfn}")
    nwriters = len(program.writes)
    layout = Kvm.layout(memslots, nwriters, cls.shared_words(memslots))
    layout.add("harness:completed", total)
    arena = Arena(layout, shared=False)
    try:
        kvm = Kvm(arena, memslots, nwriters, scenario.lock_timeout)
        algo = cls(kvm)
        for slot in memslots:
            if slot.logging:
                algo.enable_dirty_logging(slot)
        completed = arena.words("harness:completed")
        name = algorithm_name(cls)
        migration = Migration(kvm, algo, completed, algorithm_name=name, engine="controlled",
                              seed=scenario.seed)
        migration.begin(1)
        runtime = Runtime(scheduler, max_steps=max_steps, lock_word=arena.words("mmu_lock"),
                          words=lambda r: arena.words(r) if r in layout.regions else None,
                          ignore=_IGNORED, trace=trace)
        writer_ids = []
        for w, writes in enumerate(program.writes):
            vcpu = Vcpu(w, kvm, cls(kvm), completed)
            writer_ids.append(runtime.spawn(f"vcpu {w}", _writer(vcpu, writes)))

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
        return ExecutionResult(algorithm=name, algorithm_ref=algorithm_ref(cls),
                               scenario=scenario, program=program, outcome=outcome,
                               names=[t.name for t in runtime.threads])
    finally:
        arena.close()


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
