"""``--jobs``, ``--shard`` and ``--db`` for ``fuzz``, ``stress`` and
``mutants``: options, the split (``search/scale.py``), the job processes
(``search/pool.py``), the failure store (``search/failstore.py``), and
merging the jobs' reports into the usual table, summary and JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..search.pool import Job, JobContext, LocalContext, Shard, default_jobs, parse_shard

if TYPE_CHECKING:
    from hypothesis.database import ExampleDatabase

    from ..engines.free import CellResult
    from ..harness.scenario import Scenario
    from ..search.failstore import Replayed
    from ..search.runner import FuzzReport
    from ..search.scale import FuzzStream
    from ..search.zoo import ZooReport

EXIT_INTERRUPTED = 130


def add_options(parser: Any, number: Any, *, db: bool) -> None:
    def shard(text: str) -> Shard:
        try:
            return parse_shard(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    g = parser.add_argument_group("scale")
    g.add_argument("--jobs", type=number("a number of jobs", 1, 1024, integer=True),
                   default=None,
                   help=f"worker processes on this machine (default: the number of cores, "
                        f"{default_jobs()} here{'; fuzz --token-file: 1' if db else ''}; "
                        f"stress: 1, its cells one after another); "
                        f"1 runs in this process")
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
        one = getattr(ns, "token_file", None) or ns.command == "stress"
        ns.jobs = 1 if one else default_jobs()
    return int(ns.jobs)


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _open_db(ns: argparse.Namespace) -> ExampleDatabase | None:
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


def fuzz_campaign(ns: argparse.Namespace, write_json: Any,
                  search_one: Callable[[str, Scenario], FuzzReport],
                  print_report: Callable[[FuzzReport], None],
                  scenario_of: Callable[[str], Scenario]) -> int:
    """``concurrent-dirty fuzz``: saved failures first (``--db``), then the
    search, in this process (``--jobs 1``) or in jobs; one report per
    algorithm, in the usual shapes."""
    from ..dirtylog import BUILTIN_ALGORITHMS, algorithm_name, algorithm_ref, resolve_algorithm
    from ..search.runner import FuzzReport

    resolve_jobs(ns)
    if ns.scheduler == "hypothesis" and ns.jobs > 1:
        # Not yet: Hypothesis in several job processes reports FlakyFailure
        # while shrinking (under investigation); one process, shards still split.
        _note("--scheduler hypothesis runs in one process for now (--jobs 1)")
        ns.jobs = 1
    algorithms = ns.algorithm or list(BUILTIN_ALGORITHMS)
    classes = {spec: resolve_algorithm(spec) for spec in algorithms}
    db = _open_db(ns)
    reports: dict[str, FuzzReport] = {}
    replayed: list[Replayed] = []
    if db is not None:
        from ..search.failstore import replay_saved

        for spec in algorithms:
            found = replay_saved(db, [algorithm_ref(classes[spec])])
            replayed += found
            _report_replays(found)
            failing = [r for r in found if r.status == "fails"]
            if failing:  # reported at once, before any search
                report = FuzzReport(algorithm=algorithm_name(classes[spec]),
                                    scheduler="saved failure (--db)", failure=failing[0].result,
                                    executions=1)
                report.extra["from_database"] = True
                reports[spec] = report
                print_report(report)
    searched = [spec for spec in algorithms if spec not in reports]
    interrupted = False
    try:
        if ns.jobs == 1 and ns.shard.whole:
            for spec in searched:
                reports[spec] = search_one(spec, scenario_of(spec))
                print_report(reports[spec])
        else:
            found_reports = _fuzz_split(ns, searched, scenario_of)
            for spec in searched:
                if spec in found_reports:
                    reports[spec] = found_reports[spec]
                    print_report(reports[spec])
    except KeyboardInterrupt:
        interrupted = True
        _note("\ninterrupted: jobs stopped, shared memory unlinked")
    except JobFailed as exc:
        return job_failed(exc)
    ordered = [reports[spec] for spec in algorithms if spec in reports]
    if not ordered and not interrupted:
        print(f"shard {ns.shard}: nothing to run here (dfs splits by algorithm)")
    if db is not None:
        from ..search.failstore import save_failure

        for spec, report in reports.items():
            if report.failure is not None and not report.extra.get("from_database"):
                save_failure(db, algorithm_ref(classes[spec]), report.failure.token)
    if ns.json:
        data: dict[str, Any] = {
            "tool": "concurrent-dirty", "command": "fuzz",
            "verdict": "fail" if any(r.failure for r in ordered) else "pass",
            "results": [r.to_json() for r in ordered],
            "jobs": ns.jobs, "shard": str(ns.shard)}
        if interrupted:
            data["interrupted"] = True
        if db is not None:
            data["saved_failures"] = [r.to_json() for r in replayed]
        write_json(ns.json, data)
    if interrupted:
        return EXIT_INTERRUPTED
    return 1 if any(r.failure for r in ordered) else 0


def _fuzz_split(ns: argparse.Namespace, algorithms: list[str],
                scenario_of: Callable[[str], Scenario]) -> dict[str, FuzzReport]:
    from ..harness.output import write_text
    from ..harness.program import make_program
    from ..search.pool import run_jobs
    from ..search.scale import fuzz_streams, merge_fuzz

    plan = fuzz_streams(algorithms, scheduler=ns.scheduler, executions=ns.executions,
                        seed=ns.seed, shard=ns.shard, jobs=ns.jobs)
    scenarios = {spec: scenario_of(spec) for spec in algorithms}
    from .fuzz import search_options

    options: dict[str, Any] = search_options(ns)
    hypothesis = ns.scheduler == "hypothesis"
    parts: dict[str, list[tuple[FuzzStream, FuzzReport]]] = {}
    first_failure: dict[str, int] = {}

    def kwargs(streams: list[FuzzStream]) -> dict[str, Any]:
        if hypothesis:
            return dict(streams=streams, ns=vars(ns))
        return dict(streams=streams, scenarios=scenarios, options=options)

    func = ("concurrent_dirty.cli.scale:hypothesis_job" if hypothesis
            else "concurrent_dirty.search.scale:fuzz_job")
    if ns.execution:
        # One fixed program per algorithm: fuzz_job takes it from the options.
        func = "concurrent_dirty.cli.scale:execution_job"
        options["programs"] = {spec: make_program(scenarios[spec], options["rounds"],
                                                  execution=ns.execution)
                               for spec in algorithms}

    def on_message(job: int, kind: str, payload: Any) -> None:
        if kind == "failure":
            first_failure.setdefault(payload, job)
        elif kind == "done" and not ns.quiet:
            spec, executions, token = payload
            _note(f"[job {job + 1}/{ns.jobs}] {spec}: {executions} executions, "
                  f"{'FAIL' if token else 'ok'}")

    def stop_on(job: int, kind: str, payload: Any) -> Any:
        return payload if kind == "failure" else None

    if ns.jobs == 1:
        ctx = LocalContext(on_message)
        results = [_call(func, ctx, **kwargs(plan[0]))]
    else:
        jobs = [Job(j, func, kwargs(streams)) for j, streams in enumerate(plan) if streams]
        outcomes = run_jobs(jobs, on_message=on_message, stop_on=stop_on)
        results = []
        for o in outcomes:
            if o.interrupted:
                raise KeyboardInterrupt
            if o.error is not None:
                raise JobFailed(o.error)
            results.append(o.result)
    for result in results:
        for stream, report in result:
            parts.setdefault(stream.algorithm, []).append((stream, report))
    merged: dict[str, FuzzReport] = {}
    for spec in algorithms:
        if spec in parts:
            streams = sorted(parts[spec], key=lambda p: p[0].job)
            merged[spec] = merge_fuzz(spec, ns.scheduler, streams, first_failure.get(spec))
    failures = [r.failure for r in merged.values() if r.failure is not None]
    if ns.token_file and failures and ns.jobs > 1:
        write_text(ns.token_file, failures[0].token + "\n")
    return merged


class JobFailed(Exception):
    """A job's process raised or died: a bug in the harness or the machine,
    said on one line with the job's traceback after it, exit 1."""


