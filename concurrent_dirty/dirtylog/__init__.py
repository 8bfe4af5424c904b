"""The dirty-log algorithms, and how a name or an import path finds one.

Built in, oldest first: ``srcu`` (b050b015abbe, 2009), ``xchg``
(60c34612b707, 2012, the seed) and ``manual`` (2a31b9db1535, 2018). The
paths after 2012 add algorithms written for a model option, found by name
but not run by default (``PATH_ALGORITHMS``): ``xchg-fast-pf``
(c7ba5b48cc8d, the fast page fault), ``xchg-pml`` (hardware Dirty
bits and PML, ba3a6120a4e7) and ``ring`` (the dirty ring with its bitmap
and QEMU's reaper). A user's
algorithm is named ``package.module:ClassName`` and must implement the
:class:`DirtyLogAlgorithm` protocol.

Layer 3. May import: errors, ``_core``, ``model``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping

from ..errors import AlgorithmError
from ._context import MarkContext
from ._protocol import (
    ALL_MODEL_OPTIONS,
    DirtyLogAlgorithm,
    check_clear_range,
    fast_page_fault,
    for_each_set_bit,
)
from .fastpf import FastPfXchgDirtyLog
from .manual import ManualDirtyLog
from .pml import PmlXchgDirtyLog
from .ring import DirtyRingLog
from .srcu import SrcuDirtyLog
from .xchg import XchgDirtyLog

__all__ = [
    "ALGORITHMS",
    "ALL_MODEL_OPTIONS",
    "BUILTIN_ALGORITHMS",
    "FastPfXchgDirtyLog",
    "DirtyLogAlgorithm",
    "DirtyRingLog",
    "ManualDirtyLog",
    "PATH_ALGORITHMS",
    "PmlXchgDirtyLog",
    "MarkContext",
    "SEAMS",
    "SrcuDirtyLog",
    "XchgDirtyLog",
    "algorithm_name",
    "algorithm_ref",
    "check_clear_range",
    "fast_page_fault",
    "for_each_set_bit",
    "resolve_algorithm",
]

BUILTIN_ALGORITHMS: dict[str, type[DirtyLogAlgorithm]] = {
    cls.name: cls for cls in (SrcuDirtyLog, XchgDirtyLog, ManualDirtyLog)
}
#: Algorithms written for a model option of the paths after 2012 (their
#: ``model`` turns it on); found by name, not run by default.
PATH_ALGORITHMS: dict[str, type[DirtyLogAlgorithm]] = {
    cls.name: cls for cls in (FastPfXchgDirtyLog, PmlXchgDirtyLog, DirtyRingLog)
}
#: Every algorithm a name finds.
ALGORITHMS: dict[str, type[DirtyLogAlgorithm]] = {**BUILTIN_ALGORITHMS, **PATH_ALGORITHMS}

#: The steps a variant (a mutant, a user's fix) may override, by the class
#: that defines them. The underscored ones are as stable as the public
#: names: a release that renames one says so in the README's "Bring your
#: own algorithm", which lists them all (a test checks both).
SEAMS: dict[type[DirtyLogAlgorithm], tuple[str, ...]] = {
    DirtyLogAlgorithm: ("read_side", "fast_page_fault", "pml_entries_to_mark",
                        "enable_dirty_logging", "_sync_dirty_log", "_slot_of"),
    XchgDirtyLog: ("_take_word", "_write_protect_word", "_flush"),
    ManualDirtyLog: ("_clear_word",),
    SrcuDirtyLog: ("_grace_period",),
    FastPfXchgDirtyLog: ("_write_protect",),
    PmlXchgDirtyLog: ("_clear_dirty",),
    DirtyRingLog: ("_push", "_mark_no_vcpu", "ring_soft_full", "_reaper", "_reap_locked",
                   "_collect", "_read_entry", "_collected", "_ring_collected",
                   "_pass_collected", "_reset", "_recyclable", "_reprotect", "_sync",
                   "_sync_reap"),
}

_REQUIRED = ("mark_page_dirty", "get_dirty_log")


def _check_protocol(cls: object, spec: str) -> type[DirtyLogAlgorithm]:
    if not isinstance(cls, type):
        raise AlgorithmError(f"expected a class implementing DirtyLogAlgorithm for {spec!r}, "
                             f"got {type(cls).__name__}")
    missing = [m for m in _REQUIRED if not callable(getattr(cls, m, None))
               or getattr(cls, m) is getattr(DirtyLogAlgorithm, m)]
    if getattr(cls, "manual_protect", False) and (
            not callable(getattr(cls, "clear_dirty_log", None))
            or getattr(cls, "clear_dirty_log") is DirtyLogAlgorithm.clear_dirty_log):  # noqa: B009
        missing.append("clear_dirty_log (manual_protect is set)")
    model = getattr(cls, "model", None)
    if isinstance(model, Mapping) and model.get("dirty_ring") \
            and not callable(getattr(cls, "reap", None)):
        missing.append("reap (model turns the dirty ring on)")
    if not issubclass(cls, DirtyLogAlgorithm):
        for attr in ("shared_words", "enable_dirty_logging", "read_side"):
            if not callable(getattr(cls, attr, None)):
                missing.append(attr)
    if missing:
        raise AlgorithmError(f"expected {spec!r} to implement the DirtyLogAlgorithm protocol, "
                             f"got a class missing {', '.join(missing)}")
    return cls


def resolve_algorithm(spec: str) -> type[DirtyLogAlgorithm]:
    """A built-in name (``xchg``) or ``module:Class``; a clear
    :class:`AlgorithmError` for anything else."""
    if not isinstance(spec, str) or not spec:
        raise AlgorithmError(f"expected an algorithm name or module:Class, got {spec!r}")
    if ":" not in spec:
        try:
            return ALGORITHMS[spec]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(spec, ALGORITHMS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if spec.startswith("kvm-"):  # the kvm engine's names (concurrent_dirty.kvm)
                hint = (" (the kernel protocols and their kvm-* mutants run on the real "
                        "kernel: concurrent-dirty stress --engine kvm)")
            raise AlgorithmError(
                f"expected an algorithm in {sorted(ALGORITHMS)} or module:Class, "
                f"got {spec!r}{hint}") from None
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        raise AlgorithmError(f"expected module:Class for an algorithm, got {spec!r}")
    # Like gunicorn and uvicorn, resolve user modules from the current
    # directory too (a console script's sys.path does not hold it).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own error
        raise AlgorithmError(f"expected an importable module for algorithm {spec!r}, "
                             f"got {type(exc).__name__}: {exc}") from None
    obj: object = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AlgorithmError(f"expected {module_name} to define {qualname} for algorithm "
                                 f"{spec!r}, got no attribute {part!r}") from None
    return _check_protocol(obj, spec)


def algorithm_ref(cls: type[DirtyLogAlgorithm]) -> str:
    """What :func:`resolve_algorithm` turns back into ``cls`` in another
    process: the built-in name, else ``module:qualname``."""
    if ALGORITHMS.get(getattr(cls, "name", "")) is cls:
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def algorithm_name(cls: type[DirtyLogAlgorithm]) -> str:
    """The label in reports: the class's ``name``, else its reference."""
    return getattr(cls, "name", "") or algorithm_ref(cls)
