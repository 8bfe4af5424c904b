"""concurrent-dirty: races KVM-style dirty-page logging with real threads and
processes on shared memory, and proves that no dirty bit is lost.

The public surface is re-exported here; everything in a module whose name
starts with ``_`` is private.

Names are resolved lazily (PEP 562): ``import concurrent_dirty`` costs
almost nothing, and each name imports its module on first use, so the CLI's
``--help`` and ``replay`` load only what they need.
"""

import os as _os
import signal as _signal
import sys as _sys


def _startup_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM while ``python -m concurrent_dirty`` starts (before
    its ``__main__`` runs): the interrupt line and exit 130, no traceback."""
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # a second one changes nothing
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
    _sys.stderr.write("\ninterrupted: stopped before anything was reported\n")
    _sys.stderr.flush()
    _os._exit(130)


def _end_startup() -> None:
    """``__main__`` runs: Ctrl-C and SIGTERM raise KeyboardInterrupt again."""
    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig, handler in ((_signal.SIGINT, _signal.default_int_handler),
                         (_signal.SIGTERM, _raise)):
        if _signal.getsignal(sig) is _startup_interrupt:
            _signal.signal(sig, handler)


_argv = getattr(_sys, "orig_argv", [])
_script = (getattr(_sys, "argv", None) or [""])[0]
if ("-m" in _argv[:-1] and _argv[_argv.index("-m") + 1] == "concurrent_dirty") or \
        _script.replace("\\", "/").rsplit("/", 1)[-1] == "concurrent-dirty":
    # python -m concurrent_dirty, or the installed concurrent-dirty script
    # (its import of cli.main comes first; main() ends the guard).
    # The command line starts: guard the moments before __main__ (a signal
    # ignored from the start stays ignored: a background job's Ctrl-C).
    for _sig, _expected in ((_signal.SIGINT, _signal.default_int_handler),
                            (_signal.SIGTERM, _signal.SIG_DFL)):
        if _signal.getsignal(_sig) is _expected:
            _signal.signal(_sig, _startup_interrupt)

import importlib as _importlib  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402
from typing import Any as _Any  # noqa: E402

__version__ = "0.1.0"

#: Public name -> the module (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    "Outcome": "._core.runtime",
    "Verdict": "._core.runtime",
    "cpu_relax": "._core.switch",
    "ALL_MODEL_OPTIONS": ".dirtylog",
    "BUILTIN_ALGORITHMS": ".dirtylog",
    "DirtyLogAlgorithm": ".dirtylog",
    "DirtyRingLog": ".dirtylog",
    "FastPfXchgDirtyLog": ".dirtylog",
    "ManualDirtyLog": ".dirtylog",
    "MarkContext": ".dirtylog",
    "PATH_ALGORITHMS": ".dirtylog",
    "PmlXchgDirtyLog": ".dirtylog",
    "SEAMS": ".dirtylog",
    "SrcuDirtyLog": ".dirtylog",
    "XchgDirtyLog": ".dirtylog",
    "check_clear_range": ".dirtylog",
    "for_each_set_bit": ".dirtylog",
    "resolve_algorithm": ".dirtylog",
    "run_controlled": ".engines.controlled",
    "CellResult": ".engines.free",
    "Progress": ".engines.free",
    "run_cell": ".engines.free",
    "AlgorithmError": ".errors",
    "AlgorithmMisuse": ".errors",
    "CodeUnderTestError": ".errors",
    "ConcurrentDirtyError": ".errors",
    "DeadlockError": ".errors",
    "ExecutionFailed": ".errors",
    "HangError": ".errors",
    "InternalError": ".errors",
    "InvariantViolation": ".errors",
    "StepBoundExceeded": ".errors",
    "UsageError": ".errors",
    "WorkerDied": ".errors",
    "ExecutionResult": ".harness.execution",
    "Migration": ".harness.oracle",
    "Violation": ".harness.oracle",
    "Program": ".harness.program",
    "make_program": ".harness.program",
    "Scenario": ".harness.scenario",
    "AtomicWords": ".model.atomic",
    "Kvm": ".model.kvm",
    "DIRTY": ".model.kvm",
    "MMU_WRITABLE": ".model.kvm",
    "RING_DIRTY": ".model.kvm",
    "RING_HARVESTED": ".model.kvm",
    "SPTE_MASK": ".model.kvm",
    "WRITABLE": ".model.kvm",
    "page_value": ".model.kvm",
    "page_version": ".model.kvm",
    "page_writer": ".model.kvm",
    "Memslot": ".model.memslot",
    "MemslotFlags": ".model.memslot",
    "MemslotTable": ".model.memslot",
    "HARVESTER": ".model.sync",
    "Lock": ".model.sync",
    "MmuLock": ".model.sync",
    "Srcu": ".model.sync",
    "MUTANTS": ".mutants",
    "Mutant": ".mutants",
    "register_mutant": ".mutants",
    "resolve_mutant": ".mutants",
    "Budget": ".schedulers",
    "ChoiceScheduler": ".schedulers",
    "DfsScheduler": ".schedulers",
    "Metrics": ".schedulers",
    "PctScheduler": ".schedulers",
    "RandomScheduler": ".schedulers",
    "ReplayScheduler": ".schedulers",
    "SCHEDULERS": ".schedulers",
    "Scheduler": ".schedulers",
    "make_scheduler": ".schedulers",
    "Interleaving": ".search.hypothesis",
    "interleavings": ".search.hypothesis",
    "minimize_preemptions": ".search.minimize",
    "FuzzReport": ".search.report",
    "Runner": ".search.runner",
    "check_dfs": ".search.runner",
    "check_pct": ".search.runner",
    "check_random": ".search.runner",
    "explore": ".search.runner",
    "regression_test": ".search.replay",
    "replay": ".search.replay",
    "ZooReport": ".search.zoo",
    "run_zoo": ".search.zoo",
}

__all__ = [
    "SCHEDULERS",
    "AlgorithmMisuse",
    "Budget",
    "CodeUnderTestError",
    "ExecutionFailed",
    "HangError",
    "InternalError",
    "Lock",
    "Outcome",
    "Runner",
    "StepBoundExceeded",
    "Verdict",
    "check_dfs",
    "check_pct",
    "check_random",
    "cpu_relax",
    "make_program",
    "make_scheduler",
    "MUTANTS",
    "Mutant",
    "ZooReport",
    "register_mutant",
    "resolve_mutant",
    "run_zoo",
    "ChoiceScheduler",
    "DfsScheduler",
    "ExecutionResult",
    "FuzzReport",
    "Interleaving",
    "Metrics",
    "PctScheduler",
    "Program",
    "RandomScheduler",
    "ReplayScheduler",
    "Scheduler",
    "explore",
    "interleavings",
    "minimize_preemptions",
    "regression_test",
    "replay",
    "run_controlled",
    "ALL_MODEL_OPTIONS",
    "BUILTIN_ALGORITHMS",
    "HARVESTER",
    "WRITABLE",
    "AlgorithmError",
    "AtomicWords",
    "CellResult",
    "ConcurrentDirtyError",
    "DeadlockError",
    "DirtyLogAlgorithm",
    "InvariantViolation",
    "Kvm",
    "ManualDirtyLog",
    "Memslot",
    "MemslotFlags",
    "MemslotTable",
    "Migration",
    "MmuLock",
    "Progress",
    "Scenario",
    "Srcu",
    "SrcuDirtyLog",
    "UsageError",
    "Violation",
    "WorkerDied",
    "XchgDirtyLog",
    "check_clear_range",
    "for_each_set_bit",
    "page_value",
    "page_version",
    "page_writer",
    "resolve_algorithm",
    "run_cell",
    # The paths after 2012: their algorithms (to subclass for a variant),
    # what a mark is told, the SPTE bits and the ring entries' flags.
    "DIRTY",
    "MMU_WRITABLE",
    "PATH_ALGORITHMS",
    "RING_DIRTY",
    "RING_HARVESTED",
    "SEAMS",
    "SPTE_MASK",
    "DirtyRingLog",
    "FastPfXchgDirtyLog",
    "MarkContext",
    "PmlXchgDirtyLog",
]


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # next time, no __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if _TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from ._core.runtime import Outcome, Verdict
    from ._core.switch import cpu_relax
    from .dirtylog import (
        ALL_MODEL_OPTIONS,
        BUILTIN_ALGORITHMS,
        PATH_ALGORITHMS,
        SEAMS,
        DirtyLogAlgorithm,
        DirtyRingLog,
        FastPfXchgDirtyLog,
        ManualDirtyLog,
        MarkContext,
        PmlXchgDirtyLog,
        SrcuDirtyLog,
        XchgDirtyLog,
        check_clear_range,
        for_each_set_bit,
        resolve_algorithm,
    )
    from .engines.controlled import run_controlled
    from .engines.free import CellResult, Progress, run_cell
    from .errors import (
        AlgorithmError,
        AlgorithmMisuse,
        ConcurrentDirtyError,
        DeadlockError,
        ExecutionFailed,
        HangError,
        InternalError,
        InvariantViolation,
        StepBoundExceeded,
        UsageError,
        WorkerDied,
    )
    from .harness.execution import ExecutionResult
    from .harness.oracle import Migration, Violation
    from .harness.program import Program, make_program
    from .harness.scenario import Scenario
    from .model.atomic import AtomicWords
    from .model.kvm import (
        DIRTY,
        MMU_WRITABLE,
        RING_DIRTY,
        RING_HARVESTED,
        SPTE_MASK,
        WRITABLE,
        Kvm,
        page_value,
        page_version,
        page_writer,
    )
    from .model.memslot import Memslot, MemslotFlags, MemslotTable
    from .model.sync import HARVESTER, Lock, MmuLock, Srcu
    from .mutants import MUTANTS, Mutant, register_mutant, resolve_mutant
    from .schedulers import (
        SCHEDULERS,
        Budget,
        ChoiceScheduler,
        DfsScheduler,
        Metrics,
        PctScheduler,
        RandomScheduler,
        ReplayScheduler,
        Scheduler,
        make_scheduler,
    )
    from .search.hypothesis import Interleaving, interleavings
    from .search.minimize import minimize_preemptions
    from .search.replay import regression_test, replay
    from .search.report import FuzzReport
    from .search.runner import (
        Runner,
        check_dfs,
        check_pct,
        check_random,
        explore,
    )
    from .search.zoo import ZooReport, run_zoo
