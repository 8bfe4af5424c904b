"""Replay tokens: everything needed to rerun one controlled execution.

Format: ``cd<version>.`` followed by URL-safe base64 (no padding) of the
zlib-compressed, sorted JSON payload ``{"algorithm", "scenario", "program",
"schedule", "expect"}``: the algorithm's reference, the scenario fields that
shape the VM, the writers' writes and the rounds, the thread chosen at each
scheduling decision, and the failure it led to (kind and step).

Schedules follow the instrumentation: when the switch points change, the
version goes up. Version 2 (this release) came with the domain-free runtime
(waits are modelled blocks, lock internals are not switch points); a token
of another version is refused with a one-line error that names it and says
how to get a new one (rerun the search, or ``tools/make_regression_tokens.py``
for the committed ones).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._core.runtime import Outcome
from ..errors import UsageError
from .scenario import Scenario

if TYPE_CHECKING:
    from .program import Program

__all__ = ["VERSION", "encode", "decode", "ReplayCase"]

VERSION = 2
_PREFIX = re.compile(r"^cd(\d+)\.([A-Za-z0-9_-]+)$")
_SCENARIO_FIELDS = ("slots", "pages", "initially_set", "seed", "lock_timeout", "tlb")
#: Fields added later, with the default a token without them meant.
_OPTIONAL_FIELDS = {"clear_words": 1, "fast_page_fault": False, "pml": False,
                    "pml_entries": 512, "stuck_rounds": 2, "dirty_ring": False,
                    "ring_entries": 8, "ring_soft_limit": None, "ring_batch": 0}


@dataclass(frozen=True)
class ReplayCase:
    algorithm: str
    scenario: Scenario
    program: Program
    schedule: tuple[int, ...]
    expect_kind: str
    expect_step: int


class Replayable(Protocol):
    """What a token records of an execution (an
    :class:`~concurrent_dirty.ExecutionResult` is one; a protocol, so that
    this module does not import the execution that imports it)."""

    @property
    def algorithm_ref(self) -> str: ...

    @property
    def scenario(self) -> Scenario: ...

    @property
    def program(self) -> Program: ...

    @property
    def outcome(self) -> Outcome: ...


def encode(result: Replayable) -> str:
    sc = result.scenario
    payload = {
        "algorithm": result.algorithm_ref,
        "scenario": {**{f: getattr(sc, f) for f in _SCENARIO_FIELDS},
                     **{f: getattr(sc, f) for f, default in _OPTIONAL_FIELDS.items()
                        if getattr(sc, f) != default}},
        "program": result.program.to_json(),
        "schedule": result.outcome.schedule,
        "expect": {"kind": result.outcome.kind, "step": result.outcome.step},
    }
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    body = base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")
    return f"cd{VERSION}.{body}"


def _short(token: str) -> str:
    return repr(token if len(token) <= 40 else token[:37] + "...")


def decode(token: Any) -> ReplayCase:
    from .program import Program

    if not isinstance(token, str):
        raise UsageError(f"expected a replay token string like cd2.<base64>, "
                         f"got {type(token).__name__}")
    token = token.strip()
    m = _PREFIX.match(token)
    if m is None:
        raise UsageError(f"expected a replay token like cd2.<base64>, got {_short(token)}")
    version = int(m.group(1))
    if version != VERSION:
        raise UsageError(f"expected a version {VERSION} replay token, got version {version}: "
                         f"it was made by another release of concurrent-dirty, whose "
                         f"schedules differ; rerun the fuzz command that found it to get a "
                         f"new token (committed ones: python3 tools/make_regression_tokens.py)")
    body = m.group(2)

    def damaged(why: str) -> UsageError:
        return UsageError(f"expected a replay token like cd2.<base64>, got a damaged one "
                          f"({why})")

    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise damaged("its body is not base64") from None
    try:
        payload = json.loads(zlib.decompress(packed))
    except zlib.error:
        raise damaged("its body does not decompress: truncated or mistyped?") from None
    except ValueError:
        raise damaged("its payload is not JSON") from None
    try:
        scenario = Scenario(algorithm=str(payload["algorithm"]),
                            **{f: payload["scenario"][f] for f in _SCENARIO_FIELDS},
                            **{f: payload["scenario"].get(f, default)
                               for f, default in _OPTIONAL_FIELDS.items()})
        program = Program.from_json(payload["program"])
        schedule = tuple(int(t) for t in payload["schedule"])
        expect = payload["expect"]
        return ReplayCase(algorithm=str(payload["algorithm"]), scenario=scenario,
                          program=program, schedule=schedule, expect_kind=str(expect["kind"]),
                          expect_step=int(expect["step"]))
    except KeyError as exc:
        raise damaged(f"its payload has no {exc.args[0]!r}") from None
    except (TypeError, ValueError, IndexError) as exc:
        raise damaged(f"its payload is malformed: {exc}") from None
