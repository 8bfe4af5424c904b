"""The kvm engine: run one stress cell against the real kernel.

Per execution (``short`` mode; ``long`` is one execution for the whole
budget): draw a program (:mod:`.program`), build a VM with its memslots and
the guest, start one OS thread per vCPU in ``KVM_RUN``, and let the
protocol under test harvest rounds into a destination while the guest
writes, checking oracle (b) after every round. Then stop the guest at its
next write (``stop`` in its control block: it exits at a clean point, as
``dirty_log_test`` parks its vCPU at a sync point), harvest a final round
with every vCPU out of ``KVM_RUN``, and check oracle (a).

Bounded everywhere: a protocol call that does not return within the
scenario's ``watchdog`` seconds is a hang (raised in the harvester; time a
vCPU spends waiting for ring room is the protocol's to end, and counts
against it); a vCPU that neither writes nor exits for that long is a hang;
every fd, mapping and thread is released on every path (Ctrl-C included).
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core.asyncexc import cancel, raise_in
from ..errors import ConcurrentDirtyError, DeadlockError, ExecutionFailed, HangError, UsageError
from ..harness.cell import CellResult, Progress
from ..harness.histogram import LatencyHistogram
from ..harness.scenario import Scenario
from .guest import CB, DATA_BASE, GUEST_MODE, GuestLayout
from .migration import KernelMigration
from .program import KernelProgram, draw_program, write_list
from .protocols import KernelProtocol
from .registry import resolve_protocol
from .vcpu import KvmVcpu, kick_handler
from .vm import KvmVm, probe

__all__ = ["run_kvm_cell"]

_MAX_VIOLATIONS = 50


@dataclass
class KvmStats:
    """What the kvm engine counts beyond a cell's common figures (the
    JSON's ``kvm`` object)."""

    rounds: int = 0
    syncs: int = 0
    ring_full_exits: int = 0
    ring_full_wait_ms_max: float = 0.0
    pages_cleared: int = 0
    ring_entries_reaped: int = 0
    ring_entries_reset: int = 0
    logging_toggles: int = 0
    latencies: LatencyHistogram = field(default_factory=LatencyHistogram)
    failing: tuple[int, KernelProgram] | None = None
    guest_mode: str = GUEST_MODE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"guest_mode": self.guest_mode, "syncs": self.syncs,
                               "ring_full_exits": self.ring_full_exits,
                               "ring_full_wait_ms_max": round(self.ring_full_wait_ms_max, 3),
                               "pages_cleared": self.pages_cleared,
                               "ring_entries_reaped": self.ring_entries_reaped,
                               "ring_entries_reset": self.ring_entries_reset,
                               "logging_toggles": self.logging_toggles}
        if self.failing is not None:
            out["failing_execution"] = self.failing[0]
            out["failing_program"] = self.failing[1].to_dict()
            out["failing_program_text"] = self.failing[1].describe()
        return out


class KernelError(ExecutionFailed):
    """The kernel, not the protocol, broke its side of the interface (a
    dirty ring out of step, say): reported with what was seen."""


class _Unwound(HangError):
    """Raised asynchronously in the harvester by :class:`_CallWatch`."""

    def __init__(self) -> None:
        super().__init__("the watchdog stopped a protocol call")


class _CallWatch:
    """Times the protocol's calls from another thread and raises
    :class:`HangError` in the harvester when one goes the bound without
    progress: a page sent to the destination is progress (a GiB harvest
    legitimately takes longer than the bound), a loop that sends nothing
    is not."""

    def __init__(self, seconds: float, harvester: int) -> None:
        self.seconds = seconds
        self.harvester = harvester
        self.since: float | None = None
        self.what = ""
        self.fired: str | None = None
        #: When the call last made progress (see the class docstring).
        self.progress: Callable[[], float] = lambda: 0.0
        #: Firing and the end of a call exclude each other, so the
        #: exception is raised only inside the call it timed.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvm watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                since = self.since
                if since is not None:
                    since = max(since, self.progress())
                if since is not None and self.fired is None \
                        and time.monotonic() - since > self.seconds:
                    self.fired = (f"the protocol's {self.what} has not returned within "
                                  f"{self.seconds:g}s (the watchdog), nor sent a page")
                    raise_in(self.harvester, _Unwound)

    def call(self, what: str, fn: Callable[[], None]) -> None:
        """Run one protocol call under the bound; a call past it ends with
        HangError, however it ended. An exception fired as the call returned
        is withdrawn (:func:`~concurrent_dirty._core.asyncexc.cancel`) so it
        cannot land elsewhere."""
        with self._lock:
            self.what, self.since = what, time.monotonic()
        try:
            try:
                fn()
            finally:
                with self._lock:
                    self.since = None  # the watchdog fires no more after this
                    fired = self.fired
                if fired is not None:
                    cancel(self.harvester)
        except _Unwound:
            raise HangError(str(self.fired)) from None
        if fired is not None:
            # It went the bound: a protocol that swallowed the unwinding
            # (an `except Exception`) is still a hang, and the watch, which
            # fires once, would not see a later one.
            raise HangError(fired)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


