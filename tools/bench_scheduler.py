#!/usr/bin/env python3
"""Switch points and executions per second under each controlled scheduler,
for one fixed small scenario, measured in one run.

    python tools/bench_scheduler.py [--seconds S] [--writes N]

Scenario: xchg, 2 writers, 1 slot of 4 pages, N writes per writer (half on
the guest's behalf), 2 harvest rounds. Also shows the cost of a hand-off
between two real threads: ``random`` with ``stay=0`` switches threads at
almost every decision, ``random`` with ``stay=0.99`` almost never.
"""

from __future__ import annotations

import argparse
import time

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


def by_scheduler(scheduler: object, scenario: Scenario, seconds: float) -> tuple[int, int, int]:
    metrics = Metrics(scheduler)  # type: ignore[arg-type]
    steps = 0
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < deadline and metrics.new_execution():
        r = run_controlled("xchg", scenario, make_program(scenario, 2, metrics.executions),
                           metrics)
        steps += r.outcome.steps
    return metrics.executions, steps, metrics.switches, time.monotonic() - start  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--writes", type=int, default=2)
    args = ap.parse_args()
    scenario = Scenario(writers=2, slots=1, pages=4, writes=args.writes, on_behalf=0.5)
    rows = []
    for name in ("random", "pct", "dfs"):
        r = explore("xchg", scenario, scheduler=name, executions=None, seconds=args.seconds,
                    preemptions=2)
        rows.append((name, r.executions, r.steps, r.switches, r.seconds))
    for stay in (0.0, 0.99):
        e, s, sw, t = by_scheduler(RandomScheduler(1, stay=stay), scenario, args.seconds)
        rows.append((f"random stay={stay}", e, s, sw, t))

    count = {"executions": 0, "steps": 0}
    start = time.monotonic()
    deadline = start + args.seconds

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=interleavings("xchg", writers=2, pages=4, writes=args.writes, rounds=2))
    def hyp(case: object) -> None:
        if time.monotonic() > deadline:
            return
        r = case.run()  # type: ignore[attr-defined]
        count["executions"] += 1
        count["steps"] += r.outcome.steps

    while time.monotonic() < deadline:  # batches of fresh examples until the budget ends
        hyp()
    rows.append(("hypothesis", count["executions"], count["steps"], -1,
                 time.monotonic() - start))

    print(f"{'scheduler':<18} {'executions/s':>13} {'switch points/s':>16} {'hand-offs/s':>12}")
    for name, e, s, sw, t in rows:
        hand = f"{sw / t:>12.0f}" if sw >= 0 else f"{'-':>12}"
        print(f"{name:<18} {e / t:>13.0f} {s / t:>16.0f} {hand}")


if __name__ == "__main__":
    main()
