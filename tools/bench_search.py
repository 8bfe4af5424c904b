#!/usr/bin/env python3
"""What a user gets with no options: every registered mutant under the
default search, a few seeds each, against the issue's targets.

    python3 tools/bench_search.py [--engine auto] [--engine hypothesis] [--seeds 3]
                                  [--budget 5] [--target 0.5] [--max-preemptions 2]

It runs the bug zoo with every engine's defaults (no per-mutant scenario:
``concurrent-dirty mutants`` without ``--hints``) and prints, per engine, each
mutant's detections, median seconds and executions to the first one
(and each seed's executions), each seed's counterexample preemptions, then
whether the targets hold: every mutant found in every seed, with a median
under ``--target`` seconds (Hypothesis: with counterexamples of at most
``--max-preemptions`` preemptions). Numbers depend on the machine and its
load: compare engines within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from concurrent_dirty import MUTANTS
from concurrent_dirty.search.zoo import ZooReport, run_zoo_cell, zoo_plan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", action="append", help="zoo engines (default: auto)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=5.0, help="seconds per seed")
    ap.add_argument("--target", type=float, default=0.5, help="median seconds target")
    ap.add_argument("--max-preemptions", type=int, default=2,
                    help="the most preemptions a counterexample may have (target)")
    ap.add_argument("--mutant", action="append", help="default: every registered mutant")
    args = ap.parse_args()
    engines = args.engine or ["auto"]
    mutants = [MUTANTS[m] for m in args.mutant] if args.mutant else \
        [m for m in MUTANTS.values() if not m.benign]
    report = ZooReport(engines=engines)
    start = time.monotonic()
    for plan in zoo_plan(mutants, engines, correct=False):
        cell = run_zoo_cell(plan, seeds=args.seeds, budget=args.budget)
        report.cells.append(cell)
        ms, me = cell.median_seconds(), cell.median_executions()
        execs = ",".join(str(t.executions) if t.detected else "-" for t in cell.trials)
        pre = ",".join("-" if not t.detected or t.preemptions is None else str(t.preemptions)
                       for t in cell.trials)
        print(f"{cell.engine:<11} {cell.subject:<30} {len(cell.detections)}/{len(cell.trials)}"
              f"  median {'-' if ms is None else f'{ms:.3f}s'}"
              f"  executions to the first failure: median {'-' if me is None else f'{me:.0f}'}"
              f" (per seed {execs})  preemptions {pre}", flush=True)
    print()
    ok = True
    for engine in engines:
        cells = [c for c in report.cells if c.engine == engine]
        all_seeds = [c for c in cells if len(c.detections) == len(c.trials)]
        fast = [c for c in all_seeds if (c.median_seconds() or 0) < args.target]
        # A counterexample's preemptions (controlled engines), at most
        # --max-preemptions in every seed that found the mutant.
        short = [c for c in all_seeds if all(t.preemptions is not None
                                             and t.preemptions <= args.max_preemptions
                                             for t in c.detections)]
        medians = [c.median_seconds() for c in cells if c.median_seconds() is not None]
        print(f"{engine}: found in every seed {len(all_seeds)}/{len(cells)}; median under "
              f"{args.target:g}s {len(fast)}/{len(cells)}; with at most "
              f"{args.max_preemptions} preemptions {len(short)}/{len(cells)}; median of medians "
              f"{statistics.median(medians) if medians else float('nan'):.3f}s")
        # The targets: auto's first failure fast, Hypothesis's
        # counterexamples short.
        ok = ok and len(short if engine == "hypothesis" else fast) == len(cells)
    print(f"targets {'met' if ok else 'NOT met'} ({time.monotonic() - start:.0f}s in all)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
