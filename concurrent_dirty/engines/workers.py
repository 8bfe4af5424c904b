"""Writer workers: the same loop on a thread or in a process.

Writers and the driver meet through a few control words: the driver bumps
``GEN`` to start an execution on fresh state, writers count themselves out
in ``DONE``, and ``STOP`` ends them. Waiting is polling with backoff, not an
OS primitive, so that the same code runs between threads and processes and a
dead partner is noticed (a child checks that its parent is still alive).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from .._core import switch as _switch
from .._core.asyncexc import raise_in, resync
from ..dirtylog import DirtyLogAlgorithm, resolve_algorithm
from ..errors import WorkerDied
from ..harness.execution import attach_kvm, make_vcpu, new_algorithm, run_writes
from ..harness.program import writer_stream
from ..harness.scenario import Scenario
from ..model.arena import Arena, Layout
from ..model.atomic import AtomicWords
from ..model.memslot import MemslotTable
from .watchdog import STACK_SIGNAL, Watchdog, read_dump

#: The engine's own regions (quiet: not switch points).
CTL, STATS = "harness:ctl", "harness:stats"
CTL_GEN, CTL_DONE, CTL_STOP, CTL_END, CTL_READY = range(5)
CTL_WORDS = 8
STAT_WRITES, STAT_FAULTS, STAT_ON_BEHALF, STAT_EXECUTIONS, STAT_BEAT = range(5)
STAT_WORDS = 5
_PUBLISH_EVERY = 64
_CHECK_EVERY = 16
_PARENT_EVERY = 1024


class _Stopped(BaseException):
    """The driver asked every writer to stop; unwind quietly."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a writer needs to rebuild its view of the VM (pickles)."""

    layout: Layout
    memslots: MemslotTable
    scenario: Scenario
    algorithm_ref: str


def _wait_for_execution(ctl: AtomicWords, last: int,
                        parent_alive: Callable[[], bool],
                        beat: Callable[[], None] = lambda: None) -> int | None:
    polls = 0
    while True:
        beat()  # idle, not hung
        if ctl.load(CTL_STOP):
            return None
        gen = ctl.load(CTL_GEN)
        if gen != last:
            return gen
        polls += 1
        if polls < 200:
            time.sleep(0)
        else:
            time.sleep(min(0.001, 20e-6 * (polls - 199)))
            if polls & 255 == 0 and not parent_alive():
                return None


def writer_main(arena: Arena, spec: WorkerSpec, cls: type[DirtyLogAlgorithm], vcpu_id: int,
                parent_alive: Callable[[], bool]) -> None:
    scenario = spec.scenario
    kvm = attach_kvm(arena, spec.memslots, scenario)
    ctl = arena.words(CTL)

    stats = arena.words(STATS)
    first_stat = vcpu_id * STAT_WORDS
    beats = [0]

    def beat() -> None:
        # The watchdog's heartbeat: every write, wait and idle poll.
        beats[0] += 1
        stats.store(first_stat + STAT_BEAT, beats[0])

    def while_waiting() -> None:
        beat()
        if not parent_alive():
            raise WorkerDied("the driver died while this writer waited")
        if ctl.load(CTL_STOP):
            raise _Stopped

    kvm.watch(while_waiting)
    vcpu = make_vcpu(cls, kvm, vcpu_id)

    def publish() -> None:
        stats.store(first_stat + STAT_WRITES, vcpu.writes)
        stats.store(first_stat + STAT_FAULTS, vcpu.faults)
        stats.store(first_stat + STAT_ON_BEHALF, vcpu.on_behalf)
        stats.store(first_stat + STAT_EXECUTIONS, vcpu.executions)

    def stop(n: int) -> bool:
        beat()
        if n and n % _PUBLISH_EVERY == 0:
            publish()
        if n and n % _PARENT_EVERY == 0:
            if not parent_alive():
                raise _Stopped
            if not short:
                # One long execution: a new noise level now and then.
                _switch.begin_execution(n, f"vcpu-{vcpu_id}:long")
        # END ends a long execution; STOP (Ctrl-C, an error) ends any.
        return n % _CHECK_EVERY == 0 and bool(ctl.load(CTL_END) or ctl.load(CTL_STOP))

    ctl.fetch_add(CTL_READY, 1)
    short = scenario.mode == "short"
    last = 0
    try:
        while True:
            gen = _wait_for_execution(ctl, last, parent_alive, beat)
            if gen is None:
                return
            last = gen
            _switch.begin_execution(gen, f"vcpu-{vcpu_id}")
            vcpu.new_execution(new_algorithm(cls, kvm))
            writes = writer_stream(scenario, spec.memslots, gen, vcpu_id)
            run_writes(vcpu, islice(writes, scenario.writes) if short else writes, stop)
            vcpu.executions += 1
            publish()
            ctl.fetch_add(CTL_DONE, 1)
    except _Stopped:
        pass


