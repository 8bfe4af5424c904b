"""The counterexample as a person reads it: one line per step, with the
word touched, its value before and after, and the preemptions marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._core.runtime import Outcome
from ..model.kvm import DIRTY, MMU_WRITABLE, WRITABLE, page_value, page_version, page_writer


class Traced(Protocol):
    """What a trace needs of an execution (an
    :class:`~concurrent_dirty.ExecutionResult` is one; a protocol, so that
    this module does not import the execution that imports it)."""

    @property
    def algorithm(self) -> str: ...

    @property
    def names(self) -> Sequence[str]: ...

    @property
    def outcome(self) -> Outcome: ...


def _value(target: str, value: int | None) -> str:
    if value is None:
        return "-"
    if target == "pages":
        v = page_value(value)
        if v == 0:
            text = "never written"
        else:
            text = f"write #{page_version(v)} by vcpu {page_writer(v)}"
        text += ", writable" if value & WRITABLE else ", protected"
        if value & MMU_WRITABLE:
            text += ", mmu-writable"
        return text + (", dirty" if value & DIRTY else "")
    if target == "mmu_lock":
        return "free" if value == 0 else f"held({value - 1})"
    return hex(value)


def format_trace(result: Traced) -> str:
    out = result.outcome
    names = result.names
    preemptions = sum(1 for s in out.trace if s.preempted is not None)
    head = (f"counterexample: {result.algorithm}, threads {', '.join(names)}; {out.kind} "
            f"after {len(out.trace)} operations and {preemptions} preemption"
            f"{'' if preemptions == 1 else 's'}")
    lines = [head, f"{'step':>5}  {'thread':<10} {'operation':<20} {'word':<22} before -> after"]
    for s in out.trace:
        change = f"{_value(s.target, s.before)} -> {_value(s.target, s.after)}"
        word = f"{s.target}[{s.word}]"
        if s.before is None and s.after is None:
            change = ""
            word = s.target if s.target != "srcu" else f"srcu reader {s.word}"
        elif s.target == "mmu_lock":
            word = s.target
        mark = f"   <== preempts {names[s.preempted]}" if s.preempted is not None else ""
        lines.append(f"{s.index:>5}  {names[s.thread]:<10} {s.op:<20} {word:<22} {change}{mark}")
    # An error or a hang carries a traceback or a stack: show all of it.
    whole = out.kind in ("error", "hang")
    first = out.message.splitlines()[0] if out.message else ""
    lines.append(f"{out.kind}: {out.message if whole else first}")
    return "\n".join(lines)
