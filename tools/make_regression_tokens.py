#!/usr/bin/env python3
"""Regenerate tests/regression_tokens.json: one replay token per mutant (and
three for the tests' broken clear), found deterministically by the
controlled engine. Run it when the switch points change on purpose (tokens
record the schedule, so they follow the instrumentation), then review the
diff.

    python tools/make_regression_tokens.py [--out tests/regression_tokens.json] [--missing]

``--missing`` keeps the tokens already in ``--out`` and adds only those of
mutants that have none (a new mutant), so that the diff shows just them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from dataclasses import replace

from concurrent_dirty import Program, Scenario, explore
from concurrent_dirty.mutants import MUTANTS
from concurrent_dirty.search.zoo import CONTROLLED_SCENARIO

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"


# Two writers, one on-behalf write each: the broken clear's smallest race.
RACE = Program(writes=(((0, True),), ((1, True),)), rounds=1)


def find(ref: str, breaks: str, extra: dict[str, object], scheduler: str,
         program: Program | None = None) -> dict[str, object]:
    scenario = replace(Scenario(algorithm=ref), **{**CONTROLLED_SCENARIO, **extra})
    r = explore(ref, scenario, scheduler=scheduler, preemptions=2, seed=0, program=program,
                executions=3_000 if scheduler == "dfs" else 20_000, seconds=60,
                vary_program=scheduler != "dfs" and program is None)
    if r.failure is None:
        raise SystemExit(f"{ref}: {scheduler} found nothing in {r.executions} executions")
    return {"algorithm": ref, "breaks": breaks, "found_by": scheduler,
            "kind": r.failure.outcome.kind, "step": r.failure.outcome.step,
            "preemptions": r.failure.outcome.preemptions, "token": r.failure.token}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent.parent / "tests"
                                         / "regression_tokens.json"))
    ap.add_argument("--missing", action="store_true",
                    help="keep the existing tokens; add only the missing mutants'")
    args = ap.parse_args()
    entries: dict[str, dict[str, object]] = {}
    if args.missing:
        entries = json.loads(pathlib.Path(args.out).read_text())
    else:
        for scheduler in ("dfs", "pct", "random"):
            entries[f"broken-clear/{scheduler}"] = find(
                BROKEN, "xchg", {"on_behalf": 0.5}, scheduler,
                RACE if scheduler == "dfs" else None)
    for name, mutant in MUTANTS.items():
        if mutant.benign or name in entries:
            continue
        for scheduler in ("dfs", "pct", "random"):
            try:
                entries[name] = find(mutant.ref, mutant.breaks, mutant.scenario, scheduler)
                break
            except SystemExit as exc:
                print(exc)
        else:
            raise SystemExit(f"no controlled scheduler found {name}")
        print(name, entries[name]["found_by"], entries[name]["step"])
    pathlib.Path(args.out).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(entries)} tokens to {args.out}")


if __name__ == "__main__":
    main()
