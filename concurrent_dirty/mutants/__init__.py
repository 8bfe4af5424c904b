"""The bug zoo: every known class of dirty-logging race as a named mutant.

A :class:`Mutant` is a small variant of a correct algorithm, with the name
of the algorithm it breaks and a docstring that explains the interleaving
that loses data. Benign look-alikes are variants that look suspicious but
are correct: the harness must never report them. Register your own with
:func:`register_mutant` (or name a class ``module:Class`` on the command
line); ``concurrent-dirty mutants`` runs them all under every engine.

Layer 3 (beside ``dirtylog``, whose algorithms it varies). May import:
errors, ``_core``, ``model``, ``dirtylog``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..dirtylog import (
    ALGORITHMS,
    BUILTIN_ALGORITHMS,
    DirtyLogAlgorithm,
    algorithm_ref,
    resolve_algorithm,
)
from ..errors import AlgorithmError
from .context import ContextCheckingMark, LockTrustingMark
from .fastpf import (
    FastPfAlwaysFlush,
    FastPfFlushFromRead,
    FastPfMarkAfterFailedFix,
    FastPfMarkBeforeFix,
    FastPfPlainWriteProtect,
)
from .manual import (
    ManualBitwiseClear,
    ManualClearUnsynced,
    ManualNonatomicAndnot,
    ManualStuckBit,
)
from .pml import (
    PmlAtomicAndClear,
    PmlFullDropsLast,
    PmlNoDrain,
    PmlPlainClearDirty,
    PmlSmallBuffers,
)
from .ring import (
    RingAllToBitmap,
    RingCopyBeforeReset,
    RingGfnBeforeFlags,
    RingIgnoreSoftLimit,
    RingNoBitmap,
    RingResetEachRing,
    RingResetUnharvested,
)
from .srcu import SrcuNoGracePeriod, SrcuProtectBeforeSwap, SrcuReaderOutsideSection
from .xchg import (
    BitBeforeData,
    FlushAfterCopy,
    NonatomicClear,
    NoTlbFlush,
    SkipWriteProtect,
    XchgFlushAfterUnlock,
    XchgNoZeroSkip,
)

__all__ = ["Mutant", "MUTANTS", "algorithm_spec", "register_mutant", "resolve_mutant"]


@dataclass(frozen=True)
class Mutant:
    name: str
    algorithm: type[DirtyLogAlgorithm]
    breaks: str
    benign: bool = False
    #: Scenario fields this mutant's bug needs (e.g. on-behalf writes).
    scenario: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return algorithm_ref(self.algorithm)

    @property
    def summary(self) -> str:
        """The docstring's first sentence, on one line."""
        doc = " ".join((self.algorithm.__doc__ or "").split("\n\n")[0].split())
        if not doc:
            return self.name
        first = doc.split(". ")[0].split(": ")[0]
        return first if first.endswith(".") else first + "."


MUTANTS: dict[str, Mutant] = {}


def register_mutant(algorithm: type[DirtyLogAlgorithm], *, breaks: str, name: str | None = None,
                    benign: bool = False, scenario: dict[str, Any] | None = None) -> Mutant:
    """Add a mutant (or a benign look-alike) to the zoo and return it.
    ``breaks`` names the correct algorithm it varies (a built-in name or
    ``module:Class``)."""
    _check_breaks(breaks, algorithm.__name__)
    label = name or getattr(algorithm, "name", "") or algorithm.__name__
    mutant = Mutant(label, algorithm, breaks, benign, dict(scenario or {}))
    MUTANTS[label] = mutant
    return mutant