class _Execution:
    """One VM, one guest, one migration."""

    def __init__(self, scenario: Scenario, cls: type[KernelProtocol], execution: int,
                 program: KernelProgram, label: dict[str, object], rerun: str) -> None:
        self.scenario = scenario
        self.program = program
        self.execution = execution
        self.vcpus: list[KvmVcpu] = []
        self.migration: KernelMigration
        self.system: memoryview
        self.vm = KvmVm()
        try:
            self._build(cls, label, rerun)
        except BaseException:
            self.close()  # nothing half-built is left: fds, mappings, threads
            raise

    def _build(self, cls: type[KernelProtocol], label: dict[str, object], rerun: str) -> None:
        program, scenario, execution = self.program, self.scenario, self.execution
        self.layout = GuestLayout(nvcpus=program.vcpus, data_pages=program.pages,
                                  list_entries=program.writes)
        self.system = self.vm.add_system(self.layout)
        self.protocol = cls(self.vm, program, None)  # type: ignore[arg-type]
        self.protocol.prepare()
        self.vm.add_data_slots(list(program.slot_pages))
        self.migration = KernelMigration(self.vm.slots, label=label, execution=execution,
                                         rerun=rerun)
        self.protocol.migration = self.migration
        self.room = threading.Condition()
        self.generation = 0
        self.stopping = False
        self.waiting_since: dict[int, float] = {}
        for i in range(program.vcpus):
            self.vcpus.append(KvmVcpu(self.vm, i, self.layout, self.system,
                                      mode=scenario.guest_mode))
        self.protocol.vcpus = self.vcpus
        for vcpu in self.vcpus:
            self._load_guest(vcpu)
            vcpu.on_ring_full = self._wait_for_room

    def _load_guest(self, vcpu: KvmVcpu) -> None:
        layout, program = self.layout, self.program
        pages = write_list(program, vcpu.id, self.scenario.seed, self.execution)
        struct.pack_into(f"<{len(pages)}Q", self.system, layout.write_list(vcpu.id), *pages)
        for name, value in ((CB.LIST, layout.write_list(vcpu.id)), (CB.COUNT, len(pages)),
                             (CB.SYNC_EVERY, program.sync_every), (CB.VCPU_ID, vcpu.id),
                             (CB.PASSES, 0), (CB.DONE, layout.done(vcpu.id)),
                             (CB.DATA_BASE, DATA_BASE), (CB.STOP, 0),
                             (CB.DELAY, program.guest_delay)):
            vcpu.cb_store(name, value)

    # -- ring room --------------------------------------------------------------
    def _wait_for_room(self, vcpu: KvmVcpu) -> None:
        """A vCPU's DIRTY_RING_FULL exit: wait until the harvester has
        completed a round (reaped and reset), as QEMU's vCPU waits for
        its reaper."""
        self.waiting_since.setdefault(vcpu.id, time.monotonic())
        with self.room:
            seen = self.generation
            while self.generation == seen and not vcpu.kicked:
                self.room.wait(0.05)

    def _round_done(self) -> None:
        with self.room:
            self.generation += 1
            self.room.notify_all()

    # -- reading the guest -------------------------------------------------------
    def done_arrays(self) -> list[list[int]]:
        n = self.program.pages
        return [list(struct.unpack_from(f"<{n}Q", self.system, self.layout.done(v.id)))
                for v in self.vcpus]

    def writes(self) -> int:
        return sum(v.progress for v in self.vcpus)

    def close(self) -> None:
        """Release everything; idempotent."""
        for vcpu in self.vcpus:
            vcpu.kick()
        system: memoryview | None = getattr(self, "system", None)
        if system is not None:
            system.release()
        migration: KernelMigration | None = getattr(self, "migration", None)
        if migration is not None:
            migration.close()
        self.vm.close()


