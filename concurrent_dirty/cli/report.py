"""What a person sees: the live progress line and the verdict table."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..engines.free import CellResult, Progress

__all__ = ["ProgressPrinter", "summary_line", "verdict_table"]


class ProgressPrinter:
    """Redraws one status line on a terminal; on a log (CI), prints a line
    now and then so that an hour-long run is not silent."""

    def __init__(self, stream: TextIO = sys.stderr, cell: str = "") -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.cell = cell
        self._last = 0.0
        self._width = 0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        every = 0.1 if self.tty else max(2.0, p.budget / 5)
        done = p.elapsed >= p.budget
        if now - self._last < every and not done:
            return
        self._last = now
        rate = p.executions / p.elapsed if p.elapsed else 0.0
        line = (f"{self.cell}[{p.algorithm}/{p.engine}] {min(p.elapsed, p.budget):5.1f}s/"
                f"{p.budget:g}s  executions {p.executions} ({rate:.0f}/s)  writes {p.writes}  "
                f"rounds {p.rounds}  violations {p.violations}")
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


_COLUMNS = ("algorithm", "engine", "verdict", "execs", "execs/s", "writes", "faults", "rounds",
            "bits", "copied", "spurious", "violations", "p50 ms", "p99 ms", "max ms", "seconds")


def verdict_table(results: list[CellResult]) -> str:
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for r in results:
        if r.not_run:
            rows.append((r.algorithm, r.engine, r.status, *["-"] * (len(_COLUMNS) - 3)))
            continue
        lat = r.latency_ms or {"p50": 0.0, "p99": 0.0, "max": 0.0}
        rows.append((r.algorithm, r.engine, r.status, str(r.executions),
                     f"{r.executions_per_second:.0f}", str(r.writes),
                     str(r.faults) if r.engine != "kvm" else "-",
                     str(r.rounds), str(r.bits), str(r.copied), str(r.spurious),
                     str(len(r.violations)), f"{lat['p50']:.3f}", f"{lat['p99']:.3f}",
                     f"{lat['max']:.3f}", f"{r.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < 3 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_line(results: list[CellResult], interrupted: bool = False) -> str:
    violations = sum(len(r.violations) for r in results)
    errors = sum(1 for r in results if r.error)
    executions = sum(r.executions for r in results)
    writes = sum(r.writes for r in results)
    rounds = sum(r.rounds for r in results)
    seconds = sum(r.seconds for r in results)
    ran = [r for r in results if not r.not_run]
    tried = (f"{len(ran)} cells, {executions} executions, {writes} writes, {rounds} harvest "
             f"rounds in {seconds:.1f}s")
    if len(ran) < len(results):
        first = next((r for r in ran if r.error), None)
        if first is not None:
            tried += (f"; {len(results) - len(ran)} not run: the run ended at the first error, "
                      f"in {first.algorithm}/{first.engine}")
        else:
            tried += (f"; {len(results) - len(ran)} without figures: interrupted before they "
                      f"ran or reported")
    if violations or errors:
        return f"verdict: FAIL ({violations} violations, {errors} errors; {tried})"
    if interrupted:
        return f"verdict: INTERRUPTED (no dirty bit lost so far; {tried})"
    return f"verdict: PASS (no dirty bit lost; {tried})"
