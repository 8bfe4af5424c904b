"""``concurrent-dirty mutants``: the detection-power table."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..harness.interrupt import interrupted
from ..mutants import MUTANTS, resolve_mutant
from ..search.zoo import ALL_ENGINES, ENGINES, KERNEL_ENGINE, Cell, ZooReport, format_table
from .scale import JobFailed, job_failed, zoo_campaign
from .scale import add_options as add_scale_options

if TYPE_CHECKING:
    from .campaign import ZooCampaign


def add_parser(sub: Any, number: Any, choice: Any) -> None:
    m = sub.add_parser("mutants", help="run the bug zoo: every mutant under every engine",
                       description="Run each mutant (a known class of dirty-logging race), "
                                   "each benign look-alike and each correct algorithm under "
                                   "every engine, and print the detection-power table and "
                                   "the mutation score. Exit 1 if a mutant escapes every "
                                   "engine or anything correct is reported.")
    m.add_argument("--mutant", action="append", metavar="NAME|module:Class",
                   help=f"repeatable; default: all {len(MUTANTS)} registered")
    m.add_argument("--engine", action="append", type=choice("an engine", ALL_ENGINES),
                   help=f"repeatable, from {list(ALL_ENGINES)}; default: all but kvm (the "
                        f"real kernel: its kvm-* mutants and the kernel protocols, on /dev/kvm)")
    m.add_argument("--seeds", type=number("a number of seeds", 1, 100, integer=True),
                   default=3, help="seeds per cell (default %(default)s)")
    m.add_argument("--budget", type=number("a number of seconds", 0, low_open=True),
                   default=2.0, help="seconds per seed per cell (default %(default)s)")
    m.add_argument("--hints", action="store_true",
                   help="give each mutant the scenario its bug needs (the default runs every "
                        "engine with no options, as a user who does not know the bug would)")
    m.add_argument("--no-correct", dest="correct", action="store_false",
                   help="leave out the correct algorithms' baseline rows")
    m.add_argument("--watchdog", type=number("a number of seconds", 0, low_open=True),
                   default=10.0, help="a call into the code under test that has not "
                                      "returned within this long (a modelled wait excluded) "
                                      "is a hang: it ends the run in every job (default "
                                      "%(default)s)")
    m.add_argument("--json", metavar="PATH", help="write the table as JSON")
    m.add_argument("--quiet", action="store_true", help="no progress lines")
    add_scale_options(m, number, db=True)


def zoo_campaign_of(ns: argparse.Namespace) -> ZooCampaign:
    """The mutants campaign ``ns`` describes, every option checked before
    any process starts (a :class:`UsageError`: one line, exit 2, whatever
    ``--jobs`` is): the whole table's cells, this shard's, and each job's."""
    from ..kvm.registry import is_kernel_protocol
    from ..search.scale import split_cells
    from ..search.zoo import zoo_plan
    from .campaign import ZooCampaign
    from .scale import open_db, resolve_jobs

    engines = ns.engine or list(ENGINES)
    mutants: list[Any] | None = None
    if ns.mutant:
        mutants = [spec if is_kernel_protocol(spec) else resolve_mutant(spec)
                   for spec in ns.mutant]
        kernel = [m for m in mutants if isinstance(m, str)]
        if kernel and KERNEL_ENGINE not in engines:
            raise UsageError(f"expected --engine kvm for the kernel mutants "
                             f"{', '.join(kernel)}, got engines {', '.join(engines)}")
        if len(kernel) < len(mutants) and engines == [KERNEL_ENGINE]:
            model = [m.name for m in mutants if not isinstance(m, str)]
            raise UsageError(f"expected kernel mutants (kvm-*) with --engine kvm only, got the "
                             f"model's {', '.join(model)}")
    if KERNEL_ENGINE in engines:
        from ..kvm.registry import KERNEL_NAMES, resolve_protocol
        from ..kvm.vm import probe

        found = probe()
        for name in [m for m in (mutants or []) if isinstance(m, str)] or list(KERNEL_NAMES):
            found.require(resolve_protocol(name).interface)
    plan = zoo_plan(mutants, engines, correct=ns.correct, hints=ns.hints)
    jobs = max(1, min(resolve_jobs(ns), len(split_cells(len(plan), ns.shard, 1)[0])))
    split = split_cells(len(plan), ns.shard, jobs)
    return ZooCampaign(plan=tuple(plan), engines=tuple(engines),
                       split=tuple(tuple(s) for s in split), jobs=jobs, shard=ns.shard,
                       seeds=ns.seeds, budget=ns.budget, watchdog=ns.watchdog, hints=ns.hints,
                       correct=ns.correct, db=open_db(ns), json=ns.json, quiet=ns.quiet)


def run_mutants(ns: argparse.Namespace, write_json: Any) -> int:
    """The campaign, built and checked whole first, then its cells in one
    job or many: the same code (``cli/scale.py``)."""
    campaign = zoo_campaign_of(ns)
    done: list[Cell] = []

    def progress(cell: Cell) -> None:
        done.append(cell)
        if not ns.quiet:
            sys.stderr.write(f"[{cell.subject} / {cell.engine}] detected "
                             f"{len(cell.detections)}/{len(cell.trials)}\n")
            sys.stderr.flush()

    def abandon(report: ZooReport, extra: dict[str, Any]) -> None:
        # The watchdog could not unwind a hung harvester: the table from its
        # thread; the process exits (code 1) right after.
        _table(ns, write_json, campaign, report, extra)

    try:
        report, extra, alarm = zoo_campaign(campaign, progress, abandon)
    except JobFailed as exc:
        return job_failed(exc)
    except KeyboardInterrupt:
        total = campaign.total
        partial = ZooReport(engines=list(campaign.engines), cells=done)
        print("\n".join(format_table(partial).splitlines()[:-1]))  # all but its verdict
        print(f"verdict: INTERRUPTED ({len(done)} of {total} cells done; the table above is "
              f"partial)")
        if ns.json:
            write_json(ns.json, {"tool": "concurrent-dirty", "command": "mutants",
                                 "budget": ns.budget, "seeds": ns.seeds, "hints": ns.hints,
                                 "interrupted": True, **partial.to_json(),
                                 "jobs": campaign.jobs, "shard": str(campaign.shard),
                                 "verdict": "interrupted"})
        return interrupted(f"the zoo stopped after {len(done)} of {total} cells; every job's "
                           f"writers stopped, shared memory unlinked")
    _table(ns, write_json, campaign, report, extra)
    return 0 if report.ok and not alarm else 1


def _table(ns: argparse.Namespace, write_json: Any, campaign: ZooCampaign, report: ZooReport,
           extra: dict[str, Any]) -> None:
    print(format_table(report))
    if ns.json:
        write_json(ns.json, {"tool": "concurrent-dirty", "command": "mutants",
                             "budget": ns.budget, "seeds": ns.seeds, "hints": ns.hints,
                             "interrupted": False, **report.to_json(), **extra})
