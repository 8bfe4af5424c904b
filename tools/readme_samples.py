#!/usr/bin/env python3
"""The README's sample outputs and CLI tables, from the build.

Every sample output in README.md names its command in a marker comment on
the line before its fenced block::

    <!-- sample: concurrent-dirty fuzz --algorithm xchg --seconds 1 -->
    ```
    $ concurrent-dirty fuzz --algorithm xchg --seconds 1
    ...
    ```

and every CLI table sits between ``<!-- cli-table: fuzz -->`` and
``<!-- /cli-table -->``. This tool reruns each sample's command (stdout,
with ``python3 -m concurrent_dirty`` for ``concurrent-dirty``) and either

* ``--write``: regenerates the block (a long trace elided to its first
  and last rows, tokens shortened) and each CLI table from the argparse
  parsers (option, default, the ``--help`` text), so the README's tables
  and ``--help`` have one source; or
* ``--check``: compares what does not vary (verdicts, option names,
  counts of a seeded run) after normalising what does (times, rates,
  tokens, and every number of a sample marked ``counts``: a time budget's
  counts), and exits 1 naming the sample and the first line that differs,
  or a command that no longer runs (an exit status other than 0 or 1, or
  the one the marker names with ``exit=N``).

Marker options, in brackets after ``sample``: ``long`` (run only with
``--long``: a full mutants table, installs, Redis, the kernel), ``counts``
(its numbers depend on the time budget), ``prefix`` (the build may print
more lines after the sample's: a second violation), ``timed`` (``--write`` adds the
machine it ran on, the line after the block), ``exit=N`` (the status it
must exit with). A line ``...`` in a block stands for any number of lines.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

MARKER = re.compile(r"^<!-- sample(?:\[([^\]]*)\])?: (.+?) -->$")
TABLE = re.compile(r"^<!-- cli-table: (\S+) -->$")
TABLE_END = "<!-- /cli-table -->"
MACHINE_PREFIX = "_Sample measured on "
#: Commands slower than this fail the check (a sample must stay short);
#: a ``long`` sample (a benchmark, the kernel) gets LONG_TIMEOUT.
TIMEOUT = 120.0
LONG_TIMEOUT = 1800.0


@dataclass
class Sample:
    command: str
    options: dict[str, str]
    marker_line: int  # 0-based index of the marker
    start: int  # the opening fence's index
    end: int  # the closing fence's index
    body: list[str]

    @property
    def name(self) -> str:
        return f"README.md:{self.marker_line + 1} `{self.command}`"


def parse_options(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if part:
            key, _, value = part.partition("=")
            out[key] = value
    return out


def find_samples(lines: list[str]) -> list[Sample]:
    samples = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if not m:
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            raise SystemExit(f"README.md:{i + 1}: a sample marker must be followed by a "
                             f"fenced block, got {lines[i + 1] if i + 1 < len(lines) else 'EOF'!r}")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise SystemExit(f"README.md:{i + 1}: the sample's fenced block is not closed")
        samples.append(Sample(m.group(2), parse_options(m.group(1)), i, i + 1, end,
                              lines[i + 2:end]))
    return samples


def run_command(command: str, timeout: float = TIMEOUT) -> tuple[int, str]:
    words = shlex.split(command)
    if words[0] == "concurrent-dirty":
        words = [sys.executable, "-m", "concurrent_dirty", *words[1:]]
    elif words[0] == "python3":
        words = [sys.executable, *words[1:]]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COLUMNS="80")
    try:
        done = subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"(did not finish within {timeout:g} s)"
    return done.returncode, done.stdout + (done.stderr if done.returncode not in (0, 1) else "")


ROW = re.compile(r"^\s*\d+  \S")
TOKEN = re.compile(r"cd2\.[A-Za-z0-9_-]+(?:\.\.\.)?")


def elide(lines: list[str]) -> list[str]:
    """A block as the README shows it: a trace of more than 12 rows kept to
    its first 3, the 3 around each preemption and its last 4 (a ``...``
    row for each gap), tokens shortened."""
    out: list[str] = []
    rows: list[str] = []

    def flush() -> None:
        if len(rows) > 12:
            keep = set(range(3)) | set(range(len(rows) - 4, len(rows)))
            for n, row in enumerate(rows):
                if "<== preempts" in row:
                    keep |= set(range(max(0, n - 3), min(len(rows), n + 4)))
            gap = False
            for n, row in enumerate(rows):
                if n in keep:
                    out.append(row)
                    gap = False
                elif not gap:
                    out.append("   ...")
                    gap = True
        else:
            out.extend(rows)
        rows.clear()

    for line in lines:
        if ROW.match(line):
            rows.append(line)
            continue
        flush()
        out.append(line)
    flush()
    return [TOKEN.sub(lambda m: m.group(0)[:24] + "...", line).rstrip() for line in out]


def normalise(line: str, counts: bool) -> str:
    line = TOKEN.sub("cd2.TOKEN", line.rstrip())
    line = re.sub(r"\d+\.\d+", "F", line)  # times, rates, shares
    line = re.sub(r"\d+(?=(?: [a-z]+)*/s\b)", "R", line)  # rates: 60 executions/s
    line = re.sub(r"\b\d+ here\b", "N here", line)  # this machine's cores
    if counts:
        line = re.sub(r"\d+", "N", line)
    line = re.sub(r"-{2,}", "--", line)  # table columns widen with their numbers
    line = re.sub(r" {2,}", " ", line)
    return line


def matches(expected: list[str], got: list[str], counts: bool,
            prefix: bool = False) -> str | None:
    """None if ``got`` fits ``expected`` (a ``...`` line matches any lines;
    with ``prefix``, any lines may follow), else the first expected line
    the build did not print, in order."""
    exp = [normalise(x, counts) for x in expected]
    have = [normalise(x, counts) for x in got]
    pattern = "".join(r"(?:.*\n)*?" if e.strip() == "..." else re.escape(e) + r"\n"
                      for e in exp) + (r"(?:.*\n)*" if prefix else "")
    if re.fullmatch(pattern, "".join(h + "\n" for h in have)):
        return None
    j = 0
    for i, e in enumerate(exp):
        if e.strip() == "...":
            continue
        k = next((k for k in range(j, len(have)) if have[k] == e), None)
        if k is None:
            near = next((got[n] for n in range(j, len(have))
                         if have[n].split(" ")[:1] == e.split(" ")[:1]), None)
            return (f"sample line {i + 1} {expected[i]!r} is not in the build's output"
                    + (f"; the build printed {near!r}" if near else ""))
        j = k + 1
    return (f"the build printed lines the sample does not show (from {got[j]!r})"
            if j < len(got) else "the lines differ in order")


def machine() -> str:
    return (f"{MACHINE_PREFIX}{os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()} "
            f"(regenerated by `python3 tools/readme_samples.py --write`)._")


# -- CLI tables -------------------------------------------------------------------------


def _default(action: argparse.Action) -> str:
    """The default as ``--help`` states it: a flag's off (on for a
    ``--no-X``), the parser's value, else what the help text says."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "on" if isinstance(action, argparse._StoreFalseAction) else "off"
    text = _help(action)
    said = re.search(r"\(?default:? ([^;):]*)", text)
    value = action.default
    if value is not None and value is not False and value is not argparse.SUPPRESS \
            and type(action).__name__ != "OnceBoolean":
        return f"{value:g}" if isinstance(value, float) else str(value)
    return said.group(1).strip() if said else "none"


