"""The command line: ``concurrent-dirty stress`` (also ``python -m
concurrent_dirty stress``). Exit codes: 0 clean, 1 a violation or an error
in the code under test, 2 bad usage, 130 interrupted."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any, NoReturn

from ..errors import UsageError
from ..harness.interrupt import interrupted as _interrupted
from ..harness.interrupt import signals_interrupt
from ..harness.limits import (
    MAX_SECONDS,
)
from ..harness.output import check_output_path, write_text

# Subcommands, in the order --help lists them: the module that adds a
# command's options (and runs it) is imported only when that command runs.
_COMMANDS = {
    "stress": (".stress", "race dirty-log algorithms with free-running writers"),
    "fuzz": (".fuzz", "explore interleavings under a controlled scheduler"),
    "replay": (".fuzz", "rerun a failure from its replay token"),
    "mutants": (".zoo", "run the bug zoo: every mutant under every engine"),
    "perf": (".perf", "time GET/CLEAR and vCPU waits over a dirty-fraction sweep"),
}

EXIT_OK = 0
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        from ..harness.credentials import mask_credentials  # it may quote a --db URL

        sys.stderr.write(f"concurrent-dirty: error: {mask_credentials(message)}\n")
        raise SystemExit(EXIT_USAGE)


def _number(kind: str, low: float, high: float = MAX_SECONDS, integer: bool = False,
            low_open: bool = False) -> Any:
    """A parser for a number in [low, high] (or (low, high] with
    ``low_open``); its error names the whole range."""
    def show(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"

    rng = (f"> {show(low)} and <= {show(high)}" if low_open
           else f"from {show(low)} to {show(high)}")

    def parse(text: str) -> float | int:
        try:
            number = float(text)
            value: float | int = number
            if integer:
                value = int(text) if text.strip().lstrip("+-").isdigit() else (
                    int(number) if math.isfinite(number) and number.is_integer() else math.nan)
        except (ValueError, OverflowError):
            value = math.nan
        ok = not math.isnan(value) and (value > low if low_open else value >= low) \
            and value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {kind} {rng}, got {text!r}")
        return value
    parse.__doc__ = rng  # the range, for the README's CLI tables (tools/readme_samples.py)
    return parse


def _choice(kind: str, choices: Sequence[str]) -> Any:
    def parse(text: str) -> str:
        if text not in choices:
            import difflib

            close = difflib.get_close_matches(text, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentTypeError(
                f"expected {kind} in {list(choices)}, got {text!r}{hint}")
        return text
    return parse


class _RaisingParser(_Parser):
    """The same parser for a caller that is not the command line (the pytest
    plugin): a usage error is a :class:`UsageError` with the same text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(only: str | None = None, *,
                 parser_class: type[_Parser] = _Parser) -> argparse.ArgumentParser:
    """The parser. ``only``: give full options to that subcommand alone
    (the others are listed with their help line), so that parsing imports
    just the module it runs; None: every subcommand in full."""
    parser = parser_class(prog="concurrent-dirty", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", parser_class=parser_class)
    selected = None if only is None else _COMMANDS.get(only, (None,))[0]
    for name, (module, help_line) in _COMMANDS.items():
        if name in sub.choices:
            continue  # added along with its sibling (fuzz and replay)
        if only is not None and module != selected:
            sub.add_parser(name, help=help_line, add_help=False)
        else:
            mod = import_module(module, __package__)
            if hasattr(mod, "add_parsers"):
                mod.add_parsers(sub, _number, _choice)
            else:
                mod.add_parser(sub, _number, _choice)
    return parser


def _write_report(path: str, report: dict[str, Any]) -> None:
    import json

    write_text(path, json.dumps(report, indent=2) + "\n")  # see harness/output.py: atomic or plain


def _mutant_names(ns: argparse.Namespace) -> None:
    """``--algorithm`` also takes a registered mutant's name (``--algorithm
    nonatomic-clear``): it becomes the mutant's ``module:Class``, so that
    reports, tokens and writer processes name the class itself."""
    value = getattr(ns, "algorithm", None)
    if not value:
        return
    specs = value if isinstance(value, list) else [value]
    from ..dirtylog import ALGORITHMS

    def sized_ring(s: str) -> bool:  # perf's ring-N: the ring at N entries a vCPU
        return s.startswith("ring-") and s[5:].isdigit()

    if all(":" in s or s in ALGORITHMS or sized_ring(s) for s in specs):
        return  # no need to load the zoo
    from ..mutants import MUTANTS

    refs = []
    for spec in specs:
        if ":" in spec or spec in ALGORITHMS or sized_ring(spec):
            refs.append(spec)
        elif spec in MUTANTS:  # no kernel protocol has a mutant's name
            refs.append(MUTANTS[spec].ref)
        else:
            from ..kvm.registry import KERNEL_NAMES  # the kernel layer, only when needed

            if spec in KERNEL_NAMES:
                refs.append(spec)
                continue
            import difflib

            names = [*sorted(ALGORITHMS), *MUTANTS, *KERNEL_NAMES]
            close = difflib.get_close_matches(spec, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"expected an algorithm in {sorted(ALGORITHMS)}, a mutant "
                             f"name (concurrent-dirty mutants lists them), a kernel protocol "
                             f"(kvm-get, kvm-clear, kvm-ring: --engine kvm) or module:Class, "
                             f"got {spec!r}{hint}")
    ns.algorithm = refs if isinstance(value, list) else refs[0]


def _given(parser: argparse.ArgumentParser, args: list[str]) -> set[str]:
    """The options written on the command line, by their full names
    (argparse takes unambiguous prefixes: ``--ring-ent 512``)."""
    sub = next((a for a in parser._actions if a.dest == "command"), None)
    command = args[0] if args else ""
    chosen = getattr(sub, "choices", {}).get(command) if sub is not None else None
    names = [o for a in (chosen or parser)._actions for o in a.option_strings
             if o.startswith("--")]
    given: set[str] = set()
    for arg in args:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            matches = [n for n in names if n.startswith(name)]
            given.update([name] if name in names else matches if len(matches) == 1 else [])
    return given


#: Keyword names of :func:`campaign_of` that are spelt otherwise on the command line.
_ALIASES = {"max_executions": "executions"}


def campaign_words(options: dict[str, Any]) -> list[str]:
    """Keyword options as command-line words: ``writers=2`` is ``--writers
    2``, ``tlb=False`` is ``--no-tlb``, a list repeats its option."""
    words: list[str] = []
    for key, value in options.items():
        name = _ALIASES.get(key, key).replace("_", "-")
        if value is None or (key == "tlb" and value is True):
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, bool):
                words.append(f"--{name}" if item else f"--no-{name}")
            else:
                words += [f"--{name}", str(item)]
    return words


