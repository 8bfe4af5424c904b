"""The model a failing program ran under, for its report's header.

A program runs under model options: the fast page fault, PML and its
buffer, the dirty ring's geometry, ``INITIALLY_SET``, and the CLEAR
granularity. Some are pinned (by the command line, or by the algorithm's
``model``), the others drawn per execution by the program space, the
model options only for an algorithm that declares them in ``varies``. A
report says which were on, which were drawn and which class declared them,
and the flags that pin them all (:func:`pin_words`); a failure under a
drawn PML whose trace never kicked the vCPUs says that ``get_dirty_log``
never called ``_sync_dirty_log`` (the step an algorithm written for the
seed's model lacks).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..dirtylog import DirtyLogAlgorithm, resolve_algorithm
from ..harness.execution import ExecutionResult, apply_model
from ..harness.scenario import Scenario

__all__ = ["DRAWN_OPTIONS", "declared_by", "drawn_options", "explain", "model_facts",
           "model_lines", "only_under", "pin_words"]

#: The options the program space may draw, in the order a header names them.
DRAWN_OPTIONS = ("fast_page_fault", "pml", "pml_entries", "initially_set", "ring_entries",
                 "ring_soft_limit", "ring_batch")
_NAMES = {"fast_page_fault": "the fast page fault", "pml": "PML",
          "pml_entries": "PML's buffer size", "initially_set": "INITIALLY_SET",
          "ring_entries": "the ring's entries", "ring_soft_limit": "the ring's soft limit",
          "ring_batch": "the reaper's batch"}
#: Options every algorithm gets drawn (not a model option an algorithm opts into).
_ALWAYS = frozenset({"initially_set"})
_RING = frozenset({"ring_entries", "ring_soft_limit", "ring_batch"})


def declared_by(cls: type[DirtyLogAlgorithm]) -> str:
    """The class whose ``varies`` this algorithm inherits (its own name if it
    declares it; "" if none does)."""
    for klass in cls.__mro__:
        if "varies" in vars(klass):
            return klass.__name__
    return ""


def drawn_options(space: Any, cls: type[DirtyLogAlgorithm]) -> list[str]:
    """The options ``space`` (already :meth:`~ProgramSpace.for_algorithm`'s)
    leaves to be drawn for ``cls``, ring geometry only for a ring algorithm."""
    ring = bool((getattr(cls, "model", None) or {}).get("dirty_ring"))
    return [name for name in DRAWN_OPTIONS
            if getattr(space, name, 0) is None and (ring or name not in _RING)]


def pin_words(cls: type[DirtyLogAlgorithm], scenario: Scenario) -> list[str]:
    """The fuzz flags that pin every model option to ``scenario``'s (with
    ``cls``'s ``model`` applied), leaving out those the model itself sets
    (a ``--no-pml`` beside a model that turns PML on is a usage error)."""
    model = getattr(cls, "model", None) or {}
    sc = apply_model(cls, scenario)
    words: list[str] = []

    def flag(name: str, on: bool) -> None:
        dashed = name.replace("_", "-")
        words.append(f"--{dashed}" if on else f"--no-{dashed}")

    if "fast_page_fault" not in model:
        flag("fast_page_fault", sc.fast_page_fault)
    if sc.dirty_ring:
        words += ["--ring-entries", str(sc.ring_entries),
                  "--ring-soft-limit", str(sc.ring_soft_limit
                                           if sc.ring_soft_limit is not None
                                           else sc.ring_entries - 1),
                  "--ring-batch", str(sc.ring_batch)]
    else:
        if "pml" not in model:
            flag("pml", sc.pml)
        if sc.pml and "pml_entries" not in model:
            words += ["--pml-entries", str(sc.pml_entries)]
    flag("initially_set", sc.initially_set)
    words += ["--clear-words", str(sc.clear_words)]
    return words


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _option_text(sc: Scenario) -> str:
    parts = [f"fast page fault {'on' if sc.fast_page_fault else 'off'}"]
    if sc.dirty_ring:
        soft = sc.ring_soft_limit if sc.ring_soft_limit is not None else sc.ring_entries - 1
        parts.append(f"dirty ring of {sc.ring_entries} entries (soft limit {soft}, reaper "
                     f"batch {sc.ring_batch or 'all'})")
    else:
        parts.append(f"PML on ({sc.pml_entries}-entry buffer)" if sc.pml else "PML off")
    parts.append(f"INITIALLY_SET {'on' if sc.initially_set else 'off'}")
    parts.append("CLEAR the whole slot per call" if sc.clear_words == 0
                 else f"CLEAR {sc.clear_words} word{'s' if sc.clear_words != 1 else ''} "
                      f"per call")
    return ", ".join(parts)


def _kicked(result: ExecutionResult) -> bool:
    """Whether the traced execution ever kicked the vCPUs for their PML
    buffers (``kvm_arch_sync_dirty_log``'s switch point on ``pml_kick``)."""
    return any(s.target == "pml_kick" and s.op != "load" for s in result.outcome.trace)


def model_facts(result: ExecutionResult, drawn: Iterable[str] | None) -> dict[str, Any]:
    """What the header says of the model, as data (the JSON's ``model``):
    the options on, the ones drawn and who declared them, the flags that pin
    them all, and the step the algorithm lacks where the harness knows it."""
    cls = resolve_algorithm(result.algorithm_ref)
    sc = apply_model(cls, result.scenario)
    drawn = [d for d in (drawn or ()) if not (d == "pml_entries" and not sc.pml)]
    facts: dict[str, Any] = {
        "options": {name: getattr(sc, name) for name in
                    ("fast_page_fault", "pml", "pml_entries", "initially_set", "clear_words",
                     "dirty_ring", "ring_entries", "ring_soft_limit", "ring_batch")},
        "drawn": drawn, "varies_declared_by": declared_by(cls),
        "pin": pin_words(cls, result.scenario)}
    model = getattr(cls, "model", None) or {}
    if "pml" in drawn and sc.pml and "pml" not in model and result.outcome.trace \
            and not _kicked(result) and result.outcome.kind == "violation":
        facts["lacks"] = ("get_dirty_log never called _sync_dirty_log "
                          "(kvm_arch_sync_dirty_log: kick the vCPUs so their PML buffers "
                          "reach the bitmap before it is read)")
    return facts


def model_lines(facts: dict[str, Any] | None, result: ExecutionResult) -> Sequence[str]:
    """The header's lines for the failing program's model (``facts`` from
    :func:`model_facts`; computed here if the search kept none)."""
    known = facts is not None
    if facts is None:
        facts = model_facts(result, None)
    sc = apply_model(resolve_algorithm(result.algorithm_ref), result.scenario)
    lines = [f"model of the failing program: {_option_text(sc)}"]
    drawn = list(facts["drawn"])
    if not known:
        lines.append(f"these flags pin the model: {' '.join(facts['pin'])}")
    elif drawn:
        who = facts["varies_declared_by"]
        named = ", ".join(_NAMES[d] for d in drawn)
        why = [d for d in drawn if d not in _ALWAYS and d not in _RING]
        reason = (f" ({', '.join(_NAMES[d] for d in why)} because {who} declares `varies`)"
                  if why and who else "")
        lines.append(f"drawn per execution: {named}{reason}; these flags pin the model: "
                     f"{' '.join(facts['pin'])}")
    else:
        lines.append(f"nothing drawn: the model is pinned ({' '.join(facts['pin'])})")
    only = facts.get("only_under")
    if only:
        names = " and ".join(_NAMES[d] for d in only["options"])
        flags = " ".join("--no-" + d.replace("_", "-") for d in only["options"])
        line = (f"only under drawn options: with {names} off, every schedule of the same "
                f"program {_space_text(only)} passes ({only['executions']} executions)")
        if "lacks" in facts:
            line += f"; {result.algorithm}'s {facts['lacks']}"
            lines.append(line + f" (written for the model without {names}? pin {flags})")
        else:  # a bounded fact about this program, not a verdict on the algorithm
            lines.append(line + f" (other programs may fail without it: {flags} searches "
                                f"the model without {names})")
    elif "lacks" in facts:
        lines.append(f"PML was drawn: {result.algorithm}'s {facts['lacks']} (written for "
                     f"the model without PML? pin --no-pml)")
    return lines


def _who(name: str) -> str:
    return name if name.startswith("vcpu") else f"the {name}"


def _space_text(only: dict[str, Any]) -> str:
    """The schedules an ``only_under`` fact covers, in words: at most its
    bound of preemptions, each one of the counterexample's (which thread
    took the CPU from which)."""
    bound = only["bound"]
    if not bound:
        return "with no preemption"
    pairs = only.get("pairs")
    if pairs is None:  # every preemption (a fact kept by an earlier build)
        return f"with at most {_plural(bound, 'preemption')}"
    kinds = " or ".join(f"of {_who(p['preempted'])} by {_who(p['thread'])}" for p in pairs)
    each = "" if bound == 1 else "each "
    return (f"with at most {_plural(bound, 'preemption')}, {each}{kinds} as in the "
            f"counterexample,")


#: The search for the same program with the drawn options off: the
#: preemption bound at most and its executions (a report's header, not a
#: campaign). Counted in executions, so that whether the header claims
#: "only under drawn options" is the same on every machine for a seed; the
#: seconds are a safety net no machine reaches. Since 2026-12-03 (session
#: 7) only the counterexample's own kinds of preemption are tried (see
#: :func:`only_under`): the default `fuzz --algorithm nonatomic-clear`'s
#: program took 468 executions with every preemption, 35 with the
#: counterexample's.
ONLY_UNDER_BOUND = 2
ONLY_UNDER_EXECUTIONS = 500
#: ...and in switch points, so that a wide program (executions near
#: ``--max-steps``) costs no more than a small one (about 1-2 s here).
ONLY_UNDER_STEPS = 200_000
ONLY_UNDER_SECONDS = 60.0


class _PairsDfs:
    """Depth-first search over a program's schedules with at most ``bound``
    preemptions, each one of ``pairs`` (preempted thread, thread that takes
    the CPU): where the running thread can go on, the options are to keep
    it or, while the bound allows, to switch to a thread it may be
    preempted by; where it cannot, every runnable thread (a free choice, as
    in :class:`~concurrent_dirty.schedulers.DfsScheduler`). Exhausted: every
    such schedule was run."""

    def __init__(self, bound: int, pairs: frozenset[tuple[int, int]]) -> None:
        self.bound = bound
        self.pairs = pairs
        self.exhausted = False
        self._stack: list[list[Any]] = []  # [options, index taken, runnable seen]
        self._pos = 0
        self._preemptions = 0
        self._started = False

    def new_execution(self) -> bool:
        if self._started:
            while self._stack and self._stack[-1][1] + 1 >= len(self._stack[-1][0]):
                self._stack.pop()
            if not self._stack:
                self.exhausted = True
                return False
            self._stack[-1][1] += 1
        self._started = True
        self._pos = self._preemptions = 0
        return True

    def next_thread(self, runnable: Sequence[int], current: int | None) -> int:
        if self._pos < len(self._stack):
            node = self._stack[self._pos]
            if node[2] != list(runnable):
                from ..errors import UsageError
                raise UsageError(f"dfs replay diverged at decision {self._pos}: expected "
                                 f"runnable threads {node[2]}, got {list(runnable)}; the code "
                                 f"under test is not deterministic under a fixed schedule")
        else:
            if current is not None and current in runnable:
                options = [current]
                if self._preemptions < self.bound:
                    options += [t for t in runnable if (current, t) in self.pairs]
            else:
                options = list(runnable)
            node = [options, 0, list(runnable)]
            self._stack.append(node)
        choice: int = node[0][node[1]]
        if current is not None and choice != current:
            self._preemptions += 1
        self._pos += 1
        return choice


def _preemption_pairs(result: ExecutionResult,
                      max_steps: int) -> frozenset[tuple[int, int]]:
    """The counterexample's preemptions as (preempted, preempting) thread
    ids, read from its trace (replayed with the trace on if it has none)."""
    trace = result.outcome.trace
    if not trace and result.outcome.preemptions:
        from ..engines.controlled import run_controlled
        from ..schedulers import ReplayScheduler
        from .replay import _fresh

        trace = run_controlled(result.algorithm_ref, result.scenario, result.program,
                               _fresh(ReplayScheduler(result.outcome.schedule)), trace=True,
                               max_steps=max_steps).outcome.trace
    pairs = {(s.preempted, s.thread) for s in trace if s.preempted is not None}
    pairs |= {(p, s.thread) for s in trace for p in s.also_preempted}
    return frozenset(pairs)


def only_under(result: ExecutionResult, options: Sequence[str], *, max_steps: int,
               seconds: float = ONLY_UNDER_SECONDS) -> dict[str, Any] | None:
    """Whether the failure needs ``options``: every schedule of the failing
    program with them off, with up to the counterexample's preemptions (at
    most :data:`ONLY_UNDER_BOUND`), each one of the kinds the counterexample
    has (the same thread taking the CPU from the same thread, anywhere),
    explored within the budget. That is the question: does the race the
    counterexample shows need the options? A preemption of another kind
    would be another race, which the search itself looks for. (Every
    preemption, as until 2026-12-03, took 468 executions on the default
    ``fuzz --algorithm nonatomic-clear``'s program, about half its wall
    time; its kinds take 35.) The bound, the kinds (``pairs``, by thread
    name) and the executions if that space was exhausted with no failure;
    None if a schedule failed (it does not need them) or the budget ran out
    first (nothing is claimed)."""
    import time
    from dataclasses import replace

    from ..engines.controlled import run_controlled
    from ..schedulers import Budget

    off: dict[str, Any] = {o: False for o in options}
    scenario = replace(result.scenario, **off)
    bound = min(result.outcome.preemptions, ONLY_UNDER_BOUND)
    pairs = _preemption_pairs(result, max_steps) if bound else frozenset()
    if bound and not pairs:
        return None  # its preemptions not known (no trace): nothing to claim
    dfs = _PairsDfs(bound, pairs)
    budget = Budget(dfs, executions=ONLY_UNDER_EXECUTIONS)
    deadline = time.monotonic() + seconds
    tried = steps = 0
    while time.monotonic() < deadline and steps < ONLY_UNDER_STEPS and budget.new_execution():
        tried += 1
        run = run_controlled(result.algorithm_ref, scenario, result.program, budget,
                             max_steps=max_steps)
        if run.failed:
            return None
        steps += run.outcome.steps
    if not dfs.exhausted:
        return None
    names = result.names
    return {"options": list(options), "bound": bound, "executions": tried,
            "pairs": [{"preempted": names[a], "thread": names[b]} for a, b in sorted(pairs)]}


def explain(report: Any, drawn: Iterable[str], *, max_steps: int) -> None:
    """Keep the failing program's model in ``report.extra["model"]`` (the
    header's lines and the JSON's ``model``), with whether the failure
    appears only under the options drawn on for it."""
    failure = report.failure
    if failure is None or failure.outcome.kind in ("hang", "error"):
        return
    facts = model_facts(failure, drawn)
    cls = resolve_algorithm(failure.algorithm_ref)
    model = getattr(cls, "model", None) or {}
    on = [d for d in facts["drawn"] if d in ("fast_page_fault", "pml", "initially_set")
          and facts["options"].get(d) and d not in model]
    if on:
        only = only_under(failure, on, max_steps=max_steps)
        if only is not None:
            facts["only_under"] = only
    report.extra["model"] = facts
