"""What an execution does, as plain data: each writer's writes.

One function, :func:`writer_stream`, defines a writer's writes for a
(scenario, execution, writer): the free-running writers iterate it (a short
execution takes its first ``scenario.writes``; a long one runs until told to
stop), and :func:`make_program` fixes the same writes in advance for the
controlled engine. So the same scenario and seed give the same program in
every engine, and a free-running failure can be explored under control.

Every write draws its page and then its on-behalf coin, always both, so the
stream does not depend on the on-behalf share being zero or not. A write is
made by the guest (kind 0), on its behalf on the vCPU (kind 1), or on its
behalf with no running vCPU (kind 2, a device write: one on-behalf write in
four, decided by the same coin).

The search covers the program space by itself (swarm testing, Groce et al.,
ISSTA 2012): unless a scenario pins it, each writer of each execution draws
its own on-behalf share (none, some or all: a vCPU that only writes through
the guest beside a device model that only writes on its behalf), and pages
are drawn with a bias toward the boundaries where bitmap bugs live (bit 0
and bit 63 of a word, the first and last page of a slot). Under the
controlled engine a :class:`ProgramSpace` also draws the shape of every
execution, from two scopes:

* small (three executions in four; the small-scope hypothesis): one slot of
  one page (two times in three) or two pages, two writers with 5, 6 or 8
  writes each, 3-5 harvest rounds. Races on one SPTE (a lockless fix
  inside a harvester's read-modify-write, a stale translation written
  after a later round's copy) need a page written again and again across
  several rounds, which wide programs rarely do; races on one bitmap word
  (a set_bit erased by a read-modify-write of its word) need two pages of
  that word, each written in many rounds;
* wide: 1-3 slots of 1 to 200 pages (1, 63, 64, 65, 100, 128...), 1-3
  writers, 1-4 writes each, 0-3 harvest rounds: the bitmap's word and slot
  boundaries.

Both draw ``INITIALLY_SET`` (on one time in five) and the model options of
:data:`MODEL_OPTIONS` that the algorithm supports
(``DirtyLogAlgorithm.varies``) and that neither the user nor the
algorithm's ``model`` pins: the fast page fault and PML, each on one time
in four, and with PML a buffer of 512 entries or of 1, 2 or 4. A diverse
stream of small programs meets far more bugs than one program explored for
long.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from ..errors import UsageError
from ..model.memslot import MemslotFlags, MemslotTable
from .scenario import Scenario

__all__ = ["DEEP_PAGES", "DEEP_ROUNDS", "DEEP_SHAPES", "DEEP_WRITES", "DEVICE", "DEVICE_SHARE",
           "GUEST", "MODEL_OPTIONS", "ON_BEHALF", "PML_ENTRIES_DRAWN",
           "Program", "ProgramSpace", "RING_SIZES", "SCOPES", "SCOPE_SHARES", "SLOT_SIZES",
           "SMALL_PAGES", "SMALL_ROUNDS", "SMALL_WRITES", "TINY_OPTIONS", "deep_program",
           "tiny_case", "tiny_cases",
           "Write", "boundary_gfns",
           "build_memslots", "is_ring_algorithm", "make_program", "on_behalf_share",
           "workload_picker", "writer_stream"]

#: Slot sizes the program space draws from: one page, a word's edges, a
#: partial last word, two words and past.
SLOT_SIZES = (1, 2, 63, 64, 65, 100, 128, 129, 200)

#: The model options the program space draws per execution (unless pinned,
#: or not in the algorithm's ``varies``): the fast page fault, hardware Dirty
#: bits with PML, and (with PML) the PML buffer's entries.
MODEL_OPTIONS = ("fast_page_fault", "pml", "pml_entries")
#: PML buffer sizes drawn: the hardware's 512 half of the time, else a few
#: entries, so that small executions reach the PML-full exit.
PML_ENTRIES_DRAWN = (512, 512, 512, 1, 2, 4)
#: The small scope's writes per writer and harvest rounds.
SMALL_WRITES = (5, 6, 8)
SMALL_ROUNDS = (3, 4, 5)
#: The small scope's pages: one (two times in three) or two of one word.
SMALL_PAGES = (1, 1, 2)
#: The scopes and their prior shares of executions: small, wide and deep
#: (the ``auto`` portfolio's bandit moves these shares toward what yields).
SCOPES = ("small", "wide", "deep")
SCOPE_SHARES = (0.75, 0.125, 0.125)
#: The deep scope: slots wider than a word, writes per writer (more than
#: the smallest rings hold), harvest rounds, and each writer's shape.
DEEP_PAGES = (65, 100, 128, 129, 200)
DEEP_WRITES = (8, 12, 16, 24)
DEEP_ROUNDS = (2, 3, 4)
DEEP_SHAPES = ("word", "boundary", "refault")


#: Ring sizes the program space draws for ring algorithms.
RING_SIZES = (4, 8, 16)

#: One write: (gfn, kind): ``GUEST`` (0, the vCPU's own store), ``ON_BEHALF``
#: (1, KVM writing for the guest on the vCPU) or ``DEVICE`` (2, KVM writing
#: for the guest with no running vCPU). ``True``/``False`` read as 1/0.
Write = tuple[int, int]
GUEST, ON_BEHALF, DEVICE = 0, 1, 2
#: The share of on-behalf writes made with no running vCPU.
DEVICE_SHARE = 0.25


@dataclass(frozen=True)
class Program:
    """Each writer's writes, in order, and how many harvest rounds race
    them before the final one (the controlled engine's harvester; the
    free-running harvester runs rounds until the writers are done)."""

    writes: tuple[tuple[Write, ...], ...]
    rounds: int = 2

    def __post_init__(self) -> None:
        if not self.writes:
            raise UsageError("expected at least one writer in the program, got none")
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise UsageError(f"expected rounds >= 0, got {self.rounds!r}")

    def to_json(self) -> dict[str, Any]:
        return {"writes": [[[g, int(b)] for g, b in w] for w in self.writes],
                "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: Any) -> Program:
        return cls(writes=tuple(tuple((int(g), _kind(k)) for g, k in w) for w in data["writes"]),
                   rounds=int(data["rounds"]))

    def check_fits(self, total_gfns: int) -> None:
        for w, writes in enumerate(self.writes):
            for _, kind in writes:
                if kind not in (GUEST, ON_BEHALF, DEVICE):
                    raise UsageError(f"expected write kinds 0 (guest), 1 (on behalf) or 2 "
                                     f"(device) for writer {w}, got {kind!r}")
        for w, writes in enumerate(self.writes):
            for gfn, _ in writes:
                if not 0 <= gfn < total_gfns:
                    raise UsageError(f"expected gfns in [0, {total_gfns}) for writer {w}, "
                                     f"got {gfn}")


def _kind(value: object) -> int:
    if not isinstance(value, (bool, int)):
        raise ValueError(f"expected a write kind 0, 1 or 2, got {value!r}")
    kind = int(value)
    if kind not in (GUEST, ON_BEHALF, DEVICE):
        raise ValueError(f"expected a write kind 0, 1 or 2, got {value!r}")
    return kind


@functools.lru_cache(maxsize=64)
def is_ring_algorithm(spec: str) -> bool:
    """Whether ``spec`` names an algorithm written for the dirty ring (its
    ``model`` turns it on); False for a name that resolves to nothing (the
    engine reports that)."""
    from ..dirtylog import resolve_algorithm
    from ..errors import AlgorithmError

    try:
        cls = resolve_algorithm(spec)
    except AlgorithmError:
        return False
    return bool((getattr(cls, "model", None) or {}).get("dirty_ring"))


def build_memslots(scenario: Scenario, extra: MemslotFlags = MemslotFlags.NONE) -> MemslotTable:
    """The scenario's memslots, logging, with ``extra`` flags (the
    algorithm's MANUAL_PROTECT)."""
    flags = MemslotFlags.LOG_DIRTY_PAGES | extra
    if scenario.initially_set:
        flags |= MemslotFlags.INITIALLY_SET
    return MemslotTable.contiguous(scenario.slots, scenario.pages, flags)


