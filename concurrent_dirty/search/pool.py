"""Every core and past one machine: shard specs, the deterministic split of
a campaign, and a small pool of job processes.

**Split.** A campaign is cut twice: ``--shard K/N`` picks one of N disjoint
parts (a CI matrix of N jobs covers the whole), then ``--jobs J`` cuts that
part among J processes on this machine. Both are fixed functions of the
command line: the same command covers the same executions, seeds or cells.
:func:`share` divides a count, :func:`pick` deals a list out round-robin,
:func:`stream_seed` derives a job's scheduler seed (the campaign's own seed
when there is one job and one shard, so ``--jobs 1`` is exactly today's
run; the first job's is always the shard's single stream's).

**Processes.** Each job is a fresh interpreter started with ``subprocess``
(as the writer processes are: no fork of a threaded parent, no re-run of
the caller's ``__main__``), given its task as a pickle on stdin. A job runs
a task function ``f(ctx, **kwargs)`` named ``module:function``; ``ctx``
lets it send messages to the parent (``ctx.emit``) and ask whether the
parent has asked it to stop something (``ctx.stopped(key)``). A job dies
with its parent: the kernel sends it SIGTERM when the parent dies
(``PR_SET_PDEATHSIG``), and a closed stdin (the parent gone, or stopping
everything) ends it too. SIGTERM in a job is a ``KeyboardInterrupt``, so
the task's own clean-up runs (writers stopped, segments unlinked); Ctrl-C
reaches the parent alone (jobs ignore SIGINT), which stops every job.

Layer 7 (``search``): imports nothing of the project at module level but
``errors``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UsageError

if TYPE_CHECKING:
    import subprocess

# pickle, select, subprocess and hashlib are imported where a job process
# or a derived seed needs them: ``--jobs 1`` (and a ``--jobs N`` whose first
# job ends before the others start) runs no process and pays for neither.

__all__ = ["Job", "JobContext", "JobOutcome", "Shard", "default_jobs",
           "parse_jobs", "parse_shard", "pick", "run_jobs", "share", "stream_seed"]

T = TypeVar("T")

_SEED_BITS = 63


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``; ``str()`` is the 1-based ``K/N``."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N (N at most 10^6) -> ``Shard(K-1, N)``."""
    k_text, sep, n_text = text.strip().partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n or n > 1_000_000:
        raise UsageError(f"expected a shard K/N with 1 <= K <= N <= 1000000, got {text!r}")
    return Shard(k - 1, n)


def default_jobs() -> int:
    return os.cpu_count() or 1


def parse_jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024:
        raise UsageError(f"expected a number of jobs from 1 to 1024, got {text!r}")
    return value