def _beat(stats: AtomicWords, wid: int) -> Callable[[], int]:
    return lambda: stats.load(wid * STAT_WORDS + STAT_BEAT)


class ThreadWorkers:
    """Writers as ``threading.Thread``s over the driver's own arena."""

    def __init__(self, arena: Arena, spec: WorkerSpec, cls: type[DirtyLogAlgorithm]) -> None:
        self.arena, self.spec, self.cls = arena, spec, cls
        self.errors: list[tuple[int, BaseException, str]] = []
        self.threads: list[threading.Thread] = []
        self.watchdog: Watchdog | None = None

    def watch(self, watchdog: Watchdog) -> None:
        """Put every writer under ``watchdog``; :meth:`check` raises its hang."""
        self.watchdog = watchdog
        stats = self.arena.words(STATS)
        for wid, t in enumerate(self.threads):
            assert t.ident is not None
            watchdog.watch_thread(f"vcpu {wid} (thread {t.name})", t.ident,
                                  _beat(stats, wid))

    def start(self) -> None:
        for wid in range(self.spec.scenario.writers):
            t = threading.Thread(target=self._run, args=(wid,), name=f"vcpu-{wid}", daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, wid: int) -> None:
        try:
            writer_main(self.arena, self.spec, self.cls, wid, lambda: True)
        except BaseException as exc:
            self.errors.append((wid, exc, traceback.format_exc()))

    def check(self) -> None:
        if self.watchdog is not None:
            self.watchdog.check()
        if self.errors:
            wid, exc, tb = self.errors[0]
            raise WorkerDied(f"vcpu {wid} (thread) raised {type(exc).__name__}: {exc}\n{tb}")

    def stop(self) -> list[str]:
        self.arena.words(CTL).store(CTL_STOP, 1)
        stuck: list[str] = []
        hung = self.watchdog is not None and self.watchdog.fired is not None
        deadline = time.monotonic() + (self.watchdog.grace if hung and self.watchdog
                                       else self.spec.scenario.lock_timeout + 5)
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive() and t.ident is not None:
                # Stuck outside every switch point (a loop in the code under
                # test): unwind it, or it would spin in this process forever.
                raise_in(t.ident, _Stopped)
                t.join(1.0)
                resync()  # raised but maybe not consumed: no stale flag
            if t.is_alive():
                stuck.append(t.name)
        return stuck


_ERROR_BYTES = 3000  # below PIPE_BUF: one write, never torn


def child_entry() -> None:
    """The writer process's entry point: its arguments arrive pickled on
    stdin, its error (if any) leaves through the inherited pipe."""
    # Ctrl-C goes to the whole process group; the parent alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    arena_name, spec, vcpu_id, parent_pid, error_fd = pickle.load(sys.stdin.buffer)
    with os.fdopen(error_fd, "wb", buffering=0) as errors:
        # The watchdog's way to see where a hung writer is: its stack on
        # the error pipe, then it is killed.
        faulthandler.register(STACK_SIGNAL, file=errors, all_threads=False)
        try:
            if spec.scenario.noise != 0:
                _switch.install(_switch.NoiseHook(spec.scenario.noise, spec.scenario.seed))
            arena = Arena(spec.layout, shared=True, attach=arena_name)
            try:
                cls = resolve_algorithm(spec.algorithm_ref)
                writer_main(arena, spec, cls, vcpu_id, lambda: os.getppid() == parent_pid)
            finally:
                arena.close()
        except BaseException as exc:
            text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            errors.write(text.encode()[-_ERROR_BYTES:])
            sys.exit(1)


