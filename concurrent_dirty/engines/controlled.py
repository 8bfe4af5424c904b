"""The controlled engine: one execution's threads, one at a time, under a
scheduler.

The writers and the harvester are the harness's
(:func:`~concurrent_dirty.harness.execution.run_writes`,
:func:`~concurrent_dirty.harness.execution.run_harvester`) on real threads
under a :class:`~concurrent_dirty._core.runtime.Runtime`; the harvester's
oracles raise at the end of the round that proves a bit lost, so a failure
has a step number that replay reproduces.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from .._core import switch as _switch
from .._core.runtime import DEFAULT_WATCHDOG, Observer, Outcome, Runtime, Scheduler, Verdict
from ..dirtylog import DirtyLogAlgorithm, algorithm_name, algorithm_ref, resolve_algorithm
from ..errors import CodeUnderTestError
from ..harness.execution import ExecutionResult, Vm, run_harvester, run_writes
from ..harness.program import Program, Write
from ..harness.scenario import Scenario
from ..harness.usercode import harness_frame
from ..harness.vcpu import Vcpu
from ..model.atomic import AtomicWords

__all__ = ["DEFAULT_MAX_STEPS", "run_controlled"]

DEFAULT_MAX_STEPS = 20_000

_VMS: dict[tuple[Any, ...], Vm] = {}
_VMS_KEPT = 16


def _vm(cls: type[DirtyLogAlgorithm], scenario: Scenario) -> Vm:
    key = (cls, scenario.slots, scenario.pages, scenario.initially_set, scenario.lock_timeout,
           scenario.tlb, scenario.seed, scenario.writers, scenario.clear_words,
           scenario.fast_page_fault, scenario.pml,
           scenario.pml_entries, scenario.dirty_ring, scenario.ring_entries,
           scenario.ring_soft_limit, scenario.ring_batch)
    vm = _VMS.pop(key, None)
    if vm is None:
        vm = Vm(cls, scenario, shared=False, engine="controlled")
        while len(_VMS) >= _VMS_KEPT:
            _VMS.pop(next(iter(_VMS))).close()
    _VMS[key] = vm  # most recently used last
    return vm


def run_controlled(algorithm: str | type[DirtyLogAlgorithm], scenario: Scenario,
                   program: Program, scheduler: Scheduler, *,
                   max_steps: int = DEFAULT_MAX_STEPS, trace: bool = False,
                   watchdog: float = DEFAULT_WATCHDOG,
                   observe: Observer | None = None) -> ExecutionResult:
    """Run ``program`` once under ``scheduler`` (whose ``new_execution`` the
    caller has already called), on fresh state."""
    cls = resolve_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
    if scenario.writers != len(program.writes):
        from dataclasses import replace

        scenario = replace(scenario, writers=len(program.writes))
    program.check_fits(scenario.slots * scenario.pages)
    try:
        vm = _vm(cls, scenario)
        vcpus = vm.local_vcpus()
        vm.begin(1, fresh_stats=True)
    except CodeUnderTestError as exc:  # before any thread ran: a failure at step 0
        failed = Outcome(kind=Verdict.ERROR, message=str(exc), thread="set-up", exception=exc)
        return ExecutionResult(algorithm=algorithm_name(cls), algorithm_ref=algorithm_ref(cls),
                               scenario=scenario, program=program, outcome=failed,
                               names=["set-up"])

    def words(region: str) -> AtomicWords | None:
        return vm.arena.words(region) if region in vm.layout.regions else None

    runtime = Runtime(scheduler, max_steps=max_steps, words=words, trace=trace,
                      watchdog=watchdog, observe=observe)
    writer_ids = [runtime.spawn(f"vcpu {w}", _writer(vcpus[w], writes))
                  for w, writes in enumerate(program.writes)]
    migration = vm.migration
    runtime.spawn("harvester", lambda: run_harvester(
        migration, rounds=program.rounds, writers_done=lambda: False,
        wait_writers=lambda: runtime.wait_for(writer_ids), stuck_rounds=scenario.stuck_rounds))
    previous = _switch.install(runtime)
    try:
        outcome = runtime.run()
    finally:
        _switch.install(previous)
    account = getattr(scheduler, "account", None)
    if account is not None:
        account(outcome)  # the Metrics wrapper counts once per execution
    if outcome.kind is Verdict.MISUSE and outcome.exception is not None:
        # Where the code under test misused the model, not the harness's
        # own frames (which read like a crash of the harness).
        frames = [f for f in traceback.extract_tb(outcome.exception.__traceback__)
                  if not harness_frame(f.filename)]
        where = "".join(traceback.format_list(frames)).rstrip()
        outcome.message = str(outcome.exception) + (
            f"\nwhere the code under test did it (most recent call last):\n{where}"
            if where else "")
    return ExecutionResult(algorithm=algorithm_name(cls), algorithm_ref=algorithm_ref(cls),
                           scenario=scenario, program=program, outcome=outcome,
                           names=[t.name for t in runtime.threads],
                           diverged_at=getattr(scheduler, "diverged_at", None),
                           divergence=getattr(scheduler, "divergence", None),
                           image=tuple(migration.dest))


def _writer(vcpu: Vcpu, writes: tuple[Write, ...]) -> Callable[[], None]:
    def run() -> None:
        run_writes(vcpu, writes)
    return run