def campaign_of(command: str, **options: Any) -> Any:
    """The campaign value the command line builds for ``concurrent-dirty
    COMMAND --option value ...`` (``fuzz``: a FuzzCampaign with one job;
    ``stress``: a StressCampaign; ``mutants``: a ZooCampaign), checked the
    same way: a bad option or a conflict raises :class:`UsageError` with
    the command line's own one-line message. For the pytest plugin."""
    if command not in ("fuzz", "stress", "mutants"):
        raise UsageError(f"expected a campaign of fuzz, stress or mutants, got {command!r}")
    args = [command, *campaign_words(options)]
    parser = build_parser(only=command, parser_class=_RaisingParser)
    ns = parser.parse_args(args)
    ns.given = _given(parser, args)
    _mutant_names(ns)
    if command == "fuzz":
        from .campaign import fuzz_campaign_of
        from .scale import resolve_jobs

        return fuzz_campaign_of(ns, resolve_jobs(ns))
    if command == "stress":
        from .stress import stress_campaign_of

        return stress_campaign_of(ns)
    from .zoo import zoo_campaign_of

    return zoo_campaign_of(ns)


def console() -> NoReturn:
    """The installed ``concurrent-dirty`` script: :func:`main`, then the
    process ends with its code (:func:`~concurrent_dirty.harness.interrupt.exit_process`)."""
    from ..harness.interrupt import exit_process

    exit_process(main())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # The installed script's start-up guard (the package's __init__)
        # ends here: Ctrl-C raises KeyboardInterrupt again.
        end_startup = getattr(sys.modules.get(__name__.split(".")[0]), "_end_startup", None)
        if end_startup is not None:
            end_startup()
        return _main(argv)
    except KeyboardInterrupt:  # during start-up, before the subcommand had anything
        return _interrupted("stopped before anything was reported")


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in _COMMANDS else ""
    parser = build_parser(only=command)
    ns = parser.parse_args(args)
    ns.given = _given(parser, args)
    if getattr(ns, "db", None):  # prints masked wherever it is quoted
        from ..harness.credentials import MaskedUrl

        ns.db = MaskedUrl(ns.db)
    if ns.command is None:  # asked for nothing: the help, as --help gives it
        parser.print_help(sys.stdout)
        return EXIT_OK
    with signals_interrupt():  # SIGTERM ends every subcommand as Ctrl-C does
        try:
            for option in ("json", "token_file"):  # before anything runs
                if getattr(ns, option, None):
                    check_output_path(getattr(ns, option), "--" + option.replace("_", "-"))
            _mutant_names(ns)
            if ns.command == "replay":
                return int(import_module(".fuzz", __package__).run_replay(ns))
            module = import_module(_COMMANDS[ns.command][0], __package__)
            run = getattr(module, f"run_{ns.command}")
            return int(run(ns, _write_report))
        except UsageError as exc:
            from ..harness.credentials import mask_credentials

            sys.stderr.write(f"concurrent-dirty: error: {mask_credentials(str(exc))}\n")
            return EXIT_USAGE
        except KeyboardInterrupt:  # before a subcommand had anything to report
            return _interrupted("stopped before anything was reported")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
