#!/usr/bin/env python3
"""Replay every committed regression token N times and say, per token, how
many replays failed the same way it was recorded to.

    python3 tools/replay_tokens.py [-n 100] [--tokens tests/regression_tokens.json]
                                   [--only NAME]

"The same failure" means: the replay did not leave its recorded schedule,
and it ended with the recorded verdict (``kind``) at the recorded step, with
the same message as the first replay. A token that falls short of N/N
makes the exit status 1 (a token that cannot be decoded or replayed counts
as 0/N). Regenerate the committed tokens with
``tools/make_regression_tokens.py``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from concurrent_dirty import ConcurrentDirtyError, replay

DEFAULT = pathlib.Path(__file__).parent.parent / "tests" / "regression_tokens.json"


def replay_one(entry: dict[str, object], n: int) -> tuple[int, str]:
    """How many of ``n`` replays of ``entry``'s token failed as recorded,
    and what the first one that did not looked like ("" if none)."""
    token = str(entry["token"])
    expected = (str(entry["kind"]), int(entry["step"]))  # type: ignore[call-overload]
    same, first_message, odd = 0, None, ""
    for _ in range(n):
        try:
            r = replay(token, trace=False)
        except ConcurrentDirtyError as exc:
            return 0, f"cannot replay: {exc}"
        got = (str(r.outcome.kind), r.outcome.step)
        if first_message is None and got == expected:
            first_message = r.outcome.message
        if r.diverged_at is None and got == expected and r.outcome.message == first_message:
            same += 1
        elif not odd:
            odd = (f"got {got[0]} at step {got[1]}"
                   + (f", diverged at step {r.diverged_at}" if r.diverged_at is not None else "")
                   + f" (recorded {expected[0]} at step {expected[1]})")
    return same, odd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100, help="replays per token (default 100)")
    ap.add_argument("--tokens", default=str(DEFAULT), help="the JSON file of tokens")
    ap.add_argument("--only", action="append", help="replay only this entry (repeatable)")
    args = ap.parse_args()
    if args.n < 1:
        ap.error(f"expected -n >= 1, got {args.n}")
    entries = json.loads(pathlib.Path(args.tokens).read_text())
    names = args.only or sorted(entries)
    unknown = [name for name in names if name not in entries]
    if unknown:
        ap.error(f"expected entries of {args.tokens}, got {unknown}")
    start, short = time.monotonic(), 0
    width = max(len(name) for name in names)
    for name in names:
        same, odd = replay_one(entries[name], args.n)
        short += same < args.n
        print(f"{name:<{width}}  {same}/{args.n} replayed the same failure"
              + (f"  [first other: {odd}]" if odd else ""), flush=True)
    print(f"{len(names) - short}/{len(names)} tokens replayed the same failure "
          f"{args.n}/{args.n} times ({time.monotonic() - start:.0f}s)")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
