"""A campaign's report: what :class:`FuzzReport` holds and how it reads,
as text (:meth:`FuzzReport.summary`) and as JSON (:meth:`FuzzReport.to_json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..harness.execution import ExecutionResult

__all__ = ["FuzzReport"]


@dataclass
class FuzzReport:
    algorithm: str
    scheduler: str
    executions: int = 0
    steps: int = 0
    preemptions: int = 0
    switches: int = 0
    seconds: float = 0.0
    exhausted: bool | None = None
    failure: ExecutionResult | None = None
    guarantee: str = ""
    #: What ended a clean campaign: "executions", "seconds", or None (the
    #: scheduler had nothing left to try).
    stopped_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    @property
    def executions_per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        tried = (f"{self.executions} executions, {self.steps} switch points, "
                 f"{self.preemptions} preemptions in {self.seconds:.2f}s "
                 f"({self.executions_per_second:.0f} executions/s, "
                 f"{self.steps_per_second:.0f} switch points/s)")
        if self.failure is not None:
            out = self.failure.outcome
            text = (f"verdict: FAIL ({out.kind} at step {out.step} of execution "
                    f"{self.executions}; {tried})")
            if "nondeterministic" in self.extra:
                text += f"\nwarning: {self.extra['nondeterministic']}"
            m = self.extra.get("minimized")
            if m and m.get("by") == "search":
                text += (f"\ncounterexample: {m['preemptions']} preemption(s), the fewest on "
                         f"this program (found under iterative preemption bounding: every "
                         f"smaller bound exhausted first)")
            elif m and m.get("by") == "none needed":
                text += ("\ncounterexample: 0 preemptions, the fewest possible (the threads "
                         "ran until they blocked or finished)")
            elif m and "skipped" in m:
                text += (f"\ncounterexample: {m['preemptions']} preemption(s), not proven the "
                         f"fewest (not minimized: {m['skipped']})")
            elif m:
                budget = ("the time left cut it short, so this count depends on the "
                          "machine's speed" if m.get("timed_out")
                          else "the budget of executions ran out")
                fewest = ("the fewest on this program (every smaller bound exhausted)"
                          if m["fewest"] else f"not proven the fewest ({budget})")
                runs = m.get("executions")
                spent = (f"{runs} executions" if runs is not None
                         else f"{m['seconds']:.2f}s")
                text += (f"\ncounterexample: {m['preemptions']} preemption(s), {fewest}; the "
                         f"search's first had {m['preemptions_found']} (minimized in "
                         f"{spent}: preemption points sampled, then iterative "
                         f"preemption bounding)")
            else:
                text += "\ncounterexample: not minimized (the search stopped at its failure)"
            return text
        text = f"verdict: PASS (no failure; {tried})"
        if self.exhausted is not None:
            text += "; the space was exhausted" if self.exhausted \
                else "; the space was NOT exhausted (budget ran out)"
        if self.guarantee:
            text += f"\n{self.guarantee}"
        return text

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "algorithm": self.algorithm, "scheduler": self.scheduler,
            "status": "FAIL" if self.failure else "ok", "executions": self.executions,
            "steps": self.steps, "preemptions": self.preemptions, "switches": self.switches,
            "seconds": round(self.seconds, 3), "exhausted": self.exhausted,
            "guarantee": self.guarantee, "violations": 1 if self.failure else 0,
        }
        if self.failure is not None:
            data.update(failure_kind=self.failure.outcome.kind,
                        failure_step=self.failure.outcome.step,
                        message=self.failure.outcome.message, token=self.failure.token,
                        counterexample=self.failure.counterexample())
        data.update(self.extra)
        return data
