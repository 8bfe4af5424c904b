"""``concurrent-dirty perf --engine kvm``: the kernel sweep
(:mod:`concurrent_dirty.kvm.perf`) and the model held against it.

The model side is the **cost mode** (:mod:`.perf_cost`): the model's own
algorithms run under the controlled engine at the kernel sweep's smallest
slot and dirty counts, each operation charged the cost this kernel sweep
measured (:func:`~.perf_cost.costs_from_kernel`) on a virtual clock. Both
sides are also **normalised** (each curve divided by its own value at the
largest dirty count): model ``xchg`` against kernel GET, ``manual``
against GET+CLEAR, ``ring-N`` (N the kernel's ring size) against the
kernel's ring (reap + RESET), and the model's ``srcu`` alone (no srcu GET
in today's kernel). The 2012 crossover between ``srcu`` and ``xchg`` comes
from the same cost mode at every slot size of the sweep, as a function of
the ``synchronize_srcu_expedited`` cost; the analytic formula of
:func:`concurrent_dirty.kvm.perf.srcu_crossover` stays beside it as a
cross-check (``crossover_analytic``).
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..kvm.perf import SYNC_SWEEP_US, THRESHOLD_US, claims, srcu_crossover
from .perf_cost import (
    DEFAULT_SYNC_US,
    CostConfig,
    costs_from_kernel,
    crossover_lines,
    run_cost_sweep,
)

__all__ = ["compare", "format_report", "plot_kvm"]

PLOT_FILES = ("dirty_log_perf_kvm.png", "dirty_log_perf_kvm.svg")


def _ring_size(stopped: list[dict[str, Any]], pages: int) -> int:
    sizes = [s["ring_entries"] for s in stopped if s["protocol"] == "ring"
             and s["pages"] == pages and s.get("ring_entries")]
    return max(sizes) if sizes else 8192


def compare(report: dict[str, Any], seed: int = 0, *, sync_us: float = DEFAULT_SYNC_US,
            srcu_protect: str = "slot", progress: Any = None) -> dict[str, Any]:
    """Run the cost mode at the kernel's smallest slot and dirty counts (and
    srcu against xchg at every slot size); put the 2012 crossover it
    predicts in ``report["crossover"]`` (the analytic one moves to
    ``crossover_analytic``) and re-derive the claims; return both sides'
    curves, raw and normalised, with a sentence per curve."""
    stopped = report["stopped"]
    costs = costs_from_kernel(report, sync_us, srcu_protect)
    pages = min(s["pages"] for s in stopped)
    sizes = sorted({s["pages"] for s in stopped if s["protocol"] == "get"})
    dirty = sorted({s["dirty_pages"] for s in stopped if s["pages"] == pages})
    ring = f"ring-{_ring_size(stopped, pages)}"
    config = CostConfig(algorithms=["xchg", "manual", ring, "srcu"], pages=[pages],
                        dirty=dirty, seed=seed, sync_us=sync_us, srcu_protect=srcu_protect)
    model = run_cost_sweep(config, costs, progress=progress)
    cross_config = CostConfig(algorithms=["srcu", "xchg"], pages=sizes, seed=seed,
                              sync_us=sync_us, srcu_protect=srcu_protect,
                              dirty=sorted({s["dirty_pages"] for s in stopped}))
    cross = run_cost_sweep(cross_config, costs, progress=progress)
    report["crossover_analytic"] = srcu_crossover(report, sync_us)
    report["crossover_analytic"]["label"] = ("cross-check only: the analytic formula of "
                                             "the previous build, not the cost mode")
    report["crossover"] = cross.crossover
    report["crossover"]["points"] = [p.to_json() for p in cross.points]
    report["claims"] = claims(report)
    pairs = (("xchg", "get", "harvest_us"), ("manual", "clear-slot", "harvest_us"),
             (ring, "ring", "harvest_us"), ("srcu", None, None))
    curves: dict[str, dict[str, Any]] = {}
    for algorithm, protocol, key in pairs:
        pts = {p.dirty: p.harvest_us for p in model.points if p.algorithm == algorithm}
        curves[f"model {algorithm}"] = _normalised({d: v for d, v in pts.items() if d in dirty})
        if protocol is not None:
            ks = {s["dirty_pages"]: float(s[key]["p50"]) for s in stopped
                  if s["protocol"] == protocol and s["pages"] == pages}
            if ks:
                curves[f"kernel {protocol}"] = _normalised(ks)
    sentences = [_sentence(a, p, curves.get(f"model {a}"),
                           curves.get(f"kernel {p}") if p else None) for a, p, _ in pairs]
    return {"pages": pages, "dirty_pages": dirty, "curves": curves, "sentences": sentences,
            "model": "cost mode: the model's algorithms under the controlled engine, each "
                     "operation charged this kernel's measured cost (virtual us)",
            "model_config": config.to_json(), "costs": costs.to_json(),
            "model_points": [p.to_json() for p in model.points],
            "normalisation": "each curve divided by its own value at the largest dirty "
                             "count; raw values (kernel: p50 us; model: virtual us) in "
                             "'raw_us'"}


def _normalised(values: dict[int, float]) -> dict[str, Any]:
    top = values[max(values)] or 1e-12
    return {"raw_us": {str(d): round(v, 2) for d, v in sorted(values.items())},
            "normalised": {str(d): round(v / top, 4) for d, v in sorted(values.items())},
            "growth": round(top / max(1e-12, values[min(values)]), 1)}


def _sentence(algorithm: str | None, protocol: str | None, m: dict[str, Any] | None,
              k: dict[str, Any] | None) -> str:
    if m and k:
        gm, gk = m["growth"], k["growth"]
        agree = 1 / 3 <= gm / gk <= 3
        top = max(m["raw_us"], key=int)
        ratio = float(m["raw_us"][top]) / max(1e-9, float(k["raw_us"].get(top, math.nan)))
        return (f"model {algorithm} against kernel {protocol}: from one dirty page to all "
                f"the kernel grows {gk:g}x, the model (cost mode) {gm:g}x; at all pages "
                f"dirty the model's virtual time is {ratio:.2g}x the kernel's: "
                + ("the shapes agree (within 3x)" if agree else
                   "the shapes part: " + ("the model's fixed cost hides the per-page growth"
                                          if gm < gk else
                                          "the model grows faster than the kernel")))
    if m:
        return (f"model {algorithm}: grows {m['growth']:g}x from one dirty page to all; no "
                f"srcu GET in today's kernel: its 2012 cost is the cost mode's prediction "
                f"(one synchronize_srcu_expedited plus the slot's write-protect)")
    return f"{algorithm or protocol}: no data"


# -- text ------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    host = report["host"]
    out = [f"kernel {host['kernel']}, {host['hypervisor']}, {host['cores']} cores, load "
           f"{host['load_average']} -> {host.get('load_average_end')}, guest "
           f"{host['guest_mode']}; {report.get('seconds', 0)}s"]
    out.append("\nstopped vCPU (the ioctl alone; us, p50/p99 over rounds):")
    rows = []
    for s in report["stopped"]:
        main = s.get("get_us") or s.get("reap_us") or {}
        second = s.get("clear_us") or s.get("reset_us")
        rows.append([s["protocol"], str(s["pages"]), str(s["dirty_pages"]),
                     f"{main.get('p50', 0):g}/{main.get('p99', 0):g}",
                     f"{second['p50']:g}/{second['p99']:g}" if second else "-",
                     f"{s['harvest_us']['p50']:g}",
                     f"{s['copy_us']['p50']:g}" if "copy_us" in s else "-",
                     f"{s['harvested']:g}"])
    out.append(_table(["protocol", "pages", "dirty", "GET|reap", "CLEAR|RESET", "harvest",
                       "copy", "harvested"], rows))
    out.append("\nguest running (paced), harvest every "
               f"{report['config']['harvest_ms']} ms: gap = the longest interval between two "
               "of a vCPU's writes that overlaps a harvest (us):")
    rows = []
    for r in report["running"]:
        rows.append([r["protocol"], str(r["pages"]), str(r["vcpus"]), str(r["writes_per_s"]),
                     "n/a" if r.get("faults_per_s") is None else str(r["faults_per_s"]),
                     str(r["harvests"]),
                     f"{r['harvest_us']['p50']:g}/{r['harvest_us']['p99']:g}",
                     f"{r['gap_us']['p50']:g}/{r['gap_us']['p99']:g}",
                     str(r.get("ring_full_exits_per_s", "-")),
                     f"{r['ring_full_wait_us']['p50']:g}" if "ring_full_wait_us" in r else "-"])
    out.append(_table(["protocol", "pages", "vcpus", "writes/s", "faults/s", "harvests",
                       "harvest p50/p99", "gap p50/p99", "full/s", "full wait"], rows))
    fits = report["fits"]
    out.append("\nfits (stopped GET against dirty pages): " + "; ".join(
        f"{k}: {f['intercept_us']:g} us + {f['ns_per_dirty_page']:g} ns/page, "
        f"{f['ns_per_bitmap_word']:g} ns/word" for k, f in sorted(fits.items())))
    cross = report["crossover"]
    if "method" in cross:
        out.append("")
        out += crossover_lines(cross)
    ana = report.get("crossover_analytic") or (None if "method" in cross else cross)
    if ana is not None:
        out.append(f"analytic cross-check (not the cost mode), sync "
                   f"{ana['sync_us_default']:g} us: " + "; ".join(
                       f"{row['pages']} pages: " + ("never" if v["xchg_slower_from_fraction"]
                                                    is None else
                                                    f"from fraction "
                                                    f"{v['xchg_slower_from_fraction']:g}")
                       for row in ana["by_slot"]
                       for s, v in row["by_sync_us"].items()
                       if s == f"{ana['sync_us_default']:g}"))
    if "comparison" in report:
        c = report["comparison"]
        out.append(f"\nmodel against kernel ({c['pages']} pages, normalised to the largest "
                   f"dirty count):")
        names = list(c["curves"])
        rows = [[str(d)] + [f"{c['curves'][n]['normalised'].get(str(d), math.nan):.3g}"
                            for n in names] for d in c["dirty_pages"]]
        out.append(_table(["dirty"] + names, rows))
        out += [f"  {s}" for s in c["sentences"]]
    out.append("\nclaims:")
    for cl in report["claims"]:
        out.append(f"({cl['id']}) {cl['claim']}\n    verdict: {cl['verdict']}\n"
                   f"    numbers: {cl['summary']}")
    return "\n".join(out)


# -- the plot ------------------------------------------------------------------------

def plot_kvm(report: dict[str, Any], directory: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5), constrained_layout=True)
    (a, b), (c, d) = axes
    styles = {"get": "o-", "clear-slot": "s--", "clear-64": "^:", "ring": "d-."}
    sizes = sorted({s["pages"] for s in report["stopped"]})
    for i, pages in enumerate(sizes):
        for protocol, style in styles.items():
            pts = sorted((s for s in report["stopped"] if s["protocol"] == protocol
                          and s["pages"] == pages), key=lambda s: s["dirty_pages"])
            if pts:
                a.plot([s["dirty_pages"] for s in pts], [s["harvest_us"]["p50"] for s in pts],
                       style, color=f"C{i}", label=f"{protocol}, {pages} pages")
    a.axhline(THRESHOLD_US, color="grey", lw=0.8)
    a.set(xscale="log", yscale="log", xlabel="dirty pages",
          ylabel="harvest, us (p50; GET, GET+CLEAR, reap+RESET)",
          title="kernel: harvest with the vCPU stopped")
    a.legend(fontsize="x-small", ncol=2)
    comp = report.get("comparison")
    if comp:
        for j, (name, curve) in enumerate(comp["curves"].items()):
            xs = [int(k) for k in curve["normalised"]]
            b.plot(xs, list(curve["normalised"].values()),
                   "o-" if name.startswith("kernel") else "x--", color=f"C{j}", label=name)
        b.set(xscale="log", yscale="log", xlabel=f"dirty pages of {comp['pages']}",
              ylabel="latency / latency at all pages dirty",
              title="model against kernel, normalised")
        b.legend(fontsize="x-small")
    cross = report["crossover"]
    if cross["by_slot"]:
        row = max(cross["by_slot"], key=lambda r: r["pages"])
        pages = row["pages"]
        first = next(iter(row["by_sync_us"].values()))
        if "xchg_harvest_us" in first:  # the cost mode
            xs = [int(d) for d in first["xchg_harvest_us"]]
            c.plot(xs, list(first["xchg_harvest_us"].values()), "k-", lw=2,
                   label=f"xchg GET, cost mode ({pages} pages)")
        pts = sorted((x for x in report["stopped"] if x["protocol"] == "get"
                      and x["pages"] == pages), key=lambda x: x["dirty_pages"])
        c.plot([x["dirty_pages"] for x in pts], [x["get_us"]["p50"] for x in pts], "ko",
               label="xchg GET, kernel measured p50")
        for i, (sync, v) in enumerate(sorted(row["by_sync_us"].items(),
                                             key=lambda kv: float(kv[0]))):
            if "srcu_harvest_us" in v:
                c.plot([int(d) for d in v["srcu_harvest_us"]],
                       list(v["srcu_harvest_us"].values()), "--", color=f"C{i}",
                       label=f"srcu GET, cost mode, sync {sync} us")
            else:
                c.axhline(v["srcu_get_us"], color=f"C{i}", ls="--",
                          label=f"srcu GET predicted, sync {sync} us")
        c.set(xscale="log", yscale="log", xlabel="dirty pages", ylabel="GET, us (virtual)",
              title=f"2012 crossover from the cost mode ({cross.get('srcu_protect', 'slot')} "
                    f"write-protect for srcu)")
        c.legend(fontsize="xx-small")
    run = report["running"]
    labels = [f"{r['protocol']}\n{r['pages']}p {r['vcpus']}v" for r in run]
    xs = list(range(len(run)))
    d.bar([x - 0.2 for x in xs], [max(r["gap_us"]["p50"], 1e-3) for r in run], 0.4,
          label="gap p50")
    d.bar([x + 0.2 for x in xs], [max(r["gap_us"]["p99"], 1e-3) for r in run], 0.4,
          label="gap p99")
    d.axhline(THRESHOLD_US, color="red", lw=0.8, label="200 us (60c34612)")
    d.set_xticks(xs, labels, fontsize="xx-small", rotation=60)
    d.set(yscale="log", ylabel="longest write gap overlapping a harvest, us",
          title="guest running: the gap a harvest puts in its timeline")
    d.legend(fontsize="x-small")
    host = report["host"]
    fig.suptitle(f"concurrent-dirty perf --engine kvm: Linux {host['kernel']}, "
                 f"{host['hypervisor']}, {host['cores']} cores, load {host['load_average']}, "
                 f"guest {host['guest_mode']}", fontsize="medium")
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in PLOT_FILES]
    for path in paths:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return paths


__all__ += ["SYNC_SWEEP_US"]
