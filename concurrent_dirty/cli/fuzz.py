"""``concurrent-dirty fuzz`` and ``concurrent-dirty replay``."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from ..dirtylog import resolve_algorithm
from ..harness.interrupt import interrupted as _interrupted
from ..harness.limits import MAX_EXECUTIONS, SEED_RANGE
from ..harness.token import decode
from ..schedulers import SCHEDULERS as _REGISTRY
from ..search.replay import replay
from ..search.report import FuzzReport, render, render_replay
from .paths import OnceBoolean, add_path_options
from .scale import add_options as add_scale_options

#: The controlled schedulers, and Hypothesis (which drives its own search).
SCHEDULERS = ("auto", *_REGISTRY, "hypothesis")

EXIT_OK, EXIT_FAIL = 0, 1


def add_parsers(sub: Any, number: Any, choice: Any) -> None:
    f = sub.add_parser("fuzz", help="explore interleavings under a controlled scheduler",
                       description="Run small executions of each algorithm under a controlled "
                                   "scheduler (one thread at a time, every switch point "
                                   "decided); stop at the first failure and print its "
                                   "interleaving and replay token.",
                       epilog="Conflicting options are usage errors (exit 2, whatever --jobs "
                              "is): --depth without --scheduler pct; --preemptions without "
                              "--scheduler dfs; --X with --no-X; --no-pml or "
                              "--no-fast-page-fault with an algorithm whose model turns it "
                              "on; --pml with ring; ring options with no ring algorithm; "
                              "--scheduler hypothesis with --jobs above 1.")
    f.add_argument("--algorithm", action="append", metavar="NAME|module:Class",
                   help="repeatable; default: all built-ins")
    f.add_argument("--scheduler", type=choice("a scheduler", SCHEDULERS), default="auto",
                   help="auto (a portfolio of random, pct at depths 1-5, iterative dfs and a "
                        "coverage-guided fuzzer), random, pct, dfs or hypothesis (default "
                        "%(default)s)")
    f.add_argument("--executions", type=number("a number of executions", 1, MAX_EXECUTIONS, True),
                   default=10_000, help="executions per algorithm (default %(default)s)")
    f.add_argument("--seconds", type=number("a number of seconds", 0, low_open=True),
                   default=10.0, help="budget per algorithm (default %(default)s)")
    f.add_argument("--depth", type=number("a bug depth", 1, 10, integer=True), default=None,
                   help="pct bug depth d, with --scheduler pct only (default: cycle 1-5, one "
                        "execution each; give one for pct's stated bound on a pinned program)")
    f.add_argument("--preemptions", type=number("a preemption bound", 0, 50, integer=True),
                   default=None, help="dfs preemption bound, with --scheduler dfs only (default: "
                                      "iterative bounds 0, 1, "
                                      "2, 3, so the first counterexample has the fewest)")
    g = f.add_argument_group(
        "the program space", "Every execution draws its shape and writes from one "
        "distribution that reaches the boundaries (swarm testing), in two scopes: small "
        "(3 executions in 4: 1 slot of 1 or 2 pages, 2 writers, 5, 6 or 8 writes each, 3-5 "
        "rounds) and wide (the defaults below); each option pins its dimension in both.")
    g.add_argument("--writers", type=number("a number of writers", 1, 16, integer=True),
                   default=None, help="vCPU writers (default: small 2; wide 1-3, drawn)")
    g.add_argument("--slots", type=number("a number of slots", 1, 64, integer=True),
                   default=None, help="memslots (default: small 1; wide 1-3, drawn)")
    g.add_argument("--pages", type=number("a number of pages per slot", 1, 1 << 16, True),
                   default=None, help="pages per slot (default: small 1 or 2; wide drawn from 1, "
                                      "2, 63, 64, 65, 100, 128, 129, 200)")
    g.add_argument("--writes", type=number("a number of writes", 1, 10_000, integer=True),
                   default=None, help="writes per writer (default: small 5, 6 or 8; wide 1-4, "
                                       "drawn)")
    g.add_argument("--rounds", type=number("a number of rounds", 0, 1000, integer=True),
                   default=None, help="harvest rounds before the final one (default: small "
                                      "3-5; wide 0-3, drawn)")
    g.add_argument("--on-behalf", type=number("a probability", 0, 1), default=None,
                   help="share of on-behalf writes (default: none, some or all, "
                        "drawn per writer)")
    f.add_argument("--execution", type=number("an execution number", 1, 1 << 62, True),
                   default=None,
                   help="explore exactly the writes of this execution of the free-running "
                        "engines (same scenario options and seed): what a stress failure "
                        "prints")
    f.add_argument("--workload", type=choice("a workload", ("uniform", "hot", "sequential")),
                   default="uniform", help="how writers pick pages (default %(default)s)")
    g.add_argument("--initially-set", action=OnceBoolean, default=None,
                   help="KVM_DIRTY_LOG_INITIALLY_SET on or off (default: drawn)")
    f.add_argument("--no-tlb", dest="tlb", action="store_false",
                   help="no per-vCPU TLB model")
    add_path_options(f, number, drawn=True)
    f.add_argument("--seed", type=number("an integer seed", *SEED_RANGE, True),
                   default=0, help="seed of the program space and the schedulers, a signed "
                                   "64-bit integer (default %(default)s)")
    f.add_argument("--max-steps", type=number("a step bound", 10, 10_000_000, integer=True),
                   default=20_000, help="switch points per execution before giving up")
    f.add_argument("--watchdog", type=number("a number of seconds", 0, low_open=True),
                   default=10.0, help="end an execution whose running thread reaches no switch "
                                      "point for this long, with its stack (default "
                                      "%(default)s)")
    f.add_argument("--token-file", metavar="PATH",
                   help="before each execution, write what is running; at a failure, its "
                        "replay token (survives a crash or a hang)")
    f.add_argument("--json", metavar="PATH", help="write the report as JSON")
    f.add_argument("--quiet", action="store_true", help="no progress line")
    add_scale_options(f, number, db=True)

    r = sub.add_parser("replay", help="rerun a failure from its replay token",
                       description="Rerun the execution a token describes, print its "
                                   "interleaving; exit 1 while it still fails.")
    r.add_argument("token", help="the cd2.... token a failure printed")
    r.add_argument("--algorithm", metavar="NAME|module:Class",
                   help="replay against this algorithm instead (to check a fix)")


class _Progress:
    """The fuzz progress line on stderr: redrawn on a terminal, on a log a
    line at the first tick and then every fifth of the budget (>= 2 s).
    Keeps the latest report, the partial one if the run is interrupted."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.quiet = ns.quiet
        self.budget = ns.seconds
        self.tty = sys.stderr.isatty()
        self.latest: FuzzReport | None = None
        self._last = -math.inf
        self._width = 0

    def __call__(self, report: FuzzReport) -> None:
        self.latest = report
        now = time.monotonic()
        if self.quiet or now - self._last < (0.1 if self.tty else max(2.0, self.budget / 5)):
            return
        self._last = now
        line = (f"[{report.algorithm}/{report.scheduler}] {report.seconds:5.1f}s/"
                f"{self.budget:g}s  executions {report.executions} "
                f"({report.executions_per_second:.0f}/s)  switch points {report.steps}")
        if self.tty:
            sys.stderr.write("\r" + line + " " * max(0, self._width - len(line)))
            self._width = len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


