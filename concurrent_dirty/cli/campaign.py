"""A fuzz campaign as one value: :func:`fuzz_campaign_of` reads the command
line once, before any process starts, checks every option and every
conflict between options (a usage error: one line, exit 2, whatever
``--jobs`` is), and returns a frozen :class:`FuzzCampaign` that the
in-process run and every job process read alike (``cli/scale.py``).

Conflicting options, and what each does:

- ``--depth`` without ``--scheduler pct``: an error (only pct has a bug depth;
  auto cycles its own).
- ``--preemptions`` without ``--scheduler dfs``: an error (only dfs takes a
  bound; auto runs iterative bounds 0-3).
- ``--X`` and ``--no-X`` together (``--initially-set``, ``--pml``,
  ``--fast-page-fault``): an error (argparse would keep the last one).
- ``--no-pml`` (or ``--no-fast-page-fault``) with an algorithm whose model
  turns it on (``xchg-pml``, ``xchg-fast-pf``): an error.
- ``--pml`` with ``ring``: an error (the model drains PML into the bitmap
  only), found here rather than in the first execution of a job.
- ``--ring-entries``/``--ring-soft-limit``/``--ring-batch`` with no ring
  algorithm selected: an error (they would change nothing).
- ``--scheduler hypothesis`` with ``--jobs`` above 1: an error (Hypothesis
  runs in one process; without ``--jobs`` it gets one job).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..dirtylog import BUILTIN_ALGORITHMS, resolve_algorithm
from ..errors import UsageError
from ..harness.program import ProgramSpace, is_ring_algorithm
from ..harness.scenario import Scenario
from ..search.pool import Shard
from .paths import path_args, path_pins, ring_pins

__all__ = ["FuzzCampaign", "StressCampaign", "ZooCampaign", "fuzz_campaign_of",
           "hypothesis_pins", "search_options"]


def _pins(ns: argparse.Namespace) -> dict[str, Any]:
    return dict(writers=ns.writers, slots=ns.slots, pages=ns.pages, writes=ns.writes,
                rounds=ns.rounds, initially_set=ns.initially_set, **path_pins(ns))


def search_options(ns: argparse.Namespace) -> dict[str, Any]:
    """``explore``'s options for this command line (also what each job gets)."""
    space = ProgramSpace(**_pins(ns), **ring_pins(ns))
    # A ring's geometry left out is drawn, even when every other dimension
    # is pinned (``ProgramSpace.pinned`` does not count it).
    specs = ns.algorithm or BUILTIN_ALGORITHMS
    ring_drawn = None in ring_pins(ns).values() and any(
        is_ring_algorithm(s) for s in ([specs] if isinstance(specs, str) else specs))
    return dict(scheduler=ns.scheduler, seconds=ns.seconds, depth=ns.depth,
                preemptions=ns.preemptions, max_steps=ns.max_steps, watchdog=ns.watchdog,
                rounds=ns.rounds if ns.rounds is not None else 2,
                space=None if space.pinned and not ring_drawn else space)


def hypothesis_pins(ns: argparse.Namespace) -> dict[str, Any]:
    """The ``interleavings`` arguments this command line pins."""
    pins = {**_pins(ns), **ring_pins(ns), "on_behalf": _flag(ns.on_behalf)}
    base = Scenario(tlb=ns.tlb, clear_words=ns.clear_words, stuck_rounds=ns.stuck_rounds,
                    watchdog=ns.watchdog)
    return {**{k: v for k, v in pins.items() if v is not None}, "base": base}


def _flag(share: float | None) -> bool | None:
    """Hypothesis draws on-behalf flags per write; a share of 0 or 1 pins them."""
    return None if share is None or 0 < share < 1 else bool(share)


@dataclass(frozen=True)
class FuzzCampaign:
    """Everything a fuzz run needs, checked: the same value for one job in
    this process and for N job processes."""

    algorithms: tuple[str, ...]
    scheduler: str
    executions: int
    seconds: float
    seed: int
    max_steps: int
    watchdog: float
    jobs: int
    shard: Shard
    #: The Scenario each algorithm starts from (its model applied and checked).
    scenarios: Mapping[str, Scenario]
    #: ``explore``'s keyword options (scheduler, budgets, program space).
    options: Mapping[str, Any]
    #: ``hypothesis_search``'s pins (``--scheduler hypothesis``).
    hypothesis: Mapping[str, Any]
    execution: int | None = None
    token_file: str | None = None
    header: str = ""
    notes: tuple[str, ...] = field(default=())


