"""concurrent-dirty: races KVM-style dirty-page logging with real threads and
processes on shared memory, and proves that no dirty bit is lost.

The public surface is re-exported here; everything in a module whose name
starts with ``_`` is private.
"""

from ._core.runtime import Outcome, Verdict
from ._core.switch import cpu_relax
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
from .model.kvm import WRITABLE, Kvm, page_value, page_version, page_writer
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
from .search.hypothesis import Interleaving, interleavings, minimize_preemptions
from .search.runner import (
    FuzzReport,
    Runner,
    check_dfs,
    check_pct,
    check_random,
    explore,
    regression_test,
    replay,
)
from .search.zoo import ZooReport, run_zoo

__version__ = "0.1.0"

__all__ = [
    "SCHEDULERS",
    "AlgorithmMisuse",
    "Budget",
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
