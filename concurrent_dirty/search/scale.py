"""Campaigns split over jobs and shards (``--jobs``, ``--shard``): what one
job runs, and how the jobs' reports merge into one.

**fuzz** is split by *stream*. Stream ``j`` of ``J`` jobs in shard ``K/N``
runs its scheduler seeded with :func:`~.pool.stream_seed` (for the first
job, the seed of the shard's single stream: the campaign's own seed in the
whole campaign) and, when programs vary between executions (``random``,
``auto``, ``pct --vary-program``, ``hypothesis``), the stream's ``i``-th
execution (0-based) runs the campaign's program number ``K + N*(o_j + i)``
(1-based ``K``), where ``o_j`` is the sum of the executions of the jobs
before ``j``: each job takes a block of the shard's programs, so shards
never share a program, jobs of a shard never share one, the single stream
runs programs 1, 2, 3, ... as today, and the first job of ``--jobs J`` runs
exactly what ``--jobs 1`` runs, from the start (``--jobs J`` is never
slower to a failure that job finds). The small scope's phase (``auto``)
runs in the first job alone, as in the single stream; the other jobs start
with the wide search. With one fixed program (``pct``, ``--execution``), streams differ
by their seed alone, and PCT's miss bounds multiply (independent runs on
one program). The executions budget is cut with :func:`~.pool.share`
(shard first, then job); the seconds budget is wall-clock time for every
job. ``dfs`` enumerates one tree per algorithm, which does not split: its
unit is the algorithm (algorithm ``i`` goes to shard ``i mod N``, then to
job by the same rule).

**stress** and **mutants** are split by *cell* (an algorithm on an engine;
a subject on an engine, all its seeds): cell ``i`` goes to shard
``i mod N``, and a shard's cells are dealt to its jobs round-robin. The
merged table keeps the cells in their usual order.

Layer 7: ``search``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..dirtylog import resolve_algorithm
from ..harness.scenario import Scenario
from .pool import JobContext, JobOutcome, Shard, pick, share, stream_seed
from .report import FuzzReport
from .runner import explore

if TYPE_CHECKING:  # imported where a stress or mutants job runs: fuzz needs neither
    from ..engines.free import CellResult
    from .zoo import Cell, ZooCell

__all__ = ["FuzzStream", "fuzz_job", "run_streams", "fuzz_streams", "merge_fuzz", "cells_job",
           "zoo_job", "split_cells"]

STOPPED = "another job's failure"
#: The key that tells stress jobs an error in the code under test ended the run.
ERROR = "error"
#: The key that tells mutants jobs a hang ended the run.
HANG = "hang"


@dataclass(frozen=True)
class FuzzStream:
    """What one job runs for one algorithm."""

    algorithm: str
    job: int
    jobs: int
    shard: Shard
    seed: int
    executions: int
    #: Program numbers: ``first + stride * (i - 1)`` for the i-th execution.
    first: int
    stride: int


def fuzz_streams(algorithms: Sequence[str], *, scheduler: str, executions: int, seed: int,
                 shard: Shard, jobs: int) -> list[list[FuzzStream]]:
    """For each job, its streams (one per algorithm it runs)."""
    out: list[list[FuzzStream]] = [[] for _ in range(jobs)]
    if scheduler == "dfs":
        mine = pick(list(algorithms), shard.count, shard.index)
        for i, algorithm in enumerate(mine):
            j = i % jobs
            out[j].append(FuzzStream(algorithm, j, jobs, shard, seed, executions, 1, 1))
        return out
    in_shard = share(executions, shard.count, shard.index)
    for algorithm in algorithms:
        before = 0  # the executions of the jobs before j: where j's block starts
        for j in range(jobs):
            n = share(in_shard, jobs, j)
            if n:
                out[j].append(FuzzStream(algorithm, j, jobs, shard,
                                         stream_seed(seed, shard, jobs, j), n,
                                         first=shard.index + 1 + shard.count * before,
                                         stride=shard.count))
            before += n
    return out


def run_stream(stream: FuzzStream, scenario: Scenario, *, stop: Any = None,
               **options: Any) -> FuzzReport:
    """``explore`` for one stream of the campaign: its seed, its executions
    and its programs (``first + stride * (i - 1)``), stopped early when
    ``stop()`` says another job found a failure."""
    report: FuzzReport = explore(
        stream.algorithm, scenario, seed=stream.seed, executions=stream.executions,
        first=stream.first, stride=stream.stride, small=stream.job == 0, stop=stop,
        stop_reason=STOPPED, **options)
    return report


def run_streams(ctx: JobContext, streams: list[FuzzStream],
                search: Callable[[FuzzStream, Callable[[], bool]], FuzzReport],
                ) -> list[tuple[FuzzStream, FuzzReport]]:
    """A fuzz job's loop, whatever searches each stream: its streams one
    algorithm after another; each end is told to the parent (``done``), and
    a failure at once (``failure``), which stops that algorithm's streams in
    the other jobs (``search`` gets that ``stop()``)."""
    out = []
    for stream in streams:
        if ctx.stopped(stream.algorithm):  # another job found its failure first
            from ..dirtylog import algorithm_name

            report = FuzzReport(algorithm=algorithm_name(resolve_algorithm(stream.algorithm)),
                                scheduler="", stopped_by=STOPPED)
        else:
            def stop(a: str = stream.algorithm) -> bool:
                return bool(ctx.stopped(a))

            report = search(stream, stop)
        out.append((stream, report))
        if report.failure is not None:
            ctx.emit("failure", stream.algorithm)
        ctx.emit("done", (stream, report))
    return out


def fuzz_job(ctx: JobContext, *, streams: list[FuzzStream], scenarios: dict[str, Scenario],
             options: dict[str, Any]) -> list[tuple[FuzzStream, FuzzReport]]:
    """A job: ``explore`` on each of its streams; a failure is told to the
    parent as soon as it is found, before it is minimised, so that the other
    jobs stop that algorithm at once and only the finder minimises."""
    return run_streams(ctx, streams, lambda stream, stop: run_stream(
        stream, scenarios[stream.algorithm], stop=stop,
        found=lambda: ctx.emit("failure", stream.algorithm), **options))


def _stream_json(stream: FuzzStream, report: FuzzReport) -> dict[str, Any]:
    data: dict[str, Any] = {
        "job": stream.job + 1, "shard": str(stream.shard), "seed": stream.seed,
        "programs": ("fixed" if report.scheduler == "dfs" else
                     f"{stream.first}+{stream.stride}*i"),
        "executions": report.executions, "seconds": round(report.seconds, 3),
        "status": "FAIL" if report.failure else "ok", "stopped_by": report.stopped_by}
    if report.failure is not None:
        data["token"] = report.failure.token
    return data


def merge_fuzz(algorithm: str, scheduler: str,
               parts: Sequence[tuple[FuzzStream, FuzzReport]],
               first_failure: int | None = None) -> FuzzReport:
    """One report from the streams of one algorithm: counts add up (the
    portfolio's tries per member too), the time is the longest job's unless
    one failed: then the failure, its time and its execution number are the
    finder's (``first_failure``: its job; ``first_failure_job`` says which),
    and ``extra["job_split"]`` keeps the split."""
    merged = FuzzReport(algorithm=algorithm, scheduler=scheduler)
    bounds = []
    summaries = []
    for _stream, report in parts:
        merged.algorithm = report.algorithm
        merged.executions += report.executions
        merged.steps += report.steps
        merged.preemptions += report.preemptions
        merged.switches += report.switches
        merged.seconds = max(merged.seconds, report.seconds)
        if report.exhausted is not None:
            merged.exhausted = report.exhausted if merged.exhausted is None \
                else merged.exhausted and report.exhausted
        bound = report.extra.pop("_pct_bound", None)
        if bound is not None:
            bounds.append(bound)
        if "portfolio" in report.extra:
            summaries.append(report.extra["portfolio"])
        for key, value in report.extra.items():
            merged.extra.setdefault(key, value)
    if summaries:
        merged.extra["portfolio"] = _sum_portfolios(summaries)
    searched = [p for p in parts if p[1].scheduler]  # not skipped after another's failure
    failing = [(s, r) for s, r in parts if r.failure is not None]
    if failing:
        chosen = next((p for p in failing if p[0].job == first_failure), failing[0])
        merged.failure = chosen[1].failure
        merged.seconds = chosen[1].seconds
        merged.extra.update({k: v for k, v in chosen[1].extra.items()
                             if k not in ("job_split", "portfolio")})
        merged.extra["first_failure_job"] = chosen[0].job + 1
    else:
        stops = {r.stopped_by for _, r in searched}
        merged.stopped_by = stops.pop() if len(stops) == 1 else ", ".join(
            sorted(str(s) for s in stops))
        if bounds and len(bounds) == len(searched):
            merged.guarantee = _pct_guarantee(bounds, len(searched))
        elif summaries and len(summaries) > 1:
            from .portfolio import describe

            total = merged.extra["portfolio"]
            merged.guarantee = describe(total, members=tuple(total["members"]),
                                        fixed=bool(total["fixed"]))
        elif searched:
            merged.guarantee = searched[0][1].guarantee
    merged.extra["job_split"] = [_stream_json(s, r) for s, r in parts]
    return merged


def _sum_portfolios(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The portfolio summaries of several jobs as one: tries and programs
    add up, dfs's runs and bounds are listed together."""
    total = dict(summaries[0])
    tries: dict[str, int] = {}
    for s in summaries:
        for member, n in s["executions"].items():
            tries[member] = tries.get(member, 0) + n
    total["executions"] = tries
    for key in ("dfs_programs", "coverage_pairs", "corpus"):
        total[key] = sum(s[key] for s in summaries)
    for key in ("dfs_bounds_exhausted", "dfs_runs"):
        total[key] = [x for s in summaries for x in s[key]]
    if all("small_cases" in s for s in summaries):  # the small scope's phase, per job
        total["small_cases"] = sum(s["small_cases"] for s in summaries)
        total["small_bounds_exhausted"] = [x for s in summaries
                                           for x in s["small_bounds_exhausted"]]
    return total


def _pct_guarantee(bounds: list[tuple[int, int, int, float, float]], jobs: int) -> str:
    n = max(b[0] for b in bounds)
    k = max(b[1] for b in bounds)
    valid = sum(b[2] for b in bounds)
    p = min(b[3] for b in bounds)
    q = math.prod(b[4] for b in bounds)
    return (f"pct guarantee for this program ({jobs} independent streams): with n={n} threads "
            f"and at most k={k} steps, each execution finds a given bug of its depth with "
            f"probability >= {p:.3g}; after {valid} clean executions within their k the "
            f"chance such a bug was missed is <= {q:.3g}")


# ---------------------------------------------------------------------------
# stress and mutants: by cell


def split_cells(count: int, shard: Shard, jobs: int) -> list[list[int]]:
    """Cell indices for each job: cell i to shard i mod N, then the shard's
    cells dealt round-robin to its jobs."""
    mine = pick(list(range(count)), shard.count, shard.index)
    return [pick(mine, jobs, j) for j in range(jobs)]


def cells_job(ctx: JobContext, *, cells: list[tuple[int, Scenario, str]],
              progress: Callable[[int], Any] | None = None,
              on_abandon: Callable[[int, CellResult], None] | None = None,
              ) -> list[tuple[int, CellResult]]:
    """A stress job: its cells in order; each result is sent as it ends.
    An error in the code under test in any job ends the run: the cells not
    started yet are left out (the parent reports them as not run). In the
    parent's own job, ``progress(index)`` gives a cell's progress line and
    ``on_abandon(index, result)`` reports a hung harvester that could not be
    unwound (the process exits right after); in a job process, the parent
    gets that result and the cells before it as the job's outcome."""
    from ..engines.free import run_cell

    out: list[tuple[int, CellResult]] = []

    def finish(index: int, result: CellResult) -> None:
        ctx.emit("cell", (index, result))
        ctx.finish([*out, (index, result)])

    report = finish if on_abandon is None else on_abandon
    for index, scenario, rerun in cells:
        if ctx.stopped(ERROR):
            break
        printer = progress(index) if progress is not None else None
        try:
            result = run_cell(scenario, rerun=rerun, progress=printer,
                              on_abandon=functools.partial(report, index))
        finally:
            if printer is not None:
                printer.finish()
        out.append((index, result))
        ctx.emit("cell", (index, result))
        if result.interrupted:
            raise KeyboardInterrupt
        if result.error:  # ends the run here; the parent stops the other jobs
            break
    return out


def zoo_job(ctx: JobContext, *, cells: list[tuple[int, ZooCell]], seeds: int,
            budget: float, watchdog: float = 10.0,
            on_abandon: Callable[[int, Cell], None] | None = None) -> list[tuple[int, Cell]]:
    """A mutants job: its cells of the table. ``on_abandon(index, cell)``
    (the job in the parent's process only) reports a free-running harvester
    hung for good before the process ends (see ``run_zoo_cell``); in a job
    process, the parent gets that cell and those before it as the job's
    outcome."""
    from .zoo import hang_of, run_zoo_cell

    out: list[tuple[int, Cell]] = []

    def finish(index: int, cell: Cell) -> None:
        ctx.emit("cell", (index, cell))
        ctx.finish([*out, (index, cell)])

    report = finish if on_abandon is None else on_abandon
    for index, plan in cells:
        if ctx.stopped(HANG):  # another job's hang ended the run
            break
        if plan[5] != "kvm":  # a kernel protocol is no model algorithm
            resolve_algorithm(plan[1])
        cell = run_zoo_cell(plan, seeds=seeds, budget=budget, watchdog=watchdog,
                            on_abandon=functools.partial(report, index))
        out.append((index, cell))
        ctx.emit("cell", (index, cell))
        if hang_of(cell):  # ends the run here; the parent stops the other jobs
            break
    return out


def job_json(outcomes: Sequence[JobOutcome], labels: dict[int, list[str]]) -> list[dict[str,
                                                                                       Any]]:
    """The per-job split for a JSON report."""
    return [{"job": o.index + 1, "pid": o.pid, "seconds": round(o.seconds, 3),
             "cells": labels.get(o.index, []), "error": o.error,
             "interrupted": o.interrupted, "dropped": o.dropped} for o in outcomes]