def writer_stream(scenario: Scenario, memslots: MemslotTable, execution: int,
                  writer: int) -> Iterator[Write]:
    """Writer ``writer``'s writes in execution ``execution`` (1-based), an
    endless stream: the one definition every engine uses."""
    rng = random.Random(f"{scenario.seed}:{execution}:{writer}")
    pick = workload_picker(scenario, memslots, writer, rng, execution)
    share = on_behalf_share(scenario, execution, writer)
    device = share * DEVICE_SHARE
    while True:
        gfn = pick()
        coin = rng.random()
        yield gfn, (DEVICE if coin < device else ON_BEHALF) if coin < share else GUEST


def on_behalf_share(scenario: Scenario, execution: int, writer: int = 0) -> float:
    """The share of on-behalf writes of ``writer`` in ``execution``: the
    scenario's, or, when it pins none, drawn per writer and execution: none
    (a quarter of the time), all (a quarter) or some (uniform in between).
    Per writer, so that one execution can pair a vCPU that never writes on
    the guest's behalf with one that always does (an on-behalf write sets a
    page's bit while its SPTE stays protected; a guest write to the same
    page then takes the fault path). The same in every engine."""
    if scenario.on_behalf is not None:
        return scenario.on_behalf
    rng = random.Random(f"{scenario.seed}:{execution}:{writer}:share")
    kind = rng.random()
    return 0.0 if kind < 0.25 else 1.0 if kind < 0.5 else rng.random()


