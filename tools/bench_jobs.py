#!/usr/bin/env python3
"""Throughput of ``fuzz --jobs 2`` against ``--jobs 1``, in one run.

    python3 tools/bench_jobs.py [--seconds S] [--scheduler random|pct] [--jobs N]

Runs ``concurrent-dirty fuzz --algorithm xchg`` (a correct algorithm, so no
run stops early) with an executions budget it cannot reach, for ``S``
seconds, once with ``--jobs 1`` and once with ``--jobs N`` (2 by default),
each as a fresh command, and prints executions per second two ways: over
the command's whole wall-clock time (start-up of the job processes
included: what a user gets) and over the campaign's own time (the longest
job's, from the JSON report). The ratio is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(jobs: int, seconds: float, scheduler: str) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.json")
        env = dict(os.environ, PYTHONPATH=ROOT)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "concurrent_dirty", "fuzz", "--algorithm", "xchg",
                        "--scheduler", scheduler, "--executions", "1e12",
                        "--seconds", str(seconds), "--jobs", str(jobs), "--quiet",
                        "--json", path], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        (result,) = json.load(open(path))["results"]
    return result["executions"], wall, result["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--scheduler", default="random")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    print(f"fuzz --algorithm xchg --scheduler {args.scheduler} --seconds {args.seconds:g} "
          f"(cores: {os.cpu_count()})")
    print(f"{'jobs':>4}  {'executions':>10}  {'wall s':>7}  {'execs/s wall':>12}  "
          f"{'campaign s':>10}  {'execs/s campaign':>16}")
    rows = {}
    for jobs in (1, args.jobs):
        executions, wall, campaign = run(jobs, args.seconds, args.scheduler)
        rows[jobs] = (executions / wall, executions / campaign)
        print(f"{jobs:>4}  {executions:>10}  {wall:>7.2f}  {rows[jobs][0]:>12.0f}  "
              f"{campaign:>10.2f}  {rows[jobs][1]:>16.0f}")
    one, many = rows[1], rows[args.jobs]
    print(f"speed-up --jobs {args.jobs} / --jobs 1: {many[0] / one[0]:.2f}x over wall-clock "
          f"time, {many[1] / one[1]:.2f}x over campaign time")


if __name__ == "__main__":
    main()