def fuzz_campaign_of(ns: argparse.Namespace, jobs: int) -> FuzzCampaign:
    """The campaign ``ns`` describes, with ``jobs`` job processes; a
    :class:`UsageError` for any bad option or conflict."""
    from ..harness.execution import apply_model
    from ..search.hypothesis import check_model_pins

    algorithms = tuple(ns.algorithm or BUILTIN_ALGORITHMS)
    classes = {spec: resolve_algorithm(spec) for spec in algorithms}
    if ns.depth is not None and ns.scheduler != "pct":
        raise UsageError(f"expected --depth with --scheduler pct only (the bug depth is "
                         f"pct's), got --scheduler {ns.scheduler} --depth {ns.depth}")
    if ns.preemptions is not None and ns.scheduler != "dfs":
        raise UsageError(f"expected --preemptions with --scheduler dfs only (the preemption "
                         f"bound is dfs's), got --scheduler {ns.scheduler} --preemptions "
                         f"{ns.preemptions}")
    if ns.scheduler == "hypothesis" and jobs > 1:
        raise UsageError(f"expected --jobs 1 with --scheduler hypothesis (Hypothesis runs in "
                         f"one process), got --jobs {jobs}")
    pins = _pins(ns)
    base = dict(on_behalf=ns.on_behalf, seed=ns.seed, tlb=ns.tlb, workload=ns.workload,
                **path_args(ns))
    scenarios: dict[str, Scenario] = {}
    # The conflicts interleavings() refuses too, in the command line's words.
    check_model_pins(classes, {**path_pins(ns), **ring_pins(ns)}, _spell)
    for spec, cls in classes.items():
        scenario = Scenario(algorithm=spec, **{**_fill(pins), **base})
        apply_model(cls, scenario)  # a conflict with the model: a usage error now
        scenarios[spec] = scenario
    options = search_options(ns)
    if ns.token_file and jobs == 1:
        options["token_file"] = ns.token_file
    pinned = ", ".join(f"{k}={v}" for k, v in pins.items() if v is not None)
    header = (f"seed {ns.seed}; program space: "
              f"{'pinned ' + pinned if pinned else 'every dimension drawn'}"
              f"{'' if ns.on_behalf is None else f', on-behalf share {ns.on_behalf:g}'}")
    if ns.execution:
        # One program, nothing drawn: the header says which (the shape the
        # stress execution ran, with its writes).
        sc = next(iter(scenarios.values()))
        rounds = ns.rounds if ns.rounds is not None else 2
        header = (f"seed {ns.seed}; one program, nothing drawn: the writes of execution "
                  f"{ns.execution} of the free-running engines, {sc.writers} writer(s) x "
                  f"{sc.writes} writes on {sc.slots} slot(s) of {sc.pages} page(s), "
                  f"{rounds} round(s)"
                  f"{'' if ns.on_behalf is None else f', on-behalf share {ns.on_behalf:g}'}")
    return FuzzCampaign(
        algorithms=algorithms, scheduler=ns.scheduler, executions=ns.executions,
        seconds=ns.seconds, seed=ns.seed, max_steps=ns.max_steps, watchdog=ns.watchdog,
        jobs=jobs, shard=ns.shard, scenarios=scenarios, options=options,
        hypothesis=hypothesis_pins(ns), execution=ns.execution, token_file=ns.token_file,
        header=header)


def _spell(name: str, value: Any) -> str:
    """An option as the command line writes it (``--no-pml``, ``--algorithm ring``)."""
    dashed = name.replace("_", "-")
    if name == "algorithm":
        return f"--algorithm {value}"
    return f"--no-{dashed}" if value is False else f"--{dashed}"


def _fill(pins: dict[str, Any]) -> dict[str, Any]:
    """Scenario values for the pinned dimensions; the unpinned ones get any
    valid value (the program space replaces them every execution)."""
    return {k: v for k, v in pins.items() if v is not None and k != "rounds"}


@dataclass(frozen=True)
class StressCampaign:
    """A stress run, checked (``cli/stress.py``'s ``stress_campaign_of``):
    this shard's cells, each an algorithm on an engine with its whole
    Scenario and the command that reruns it, and the jobs that run them.
    One job and N jobs run it alike (``cli/scale.py``'s ``stress_cells``)."""

    cells: tuple[Scenario, ...]
    reruns: tuple[str, ...]
    jobs: int
    shard: Shard
    json: str | None = None
    quiet: bool = False


@dataclass(frozen=True)
class ZooCampaign:
    """A mutants run, checked (``cli/zoo.py``'s ``zoo_campaign_of``): the
    whole table's cells in order (``search/zoo.py``'s ``zoo_plan``), the
    ones each job of this shard runs, and every option of a cell."""

    plan: tuple[tuple[Any, ...], ...]
    engines: tuple[str, ...]
    #: Cell indices per job (this shard's cells, dealt round-robin).
    split: tuple[tuple[int, ...], ...]
    jobs: int
    shard: Shard
    seeds: int
    budget: float
    watchdog: float
    hints: bool = False
    correct: bool = True
    db: Any = None
    json: str | None = None
    quiet: bool = False

    @property
    def total(self) -> int:
        """Cells of this shard."""
        return sum(len(s) for s in self.split)
