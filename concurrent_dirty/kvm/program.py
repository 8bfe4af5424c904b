"""The kernel engine's program space: what one execution's VM, guest and
harvester look like, drawn per execution from the cell's seed (as ``fuzz``
draws the model's programs), every dimension pinnable through the
:class:`~concurrent_dirty.harness.scenario.Scenario` (``pinned`` names the
fields given explicitly).

Dimensions: vCPUs (1 up to what the host recommends), slots and their sizes
(sizes that are not multiples of 64 pages included), the guest's write
pattern (sequential, random, hot pages, a slot's edges, a word's bits 0 and
63) and list length, its work between writes, sync exits, the harvester's
pacing (back to back, a fixed delay, jitter), ring sizes, CLEAR
granularity, INITIALLY_SET, and logging toggles while logging.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from ..harness.scenario import Scenario

__all__ = ["PATTERNS", "KernelProgram", "draw_program"]

PATTERNS = ("sequential", "random", "hot", "edges", "word-bits")
_WORKLOAD_PATTERN = {"uniform": "random", "hot": "hot", "sequential": "sequential",
                     "edges": "edges", "word-bits": "word-bits"}
#: Slot sizes drawn, in pages: one page, around a word, around a slot's
#: common sizes, and odd sizes whose last bitmap word is partial.
SLOT_PAGES = (1, 7, 63, 64, 65, 100, 128, 255, 512, 1000, 4096)
GUEST_DELAYS = (0, 0, 64, 1024, 16384)
SYNC_EVERY = (0, 0, 1, 64, 4096)
RING_ENTRIES = (256, 512, 1024, 4096)
CLEAR_WORDS = (1, 2, 4, 0)


@dataclass(frozen=True)
class KernelProgram:
    """One execution's shape."""

    vcpus: int
    slot_pages: tuple[int, ...]
    pattern: str
    #: Entries in each vCPU's write list (the guest cycles through it).
    writes: int
    guest_delay: int
    sync_every: int
    #: "back-to-back", "delay" or "jitter", and the delay's seconds.
    pacing: str
    interval: float
    ring_entries: int
    clear_words: int
    initially_set: bool
    #: Harvest rounds (1-based) at which a slot's logging is toggled, and
    #: the slot (index into slot_pages) and seconds it stays off.
    toggles: tuple[tuple[int, int, float], ...]
    #: Seconds the guest runs before it is stopped (short mode).
    seconds: float

    @property
    def pages(self) -> int:
        return sum(self.slot_pages)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        slots = "+".join(str(n) for n in self.slot_pages)
        text = (f"{self.vcpus} vCPU(s), slots of {slots} pages, {self.pattern} writes "
                f"({self.writes} per list, delay {self.guest_delay}, sync every "
                f"{self.sync_every or 'never'}), harvest {self.pacing}")
        if self.pacing != "back-to-back":
            text += f" {self.interval * 1e3:.2f} ms"
        if self.toggles:
            text += f", {len(self.toggles)} logging toggle(s)"
        return text


def _rng(scenario: Scenario, execution: int) -> random.Random:
    return random.Random(f"kvm:{scenario.seed}:{execution}")


def draw_program(scenario: Scenario, execution: int, *, max_vcpus: int,
                 interface: str) -> KernelProgram:
    """The program of ``execution`` (1-based) of ``scenario``: the same
    seed and execution give the same program."""
    rng = _rng(scenario, execution)
    pinned = set(scenario.pinned)

    def pick(name: str, drawn: Any) -> Any:
        return getattr(scenario, name) if name in pinned else drawn

    vcpus = min(pick("writers", rng.randint(1, max(1, max_vcpus))), 64)
    nslots = pick("slots", rng.choice((1, 1, 2, 3)))
    if "pages" in pinned:
        slot_pages = (scenario.pages,) * nslots
    else:
        slot_pages = tuple(rng.choice(SLOT_PAGES) for _ in range(nslots))
    pattern = _WORKLOAD_PATTERN[scenario.workload] if "workload" in pinned \
        else rng.choice(PATTERNS)
    total = sum(slot_pages)
    writes = pick("writes", rng.choice((1, 2, 8, 64, 256, max(1, min(total, 4096)))))
    guest_delay = scenario.guest_delay if scenario.guest_delay is not None \
        else rng.choice(GUEST_DELAYS)
    pacing = rng.choice(("back-to-back", "delay", "jitter"))
    interval = rng.choice((1e-4, 5e-4, 2e-3)) if pacing != "back-to-back" else 0.0
    if "interval" in pinned:
        pacing = "delay" if scenario.interval else "back-to-back"
        interval = scenario.interval
    ntoggles = scenario.toggles if scenario.toggles is not None \
        else rng.choice((0, 0, 1, 2))
    at: dict[int, tuple[int, float]] = {}  # one toggle per round
    for _ in range(ntoggles):
        at[rng.randint(1, 8 + ntoggles)] = (rng.randrange(nslots), rng.choice((0.0, 1e-3, 5e-3)))
    toggles = tuple(sorted((r, s, off) for r, (s, off) in at.items()))
    return KernelProgram(
        vcpus=vcpus, slot_pages=slot_pages, pattern=pattern, writes=writes,
        guest_delay=guest_delay, sync_every=rng.choice(SYNC_EVERY), pacing=pacing,
        interval=interval,
        ring_entries=pick("ring_entries", rng.choice(RING_ENTRIES)) if interface == "ring"
        else 0,
        clear_words=pick("clear_words", rng.choice(CLEAR_WORDS)) if interface == "manual"
        else 0,
        initially_set=pick("initially_set", rng.random() < 0.5) if interface == "manual"
        else False,
        toggles=toggles,
        seconds=rng.choice((0.03, 0.1, 0.3)) if scenario.mode == "short" else scenario.seconds)


def write_list(program: KernelProgram, vcpu: int, seed: int, execution: int) -> list[int]:
    """``vcpu``'s write list: data page numbers (slot after slot)."""
    rng = random.Random(f"kvm-list:{seed}:{execution}:{vcpu}")
    total, n = program.pages, program.writes
    if program.pattern == "sequential":
        start = rng.randrange(total)
        return [(start + i) % total for i in range(n)]
    if program.pattern == "hot":
        hot = [rng.randrange(total) for _ in range(max(1, min(4, total)))]
        return [rng.choice(hot) if rng.random() < 0.9 else rng.randrange(total)
                for _ in range(n)]
    if program.pattern in ("edges", "word-bits"):
        candidates: list[int] = []
        first = 0
        for npages in program.slot_pages:
            if program.pattern == "edges":
                candidates += [first, first + npages - 1, first + min(1, npages - 1)]
                if npages > 64:  # the last, partial word's edges too
                    candidates += [first + 64 * ((npages - 1) // 64), first + 63]
            else:
                for word in range(-(-npages // 64)):
                    candidates += [first + 64 * word,
                                   first + min(64 * word + 63, npages - 1)]
            first += npages
        return [rng.choice(candidates) for _ in range(n)]
    return [rng.randrange(total) for _ in range(n)]
