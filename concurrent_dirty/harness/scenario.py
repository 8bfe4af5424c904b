"""The frozen description of one stress cell: which algorithm, which engine,
what the writers do and for how long.

Two shapes of run. ``short`` (the default) repeats a small execution on
fresh state, as jcstress does with its strides: each writer makes ``writes``
writes and the harvester races them, then a final round and the end-of-run
oracle; repeat until the budget is spent. Measured here, a tiny repeated
execution meets a lost-bit window many times a second, while one long run
over hundreds of pages can go seconds without one. ``long`` runs a single
execution for the whole budget, the shape of a real migration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import UsageError
from .limits import MAX_PROCESS_WRITERS, MAX_TOTAL_PAGES, MAX_WRITERS

__all__ = ["ENGINES", "MODES", "WORKLOADS", "Scenario"]

ENGINES = ("threads", "processes", "kvm")
WORKLOADS = ("uniform", "hot", "sequential", "edges", "word-bits")
#: Write patterns only the kvm engine's guest follows.
KVM_WORKLOADS = ("edges", "word-bits")
#: The kvm engine's guest modes (concurrent_dirty.kvm.guest.GUEST_MODES).
KVM_GUEST_MODES = ("long64-cpl3", "long64-cpl0")
MODES = ("short", "long")


def _closest(value: str, choices: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(value, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Scenario:
    algorithm: str = "xchg"
    engine: str = "threads"
    #: vCPU writer threads or processes.
    writers: int = 2
    slots: int = 2
    #: Pages per slot (need not be a multiple of 64).
    pages: int = 64
    workload: str = "uniform"
    #: Share of writes KVM makes on the guest's behalf (no mmu_lock, no fault);
    #: None draws a share for every execution (none, some or all: see
    #: ``harness.program.on_behalf_share``).
    on_behalf: float | None = None
    mode: str = "short"
    #: Writes per writer per execution (short mode).
    writes: int = 16
    #: Budget for the whole cell, in seconds of running (set-up excluded).
    seconds: float = 2.0
    #: Stop after this many executions even if time is left (None: no limit).
    max_executions: int | None = None
    seed: int = 0
    #: ConTest-style noise: chance of a yield or short sleep at a switch
    #: point; None (the default) draws a level per execution and thread
    #: (swarm noise: see ``_core.switch.NoiseHook``), 0 turns noise off.
    noise: float | None = None
    #: sys.setswitchinterval for the threads engine (None: leave it).
    switch_interval: float | None = None
    #: Pause between harvest rounds, in seconds.
    interval: float = 0.0
    #: Start logging with every bit set (KVM_DIRTY_LOG_INITIALLY_SET).
    initially_set: bool = False
    #: Longest wait for a lock or a grace period before a DeadlockError.
    lock_timeout: float = 10.0
    #: The per-vCPU TLB model (stale translations until a remote flush).
    tlb: bool = True
    #: Words per KVM_CLEAR_DIRTY_LOG call of the harvester (manual_protect
    #: algorithms): 1, several, or 0 for the whole slot in one call. The
    #: slot's last range may end in a partial word.
    clear_words: int = 1
    #: The fast page fault path (c7ba5b48cc8d): write faults on MMU-writable
    #: SPTEs are fixed by a cmpxchg without mmu_lock.
    fast_page_fault: bool = False
    #: Hardware Dirty bits and Page Modification Logging: SPTEs stay
    #: writable, a CPU sets Dirty on its first write through a translation
    #: and logs the gfn in its vCPU's PML buffer, drained at VM exits.
    pml: bool = False
    #: Entries of each vCPU's PML buffer (512 in the hardware; fewer make
    #: the PML-full exit reachable in small executions).
    pml_entries: int = 512
    #: The dirty ring (KVM_CAP_DIRTY_LOG_RING): each vCPU pushes (slot,
    #: offset) entries into its own ring instead of setting bits; writes
    #: with no running vCPU go to the bitmap (..._RING_WITH_BITMAP). An
    #: interface, turned on by ring algorithms (their ``model``).
    dirty_ring: bool = False
    #: Entries per vCPU ring: a power of two from 4 to 65536 (KVM's rings
    #: are 4 KiB and up; small ones make wrap-around reachable).
    ring_entries: int = 8
    #: Used entries at which a vCPU exits (KVM_EXIT_DIRTY_RING_FULL) and
    #: waits for the reaper; below ``ring_entries`` (the rest is reserved
    #: for the write in flight). None: ``ring_entries - 1``.
    ring_soft_limit: int | None = None
    #: Entries the reaper collects per ring per pass (0: all it finds).
    ring_batch: int = 0
    #: The liveness oracle: harvest rounds after the final one, with no
    #: writer left; a page reported by every one of them is a stuck bit
    #: (0: off).
    stuck_rounds: int = 2
    #: Seconds a thread or process of the code under test may go without
    #: progress before the run ends with a HangError (free-running engines).
    watchdog: float = 10.0
    #: kvm engine: pause iterations the guest spins after each write (its
    #: own work between stores); None draws it per execution.
    guest_delay: int | None = None
    #: kvm engine: times per execution that a slot's dirty logging is
    #: turned off and back on (QEMU at migration cancel); None draws it.
    toggles: int | None = None
    #: kvm engine: the fields given explicitly, which it must not draw
    #: (writers, slots, pages, workload, writes, interval, initially_set,
    #: clear_words, ring_entries); every other such field is drawn per
    #: execution, as fuzz draws programs.
    pinned: tuple[str, ...] = ()
    #: kvm engine: the guest's mode, "long64-cpl3" (native on every
    #: hypervisor) or "long64-cpl0" (on a software hypervisor such as
    #: kvm_pvm, run by KVM's instruction emulator: another dirty-logging
    #: path, thousands of times slower).
    guest_mode: str = "long64-cpl3"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"expected an engine in {list(ENGINES)}, got "
                             f"{self.engine!r}{_closest(str(self.engine), ENGINES)}")
        if self.workload not in WORKLOADS:
            raise UsageError(f"expected a workload in {list(WORKLOADS)}, got "
                             f"{self.workload!r}{_closest(str(self.workload), WORKLOADS)}")
        if self.mode not in MODES:
            raise UsageError(f"expected a mode in {list(MODES)}, got {self.mode!r}")
        for name, low, high in (("writers", 1, MAX_WRITERS), ("slots", 1, 4096),
                                ("pages", 1, MAX_TOTAL_PAGES), ("writes", 1, 1 << 40)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise UsageError(f"expected an int from {low} to {high} for {name}, "
                                 f"got {value!r}")
        if not isinstance(self.clear_words, int) or isinstance(self.clear_words, bool) \
                or not 0 <= self.clear_words <= 1 << 18:
            raise UsageError(f"expected a number of words per CLEAR from 0 (the whole slot) "
                             f"to {1 << 18} for clear_words, got {self.clear_words!r}")
        for name in ("fast_page_fault", "pml", "dirty_ring"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"expected True or False for {name}, "
                                 f"got {getattr(self, name)!r}")
        if not isinstance(self.stuck_rounds, int) or isinstance(self.stuck_rounds, bool) \
                or not 0 <= self.stuck_rounds <= 16:
            raise UsageError(f"expected an int from 0 to 16 for stuck_rounds, got "
                             f"{self.stuck_rounds!r}")
        if not isinstance(self.pml_entries, int) or isinstance(self.pml_entries, bool) \
                or not 1 <= self.pml_entries <= 512:
            raise UsageError(f"expected a number of PML entries from 1 to 512 for pml_entries, "
                             f"got {self.pml_entries!r}")
        self._check_ring()
        self._check_kvm()
        if self.engine == "processes" and self.writers > MAX_PROCESS_WRITERS:
            raise UsageError(f"expected at most {MAX_PROCESS_WRITERS} writers on the processes "
                             f"engine (each is a Python interpreter), got {self.writers}")
        if self.slots * self.pages > MAX_TOTAL_PAGES:
            raise UsageError(f"expected at most {MAX_TOTAL_PAGES} guest pages in all, got "
                             f"{self.slots} slots x {self.pages} pages")
        self._positive("seconds", self.seconds)
        self._positive("lock_timeout", self.lock_timeout)
        self._positive("watchdog", self.watchdog)
        for name in ("on_behalf", "noise"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise UsageError(f"expected a probability from 0 to 1 for {name}, got {value!r}")
        if not isinstance(self.interval, (int, float)) or not 0 <= self.interval < math.inf:
            raise UsageError(f"expected a non-negative number of seconds for interval, "
                             f"got {self.interval!r}")
        if self.switch_interval is not None:
            self._positive("switch_interval", self.switch_interval)
        if self.max_executions is not None and (
                not isinstance(self.max_executions, int) or self.max_executions < 1):
            raise UsageError(f"expected a positive int for max_executions, "
                             f"got {self.max_executions!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UsageError(f"expected an int seed, got {self.seed!r}")

    def _check_ring(self) -> None:
        n = self.ring_entries
        if not isinstance(n, int) or isinstance(n, bool) or not 4 <= n <= 65536 or n & (n - 1):
            raise UsageError(f"expected a power of two from 4 to 65536 for ring_entries, "
                             f"got {n!r}")
        soft = self.ring_soft_limit
        if soft is not None and (not isinstance(soft, int) or isinstance(soft, bool)
                                 or not 2 <= soft < n):
            raise UsageError(f"expected a ring soft limit from 2 to {n - 1} for a {n}-entry "
                             f"ring (one entry at least is reserved for the write in flight; "
                             f"a limit of 1 livelocks: each fault's retry would exit and reap, "
                             f"re-protecting the page it just made writable), got {soft!r}")
        batch = self.ring_batch
        if not isinstance(batch, int) or isinstance(batch, bool) or not 0 <= batch <= 65536:
            raise UsageError(f"expected a reaper batch from 0 (all) to 65536 for ring_batch, "
                             f"got {batch!r}")
        if self.dirty_ring and self.pml:
            raise UsageError("expected the dirty ring or PML, got both: the model drains PML "
                             "buffers into the bitmap only")

    def _check_kvm(self) -> None:
        pinnable = ("writers", "slots", "pages", "workload", "writes", "interval",
                    "initially_set", "clear_words", "ring_entries")
        if not isinstance(self.pinned, tuple) or not all(p in pinnable for p in self.pinned):
            raise UsageError(f"expected pinned to be a tuple of names from {list(pinnable)}, "
                             f"got {self.pinned!r}")
        for name, high in (("guest_delay", 1 << 24), ("toggles", 64)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value <= high):
                raise UsageError(f"expected an int from 0 to {high} (or None: drawn) for "
                                 f"{name}, got {value!r}")
        if self.guest_mode not in KVM_GUEST_MODES:
            raise UsageError(f"expected a guest mode in {list(KVM_GUEST_MODES)}, got "
                             f"{self.guest_mode!r}")
        if self.engine != "kvm":
            if self.guest_mode != KVM_GUEST_MODES[0]:
                raise UsageError(f"expected guest_mode with the kvm engine only, got "
                                 f"{self.guest_mode!r} on the {self.engine} engine")
            if self.workload in KVM_WORKLOADS:
                raise UsageError(f"expected a workload in ['uniform', 'hot', 'sequential'] on "
                                 f"the {self.engine} engine, got {self.workload!r} (a pattern "
                                 f"of the kvm engine's guest)")
            return
        if self.ring_entries < 256 and "ring_entries" in self.pinned:
            raise UsageError(f"expected ring_entries from 256 to 65536 on the kvm engine "
                             f"(KVM's rings are 4 KiB to 1 MiB of 16-byte entries), got "
                             f"{self.ring_entries}")
        if self.slots > 32:
            raise UsageError(f"expected at most 32 slots on the kvm engine, got {self.slots}")

    @property
    def soft_limit(self) -> int:
        """The ring's soft limit in effect."""
        return self.ring_soft_limit if self.ring_soft_limit is not None \
            else self.ring_entries - 1

    @staticmethod
    def _positive(name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value < math.inf:
            raise UsageError(f"expected a positive number of seconds for {name}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
