#!/usr/bin/env python3
"""Switch points and executions per second under each controlled scheduler,
for one fixed small scenario, measured in one run.

    python tools/bench_scheduler.py [--seconds S] [--writes N]
                                    [--tree PATH ...] [--rounds R]

Scenario: xchg, 2 writers, 1 slot of 4 pages, N writes per writer (half on
the guest's behalf), 2 harvest rounds. Also shows the cost of a hand-off
between two real threads: ``random`` with ``stay=0`` switches threads at
almost every decision, ``random`` with ``stay=0.99`` almost never.

``--clock cpu`` counts per second of the process's CPU time (all its
threads) instead of wall time: on a machine shared with other work, wall
rates follow the load, CPU rates much less.

``--tree PATH`` (repeatable) measures another checkout of the project
beside this one (``git worktree add /tmp/old fcb6b33``): each round runs
every tree once in a child process (``PYTHONPATH`` set to that tree), in
turn, so that the machine's load falls on all of them alike; the table
gives each tree's median over ``--rounds`` rounds and its ratio to the
first tree named (this checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

Row = tuple[str, int, int, int, float, float]


def measure(seconds: float, writes: int) -> list[Row]:
    from hypothesis import HealthCheck, given, settings

    from concurrent_dirty import (
        Metrics,
        RandomScheduler,
        Scenario,
        explore,
        interleavings,
        make_program,
        run_controlled,
    )

    def by_scheduler(scheduler: object, scenario: Scenario) -> Row:
        metrics = Metrics(scheduler)  # type: ignore[arg-type]
        steps = 0
        deadline = time.monotonic() + seconds
        start, cpu = time.monotonic(), time.process_time()
        while time.monotonic() < deadline and metrics.new_execution():
            r = run_controlled("xchg", scenario, make_program(scenario, 2, metrics.executions),
                               metrics)
            steps += r.outcome.steps
        return ("", metrics.executions, steps, metrics.switches, time.monotonic() - start,
                time.process_time() - cpu)

    scenario = Scenario(writers=2, slots=1, pages=4, writes=writes, on_behalf=0.5)
    rows: list[Row] = []
    for name in ("random", "pct", "dfs"):
        cpu = time.process_time()
        r = explore("xchg", scenario, scheduler=name, executions=None, seconds=seconds,
                    preemptions=2)
        rows.append((name, r.executions, r.steps, r.switches, r.seconds,
                     time.process_time() - cpu))
    for stay in (0.0, 0.99):
        _, e, s, sw, t, c = by_scheduler(RandomScheduler(1, stay=stay), scenario)
        rows.append((f"random stay={stay}", e, s, sw, t, c))

    count = {"executions": 0, "steps": 0}
    start, cpu = time.monotonic(), time.process_time()
    deadline = start + seconds

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=interleavings("xchg", writers=2, pages=4, writes=writes, rounds=2))
    def hyp(case: object) -> None:
        if time.monotonic() > deadline:
            return
        r = case.run()  # type: ignore[attr-defined]
        count["executions"] += 1
        count["steps"] += r.outcome.steps

    while time.monotonic() < deadline:  # batches of fresh examples until the budget ends
        hyp()
    rows.append(("hypothesis", count["executions"], count["steps"], -1,
                 time.monotonic() - start, time.process_time() - cpu))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--writes", type=int, default=2)
    ap.add_argument("--tree", action="append", default=[],
                    help="another checkout to measure beside this one (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds with --tree")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="with --tree: rates per wall second, or per second of the process's "
                         "CPU time (all its threads: steadier on a loaded machine)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.seconds, args.writes)))
        return
    if not args.tree:
        rows = measure(args.seconds, args.writes)
        print(f"{'scheduler':<18} {'executions/s':>13} {'switch points/s':>16} "
              f"{'hand-offs/s':>12}")
        for name, e, s, sw, t, _cpu in rows:
            hand = f"{sw / t:>12.0f}" if sw >= 0 else f"{'-':>12}"
            print(f"{name:<18} {e / t:>13.0f} {s / t:>16.0f} {hand}")
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [here] + [os.path.abspath(t) for t in args.tree]
    for t in trees:
        if not os.path.isdir(os.path.join(t, "concurrent_dirty")):
            print(f"bench_scheduler: expected a checkout with concurrent_dirty/ at {t}",
                  file=sys.stderr)
            sys.exit(2)
    rates: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    for r in range(args.rounds):
        for t in trees:
            env = dict(os.environ, PYTHONPATH=t)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                  "--seconds", str(args.seconds), "--writes", str(args.writes)],
                                 env=env, capture_output=True, text=True, check=True, cwd=t)
            for name, e, _s, _sw, secs, cpu in json.loads(out.stdout):
                rates[t].setdefault(name, []).append(e / (cpu if args.clock == "cpu" else secs))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    names = list(rates[here])
    unit = "executions/" + ("cpu s" if args.clock == "cpu" else "s")
    head = f"{unit:<18}" + "".join(f" {os.path.basename(t) or t:>14}" for t in trees)
    print(head + "".join(f" {'ratio':>9}" for _ in trees[1:]))
    for name in names:
        med = [statistics.median(rates[t][name]) for t in trees]
        print(f"{name:<18}" + "".join(f" {m:>14.0f}" for m in med)
              + "".join(f" {med[0] / m:>8.2f}x" if m else f" {'-':>9}" for m in med[1:]))
    print(f"(median of {args.rounds} rounds of {args.seconds:g}s per tree, interleaved; "
          f"ratio: this checkout over the other)")


if __name__ == "__main__":
    main()
