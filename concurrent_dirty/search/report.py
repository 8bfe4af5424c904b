"""A campaign's report, rendered in one place.

Every line of a report, text and JSON, comes from one typed value:
:class:`FuzzReport` (the campaign's counts) and, for a failure,
:class:`Found` (:meth:`FuzzReport.found`), built once from the failing
execution's outcome. So the numbers agree wherever they are printed:

* the **step**: the switch point at which the failure happened; a traced
  counterexample has exactly that many rows (a deadlock's or a step
  bound's last row is the switch point that could not go on);
* the **preemptions** of the counterexample: the outcome's count, the same
  in the trace's header, its ``<== preempts`` marks and the minimisation
  line; the campaign's total over every execution is printed as such;
* the **execution** at which the failure was first found (and the job,
  with several), once, in the verdict (the oracle's line names no
  execution for the controlled engine: its replay token names it);
* the **seed** in the header is the one the search used.

:func:`render` is the text report; :meth:`FuzzReport.to_json` the JSON;
:func:`render_replay` the verdict of ``replay`` and of a saved failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..harness.execution import ExecutionResult
from .model import model_lines
from .replay import regression_test

__all__ = ["Found", "FuzzReport", "divergence", "render", "render_replay"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Found:
    """A campaign's failure, as every line of its report states it."""

    kind: str
    #: The switch point it happened at (the traced counterexample's rows).
    step: int
    #: The counterexample's preemptions (after minimisation, if any).
    preemptions: int
    #: The execution of the campaign (of its job, with several) at which
    #: the search first found it, and the seconds it took.
    execution: int
    seconds: float
    job: int | None
    #: The first counterexample's preemptions, before minimisation.
    preemptions_found: int
    #: Whether ``preemptions`` is proven the fewest on the program, and how.
    fewest: bool | None
    minimized_by: str
    minimize_seconds: float
    #: The executions minimisation took (None: not counted), whether the
    #: time left cut it short, and why it was not minimized ("" if it was).
    minimize_executions: int | None
    timed_out: bool
    skipped: str
    message: str
    token: str


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

    @classmethod
    def saved(cls, algorithm: str, result: ExecutionResult) -> FuzzReport:
        """The report of a saved failure replayed (``--db``): one execution,
        its own switch points and preemptions."""
        out = result.outcome
        report = cls(algorithm=algorithm, scheduler="saved failure (--db)", failure=result,
                     executions=1, steps=out.steps, preemptions=out.preemptions,
                     switches=out.switches)
        report.extra["from_database"] = True
        return report

    def found(self) -> Found | None:
        """The failure as the report states it (None if there is none)."""
        failure = self.failure
        if failure is None:
            return None
        out = failure.outcome
        m = self.extra.get("minimized") or {}
        job = self.extra.get("first_failure_job")
        return Found(
            kind=str(out.kind), step=out.step, preemptions=out.preemptions,
            execution=int(self.extra.get("first_failure_execution", self.executions)),
            seconds=float(self.extra.get("first_failure_seconds", self.seconds)),
            job=int(job) if job is not None else None,
            preemptions_found=int(m.get("preemptions_found", out.preemptions)),
            fewest=m.get("fewest") if m else None, minimized_by=str(m.get("by", "")),
            minimize_seconds=float(m.get("seconds", 0.0)),
            minimize_executions=int(m["executions"]) if "executions" in m else None,
            timed_out=bool(m.get("timed_out", False)), skipped=str(m.get("skipped", "")),
            message=out.message, token=failure.token)

    def totals(self) -> str:
        """What the campaign tried, all executions together."""
        text = (f"{_plural(self.executions, 'execution')}, {self.steps} switch points, "
                f"{self.preemptions} preemptions in all")
        if not self.seconds:
            return text  # a saved failure replayed: no search, no rate
        return (text + f", in {self.seconds:.2f}s ({self.executions_per_second:.0f} "
                f"executions/s, {self.steps_per_second:.0f} switch points/s)")

    def summary(self) -> str:
        tried = self.totals()
        found = self.found()
        if found is not None:
            where = f"execution {found.execution}" + (
                f" of job {found.job}" if found.job is not None else "")
            text = (f"verdict: FAIL ({found.kind} at step {found.step}, first found at "
                    f"{where} after {found.seconds:.2f}s; {tried})")
            if "nondeterministic" in self.extra:
                text += f"\nwarning: {self.extra['nondeterministic']}"
            count = _plural(found.preemptions, "preemption")
            if found.minimized_by == "search":
                text += (f"\ncounterexample: {count}, the fewest on this program (found "
                         f"under iterative preemption bounding: every smaller bound "
                         f"exhausted first)")
            elif found.minimized_by == "none needed":
                text += (f"\ncounterexample: {count}, the fewest possible (the threads ran "
                         f"until they blocked or finished)")
            elif found.skipped:
                text += (f"\ncounterexample: {count}, not proven the fewest (not minimized: "
                         f"{found.skipped})")
            elif found.fewest is not None:
                budget = ("the time left cut it short, so this count depends on the "
                          "machine's speed" if found.timed_out
                          else "the budget of executions ran out")
                fewest = ("the fewest on this program (every smaller bound exhausted)"
                          if found.fewest else f"not proven the fewest ({budget})")
                spent = (_plural(found.minimize_executions, "execution")
                         if found.minimize_executions is not None
                         else f"{found.minimize_seconds:.2f}s")
                text += (f"\ncounterexample: {count}, {fewest}; the search's first had "
                         f"{found.preemptions_found} (minimized in {spent}: its preemptions "
                         f"dropped, points sampled, then iterative preemption bounding)")
            else:
                text += f"\ncounterexample: {count}, not minimized (the search stopped at it)"
            return text
        text = f"verdict: PASS (no failure; {tried})"
        if self.exhausted is not None:
            text += "; the space was exhausted" if self.exhausted \
                else "; the space was NOT exhausted (budget ran out)"
        if self.guarantee:
            text += f"\n{self.guarantee}"
        return text

    def to_json(self) -> dict[str, Any]:
        """The report as JSON: the same numbers as :meth:`summary` (private
        keys of ``extra``, a leading ``_``, are the merge's and stay out)."""
        data: dict[str, Any] = {
            "algorithm": self.algorithm, "scheduler": self.scheduler,
            "status": "FAIL" if self.failure else "ok", "executions": self.executions,
            "steps": self.steps, "preemptions": self.preemptions, "switches": self.switches,
            "seconds": round(self.seconds, 3), "exhausted": self.exhausted,
            "guarantee": self.guarantee, "violations": 1 if self.failure else 0,
        }
        data.update({k: v for k, v in self.extra.items() if not k.startswith("_")})
        found = self.found()
        if found is not None and self.failure is not None:
            data.update(failure_kind=found.kind, failure_step=found.step,
                        failure_preemptions=found.preemptions,
                        first_failure_execution=found.execution,
                        first_failure_seconds=round(found.seconds, 4),
                        message=found.message, token=found.token,
                        counterexample=self.failure.counterexample())
            if "minimized" in data:
                data["minimized"] = {**data["minimized"], "preemptions": found.preemptions}
        return data


