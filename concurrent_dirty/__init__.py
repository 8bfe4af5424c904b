"""concurrent-dirty: races KVM-style dirty-page logging with real threads and
processes on shared memory, and proves that no dirty bit is lost.

The public surface is re-exported here; everything in a module whose name
starts with ``_`` is private.

Names are resolved lazily (PEP 562): ``import concurrent_dirty`` costs
almost nothing, and each name imports its module on first use, so the CLI's
``--help`` and ``replay`` load only what they need.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

__version__ = "0.1.0"

#: Public name -> the module (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    # ._atomic
    "AtomicWords": "._atomic",
    # ._sync
    "HARVESTER": "._sync",
    "MmuLock": "._sync",
    "Srcu": "._sync",
    # .controlled
    "ExecutionResult": ".controlled",
    "Program": ".controlled",
    "run_controlled": ".controlled",
    # .dirtylog
    "BUILTIN_ALGORITHMS": ".dirtylog",
    "DirtyLogAlgorithm": ".dirtylog",
    "ManualDirtyLog": ".dirtylog",
    "SrcuDirtyLog": ".dirtylog",
    "XchgDirtyLog": ".dirtylog",
    "check_clear_range": ".dirtylog",
    "for_each_set_bit": ".dirtylog",
    "resolve_algorithm": ".dirtylog",
    # .errors
    "AlgorithmError": ".errors",
    "ConcurrentDirtyError": ".errors",
    "DeadlockError": ".errors",
    "InvariantViolation": ".errors",
    "UsageError": ".errors",
    "WorkerDied": ".errors",
    # .fuzz
    "FuzzReport": ".fuzz",
    "Interleaving": ".fuzz",
    "explore": ".fuzz",
    "interleavings": ".fuzz",
    "minimize_preemptions": ".fuzz",
    "regression_test": ".fuzz",
    "replay": ".fuzz",
    # .kvm
    "WRITABLE": ".kvm",
    "Kvm": ".kvm",
    "page_value": ".kvm",
    "page_version": ".kvm",
    "page_writer": ".kvm",
    # .memslot
    "Memslot": ".memslot",
    "MemslotFlags": ".memslot",
    "MemslotTable": ".memslot",
    # .mutants
    "MUTANTS": ".mutants",
    "Mutant": ".mutants",
    "register_mutant": ".mutants",
    "resolve_mutant": ".mutants",
    # .oracle
    "Migration": ".oracle",
    "Violation": ".oracle",
    # .scenario
    "Scenario": ".scenario",
    # .scheduler
    "ChoiceScheduler": ".scheduler",
    "DfsScheduler": ".scheduler",
    "Metrics": ".scheduler",
    "PctScheduler": ".scheduler",
    "RandomScheduler": ".scheduler",
    "ReplayScheduler": ".scheduler",
    "Scheduler": ".scheduler",
    # .stress
    "CellResult": ".stress",
    "Progress": ".stress",
    "run_cell": ".stress",
    # .zoo
    "ZooReport": ".zoo",
    "run_zoo": ".zoo",
}

__all__ = [
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
    from ._atomic import AtomicWords
    from ._sync import HARVESTER, MmuLock, Srcu
    from .controlled import ExecutionResult, Program, run_controlled
    from .dirtylog import (
        BUILTIN_ALGORITHMS,
        DirtyLogAlgorithm,
        ManualDirtyLog,
        SrcuDirtyLog,
        XchgDirtyLog,
        check_clear_range,
        for_each_set_bit,
        resolve_algorithm,
    )
    from .errors import (
        AlgorithmError,
        ConcurrentDirtyError,
        DeadlockError,
        InvariantViolation,
        UsageError,
        WorkerDied,
    )
    from .fuzz import (
        FuzzReport,
        Interleaving,
        explore,
        interleavings,
        minimize_preemptions,
        regression_test,
        replay,
    )
    from .kvm import WRITABLE, Kvm, page_value, page_version, page_writer
    from .memslot import Memslot, MemslotFlags, MemslotTable
    from .mutants import MUTANTS, Mutant, register_mutant, resolve_mutant
    from .oracle import Migration, Violation
    from .scenario import Scenario
    from .scheduler import (
        ChoiceScheduler,
        DfsScheduler,
        Metrics,
        PctScheduler,
        RandomScheduler,
        ReplayScheduler,
        Scheduler,
    )
    from .stress import CellResult, Progress, run_cell
    from .zoo import ZooReport, run_zoo
