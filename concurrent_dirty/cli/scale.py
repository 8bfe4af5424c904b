"""``--jobs``, ``--shard`` and ``--db`` for ``fuzz``, ``stress`` and
``mutants``: options, the split (``search/scale.py``), the job processes
(``search/pool.py``), the failure store (``search/failstore.py``), and
merging the jobs' reports into the usual table, summary and JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..harness.interrupt import EXIT_INTERRUPTED
from ..harness.interrupt import interrupted as _interrupted
from ..search.pool import Job, JobContext, Shard, default_jobs, parse_shard

if TYPE_CHECKING:
    from hypothesis.database import ExampleDatabase

    from ..engines.free import CellResult
    from ..harness.scenario import Scenario
    from ..search.failstore import Replayed
    from ..search.report import FuzzReport
    from ..search.scale import FuzzStream
    from ..search.zoo import ZooReport
    from .campaign import FuzzCampaign, StressCampaign, ZooCampaign



def add_options(parser: Any, number: Any, *, db: bool) -> None:
    def shard(text: str) -> Shard:
        try:
            return parse_shard(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    g = parser.add_argument_group("scale")
    g.add_argument("--jobs", type=number("a number of jobs", 1, 1024, integer=True),
                   default=None,
                   help=(f"worker processes on this machine (default: the number of cores, "
                         f"{default_jobs()} here; fuzz --token-file: 1); 1 runs in this "
                         f"process") if db else
                   ("worker processes on this machine (default 1: the cells one after "
                    "another, in this process)"))
    g.add_argument("--shard", type=shard, default=Shard(), metavar="K/N",
                   help="run part K of N of the campaign (a CI matrix of N jobs covers it "
                        "without overlap)")
    if db:
        g.add_argument("--db", metavar="PATH|redis://host:port/N",
                       help="failure store (a Hypothesis example database): replay its "
                            "saved failures first, save new ones")


def resolve_jobs(ns: argparse.Namespace) -> int:
    """``--jobs`` as given, else the number of cores; but one process for
    ``fuzz --token-file`` unless ``--jobs`` says otherwise: the pending
    token before each execution is a promise only one process can keep."""
    if ns.jobs is None:
        # stress runs its cells one after another unless told otherwise: the
        # free-running engines measure timing-sensitive races, and two cells
        # sharing the cores disturb each other's interleavings and figures.
        one = getattr(ns, "token_file", None) or ns.command == "stress" \
            or getattr(ns, "scheduler", None) == "hypothesis"
        ns.jobs = 1 if one else default_jobs()
    return int(ns.jobs)


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def open_db(ns: argparse.Namespace) -> ExampleDatabase | None:
    if not getattr(ns, "db", None):
        return None
    from ..search.failstore import open_store

    return open_store(ns.db)


def _report_replays(replayed: Sequence[Replayed]) -> None:
    for r in replayed:
        if r.status != "fails":
            _note(f"--db: {r.ref}: {r.note}")


# ---------------------------------------------------------------------------
# fuzz

#: ``fuzz --jobs N``: the other jobs' processes start once the first job
#: (this process, the single stream's search) has searched this long (at
#: most a tenth of ``--seconds``); a failure found sooner costs no other
#: interpreter, and on a busy machine their start-up does not take the
#: first job's core while it searches.
JOB_START_AFTER = 0.5


def fuzz_campaign(ns: argparse.Namespace, campaign: FuzzCampaign, write_json: Any,
                  print_report: Callable[[FuzzReport], None], progress: Any) -> int:
    """``concurrent-dirty fuzz``: saved failures first (``--db``), then the
    search: one job in this process or N job processes, the same code; one
    report per algorithm, printed as it completes, in the usual shapes."""
    from ..dirtylog import algorithm_name, algorithm_ref, resolve_algorithm
    from ..search.report import FuzzReport

    algorithms = list(campaign.algorithms)
    classes = {spec: resolve_algorithm(spec) for spec in algorithms}
    db = open_db(ns)
    reports: dict[str, FuzzReport] = {}
    replayed: list[Replayed] = []
    if db is not None:
        from ..search.failstore import replay_saved

        for spec in algorithms:
            found = replay_saved(db, [algorithm_ref(classes[spec])])
            replayed += found
            _report_replays(found)
            failing = [r.result for r in found if r.status == "fails" and r.result]
            if failing:  # reported at once, before any search
                report = FuzzReport.saved(algorithm_name(classes[spec]), failing[0])
                reports[spec] = report
                print_report(report)
    searched = [spec for spec in algorithms if spec not in reports]
    try:
        found_reports, interrupted = _fuzz_split(ns, campaign, searched, print_report,
                                                 progress)
    except JobFailed as exc:
        return job_failed(exc)
    reports.update(found_reports)
    ordered = [reports[spec] for spec in algorithms if spec in reports]
    if interrupted:
        partial = progress.latest
        if partial is not None and any(r.algorithm == partial.algorithm for r in ordered):
            partial = None  # its algorithm finished: reported whole above
        if partial is not None and all(r.algorithm != partial.algorithm for r in ordered):
            ordered.append(partial)
            print(f"== {partial.algorithm} under {partial.scheduler} (interrupted)")
            print(f"verdict: INTERRUPTED (no failure reported in {partial.executions} "
                  f"executions, {partial.steps} switch points, {partial.seconds:.2f}s before "
                  f"the interrupt; the figures are partial)")
        sys.stdout.flush()
        done = len(found_reports) + len(algorithms) - len(searched) + (partial is not None)
        _interrupted(f"fuzzing stopped after {done} of {len(algorithms)} algorithm(s)"
                     + (" (the last one partial)" if partial is not None else "")
                     + "; every job stopped, shared memory unlinked")
    elif not ordered:
        print(f"shard {ns.shard}: nothing to run here (dfs splits by algorithm)")
    if db is not None:
        from ..search.failstore import save_failure

        for spec, report in reports.items():
            if report.failure is not None and not report.extra.get("from_database"):
                save_failure(db, algorithm_ref(classes[spec]), report.failure.token)
    if ns.json:
        data: dict[str, Any] = {
            "tool": "concurrent-dirty", "command": "fuzz", "interrupted": interrupted,
            "verdict": "interrupted" if interrupted else
            "fail" if any(r.failure for r in ordered) else "pass",
            "results": [r.to_json() for r in ordered],
            "jobs": campaign.jobs, "shard": str(campaign.shard)}
        if db is not None:
            data["saved_failures"] = [r.to_json() for r in replayed]
        write_json(ns.json, data)
    if interrupted:
        return EXIT_INTERRUPTED
    return 1 if any(r.failure for r in ordered) else 0


def _fuzz_split(ns: argparse.Namespace, campaign: FuzzCampaign, algorithms: list[str],
                print_report: Callable[[FuzzReport], None], progress: Any,
                ) -> tuple[dict[str, FuzzReport], bool]:
    """The campaign's search over ``algorithms``, in this process (one job)
    or in job processes: each algorithm's merged report, printed as soon as
    every stream of it has ended (in algorithm order), and whether Ctrl-C or
    SIGTERM ended the run (the reports of the finished algorithms are kept)."""
    from ..harness.output import write_text
    from ..harness.program import make_program
    from ..search.pool import run_jobs
    from ..search.scale import fuzz_streams, merge_fuzz

    jobs = campaign.jobs
    plan = fuzz_streams(algorithms, scheduler=campaign.scheduler,
                        executions=campaign.executions, seed=campaign.seed,
                        shard=campaign.shard, jobs=jobs)
    scenarios = {spec: campaign.scenarios[spec] for spec in algorithms}
    options: dict[str, Any] = dict(campaign.options)
    expected = {spec: sum(s.algorithm == spec for streams in plan for s in streams)
                for spec in algorithms}
    parts: dict[str, list[tuple[FuzzStream, FuzzReport]]] = {}
    first_failure: dict[str, int] = {}
    merged: dict[str, FuzzReport] = {}
    printed = [0]

    def complete(spec: str) -> None:
        streams = sorted(parts[spec], key=lambda p: p[0].job)
        merged[spec] = merge_fuzz(spec, campaign.scheduler, streams, first_failure.get(spec))
        while printed[0] < len(algorithms) and algorithms[printed[0]] in merged:
            progress.finish()
            print_report(merged[algorithms[printed[0]]])
            sys.stdout.flush()
            printed[0] += 1

    if campaign.scheduler == "hypothesis":
        func = "concurrent_dirty.cli.scale:hypothesis_job"
        kwargs: dict[str, Any] = dict(
            pins=dict(campaign.hypothesis), seconds=campaign.seconds,
            max_steps=campaign.max_steps, watchdog=campaign.watchdog,
            token_file=campaign.token_file if campaign.jobs == 1 else None)
    else:
        func = "concurrent_dirty.search.scale:fuzz_job"
        kwargs = dict(scenarios=scenarios, options=options)
    if campaign.execution:
        # One fixed program per algorithm: fuzz_job takes it from the options.
        func = "concurrent_dirty.cli.scale:execution_job"
        options["programs"] = {spec: make_program(scenarios[spec], options["rounds"],
                                                  execution=campaign.execution)
                               for spec in algorithms}

    def on_message(job: int, kind: str, payload: Any) -> None:
        if kind == "failure":
            first_failure.setdefault(payload, job)
        elif kind == "done":
            stream, report = payload
            parts.setdefault(stream.algorithm, []).append((stream, report))
            if not ns.quiet and jobs > 1:
                _note(f"[job {job + 1}/{jobs}] {stream.algorithm}: {report.executions} "
                      f"executions, {'FAIL' if report.failure else 'ok'}")
            if len(parts[stream.algorithm]) == expected[stream.algorithm]:
                complete(stream.algorithm)

    stopped: set[str] = set()

    def stop_on(job: int, kind: str, payload: Any) -> Any:
        if kind == "failure":
            stopped.add(payload)
            return payload
        return None

    def unneeded(job: int) -> bool:  # every algorithm of a job still starting was found
        return all(s.algorithm in stopped for s in plan[job])

    local = dict(progress=progress) if campaign.scheduler == "hypothesis" else dict(
        options={**options, "progress": progress})
    jobs_run = [Job(j, func, {**kwargs, "streams": streams}) for j, streams in enumerate(plan)
                if streams]
    if jobs_run:  # the first runs in this process, at once, with the progress line
        jobs_run[0] = Job(jobs_run[0].index, func, {**jobs_run[0].kwargs, **local})
    interrupted = False
    try:
        outcomes = run_jobs(jobs_run, on_message=on_message, stop_on=stop_on,
                            unneeded=unneeded, local=True,
                            start_after=min(JOB_START_AFTER, campaign.seconds / 10),
                            late=shortened)
        for o in outcomes:
            if o.error is not None:
                raise JobFailed(o.error)
            interrupted = interrupted or o.interrupted
            if o.dropped:  # it had not started when its algorithms were found: 0 executions
                for stream in plan[o.index]:
                    on_message(o.index, "done", (stream, _stopped_report(stream)))
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        progress.finish()
    failures = [r.failure for r in merged.values() if r.failure is not None]
    if campaign.token_file and failures and campaign.jobs > 1:
        write_text(campaign.token_file, failures[0].token + "\n")
    return merged, interrupted


def shortened(job: Job, elapsed: float) -> Job:
    """A fuzz job that starts ``elapsed`` seconds into the campaign (the
    delayed jobs, see ``run_jobs``'s ``start_after``), its ``--seconds``
    shortened by as much: every job ends by the campaign's wall-clock bound."""
    kwargs = dict(job.kwargs)
    if isinstance(kwargs.get("seconds"), (int, float)):  # hypothesis_job
        kwargs["seconds"] = max(0.0, kwargs["seconds"] - elapsed)
    options = kwargs.get("options")
    if isinstance(options, dict) and isinstance(options.get("seconds"), (int, float)):
        kwargs["options"] = {**options, "seconds": max(0.0, options["seconds"] - elapsed)}
    return Job(job.index, job.func, kwargs)


def _stopped_report(stream: FuzzStream) -> FuzzReport:
    from ..dirtylog import algorithm_name, resolve_algorithm
    from ..search.report import FuzzReport
    from ..search.scale import STOPPED

    return FuzzReport(algorithm=algorithm_name(resolve_algorithm(stream.algorithm)),
                      scheduler="", stopped_by=STOPPED)


class JobFailed(Exception):
    """A job's process raised or died: a bug in the harness or the machine,
    said on one line with the job's traceback after it, exit 1."""


def job_failed(exc: JobFailed) -> int:
    _note(f"concurrent-dirty: error: a job failed: {exc}")
    return 1


def execution_job(ctx: JobContext, *, streams: list[FuzzStream],
                  scenarios: dict[str, Scenario], options: dict[str, Any]) -> Any:
    """``fuzz --execution N``: every stream explores that one program."""
    from ..search.scale import run_stream, run_streams

    options = dict(options)
    programs = options.pop("programs")
    return run_streams(ctx, streams, lambda stream, stop: run_stream(
        stream, scenarios[stream.algorithm], program=programs[stream.algorithm], stop=stop,
        **options))


def hypothesis_job(ctx: JobContext, *, streams: list[FuzzStream], pins: dict[str, Any],
                   seconds: float, max_steps: int, watchdog: float,
                   token_file: str | None, progress: Any = None,
                   ) -> list[tuple[FuzzStream, FuzzReport]]:
    """``fuzz --scheduler hypothesis`` in a job: Hypothesis seeded with the
    stream's seed, for the stream's share of examples."""
    from ..search.hypothesis import hypothesis_search
    from ..search.scale import run_streams

    return run_streams(ctx, streams, lambda stream, stop: hypothesis_search(
        stream.algorithm, seed=stream.seed, seconds=seconds, executions=stream.executions,
        max_steps=max_steps, pins=pins, stop=stop, watchdog=watchdog, token_file=token_file,
        progress=progress))


# ---------------------------------------------------------------------------
# stress


def stress_cells(campaign: StressCampaign, printer: Callable[[int], Any],
                 on_abandon: Callable[[list[CellResult]], None],
                 ) -> tuple[list[CellResult], bool, dict[str, Any]]:
    """The campaign's cells, in its jobs (the first in this process, with
    the live progress line, while the others start): results in cell
    order, whether Ctrl-C or SIGTERM ended the run, and the per-job split
    for the JSON. An error in the code under test ends the run in every
    job; the cells it kept from starting are reported as not run."""
    from ..search.pool import run_jobs
    from ..search.scale import ERROR, job_json, split_cells

    cells, jobs_n = campaign.cells, campaign.jobs
    split = split_cells(len(cells), Shard(), jobs_n)  # cells: this shard's already
    done: dict[int, CellResult] = {}
    total = len(cells)
    ended = [False]

    def on_message(job: int, kind: str, payload: Any) -> None:
        if kind == "cell":
            index, result = payload
            done[index] = result
            if not campaign.quiet and jobs_n > 1:
                _note(f"[{len(done)}/{total} job {job + 1}] {result.algorithm}/{result.engine}"
                      f": {result.status}, {result.executions} executions in "
                      f"{result.seconds:.1f}s")

    def not_run(skip: set[int]) -> list[CellResult]:
        from ..dirtylog import algorithm_name, resolve_algorithm
        from ..engines.free import CellResult
        from ..kvm.registry import is_kernel_protocol

        def name(spec: str) -> str:
            return spec if is_kernel_protocol(spec) else algorithm_name(resolve_algorithm(spec))

        return [CellResult(algorithm=name(c.algorithm), engine=c.engine, scenario=c.to_dict(),
                           rerun=campaign.reruns[i], not_run=True,
                           interrupted=interrupted and not ended[0])
                for i, c in enumerate(cells) if i not in skip]

    def abandon(index: int, stuck: CellResult) -> None:
        finished = {**done, index: stuck}
        on_abandon([finished[i] for i in sorted(finished)] + not_run(set(finished)))

    def stop_on(job: int, kind: str, payload: Any) -> Any:
        # An error in the code under test ends the whole run.
        if kind == "cell" and payload[1].error:
            ended[0] = True
            return ERROR
        return None

    jobs = [Job(j, "concurrent_dirty.search.scale:cells_job",
                {"cells": [(i, cells[i], campaign.reruns[i]) for i in indices]})
            for j, indices in enumerate(split) if indices]
    if jobs:
        jobs[0] = Job(jobs[0].index, jobs[0].func,
                      {**jobs[0].kwargs, "progress": printer, "on_abandon": abandon})
    interrupted = False
    outcomes: list[Any] = []
    start = time.monotonic()
    try:
        outcomes = run_jobs(jobs, on_message=on_message, stop_on=stop_on,
                            unneeded=lambda job: ended[0], local=True)
    except KeyboardInterrupt:
        interrupted = True
    for o in outcomes:
        interrupted = interrupted or o.interrupted
        if o.error is not None:
            raise JobFailed(o.error)
    labels = {j: [f"{cells[i].algorithm}/{cells[i].engine}" for i in indices]
              for j, indices in enumerate(split)}
    if not outcomes:  # interrupted: every job was stopped
        from ..search.pool import JobOutcome

        outcomes = [JobOutcome(job.index, interrupted=True, pid=os.getpid() if n == 0 else 0,
                               seconds=time.monotonic() - start)
                    for n, job in enumerate(jobs)]
    extra = {"jobs": jobs_n, "shard": str(campaign.shard),
             "job_split": job_json(outcomes, labels)}
    results = [done[i] for i in sorted(done)]
    if interrupted or any(r.error for r in results):
        # The cells an error or the interrupt kept from reporting: listed,
        # without figures (a job process's cell in progress keeps none).
        results += not_run(set(done))
    return results, interrupted, extra


def shard_cells(ns: argparse.Namespace, count: int) -> list[int]:
    """The cell indices this shard runs (all of them in one shard)."""
    from ..search.scale import split_cells

    return split_cells(count, ns.shard, 1)[0]


# ---------------------------------------------------------------------------
# mutants


def zoo_campaign(campaign: ZooCampaign, progress: Callable[[Any], None],
                 on_abandon: Callable[[ZooReport, dict[str, Any]], None] | None = None,
                 ) -> tuple[ZooReport, dict[str, Any], bool]:
    """The detection-power table for this shard, in its jobs (the first in
    this process, at once, while the others start), after the saved
    failures (``--db``). Returns the report, the extra JSON (per-job split,
    replays) and whether a saved failure of a correct algorithm or a
    look-alike still fails (a false alarm). The first hang ends the run in
    every job; the cells it kept from starting are listed as not run.

    A free-running harvester hung for good in this process's job cannot be
    unwound, and the process ends (``engines.free.run_cell``):
    ``on_abandon(report, extra)`` gets the table as it stands first (the
    other jobs' cells done so far, the hang, the rest not run)."""
    from ..search.pool import run_jobs
    from ..search.scale import HANG, job_json
    from ..search.zoo import Cell, ZooReport, abandoned, hang_of

    plan, split = campaign.plan, campaign.split
    extra: dict[str, Any] = {"jobs": campaign.jobs, "shard": str(campaign.shard)}
    db = campaign.db
    alarm = False
    if db is not None:
        from ..search.failstore import replay_saved

        subjects: dict[str, tuple[str, str]] = {}
        for name, ref, role, *_ in plan:
            subjects.setdefault(ref, (name, role))
        replayed = replay_saved(db, list(subjects))
        _report_replays(replayed)
        for r in replayed:
            if r.status == "fails":
                name, role = subjects[r.ref]
                wolf = role != "mutant"
                alarm = alarm or wolf
                print(f"saved failure of {name} ({role}) still fails"
                      f"{' (a FALSE ALARM on a correct subject)' if wolf else ''}: "
                      f"{r.result.outcome.kind if r.result else ''} at step "
                      f"{r.result.outcome.step if r.result else '?'}\n  replay token: {r.token}")
        sys.stdout.flush()
        extra["saved_failures"] = [r.to_json() for r in replayed]
    cells: dict[int, Any] = {}
    report = ZooReport(engines=list(campaign.engines))
    hung = [False]

    def on_message(job: int, kind: str, payload: Any) -> None:
        if kind == "cell":
            cells[payload[0]] = payload[1]
            progress(payload[1])

    def stop_on(job: int, kind: str, payload: Any) -> Any:
        # The first hang ends the run in every job.
        if kind == "cell" and hang_of(payload[1]):
            hung[0] = True
            return HANG
        return None

    def abandon(index: int, stuck: Cell) -> None:
        # From the watchdog's thread; the process exits right after.
        assert on_abandon is not None
        finished = {**cells, index: stuck}
        stopped = abandoned([finished.get(i, plan[i])
                             for i in sorted(i for indices in split for i in indices)],
                            campaign.engines)
        _save_failures(campaign, stopped)
        on_abandon(stopped, {**extra, "job_split": []})

    jobs = [Job(j, "concurrent_dirty.search.scale:zoo_job",
                {"cells": [(i, plan[i]) for i in indices], "seeds": campaign.seeds,
                 "budget": campaign.budget, "watchdog": campaign.watchdog})
            for j, indices in enumerate(split) if indices]
    if jobs and on_abandon is not None:
        jobs[0] = Job(jobs[0].index, jobs[0].func, {**jobs[0].kwargs, "on_abandon": abandon})
    try:
        outcomes = run_jobs(jobs, on_message=on_message, stop_on=stop_on,
                            unneeded=lambda job: hung[0], local=True)
        for o in outcomes:
            if o.interrupted:
                raise KeyboardInterrupt
            if o.error is not None:
                raise JobFailed(o.error)
        labels = {j: [f"{plan[i][0]}/{plan[i][5]}" for i in indices]
                  for j, indices in enumerate(split)}
        extra["job_split"] = job_json(outcomes, labels)
    finally:
        # The first hang in table order (cells ran in parallel).
        report.ended_by = next((h for h in map(hang_of, (cells[i] for i in sorted(cells)))
                                if h), "")
        if report.ended_by:  # the cells the hang kept from starting
            for index in (i for indices in split for i in indices if i not in cells):
                name, _, role, breaks, _, engine = plan[index]
                cells[index] = Cell(name, role, breaks, engine, not_run=True)
        report.cells = [cells[i] for i in sorted(cells)]
    _save_failures(campaign, report)
    return report, extra, alarm


def _save_failures(campaign: ZooCampaign, report: ZooReport) -> None:
    """Every detection's token into the failure store (``--db``)."""
    if campaign.db is None:
        return
    from ..search.failstore import save_failure

    refs = {name: ref for name, ref, *_ in campaign.plan}
    for cell in report.cells:
        for trial in cell.trials:
            if trial.detected and trial.token:
                save_failure(campaign.db, refs[cell.subject], trial.token)
