"""Replay: rerun a token's execution under its recorded schedule, the
token of an execution still running (written before it starts, so that a
crash or a hang leaves something to replay), and a regression test made
from a token."""

from __future__ import annotations

from typing import Any

from .._core.runtime import DEFAULT_WATCHDOG
from ..dirtylog import DirtyLogAlgorithm, algorithm_name, algorithm_ref
from ..engines.controlled import DEFAULT_MAX_STEPS, run_controlled
from ..harness.execution import ExecutionResult
from ..harness.output import write_text
from ..harness.program import Program
from ..harness.scenario import Scenario
from ..harness.token import decode, encode
from ..schedulers import ReplayScheduler

__all__ = ["pending_token", "regression_test", "replay"]


def _write_pending(path: str, text: str) -> None:
    write_text(path, text + "\n")  # atomic for a file, plain for a device or FIFO


def pending_token(cls: type[DirtyLogAlgorithm], scenario: Scenario, program: Program) -> str:
    """A token for an execution that has not ended yet: its program with an
    empty schedule (replay then runs it under a deterministic default)."""
    from .._core.runtime import Outcome

    pending = ExecutionResult(algorithm=algorithm_name(cls), algorithm_ref=algorithm_ref(cls),
                              scenario=scenario, program=program, outcome=Outcome())
    return encode(pending)


def _fresh(scheduler: Any) -> Any:
    scheduler.new_execution()
    return scheduler


def replay(token: str, *, algorithm: str | None = None, trace: bool = True,
           max_steps: int = DEFAULT_MAX_STEPS,
           watchdog: float = DEFAULT_WATCHDOG) -> ExecutionResult:
    """Rerun a token's execution (against ``algorithm`` instead of the
    token's own, to check a fix). ``result.check()`` raises while it fails."""
    saved = decode(token)
    scheduler = _fresh(ReplayScheduler(saved.schedule))
    return run_controlled(algorithm or saved.algorithm, saved.scenario, saved.program,
                          scheduler, max_steps=max_steps, trace=trace, watchdog=watchdog)


def regression_test(token: str) -> str:
    """A pytest function that turns ``token`` into a regression test."""
    return (f"def test_replay_regression():\n"
            f"    from concurrent_dirty import replay\n"
            f"    replay({token!r}).check()  # raises while the bug is there\n")
