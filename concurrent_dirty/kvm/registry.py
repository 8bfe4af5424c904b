"""Kernel protocols and their mutants by name, and what a name that is
neither gets told."""

from __future__ import annotations

import difflib

from ..errors import AlgorithmError
from .mutants import KERNEL_MUTANTS
from .protocols import PROTOCOLS, KernelProtocol

__all__ = ["KERNEL_NAMES", "PROTOCOLS", "is_kernel_protocol", "kernel_subjects", "resolve_protocol"]

#: Every name the kvm engine runs: the correct protocols, then the mutants.
KERNEL_NAMES: tuple[str, ...] = (*PROTOCOLS, *KERNEL_MUTANTS)


def is_kernel_protocol(name: object) -> bool:
    return isinstance(name, str) and name in KERNEL_NAMES


def resolve_protocol(name: object) -> type[KernelProtocol]:
    """The protocol class of ``name``; a one-line AlgorithmError otherwise
    (a model algorithm, say, which the kvm engine cannot run)."""
    if isinstance(name, type) and issubclass(name, KernelProtocol):
        return name
    if isinstance(name, str):
        cls = PROTOCOLS.get(name) or KERNEL_MUTANTS.get(name)
        if cls is not None:
            return cls
    close = difflib.get_close_matches(str(name), KERNEL_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise AlgorithmError(f"expected a kernel protocol on the kvm engine ({', '.join(PROTOCOLS)} "
                         f"or a kvm-* mutant), got {name!r}{hint} (model algorithms run on "
                         f"threads, processes and the controlled schedulers)")


def breaks(cls: type[KernelProtocol]) -> str:
    """The correct protocol a mutant varies."""
    for protocol in PROTOCOLS.values():
        if protocol is not cls and issubclass(cls, protocol):
            return protocol.name
    return cls.name


def kernel_subjects(names: list[str] | None, *,
                    correct: bool = True) -> list[tuple[str, str, str, str, None]]:
    """The zoo's kvm rows: (subject, reference, role, breaks, hints): every
    kernel mutant (or those named), then the correct protocols."""
    mutants = list(KERNEL_MUTANTS) if names is None else names
    rows: list[tuple[str, str, str, str, None]] = []
    for name in mutants:
        cls = resolve_protocol(name)
        if name in PROTOCOLS:  # a correct protocol named: its row is a baseline
            if not correct:
                rows.append((name, name, "correct", name, None))
            continue
        rows.append((name, name, "mutant", breaks(cls), None))
    if correct:
        rows += [(name, name, "correct", name, None) for name in PROTOCOLS]
    return rows