def _check_vcpus(ex: _Execution, watchdog: float, last: dict[int, tuple[int, float]]) -> None:
    now = time.monotonic()
    for vcpu in ex.vcpus:
        if vcpu.error is not None:
            raise vcpu.error
        progress = vcpu.progress
        seen, since = last.get(vcpu.id, (-1, now))
        if progress != seen or vcpu.done.is_set():
            last[vcpu.id] = (progress, now)
            ex.waiting_since.pop(vcpu.id, None)
            continue
        if now - since > watchdog:
            if vcpu.id in ex.waiting_since:
                lost_step = getattr(ex.protocol, "stall_report", lambda v: None)(vcpu)
                if lost_step is not None:
                    raise KernelError(lost_step)
                raise DeadlockError(
                    f"vcpu {vcpu.id} has waited {now - ex.waiting_since[vcpu.id]:.1f}s in "
                    f"DIRTY_RING_FULL exits ({vcpu.ring_full_exits} so far): the protocol "
                    f"never made room in its dirty ring (KVM_RESET_DIRTY_RINGS)")
            raise HangError(f"vcpu {vcpu.id} completed no write for {now - since:.1f}s "
                            f"({vcpu.exits} exits, progress {progress})")


def _run_execution(ex: _Execution, watch: _CallWatch, result: CellResult,
                   deadline: float, tick: Callable[[], None]) -> None:
    scenario, program, protocol, migration = ex.scenario, ex.program, ex.protocol, ex.migration
    rng = random.Random(f"kvm-pace:{scenario.seed}:{ex.execution}")
    toggles = {r: (s, off) for r, s, off in program.toggles}
    last: dict[int, tuple[int, float]] = {}
    start = time.monotonic()
    end = min(deadline, start + program.seconds)
    watch.progress = lambda: migration.last_copy
    for vcpu in ex.vcpus:
        vcpu.start()

    def one_round() -> None:
        writers = ex.done_arrays()
        needed = writers[0] if len(writers) == 1 else list(map(max, *writers))
        migration.begin_round((time.monotonic() - start) * 1e3)
        toggle = toggles.get(migration.round_no)
        if toggle is not None:
            slot = ex.vm.slots[toggle[0]]
            ex.vm.set_logging(slot, False)
            time.sleep(toggle[1])
            ex.vm.set_logging(slot, True)
            watch.call("restart after a logging toggle", lambda: protocol.restart(slot))
        t0 = time.perf_counter()
        watch.call("harvest", protocol.harvest)
        migration.record_latency(time.perf_counter() - t0)
        ex._round_done()
        migration.check_round(needed, writers)
        _check_vcpus(ex, scenario.watchdog, last)
        tick()

    while time.monotonic() < end and not all(v.done.is_set() for v in ex.vcpus):
        one_round()
        if program.pacing != "back-to-back" and not ex.waiting_since:
            pause = program.interval if program.pacing == "delay" \
                else rng.uniform(0, 2 * program.interval)
            time.sleep(pause)
        if migration.violations and scenario.mode == "short":
            break
    # Stop the guest at its next write; keep harvesting (a vCPU in a
    # ring-full exit needs room to reach its next check of `stop`).
    for vcpu in ex.vcpus:
        vcpu.cb_store(CB.STOP, 1)
    while not all(v.done.wait(0.001) for v in ex.vcpus):
        one_round()
    for vcpu in ex.vcpus:
        vcpu.join(scenario.watchdog)
        if vcpu.error is not None:
            raise vcpu.error
    migration.begin_round((time.monotonic() - start) * 1e3)
    watch.call("final harvest", protocol.final)
    writers = ex.done_arrays()
    migration.final_check(writers[0] if len(writers) == 1 else list(map(max, *writers)))


