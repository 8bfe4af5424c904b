"""Hypothesis drives the controlled engine: a strategy of interleavings
(the shape and every scheduling decision drawn from Hypothesis, nothing
from thread timing, so a failure shrinks) and iterative preemption bounding
to make a counterexample's preemptions provably minimal."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .._core.runtime import DEFAULT_WATCHDOG, Verdict
from ..dirtylog import DirtyLogAlgorithm, algorithm_name, resolve_algorithm
from ..engines.controlled import DEFAULT_MAX_STEPS, run_controlled
from ..errors import InvariantViolation, UsageError
from ..harness.execution import ExecutionResult
from ..harness.program import (
    DEEP_PAGES,
    DEEP_ROUNDS,
    DEEP_WRITES,
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
    tiny_cases,
)
from ..harness.scenario import Scenario
from ..schedulers import PreemptionPoints, ReplayScheduler
from .minimize import fewest_preemptions, fewest_within, minimize_preemptions
from .model import DRAWN_OPTIONS, drawn_options, explain
from .races import RaceBounded
from .replay import _fresh, _write_pending, pending_token
from .report import FuzzReport

__all__ = ["Interleaving", "check_model_pins", "hypothesis_search", "interleavings",
           "minimize_preemptions"]


@dataclass(frozen=True)
class Interleaving:
    """One drawn case: the VM's shape, the writers' program, and the
    schedule as a few preemption points: ``(decision, value)`` pairs at
    which the running thread is preempted for another (see
    :class:`~concurrent_dirty.schedulers.PreemptionPoints`); or, for a
    case of the tiny scope or of ``fuzz``'s small scope (``dfs`` > 0), the
    race-directed search's schedules of the program that reverse races,
    with at most :data:`TINY_BOUND` preemptions, within ``dfs``
    executions (``search/races.py``), in place of the points: the schedule
    is then enumerated, not drawn, and as deterministic."""

    algorithm: str
    scenario: Scenario
    program: Program
    points: tuple[tuple[int, int], ...]
    #: Background preemptions: rate/16 per decision, from ``noise_seed``.
    rate: int = 0
    noise_seed: int = 0

    #: Executions of the race search over the schedules (0: the points).
    dfs: int = 0

    def run(self, *, trace: bool = False, max_steps: int = DEFAULT_MAX_STEPS,
            watchdog: float = DEFAULT_WATCHDOG) -> ExecutionResult:
        return self.run_counted(trace=trace, max_steps=max_steps, watchdog=watchdog)[0]

    def run_counted(self, *, trace: bool = False, max_steps: int = DEFAULT_MAX_STEPS,
                    watchdog: float = DEFAULT_WATCHDOG,
                    deadline: float | None = None) -> tuple[ExecutionResult, int]:
        """The case's result (with ``dfs``: the first failing schedule, else
        the last one run) and the executions it took; with ``deadline`` (a
        ``time.monotonic()`` value), the ``dfs`` runs stop there: a
        campaign's seconds bound every example, not only the start of one."""
        if not self.dfs:
            scheduler = PreemptionPoints(self.points, rate=self.rate, seed=self.noise_seed)
            return run_controlled(self.algorithm, self.scenario, self.program,
                                  _fresh(scheduler), trace=trace, max_steps=max_steps,
                                  watchdog=watchdog), 1
        runs = 0
        result: ExecutionResult | None = None
        search = RaceBounded(TINY_BOUND, races_only=True)
        while runs < self.dfs and search.new_execution():
            if runs and deadline is not None and time.monotonic() >= deadline:
                return result, runs  # type: ignore[return-value]
            runs += 1
            result = run_controlled(self.algorithm, self.scenario, self.program, search,
                                    trace=trace, max_steps=max_steps, watchdog=watchdog,
                                    observe=search.observe)
            if result.failed:
                return result, runs
        assert result is not None
        return result, runs

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
        found, fewest = fewest_preemptions(result, max_executions=MINIMIZE_EXECUTIONS)
        exc = found.error()
        if exc is None:  # pragma: no cover - a failing schedule fails again
            return
        exc.args = (f"{minimal_line(found, fewest, result.outcome.preemptions)}\n{exc.args[0]}",
                    *exc.args[1:])
        raise exc


#: The tiny scope's preemption bound and executions per case (the
#: race-directed search's schedules, ``search/races.py``).
TINY_BOUND = 2
TINY_EXECUTIONS = 64
#: The small scope's first cases, drawn half of the time.
TINY_HEAD = 4