def _check_breaks(breaks: str, who: str) -> None:
    """A one-line usage error unless ``breaks`` names a known algorithm."""
    known = sorted(BUILTIN_ALGORITHMS)
    if not isinstance(breaks, str) or (breaks not in ALGORITHMS and ":" not in breaks):
        import difflib

        close = difflib.get_close_matches(str(breaks), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AlgorithmError(f"expected {who!r} to break a known algorithm, one of {known} or "
                             f"module:Class, got breaks = {breaks!r}{hint}")
    if breaks not in ALGORITHMS:
        try:
            resolve_algorithm(breaks)
        except AlgorithmError as exc:
            raise AlgorithmError(f"expected {who!r} to break a known algorithm, got breaks = "
                                 f"{breaks!r}: {exc}") from None


def algorithm_spec(spec: str) -> str:
    """``spec`` as an algorithm reference: a registered mutant's name (as
    the CLI's ``--algorithm`` takes) becomes its ``module:Class``; anything
    else (a built-in name, ``module:Class``) is returned as it is."""
    if isinstance(spec, str) and ":" not in spec and spec not in ALGORITHMS \
            and spec in MUTANTS:
        return MUTANTS[spec].ref
    return spec


def resolve_mutant(spec: str) -> Mutant:
    """A registered name, or ``module:Class`` whose class says what it
    ``breaks`` (a class attribute) and optionally ``benign = True``."""
    if spec in MUTANTS:
        return MUTANTS[spec]
    if ":" not in spec:
        import difflib

        close = difflib.get_close_matches(spec, MUTANTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AlgorithmError(f"expected a mutant in {sorted(MUTANTS)} or module:Class, got "
                             f"{spec!r}{hint}")
    cls = resolve_algorithm(spec)
    breaks = getattr(cls, "breaks", None)
    if not isinstance(breaks, str):
        raise AlgorithmError(f"expected {spec!r} to name the algorithm it breaks in a class "
                             f"attribute breaks = 'xchg' (or another algorithm), got {breaks!r}")
    _check_breaks(breaks, spec)
    return Mutant(getattr(cls, "name", "") or spec, cls, breaks,
                  bool(getattr(cls, "benign", False)))


# Races between two writers' single writes need no more than one write each
# (smaller executions, found sooner); stale-TLB and write-protect bugs need a
# vCPU to write the same page again, so they keep the default.
_ON_BEHALF = {"on_behalf": 0.5, "writes": 1}
_SAME_PAGE = {"pages": 1, "writes": 3, "on_behalf": 0.5}
for _cls, _breaks, _benign, _scenario in (
    (NonatomicClear, "xchg", False, _ON_BEHALF),
    (SkipWriteProtect, "xchg", False, {}),
    (NoTlbFlush, "xchg", False, {}),
    (FlushAfterCopy, "xchg", False, {}),
    (BitBeforeData, "xchg", False, {"on_behalf": 0.5}),
    (ManualClearUnsynced, "manual", False, {}),
    (ManualNonatomicAndnot, "manual", False, _ON_BEHALF),
    (ManualStuckBit, "manual", False, {}),
    (SrcuNoGracePeriod, "srcu", False, {"writes": 1}),
    (SrcuReaderOutsideSection, "srcu", False, {}),
    (SrcuProtectBeforeSwap, "srcu", False, {}),
    (XchgNoZeroSkip, "xchg", True, {}),
    (XchgFlushAfterUnlock, "xchg", True, {}),
    (ManualBitwiseClear, "manual", True, {}),
    # The paths after 2012 (their algorithms turn their model options on).
    (LockTrustingMark, "xchg", False, _ON_BEHALF),
    (ContextCheckingMark, "xchg", True, {"on_behalf": 0.5}),
    # A stale translation needs a vCPU to write one page again after a
    # second round: one page, three writes each.
    (FastPfPlainWriteProtect, "xchg-fast-pf", False, _SAME_PAGE),
    (FastPfFlushFromRead, "xchg-fast-pf", False, _SAME_PAGE),
    (FastPfMarkBeforeFix, "xchg-fast-pf", False, {}),
    (FastPfMarkAfterFailedFix, "xchg-fast-pf", True, {}),
    (FastPfAlwaysFlush, "xchg-fast-pf", True, {}),
    (PmlPlainClearDirty, "xchg-pml", False, _SAME_PAGE),
    (PmlNoDrain, "xchg-pml", False, {}),
    (PmlFullDropsLast, "xchg-pml", False, {}),
    (PmlAtomicAndClear, "xchg-pml", True, {}),
    (PmlSmallBuffers, "xchg-pml", True, {}),
    (RingGfnBeforeFlags, "ring", False, {}),
    (RingCopyBeforeReset, "ring", False, {}),
    (RingNoBitmap, "ring", False, {"on_behalf": 1.0}),
    # A ring that fills: more pushes than entries, every write one.
    (RingIgnoreSoftLimit, "ring", False, {"ring_entries": 4, "writes": 6, "on_behalf": 1.0}),
    (RingResetUnharvested, "ring", False, {}),
    (RingAllToBitmap, "ring", True, {}),
    (RingResetEachRing, "ring", True, {}),
):
    register_mutant(_cls, breaks=_breaks, benign=_benign, scenario=_scenario)
assert all(m.breaks in ALGORITHMS for m in MUTANTS.values())