def render(report: FuzzReport, header: str = "") -> str:
    """The text report of one algorithm's campaign: its title, the header
    (the campaign's seed and program space, then the failing program's
    model), the counterexample and its replay token, and the verdict."""
    found_by = report.extra.get("found_by")
    lines = [f"== {report.algorithm} under {report.scheduler}"
             + (f" (found by {found_by})" if found_by else "")]
    if header:
        lines.append(header)
    failure = report.failure
    if failure is not None:
        lines += model_lines(report.extra.get("model"), failure)
        lines.append(failure.counterexample())
        lines.append(f"\nreplay token: {failure.token}")
        lines.append(f"  rerun:  concurrent-dirty replay {failure.token}")
        lines.append("  as a regression test:")
        lines.append("    " + regression_test(failure.token).replace("\n", "\n    ").rstrip())
    lines.append(report.summary())
    return "\n".join(lines)


def render_replay(result: ExecutionResult, against: str, *, recorded: int,
                  expect_kind: str, expect_step: int, saved: bool = False) -> tuple[str, bool]:
    """The verdict of a replay against ``against`` (``recorded`` decisions,
    the recorded failure ``expect_kind`` at ``expect_step``), with the
    counterexample while it fails: the text and whether it failed. A
    passing replay prints no trace: there is nothing to read in it."""
    out = result.outcome
    if out.failed:
        same = out.kind == expect_kind and out.step == expect_step
        note = "the same failure, at the same step" if same else (
            f"a different failure than recorded ({expect_kind} at step {expect_step})")
        text = (f"{result.counterexample()}\nverdict: FAIL against {against}: {out.kind} at "
                f"step {out.step}: {note}"
                + divergence(result, recorded,
                             "this failure happened on a different interleaving from there"))
        return text, True
    left = divergence(result, recorded,
                      "the fix was exercised on a different interleaving from there")
    decisions = len(out.schedule)
    past = (f"; the {recorded} recorded decisions followed, then the default schedule for "
            f"{decisions - recorded} more" if decisions > recorded else "")
    return (f"verdict: PASS against {against}" + (
        left or f": the replayed interleaving loses no dirty bit ({out.steps} switch points"
                f"{past})")), False


def divergence(result: ExecutionResult, recorded: int, what: str) -> str:
    """Where a replay left its recorded schedule, and what differed: ""
    if it followed it to the end."""
    names = result.names

    def name(tid: int) -> str:
        return names[tid] if 0 <= tid < len(names) else f"thread {tid}"

    decisions = len(result.outcome.schedule)
    ran = (f"it made {decisions} scheduling decisions ({result.outcome.steps} switch points) "
           f"where {recorded} were recorded")
    if result.diverged_at is not None and result.divergence is not None:
        chosen, runnable = result.divergence
        return (f", but the replay left the recorded schedule at decision "
                f"{result.diverged_at + 1} (recorded {name(chosen)}, runnable "
                f"[{', '.join(name(t) for t in runnable)}]); {ran}: {what}")
    return ""