def run_fuzz(ns: argparse.Namespace, write_json: Any) -> int:
    """The campaign the command line describes, checked whole before anything
    runs (``cli/campaign.py``), run in one job or many (``cli/scale.py``)."""
    from .campaign import fuzz_campaign_of
    from .scale import fuzz_campaign, resolve_jobs

    campaign = fuzz_campaign_of(ns, resolve_jobs(ns))
    ns.header = campaign.header
    return fuzz_campaign(ns, campaign, write_json,
                         lambda report: _print_report(report, campaign.header), _Progress(ns))


def _print_report(report: FuzzReport, header: str = "") -> None:
    print(render(report, header))


def run_replay(ns: argparse.Namespace) -> int:
    case = decode(ns.token)
    if ns.algorithm:
        resolve_algorithm(ns.algorithm)
    try:
        result = replay(ns.token, algorithm=ns.algorithm)
    except KeyboardInterrupt:
        print(f"verdict: INTERRUPTED (the replay against {ns.algorithm or case.algorithm} "
              f"did not finish; nothing to report)")
        return _interrupted("replay stopped")
    text, failed = render_replay(result, ns.algorithm or case.algorithm,
                                 recorded=len(case.schedule), expect_kind=case.expect_kind,
                                 expect_step=case.expect_step)
    print(text)
    return EXIT_FAIL if failed else EXIT_OK
