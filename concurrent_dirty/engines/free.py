"""Run one stress cell (an algorithm on an engine) and measure it.

The driver thread is the harvester. It starts the writers, then for each
execution: puts the VM on fresh state, starts the writers, harvests rounds
until they are done, harvests a final round and runs the end-of-run oracle.
It stops at the first execution with a violation, when the budget is spent,
or on any error; the writers are stopped and the shared memory unlinked on
every path out, Ctrl-C included.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._core import switch as _switch
from .._core.asyncexc import cancel, resync
from ..dirtylog import algorithm_name, algorithm_ref, resolve_algorithm
from ..errors import ConcurrentDirtyError, DeadlockError, InvariantViolation, UsageError
from ..harness.cell import CellResult, Progress
from ..harness.execution import Vm, run_harvester
from ..harness.interrupt import deferred_interrupts
from ..harness.scenario import Scenario
from ..model.arena import Arena, unlink_all
from ..model.sync import actor_name
from .watchdog import Unwound, Watchdog
from .workers import (
    CTL,
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
    STATS,
    ProcessWorkers,
    ThreadWorkers,
    WorkerSpec,
)

__all__ = ["CellResult", "Progress", "run_cell"]

_MAX_VIOLATIONS = 50
#: In long mode, the harvester draws a new noise level every so many rounds
#: and each writer every so many writes (see ``workers``).
_LONG_REDRAW_ROUNDS = 64


def run_cell(scenario: Scenario, *, progress: Callable[[Progress], None] | None = None,
             rerun: str = "",
             on_abandon: Callable[[CellResult], None] | None = None) -> CellResult:
    """Run ``scenario`` within its budget. Violations and errors of the code
    under test land in the result; bad arguments raise :class:`UsageError`.

    A harvester hung in the code under test that cannot be unwound (see
    :mod:`.watchdog`) is abandoned: the writers are stopped, the shared
    memory unlinked, ``on_abandon(result)`` reports (default: the error on
    stderr) and the process exits with code 1.

    Engine ``kvm`` runs the cell on this machine's /dev/kvm
    (:func:`concurrent_dirty.kvm.engine.run_kvm_cell`)."""
    if scenario.engine == "kvm":
        from ..kvm.engine import run_kvm_cell

        return run_kvm_cell(scenario, progress=progress, rerun=rerun)
    from ..kvm.registry import is_kernel_protocol

    if is_kernel_protocol(scenario.algorithm):
        raise UsageError(f"expected a model algorithm on the {scenario.engine} engine, got "
                         f"the kernel protocol {scenario.algorithm!r} (it runs on --engine kvm "
                         f"only)")
    cls = resolve_algorithm(scenario.algorithm)
    name = algorithm_name(cls)
    result = CellResult(algorithm=name, engine=scenario.engine, scenario=scenario.to_dict(),
                        rerun=rerun)
    processes = scenario.engine == "processes"
    vm: Vm | None = None
    workers: ThreadWorkers | ProcessWorkers | None = None
    watchdog: Watchdog | None = None
    previous_hook = _switch.current()
    previous_interval = sys.getswitchinterval()
    start = time.monotonic()
    try:
        vm = Vm(cls, scenario, shared=processes, engine=scenario.engine, rerun=rerun,
                harness_regions={CTL: CTL_WORDS, STATS: STAT_WORDS * scenario.writers})
        if scenario.noise != 0:
            _switch.install(_switch.NoiseHook(scenario.noise, scenario.seed))
        if scenario.switch_interval is not None and not processes:
            sys.setswitchinterval(scenario.switch_interval)
        spec = WorkerSpec(vm.layout, vm.memslots, vm.scenario, algorithm_ref(cls))
        workers = ProcessWorkers(vm.arena, spec) if processes \
            else ThreadWorkers(vm.arena, spec, cls)
        with deferred_interrupts():  # never leave a child started but not set up
            workers.start()
        beat = [0]  # the harvester's heartbeat: rounds, waits, executions
        checking = workers.check

        def on_wait() -> None:
            beat[0] += 1
            checking()

        # A writer that dies holding mmu_lock or inside a read-side section
        # must end the run now, not after the lock timeout.
        vm.kvm.watch(on_wait)
        _wait_ready(vm.arena, scenario, workers)
        watchdog = _watchdog(scenario, vm, workers, result, beat, on_abandon)
        _drive(scenario, vm, workers, result, progress, beat)
    except ConcurrentDirtyError as exc:
        if isinstance(exc, UsageError) and vm is None:
            raise
        if watchdog is not None and watchdog.fired is not None:
            watchdog.unwound.set()
            result.error = f"HangError: {watchdog.fired}"
        elif not isinstance(exc, InvariantViolation):
            result.error = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        late = False
        if watchdog is not None:
            try:
                late = stop_watchdog(watchdog)
            except Unwound:  # it landed on the call's entry
                late = True
                stop_watchdog(watchdog)
        if late and result.error is None and not result.interrupted:
            # The call returned just as the watchdog fired: it still took
            # longer than the bound, a hang as any other.
            assert watchdog is not None
            result.error = f"HangError: {watchdog.fired}"
        _switch.install(previous_hook)
        sys.setswitchinterval(previous_interval)
        if workers is not None:
            stuck = workers.stop()
            if stuck and result.error is None:
                result.error = f"writers did not stop: {', '.join(stuck)}"
        if watchdog is not None and watchdog.fired is not None:
            # Its exception may never have been raised (the thread ended, or
            # is stuck in C): leave no stale flag (_core/asyncexc.py).
            resync()
        if not result.seconds:
            result.seconds = time.monotonic() - start
        if vm is not None:
            _collect(vm, scenario, result)
            vm.close()
    return result


def stop_watchdog(watchdog: Watchdog) -> bool:
    """Stop ``watchdog`` from the thread it watches (the driver), so that no
    unwinding it sent can land in the clean-up after: whether one landed
    here. The call it was meant for may have returned just as it fired
    (session 6's review: the exception could then cut ``run_cell``'s
    ``finally`` short, before the writers were stopped). Once the
    watchdog's thread has ended nothing new is sent; one sent and not yet
    raised is withdrawn (:func:`cancel`), one raised meanwhile is caught. The
    caller catches it too, around the call: it may land on the call's
    entry, before this function's own ``try``."""
    late = False
    for _ in range(2):  # it fires once: a second pass runs with nothing pending
        try:
            watchdog.unwound.set()  # the driver is here, not hung: no grace to wait
            watchdog.stop()
            cancel(threading.get_ident())
            return late
        except Unwound:
            late = True
    return late


