#!/usr/bin/env python3
"""Throughput of ``fuzz --jobs 2`` against ``--jobs 1``, in one run; or,
with ``--first-failure``, the time to the first failure.

    python3 tools/bench_jobs.py [--seconds S] [--scheduler random|pct] [--jobs N]
    python3 tools/bench_jobs.py --first-failure [--algorithm A ...] [--seeds K] [--jobs N]

``--first-failure`` runs ``concurrent-dirty fuzz --algorithm A --seed s``
(no other option but ``--jobs``) for each algorithm (default
``nonatomic-clear`` and ``bit-before-data``) and seeds 0..K-1 (default 5),
with ``--jobs 1`` and ``--jobs N`` interleaved (1, N, 1, N, ...), and
prints per algorithm and jobs the median wall-clock time of the command
(start-up, search, minimisation and report: what a user waits) and the
median time the finder took to its first failure (the JSON's
``first_failure_seconds``).

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


def first_failure(algorithm: str, seed: int, jobs: int) -> tuple[float, float]:
    """(the command's wall time, the finder's time to its first failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.json")
        env = dict(os.environ, PYTHONPATH=ROOT)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "concurrent_dirty", "fuzz", "--algorithm",
                               algorithm, "--seed", str(seed), "--jobs", str(jobs), "--quiet",
                               "--json", path], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        if done.returncode != 1:
            raise SystemExit(f"expected a failure (exit 1) from {algorithm} seed {seed} "
                             f"--jobs {jobs}, got exit {done.returncode}")
        with open(path) as f:
            (result,) = json.load(f)["results"]
    return wall, float(result.get("first_failure_seconds", result["seconds"]))


def first_failures(algorithms: list[str], seeds: int, jobs: int) -> None:
    import statistics

    print(f"time to the first failure, fuzz --algorithm A --seed s --jobs J, seeds 0-{seeds - 1},"
          f" interleaved (cores: {os.cpu_count()})")
    print(f"{'algorithm':<16}  {'jobs':>4}  {'median wall s':>13}  {'median finder s':>15}  "
          f"walls")
    for algorithm in algorithms:
        rows: dict[int, list[tuple[float, float]]] = {1: [], jobs: []}
        for seed in range(seeds):
            for j in (1, jobs):
                rows[j].append(first_failure(algorithm, seed, j))
        for j, got in rows.items():
            walls = [w for w, _ in got]
            print(f"{algorithm:<16}  {j:>4}  {statistics.median(walls):>13.2f}  "
                  f"{statistics.median(f for _, f in got):>15.3f}  "
                  f"{' '.join(f'{w:.2f}' for w in walls)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--scheduler", default="random")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--first-failure", action="store_true",
                    help="time to the first failure instead of throughput")
    ap.add_argument("--algorithm", action="append",
                    help="with --first-failure (repeatable; default nonatomic-clear and "
                         "bit-before-data)")
    ap.add_argument("--seeds", type=int, default=5, help="with --first-failure (default 5)")
    args = ap.parse_args()
    if args.first_failure:
        first_failures(args.algorithm or ["nonatomic-clear", "bit-before-data"], args.seeds,
                       args.jobs)
        return
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
