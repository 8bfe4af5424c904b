"""Start-up time of the CLI: ``python -c pass``, ``python -m concurrent_dirty
--help`` and ``python -m concurrent_dirty replay TOKEN`` (a token from
``tests/regression_tokens.json``), each the best of N runs, in one run.

    python3 tools/bench_startup.py [--runs N] [--python PATH]

Run from the repository root (the package is imported from there). Prints
seconds per command and its ratio to ``python -c pass``. The replay exits 1
(it reproduces a failure); that is expected and not an error here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_token() -> str:
    with open(os.path.join(ROOT, "tests", "regression_tokens.json")) as f:
        data = json.load(f)
    # The file maps names to tokens, possibly nested; take the first string
    # that looks like a token.
    stack = [data]
    while stack:
        item = stack.pop(0)
        if isinstance(item, str) and item.startswith(("cd1.", "cd2.")):
            return item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise SystemExit("bench_startup: error: expected a replay token (cd2.) in "
                     "tests/regression_tokens.json, got none")


def best_of(argv: list[str], runs: int, ok: tuple[int, ...]) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        spent = time.perf_counter() - t0
        if proc.returncode not in ok:
            raise SystemExit(f"bench_startup: error: expected exit {ok} from "
                             f"{' '.join(argv[:4])}..., got {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        best = min(best, spent)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="best of N (default %(default)s)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to time")
    parser.add_argument("--bytecode", action="store_true",
                        help="first compile the package into __pycache__ (what an installed "
                             "package has), even under PYTHONDONTWRITEBYTECODE")
    ns = parser.parse_args()
    if ns.runs < 1:
        parser.error(f"expected --runs >= 1, got {ns.runs}")
    py = ns.python
    token = first_token()
    rows = [
        ("python -c pass", [py, "-c", "pass"], (0,)),
        ("concurrent_dirty --help", [py, "-m", "concurrent_dirty", "--help"], (0,)),
        ("concurrent_dirty replay TOKEN", [py, "-m", "concurrent_dirty", "replay", token],
         (0, 1)),
    ]
    if ns.bytecode:
        subprocess.run([py, "-m", "compileall", "-q", "concurrent_dirty"], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    cached = os.path.isdir(os.path.join(ROOT, "concurrent_dirty", "__pycache__"))
    times = {label: best_of(argv, ns.runs, ok) for label, argv, ok in rows}
    base = times["python -c pass"]
    print(f"{'command':<32} {'best s':>8} {'x pass':>7} {'over pass ms':>13}   (best of {ns.runs})")
    for label, spent in times.items():
        print(f"{label:<32} {spent:8.4f} {spent / base:7.2f} {(spent - base) * 1e3:13.1f}")
    dont_write = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    print(f"bytecode cache: {'present' if cached else 'absent'}"
          f"{'; PYTHONDONTWRITEBYTECODE is set' if dont_write else ''}"
          f"{' (every run compiles the package from source)' if not cached else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