def run_kvm_cell(scenario: Scenario, *, progress: Callable[[Progress], None] | None = None,
                 rerun: str = "") -> CellResult:
    """Run ``scenario`` (engine ``kvm``) on this machine's /dev/kvm within
    its budget. Bad arguments and a missing /dev/kvm raise UsageError
    (:class:`~concurrent_dirty.kvm.vm.KvmUnavailable`); lost bits and
    errors of the protocol land in the result."""
    if scenario.engine != "kvm":
        raise UsageError(f"expected the kvm engine for run_kvm_cell, got {scenario.engine!r}")
    cls = resolve_protocol(scenario.algorithm)
    found = probe()
    found.require(cls.interface)
    result = CellResult(algorithm=cls.name, engine="kvm", scenario=scenario.to_dict(),
                        rerun=rerun)
    stats = KvmStats(guest_mode=scenario.guest_mode)
    result.extra = stats.to_json()
    label = {"algorithm": cls.name, "engine": "kvm", "seed": scenario.seed}
    watch = _CallWatch(scenario.watchdog, threading.get_ident())
    start = time.monotonic()
    deadline = start + scenario.seconds
    ex: _Execution | None = None
    violations: list[object] = []
    totals = {"writes": 0, "rounds": 0}
    next_tick = [start]

    def tick() -> None:
        now = time.monotonic()
        if progress is not None and now >= next_tick[0]:
            next_tick[0] = now + 0.1
            live = ex.writes() if ex is not None else 0
            live_rounds = ex.migration.round_no if ex is not None else 0
            progress(Progress(algorithm=cls.name, engine="kvm", elapsed=now - start,
                              budget=scenario.seconds, executions=result.executions,
                              writes=totals["writes"] + live,
                              rounds=totals["rounds"] + live_rounds,
                              violations=len(violations)))

    try:
        with kick_handler():  # every vCPU is stopped and released inside it
            try:
                execution = 0
                while time.monotonic() < deadline and (
                        scenario.max_executions is None or execution < scenario.max_executions):
                    execution += 1
                    result.executions = execution
                    program = draw_program(scenario, execution,
                                           max_vcpus=found.recommended_vcpus,
                                           interface=cls.interface)
                    ex = _Execution(scenario, cls, execution, program, label, rerun)
                    try:
                        _run_execution(ex, watch, result, deadline, tick)
                    finally:
                        try:
                            _account(ex, result, stats, totals)
                        finally:
                            _close(ex, result)
                    violations.extend(ex.migration.violations)
                    result.violations.extend(ex.migration.violations[:_MAX_VIOLATIONS])
                    if ex.migration.violations:
                        stats.failing = (execution, program)
                        result.extra = stats.to_json()
                        break
                    ex = None
            finally:
                if ex is not None and not ex.vm.closed:
                    _close(ex, result)
    except ConcurrentDirtyError as exc:
        if isinstance(exc, UsageError) and result.executions == 0:
            raise
        if ex is not None:
            stats.failing = (ex.execution, ex.program)
            result.extra = stats.to_json()
        if isinstance(exc, _Unwound):
            result.error = f"HangError: {watch.fired}"
        else:
            result.error = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        watch.stop()
        result.seconds = time.monotonic() - start
        tick()
    return result


def _close(ex: _Execution, result: CellResult) -> None:
    """Release an execution; a failure to do so is the cell's error unless
    it already has one (it never hides the error that ended the run)."""
    try:
        ex.close()
    except Exception as exc:
        if result.error is None:
            result.error = f"{type(exc).__name__} while releasing the VM: {exc}"
    stuck = [v.stuck for v in ex.vcpus if v.stuck]
    if stuck and result.error is None:
        result.error = f"HangError: {stuck[0]}"


def _account(ex: _Execution, result: CellResult, stats: KvmStats,
             totals: dict[str, int]) -> None:
    m = ex.migration
    writes = ex.writes()
    totals["writes"] += writes
    totals["rounds"] += m.round_no
    result.writes += writes
    result.rounds += m.round_no
    result.bits += m.bits
    result.copied += m.copied
    result.spurious += m.spurious
    stats.latencies.merge(m.latencies)
    result.latency_ms = stats.latencies.percentiles_ms()
    stats.rounds = result.rounds
    stats.syncs += sum(v.syncs for v in ex.vcpus)
    stats.ring_full_exits += sum(v.ring_full_exits for v in ex.vcpus)
    waits = [w for v in ex.vcpus for w in v.ring_full_waits]
    if waits:
        stats.ring_full_wait_ms_max = max(stats.ring_full_wait_ms_max, max(waits) * 1e3)
    stats.pages_cleared += m.cleared
    stats.ring_entries_reaped += m.reaped
    stats.ring_entries_reset += m.reset
    stats.logging_toggles += len([t for t in ex.program.toggles if t[0] <= m.round_no])
    result.extra = stats.to_json()