def _watchdog(scenario: Scenario, vm: Vm, workers: ThreadWorkers | ProcessWorkers,
              result: CellResult, beat: list[int],
              on_abandon: Callable[[CellResult], None] | None) -> Watchdog:
    def abandon(report: str) -> None:
        # The harvester (this process's driver) is stuck for good: clean up
        # from here, report, and end the process.
        result.error = f"HangError: {report}"
        try:
            workers.stop()
        finally:
            unlink_all()
        if on_abandon is not None:
            on_abandon(result)
        else:
            sys.stderr.write(f"ERROR in {result.algorithm}/{result.engine}: {result.error}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    watchdog = Watchdog(scenario.watchdog, on_stuck=abandon)
    watchdog.watch_thread("the harvester (the driver thread)", threading.get_ident(),
                          lambda: beat[0])
    workers.watch(watchdog)
    watchdog.start()
    return watchdog


def _wait_ready(arena: Arena, scenario: Scenario, workers: ThreadWorkers | ProcessWorkers) -> None:
    ctl = arena.words(CTL)
    deadline = time.monotonic() + 120
    while ctl.load(CTL_READY) < scenario.writers:
        workers.check()
        if time.monotonic() > deadline:
            raise DeadlockError("writers did not start within 120s")
        time.sleep(0.002)


def _drive(scenario: Scenario, vm: Vm, workers: ThreadWorkers | ProcessWorkers,
           result: CellResult, progress: Callable[[Progress], None] | None,
           beat: list[int]) -> None:
    """The executions of a cell: fresh state, start the writers, the
    harness's harvester until they are done; until the budget is spent or
    a bit is lost."""
    ctl = vm.arena.words(CTL)
    stats = vm.arena.words(STATS)
    migration = vm.migration
    start = time.monotonic()
    result.seconds = 0.0
    deadline = start + scenario.seconds
    short = scenario.mode == "short"
    stall_after = 2 * scenario.lock_timeout + 5
    tick = {"next": start, "seen": -1, "change": start}

    def returned() -> None:  # each get_dirty_log / clear_dirty_log that returns
        beat[0] += 1

    migration.returned = returned

    def after_round() -> None:
        beat[0] += 1
        if not short and migration.rounds % _LONG_REDRAW_ROUNDS == 0:
            # One long execution: a new noise level now and then, as short
            # executions get one each.
            _switch.begin_execution(migration.rounds, "harvester:long")
        now = time.monotonic()
        if not short and now >= deadline:
            ctl.store(CTL_END, 1)
        if now >= tick["next"]:
            tick["next"] = now + 0.05
            workers.check()
            seen = _sum_stat(stats, scenario.writers, STAT_WRITES) + ctl.load(CTL_DONE)
            if seen != tick["seen"]:
                tick["seen"], tick["change"] = seen, now
            elif now - tick["change"] > stall_after:
                holder = vm.kvm.mmu_lock.holder()
                raise DeadlockError(
                    f"no writer made progress for {stall_after:g}s in execution "
                    f"{vm.execution}; mmu_lock held by "
                    f"{'nobody' if holder is None else actor_name(holder)}")
            if progress is not None:
                progress(_progress(vm, stats, scenario, start))
        if scenario.interval:
            time.sleep(scenario.interval)

    execution = 0
    try:
        while time.monotonic() < deadline and (
                scenario.max_executions is None or execution < scenario.max_executions):
            execution += 1
            beat[0] += 1
            result.executions = execution
            _switch.begin_execution(execution, "harvester")
            vm.begin(execution)
            ctl.store(CTL_DONE, 0)
            ctl.store(CTL_END, 0)
            ctl.store(CTL_GEN, execution)
            tick["change"] = time.monotonic()
            run_harvester(migration, rounds=None,
                          writers_done=lambda: ctl.load(CTL_DONE) >= scenario.writers,
                          wait_writers=workers.check, after_round=after_round,
                          stuck_rounds=scenario.stuck_rounds)
    finally:
        del migration.violations[_MAX_VIOLATIONS:]
        result.seconds = time.monotonic() - start
        if progress is not None:
            progress(_progress(vm, stats, scenario, start))


def _sum_stat(stats: Any, writers: int, which: int) -> int:
    return sum(stats.load(w * STAT_WORDS + which) for w in range(writers))


def _progress(vm: Vm, stats: Any, scenario: Scenario, start: float) -> Progress:
    migration = vm.migration
    return Progress(algorithm=migration.label["algorithm"],  # type: ignore[arg-type]
                    engine=scenario.engine, elapsed=time.monotonic() - start,
                    budget=scenario.seconds, executions=vm.execution,
                    writes=_sum_stat(stats, scenario.writers, STAT_WRITES),
                    rounds=migration.rounds, violations=len(migration.violations))


def _collect(vm: Vm, scenario: Scenario, result: CellResult) -> None:
    migration = vm.migration
    try:
        stats = vm.arena.words(STATS)
        result.writes = _sum_stat(stats, scenario.writers, STAT_WRITES)
        result.faults = _sum_stat(stats, scenario.writers, STAT_FAULTS)
        result.on_behalf = _sum_stat(stats, scenario.writers, STAT_ON_BEHALF)
        if not result.executions:
            result.executions = max(
                (stats.load(w * STAT_WORDS + STAT_EXECUTIONS) for w in range(scenario.writers)),
                default=0)
    except ConcurrentDirtyError:
        pass
    result.rounds = migration.rounds
    result.bits = migration.bits
    result.copied = migration.copied
    result.spurious = migration.spurious
    result.latency_ms = migration.latencies.percentiles_ms()
    result.violations = migration.violations
    if result.executions == 1:
        result.image = tuple(migration.dest)
