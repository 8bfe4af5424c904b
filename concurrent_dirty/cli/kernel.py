"""The kvm engine on the command line: its own options, which algorithm
pairs with which engine, and the probe that turns a machine without KVM
into one line and exit 2.

Pairing: the kernel protocols (``kvm-get``, ``kvm-clear``, ``kvm-ring``) and
their ``kvm-*`` mutants run under ``--engine kvm`` only, the model's
algorithms under the model's engines only. With no ``--algorithm`` each
engine gets its own (the built-ins on threads and processes, every kernel
protocol on kvm); a named algorithm with an engine it cannot run on is a
usage error.

On kvm every dimension of a program is drawn per execution unless its
option is given (``--writers``, ``--slots``, ``--pages``, ``--workload``,
``--writes``, ``--interval``, ``--initially-set``, ``--clear-words``,
``--ring-entries``, ``--guest-delay``, ``--toggles``): a given option pins it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from ..harness.scenario import KVM_GUEST_MODES
from ..kvm.registry import PROTOCOLS, is_kernel_protocol, resolve_protocol
from ..kvm.vm import probe

__all__ = ["add_kernel_options", "kernel_args", "stress_pairs"]

#: Scenario fields the kvm engine draws unless their option was given.
_PINNABLE = {"--writers": "writers", "--slots": "slots", "--pages": "pages",
             "--workload": "workload", "--writes": "writes", "--interval": "interval",
             "--initially-set": "initially_set", "--clear-words": "clear_words",
             "--ring-entries": "ring_entries"}


#: Options only the model's engines use: an error with --engine kvm alone.
_MODEL_ONLY = {"--on-behalf", "--noise", "--switch-interval", "--no-tlb", "--fast-page-fault",
               "--pml", "--pml-entries", "--ring-soft-limit", "--ring-batch", "--stuck-rounds",
               "--lock-timeout"}


def add_kernel_options(parser: Any, number: Any) -> None:
    g = parser.add_argument_group(
        "the real kernel (--engine kvm)",
        "On kvm every program dimension is drawn per execution unless its option is given: "
        "--writers (vCPUs), --slots, --pages, --workload (also edges, word-bits), --writes "
        "(the guest's write list), --interval (harvest pacing), --initially-set, "
        "--clear-words, --ring-entries (256 to 65536) pin it.")
    g.add_argument("--guest-delay", type=number("a number of pause iterations", 0, 1 << 24,
                                                integer=True), default=None,
                   help="pause iterations the guest spins after each write (default: drawn)")
    g.add_argument("--guest-mode", choices=KVM_GUEST_MODES, default=KVM_GUEST_MODES[0],
                   help="the guest's mode (default %(default)s; long64-cpl0 runs through KVM's "
                        "instruction emulator on a software hypervisor such as kvm_pvm)")
    g.add_argument("--toggles", type=number("a number of toggles", 0, 64, integer=True),
                   default=None, help="times per execution a slot's dirty logging is turned "
                                      "off and on (default: drawn)")


def kernel_args(ns: argparse.Namespace, engine: str) -> dict[str, Any]:
    """The kvm engine's Scenario fields from the command line."""
    given: set[str] = getattr(ns, "given", set())
    if engine != "kvm":
        for flag in ("--guest-delay", "--toggles", "--guest-mode"):
            if flag in given:
                raise UsageError(f"expected {flag} with --engine kvm only (the guest's "
                                 f"options), got it with --engine {engine}")
        return {}
    return dict(guest_delay=ns.guest_delay, toggles=ns.toggles, guest_mode=ns.guest_mode,
                pinned=tuple(field for flag, field in _PINNABLE.items() if flag in given))


def stress_pairs(ns: argparse.Namespace, engines: list[str],
                 builtins: list[str]) -> list[tuple[str, str]]:
    """(algorithm, engine) cells in order; usage errors before anything
    runs, the kvm probe included."""
    named = ns.algorithm
    pairs: list[tuple[str, str]] = []
    if not named:
        for name in builtins:
            pairs += [(name, e) for e in engines if e != "kvm"]
        if "kvm" in engines:
            pairs += [(name, "kvm") for name in PROTOCOLS]
    else:
        for spec in named:
            for engine in engines:
                kernel = is_kernel_protocol(spec)
                if kernel != (engine == "kvm"):
                    what = "a kernel protocol" if kernel else "a model algorithm"
                    where = "--engine kvm only" if kernel else \
                        "threads, processes and the controlled schedulers (fuzz)"
                    raise UsageError(f"expected algorithms and engines that pair, got {what} "
                                     f"{spec!r} with --engine {engine} ({what} runs on "
                                     f"{where})")
                pairs.append((spec, engine))
    given: set[str] = getattr(ns, "given", set())
    if engines and all(e == "kvm" for e in engines):
        ignored = sorted(given & _MODEL_ONLY)
        if ignored:
            raise UsageError(f"expected the kvm engine's options with --engine kvm alone, got "
                             f"{', '.join(ignored)}, which only the model's engines use "
                             f"(the real kernel has its own fault path, TLB and ring)")
    kernel_cells = [a for a, e in pairs if e == "kvm"]
    if kernel_cells:
        found = probe()
        for interface in sorted({resolve_protocol(a).interface for a in kernel_cells}):
            found.require(interface)
    return pairs
