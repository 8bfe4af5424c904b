"""``concurrent-dirty perf``: the dirty-fraction sweep (see ``perf.py``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from ..errors import UsageError
from ..harness.limits import SEED_RANGE

_DEFAULT_ALGORITHMS = ("srcu", "xchg", "manual", "ring")


def _list_of(kind: str, parse_one: Any) -> Any:
    """A comma-separated list (the option is also repeatable)."""
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or not all(items):
            raise argparse.ArgumentTypeError(f"expected {kind} (or a comma-separated list), "
                                             f"got {text!r}")
        return [parse_one(t) for t in items]
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a dirty fraction in (0, 1], got {text!r}")
    return value


def _int_in(kind: str, low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind} between {low} and {high}, "
                                             f"got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {kind} between {low} and {high}, "
                                             f"got {text!r}")
        return value
    return parse


def add_parser(sub: Any, number: Any, choice: Any) -> None:
    from ..search.perf import DEFAULT_PAGES, MAX_PAGES, MAX_VCPUS, PerfConfig

    d = PerfConfig()
    p = sub.add_parser(
        "perf", help="time GET/CLEAR and vCPU waits over a dirty-fraction sweep",
        description="The harness's dirty_log_perf_test: for each algorithm, vCPU count and "
                    "dirty fraction of one slot, dirty that many pages through the "
                    "algorithm's fault path, then harvest while vCPU threads run, and time "
                    "GET (and CLEAR), pages harvested per second and how long vCPUs waited "
                    "(faults for mmu_lock, exits for the userspace lock held across the "
                    "ioctl). A Python model: compare shapes, not kernel numbers.")
    p.add_argument("--algorithm", action="append", metavar="NAME|ring-N|module:Class",
                   help=f"repeatable; 'ring' is the dirty ring at every --ring-size, 'ring-N' "
                        f"at N entries a vCPU; default: {', '.join(_DEFAULT_ALGORITHMS)}")
    p.add_argument("--ring-size", action="append", metavar="N[,N...]",
                   type=_list_of("a ring size", _int_in("a ring size", 16, 65536)),
                   help=f"entries a vCPU of the dirty ring that 'ring' stands for; repeatable "
                        f"or a list (default {','.join(map(str, d.ring_sizes))})")
    p.add_argument("--vcpus", action="append", metavar="N[,N...]",
                   type=_list_of("a number of vCPUs", _int_in("a number of vCPUs", 1,
                                                                  MAX_VCPUS)),
                   help=f"vCPU writer threads; repeatable or a list (default {d.vcpus[0]})")
    p.add_argument("--pages", type=_int_in("a number of pages", 1, MAX_PAGES),
                   default=None,
                   help=f"pages in the slot, up to {MAX_PAGES} (default {DEFAULT_PAGES}; "
                        f"cost mode: 4096 and 65536, each from 64 to 262144)")
    p.add_argument("--fraction", action="append", metavar="F[,F...]",
                   type=_list_of("a dirty fraction in (0, 1]", _fraction),
                   help="dirty fractions in (0, 1]; repeatable or a list (default: a handful "
                        "of pages, 0.001, 0.01, 0.1, 0.5, 1)")
    p.add_argument("--rounds", type=_int_in("a number of rounds", 1, 10_000),
                   default=d.rounds, help="rounds per point (default %(default)s)")
    p.add_argument("--seconds", type=number("a number of seconds", 0, low_open=True),
                   default=d.seconds, help="budget per point: no new round after it; one "
                                           "round always runs (default %(default)s)")
    p.add_argument("--think-us", type=number("a number of microseconds", 0, 1e6),
                   default=d.think_us,
                   help="each vCPU's pause between operations (default %(default)s)")
    p.add_argument("--exit-rate", type=number("a probability", 0, 1), default=d.exit_rate,
                   help="share of vCPU operations that exit to userspace and need the lock "
                        "the harvester holds across the ioctl (default %(default)s)")
    p.add_argument("--seed", type=number("an integer seed", *SEED_RANGE, True),
                   default=d.seed)
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--plot", metavar="DIR",
                   help="write dirty_log_perf.png and .svg into DIR (needs the [plot] extra)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    k = p.add_argument_group("the real kernel (--engine kvm)")
    k.add_argument("--engine", choices=("model", "kvm"), default="model",
                   help="model: the Python model (default); kvm: this machine's /dev/kvm, "
                        "the kernel's dirty_log_perf_test with the seed's claims as checks "
                        "and the model beside it")
    k.add_argument("--slot-pages", action="append", metavar="N[,N...]",
                   type=_list_of("a number of pages", _int_in("a number of pages", 64,
                                                              1 << 20)),
                   help="kvm: slot sizes of the stopped sweep (default 4096,65536,262144)")
    k.add_argument("--run-seconds", type=number("a number of seconds", 0, low_open=True),
                   default=1.0, help="kvm: seconds per running point (default %(default)s)")
    k.add_argument("--harvest-ms", type=number("a number of milliseconds", 0, low_open=True),
                   default=10.0, help="kvm: the running harvester's period "
                                      "(default %(default)s)")
    c = p.add_argument_group("the cost mode (the model on a virtual clock at the kernel's costs)")
    c.add_argument("--cost-mode", choices=("off", "kernel"), default="off",
                   help="model: 'kernel' runs each point once under the controlled engine and "
                        "charges every operation the kernel's measured cost on a virtual "
                        "clock (deterministic; same schedule as without costs) instead of "
                        "timing real threads, and prints the 2012 srcu/xchg crossover; "
                        "--engine kvm always uses it for the model side (default %(default)s)")
    c.add_argument("--srcu-sync-us", type=number("a number of microseconds", 0, 1e6,
                                                 low_open=True),
                   default=1000.0,
                   help="the 2012 synchronize_srcu_expedited cost charged to srcu's GET "
                        "(default %(default)s: 60c34612's 'ms order of latency'); the "
                        "crossover is also shown at 10, 30, 100, 300, 1000 and 3000")
    c.add_argument("--srcu-protect", choices=("slot", "harvested"), default="slot",
                   help="what srcu's GET write-protects in the cost mode: the whole slot "
                        "(b050b015, charged at the kernel's per-page cost of turning logging "
                        "on) or only the harvested pages (the model's srcu.py) "
                        "(default %(default)s)")
    c.add_argument("--costs", metavar="JSON",
                   help="take the costs from this perf --engine kvm report (default: the "
                        "ones of docs/perf/dirty_log_perf_kvm.json, built in)")


def run_kvm(ns: argparse.Namespace, write_json: Any) -> int:
    """``perf --engine kvm``: one line and exit 2 where /dev/kvm is unusable."""
    from ..kvm.perf import KvmPerfConfig, run_kvm_perf
    from ..kvm.vm import probe
    from ..search.perf import require_matplotlib
    from ..search.perf_kvm import compare, format_report, plot_kvm

    found = probe()
    found.require()
    found.require("manual")
    if ns.plot:
        require_matplotlib()
    d = KvmPerfConfig()
    config = KvmPerfConfig(
        pages=sorted({n for g in ns.slot_pages for n in g}) if ns.slot_pages else d.pages,
        fractions=sorted({f for g in ns.fraction for f in g}) if ns.fraction else None,
        vcpus=[v for g in ns.vcpus for v in g] if ns.vcpus else d.vcpus,
        rounds=ns.rounds, run_seconds=ns.run_seconds, harvest_ms=ns.harvest_ms,
        seed=ns.seed)
    config.running_pages = sorted({min(config.pages), max(config.pages)})

    def progress(line: str) -> None:
        if not ns.quiet:
            sys.stderr.write(f"perf --engine kvm: {line}\n")
            sys.stderr.flush()

    report = run_kvm_perf(config, progress)
    progress("the model at the same dirty counts (the cost mode)")
    report["comparison"] = compare(report, ns.seed, sync_us=ns.srcu_sync_us,
                                   srcu_protect=ns.srcu_protect, progress=progress)
    print(format_report(report))
    if ns.json:
        write_json(ns.json, report)
    if ns.plot:
        for path in plot_kvm(report, ns.plot):
            print(f"plot: {path}")
    return 0


def _check_plot_dir(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or (os.path.exists(path) and not os.path.isdir(path)):
        raise UsageError(f"expected --plot to name a directory (its parent must exist), "
                         f"got {path!r}")


def _expand_rings(algorithms: list[str], sizes: list[list[int]] | None) -> list[str]:
    """``ring`` -> ``ring-N`` for each ring size (default 256 and 8192)."""
    flat = sorted({n for g in sizes for n in g}) if sizes else [256, 8192]
    out: list[str] = []
    for a in algorithms:
        out += [f"ring-{n}" for n in flat] if a == "ring" else [a]
    return list(dict.fromkeys(out))


def run_cost(ns: argparse.Namespace, write_json: Any) -> int:
    """``perf --cost-mode kernel``: the model on the virtual clock."""
    import json

    from ..search.perf import require_matplotlib
    from ..search.perf_cost import (
        DEFAULT_COSTS,
        CostConfig,
        costs_from_kernel,
        format_cost,
        plot_cost,
        run_cost_sweep,
    )

    if ns.plot:
        require_matplotlib()
        _check_plot_dir(ns.plot)
    costs = DEFAULT_COSTS
    if ns.costs:
        try:
            with open(ns.costs) as f:
                kernel = json.load(f)
        except (OSError, ValueError) as exc:
            raise UsageError(f"expected --costs to name a perf --engine kvm JSON report, "
                             f"got {ns.costs!r}: {exc}") from None
        if not isinstance(kernel, dict):
            raise UsageError(f"expected --costs to name a perf --engine kvm JSON report, "
                             f"got {ns.costs!r}")
        costs = costs_from_kernel(kernel)
    d = CostConfig()
    pages = [ns.pages] if ns.pages else d.pages
    fractions = sorted({f for g in ns.fraction for f in g}) if ns.fraction else None
    config = CostConfig(
        algorithms=_expand_rings(list(ns.algorithm), ns.ring_size) if ns.algorithm
        else _expand_rings(["srcu", "xchg", "manual", "ring"], ns.ring_size or [[256, 8192]]),
        pages=pages,
        dirty=sorted({max(1, math.ceil(f * p - 1e-9)) for f in fractions for p in pages})
        if fractions else None,
        vcpus=ns.vcpus[0][0] if ns.vcpus else 1, seed=ns.seed, sync_us=ns.srcu_sync_us,
        srcu_protect=ns.srcu_protect)
    config.validate()

    def progress(line: str) -> None:
        if not ns.quiet:
            sys.stderr.write(f"perf: {line}\n")
            sys.stderr.flush()

    report = run_cost_sweep(config, costs, progress=progress)
    print(format_cost(report))
    if ns.json:
        write_json(ns.json, report.to_json())
    if ns.plot:
        for path in plot_cost(report, ns.plot):
            print(f"plot: {path}")
    return 0


def run_perf(ns: argparse.Namespace, write_json: Any) -> int:
    if ns.engine == "kvm":
        return run_kvm(ns, write_json)
    if ns.cost_mode == "kernel":
        return run_cost(ns, write_json)
    from ..search.perf import (
        DEFAULT_PAGES,
        PerfConfig,
        describe_progress,
        format_table,
        plot,
        require_matplotlib,
    )
    from ..search.perf import run_perf as sweep

    if ns.plot:
        require_matplotlib()
        _check_plot_dir(ns.plot)
    config = PerfConfig(
        algorithms=list(ns.algorithm or _DEFAULT_ALGORITHMS),
        vcpus=[v for group in ns.vcpus for v in group] if ns.vcpus else PerfConfig().vcpus,
        ring_sizes=sorted({n for g in ns.ring_size for n in g}) if ns.ring_size
        else PerfConfig().ring_sizes,
        pages=ns.pages or DEFAULT_PAGES,
        fractions=sorted({f for group in ns.fraction for f in group}) if ns.fraction else None,
        rounds=ns.rounds, seconds=ns.seconds, think_us=ns.think_us, exit_rate=ns.exit_rate,
        seed=ns.seed)

    def progress(n: int, total: int, point: Any) -> None:
        if not ns.quiet:
            sys.stderr.write(describe_progress(n, total, point) + "\n")
            sys.stderr.flush()

    from ..search.perf import summary_lines

    report = sweep(config, progress=progress)
    print(format_table(report))
    for line in summary_lines(report):
        print(line)
    if ns.json:
        write_json(ns.json, report.to_json())
    if ns.plot and report.points:
        for path in plot(report, ns.plot):
            print(f"plot: {path}")
    if report.interrupted:
        return 130
    return 1 if report.error else 0