#: The share of the time left at the first failure that Hypothesis's
#: shrinking may take (the rest is the minimisation's).
SHRINK_SHARE = 0.5

#: The most executions the final report spends proving its preemptions
#: the fewest (iterative bounding below the count it has).
MINIMIZE_EXECUTIONS = 5000


def minimal_line(found: ExecutionResult, fewest: bool, before: int) -> str:
    """The line that says whether a counterexample's preemptions are
    proven the fewest."""
    n = found.outcome.preemptions
    return (f"counterexample: {n} preemption{'' if n == 1 else 's'}, "
            + ("the fewest on this program (every smaller bound exhausted)" if fewest
               else "not proven the fewest (the budget ran out)")
            + f"; Hypothesis's shrunk example had {before}")


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
                  rounds: Any = None, on_behalf: bool | float | None = None,
                  slots: Any = None,
                  initially_set: bool | None = None, fast_page_fault: bool | None = None,
                  pml: bool | None = None, pml_entries: Any = None,
                  base: Scenario | None = None, max_points: int = 6,
                  max_decision: int = 400, ring_entries: Any = None,
                  ring_soft_limit: Any = None, ring_batch: Any = None,
                  clear_words: int | None = None, stuck_rounds: int | None = None,
                  tlb: bool | None = None) -> Any:
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
    or a strategy; nothing is drawn from thread timing. ``clear_words``,
    ``stuck_rounds`` and ``tlb`` set those fields of ``base``, as ``fuzz``'s
    options do; ``on_behalf`` is a bool (every write the guest's own, or
    every one on its behalf) or ``fuzz``'s share from 0 to 1 (0 and 1 pin
    it, a share between leaves each writer's share drawn).

    The values given are checked here, before anything is drawn, as ``fuzz``
    checks its options: the Scenario's ranges, the algorithm's model (the
    ring with PML), and :func:`check_model_pins`'s conflicts; a bad one
    raises :class:`~concurrent_dirty.errors.UsageError` with one line.
    """
    from hypothesis import strategies as st

    from ..mutants import algorithm_spec

    algorithm = algorithm_spec(algorithm)  # a mutant's name, as the CLI takes
    cls = resolve_algorithm(algorithm)
    fields: dict[str, Any] = {k: v for k, v in (
        ("clear_words", clear_words), ("stuck_rounds", stuck_rounds), ("tlb", tlb))
        if v is not None}
    base = replace(base or Scenario(), algorithm=algorithm, **fields)
    given = {k: v for k, v in (
        ("writers", writers), ("slots", slots), ("pages", pages), ("writes", writes),
        ("initially_set", initially_set), ("fast_page_fault", fast_page_fault), ("pml", pml),
        ("pml_entries", pml_entries), ("ring_entries", ring_entries),
        ("ring_soft_limit", ring_soft_limit), ("ring_batch", ring_batch))
        if v is not None and not isinstance(v, st.SearchStrategy)}
    _check_given(algorithm, cls, base, given,
                 None if isinstance(rounds, st.SearchStrategy) else rounds)
    if on_behalf is not None and not isinstance(on_behalf, bool):
        if not isinstance(on_behalf, int | float) or not 0 <= on_behalf <= 1:
            raise UsageError(f"expected a probability from 0 to 1 (or a bool) for on_behalf, "
                             f"got {on_behalf!r}")
        on_behalf = None if 0 < on_behalf < 1 else bool(on_behalf)
    # The program space's rule (ProgramSpace.for_algorithm): the model's
    # options and the ones the algorithm does not vary are pinned.
    space = ProgramSpace(fast_page_fault=fast_page_fault, pml=pml,
                         pml_entries=pml_entries if isinstance(pml_entries, int) else None
                         ).for_algorithm(cls, base)
    ring = is_ring_algorithm(algorithm)
    # The small scope's cases as fuzz runs them (``explore``): two rounds
    # for an algorithm written for the fast page fault, PML or the ring,
    # the first two also first. With a shape pinned, the drawn tiny
    # programs below instead.
    model = getattr(cls, "model", None) or {}
    on_path = any(model.get(k) for k in ("fast_page_fault", "pml", "dirty_ring"))
    tiny_rounds, path = (2 if on_path else 1), on_path and not ring
    pinned = (writers, writes, pages, slots, rounds, on_behalf, ring_entries,
              ring_soft_limit, ring_batch, pml_entries)
    tiny_space = None if any(v is not None for v in pinned) \
        else replace(space, initially_set=initially_set)

    def as_strategy(value: Any, default: Any) -> Any:
        if value is None:
            return default
        return value if isinstance(value, st.SearchStrategy) else st.just(value)

    # A write's kind: the guest's (0), on its behalf on the vCPU (1) or
    # with no running vCPU (2); shrinks toward the guest's own writes.
    writer_kinds = st.sampled_from((st.just(0), st.sampled_from((0, 1, 2)),
                                    st.sampled_from((1, 2)), st.just(1)))
    kinds = st.sampled_from((0, 1, 2)) if on_behalf is None \
        else st.sampled_from((1, 2)) if on_behalf else st.just(0)

    @st.composite
    def build(draw: Any) -> Interleaving:
        # The program space's scopes, the small scope's cases first (a
        # failure shrinks toward them): case (one of fuzz's small-scope
        # cases, its first ones half of the time, under the race search;
        # with a shape pinned, tiny instead), tiny (1 or 2 writers with 1
        # or 2 writes drawn on the 2 pages of one word, 1 round), small
        # (one slot of one or two pages, two writers, 5-8 writes each, 3-5
        # rounds), wide (1-3 slots of boundary sizes, 1-3
        # writers, 1-3 writes, 0-3 rounds) and deep (slots wider than a
        # word, 8-24 writes per writer over 2-4 rounds).
        scope = draw(st.sampled_from(("case", "small", "case", "tiny", "wide", "deep")))
        if scope == "case" and tiny_space is None:
            scope = "tiny"
        tiny, small, deep = scope == "tiny", scope == "small", scope == "deep"
        if scope == "case":
            assert tiny_space is not None
            # fuzz's small scope, case by case (its first cases half of
            # the time; shrinks toward them), under the race search.
            index = draw(st.one_of(st.integers(0, TINY_HEAD - 1),
                                   st.integers(0, tiny_cases() - 1)))
            sc, prog = tiny_space.tiny(base, index, rounds=tiny_rounds, path=path)
            return Interleaving(algorithm, sc, prog, (), dfs=TINY_EXECUTIONS)
        n_writers = draw(as_strategy(writers, st.integers(1, 2) if tiny
                                     else st.just(2) if small else st.integers(1, 3)))
        n_slots = draw(as_strategy(slots, st.just(1) if tiny or small
                                   else st.integers(1, 2) if deep else st.integers(1, 3)))
        n_pages = draw(as_strategy(pages, st.just(2) if tiny
                                   else st.sampled_from((1, 2)) if small
                                   else st.sampled_from(DEEP_PAGES) if deep
                                   else st.sampled_from(SLOT_SIZES)))
        n_rounds = draw(as_strategy(rounds, st.just(1) if tiny
                                    else st.sampled_from(SMALL_ROUNDS) if small
                                    else st.sampled_from(DEEP_ROUNDS) if deep
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
        some = st.integers(1, 2) if tiny else st.sampled_from(SMALL_WRITES) if small \
            else st.sampled_from(DEEP_WRITES) if deep else st.integers(1, 3)
        if ring and deep:
            # More writes than the ring holds: it fills and wraps.
            some = st.integers(scenario.ring_entries + 1, 2 * scenario.ring_entries + 1)
        per_writer = as_strategy(writes, some if not ring else st.one_of(
            # A ring's boundary: one write more than it holds, so it fills.
            some, st.just(scenario.ring_entries + 1)))
        program = []
        for _ in range(n_writers):
            k = draw(per_writer)
            # The writer's on-behalf share, as the program space draws it
            # per writer: none (every write the guest's own), all, or some.
            flag = kinds if on_behalf is not None else draw(writer_kinds)
            if deep:
                # A few pages (of one word, or across a boundary: the
                # edges are drawn half of the time), visited again and again
                # in orders Hypothesis draws.
                pool = draw(st.lists(gfn, min_size=1, max_size=6, unique=True))
                program.append(tuple((pool[draw(st.integers(0, len(pool) - 1))], draw(flag))
                                     for _ in range(k)))
            else:
                program.append(tuple((draw(gfn), draw(flag)) for _ in range(k)))
        if tiny:
            # The race search's schedules with at most two preemptions (a
            # tiny program makes a few dozen decisions).
            return Interleaving(algorithm, scenario, Program(tuple(program), n_rounds), (),
                                dfs=TINY_EXECUTIONS)
        # Preemption points within the execution's length: a small program
        # makes a few hundred decisions.
        last = min(max_decision, 250 if small else max_decision)
        points = draw(st.lists(st.tuples(st.integers(0, last), st.integers(1, 3)),
                               max_size=max_points, unique_by=lambda p: p[0]))
        rate = draw(st.integers(0, 8))
        noise_seed = draw(st.integers(0, 2**32 - 1)) if rate else 0
        return Interleaving(algorithm, scenario, Program(tuple(program), n_rounds),
                            tuple(sorted(points)), rate, noise_seed)

    return build()


def first_cases(algorithm: str, n: int = TINY_HEAD) -> list[Interleaving]:
    """``fuzz``'s first ``n`` small-scope cases for ``algorithm`` (with
    nothing pinned), as :func:`interleavings` draws them: each under the
    race search."""
    from ..mutants import algorithm_spec

    algorithm = algorithm_spec(algorithm)
    cls = resolve_algorithm(algorithm)
    base = Scenario(algorithm=algorithm)
    model = getattr(cls, "model", None) or {}
    on_path = any(model.get(k) for k in ("fast_page_fault", "pml", "dirty_ring"))
    path = on_path and not is_ring_algorithm(algorithm)
    space = ProgramSpace().for_algorithm(cls, base)
    out = []
    for index in range(n):
        sc, prog = space.tiny(base, index, rounds=2 if on_path else 1, path=path)
        out.append(Interleaving(algorithm, sc, prog, (), dfs=TINY_EXECUTIONS))
    return out


def _api_spelling(name: str, value: Any) -> str:
    return f"algorithm {value!r}" if name == "algorithm" else f"{name}={value!r}"


def check_model_pins(classes: Mapping[str, type[DirtyLogAlgorithm]],
                     pins: Mapping[str, Any],
                     spell: Callable[[str, Any], str] = _api_spelling) -> None:
    """The conflicts between the model options pinned (``pins``: name to
    value, None for drawn) and the algorithms (spec to class) that ``fuzz``
    and :func:`interleavings` both refuse, as a one-line
    :class:`UsageError`; ``spell(name, value)`` writes an option as its
    caller takes it (``--no-pml``, ``pml=False``): PML or the fast page
    fault pinned off for an algorithm whose model turns it on, and a ring
    option with no ring algorithm (it would change nothing)."""
    rings = []
    for spec, cls in classes.items():
        model = getattr(cls, "model", None) or {}
        for option in ("pml", "fast_page_fault"):
            if model.get(option) is True and pins.get(option) is False:
                raise UsageError(f"expected no {spell(option, False)} with "
                                 f"{spell('algorithm', spec)} (its model turns it on), got both")
        if model.get("dirty_ring"):
            rings.append(spec)
    given = [spell(k, pins[k]) for k in ("ring_entries", "ring_soft_limit", "ring_batch")
             if pins.get(k) is not None]
    if given and not rings:
        raise UsageError(f"expected a ring algorithm ({spell('algorithm', 'ring')}) with "
                         f"{', '.join(given)}, got {', '.join(classes)}")


def _check_given(algorithm: str, cls: type[DirtyLogAlgorithm], base: Scenario,
                 given: dict[str, Any], rounds: Any) -> None:
    """:func:`interleavings`'s values, checked as ``fuzz`` checks its
    options (``cli/campaign.py``): the conflicts, then the Scenario the
    pins make with the algorithm's model applied."""
    from ..harness.execution import apply_model

    check_model_pins({algorithm: cls}, given)
    if rounds is not None and (
            not isinstance(rounds, int) or isinstance(rounds, bool) or not 0 <= rounds <= 1000):
        raise UsageError(f"expected a number of rounds from 0 to 1000 for rounds, "
                         f"got {rounds!r}")
    pins = dict(given)
    soft = pins.get("ring_soft_limit")
    if "ring_entries" not in pins and isinstance(soft, int) and not isinstance(soft, bool):
        # A soft limit given alone gets the smallest ring above it (as fuzz's).
        entries = base.ring_entries
        while entries <= soft:
            entries *= 2
        pins["ring_entries"] = entries
    apply_model(cls, replace(base, **pins))  # the Scenario's checks, then the model's


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
    (Hypothesis's shrinking takes at most :data:`SHRINK_SHARE` of what
    remains of it at the first failure, and the rest bounds the preemption
    minimisation); a failure found
    at any moment is reported with its counterexample and token, whatever
    Hypothesis does after it (the shrunk one when shrinking ends in time,
    else the smallest seen). A failure that does not replay the same way is
    reported as nondeterminism in the code under test, with both outcomes.
    """
    from hypothesis import HealthCheck, Verbosity, given, settings
    from hypothesis import seed as hseed

    from ..mutants import algorithm_spec

    algorithm = algorithm_spec(algorithm)
    cls = resolve_algorithm(algorithm)
    report = FuzzReport(algorithm=algorithm_name(cls), scheduler="hypothesis")
    report.extra["seed"] = seed
    start = time.monotonic()
    deadline = start + seconds
    failures: list[ExecutionResult] = []
    last_tick = [start]
    # Once a failure is found, Hypothesis shrinks it for half of the time
    # left at most: the other half is the minimisation's (the fewest
    # preemptions), which a shrink that ran to the deadline left none.
    shrink_until = [deadline]

    def body(case: Interleaving) -> None:
        now = time.monotonic()
        if now >= shrink_until[0] or (stop is not None and not failures and stop()):
            raise _OutOfTime
        if token_file:
            # What is running now, as a token replay accepts: a crash or a
            # hang still leaves something to replay (as the Runner does).
            _write_pending(token_file, pending_token(cls, case.scenario, case.program))
        result, runs = case.run_counted(max_steps=max_steps, watchdog=watchdog,
                                        deadline=shrink_until[0])
        report.executions += runs
        report.steps += result.outcome.steps
        report.preemptions += result.outcome.preemptions
        if progress is not None and now - last_tick[0] > 0.2:
            last_tick[0] = now
            report.seconds = now - start
            progress(report)
        if result.failed:
            if not failures:  # what the search cost, before shrinking
                found_at = time.monotonic()
                report.extra["first_failure_seconds"] = round(found_at - start, 4)
                report.extra["first_failure_execution"] = report.executions
                shrink_until[0] = found_at + (deadline - found_at) * SHRINK_SHARE
            failures.append(result)
            if result.outcome.kind == Verdict.HANG:
                raise _Hung  # no shrinking: every example would cost a watchdog period
            raise _Failed(f"{result.outcome.kind}: {result.outcome.message}")

    test = hseed(seed)(settings(
        max_examples=executions, deadline=None, database=None, print_blob=False,
        verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck),
    )(given(case=interleavings(algorithm, **(pins or {})))(body)))
    try:
        # fuzz's first small-scope cases run first (then Hypothesis draws):
        # a race they show is found at once, with at most 2 preemptions, and
        # needs no shrinking.
        for case in ([] if pins else first_cases(algorithm)):
            body(case)
        test()
    except _OutOfTime:
        report.stopped_by = "seconds" if time.monotonic() >= shrink_until[0] else "stopped"
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
            p = found.outcome.preemptions
            report.extra["minimized"] = {"preemptions_found": p, "preemptions": p,
                                         "fewest": False, "seconds": 0.0, "executions": 0,
                                         "skipped": "nondeterministic"}
        else:
            left = max(0.0, deadline - time.monotonic())
            began = time.monotonic()
            report.failure, fewest, runs, timed_out = fewest_within(
                found, seconds=left, max_steps=max_steps, max_executions=MINIMIZE_EXECUTIONS)
            report.extra["minimized"] = {"preemptions_found": found.outcome.preemptions,
                                         "preemptions": report.failure.outcome.preemptions,
                                         "fewest": fewest, "executions": runs,
                                         "timed_out": timed_out,
                                         "seconds": round(time.monotonic() - began, 4)}
    if token_file and report.failure is not None:
        _write_pending(token_file, report.failure.token)
    explain(report, _drawn(cls, pins or {}), max_steps=max_steps)
    report.seconds = time.monotonic() - start
    return report


def _drawn(cls: type[DirtyLogAlgorithm], pins: dict[str, Any]) -> list[str]:
    """The model options :func:`interleavings` draws for ``cls`` under ``pins``."""
    space = ProgramSpace(**{k: v for k, v in pins.items()
                            if k in DRAWN_OPTIONS and not hasattr(v, "example")})
    return drawn_options(space.for_algorithm(cls, pins.get("base") or Scenario()), cls)


def _size(result: ExecutionResult) -> int:
    return sum(len(w) for w in result.program.writes) + len(result.program.writes)