def _values(action: argparse.Action) -> str:
    """The values the option takes: a number's range (its parser's), the
    choices, or "" (a flag, a name, a path)."""
    doc = getattr(action.type, "__doc__", None) or ""
    if doc.startswith(("from ", "> ")):
        return doc
    if action.choices:
        return ", ".join(str(c) for c in action.choices)
    return ""


def _help(action: argparse.Action) -> str:
    text = (action.help or "") % {"default": action.default} if action.help else ""
    return re.sub(r"\b\d+ here\b", "N here", re.sub(r"\s+", " ", text))


def _option(action: argparse.Action) -> str:
    names = [o for o in action.option_strings if o.startswith("--")]
    if not names:
        return ""
    name = names[0]
    if type(action).__name__ == "OnceBoolean":
        name = f"--[no-]{name[2:]}"
    if action.nargs == 0 or isinstance(action, (argparse._StoreTrueAction,
                                                argparse._StoreFalseAction)) \
            or type(action).__name__ == "OnceBoolean":
        return f"`{name}`"
    metavar = action.metavar or action.dest.upper()
    return f"`{name} {metavar}`"


def cli_table(command: str) -> list[str]:
    """The README's table of ``command``'s options, from its parser."""
    sys.path.insert(0, str(ROOT))
    from concurrent_dirty.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[command]
    rows = ["| option | default | values | meaning (its `--help`) |", "|---|---|---|---|"]
    for action in p._actions:
        option = _option(action)
        if not option or action.dest == "help":
            continue
        rows.append(f"| {option} | {_default(action)} | {_values(action)} | "
                    f"{_help(action)} |".replace(
            "|", "\\|").replace("\\| ", "| ").replace(" \\|", " |"))
    return rows


