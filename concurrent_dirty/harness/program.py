"""What an execution does, as plain data: each writer's writes.

One function, :func:`writer_stream`, defines a writer's writes for a
(scenario, execution, writer): the free-running writers iterate it (a short
execution takes its first ``scenario.writes``; a long one runs until told to
stop), and :func:`make_program` fixes the same writes in advance for the
controlled engine. So the same scenario and seed give the same program in
every engine, and a free-running failure can be explored under control.

Every write draws its page and then its on-behalf coin, always both, so the
stream does not depend on the on-behalf share being zero or not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from ..errors import UsageError
from ..model.memslot import MemslotFlags, MemslotTable
from .scenario import Scenario

__all__ = ["Program", "Write", "build_memslots", "make_program", "workload_picker",
           "writer_stream"]

#: One write: (gfn, made on the guest's behalf by KVM rather than by the vCPU).
Write = tuple[int, bool]


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
        return cls(writes=tuple(tuple((int(g), bool(b)) for g, b in w) for w in data["writes"]),
                   rounds=int(data["rounds"]))

    def check_fits(self, total_gfns: int) -> None:
        for w, writes in enumerate(self.writes):
            for gfn, _ in writes:
                if not 0 <= gfn < total_gfns:
                    raise UsageError(f"expected gfns in [0, {total_gfns}) for writer {w}, "
                                     f"got {gfn}")


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
    pick = workload_picker(scenario, memslots, writer, rng)
    share = scenario.on_behalf
    while True:
        gfn = pick()
        yield gfn, rng.random() < share


def make_program(scenario: Scenario, rounds: int = 2, execution: int = 1) -> Program:
    """The writes the free-running engines make in ``execution``, fixed in
    advance."""
    memslots = build_memslots(scenario)
    return Program(tuple(tuple(islice(writer_stream(scenario, memslots, execution, w),
                                      scenario.writes))
                         for w in range(scenario.writers)), rounds)


def workload_picker(scenario: Scenario, memslots: MemslotTable, vcpu_id: int,
                    rng: random.Random) -> Callable[[], int]:
    """The gfn sequence of one writer in one execution.

    ``uniform``: any page of any slot. ``hot``: nine writes in ten go to a
    framebuffer-like hot set (the first eighth of the first slot, as VGA
    redraws), the rest anywhere. ``sequential``: each writer sweeps its own
    share of guest memory in order, wrapping, like the kernel's memstress.
    """
    gfns = [g for s in memslots for g in range(s.base_gfn, s.end_gfn)]
    total = len(gfns)
    if scenario.workload == "uniform":
        return lambda: gfns[rng.randrange(total)]
    if scenario.workload == "hot":
        first = next(iter(memslots))
        hot = gfns[:max(1, first.npages // 8)]
        return lambda: hot[rng.randrange(len(hot))] if rng.random() < 0.9 \
            else gfns[rng.randrange(total)]
    start = vcpu_id * total // scenario.writers
    position = [start + rng.randrange(max(1, total // scenario.writers))]

    def sequential() -> int:
        gfn = gfns[position[0] % total]
        position[0] += 1
        return gfn

    return sequential