def job_failed(exc: JobFailed) -> int:
    _note(f"concurrent-dirty: error: a job failed: {exc}")
    return 1


def _call(func: str, ctx: JobContext, **kwargs: Any) -> Any:
    from ..search.pool import _resolve

    return _resolve(func)(ctx, **kwargs)


def execution_job(ctx: JobContext, *, streams: list[FuzzStream],
                  scenarios: dict[str, Scenario], options: dict[str, Any]) -> Any:
    """``fuzz --execution N``: every stream explores that one program."""
    from ..search.scale import run_stream, run_streams

    options = dict(options)
    programs = options.pop("programs")
    return run_streams(ctx, streams, lambda stream, stop: run_stream(
        stream, scenarios[stream.algorithm], program=programs[stream.algorithm], stop=stop,
        **options))


def hypothesis_job(ctx: JobContext, *, streams: list[FuzzStream],
                   ns: dict[str, Any]) -> list[tuple[FuzzStream, FuzzReport]]:
    """``fuzz --scheduler hypothesis`` in a job: Hypothesis seeded with the
    stream's seed, for the stream's share of examples."""
    from ..search.hypothesis import hypothesis_search
    from ..search.scale import run_streams
    from .fuzz import hypothesis_pins

    args = argparse.Namespace(**ns)
    return run_streams(ctx, streams, lambda stream, stop: hypothesis_search(
        stream.algorithm, seed=stream.seed, seconds=args.seconds, executions=stream.executions,
        max_steps=args.max_steps, pins=hypothesis_pins(args), stop=stop))