def make_program(scenario: Scenario, rounds: int = 2, execution: int = 1) -> Program:
    """The writes the free-running engines make in ``execution``, fixed in
    advance."""
    memslots = build_memslots(scenario)
    return Program(tuple(tuple(islice(writer_stream(scenario, memslots, execution, w),
                                      scenario.writes))
                         for w in range(scenario.writers)), rounds)


def workload_picker(scenario: Scenario, memslots: MemslotTable, vcpu_id: int,
                    rng: random.Random, execution: int = 0) -> Callable[[], int]:
    """The gfn sequence of one writer in one execution.

    ``uniform``: any page of any slot, one write in four on a boundary page;
    and in one execution in two (a draw shared by all its writers) nine
    writes in ten go to one hot page (or two), so that writers meet on the
    same page and the same word, where most races live (the small-scope
    hypothesis: most bugs show on a handful of pages). ``hot``: nine writes in ten go to a
    framebuffer-like hot set (the first eighth of the first slot, as VGA
    redraws), the rest anywhere. ``sequential``: each writer sweeps its own
    share of guest memory in order, wrapping, like the kernel's memstress.
    """
    gfns = [g for s in memslots for g in range(s.base_gfn, s.end_gfn)]
    total = len(gfns)
    if scenario.workload == "uniform":
        edges = boundary_gfns(memslots)
        hot = _hot_pages(scenario.seed, execution, tuple(edges))

        def uniform() -> int:
            # One write in four lands on a boundary page (bit 0 or 63 of a
            # word, a slot's first or last page): where bitmap bugs live.
            r = rng.random()
            if hot and r < 0.9:
                return hot[rng.randrange(len(hot))]
            if r < 0.25 or hot:
                return edges[rng.randrange(len(edges))]
            return gfns[rng.randrange(total)]
        return uniform
    if scenario.workload == "hot":
        first = next(iter(memslots))
        hot_set = gfns[:max(1, first.npages // 8)]
        return lambda: hot_set[rng.randrange(len(hot_set))] if rng.random() < 0.9 \
            else gfns[rng.randrange(total)]
    start = vcpu_id * total // scenario.writers
    position = [start + rng.randrange(max(1, total // scenario.writers))]

    def sequential() -> int:
        gfn = gfns[position[0] % total]
        position[0] += 1
        return gfn

    return sequential


@functools.lru_cache(maxsize=8)
def _hot_pages(seed: int, execution: int, edges: tuple[int, ...]) -> tuple[int, ...]:
    """The uniform workload's hot pages in one execution, a draw shared by
    all its writers (made once, not once per writer)."""
    shared = random.Random(f"{seed}:{execution}:hot")
    return tuple(shared.sample(edges, min(len(edges), shared.choice((1, 1, 2))))) \
        if shared.random() < 0.5 else ()


def boundary_gfns(memslots: MemslotTable) -> list[int]:
    """Each slot's first and last page and bits 0 and 63 of its first
    words: the pages the search favours."""
    edges: list[int] = []
    for slot in memslots:
        offsets = {0, slot.npages - 1}
        for word in range(min(slot.nwords, 4)):
            offsets |= {64 * word, 64 * word + 63}
        edges += sorted(slot.base_gfn + o for o in offsets if 0 <= o < slot.npages)
    return edges


#: The small scope's model options, each case of it under each: the seed's
#: model first, then the fast page fault, PML with a one-entry buffer
#: (every write a PML-full exit), INITIALLY_SET, both, and PML's 512.
TINY_OPTIONS: tuple[dict[str, Any], ...] = (
    {"fast_page_fault": True}, {}, {"pml": True, "pml_entries": 1}, {"initially_set": True},
    {"fast_page_fault": True, "pml": True, "pml_entries": 1}, {"pml": True, "pml_entries": 512})
#: The small scope's programs tried first (measured on the zoo under the
#: race-directed search, ``search/races.py``: each of these finds several
#: bugs in tens of executions): an on-behalf write beside two guest writes
#: of one page (with two rounds, the fast page fault's fix undone or not
#: flushed); guest writes, one page per writer; the same on behalf; a
#: guest write beside on-behalf writes to both pages (a mark trusted to a
#: held lock); crossed orders of guest and on-behalf writes; a device
#: write among them.
_TINY_FIRST: tuple[tuple[tuple[Write, ...], ...], ...] = (
    (((0, ON_BEHALF),), ((0, GUEST), (0, GUEST))),
    (((0, GUEST), (0, GUEST)), ((1, GUEST), (1, GUEST))),
    (((0, ON_BEHALF), (1, ON_BEHALF)), ((1, ON_BEHALF), (0, ON_BEHALF))),
    (((0, GUEST),), ((1, ON_BEHALF), (0, ON_BEHALF))),
    (((0, GUEST), (1, ON_BEHALF)), ((1, ON_BEHALF), (0, GUEST))),
    (((0, DEVICE), (1, GUEST)), ((1, GUEST), (0, ON_BEHALF))),
)
#: The first cases, as (program of :data:`_TINY_FIRST`, option of
#: :data:`TINY_OPTIONS`) pairs: for an algorithm written for the fast
#: page fault or PML (``path``), the on-behalf-beside-guest program first;
#: for the ring, the guest writes under the fast page fault; for any other,
#: the trusted-mark program under the seed's model, then the guest writes,
#: and so on (the orders that measured fastest over the zoo, README "The
#: bug zoo").
_TINY_HEADS = {
    "seed": ((3, 1), (1, 0), (4, 0), (5, 0), (0, 0)),
    "path": ((0, 0), (1, 0), (4, 0), (5, 0), (3, 1)),
    "ring": ((1, 0), (3, 1), (4, 0), (5, 0), (0, 0)),
}


@functools.lru_cache(maxsize=1)
def _tiny_programs() -> tuple[tuple[tuple[Write, ...], ...], ...]:
    """Every program of 1 or 2 writers with 1 or 2 writes each on pages 0
    and 1, writers in canonical order (swapping two writers gives the same
    program), :data:`_TINY_FIRST` first."""
    symbols = [(g, k) for g in (0, 1) for k in (GUEST, ON_BEHALF, DEVICE)]
    seqs = [(a,) for a in symbols] + [(a, b) for a in symbols for b in symbols]
    everything = [(w,) for w in seqs] + [(w, v) for i, w in enumerate(seqs) for v in seqs[i:]]
    rest = [p for p in everything if p not in _TINY_FIRST]
    return _TINY_FIRST + tuple(rest)


def tiny_case(index: int, options: int, head: str = "seed") -> tuple[int, int]:
    """The small scope's ``index``-th case (wrapping) as (program, option)
    indices: first the pairs of ``_TINY_HEADS[head]`` (``"seed"``,
    ``"path"`` or ``"ring"``), then the other programs of :data:`_TINY_FIRST`
    under every option, then every other program under every option (along
    a diagonal: the program and the option both change from one case to
    the next); every pair once."""
    first, programs = len(_TINY_FIRST), len(_tiny_programs())
    index %= programs * options
    if index < first * options:
        return _tiny_first_order(options, head)[index]
    index -= first * options
    rest = programs - first
    p, q = index % rest, index // rest
    return first + p, (p + q) % options


@functools.lru_cache(maxsize=32)
def _tiny_first_order(options: int, head: str) -> tuple[tuple[int, int], ...]:
    first = [pq for pq in _TINY_HEADS[head] if pq[1] < options]
    return tuple(first + [(p, q) for q in range(options) for p in range(len(_TINY_FIRST))
                          if (p, q) not in first])


def tiny_cases(options: int = len(TINY_OPTIONS)) -> int:
    """How many cases the small scope has (programs times options)."""
    return len(_tiny_programs()) * options


def deep_program(scenario: Scenario, rounds: int, execution: int) -> Program:
    """A deep program: each writer makes ``scenario.writes`` writes spread
    over the rounds, in one of :data:`DEEP_SHAPES`, drawn per writer:

    * ``word``: 3 to 6 pages of one bitmap word (bit 0 or 63 among them
      half of the time), visited again and again, each pass in a new order
      (a vCPU writing several pages of one word in one round, in a
      particular order);
    * ``boundary``: pages on both sides of a word boundary (63 and 64, 127
      and 128) and of a slot boundary (a slot's last page, the next slot's
      first), in a varied order;
    * ``refault``: one or two pages written over and over, so that each
      round's harvest re-protects them and the next write faults again.

    Write kinds follow the writer's on-behalf share, as in
    :func:`writer_stream`. A pure function of the scenario's seed, the
    execution and the writer."""
    memslots = build_memslots(scenario)
    slots = list(memslots)
    writers = []
    for w in range(scenario.writers):
        rng = random.Random(f"{scenario.seed}:{execution}:{w}:deep")
        shape = rng.choice(DEEP_SHAPES)
        slot = slots[rng.randrange(len(slots))]
        if shape == "word":
            word = rng.randrange(slot.nwords)
            lo = 64 * word
            hi = min(slot.npages, lo + 64)
            pool = list(range(lo, hi))
            k = min(len(pool), rng.randint(3, 6))
            chosen = rng.sample(pool, k)
            if rng.random() < 0.5 and hi - lo > 1:
                edge = rng.choice((lo, hi - 1))
                if edge not in chosen:
                    chosen[0] = edge
            pages = [slot.base_gfn + o for o in chosen]
        elif shape == "boundary":
            pages = []
            for word in range(1, slot.nwords):
                pages += [64 * word - 1, 64 * word]
            pages = [slot.base_gfn + o for o in pages if o < slot.npages]
            s = slots.index(slot)
            nxt = slots[(s + 1) % len(slots)]
            pages += [slot.end_gfn - 1, nxt.base_gfn]
            pages = sorted(set(pages))
        else:
            pages = [slot.base_gfn + rng.randrange(slot.npages)
                     for _ in range(rng.choice((1, 1, 2)))]
        share = on_behalf_share(scenario, execution, w)
        device = share * DEVICE_SHARE
        order: list[int] = []
        while len(order) < scenario.writes:
            one_pass = list(pages)
            rng.shuffle(one_pass)
            order += one_pass
        writes = []
        for gfn in order[:scenario.writes]:
            coin = rng.random()
            writes.append((gfn, (DEVICE if coin < device else ON_BEHALF)
                           if coin < share else GUEST))
        writers.append(tuple(writes))
    return Program(tuple(writers), rounds)


@dataclass(frozen=True)
class ProgramSpace:
    """The distribution the controlled engine draws every execution's shape,
    model options and program from (see the module docstring). A field that
    is set pins that dimension; None varies it. ``draw(base, n)`` is a pure
    function of the base scenario's seed and ``n``: the same seed gives the
    same sequence of programs everywhere. An algorithm's ``model`` still
    applies on top (the VM turns its options on), and :meth:`for_algorithm`
    pins the model options an algorithm does not declare in ``varies``."""

    writers: int | None = None
    slots: int | None = None
    pages: int | None = None
    writes: int | None = None
    rounds: int | None = None
    initially_set: bool | None = None
    fast_page_fault: bool | None = None
    pml: bool | None = None
    pml_entries: int | None = None
    #: The dirty ring's geometry (drawn only for ring algorithms: see
    #: :meth:`draw_ring`).
    ring_entries: int | None = None
    ring_soft_limit: int | None = None
    ring_batch: int | None = None

    def draw(self, base: Scenario, execution: int,
             features: Mapping[str, Any] | None = None) -> tuple[Scenario, Program]:
        """Execution ``execution``'s scenario and program. ``features``
        (the portfolio's bandit) may set the scope (``"small"``, ``"wide"``
        or ``"deep"``) and the unpinned ``fast_page_fault``, ``pml`` and
        ``initially_set`` in place of their draws; every other draw stays
        as it was, so the result is still a pure function of the seed, the
        execution and the features."""
        features = features or {}
        rng = random.Random(f"{base.seed}:{execution}:shape")
        r = rng.random()
        scope = features.get("scope") or ("small" if r < SCOPE_SHARES[0] else "wide"
                                          if r < SCOPE_SHARES[0] + SCOPE_SHARES[1] else "deep")
        if scope == "small":
            writers = self.writers or 2
            slots = self.slots or 1
            pages = self.pages or rng.choice(SMALL_PAGES)
            writes = self.writes or rng.choice(SMALL_WRITES)
            rounds = self.rounds if self.rounds is not None else rng.choice(SMALL_ROUNDS)
        elif scope == "wide":
            writers = self.writers or rng.choice((1, 2, 2, 2, 3, 3))
            slots = self.slots or rng.choice((1, 1, 2, 3))
            pages = self.pages or rng.choice(SLOT_SIZES)
            writes = self.writes or rng.choice((1, 2, 2, 3, 3, 4))
            rounds = self.rounds if self.rounds is not None else rng.choice((0, 1, 1, 2, 2, 3))
        else:
            writers = self.writers or rng.choice((1, 2, 2, 3))
            slots = self.slots or rng.choice((1, 2, 2))
            pages = self.pages or rng.choice(DEEP_PAGES)
            writes = self.writes or rng.choice(DEEP_WRITES)
            rounds = self.rounds if self.rounds is not None else rng.choice(DEEP_ROUNDS)
        initially_set = self.initially_set if self.initially_set is not None \
            else rng.random() < 0.2
        # The model options: their own generator, so that pinning one leaves
        # every other draw (and so the programs) as they were.
        options = random.Random(f"{base.seed}:{execution}:model")
        fast, pml, entries = (options.random() < 0.25, options.random() < 0.25,
                              options.choice(PML_ENTRIES_DRAWN))
        fast = fast if self.fast_page_fault is None \
            else self.fast_page_fault
        pml = pml if self.pml is None else self.pml
        if self.fast_page_fault is None and "fast_page_fault" in features:
            fast = bool(features["fast_page_fault"])
        if self.pml is None and "pml" in features:
            pml = bool(features["pml"])
        if self.initially_set is None and "initially_set" in features:
            initially_set = bool(features["initially_set"])
        # The buffer's size matters only with PML (and each size is a VM of
        # its own): drawn then, else the base scenario's.
        entries = self.pml_entries if self.pml_entries is not None \
            else entries if pml else base.pml_entries
        scenario = replace(base, writers=writers, slots=slots, pages=pages, writes=writes,
                           initially_set=initially_set, fast_page_fault=fast, pml=pml,
                           pml_entries=entries)
        if is_ring_algorithm(base.algorithm):
            scenario = self.draw_ring(scenario, execution, deep=scope == "deep")
        if scope == "deep":
            return scenario, deep_program(scenario, rounds, execution)
        return scenario, make_program(scenario, rounds, execution)

    def tiny(self, base: Scenario, index: int, rounds: int = 1,
             path: bool = False) -> tuple[Scenario, Program]:
        """The ``index``-th case (0-based, wrapping) of the bounded-exhaustive
        small scope: every program of at most 2 writers x 2 writes on the 2
        pages of one word (guest, on-behalf and device writes), ``rounds``
        harvest rounds racing them (1; a ring's cases 2), each under every
        entry of :data:`TINY_OPTIONS` (the unpinned model options). See
        :func:`tiny_case`. A ring algorithm's second case is the ring's
        boundary: one vCPU writes page 0 on the guest's behalf two
        times more than its ring holds (it fills and meets its soft limit),
        beside another's guest write of that page; its other cases follow."""
        opts = [o for o in TINY_OPTIONS if all(
            getattr(self, k) is None or getattr(self, k) == v for k, v in o.items())] \
            or [{}]
        ring = is_ring_algorithm(base.algorithm)
        fill = ring and index == 1
        program, option = (0, 0) if fill else tiny_case(
            index - (ring and index > 1), len(opts), "ring" if ring else "path" if path
            else "seed")
        opt = opts[option]
        scenario = replace(base, writers=2, slots=1, pages=2, writes=2,
                           initially_set=bool(opt.get("initially_set", False))
                           if self.initially_set is None else self.initially_set,
                           fast_page_fault=bool(opt.get("fast_page_fault", False))
                           if self.fast_page_fault is None else self.fast_page_fault,
                           pml=bool(opt.get("pml", False)) if self.pml is None else self.pml)
        pml_entries = self.pml_entries if self.pml_entries is not None \
            else int(opt.get("pml_entries", base.pml_entries)) if scenario.pml \
            else base.pml_entries
        scenario = replace(scenario, pml_entries=pml_entries)
        if ring:
            scenario = replace(scenario, ring_entries=self.ring_entries or 4,
                               ring_soft_limit=self.ring_soft_limit,
                               ring_batch=self.ring_batch or 0)
        if fill:
            n = scenario.ring_entries + 2
            fill_writes = (((0, ON_BEHALF),) * n, ((0, GUEST),))
            return replace(scenario, writers=2, writes=n), Program(fill_writes, rounds)
        writes = _tiny_programs()[program]
        return replace(scenario, writers=len(writes)), Program(writes, rounds)

    @property
    def shape_pinned(self) -> bool:
        """Whether any shape dimension is pinned (the small scope's
        bounded-exhaustive phase then does not run)."""
        return any(v is not None for v in (self.writers, self.slots, self.pages, self.writes,
                                           self.rounds))

    def draw_ring(self, scenario: Scenario, execution: int, *, deep: bool = False) -> Scenario:
        """The ring's geometry for a ring algorithm: 4 to 16 entries (small
        rings wrap and reach their soft limit in a few writes), a soft
        limit one below the size (a quarter of the time: half, or 2, the
        least that lets a fault's retry enter), a reaper batch of all (half
        the time), 1 or 2 entries per pass; in a quarter of the executions
        (unless writes are pinned) one more write per writer than the ring
        holds, so that a ring fills and wraps (in the deep scope, always:
        one to two rings' worth and more)."""
        rng = random.Random(f"{scenario.seed}:{execution}:ring")
        soft = self.ring_soft_limit
        sizes = [n for n in RING_SIZES if soft is None or n > soft] \
            or [1 << soft.bit_length()] if soft is not None else list(RING_SIZES)
        entries = self.ring_entries or rng.choice(sizes)
        if soft is None:
            r = rng.random()
            soft = entries - 1 if r < 0.75 else max(2, entries // 2) if r < 0.9 else 2
        batch = self.ring_batch if self.ring_batch is not None else rng.choice((0, 0, 1, 2))
        writes = scenario.writes
        if self.writes is None and rng.random() < 0.25:
            # The ring's boundary, as slot sizes reach a word's: enough
            # writes for one vCPU to fill its ring and wrap.
            writes = entries + 1
        if deep and self.writes is None:
            writes = max(writes, entries + 1 + rng.randrange(entries + 1))
        return replace(scenario, ring_entries=entries, ring_soft_limit=soft, ring_batch=batch,
                       writes=writes)

    def for_algorithm(self, cls: Any, base: Scenario) -> ProgramSpace:
        """This space for ``cls``: the model options its ``model`` sets
        pinned to those values, and the ones it does not declare in
        ``varies`` (a class attribute, empty unless the algorithm says it
        handles them; every built-in does) pinned to ``base``'s. The model
        wins over a pin, as it does in the VM."""
        model = getattr(cls, "model", None) or {}
        varies = frozenset(getattr(cls, "varies", ()))
        pins = {name: model[name] if name in model else getattr(base, name)
                for name in MODEL_OPTIONS
                if name in model or (getattr(self, name) is None and name not in varies)}
        return replace(self, **pins) if pins else self

    @property
    def pinned(self) -> bool:
        """Whether every dimension is pinned (one shape, though the writes
        still vary with the execution). The PML buffer's size counts as
        pinned when PML is pinned off."""
        entries = self.pml_entries is not None or self.pml is False
        return None not in (self.writers, self.slots, self.pages, self.writes, self.rounds,
                            self.initially_set, self.fast_page_fault, self.pml) and entries
