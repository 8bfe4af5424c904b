"""The invariants every fuzz report keeps (issue 20, item 1): parse the
text and the JSON of a report and check that its numbers agree."""

from __future__ import annotations

import json
import re

from concurrent_dirty.search.report import FuzzReport, render

HEADER = re.compile(r"^counterexample: .*; (\S+) at step (\d+) with (\d+) preemptions?\b")
ROW = re.compile(r"^\s*(\d+)  \S")
VERDICT = re.compile(r"^verdict: FAIL \((\S+) at step (\d+), first found at execution (\d+)"
                     r"(?: of job \d+)? after [\d.]+s; (\d+) executions?, ")
MINIMIZED = re.compile(r"^counterexample: (\d+) preemptions?, ")
KINDS = ("violation", "deadlock", "step-bound", "hang", "misuse", "error")


def check_report(report: FuzzReport, *, seed: int | None = None, header: str = "") -> str:
    """Check ``report``'s text and JSON against each other; returns the text."""
    if seed is not None and not header:
        header = f"seed {seed}; program space: every dimension drawn"
    text = render(report, header)
    data = json.loads(json.dumps(report.to_json(), default=str))
    lines = text.splitlines()
    assert not [k for k in data if k.startswith("_")], data.keys()
    for kind in KINDS:
        assert f"{kind}: {kind}:" not in text, text
    if seed is not None:
        assert lines[1].startswith(f"seed {seed};"), lines[1]
    if report.failure is None:
        assert any(line.startswith("verdict: PASS") for line in lines), text
        assert "failure_step" not in data
        return text
    out = report.failure.outcome
    head = [m for m in map(HEADER.match, lines) if m]
    assert len(head) == 1, text
    kind, step, preemptions = head[0].group(1), int(head[0].group(2)), int(head[0].group(3))
    assert (kind, step, preemptions) == (out.kind, out.step, out.preemptions)
    # A traced counterexample has one row per step, the last one the failure's.
    start = lines.index(head[0].string) + 2
    rows = [int(m.group(1)) for m in map(ROW.match, lines[start:]) if m]
    if out.trace:
        assert rows == list(range(1, step + 1)), (step, rows[-3:])
        marks = sum((s.preempted is not None) + len(s.also_preempted) for s in out.trace)
        assert marks == preemptions, (marks, preemptions)
        assert text.count("<== preempts") == preemptions
    else:
        assert rows == [] and "(no trace" in head[0].string, head[0].string
    verdict = [m for m in map(VERDICT.match, lines) if m]
    assert len(verdict) == 1, text
    v = verdict[0]
    assert (v.group(1), int(v.group(2))) == (kind, step)
    execution = int(v.group(3))
    assert int(v.group(4)) == report.executions == data["executions"]
    assert 1 <= execution <= report.executions
    assert data["failure_step"] == step and data["failure_kind"] == kind
    assert data["failure_preemptions"] == preemptions
    assert data["first_failure_execution"] == execution
    assert "first_failure_seconds" in data
    minimized = [m for m in map(MINIMIZED.match, lines) if m]
    if minimized:
        assert int(minimized[0].group(1)) == preemptions, text
    if "minimized" in data:
        assert data["minimized"]["preemptions"] == preemptions
    # The oracle's line names no execution of its own (the verdict does).
    assert not re.search(r"\[[^\]]*/controlled seed", text), text
    assert "Traceback" not in text or kind in ("error", "hang"), text
    return text
