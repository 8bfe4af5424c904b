"""``auto``: a portfolio of search strategies, the default of ``fuzz``.

No single strategy wins everywhere (shuttle ships a portfolio scheduler for
the same reason): a random walk finds shallow bugs fast, PCT finds bugs of
a known depth with a probability it can state, preemption-bounded DFS
proves small spaces clean and finds the counterexample with the fewest
preemptions, and a coverage-guided fuzzer keeps schedules that showed it
something new. The portfolio gives each member slices of executions in turn:

* ``random``: a seeded random walk, a new program every execution;
* ``pct``: PCT with its bug depth cycling 1 to 5, a new program every
  execution (so no bound is claimed: the bound holds per program);
* ``dfs``: iterative preemption bounding (Musuvathi and Qadeer, PLDI 2007)
  on one program at a time: every schedule with 0 preemptions, then 1, 2,
  3, before it moves to the next program, so its first counterexample has
  the fewest preemptions on that program; a program's budget of
  executions follows the Luby sequence (:func:`luby`), so that most
  programs get a short look and a few a long one;
* ``coverage``: a greybox schedule fuzzer in the spirit of Wolff et al.
  ("Greybox Fuzzing for Concurrency Testing", ASPLOS 2024): coverage is the
  set of pairs of conflicting operations on the same word (operation and
  word kind, in the order they happened, by different threads, at least one
  a write); an execution that adds a pair joins the corpus with its
  schedule, and new executions replay a corpus schedule up to a random cut,
  then diverge there and go on at random.

First, a **small-scope phase** (``small``: every other slice until it
has had :data:`SMALL_PHASE` executions, a fraction of a second) enumerates the
bounded-exhaustive small scope (:meth:`ProgramSpace.tiny`: every program of
at most 2 writers x 2 writes on the 2 pages of one word, under each model
option) under race-directed preemption bounding (``search/races.py``:
the schedules that reverse the races of earlier executions first, at most
:data:`SMALL_MAX_BOUND` preemptions), :data:`SMALL_BUDGET` executions per
case at most, each case's race-reversing schedules only: most zoo bugs
show there within tens of executions. After the phase, the members that
draw fresh programs (random, pct, coverage) take each program's swarm features (scope small, wide or
deep; the fast page fault, PML and INITIALLY_SET when not pinned) from a
:class:`FeatureBandit`, rewarded by new conflict pairs, instead of fixed
shares.

The random walk gets three slices in each turn of six (random, pct,
random, dfs, random, coverage): measured over the bug zoo with every
program drawn from the program space, it finds the deep races on one SPTE
(three or four preemptions in a program of a hundred steps) several times
sooner per execution than the other members, which keep their share for
what they do best.

The report says which member found the failure and what each one tried.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._core.runtime import Keep, Scheduler
from .._core.switch import Op
from ..harness.execution import ExecutionResult
from ..harness.program import Program, tiny_cases
from ..harness.scenario import Scenario
from ..schedulers import DfsScheduler, PctScheduler, RandomScheduler
from .races import RaceBounded

__all__ = ["CoverageFuzzer", "FeatureBandit", "Portfolio"]

Case = tuple[Scenario, Program]

#: Executions a member runs before the next one's turn.
SLICE = 16
MEMBERS = ("random", "pct", "dfs", "coverage")
#: The order of the slices: a member named n times gets n slices per turn.
ROTATION = ("random", "pct", "random", "dfs", "random", "coverage")
#: DFS moves to the next program after this bound, or after its budget of
#: executions on the program: ``DFS_BASE_BUDGET`` times the program's term
#: of the Luby sequence (see :func:`luby`).
DFS_MAX_BOUND = 3
DFS_BASE_BUDGET = 32
#: The small-scope phase: its executions, the most per case, its DFS bound.
SMALL_PHASE = 128
SMALL_BUDGET = 48
#: The first case's budget, but for the fast page fault and PML: the first
#: case of the seed's world (a guest write beside on-behalf writes to both
#: pages, under the seed's model) and of the ring (guest writes, one page
#: per vCPU) show their bugs within 24 executions or not at all in the zoo,
#: and the cases after them find the rest.
SMALL_FIRST_BUDGET = 24
SMALL_MAX_BOUND = 2
#: The bandit's reward for new conflict pairs, per unit of cost: full up to
#: this many switch points, in proportion beyond.
REWARD_STEPS = 200
_READS = frozenset({Op.LOAD, Op.ENTER, Op.EXIT, Op.YIELD, Op.WAIT})


def luby(i: int) -> int:
    """The ``i``-th term (1-based) of the Luby sequence: 1, 1, 2, 1, 1, 2,
    4, 1, 1, 2, 1, 1, 2, 4, 8, ... (Luby, Sinclair and Zuckerman, 1993).

    DFS's budget per program. Whether a program can show a bug, and how many
    schedules that takes, are both unknown: a fixed budget is either too
    small for deep bugs or spends everything on a few programs. Budgets in
    Luby's proportions are within a log factor of the best fixed budget for
    any distribution: most programs get a short look (their schedules with
    no preemption, and the first of those with one: DFS backtracks from the
    end of an execution), a few get a long one."""
    if i < 1:
        raise ValueError(f"expected a term index >= 1, got {i}")
    while True:
        k = i.bit_length()
        if i == (1 << k) - 1:
            return 1 << (k - 1)
        i -= (1 << (k - 1)) - 1


class FeatureBandit:
    """Which swarm features the next fresh program gets, in proportion to
    what they have yielded.

    Each arm is one dimension of the program space (the scope, and each
    model option not pinned) with its values and their prior shares (the
    program space's own). A value's weight is its prior share times its
    relative yield, kept within [1/2, 2]: the discounted rate at which
    executions drawn with it added new conflict pairs, per unit of cost
    (:data:`REWARD_STEPS`), shrunk toward the overall rate and divided by
    it. So a value that stops paying falls back toward its prior share,
    and none is ever starved. Deterministic: its own seeded generator, and rewards
    that come from deterministic executions."""

    #: Discount per update (about the last 50 draws count); pseudo-draws
    #: at the overall rate.
    DECAY = 0.98
    PSEUDO = 8.0

    def __init__(self, seed: int, arms: Mapping[str, tuple[Sequence[Any], Sequence[float]]]
                 ) -> None:
        self._rng = random.Random(f"bandit:{seed}")
        self.arms = {k: (tuple(v), tuple(p)) for k, (v, p) in arms.items()}
        self._stats = {k: [[0.0, 0.0] for _ in v] for k, (v, _) in self.arms.items()}
        self.draws = {k: [0] * len(v) for k, (v, _) in self.arms.items()}

    def weights(self, name: str) -> list[float]:
        values, priors = self.arms[name]
        stats = self._stats[name]
        pulls = sum(n for _, n in stats)
        overall = sum(r for r, _ in stats) / pulls if pulls else 0.0
        if overall <= 0.0:
            return list(priors)
        # A value's share stays within [1/2, 2] times its prior share.
        w = [p * min(2.0, max(0.5, (r + self.PSEUDO * overall) / (n + self.PSEUDO) / overall))
             for p, (r, n) in zip(priors, stats, strict=True)]
        total = sum(w)
        return [x / total for x in w]

    def choose(self) -> dict[str, Any]:
        choice: dict[str, Any] = {}
        for name, (values, _) in self.arms.items():
            i = self._rng.choices(range(len(values)), self.weights(name))[0]
            self.draws[name][i] += 1
            choice[name] = values[i]
        return choice

    def reward(self, choice: Mapping[str, Any], value: float) -> None:
        for name, picked in choice.items():
            if name not in self.arms:
                continue
            stats = self._stats[name]
            for entry in stats:
                entry[0] *= self.DECAY
                entry[1] *= self.DECAY
            i = self.arms[name][0].index(picked)
            stats[i][0] += value
            stats[i][1] += 1.0

    def shares(self) -> dict[str, dict[str, float]]:
        """Each arm's current weights, by value."""
        return {name: {str(v): round(w, 3) for v, w in zip(values, self.weights(name),
                                                            strict=True)}
                for name, (values, _) in self.arms.items()}


class _Done(Exception):
    """DFS alone has enumerated its one program."""


class CoverageFuzzer:
    """A corpus of (case, schedule) pairs that added conflict-pair coverage,
    and the mutations that replay one up to a cut and then diverge."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"coverage:{seed}")
        self.corpus: list[tuple[Case, list[int]]] = []
        self.covered: set[tuple[tuple[str, str], tuple[str, str]]] = set()
        self._new: set[tuple[tuple[str, str], tuple[str, str]]] = set()
        self._last: dict[tuple[str, int], tuple[int, tuple[str, str], bool]] = {}
        self._prefix: list[int] = []
        self._cut = -1
        self._pos = 0

    def start(self, fresh: Case) -> Case:
        """Begin an execution: a mutated corpus entry, or ``fresh`` with a
        random schedule when the corpus is empty (and now and then)."""
        self._pos = 0
        if self.corpus and self._rng.random() < 0.85:
            case, schedule = self.corpus[self._rng.randrange(len(self.corpus))]
            self._prefix = schedule
            self._cut = self._rng.randrange(len(schedule)) if schedule else -1
            return case
        self._prefix, self._cut = [], -1
        return fresh

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        pos = self._pos
        self._pos += 1
        rng = self._rng
        if pos < self._cut and self._prefix[pos] in runnable:
            return self._prefix[pos]
        if pos == self._cut and len(runnable) > 1:
            others = [t for t in runnable if t != self._prefix[pos]]
            return others[rng.randrange(len(others))]
        self._cut = -1  # diverged (or past the cut): a random walk from here
        if current is not None and rng.random() < 0.5:
            return current
        return runnable[rng.randrange(len(runnable))]

    def observe(self, tid: int, op: Op, target: str, index: int) -> None:
        word = (target, index)
        site = (str(op), target.split(":", 1)[0])
        write = op not in _READS
        last = self._last.get(word)
        if last is not None and last[0] != tid and (last[2] or write):
            pair = (last[1], site)
            if pair not in self.covered:
                self._new.add(pair)
        self._last[word] = (tid, site, write)

    @property
    def new_pairs(self) -> int:
        """Conflict pairs the execution under way has added so far."""
        return len(self._new)

    def executed(self, case: Case, result: ExecutionResult) -> None:
        if self._new:
            self.covered |= self._new
            self.corpus.append((case, list(result.outcome.schedule)))
        self._new = set()
        self._last = {}


class Portfolio:
    """A scheduler that hands slices of executions to its members in turn,
    and the source of each execution's case (the DFS member keeps one
    program while it enumerates; the others draw a new one)."""

    def __init__(self, seed: int, cases: Callable[[int], Case], *, fixed: bool = False,
                 members: Sequence[str] = MEMBERS, dfs_max_bound: int = DFS_MAX_BOUND,
                 tiny: Callable[[int], Case] | None = None,
                 draw: Callable[[int, Mapping[str, Any]], Case] | None = None,
                 arms: Mapping[str, tuple[Sequence[Any], Sequence[float]]] | None = None,
                 small_phase: int = SMALL_PHASE, small_first: bool = True,
                 small_first_budget: int = SMALL_BUDGET) -> None:
        self.seed = seed
        #: The small phase takes the first slice (else the second: the
        #: rotation's random walk finds the shallow bugs of the fast page
        #: fault and PML within a few executions).
        self.small_first = small_first
        #: The executions of the small phase's first case at most.
        self.small_first_budget = small_first_budget
        self.cases = cases
        #: The small scope's cases (0-based), run first; and the draw of a
        #: fresh case with the bandit's features.
        self.tiny = tiny
        self.draw = draw
        self.bandit = FeatureBandit(seed, arms) if draw is not None and arms else None
        self.small_phase = small_phase if tiny is not None else 0
        self.small_cases = 0
        self.small_runs: list[int] = []  # per case: the executions it got
        self.small_exhausted: list[int] = []  # per case: the largest bound exhausted
        self._small: RaceBounded | None = None
        self._small_case: Case | None = None
        self._choice: dict[str, Any] | None = None
        self.small_runs_total = 0
        self._rotation = 0  # executions of the rotation so far
        self.fixed = fixed
        self.members = tuple(members)
        self.dfs_max_bound = dfs_max_bound
        self.random = RandomScheduler(seed)
        self.pct = PctScheduler(seed, depth=None)  # depths cycling 1-5
        self.coverage = CoverageFuzzer(seed)
        self.tried = dict.fromkeys(self.members, 0)
        if self.small_phase:
            self.tried["small"] = 0
        self.current = self.members[0]
        self.dfs_programs = 0
        self.dfs_bound = 0
        self.dfs_exhausted: list[int] = []  # per program: the largest bound exhausted
        self.dfs_runs: list[int] = []  # per program: the executions it got
        self._dfs: DfsScheduler | None = None
        self._dfs_case: Case | None = None
        self._dfs_done = False
        self._n = 0
        self._sched: Any = self.random
        self._case: Case | None = None

    # -- the scheduler protocol ---------------------------------------------------
    def new_execution(self) -> bool:
        self._n += 1
        n = self._n
        self._choice = None
        if self.small_runs_total < self.small_phase \
                and ((n - 1) // SLICE) % 2 == (0 if self.small_first else 1):
            # The small scope's phase: every other slice, until it had its
            # executions (the rotation's quick finds are not held back).
            self.current = "small"
            self.tried["small"] += 1
            self.small_runs_total += 1
            self._sched, self._case = self._next_small()
            return True
        turn = self._rotation // SLICE
        self._rotation += 1
        members = [m for m in ROTATION
                   if m in self.members and not (m == "dfs" and self._dfs_done)]
        if not members:
            return False  # dfs alone, its one program enumerated
        name = members[turn % len(members)]
        self.current = name
        self.tried[name] += 1
        if name == "random":
            self.random.new_execution()
            self._sched, self._case = self.random, self._fresh(n)
        elif name == "pct":
            self.pct.new_execution()
            self._sched, self._case = self.pct, self._fresh(n)
        elif name == "dfs":
            try:
                self._sched, self._case = self._next_dfs()
            except _Done:
                self.tried[name] -= 1
                return False
        else:
            self._sched = self.coverage
            fresh = self._fresh(n)
            self._case = self.coverage.start(fresh)
            if self._case is not fresh:
                self._choice = None  # a corpus entry: not the bandit's draw
        return True

    def _fresh(self, n: int) -> Case:
        """Execution n's case: with the bandit, drawn with its features."""
        if self.bandit is None or self.draw is None:
            return self.cases(n)
        self._choice = self.bandit.choose()
        return self.draw(n, self._choice)

    @property
    def next_thread(self) -> Callable[[Sequence[int], int | None], int]:
        """The member's own (the runtime takes it once per execution)."""
        return self._sched.next_thread  # type: ignore[no-any-return]

    @property
    def keep(self) -> Keep | None:
        return getattr(self._sched, "keep", None)

    def case(self, n: int) -> Case:
        assert self._case is not None
        return self._case

    @property
    def observe(self) -> Callable[[int, Op, str, int], None] | None:
        """The execution's observer, for the runtime (asked once per
        execution): the coverage fuzzer's; in the small phase, also the race
        search's (it orders its schedules by the races it sees); none for
        ``dfs`` alone (nothing there uses conflict pairs, so its steps do
        not pay for them)."""
        coverage = None if "coverage" not in self.members else self.coverage.observe
        if self.current != "small" or self._small is None:
            return coverage
        races = self._small.observe
        if coverage is None:
            return races

        def both(tid: int, op: Op, target: str, index: int) -> None:
            races(tid, op, target, index)
            coverage(tid, op, target, index)
        return both

    def executed(self, result: ExecutionResult) -> None:
        assert self._case is not None
        if self.bandit is not None and self._choice is not None:
            # Per unit of cost: a wide program shows new pairs more often,
            # and costs more switch points for it.
            steps = max(1, result.outcome.steps)
            self.bandit.reward(self._choice, min(1.0, REWARD_STEPS / steps)
                               if self.coverage.new_pairs else 0.0)
        self.coverage.executed(self._case, result)
        if self.current == "dfs":
            self.dfs_runs[-1] += 1
        elif self.current == "small":
            self.small_runs[-1] += 1

    # -- small: the small scope's cases, iterative bounds 0-2 each ----------------
    def _next_small(self) -> tuple[Scheduler, Case]:
        assert self.tiny is not None
        while True:
            if self._small is None or self._small_case is None:
                self._small_case = self.tiny(self.small_cases)
                self.small_cases += 1
                self._small = RaceBounded(SMALL_MAX_BOUND, races_only=True)
                self.small_runs.append(0)
                self.small_exhausted.append(-1)
            small = self._small
            budget = self.small_first_budget if self.small_cases == 1 else SMALL_BUDGET
            if self.small_runs[-1] < budget and small.new_execution():
                return small, self._small_case
            self.small_exhausted[-1] = self._small_bound_exhausted()
            self._small = None

    def _small_bound_exhausted(self) -> int:
        """The largest bound whose every schedule the current case ran (-1: none)."""
        small = self._small
        if small is None:
            return -1
        if small.exhausted:
            return small.bound
        return max((b for b in range(small.bound + 1) if small.exhausted_below(b + 1)),
                   default=-1)

    def small_fewest(self, preemptions: int) -> bool:
        """Whether the small phase's current case had run every schedule
        with fewer than ``preemptions`` (its failure then has the fewest)."""
        return self._small is not None and self._small.exhausted_below(preemptions)

    # -- dfs: iterative bounds on one program at a time ---------------------------
    def _next_dfs(self) -> tuple[Scheduler, Case]:
        while True:
            if self._dfs is None or self._dfs_case is None:
                self.dfs_programs += 1
                # Its own sequence of programs, apart from the others' (or
                # the one pinned program).
                self._dfs_case = self.cases(-self.dfs_programs)
                self.dfs_bound = 0
                self._dfs = DfsScheduler(0)
                self.dfs_exhausted.append(-1)
                self.dfs_runs.append(0)
            budget = self._dfs_budget()
            if self.dfs_runs[-1] < budget and self._dfs.new_execution():
                return self._dfs, self._dfs_case
            if self._dfs.exhausted:
                self.dfs_exhausted[-1] = self.dfs_bound
            if self._dfs.exhausted and self.dfs_bound < self.dfs_max_bound \
                    and self.dfs_runs[-1] < budget:
                self.dfs_bound += 1
                self._dfs = DfsScheduler(self.dfs_bound)
                continue
            if self.fixed:
                # One pinned program, enumerated as far as the bounds go.
                self._dfs_done = True
                if self.members == ("dfs",):
                    raise _Done
                self._dfs = DfsScheduler(self.dfs_bound)
                self._dfs.new_execution()
                return self._dfs, self._dfs_case
            self._dfs = None

    def _dfs_budget(self) -> float:
        """Executions for the current program: unbounded for the one pinned
        program, else in Luby's proportions."""
        if self.fixed:
            return float("inf")
        return DFS_BASE_BUDGET * luby(self.dfs_programs)

    # -- what it did --------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.small_phase:
            extra["small_cases"] = self.small_cases
            extra["small_bounds_exhausted"] = list(self.small_exhausted)
        if self.bandit is not None:
            extra["bandit_shares"] = self.bandit.shares()
            extra["bandit_draws"] = {k: dict(zip(map(str, self.bandit.arms[k][0]), v,
                                                 strict=True))
                                     for k, v in self.bandit.draws.items()}
        return extra | {"executions": dict(self.tried), "dfs_programs": self.dfs_programs,
                "dfs_bounds_exhausted": list(self.dfs_exhausted),
                "dfs_runs": list(self.dfs_runs),
                "coverage_pairs": len(self.coverage.covered),
                "corpus": len(self.coverage.corpus), "last_member": self.current,
                "members": list(self.members), "fixed": self.fixed}

    def report(self) -> str:
        return describe(self.summary(), members=self.members, fixed=self.fixed)


