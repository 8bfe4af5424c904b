"""The detection-power table: every mutant under every engine.

For each (mutant, engine) cell and each seed, run until the first detection
or the per-cell budget; report how many seeds detected it, the median time
and executions to the first detection, and the fewest preemptions in a
counterexample (controlled engines). The correct algorithms and the benign
look-alikes run too: any report on them is the harness crying wolf.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..dirtylog import ALGORITHMS
from ..engines.free import run_cell
from ..harness.program import ProgramSpace
from ..harness.scenario import Scenario
from ..mutants import MUTANTS, Mutant
from .hypothesis import hypothesis_search
from .runner import explore

__all__ = ["ENGINES", "CONTROLLED_ENGINES", "Trial", "Cell", "ZooCell", "ZooReport", "run_zoo",
           "run_zoo_cell", "zoo_plan"]

FREE_ENGINES = ("threads", "threads+noise", "processes")
CONTROLLED_ENGINES = ("auto", "random", "pct", "dfs", "hypothesis")
ENGINES = FREE_ENGINES + CONTROLLED_ENGINES
#: The real kernel (/dev/kvm): runs the kernel protocols and their mutants
#: only, and only when named (``--engine kvm``).
KERNEL_ENGINE = "kvm"
ALL_ENGINES = ENGINES + (KERNEL_ENGINE,)

#: With ``hints`` (opt-in): the small free-running scenario that each
#: mutant's own hints refine. Without, every engine runs with what a user
#: gets with no options: ``stress``'s and ``fuzz``'s defaults.
FREE_SCENARIO = dict(writers=2, slots=1, pages=8, writes=16, on_behalf=0.3)
#: With ``hints``: two writers, two pages, two writes each, refined by the
#: mutant's hints (the regression tokens are made this way).
CONTROLLED_SCENARIO = dict(writers=2, slots=1, pages=2, writes=2, on_behalf=0.3)


@dataclass
class Trial:
    detected: bool
    seconds: float
    executions: int
    preemptions: int | None = None
    kind: str = ""
    token: str = ""
    #: An error of the code under test (a method that raised, a deadlock, a
    #: hang): what it said, traceback or stack included.
    message: str = ""

    @property
    def hang(self) -> bool:
        return self.kind in ("hang", "error: HangError")


@dataclass
class Cell:
    subject: str
    role: str  # mutant, benign or correct
    breaks: str
    engine: str
    trials: list[Trial] = field(default_factory=list)
    #: A hang earlier in the run ended it before this cell.
    not_run: bool = False

    @property
    def detections(self) -> list[Trial]:
        return [t for t in self.trials if t.detected]

    @property
    def detected(self) -> bool:
        return bool(self.detections)

    def median_seconds(self) -> float | None:
        d = self.detections
        return statistics.median(t.seconds for t in d) if d else None

    def median_executions(self) -> float | None:
        d = self.detections
        return statistics.median(t.executions for t in d) if d else None

    def min_preemptions(self) -> int | None:
        p = [t.preemptions for t in self.detections if t.preemptions is not None]
        return min(p) if p else None

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "role": self.role, "breaks": self.breaks,
                "engine": self.engine, "status": "not run" if self.not_run else "run",
                "seeds": len(self.trials),
                "detected": len(self.detections),
                "median_seconds_to_detection": self.median_seconds(),
                "median_executions_to_detection": self.median_executions(),
                "min_preemptions": self.min_preemptions(),
                "trials": [vars(t) for t in self.trials]}


@dataclass
class ZooReport:
    engines: list[str]
    cells: list[Cell] = field(default_factory=list)
    #: The hang that ended the run ("subject/engine: report"), if one did.
    ended_by: str = ""

    def subjects(self, role: str) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.cells:
            if c.role == role:
                seen[c.subject] = None
        return list(seen)

    def score(self, engine: str) -> tuple[int, int]:
        mutants = [c for c in self.cells if c.role == "mutant" and c.engine == engine]
        return sum(c.detected for c in mutants), len(mutants)

    def undetected(self) -> list[str]:
        """The mutants that ran and escaped every engine (one whose cells a
        hang kept from running is not run, not undetected)."""
        return [m for m in self.subjects("mutant")
                if not any(c.detected for c in self.cells if c.subject == m)
                and not all(c.not_run for c in self.cells if c.subject == m)]

    def false_alarms(self) -> list[Cell]:
        return [c for c in self.cells if c.role != "mutant" and c.detected]

    @property
    def ok(self) -> bool:
        return not self.ended_by and not self.undetected() and not self.false_alarms()

    def to_json(self) -> dict[str, Any]:
        return {"engines": self.engines,
                "scores": {e: dict(zip(("detected", "mutants"), self.score(e), strict=True))
                           for e in self.engines},
                "undetected": self.undetected(),
                "false_alarms": [f"{c.subject}/{c.engine}" for c in self.false_alarms()],
                "verdict": "pass" if self.ok else "fail", "ended_by": self.ended_by,
                "cells": [c.to_json() for c in self.cells]}


def _free(ref: str, engine: str, extra: dict[str, Any] | None, seed: int,
          budget: float, watchdog: float,
          on_abandon: Callable[[Trial], None] | None = None) -> Trial:
    kw: dict[str, Any] = {} if extra is None else {**FREE_SCENARIO, **extra}
    kw["watchdog"] = watchdog
    if engine == "threads+noise":
        kw.update(noise=0.2, switch_interval=1e-5)
    abandon = None if on_abandon is None else (
        lambda r: on_abandon(Trial(True, r.seconds, r.executions, kind="error: HangError",
                                   message=r.error or "")))
    r = run_cell(Scenario(algorithm=ref, engine="threads" if engine != "processes"
                          else "processes", seconds=budget, seed=seed, **kw),
                 on_abandon=abandon)
    if r.interrupted:  # run_cell cleaned up and kept Ctrl-C to itself: pass it on
        raise KeyboardInterrupt
    if r.error:  # a deadlock or a dying writer in the code under test: a detection, but say so
        return Trial(True, r.seconds, r.executions,
                     kind=f"error: {r.error.split(':', 1)[0]}", message=r.error)
    return Trial(bool(r.violations), r.seconds, r.executions,
                 kind=r.violations[0].kind if r.violations else "")


def _kernel(ref: str, engine: str, extra: dict[str, Any] | None, seed: int,
            budget: float, watchdog: float) -> Trial:
    r = run_cell(Scenario(algorithm=ref, engine="kvm", seconds=budget, seed=seed,
                          watchdog=watchdog))
    if r.interrupted:
        raise KeyboardInterrupt
    if r.error:
        # A mutant is found by an error only where its bug shows as one (a
        # ring never reset: a deadlock); any error of a correct protocol is
        # reported, as a false alarm must be.
        from ..kvm.registry import PROTOCOLS, resolve_protocol

        cls = resolve_protocol(ref)
        kind = r.error.split(":", 1)[0]
        found = kind in cls.found_by_error or cls in PROTOCOLS.values()
        return Trial(found, r.seconds, r.executions, kind=f"error: {kind}", message=r.error)
    return Trial(bool(r.violations), r.seconds, r.executions,
                 kind=r.violations[0].kind if r.violations else "")


def _controlled(ref: str, engine: str, extra: dict[str, Any] | None, seed: int,
                budget: float, watchdog: float) -> Trial:
    if engine == "hypothesis":
        pins = {} if extra is None else {"slots": 1, "pages": 2, "writers": 2, "writes": 2}
        r = hypothesis_search(ref, seed=seed, seconds=budget, pins=pins, watchdog=watchdog)
    elif extra is None:  # the defaults: every execution's program drawn from the space
        r = explore(ref, Scenario(algorithm=ref, seed=seed), scheduler=engine,
                    executions=None, seconds=budget, seed=seed, space=ProgramSpace(),
                    watchdog=watchdog)
    else:
        scenario = replace(Scenario(algorithm=ref, seed=seed),
                           **{**CONTROLLED_SCENARIO, **extra})
        r = explore(ref, scenario, scheduler=engine, executions=None, seconds=budget,
                    preemptions=2, seed=seed, vary_program=engine != "dfs", watchdog=watchdog)
    f = r.failure
    # Time and executions to the first detection (Hypothesis then spends
    # the rest of its budget shrinking it).
    seconds = r.extra.get("first_failure_seconds", r.seconds)
    executions = r.extra.get("first_failure_execution", r.executions)
    kind = f.outcome.kind if f else ""
    return Trial(f is not None, seconds, executions,
                 f.outcome.preemptions if f else None, kind, f.token if f else "",
                 f.outcome.message if f and kind not in ("violation", "") else "")


#: One cell to run: (subject, reference, role, breaks, scenario hints or
#: None for the defaults, engine).
ZooCell = tuple[str, str, str, str, dict[str, Any] | None, str]


def zoo_plan(mutants: Sequence[Mutant | str] | None = None, engines: Sequence[str] = ENGINES, *,
             correct: bool = True, hints: bool = False) -> list[ZooCell]:
    """The table's cells in order: every registered mutant by default, the
    benign look-alikes, and the correct algorithms as a baseline, each under
    every engine. Without ``hints`` every engine runs with its defaults (what
    a user who does not know the bug gets); with, each mutant gets the
    scenario its bug needs (how the regression tokens are made)."""
    subjects: list[tuple[str, str, str, str, dict[str, Any] | None]] = []
    model_engines = [e for e in engines if e != KERNEL_ENGINE]
    if model_engines and (mutants is None or any(isinstance(m, Mutant) for m in mutants)):
        for m in (mutants if mutants is not None else list(MUTANTS.values())):
            if isinstance(m, Mutant):
                subjects.append((m.name, m.ref, "benign" if m.benign else "mutant", m.breaks,
                                 m.scenario if hints else None))
        if correct:
            for name in ALGORITHMS:  # the built-ins and the paths' algorithms
                subjects.append((name, name, "correct", name,
                                 {"on_behalf": 0.5} if hints else None))
    plan = [(*subject, engine) for subject in subjects for engine in model_engines]
    if KERNEL_ENGINE in engines:
        from ..kvm.registry import kernel_subjects

        names = None if mutants is None else [m for m in mutants if isinstance(m, str)]
        plan += [(*subject, KERNEL_ENGINE)
                 for subject in kernel_subjects(names, correct=correct)]
    return plan


def run_zoo_cell(plan: ZooCell, *, seeds: int = 3, budget: float = 2.0,
                 watchdog: float = 10.0,
                 on_abandon: Callable[[Cell], None] | None = None) -> Cell:
    """One cell of the table: ``seeds`` trials, seeds 0 to ``seeds - 1``;
    a hang ends the cell (each costs ``watchdog`` seconds).

    A free-running harvester hung for good in the code under test (one the
    watchdog cannot unwind, see ``engines.free.run_cell``) ends the process:
    ``on_abandon(cell)`` gets the cell with that hang as its last trial
    first, so that the caller can still print its table."""
    name, ref, role, breaks, extra, engine = plan
    cell = Cell(name, role, breaks, engine)
    for seed in range(seeds):
        if engine in FREE_ENGINES:
            abandon = None if on_abandon is None else (
                lambda trial: on_abandon(replace(cell, trials=[*cell.trials, trial])))
            trial = _free(ref, engine, extra, seed, budget, watchdog, abandon)
        elif engine == KERNEL_ENGINE:
            trial = _kernel(ref, engine, extra, seed, budget, watchdog)
        else:
            trial = _controlled(ref, engine, extra, seed, budget, watchdog)
        cell.trials.append(trial)
        if trial.hang:
            break
    return cell


def hang_of(cell: Cell) -> str:
    """"subject/engine (seed s): report" for a cell that hung, else ""."""
    for seed, trial in enumerate(cell.trials):
        if trial.hang:
            return f"{cell.subject}/{cell.engine} (seed {seed}): {trial.message}"
    return ""


def run_zoo(mutants: Sequence[Mutant | str] | None = None, engines: Sequence[str] = ENGINES, *,
            seeds: int = 3, budget: float = 2.0, correct: bool = True, hints: bool = False,
            progress: Callable[[Cell], None] | None = None,
            watchdog: float = 10.0,
            on_abandon: Callable[[ZooReport], None] | None = None) -> ZooReport:
    """Run the detection-power table (see :func:`zoo_plan`).

    An error of the code under test in a cell (a method that raised, a
    deadlock, a dying writer) is a detection. A hang is too, but it ends the
    run (each costs ``watchdog`` seconds): the remaining cells are reported
    as not run. A free-running harvester hung for good ends the process
    (see :func:`run_zoo_cell`); ``on_abandon(report)`` gets the table as it
    stands first, the remaining cells not run."""
    report = ZooReport(engines=list(engines))
    plans = zoo_plan(mutants, engines, correct=correct, hints=hints)
    for index, plan in enumerate(plans):
        if report.ended_by:
            name, _, role, breaks, _, engine = plan
            report.cells.append(Cell(name, role, breaks, engine, not_run=True))
            continue

        def abandon(stuck: Cell, index: int = index) -> None:
            assert on_abandon is not None
            on_abandon(abandoned([*report.cells, stuck, *plans[index + 1:]], report.engines))

        cell = run_zoo_cell(plan, seeds=seeds, budget=budget, watchdog=watchdog,
                            on_abandon=None if on_abandon is None else abandon)
        report.ended_by = hang_of(cell)
        report.cells.append(cell)
        if progress is not None:
            progress(cell)
    return report


def abandoned(rows: Sequence[Cell | ZooCell], engines: Sequence[str]) -> ZooReport:
    """The table of a run a hang ended for good, in table order: the cells
    run (one of them the hang), and the plans of those it kept from
    starting, not run."""
    cells = [row if isinstance(row, Cell) else
             Cell(row[0], row[2], row[3], row[5], not_run=True) for row in rows]
    report = ZooReport(engines=list(engines), cells=cells)
    report.ended_by = next((h for h in map(hang_of, cells) if h), "")
    return report


def format_table(report: ZooReport) -> str:
    rows = [("subject", "role", "breaks", "engine", "detected", "median s", "median execs",
             "min preempt")]
    for c in report.cells:
        if c.not_run:
            rows.append((c.subject, c.role, c.breaks, c.engine, "not run", "-", "-", "-"))
            continue
        ms, me, mp = c.median_seconds(), c.median_executions(), c.min_preemptions()
        rows.append((c.subject, c.role, c.breaks, c.engine,
                     f"{len(c.detections)}/{len(c.trials)}",
                     "-" if ms is None else f"{ms:.3f}", "-" if me is None else f"{me:.0f}",
                     "-" if mp is None else str(mp)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(v.ljust(w) if i < 4 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for c in report.cells:
        for seed, t in enumerate(c.trials):
            if t.message and not t.hang:
                lines.append(f"error in {c.subject}/{c.engine} (seed {seed}), a detection: "
                             f"{t.message}")
                break
    if report.ended_by:
        lines.append(f"the run ended at the first hang, in {report.ended_by}")
        skipped = sum(c.not_run for c in report.cells)
        if skipped:
            lines.append(f"{skipped} cells not run")
    for engine in report.engines:
        k, n = report.score(engine)
        lines.append(f"mutation score {engine:<14} {k}/{n}" + (f" ({100 * k / n:.0f}%)" if n
                                                              else ""))
    controlled = [e for e in report.engines if e in CONTROLLED_ENGINES]
    if controlled:
        mutants = report.subjects("mutant")
        hit = [m for m in mutants if any(c.detected for c in report.cells
                                         if c.subject == m and c.engine in controlled)]
        lines.append(f"mutation score controlled (any scheduler) {len(hit)}/{len(mutants)}")
    benign = report.subjects("benign")
    correct = report.subjects("correct")
    alarms = report.false_alarms()
    lines.append(f"benign look-alikes {len(benign)} and correct algorithms {len(correct)}: "
                 f"{len(alarms)} reports" + (": " + ", ".join(f"{c.subject}/{c.engine}"
                                                              for c in alarms) if alarms
                                              else " (as it must be)"))
    undetected = report.undetected()
    verdict = "PASS" if report.ok else "FAIL" + (" (a hang ended the run)" if report.ended_by
                                                 else "")
    lines.append(f"verdict: {verdict}" + (f" (undetected by every engine: "
                                          f"{', '.join(undetected)})" if undetected else ""))
    return "\n".join(lines)
