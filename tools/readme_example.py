#!/usr/bin/env python3
"""Run the README's "In your own tests" example (extracted from the README)
against an algorithm, N times, each with Hypothesis's example database off
and its own seed, every phase (shrinking included); print each run and the
count of failing runs.

    python3 tools/readme_example.py [--algorithm nonatomic-clear] [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent))

from tests.test_readme_pytest_example import run_example


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algorithm", default="nonatomic-clear")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1000)
    args = ap.parse_args()
    failed = 0
    for n in range(args.runs):
        start = time.monotonic()
        try:
            run_example(args.algorithm, args.first_seed + n, shrink=True)
            verdict = "passed"
        except Exception as exc:  # the example's failure: what we want to count
            failed += 1
            first = next((line for line in str(exc).splitlines()
                          if line.startswith("counterexample:")), type(exc).__name__)
            verdict = f"FAILED ({first})"
        print(f"run {n + 1} (seed {args.first_seed + n}): {verdict} in "
              f"{time.monotonic() - start:.1f}s", flush=True)
    print(f"{failed} of {args.runs} runs failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