def find_tables(lines: list[str]) -> list[tuple[str, int, int]]:
    out = []
    for i, line in enumerate(lines):
        m = TABLE.match(line.strip())
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == TABLE_END),
                       None)
            if end is None:
                raise SystemExit(f"README.md:{i + 1}: {line.strip()} has no {TABLE_END}")
            out.append((m.group(1), i, end))
    return out


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true",
                      help="rerun every sample, compare; exit 1 on a stale one")
    mode.add_argument("--write", action="store_true", help="regenerate every sample")
    ap.add_argument("--long", action="store_true",
                    help="also the samples marked long (full tables, the kernel, Redis)")
    ap.add_argument("--only", metavar="TEXT", help="only the samples whose command has TEXT")
    ap.add_argument("--readme", default=str(README), metavar="PATH",
                    help="the README to check or rewrite (default: this checkout's)")
    ns = ap.parse_args(argv)
    readme = Path(ns.readme)
    lines = readme.read_text().splitlines()
    problems: list[str] = []
    # Tables first (no commands run), then the samples, last to first so
    # that a rewritten block does not move the ones above it.
    for command, start, end in reversed(find_tables(lines)):
        table = cli_table(command)
        if ns.write:
            lines[start + 1:end] = table
        elif [normalise(x, False) for x in lines[start + 1:end]] != \
                [normalise(x, False) for x in table]:
            old = lines[start + 1:end]
            diff = next((i for i, (a, b) in enumerate(zip(old, table, strict=False))
                         if normalise(a, False) != normalise(b, False)),
                        min(len(old), len(table)))
            problems.append(
                f"README.md:{start + 1} CLI table of `{command}` differs from its --help at "
                f"row {diff + 1}: README {old[diff] if diff < len(old) else '(none)'!r}, "
                f"--help {table[diff] if diff < len(table) else '(none)'!r}")
    samples = find_samples(lines)
    ran = 0
    for s in reversed(samples):
        if ("long" in s.options and not ns.long) or (ns.only and ns.only not in s.command):
            continue
        ran += 1
        code, out = run_command(s.command,
                                LONG_TIMEOUT if "long" in s.options else TIMEOUT)
        expect = int(s.options["exit"]) if s.options.get("exit") else None
        if (expect is not None and code != expect) or (expect is None and code not in (0, 1)):
            problems.append(f"{s.name} no longer runs: exit {code}\n    "
                            + "\n    ".join(out.strip().splitlines()[-5:]))
            continue
        fresh = [f"$ {s.command}", *elide(out.rstrip("\n").splitlines())]
        if ns.write:
            tail = s.end + 1
            if "timed" in s.options:
                if tail < len(lines) and lines[tail].startswith(MACHINE_PREFIX):
                    lines[tail] = machine()
                else:
                    lines[tail:tail] = [machine()]
            lines[s.start + 1:s.end] = fresh
        else:
            why = matches(s.body, fresh, "counts" in s.options, "prefix" in s.options)
            if why:
                problems.append(f"{s.name} is stale: {why}")
        print(f"{'wrote' if ns.write else 'checked'} {s.name}", file=sys.stderr)
    if ns.write:
        readme.write_text("\n".join(lines) + "\n")
    for p in problems:
        print(p)
    if problems:
        print(f"readme_samples: {len(problems)} stale sample(s) or table(s): rerun "
              f"`python3 tools/readme_samples.py --write` and read the diff")
        return 1
    left = len(samples) - ran
    print(f"readme_samples: {ran} sample(s) and {len(find_tables(lines))} CLI table(s) match "
          f"the build" + (f" ({left} left out: long, or not --only)" if left else "")
          if ns.check else "readme_samples: README.md regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