def describe(summary: dict[str, Any], *, members: tuple[str, ...], fixed: bool) -> str:
    """What a portfolio tried, from its :meth:`Portfolio.summary` (or the
    sum of several jobs' summaries: ``search/scale.py``)."""
    t = dict.fromkeys(MEMBERS, 0) | summary["executions"]
    proved = [b for b in summary["dfs_bounds_exhausted"] if b >= 0]
    programs = summary["dfs_programs"]
    by_bound = ", ".join(f"up to {b} preemption{'' if b == 1 else 's'} on {proved.count(b)}"
                         for b in sorted(set(proved)))
    dfs = (f"dfs {t['dfs']} on {programs} program(s), every schedule exhausted "
           f"{by_bound} of them" if proved
           else f"dfs {t['dfs']} on {programs} program(s)")
    bound = ("" if fixed else "; the programs varied, so no probabilistic bound is "
             "claimed")
    small = ""
    if "small_cases" in summary:
        ex = [b for b in summary["small_bounds_exhausted"] if b >= 0]
        bounds = ", ".join(f"up to {b} preemption{'' if b == 1 else 's'} on {ex.count(b)}"
                           for b in sorted(set(ex)))
        small = (f"small scope {t.get('small', 0)} on {summary['small_cases']} case(s) of "
                 f"{tiny_cases()}" + (f", every schedule exhausted {bounds}" if ex else "")
                 + "; ")
    if members == ("dfs",):
        return f"{small}iterative {dfs}{bound}"
    return (f"auto portfolio tried: {small}random {t['random']}, pct {t['pct']} "
            f"(depths 1-5), "
            f"{dfs}, coverage {t['coverage']} ({summary['coverage_pairs']} conflict "
            f"pairs, corpus {summary['corpus']}){bound}")