# ---------------------------------------------------------------------------
# stress


def stress_cells(ns: argparse.Namespace, cells: list[Scenario],
                 rerun: Callable[[Scenario], str],
                 ) -> tuple[list[CellResult], bool, dict[str, Any]]:
    """The shard's cells in jobs (``--jobs`` > 1): results in cell order,
    whether Ctrl-C ended the run, and the per-job split for the JSON."""
    from ..search.pool import run_jobs
    from ..search.scale import ERROR, job_json, split_cells

    split = split_cells(len(cells), Shard(), ns.jobs)  # cells: this shard's already
    done: dict[int, CellResult] = {}
    total = sum(len(s) for s in split)

    def on_message(job: int, kind: str, payload: Any) -> None:
        if kind == "cell":
            index, result = payload
            done[index] = result
            if not ns.quiet:
                _note(f"[{len(done)}/{total} job {job + 1}] {result.algorithm}/{result.engine}"
                      f": {result.status}, {result.executions} executions in "
                      f"{result.seconds:.1f}s")

    jobs = [Job(j, "concurrent_dirty.search.scale:cells_job",
                {"cells": [(i, cells[i], rerun(cells[i])) for i in indices]})
            for j, indices in enumerate(split) if indices]
    interrupted = False
    outcomes = []

    def stop_on(job: int, kind: str, payload: Any) -> Any:
        # An error in the code under test ends the whole run, as in one process.
        return ERROR if kind == "cell" and payload[1].error else None

    try:
        outcomes = run_jobs(jobs, on_message=on_message, stop_on=stop_on)
    except KeyboardInterrupt:
        interrupted = True
    for o in outcomes:
        interrupted = interrupted or o.interrupted
        if o.error is not None:
            raise JobFailed(o.error)
    labels = {j: [f"{cells[i].algorithm}/{cells[i].engine}" for i in indices]
              for j, indices in enumerate(split)}
    extra = {"jobs": ns.jobs, "shard": str(ns.shard), "job_split": job_json(outcomes, labels)}
    results = [done[i] for i in sorted(done)]
    if any(r.error for r in results):  # the cells an error kept from starting
        from ..dirtylog import algorithm_name, resolve_algorithm
        from ..engines.free import CellResult

        results += [CellResult(algorithm=algorithm_name(resolve_algorithm(c.algorithm)),
                               engine=c.engine, scenario=c.to_dict(), rerun=rerun(c),
                               not_run=True)
                    for i, c in enumerate(cells) if i not in done]
    return results, interrupted, extra