class ProcessWorkers:
    """Writers in separate processes, attached to one SharedMemory segment.

    Each child is a fresh interpreter started with ``subprocess`` (like
    multiprocessing's spawn, but without re-running the caller's
    ``__main__``: the engine works from a script without a main guard, and
    from a notebook). It gets the caller's ``sys.path``, so the algorithm
    crosses over by reference (its built-in name or ``module:Class``).
    """

    def __init__(self, arena: Arena, spec: WorkerSpec) -> None:
        self.arena, self.spec = arena, spec
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pipes: list[int] = []
        self._stopping = False
        self.watchdog: Watchdog | None = None

    def watch(self, watchdog: Watchdog) -> None:
        """Put every writer process under ``watchdog``; :meth:`check` raises
        its hang."""
        self.watchdog = watchdog
        stats = self.arena.words(STATS)
        for wid, p in enumerate(self.procs):
            watchdog.watch_process(f"vcpu {wid} (process {p.pid})", _beat(stats, wid),
                                   lambda wid=wid: self._dump(wid))  # type: ignore[misc]

    def _dump(self, wid: int) -> str:
        """The stack of a hung writer process (faulthandler), then kill it."""
        p, fd = self.procs[wid], self.pipes[wid]
        try:
            os.kill(p.pid, STACK_SIGNAL)
            stack = read_dump(fd, 2.0) or "(it did not dump its stack)"
        except OSError as exc:
            stack = f"(no stack: {exc})"
        p.kill()
        return stack

    def start(self) -> None:
        assert self.arena.name is not None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        for wid in range(self.spec.scenario.writers):
            read_end, write_end = os.pipe()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c",
                     "from concurrent_dirty.engines.workers import child_entry; child_entry()"],
                    stdin=subprocess.PIPE, pass_fds=(write_end,), env=env,
                    # Its own process group: a terminal's Ctrl-C reaches only the
                    # parent, which stops the writers; a child still starting up
                    # would die of it with a traceback.
                    process_group=0)
            finally:
                os.close(write_end)
            self.procs.append(proc)
            self.pipes.append(read_end)
            assert proc.stdin is not None
            try:
                pickle.dump((self.arena.name, self.spec, wid, os.getpid(), write_end),
                            proc.stdin)
                proc.stdin.close()
            except BrokenPipeError:
                # The child died while starting (a stop signal reached it):
                # check() reports it, stop() reaps it; no traceback here.
                with contextlib.suppress(OSError):
                    proc.stdin.close()

    def _error(self, wid: int) -> str | None:
        fd = self.pipes[wid]
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            return None
        data = os.read(fd, 65536)
        return data.decode(errors="replace") if data else None

    def check(self) -> None:
        if self.watchdog is not None:
            self.watchdog.check()
        for wid, p in enumerate(self.procs):
            code = p.poll()
            if code is not None and not self._stopping:
                message = self._error(wid)
                if message is not None:
                    raise WorkerDied(f"vcpu {wid} (process {p.pid}) raised {message}")
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                raise WorkerDied(f"vcpu {wid} (process {p.pid}) died with {how}")

    def stop(self) -> list[str]:
        """Stop every child: ask, then terminate, then kill. Returns the
        names of children that had to be killed."""
        self._stopping = True
        try:
            self.arena.words(CTL).store(CTL_STOP, 1)
        except Exception:
            pass
        forced = []
        # As long as the threads' stop: a child that was hung is already
        # killed by the watchdog; a healthy one on a loaded machine may need
        # more than a moment to be scheduled, see STOP and exit.
        hung = self.watchdog is not None and self.watchdog.fired is not None
        deadline = time.monotonic() + (self.watchdog.grace if hung and self.watchdog
                                       else self.spec.scenario.lock_timeout + 5)
        for wid, p in enumerate(self.procs):
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                forced.append(f"vcpu-{wid}")
                p.terminate()
                try:
                    p.wait(2)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(2)
        for fd in self.pipes:
            os.close(fd)
        self.pipes.clear()
        return forced
