"""Minimisation: the same program's failing schedule with the fewest
preemptions (its own preemptions dropped, sampled preemption points, then
iterative preemption bounding), and a search's failure given that
schedule."""

from __future__ import annotations

import random
import time
from typing import Any

from .._core.runtime import Verdict
from ..engines.controlled import DEFAULT_MAX_STEPS, run_controlled
from ..harness.execution import ExecutionResult
from ..schedulers import (
    Budget,
    DfsScheduler,
    PointsRecorder,
    PreemptionPoints,
    ReplayScheduler,
    ThreadPoints,
)
from .replay import _fresh, _write_pending
from .report import FuzzReport

__all__ = ["MINIMIZE_EXECUTIONS", "fewest_preemptions", "fewest_within",
           "minimize_preemptions"]


def fewest_preemptions(found: ExecutionResult, *, max_executions: int = 20_000,
                       seconds: float = 30.0,
                       max_steps: int = DEFAULT_MAX_STEPS) -> tuple[ExecutionResult, bool]:
    """The same program's failing schedule with the fewest preemptions, in
    three phases within ``max_executions`` executions:

    0. dropping: the failing schedule's own preemptions, each at its point
       in its thread's progress (:class:`~concurrent_dirty.schedulers.ThreadPoints`),
       removed in halves, quarters, ... and then one by one (delta
       debugging, Zeller and Hildebrandt, TSE 2002), keeping every removal
       after which the same failure still happens, for up to a quarter of
       the executions: a random walk's counterexample with two hundred
       preemptions comes down to the one or two that matter in a few
       dozen runs, where sampling new points would rarely meet them;
    1. sampling: schedules with k preemption points (k = 1, 2, ... below the
       best so far; the running thread keeps the CPU elsewhere, see
       :class:`~concurrent_dirty.schedulers.PreemptionPoints`), every single
       point in a shuffled order for k = 1, random ones above, for up to half
       the executions: a random walk's counterexample with thirty preemptions
       usually needs one or two, and this finds them in a few hundred runs;
    2. proof: exhaustive search with bound 0, 1, ... below the best
       (Musuvathi and Qadeer's iterative context bounding).

    The budget is counted in executions, so the result is the same on any
    machine; ``seconds`` is only a safety net (when it cuts the search
    short, the result depends on the machine's speed: see
    :func:`fewest_within`). Returns the traced result and whether its count
    is proven the fewest (every smaller bound exhausted); ``found`` itself
    (traced) if nothing smaller fails within the budget."""
    result, proven, _, _ = fewest_within(found, max_executions=max_executions,
                                         seconds=seconds, max_steps=max_steps)
    return result, proven


#: The clock of minimisation's safety net (a test makes it run fast).
_clock = time.monotonic


def fewest_within(found: ExecutionResult, *, max_executions: int, seconds: float,
                  max_steps: int = DEFAULT_MAX_STEPS
                  ) -> tuple[ExecutionResult, bool, int, bool]:
    """:func:`fewest_preemptions`, and the executions it ran and whether
    ``seconds`` (the safety net) cut it short."""
    deadline = _clock() + seconds
    best = found
    runs = 0
    timed_out = False

    def run(scheduler: Any) -> ExecutionResult:
        nonlocal runs
        runs += 1
        return run_controlled(found.algorithm_ref, found.scenario, found.program, scheduler,
                              max_steps=max_steps)

    def out_of_time() -> bool:
        nonlocal timed_out
        timed_out = timed_out or _clock() >= deadline
        return timed_out

    # 0. dropping preemptions, for up to a quarter of the executions
    if best.outcome.preemptions > 1:
        best = _drop_preemptions(found, run, lambda: runs < max_executions // 4
                                 and not out_of_time())
    # 1. sampling, for up to half the executions
    decisions = max(1, len(found.outcome.schedule))
    rng = random.Random(f"fewest:{decisions}:{found.outcome.step}")
    k = 1
    while k < best.outcome.preemptions and runs < max_executions // 2 and not out_of_time():
        if k == 1:
            singles = [(i, v) for i in range(decisions) for v in (1, 2)]
            rng.shuffle(singles)
            tries: Any = ([p] for p in singles)
        else:
            tries = ([(rng.randrange(decisions), rng.randrange(1, 3)) for _ in range(k)]
                     for _ in range(4 * decisions))
        for points in tries:
            if runs >= max_executions // 2 or out_of_time():
                break
            result = run(_fresh(PreemptionPoints(points)))
            if result.outcome.kind == found.outcome.kind \
                    and result.outcome.preemptions < best.outcome.preemptions:
                best = result
                break
        k += 1
    # 2. proof: every bound below the best, exhausted
    for bound in range(best.outcome.preemptions):
        dfs = DfsScheduler(bound)
        budget = Budget(dfs, executions=max(0, max_executions - runs))
        while not out_of_time() and budget.new_execution():
            result = run(budget)
            if result.outcome.kind == found.outcome.kind:
                return _retrace(result, max_steps), True, runs, timed_out
        if not dfs.exhausted:
            return _retrace(best, max_steps), False, runs, timed_out  # not proven
    return _retrace(best, max_steps), True, runs, timed_out