def shard_cells(ns: argparse.Namespace, count: int) -> list[int]:
    """The cell indices this shard runs (all of them in one shard)."""
    from ..search.scale import split_cells

    return split_cells(count, ns.shard, 1)[0]


# ---------------------------------------------------------------------------
# mutants


def zoo_campaign(ns: argparse.Namespace, mutants: Any, engines: list[str],
                 progress: Callable[[Any], None]) -> tuple[ZooReport, dict[str, Any], bool]:
    """The detection-power table for this shard, in this process or in
    jobs, after the saved failures (``--db``). Returns the report, the
    extra JSON (per-job split, replays) and whether a saved failure of a
    correct algorithm or a look-alike still fails (a false alarm)."""
    from ..search.pool import run_jobs
    from ..search.scale import job_json, split_cells
    from ..search.zoo import Cell, ZooReport, hang_of, run_zoo_cell, zoo_plan

    resolve_jobs(ns)
    plan = zoo_plan(mutants, engines, correct=ns.correct, hints=ns.hints)
    extra: dict[str, Any] = {"jobs": ns.jobs, "shard": str(ns.shard)}
    db = _open_db(ns)
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
    ns.jobs = min(ns.jobs, max(1, len(split_cells(len(plan), ns.shard, 1)[0])))
    extra["jobs"] = ns.jobs
    split = split_cells(len(plan), ns.shard, ns.jobs)
    cells: dict[int, Any] = {}
    report = ZooReport(engines=list(engines))
    try:
        if ns.jobs == 1:
            for index in split[0]:
                if report.ended_by:  # a hang ended the run: the rest is not run
                    name, _, role, breaks, _, engine = plan[index]
                    cells[index] = Cell(name, role, breaks, engine, not_run=True)
                    continue
                cells[index] = run_zoo_cell(plan[index], seeds=ns.seeds, budget=ns.budget,
                                            watchdog=ns.watchdog)
                report.ended_by = hang_of(cells[index])
                progress(cells[index])
        else:
            def on_message(job: int, kind: str, payload: Any) -> None:
                if kind == "cell":
                    cells[payload[0]] = payload[1]
                    progress(payload[1])

            jobs = [Job(j, "concurrent_dirty.search.scale:zoo_job",
                        {"cells": [(i, plan[i]) for i in indices], "seeds": ns.seeds,
                         "budget": ns.budget, "watchdog": ns.watchdog})
                    for j, indices in enumerate(split) if indices]
            outcomes = run_jobs(jobs, on_message=on_message)
            for o in outcomes:
                if o.interrupted:
                    raise KeyboardInterrupt
                if o.error is not None:
                    raise JobFailed(o.error)
            labels = {j: [f"{plan[i][0]}/{plan[i][5]}" for i in indices]
                      for j, indices in enumerate(split)}
            extra["job_split"] = job_json(outcomes, labels)
    finally:
        report.cells = [cells[i] for i in sorted(cells)]
        if not report.ended_by:  # jobs: the first hang in table order (cells ran in parallel)
            report.ended_by = next((h for h in map(hang_of, report.cells) if h), "")
    if db is not None:
        from ..search.failstore import save_failure

        refs = {name: ref for name, ref, *_ in plan}
        for cell in report.cells:
            for trial in cell.trials:
                if trial.detected and trial.token:
                    save_failure(db, refs[cell.subject], trial.token)
    return report, extra, alarm
