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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def verdict_line(out: Outcome, *, whole: bool | None = None) -> str:
    """The outcome's last line, ``kind: message`` (the message's first line
    unless ``whole``; an error's traceback and a hang's stack by default),
    its kind said once even where the message starts with it."""
    if whole is None:
        whole = out.kind in ("error", "hang")
    message = out.message if whole else (out.message.splitlines()[0] if out.message else "")
    prefix = f"{out.kind}: "
    if message.startswith(prefix):
        message = message[len(prefix):]
    return f"{prefix}{message}".rstrip()


def trace_header(result: Traced) -> str:
    """The counterexample's first line, from the outcome alone: its step
    (the trace's last row, when there is a trace) and its preemptions."""
    out = result.outcome
    head = (f"counterexample: {result.algorithm}, threads {', '.join(result.names)}; "
            f"{out.kind} at step {out.step} with {_plural(out.preemptions, 'preemption')}")
    if not out.trace and out.step:
        head += " (no trace: " + ("a hang is not run again; its stack is below)"
                                  if out.kind == "hang" else "not traced)")
    return head


def format_trace(result: Traced) -> str:
    """The counterexample: :func:`trace_header`, one row per step (the
    preemptions marked; a failure at step N has N rows, the last ones the
    switch points the threads had reached when it ended), and
    :func:`verdict_line` (an error's or a hang's whole message)."""
    out = result.outcome
    names = result.names
    lines = [trace_header(result),
             f"{'step':>5}  {'thread':<10} {'operation':<20} {'word':<22} before -> after"]
    for s in out.trace:
        change = f"{_value(s.target, s.before)} -> {_value(s.target, s.after)}"
        word = f"{s.target}[{s.word}]"
        if s.before is None and s.after is None:
            change = ""
            word = s.target if s.target != "srcu" else f"srcu reader {s.word}"
        elif s.target == "mmu_lock":
            word = s.target
        if s.pending:
            change = "(reached, not run: the execution ended here)"
        took = [*s.also_preempted, *([] if s.preempted is None else [s.preempted])]
        mark = "".join(f"   <== preempts {names[t]}" for t in took)
        lines.append(f"{s.index:>5}  {names[s.thread]:<10} {s.op:<20} {word:<22} {change}{mark}")
    lines.append(verdict_line(out, whole=out.kind in ("error", "hang", "misuse")))
    return "\n".join(lines)
