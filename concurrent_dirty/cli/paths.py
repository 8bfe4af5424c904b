"""The model options of the KVM paths after 2012, shared by ``stress`` and
``fuzz``: what the harvester's CLEAR covers, the fast page fault, PML, the
dirty ring's geometry."""

from __future__ import annotations

import argparse
from typing import Any

from ..harness.scenario import Scenario

__all__ = ["OnceBoolean", "add_path_options", "path_args", "path_pins", "path_words", "ring_pins"]

_DEFAULT = Scenario()


class OnceBoolean(argparse.BooleanOptionalAction):
    """``--X``/``--no-X``, but giving both (with different values) is a usage
    error instead of the last one silently winning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if option_string is None or option_string not in self.option_strings:
            return
        value = not option_string.startswith("--no-")
        previous = getattr(namespace, self.dest, None)
        if previous is not None and previous != self.default and previous != value:
            positive = self.option_strings[0]
            parser.error(f"expected one of {positive} and --no-{positive[2:]}, got both")
        setattr(namespace, self.dest, value)


def add_path_options(group: Any, number: Any, *, drawn: bool = False) -> None:
    """Add ``--clear-words``, ``--fast-page-fault``, ``--pml`` and the rest
    to a parser or group. ``drawn`` (fuzz): the model options default to
    None, drawn per execution by the program space, and
    ``--no-fast-page-fault``/``--no-pml`` pin them off."""
    if drawn:
        return _add_drawn_path_options(group, number)
    _add_clear_words(group, number)
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
    _add_ring_options(group, number, drawn=False)
    _add_stuck_rounds(group, number)


def _power_of_two(number: Any) -> Any:
    base = number("a power of two", 4, 65536, integer=True)

    def parse(text: str) -> int:
        value: int = base(text)
        if value & (value - 1):
            raise argparse.ArgumentTypeError(f"expected a power of two from 4 to 65536, "
                                             f"got {text!r}")
        return value
    return parse


def _add_drawn_path_options(group: Any, number: Any) -> None:
    _add_clear_words(group, number)
    group.add_argument("--fast-page-fault", action=OnceBoolean,
                       default=None,
                       help="the fast page fault (KVM c7ba5b48cc8d): write faults on "
                            "MMU-writable SPTEs are fixed by a cmpxchg without mmu_lock, then "
                            "marked dirty (default: drawn per execution, on one time in four, "
                            "for algorithms that support it; an algorithm's model may turn it "
                            "on)")
    group.add_argument("--pml", action=OnceBoolean, default=None,
                       help="hardware Dirty bits and PML: SPTEs stay writable, the CPU sets "
                            "Dirty on its first write through a translation and logs the gfn "
                            "in its vCPU's PML buffer, drained into the bitmap at VM exits; a "
                            "harvest kicks running vCPUs first (default: drawn per execution, "
                            "on one time in four, for algorithms that support it)")
    group.add_argument("--pml-entries", type=number("a number of PML entries", 1, 512,
                                                    integer=True),
                       default=None, metavar="N",
                       help="entries of each vCPU's PML buffer (default: drawn with PML, 512 "
                            "or 1, 2, 4, so that small executions reach the PML-full exit)")
    _add_ring_options(group, number, drawn=True)
    _add_stuck_rounds(group, number)


def _add_clear_words(group: Any, number: Any) -> None:
    group.add_argument("--clear-words", type=number("a number of words per CLEAR", 0, 1 << 18,
                                                   integer=True),
                       default=_DEFAULT.clear_words, metavar="N",
                       help="words per KVM_CLEAR_DIRTY_LOG of the harvester (manual "
                            "algorithms): 1, several, or 0 for the whole slot; the slot's last "
                            "range may end in a partial word (default %(default)s)")


def _add_stuck_rounds(group: Any, number: Any) -> None:
    group.add_argument("--stuck-rounds", type=number("a number of rounds", 0, 16, integer=True),
                       default=_DEFAULT.stuck_rounds, metavar="K",
                       help="the liveness oracle: harvest rounds after the final one, with no "
                            "writer left; a page every one of them reports is a stuck bit "
                            "(default %(default)s; 0: off)")


def _add_ring_options(group: Any, number: Any, *, drawn: bool) -> None:
    group.add_argument("--ring-entries", type=_power_of_two(number), default=None, metavar="N",
                       help="ring algorithms: entries of each vCPU's dirty ring, a power of two "
                            "from 4 to 65536 (default: "
                            + ("drawn from 4, 8, 16)" if drawn else f"{_DEFAULT.ring_entries})"))
    group.add_argument("--ring-soft-limit", type=number("a soft limit", 2, 65535, integer=True),
                       default=None, metavar="N",
                       help="ring algorithms: used entries at which a vCPU exits "
                            "(KVM_EXIT_DIRTY_RING_FULL) and waits for the reaper; below the "
                            "ring's size (default: " + ("drawn)" if drawn else "size - 1)"))
    group.add_argument("--ring-batch", type=number("a batch", 0, 65536, integer=True),
                       default=None, metavar="N",
                       help="ring algorithms: entries the reaper collects per ring between two "
                            "resets, 0 for all it finds (default: "
                            + ("drawn)" if drawn else "0)"))


def path_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The Scenario fields these options set (an option left to the program
    space to draw gives the Scenario's default, which the draw replaces)."""
    def given(name: str) -> Any:
        value = getattr(ns, name)
        return getattr(_DEFAULT, name) if value is None else value

    entries = ns.ring_entries
    if entries is None:
        # A soft limit given alone gets the smallest default size above it.
        entries = _DEFAULT.ring_entries
        while ns.ring_soft_limit is not None and entries <= ns.ring_soft_limit:
            entries *= 2
    return {"clear_words": ns.clear_words, "fast_page_fault": given("fast_page_fault"),
            "pml": given("pml"), "pml_entries": given("pml_entries"),
            "stuck_rounds": ns.stuck_rounds, "ring_entries": entries,
            "ring_soft_limit": ns.ring_soft_limit, "ring_batch": given("ring_batch")}


def path_pins(ns: argparse.Namespace) -> dict[str, Any]:
    """The model options the command line pins for the program space (None:
    drawn)."""
    return {"fast_page_fault": ns.fast_page_fault, "pml": ns.pml,
            "pml_entries": ns.pml_entries}


def ring_pins(ns: argparse.Namespace) -> dict[str, Any]:
    """The ring dimensions these options pin in the program space."""
    return {"ring_entries": ns.ring_entries, "ring_soft_limit": ns.ring_soft_limit,
            "ring_batch": ns.ring_batch}


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
    if scenario.ring_entries != _DEFAULT.ring_entries:
        words += ["--ring-entries", str(scenario.ring_entries)]
    if scenario.ring_soft_limit is not None:
        words += ["--ring-soft-limit", str(scenario.ring_soft_limit)]
    if scenario.ring_batch != _DEFAULT.ring_batch:
        words += ["--ring-batch", str(scenario.ring_batch)]
    if scenario.stuck_rounds != _DEFAULT.stuck_rounds:
        words += ["--stuck-rounds", str(scenario.stuck_rounds)]
    return words
