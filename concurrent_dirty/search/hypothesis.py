"""Hypothesis drives the controlled engine: a strategy of interleavings
(the shape and every scheduling decision drawn from Hypothesis, nothing
from thread timing, so a failure shrinks) and iterative preemption bounding
to make a counterexample's preemptions provably minimal."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .._core.runtime import DEFAULT_WATCHDOG, Verdict
from ..dirtylog import algorithm_name, resolve_algorithm
from ..engines.controlled import DEFAULT_MAX_STEPS, run_controlled
from ..errors import InvariantViolation
from ..harness.execution import ExecutionResult
from ..harness.program import (
    PML_ENTRIES_DRAWN,
    RING_SIZES,
    SLOT_SIZES,
    SMALL_ROUNDS,
    SMALL_WRITES,
    Program,
    ProgramSpace,
    boundary_gfns,
    build_memslots,
    is_ring_algorithm,
)
from ..harness.scenario import Scenario
from ..schedulers import PreemptionPoints, ReplayScheduler
from .runner import FuzzReport, _fresh, _write_pending, minimize_preemptions, pending_token

__all__ = ["Interleaving", "hypothesis_search", "interleavings", "minimize_preemptions"]


@dataclass(frozen=True)
class Interleaving:
    """One drawn case: the VM's shape, the writers' program, and the
    schedule as a few preemption points: ``(decision, value)`` pairs at
    which the running thread is preempted for another (see
    :class:`~concurrent_dirty.schedulers.PreemptionPoints`)."""

    algorithm: str
    scenario: Scenario
    program: Program
    points: tuple[tuple[int, int], ...]
    #: Background preemptions: rate/16 per decision, from ``noise_seed``.
    rate: int = 0
    noise_seed: int = 0

    def run(self, *, trace: bool = False, max_steps: int = DEFAULT_MAX_STEPS,
            watchdog: float = DEFAULT_WATCHDOG) -> ExecutionResult:
        scheduler = PreemptionPoints(self.points, rate=self.rate, seed=self.noise_seed)
        return run_controlled(self.algorithm, self.scenario, self.program, _fresh(scheduler),
                              trace=trace, max_steps=max_steps, watchdog=watchdog)

    def check(self) -> None:
        """Run it and raise if it fails. In Hypothesis's final run (the
        shrunk example it reports), first minimise the preemptions with
        iterative preemption bounding, then raise with the counterexample
        and the replay token."""
        self.check_result(self.run())

    def check_result(self, result: ExecutionResult) -> None:
        """:meth:`check` for a result the caller already has."""
        if not result.failed:
            return
        if not _is_final():
            raise _Failed(f"{result.outcome.kind}: {result.outcome.message}")
        minimize_preemptions(result).check()


class _Failed(InvariantViolation):
    """A failing example while Hypothesis explores and shrinks (not the
    final report)."""


class _Hung(BaseException):
    """An example hung (the runtime's watchdog): report it as it is."""


class _OutOfTime(BaseException):
    """The campaign's seconds are spent: ends Hypothesis's run at once
    (Hypothesis lets a BaseException through), not as a failing example."""


def _is_final() -> bool:
    try:
        from hypothesis.control import current_build_context

        return bool(current_build_context().is_final)
    except Exception:  # outside a Hypothesis test: report in full
        return True


def interleavings(algorithm: str, *, writers: Any = None, writes: Any = None, pages: Any = None,
                  rounds: Any = None, on_behalf: bool | None = None, slots: Any = None,
                  initially_set: bool | None = None, fast_page_fault: bool | None = None,
                  pml: bool | None = None, pml_entries: Any = None,
                  base: Scenario | None = None, max_points: int = 6,
                  max_decision: int = 400, ring_entries: Any = None,
                  ring_soft_limit: Any = None, ring_batch: Any = None) -> Any:
    """A Hypothesis strategy of :class:`Interleaving` cases for ``algorithm``.

    The program comes from the same distribution as every engine's (see
    :mod:`concurrent_dirty.harness.program`): half of the time the small
    scope (one slot of one or two pages, two writers with 5, 6 or 8 writes,
    3-5 rounds), else 1-3 slots of boundary sizes, 1-3 writers with 1-3 writes
    each and 0-3 rounds; pages biased to word and slot edges, guest,
    on-behalf and device writes, ``INITIALLY_SET`` on or off, and the model
    options (the fast page fault, PML and its buffer's entries) that the
    algorithm supports (its ``varies``) and its ``model`` does not set.
    ``base`` gives every other scenario field (``clear_words``, ``tlb``,
    ``stuck_rounds``...; default: the Scenario's defaults). The schedule
    is a few sparse preemption points, not a dense list of decisions: with
    none the threads run until they block (no preemption at all), and each
    point adds one. Hypothesis shrinks toward fewer points, earlier ones,
    fewer writers, writes and pages: a failure shrinks to the smallest
    program and the fewest preemptions. Every argument takes a value (pinned)
    or a strategy; nothing is drawn from thread timing.
    """
    from hypothesis import strategies as st

    cls = resolve_algorithm(algorithm)
    base = replace(base or Scenario(), algorithm=algorithm)
    # The program space's rule (ProgramSpace.for_algorithm): the model's
    # options and the ones the algorithm does not vary are pinned.
    space = ProgramSpace(fast_page_fault=fast_page_fault, pml=pml,
                         pml_entries=pml_entries if isinstance(pml_entries, int) else None
                         ).for_algorithm(cls, base)
    ring = is_ring_algorithm(algorithm)

    def as_strategy(value: Any, default: Any) -> Any:
        if value is None:
            return default
        return value if isinstance(value, st.SearchStrategy) else st.just(value)

    # A write's kind: the guest's (0), on its behalf on the vCPU (1) or
    # with no running vCPU (2); shrinks toward the guest's own writes.
    flag = st.sampled_from((0, 1, 2)) if on_behalf is None \
        else st.sampled_from((1, 2)) if on_behalf else st.just(0)

    @st.composite
    def build(draw: Any) -> Interleaving:
        # The program space's two scopes, half and half: wide (first, so
        # that a failure shrinks toward it: fewer writes and rounds) and
        # small (one slot of one or two pages, two writers, 5-8 writes
        # each, 3-5 rounds). Measured: three small in four, or one page
        # only, cost the races that need two bits of a word (the
        # non-atomic clear: 1 seed in 3 within 5 s instead of 3).
        small = draw(st.sampled_from((False, True)))
        n_writers = draw(as_strategy(writers, st.just(2) if small else st.integers(1, 3)))
        n_slots = draw(as_strategy(slots, st.just(1) if small else st.integers(1, 3)))
        n_pages = draw(as_strategy(pages, st.sampled_from((1, 2)) if small
                                   else st.sampled_from(SLOT_SIZES)))
        n_rounds = draw(as_strategy(rounds, st.sampled_from(SMALL_ROUNDS) if small
                                    else st.integers(0, 3)))
        init = draw(st.booleans() if initially_set is None else st.just(initially_set))
        # On one time in four, as in the program space (a coin would leave
        # the seed's model to a quarter of the cases); shrinks to off.
        option = st.sampled_from((False, False, False, True))
        fast = space.fast_page_fault if space.fast_page_fault is not None \
            else draw(option)
        with_pml = space.pml if space.pml is not None else draw(option)
        entries = base.pml_entries if not with_pml \
            else space.pml_entries if space.pml_entries is not None \
            else draw(as_strategy(pml_entries, st.sampled_from(PML_ENTRIES_DRAWN)))
        scenario = replace(base, slots=n_slots, pages=n_pages, writers=n_writers,
                           initially_set=init, fast_page_fault=fast, pml=with_pml,
                           pml_entries=entries)
        if ring:
            # The ring's geometry: shrinks toward the smallest ring, the
            # soft limit one below it, the reaper taking all it finds.
            entries = draw(as_strategy(ring_entries, st.sampled_from(
                [n for n in RING_SIZES if not isinstance(ring_soft_limit, int)
                 or n > ring_soft_limit] or [1 << int(ring_soft_limit).bit_length()])))
            soft = draw(as_strategy(ring_soft_limit, st.sampled_from(
                sorted({entries - 1, max(2, entries // 2), 2}, reverse=True))))
            scenario = replace(scenario, ring_entries=entries, ring_soft_limit=soft,
                               ring_batch=draw(as_strategy(ring_batch,
                                                           st.sampled_from((0, 1, 2)))))
        gfn = _gfns(n_slots, n_pages)
        some = st.sampled_from(SMALL_WRITES) if small else st.integers(1, 3)
        per_writer = as_strategy(writes, some if not ring else st.one_of(
            # A ring's boundary: one write more than it holds, so it fills.
            some, st.just(scenario.ring_entries + 1)))
        program = []
        for _ in range(n_writers):
            k = draw(per_writer)
            program.append(tuple((draw(gfn), draw(flag)) for _ in range(k)))
        points = draw(st.lists(st.tuples(st.integers(0, max_decision), st.integers(1, 3)),
                               max_size=max_points, unique_by=lambda p: p[0]))
        rate = draw(st.integers(0, 8))
        noise_seed = draw(st.integers(0, 2**32 - 1)) if rate else 0
        return Interleaving(algorithm, scenario, Program(tuple(program), n_rounds),
                            tuple(sorted(points)), rate, noise_seed)

    return build()


@functools.lru_cache(maxsize=256)
def _gfns(slots: int, pages: int) -> Any:
    """Pages of a shape, half of the time an edge page (see
    ``boundary_gfns``); built once per shape, not per example."""
    from hypothesis import strategies as st

    memslots = build_memslots(Scenario(slots=slots, pages=pages))
    return st.one_of(st.sampled_from(boundary_gfns(memslots)),
                     st.integers(0, memslots.total_gfns - 1))


def hypothesis_search(algorithm: str, *, seed: int = 0, seconds: float = 10.0,
                      executions: int = 10_000, max_steps: int = DEFAULT_MAX_STEPS,
                      pins: dict[str, Any] | None = None,
                      stop: Callable[[], bool] | None = None,
                      progress: Callable[[FuzzReport], None] | None = None,
                      token_file: str | None = None,
                      watchdog: float = DEFAULT_WATCHDOG) -> FuzzReport:
    """Let Hypothesis search: draw cases from :func:`interleavings` (``pins``
    fixes some of its arguments), run each, and shrink the first failure.

    Deterministic for a ``seed``; ``seconds`` is a hard limit on the search
    (what remains of it bounds the preemption minimisation); a failure found
    at any moment is reported with its counterexample and token, whatever
    Hypothesis does after it (the shrunk one when shrinking ends in time,
    else the smallest seen). A failure that does not replay the same way is
    reported as nondeterminism in the code under test, with both outcomes.
    """
    from hypothesis import HealthCheck, Verbosity, given, settings
    from hypothesis import seed as hseed

    cls = resolve_algorithm(algorithm)
    report = FuzzReport(algorithm=algorithm_name(cls), scheduler="hypothesis")
    report.extra["seed"] = seed
    start = time.monotonic()
    deadline = start + seconds
    failures: list[ExecutionResult] = []
    last_tick = [start]

    def body(case: Interleaving) -> None:
        now = time.monotonic()
        if now >= deadline or (stop is not None and not failures and stop()):
            raise _OutOfTime
        if token_file:
            # What is running now, as a token replay accepts: a crash or a
            # hang still leaves something to replay (as the Runner does).
            _write_pending(token_file, pending_token(cls, case.scenario, case.program))
        result = case.run(max_steps=max_steps, watchdog=watchdog)
        report.executions += 1
        report.steps += result.outcome.steps
        report.preemptions += result.outcome.preemptions
        if progress is not None and now - last_tick[0] > 0.2:
            last_tick[0] = now
            report.seconds = now - start
            progress(report)
        if result.failed:
            if not failures:  # what the search cost, before shrinking
                report.extra["first_failure_seconds"] = round(time.monotonic() - start, 4)
                report.extra["first_failure_execution"] = report.executions
            failures.append(result)
            if result.outcome.kind == Verdict.HANG:
                raise _Hung  # no shrinking: every example would cost a watchdog period
            raise _Failed(f"{result.outcome.kind}: {result.outcome.message}")

    test = hseed(seed)(settings(
        max_examples=executions, deadline=None, database=None, print_blob=False,
        verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck),
    )(given(case=interleavings(algorithm, **(pins or {})))(body)))
    try:
        test()
    except _OutOfTime:
        report.stopped_by = "seconds" if time.monotonic() >= deadline else "stopped"
    except _Hung:
        report.failure = failures[-1]
    except _Failed:
        pass  # the shrunk failure, re-raised by Hypothesis: the last one run
    except Exception as exc:  # Hypothesis's own verdict (Flaky...): ours is below
        report.extra["hypothesis"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if failures and report.failure is None:
        # Hypothesis ends by replaying its shrunk example: the last failure.
        # If time cut the shrinking short, take the smallest seen.
        found = failures[-1] if report.stopped_by is None else min(
            failures, key=lambda r: (r.outcome.preemptions, _size(r), r.outcome.step))
        again = run_controlled(found.algorithm_ref, found.scenario, found.program,
                               _fresh(ReplayScheduler(found.outcome.schedule)),
                               max_steps=max_steps)
        if (again.outcome.kind, again.outcome.step) != (found.outcome.kind,
                                                        found.outcome.step):
            report.extra["nondeterministic"] = (
                f"the failure ({found.outcome.kind} at step {found.outcome.step}) replayed as "
                f"{again.outcome.kind} at step {again.outcome.step} under the same schedule: "
                f"the code under test depends on something outside the switch points")
            report.failure = found
        else:
            left = max(0.0, deadline - time.monotonic())
            report.failure = minimize_preemptions(found, seconds=left, max_steps=max_steps)
    if token_file and report.failure is not None:
        _write_pending(token_file, report.failure.token)
    report.seconds = time.monotonic() - start
    return report


def _size(result: ExecutionResult) -> int:
    return sum(len(w) for w in result.program.writes) + len(result.program.writes)
