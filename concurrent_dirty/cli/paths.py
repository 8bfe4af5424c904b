"""The model options of the KVM paths after 2012, shared by ``stress`` and
``fuzz``: what the harvester's CLEAR covers, the fast page fault, PML."""

from __future__ import annotations

import argparse
from typing import Any

from ..harness.scenario import Scenario

__all__ = ["add_path_options", "path_args", "path_words"]

_DEFAULT = Scenario()


def add_path_options(group: Any, number: Any) -> None:
    """Add ``--clear-words`` and ``--fast-page-fault`` to a parser or group."""
    group.add_argument("--clear-words", type=number("a number of words per CLEAR", 0, 1 << 18,
                                                   integer=True),
                       default=_DEFAULT.clear_words, metavar="N",
                       help="words per KVM_CLEAR_DIRTY_LOG of the harvester (manual "
                            "algorithms): 1, several, or 0 for the whole slot; the slot's last "
                            "range may end in a partial word (default %(default)s)")
    group.add_argument("--fast-page-fault", action="store_true",
                       help="the fast page fault (KVM c7ba5b48cc8d): write faults on "
                            "MMU-writable SPTEs are fixed by a cmpxchg without mmu_lock, then "
                            "marked dirty")
    group.add_argument("--pml", action="store_true",
                       help="hardware Dirty bits and PML: SPTEs stay writable, the CPU sets "
                            "Dirty on its first write through a translation and logs the gfn "
                            "in its vCPU's 512-entry PML buffer, drained into the bitmap at VM "
                            "exits; a harvest kicks running vCPUs first")
    group.add_argument("--pml-entries", type=number("a number of PML entries", 1, 512,
                                                    integer=True),
                       default=_DEFAULT.pml_entries, metavar="N",
                       help="entries of each vCPU's PML buffer (default %(default)s, the "
                            "hardware's; fewer reach the PML-full exit in small executions)")
    group.add_argument("--stuck-rounds", type=number("a number of rounds", 0, 16, integer=True),
                       default=_DEFAULT.stuck_rounds, metavar="K",
                       help="the liveness oracle: harvest rounds after the final one, with no "
                            "writer left; a page every one of them reports is a stuck bit "
                            "(default %(default)s; 0: off)")


def path_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The Scenario fields these options set."""
    return {"clear_words": ns.clear_words, "fast_page_fault": ns.fast_page_fault,
            "pml": ns.pml, "pml_entries": ns.pml_entries, "stuck_rounds": ns.stuck_rounds}


def path_words(scenario: Scenario) -> list[str]:
    """The command-line words that give ``scenario``'s path options."""
    words = []
    if scenario.clear_words != _DEFAULT.clear_words:
        words += ["--clear-words", str(scenario.clear_words)]
    if scenario.fast_page_fault:
        words.append("--fast-page-fault")
    if scenario.pml:
        words.append("--pml")
    if scenario.pml_entries != _DEFAULT.pml_entries:
        words += ["--pml-entries", str(scenario.pml_entries)]
    if scenario.stuck_rounds != _DEFAULT.stuck_rounds:
        words += ["--stuck-rounds", str(scenario.stuck_rounds)]
    return words
