"""``concurrent-dirty fuzz`` and ``concurrent-dirty replay``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..dirtylog import BUILTIN_ALGORITHMS, resolve_algorithm
from ..errors import ConcurrentDirtyError
from ..harness.limits import MAX_EXECUTIONS, SEED_RANGE
from ..harness.program import make_program
from ..harness.scenario import Scenario
from ..harness.token import decode
from ..schedulers import SCHEDULERS as _REGISTRY
from ..search.hypothesis import interleavings
from ..search.runner import FuzzReport, explore, regression_test, replay
from .paths import add_path_options, path_args

#: The controlled schedulers, and Hypothesis (which drives its own search).
SCHEDULERS = (*_REGISTRY, "hypothesis")

EXIT_OK, EXIT_FAIL = 0, 1


def add_parsers(sub: Any, number: Any, choice: Any) -> None:
    f = sub.add_parser("fuzz", help="explore interleavings under a controlled scheduler",
                       description="Run small executions of each algorithm under a controlled "
                                   "scheduler (one thread at a time, every switch point "
                                   "decided); stop at the first failure and print its "
                                   "interleaving and replay token.")
    f.add_argument("--algorithm", action="append", metavar="NAME|module:Class",
                   help="repeatable; default: all built-ins")
    f.add_argument("--scheduler", type=choice("a scheduler", SCHEDULERS), default="pct",
                   help="random, pct, dfs or hypothesis (default %(default)s)")
    f.add_argument("--executions", type=number("a number of executions", 1, MAX_EXECUTIONS, True),
                   default=10_000, help="executions per algorithm (default %(default)s)")
    f.add_argument("--seconds", type=number("a number of seconds", 0, low_open=True),
                   default=10.0, help="budget per algorithm (default %(default)s)")
    f.add_argument("--depth", type=number("a bug depth", 1, 10, integer=True), default=2,
                   help="pct bug depth d (default %(default)s)")
    f.add_argument("--preemptions", type=number("a preemption bound", 0, 50, integer=True),
                   default=2, help="dfs preemption bound (default %(default)s)")
    f.add_argument("--writers", type=number("a number of writers", 1, 16, integer=True),
                   default=2, help="vCPU writers (hypothesis: at most) (default %(default)s)")
    f.add_argument("--slots", type=number("a number of slots", 1, 64, integer=True),
                   default=1, help="memslots (default %(default)s)")
    f.add_argument("--pages", type=number("a number of pages per slot", 1, 1 << 16, True),
                   default=4, help="pages per slot (default %(default)s)")
    f.add_argument("--writes", type=number("a number of writes", 1, 10_000, integer=True),
                   default=2, help="writes per writer (default %(default)s)")
    f.add_argument("--rounds", type=number("a number of rounds", 0, 1000, integer=True),
                   default=2, help="harvest rounds before the final one (default %(default)s)")
    f.add_argument("--on-behalf", type=number("a probability", 0, 1), default=0.5,
                   help="share of on-behalf writes (default %(default)s)")
    f.add_argument("--execution", type=number("an execution number", 1, 1 << 62, True),
                   default=None,
                   help="explore exactly the writes of this execution of the free-running "
                        "engines (same scenario options and seed): what a stress failure "
                        "prints")
    f.add_argument("--workload", type=choice("a workload", ("uniform", "hot", "sequential")),
                   default="uniform", help="how writers pick pages (default %(default)s)")
    f.add_argument("--vary-program", action="store_true",
                   help="pct: draw new writes every execution (more coverage, no stated "
                        "bound); random always does, dfs never does")
    f.add_argument("--initially-set", action="store_true")
    f.add_argument("--no-tlb", dest="tlb", action="store_false",
                   help="no per-vCPU TLB model")
    add_path_options(f, number)
    f.add_argument("--seed", type=number("an integer seed", *SEED_RANGE, True),
                   default=0)
    f.add_argument("--max-steps", type=number("a step bound", 10, 10_000_000, integer=True),
                   default=20_000, help="switch points per execution before giving up")
    f.add_argument("--token-file", metavar="PATH",
                   help="before each execution, write what is running; at a failure, its "
                        "replay token (survives a crash or a hang)")
    f.add_argument("--json", metavar="PATH", help="write the report as JSON")
    f.add_argument("--quiet", action="store_true")

    r = sub.add_parser("replay", help="rerun a failure from its replay token",
                       description="Rerun the execution a token describes, print its "
                                   "interleaving; exit 1 while it still fails.")
    r.add_argument("token", help="the cd2.... token a failure printed")
    r.add_argument("--algorithm", metavar="NAME|module:Class",
                   help="replay against this algorithm instead (to check a fix)")


def _hypothesis(algorithm: str, ns: argparse.Namespace) -> FuzzReport:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    report = FuzzReport(algorithm=algorithm, scheduler="hypothesis")
    start = time.monotonic()
    deadline = start + ns.seconds
    caught: list[Any] = []

    @settings(max_examples=ns.executions, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    # The number of threads is the user's; the rest of the shape is drawn, so
    # a failure shrinks to the smallest workload and the fewest preemptions.
    @given(case=interleavings(algorithm, writers=ns.writers,
                              pages=st.integers(1, ns.pages), writes=st.integers(1, ns.writes),
                              rounds=st.integers(0, ns.rounds)))
    def search(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        result = case.run()
        report.executions += 1
        report.steps += result.outcome.steps
        report.preemptions += result.outcome.preemptions
        try:
            case.check_result(result)
        except ConcurrentDirtyError as exc:
            if getattr(exc, "result", None) is not None:
                caught.append(exc.result)  # type: ignore[attr-defined]
            raise

    try:
        search()
    except ConcurrentDirtyError:
        if caught:
            report.failure = caught[-1]
    report.seconds = time.monotonic() - start
    return report


def run_fuzz(ns: argparse.Namespace, write_json: Any) -> int:
    algorithms = ns.algorithm or list(BUILTIN_ALGORITHMS)
    for spec in algorithms:
        resolve_algorithm(spec)
    scenario_args = dict(writers=ns.writers, slots=ns.slots, pages=ns.pages, writes=ns.writes,
                         on_behalf=ns.on_behalf, initially_set=ns.initially_set, seed=ns.seed,
                         tlb=ns.tlb, workload=ns.workload, **path_args(ns))
    reports = []
    for spec in algorithms:
        scenario = Scenario(algorithm=spec, **scenario_args)
        if ns.scheduler == "hypothesis":
            report = _hypothesis(spec, ns)
        else:
            report = explore(spec, scenario, scheduler=ns.scheduler, executions=ns.executions,
                             seconds=ns.seconds, depth=ns.depth, preemptions=ns.preemptions,
                             rounds=ns.rounds, seed=ns.seed, max_steps=ns.max_steps,
                             token_file=ns.token_file,
                             program=(make_program(scenario, ns.rounds, execution=ns.execution)
                                      if ns.execution else None),
                             vary_program=(True if ns.vary_program and ns.scheduler == "pct"
                                           else None))
        reports.append(report)
        print(f"== {report.algorithm} under {report.scheduler}")
        if report.failure is not None:
            failure = report.failure
            print(failure.counterexample())
            print(f"\nreplay token: {failure.token}")
            print(f"  rerun:  concurrent-dirty replay {failure.token}")
            print("  as a regression test:")
            print("    " + regression_test(failure.token).replace("\n", "\n    ").rstrip())
        print(report.summary())
    if ns.json:
        write_json(ns.json, {"tool": "concurrent-dirty", "command": "fuzz",
                             "verdict": "fail" if any(r.failure for r in reports) else "pass",
                             "results": [r.to_json() for r in reports]})
    return EXIT_FAIL if any(r.failure for r in reports) else EXIT_OK


def run_replay(ns: argparse.Namespace) -> int:
    case = decode(ns.token)
    if ns.algorithm:
        resolve_algorithm(ns.algorithm)
    result = replay(ns.token, algorithm=ns.algorithm)
    out = result.outcome
    print(result.counterexample())
    against = ns.algorithm or case.algorithm
    if out.failed:
        same = out.kind == case.expect_kind and out.step == case.expect_step
        note = "the same failure, at the same step" if same else (
            f"a different failure than recorded ({case.expect_kind} at step "
            f"{case.expect_step})")
        print(f"verdict: FAIL against {against}: {out.kind} at step {out.step}: {note}")
        return EXIT_FAIL
    print(f"verdict: PASS against {against}: the replayed interleaving loses no dirty bit "
          f"({out.steps} switch points)")
    return EXIT_OK
