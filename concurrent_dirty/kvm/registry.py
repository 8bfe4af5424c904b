"""Kernel protocols and their mutants by name, and what a name that is
neither gets told."""

from __future__ import annotations

import difflib

from ..errors import AlgorithmError
from .mutants import KERNEL_MUTANTS
from .protocols import PROTOCOLS, KernelProtocol

__all__ = ["KERNEL_NAMES", "is_kernel_protocol", "resolve_protocol"]

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