def _drop_preemptions(found: ExecutionResult, run: Any,
                      more: Any) -> ExecutionResult:
    """Phase 0 of :func:`fewest_within`: ``found``'s preemptions, dropped
    while the same failure still happens (``run(scheduler)`` runs one
    execution; ``more()`` says whether the budget allows another). Returns
    the failing result with the fewest preemptions it reached (``found``
    if none)."""
    kind = found.outcome.kind
    recorder = _fresh(PointsRecorder(found.outcome.schedule))
    if not more() or run(recorder).outcome.kind != kind or recorder.diverged_at is not None:
        return found  # it does not replay as it was: nothing to drop from
    follow = recorder.follow
    targets = dict(recorder.preempt)
    points = list(targets)  # in the order they happened
    best = found
    chunk = max(1, len(points) // 2)
    while points and more():
        progress = False
        i = 0
        while i < len(points) and more():
            trial = points[:i] + points[i + chunk:]
            scheduler = _fresh(ThreadPoints({p: targets[p] for p in trial}, follow))
            result = run(scheduler)
            if result.outcome.kind == kind \
                    and result.outcome.preemptions < best.outcome.preemptions:
                best = result
                points = list(scheduler.applied)  # the ones that took place
                progress = True
            else:
                i += chunk
        if chunk > 1:
            chunk = max(1, chunk // 2)
        elif not progress:
            break  # no single preemption can go: one-minimal
    return best


def _retrace(found: ExecutionResult, max_steps: int) -> ExecutionResult:
    """``found`` again under its own schedule, with the trace on (``found``
    itself if it already has its trace: not run twice)."""
    if found.outcome.trace:
        return found
    return run_controlled(found.algorithm_ref, found.scenario, found.program,
                          _fresh(ReplayScheduler(found.outcome.schedule)), trace=True,
                          max_steps=max_steps)


def minimize_preemptions(found: ExecutionResult, *, max_executions: int = 20_000,
                         seconds: float = 30.0,
                         max_steps: int = DEFAULT_MAX_STEPS) -> ExecutionResult:
    """:func:`fewest_preemptions`'s result alone."""
    return fewest_preemptions(found, max_executions=max_executions, seconds=seconds,
                              max_steps=max_steps)[0]


#: The executions a search spends minimizing its failure's preemptions
#: (half of them at most sampling preemption points, the rest proving).
#: Counted in executions, not seconds, so that the printed counterexample
#: is the same on any machine for the same seed (with one job).
MINIMIZE_EXECUTIONS = 800


def _minimize(report: FuzzReport, seconds: float, max_steps: int,
              token_file: str | None) -> None:
    """Give a search's failure the fewest preemptions on its program, within
    :data:`MINIMIZE_EXECUTIONS` executions: a random walk's counterexample
    has dozens of preemptions, most of them irrelevant; one with one or two
    is read at a glance. On a small program the bounds below it are soon
    exhausted; on a wide one the budget may run out first, and the report
    says the count is not proven the fewest. What is left of ``seconds`` is
    a safety net only (the report says when it cut the minimisation short:
    then, and only then, the result depends on the machine). The first
    failure's time and execution stay in ``extra`` (the Runner's);
    ``extra["minimized"]``
    always says whether the count is proven the fewest (a failure with no
    preemption is; a hang or a nondeterministic failure is not minimized)."""
    found = report.failure
    if found is None:
        return
    p = found.outcome.preemptions
    if found.outcome.kind == Verdict.HANG or "nondeterministic" in report.extra:
        why = "a hang" if found.outcome.kind == Verdict.HANG else "nondeterministic"
        report.extra["minimized"] = {"preemptions_found": p, "preemptions": p,
                                     "fewest": False, "seconds": 0.0, "executions": 0,
                                     "skipped": why}
        return
    if not p:
        report.extra["minimized"] = {"preemptions_found": 0, "preemptions": 0,
                                     "fewest": True, "seconds": 0.0, "executions": 0,
                                     "by": "none needed"}
        return
    left = seconds - report.seconds
    if left <= 0:
        report.extra["minimized"] = {"preemptions_found": p, "preemptions": p,
                                     "fewest": False, "seconds": 0.0, "executions": 0,
                                     "timed_out": True,
                                     "skipped": "the search's time budget was spent"}
        return
    start = time.monotonic()
    result, fewest, runs, timed_out = fewest_within(
        found, max_executions=MINIMIZE_EXECUTIONS, seconds=left, max_steps=max_steps)
    report.failure = result
    report.extra["minimized"] = {"preemptions_found": p,
                                 "preemptions": result.outcome.preemptions,
                                 "fewest": fewest, "executions": runs,
                                 "timed_out": timed_out,
                                 "seconds": round(time.monotonic() - start, 4)}
    if token_file:
        _write_pending(token_file, result.token)
