"""What a stress cell reports, whichever engine ran it: the result of a cell
(:class:`CellResult`, the table's row and the JSON's cell) and the live
snapshot a progress display gets (:class:`Progress`). The model's engines
(:mod:`concurrent_dirty.engines`) and the real kernel's
(:mod:`concurrent_dirty.kvm`) fill the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .oracle import Violation

__all__ = ["CellResult", "Progress"]


@dataclass
class Progress:
    """A live snapshot, passed to the progress callback a few times a second."""

    algorithm: str
    engine: str
    elapsed: float
    budget: float
    executions: int
    writes: int
    rounds: int
    violations: int


@dataclass
class CellResult:
    algorithm: str
    engine: str
    scenario: dict[str, Any]
    seconds: float = 0.0
    executions: int = 0
    writes: int = 0
    faults: int = 0
    on_behalf: int = 0
    rounds: int = 0
    bits: int = 0
    copied: int = 0
    spurious: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None
    rerun: str = ""
    #: Ctrl-C (or SIGTERM) ended the cell early; its figures are partial.
    interrupted: bool = False
    #: An earlier cell's error ended the run before this one started.
    not_run: bool = False
    #: For a one-execution cell: the destination's guest memory at the end
    #: (page values by gfn), to compare engines on the same program.
    image: tuple[int, ...] = ()
    #: The engine's own figures (the kvm engine: exits, ring and CLEAR
    #: counts, the failing execution's program), in the JSON under
    #: the engine's name.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.not_run:  # no figures: an error or the interrupt came first
            return "interrupted" if self.interrupted else "not run"
        if self.interrupted and not self.violations and not self.error:
            return "interrupted"
        if self.error:
            return "ERROR"
        return "FAIL" if self.violations else "ok"

    @property
    def executions_per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm, "engine": self.engine, "status": self.status,
            "seconds": round(self.seconds, 3), "executions": self.executions,
            "executions_per_second": round(self.executions_per_second, 1),
            "writes": self.writes, "faults": self.faults, "on_behalf": self.on_behalf,
            "rounds": self.rounds, "bits_harvested": self.bits, "pages_copied": self.copied,
            "spurious_reports": self.spurious, "harvest_latency_ms": self.latency_ms,
            "violations": len(self.violations),
            "violation_reports": [v.to_json() for v in self.violations],
            "error": self.error, "interrupted": self.interrupted, "rerun": self.rerun,
            "scenario": self.scenario,
            **({self.engine: self.extra} if self.extra else {}),
        }