def share(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` cut into ``parts`` near-equal parts (the
    first ``total % parts`` get one more); the parts add up to ``total``."""
    return total // parts + (1 if index < total % parts else 0)


def pick(items: Sequence[T], parts: int, index: int) -> list[T]:
    """Every ``parts``-th item, starting at ``index``: round-robin dealing,
    so that cells of one subject spread over the parts."""
    return list(items[index::parts])


def stream_seed(seed: int, shard: Shard, jobs: int, job: int) -> int:
    """The scheduler seed of job ``job`` of ``jobs`` in ``shard``: the
    campaign's own seed for the single stream, else a hash of (seed, shard,
    jobs, job), a signed 63-bit integer. The first job's seed is the
    shard's single stream's, whatever ``jobs`` is: ``--jobs J``'s first job
    runs what ``--jobs 1`` runs."""
    if job == 0:
        jobs = 1
    if shard.whole and jobs == 1:
        return seed
    try:  # hashlib's own blake2b, without hashlib's OpenSSL bindings (4 ms to import)
        from _blake2 import blake2b
    except ImportError:  # an interpreter built without it
        from hashlib import blake2b

    text = f"concurrent-dirty stream:{seed}:{shard.index}/{shard.count}:{job}/{jobs}"
    digest = blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


# ---------------------------------------------------------------------------
# The pool


@dataclass(frozen=True)
class Job:
    """One job: ``func`` (``module:function``) called as ``func(ctx, **kwargs)``."""

    index: int
    func: str
    kwargs: dict[str, Any]


@dataclass
class JobOutcome:
    index: int
    result: Any = None
    #: The task raised (its traceback), or the process died (how).
    error: str | None = None
    #: SIGTERM or a closed stdin ended the job before its task finished.
    interrupted: bool = False
    seconds: float = 0.0
    pid: int = 0
    #: Not needed before it started its task (``unneeded``): stopped unstarted.
    dropped: bool = False


class JobContext:
    """What a task sees of the pool: ``emit`` a message to the parent,
    ``stopped(key)`` once the parent asked to stop ``key``."""

    def __init__(self, index: int, send: Callable[[Any], None], *,
                 remote: bool = False) -> None:
        self.index = index
        self._send = send
        self._remote = remote
        self._stopped: set[Any] = set()
        self._all = False

    def emit(self, kind: str, payload: Any = None) -> None:
        self._send(("msg", kind, payload))

    def finish(self, result: Any) -> None:
        """The task's result, sent before its process ends early (a
        harvester hung for good is abandoned: ``engines.free.run_cell``
        exits the process): the parent takes it as the job's outcome,
        whatever the exit code. In the parent's own process there is nobody
        to send it to (that job's caller reports): a no-op there."""
        if self._remote:
            self._send(("result", result))

    def stopped(self, key: Any = None) -> bool:
        return self._all or key in self._stopped

    def _stop(self, key: Any) -> None:
        if key is None:
            self._all = True
        self._stopped.add(key)


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    func: Callable[..., Any] = getattr(import_module(module), name)
    return func


def _frame(message: Any) -> bytes:
    import pickle

    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, "big") + data


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux; elsewhere the
    closed stdin still ends the job)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _interrupt(signum: int, frame: object) -> None:
    # Once: the SIGTERM of a group-wide signal and the parent's own stop
    # (or the control thread's) must not land a second KeyboardInterrupt in
    # the clean-up the first one started (a traceback from a __del__).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def child_main() -> None:
    """A job process's entry point."""
    import pickle
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent decides
    # Until its task starts, SIGTERM ends a job silently (it holds nothing
    # to clean up yet, and prints nothing); then it unwinds the task.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    stdin = sys.stdin.buffer
    job, parent_pid, result_fd = pickle.load(stdin)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(130)
    out = os.fdopen(result_fd, "wb", buffering=0)
    lock = threading.Lock()
    done = threading.Event()

    def send(message: Any) -> None:
        with lock:
            out.write(_frame(message))

    ctx = JobContext(job.index, send, remote=True)

    def control() -> None:
        # The parent's orders, then EOF: the parent closed our stdin (it is
        # stopping everything) or died. Either way, stop now.
        try:
            while True:
                kind, key = pickle.load(stdin)
                if kind == "stop":
                    ctx._stop(key)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        if not done.is_set():
            ctx._stop(None)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=control, name="job-control", daemon=True).start()
    code = 0
    try:
        func = _resolve(job.func)
        signal.signal(signal.SIGTERM, _interrupt)
        send(("started", None))
        result = func(ctx, **job.kwargs)
        done.set()
        send(("result", result))
    except KeyboardInterrupt:
        done.set()
        code = 130
        try:
            send(("interrupted", None))
        except OSError:
            pass
    except BaseException as exc:  # report it, whatever it is
        done.set()
        code = 1
        try:
            send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        except OSError:
            pass
    finally:
        # Ignore a late SIGTERM while we leave: the clean-up already ran.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    fd: int
    start: float
    buffer: bytearray = field(default_factory=bytearray)
    outcome: JobOutcome | None = None
    eof: bool = False
    started: bool = False


def _start(job: Job, env: dict[str, str]) -> _Running:
    import pickle
    import subprocess

    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "from concurrent_dirty.search.pool import child_main; child_main()"],
            stdin=subprocess.PIPE, pass_fds=(write_end,), env=env,
            # Its own process group: a terminal's Ctrl-C reaches the parent
            # alone, which stops the jobs (SIGTERM) and reports; a job never
            # prints a traceback of its own, even during its start-up.
            process_group=0)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    running = _Running(job, proc, read_end, time.monotonic())
    assert proc.stdin is not None
    pickle.dump((job, os.getpid(), write_end), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    proc.stdin.flush()
    return running


def _tell(running: _Running, message: Any) -> None:
    import pickle

    stdin = running.proc.stdin
    if stdin is None or stdin.closed:
        return
    try:
        pickle.dump(message, stdin)
        stdin.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _close_stdin(running: _Running) -> None:
    stdin = running.proc.stdin
    if stdin is not None and not stdin.closed:
        try:
            stdin.close()
        except (BrokenPipeError, OSError):
            pass


def run_jobs(jobs: Sequence[Job], *,
             on_message: Callable[[int, str, Any], None] | None = None,
             stop_on: Callable[[int, str, Any], Any] | None = None,
             unneeded: Callable[[int], bool] | None = None,
             local: bool = False, start_after: float = 0.0,
             late: Callable[[Job, float], Job] | None = None,
             grace: float = 15.0) -> list[JobOutcome]:
    """Run every job and wait for all of them.

    With ``local``, the first job runs in this thread (its kwargs are not
    pickled) while the others start in their own processes: the search
    begins at once, and one job is the same code as many, with no process
    at all. Otherwise every job gets a process.

    ``on_message(job, kind, payload)`` sees every message a job emits (one
    at a time, whichever job sent it). ``stop_on(job, kind, payload)`` may
    return a key (not None) to tell every *other* job to stop that key (what
    ``ctx.stopped(key)`` reads): the first failure stops the rest promptly.
    ``unneeded(job)``, asked while a job process has not started its task
    yet (its interpreter still starting), may say it has nothing left to do
    (everything it would run was stopped): it is then ended at once, with a
    ``dropped`` outcome, instead of being waited for. An exception of the
    local job, Ctrl-C or SIGTERM (a ``KeyboardInterrupt`` here) stops every
    job, waits up to ``grace`` seconds for their clean-up, kills what is
    left, and re-raises. Outcomes come back in job order.

    ``start_after`` (with ``local``): the other jobs' processes start only
    once the local job has run that many seconds (or has ended), and a job
    that is ``unneeded`` by then never starts (a ``dropped`` outcome): a
    search that ends sooner pays for no interpreter, and on a busy machine
    the local job does not share its core with their start-up.
    ``late(job, elapsed)`` gives a delayed job as it starts ``elapsed``
    seconds after the run began (its time budget shortened by as much, so
    that every job ends by the campaign's wall-clock bound)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    here = jobs[0] if local and jobs else None
    running: list[_Running] = []
    issued: list[Any] = []
    lock = threading.RLock()
    contexts: list[JobContext] = []

    def dispatch(index: int, what: str, payload: Any) -> None:
        with lock:
            if on_message is not None:
                on_message(index, what, payload)
            key = stop_on(index, what, payload) if stop_on is not None else None
            if key is None:
                return
            issued.append(key)  # for a job that starts later
            for other in running:
                if other.job.index != index and other.outcome is None:
                    _tell(other, ("stop", key))
            for ctx in contexts:
                if ctx.index != index:
                    ctx._stop(key)

    began = time.monotonic()
    halt = threading.Event()
    pump: threading.Thread | None = None
    pump_error: list[BaseException] = []
    outcomes: list[JobOutcome] = []

    local_done = threading.Event()
    later = [job for job in jobs if job is not here] if here is not None and start_after > 0 \
        else []
    delayed = {job.index for job in later}

    def start_later() -> None:
        """The delayed jobs: started once the local job has run
        ``start_after`` seconds or ended, unless unneeded or halted; each
        is told the stops issued before it started."""
        local_done.wait(start_after)
        for job in later:
            if late is not None:
                job = late(job, time.monotonic() - began)
            with lock:
                if halt.is_set():
                    return
                if unneeded is not None and unneeded(job.index):
                    outcomes.append(JobOutcome(job.index, dropped=True))
                    continue
            started = _start(job, env)  # not under the lock: dispatch goes on
            with lock:
                running.append(started)
                for key in issued:
                    _tell(started, ("stop", key))

    def pump_thread() -> None:
        # An error reading the jobs (a bug in a callback, an unpickling
        # error) must end the run, not leave some jobs' outcomes missing.
        try:
            if later:
                start_later()
            _pump(running, dispatch, unneeded, halt, lock)
        except BaseException as exc:
            pump_error.append(exc)
            halt.set()
            for ctx in contexts:  # the local job stops at its next check
                ctx._stop(None)

    try:
        for job in jobs:
            if job is not here and job.index not in delayed:
                running.append(_start(job, env))
        if here is None:
            _pump(running, dispatch, unneeded, halt, lock)
        else:
            # The local job's context exists before the pump reads a stop
            # request that concerns it.
            ctx = JobContext(here.index, lambda m: dispatch(here.index, m[1], m[2]))
            contexts.append(ctx)
            pump = threading.Thread(target=pump_thread, name="cd-jobs", daemon=True)
            pump.start()
            start = time.monotonic()
            try:
                result = _resolve(here.func)(ctx, **here.kwargs)
            except BaseException:
                halt.set()  # before local_done: no delayed job starts now
                raise
            finally:
                local_done.set()
            outcomes.append(JobOutcome(here.index, result=result, pid=os.getpid(),
                                       seconds=time.monotonic() - start))
            while pump.is_alive():
                pump.join(0.1)
            if pump_error:
                raise pump_error[0]
        for r in running:
            _close_stdin(r)
            r.proc.wait()
    except BaseException:
        halt.set()
        local_done.set()
        if pump is not None:
            pump.join()
        _stop_all(running, grace)
        raise
    finally:
        for r in running:
            if r.proc.poll() is None:  # only on an error in this loop itself
                r.proc.kill()
                r.proc.wait()
            _close_stdin(r)
            try:
                os.close(r.fd)
            except OSError:
                pass
    outcomes += [r.outcome for r in running if r.outcome is not None]
    return sorted(outcomes, key=lambda o: o.index)


def _pump(running: list[_Running], dispatch: Callable[[int, str, Any], None],
          unneeded: Callable[[int], bool] | None, halt: threading.Event,
          lock: threading.RLock) -> None:
    """Read every job process's messages until each has its outcome."""
    import select

    while any(r.outcome is None for r in running) and not halt.is_set():
        fds = [r.fd for r in running if not r.eof]
        ready = select.select(fds, [], [], 0.05)[0] if fds else []
        for r in running:
            if r.fd in ready:
                _read(r, dispatch)
            if r.outcome is None and r.eof:
                code = r.proc.wait()
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                r.outcome = JobOutcome(r.job.index, error=f"job {r.job.index + 1} "
                                       f"(process {r.proc.pid}) died with {how}",
                                       seconds=time.monotonic() - r.start, pid=r.proc.pid)
            if r.outcome is None and not r.started and unneeded is not None:
                with lock:
                    drop = unneeded(r.job.index)
                if drop and not select.select([r.fd], [], [], 0)[0]:
                    _drop(r)


def _drop(r: _Running) -> None:
    """End a job process that has not started its task: nothing of it is lost."""
    import subprocess

    try:
        r.proc.send_signal(signal.SIGTERM)
    except OSError:
        pass
    try:
        r.proc.wait(5)
    except subprocess.TimeoutExpired:
        r.proc.kill()
        r.proc.wait()
    # Only now: a child that started its task meanwhile would read EOF on
    # stdin as a second stop, which could land inside its clean-up.
    _close_stdin(r)
    r.eof = True
    r.outcome = JobOutcome(r.job.index, dropped=True, seconds=time.monotonic() - r.start,
                           pid=r.proc.pid)


def _read(r: _Running, dispatch: Callable[[int, str, Any], None]) -> None:
    import pickle

    data = os.read(r.fd, 1 << 16)
    if not data:
        r.eof = True
        return
    r.buffer += data
    while len(r.buffer) >= 8:
        size = int.from_bytes(r.buffer[:8], "big")
        if len(r.buffer) < 8 + size:
            break
        message = pickle.loads(bytes(r.buffer[8:8 + size]))
        del r.buffer[:8 + size]
        kind = message[0]
        elapsed = time.monotonic() - r.start
        if kind == "started":
            r.started = True
        elif kind == "msg":
            _, what, payload = message
            dispatch(r.job.index, what, payload)
        elif kind == "result":
            r.outcome = JobOutcome(r.job.index, result=message[1], seconds=elapsed,
                                   pid=r.proc.pid)
        elif kind == "interrupted":
            r.outcome = JobOutcome(r.job.index, interrupted=True, seconds=elapsed,
                                   pid=r.proc.pid)
        elif kind == "error":
            r.outcome = JobOutcome(r.job.index, error=message[1], seconds=elapsed,
                                   pid=r.proc.pid)


def _stop_all(running: list[_Running], grace: float) -> None:
    """SIGTERM every job (its clean-up runs), wait, then SIGKILL the rest."""
    import subprocess

    for r in running:
        if r.proc.poll() is None:
            try:
                r.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
    deadline = time.monotonic() + grace
    for r in running:
        try:
            r.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            for other in running:
                if other.proc.poll() is None:
                    other.proc.kill()
                    other.proc.wait()
            break
