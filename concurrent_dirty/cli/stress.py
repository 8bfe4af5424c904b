"""``concurrent-dirty stress``: race dirty-log algorithms with free-running
writers, in this process (one job) or in jobs (``cli/scale.py``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from .._core.switch import NOISE_LEVELS
from ..errors import UsageError
from ..harness.interrupt import EXIT_INTERRUPTED
from ..harness.interrupt import interrupted as _interrupted
from ..harness.limits import (
    MAX_EXECUTIONS,
    MAX_PROCESS_WRITERS,
    MAX_TOTAL_PAGES,
    MAX_WRITERS,
    SEED_RANGE,
)
from ..harness.scenario import ENGINES, MODES, WORKLOADS, Scenario

#: What `stress` runs with no --engine: the model's free-running engines.
MODEL_ENGINES = ("threads", "processes")

if TYPE_CHECKING:
    from ..engines.free import CellResult

__all__ = ["add_parser", "explore_command", "rerun_command", "run_stress"]

EXIT_OK, EXIT_FAIL = 0, 1
_DEFAULT = Scenario()


def add_parser(sub: Any, _number: Any, _choice: Any) -> None:
    from ..dirtylog import BUILTIN_ALGORITHMS
    from .paths import add_path_options

    s = sub.add_parser("stress", help="race dirty-log algorithms with free-running writers",
                       description="Race each algorithm on each engine for a budget and print "
                                   "a verdict table. With no options: every built-in algorithm "
                                   "on both engines.")
    g = s.add_argument_group("what to attack")
    g.add_argument("--algorithm", action="append", metavar="NAME|module:Class",
                   help=f"built-in {sorted(BUILTIN_ALGORITHMS)} or your own class "
                        f"(repeatable; default: all built-ins)")
    g.add_argument("--engine", action="append", type=_choice("an engine", ENGINES),
                   help="threads, processes or kvm, the real kernel (repeatable; default: "
                        "threads and processes; kvm runs the kernel protocols, kvm-get, "
                        "kvm-clear and kvm-ring, and their kvm-* mutants)")
    g = s.add_argument_group("scenario")
    g.add_argument("--writers", type=_number("a number of writers", 1, MAX_WRITERS, True),
                   default=_DEFAULT.writers, help="vCPU writers (default %(default)s)")
    g.add_argument("--slots", type=_number("a number of slots", 1, 4096, True),
                   default=_DEFAULT.slots, help="memslots (default %(default)s)")
    g.add_argument("--pages",
                   type=_number("a number of pages per slot", 1, MAX_TOTAL_PAGES, True),
                   default=_DEFAULT.pages, help="pages per slot (default %(default)s)")
    g.add_argument("--workload", type=_choice("a workload", WORKLOADS),
                   default=_DEFAULT.workload, help="uniform, hot or sequential "
                                                   "(default %(default)s)")
    g.add_argument("--on-behalf", type=_number("a probability", 0, 1),
                   default=_DEFAULT.on_behalf,
                   help="share of writes KVM makes for the guest, 0 to 1 (default: drawn per "
                        "execution: none, some or all)")
    g.add_argument("--initially-set", action="store_true",
                   help="start logging with every bit set (KVM_DIRTY_LOG_INITIALLY_SET)")
    g.add_argument("--no-tlb", dest="tlb", action="store_false",
                   help="no per-vCPU TLB model: every write checks the SPTE")
    add_path_options(g, _number)
    g = s.add_argument_group("budget and shape")
    g.add_argument("--seconds", type=_number("a number of seconds", 0, low_open=True),
                   default=_DEFAULT.seconds, help="budget per cell (default %(default)s)")
    g.add_argument("--mode", type=_choice("a mode", MODES), default=_DEFAULT.mode,
                   help="short: many small executions on fresh state (finds more); long: one "
                        "execution for the whole budget (default %(default)s)")
    g.add_argument("--writes", type=_number("a number of writes", 1, 1 << 40, True),
                   default=_DEFAULT.writes,
                   help="writes per writer per short execution (default %(default)s)")
    g.add_argument("--executions",
                   type=_number("a number of executions", 1, MAX_EXECUTIONS, True),
                   default=None, help="stop a cell after this many executions")
    g.add_argument("--interval", type=_number("a number of seconds", 0),
                   default=_DEFAULT.interval, help="pause between harvest rounds")
    g.add_argument("--lock-timeout", type=_number("a number of seconds", 0, low_open=True),
                   default=_DEFAULT.lock_timeout,
                   help="report a deadlock after waiting this long (default %(default)s)")
    g.add_argument("--watchdog", type=_number("a number of seconds", 0, low_open=True),
                   default=_DEFAULT.watchdog,
                   help="end the run when code under test makes no progress for this "
                        "long, with its stack (default %(default)s)")
    g = s.add_argument_group("perturbation and output")
    g.add_argument("--seed", type=_number("an integer seed", *SEED_RANGE, True),
                   default=_DEFAULT.seed, help="seed for workloads and noise")
    g.add_argument("--noise", type=_number("a probability", 0, 1), default=_DEFAULT.noise,
                   help="chance of a yield or short sleep at each switch point (default: "
                        "drawn per execution and thread from "
                        f"{', '.join(f'{p:g}' for p in NOISE_LEVELS)}; 0 turns noise off)")
    g.add_argument("--switch-interval", type=_number("a number of seconds", 0, low_open=True),
                   default=None, help="sys.setswitchinterval for the threads engine")
    g.add_argument("--json", metavar="PATH", help="write the report as JSON")
    g.add_argument("--quiet", action="store_true", help="no progress line")
    from .kernel import add_kernel_options

    add_kernel_options(s, _number)
    from .scale import add_options

    add_options(s, _number, db=False)


def _scenario_args(ns: argparse.Namespace, engine: str = "threads") -> dict[str, Any]:
    from .kernel import kernel_args
    from .paths import path_args

    return dict(**kernel_args(ns, engine), writers=ns.writers, slots=ns.slots, pages=ns.pages,
                workload=ns.workload,
                on_behalf=ns.on_behalf, mode=ns.mode, writes=ns.writes, seconds=ns.seconds,
                max_executions=ns.executions, seed=ns.seed, noise=ns.noise,
                switch_interval=ns.switch_interval, interval=ns.interval,
                initially_set=ns.initially_set, lock_timeout=ns.lock_timeout, tlb=ns.tlb,
                **path_args(ns), watchdog=ns.watchdog)


_FLAGS = {"max_executions": "--executions"}


def rerun_command(scenario: Scenario) -> str:
    """The command line that reruns one cell: its algorithm, engine and
    every option that differs from the default."""
    import shlex

    words = ["concurrent-dirty", "stress", "--algorithm", scenario.algorithm,
             "--engine", scenario.engine, "--seed", str(scenario.seed)]
    for name, value in scenario.to_dict().items():
        if name in ("algorithm", "engine", "seed", "pinned") or (
                value == getattr(_DEFAULT, name) and name not in scenario.pinned):
            continue
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def explore_command(scenario: Scenario, execution: int) -> str:
    """The ``fuzz`` command that explores exactly the program a short
    free-running execution ran (the same writes, every interleaving)."""
    import shlex

    words = ["concurrent-dirty", "fuzz", "--algorithm", scenario.algorithm,
             "--seed", str(scenario.seed), "--execution", str(execution),
             "--writers", str(scenario.writers), "--slots", str(scenario.slots),
             "--pages", str(scenario.pages), "--writes", str(scenario.writes)]
    if scenario.on_behalf is not None:
        words += ["--on-behalf", f"{scenario.on_behalf:g}"]
    if scenario.workload != "uniform":
        words += ["--workload", scenario.workload]
    if not scenario.tlb:
        words.append("--no-tlb")
    from ..dirtylog import resolve_algorithm
    from ..search.model import pin_words

    # Every model option the stress execution ran under, pinned (fuzz would
    # draw those left out): the fast page fault, PML and its buffer, the
    # ring's geometry, INITIALLY_SET and the CLEAR granularity.
    words += pin_words(resolve_algorithm(scenario.algorithm), scenario)
    if scenario.stuck_rounds != _DEFAULT.stuck_rounds:
        words += ["--stuck-rounds", str(scenario.stuck_rounds)]
    return shlex.join(words)


def _write_json(write_json: Any, path: str, results: list[CellResult], interrupted: bool,
                extra: dict[str, Any] | None = None) -> None:
    write_json(path, {
        "tool": "concurrent-dirty", "command": "stress", "interrupted": interrupted,
        "verdict": "interrupted" if interrupted else
        "fail" if any(r.status != "ok" for r in results) else "pass",
        "results": [r.to_json() for r in results], **(extra or {})})


def run_stress(ns: argparse.Namespace, write_json: Any) -> int:
    from ..dirtylog import BUILTIN_ALGORITHMS, resolve_algorithm
    from ..engines.free import CellResult, run_cell
    from .kernel import stress_pairs
    from .report import ProgressPrinter

    engines = ns.engine or list(MODEL_ENGINES)
    pairs = stress_pairs(ns, engines, list(BUILTIN_ALGORITHMS))
    for spec, engine in pairs:
        if engine != "kvm":
            resolve_algorithm(spec)  # every usage error before anything runs
    if ns.slots * ns.pages > MAX_TOTAL_PAGES:
        raise UsageError(f"expected --slots x --pages at most {MAX_TOTAL_PAGES} guest pages in "
                         f"all, got {ns.slots} x {ns.pages} = {ns.slots * ns.pages}")
    if "processes" in engines and ns.writers > MAX_PROCESS_WRITERS:
        raise UsageError(f"expected --writers at most {MAX_PROCESS_WRITERS} on the processes "
                         f"engine (each writer is a Python interpreter), got {ns.writers}; "
                         f"--engine threads takes up to {MAX_WRITERS}")
    cells = [Scenario(algorithm=a, engine=e, **_scenario_args(ns, e)) for a, e in pairs]
    results: list[CellResult] = []
    interrupted = False
    from .scale import resolve_jobs

    start = time.monotonic()
    extra: dict[str, Any] = {"jobs": resolve_jobs(ns), "shard": str(ns.shard)}
    if not ns.shard.whole:  # --shard K/N: this part's cells (cli/scale.py)
        from .scale import shard_cells

        cells = [cells[i] for i in shard_cells(ns, len(cells))]
    ns.jobs = min(ns.jobs, len(cells))  # one cell: in this process, with live progress
    if ns.jobs > 1:  # --jobs: cli/scale.py
        from .scale import JobFailed, job_failed, stress_cells

        try:
            results, interrupted, extra = stress_cells(ns, cells, rerun_command)
        except JobFailed as exc:
            return job_failed(exc)
        if interrupted:
            sys.stderr.write("\ninterrupted: jobs stopped, shared memory unlinked\n")
        cells = []
    try:
        for n, scenario in enumerate(cells, 1):
            printer = ProgressPrinter(sys.stderr, cell=f"{n}/{len(cells)} ")
            def not_run(n: int = n) -> list[CellResult]:
                return [CellResult(algorithm=_name(c.algorithm), engine=c.engine,
                                   scenario=c.to_dict(), rerun=rerun_command(c), not_run=True)
                        for c in cells[n:]]

            def abandon(stuck: CellResult, not_run: Any = not_run,
                        printer: ProgressPrinter = printer,
                        done: list[CellResult] = results) -> None:
                # The watchdog could not unwind a hung harvester: report
                # from its thread; the process exits right after.
                printer.finish()
                _stress_report(ns, write_json, [*done, stuck, *not_run()], False, extra)

            result = run_cell(scenario, progress=None if ns.quiet else printer,
                              rerun=rerun_command(scenario), on_abandon=abandon)
            printer.finish()
            results.append(result)
            if result.interrupted:
                raise KeyboardInterrupt
            if result.error:
                # An error in the code under test (a deadlock, a dying writer,
                # a hang, a method that raised) ends the run: what comes after
                # it would run on a broken premise. A lost bit does not: the
                # other cells still say which algorithms hold.
                results += not_run()
                break
    except KeyboardInterrupt:
        interrupted = True
        _interrupted("writers stopped, shared memory unlinked")
    if "job_split" not in extra:  # one job, this process: the same JSON keys as with jobs
        extra["job_split"] = [{"job": 1, "pid": os.getpid(),
                               "seconds": round(time.monotonic() - start, 3),
                               "cells": [f"{c.algorithm}/{c.engine}" for c in cells],
                               "error": None, "interrupted": interrupted}]
    return _stress_report(ns, write_json, results, interrupted, extra)


def _stress_report(ns: argparse.Namespace, write_json: Any, results: list[CellResult],
                   interrupted: bool,
                   extra: dict[str, Any] | None = None) -> int:
    from .report import summary_line, verdict_table

    print(verdict_table(results))
    print(summary_line(results, interrupted))
    for r in results:
        if r.error:
            print(f"\nERROR in {r.algorithm}/{r.engine}: {r.error}\n  rerun: {r.rerun}")
        if r.engine == "kvm" and "failing_program_text" in r.extra:
            # The kernel's timing does not replay: the program does (the
            # rerun command draws the same program sequence from the seed).
            print(f"\nkvm/{r.algorithm}: execution {r.extra['failing_execution']}'s program "
                  f"({r.extra['guest_mode']} guest): {r.extra['failing_program_text']}")
        for v in r.violations[:5]:
            print("\n" + v.describe())
            if r.scenario.get("mode") == "short" and r.engine != "kvm":
                print(f"  explore this program under control: "
                      f"{explore_command(Scenario(**r.scenario), v.execution)}")
        if len(r.violations) > 5:
            print(f"  ... and {len(r.violations) - 5} more for {r.algorithm}/{r.engine}")
    if ns.json:
        _write_json(write_json, ns.json, results, interrupted, extra)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAIL if any(r.status != "ok" for r in results) else EXIT_OK


def _name(spec: str) -> str:
    from ..dirtylog import algorithm_name, resolve_algorithm
    from ..kvm.registry import is_kernel_protocol

    if is_kernel_protocol(spec):
        return spec

    return algorithm_name(resolve_algorithm(spec))
