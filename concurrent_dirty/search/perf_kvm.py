"""``concurrent-dirty perf --engine kvm``: the kernel sweep
(:mod:`concurrent_dirty.kvm.perf`) and the model held against it.

The model side runs the model's ``perf`` (:mod:`.perf`) on a slot of the
kernel sweep's smallest size at the same dirty counts, one vCPU. Both
sides are **normalised** (each curve divided by its own value at the
largest dirty count), since the model is Python and the kernel is not:
model ``xchg`` against kernel GET, ``manual`` against GET+CLEAR (the
harvest: GET and CLEAR together), the kernel's ring (reap + RESET) alone
(the model's ``perf`` has no ring rig) and the model's ``srcu`` alone (no
srcu GET in today's kernel; its 2012 cost is predicted by
:func:`concurrent_dirty.kvm.perf.srcu_crossover`).
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..kvm.perf import SYNC_SWEEP_US, THRESHOLD_US, srcu_crossover
from .perf import PerfConfig, run_perf

__all__ = ["compare", "format_report", "plot_kvm"]

PLOT_FILES = ("dirty_log_perf_kvm.png", "dirty_log_perf_kvm.svg")

#: (model algorithm, kernel protocol, the kernel's value key)
PAIRS = (("xchg", "get", "get_us"), ("manual", "clear-slot", "harvest_us"),
         (None, "ring", "harvest_us"), ("srcu", None, None))


def compare(report: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Run the model at the kernel's smallest slot and dirty counts; return
    both sides' curves, normalised, and a sentence per curve."""
    stopped = report["stopped"]
    pages = min(s["pages"] for s in stopped)
    dirty = sorted({s["dirty_pages"] for s in stopped if s["pages"] == pages})
    config = PerfConfig(algorithms=["xchg", "manual", "srcu"], vcpus=[1], pages=pages,
                        fractions=[d / pages for d in dirty], rounds=3, seconds=5.0,
                        seed=seed)
    model = run_perf(config)
    curves: dict[str, dict[str, Any]] = {}
    for algorithm, protocol, key in PAIRS:
        if algorithm is not None:
            pts = {p.dirty_pages: p.to_json() for p in model.points if p.algorithm == algorithm}
            ms = {d: pts[d]["get_ms"]["p50"] + pts[d]["clear_ms"]["p50"] for d in dirty
                  if d in pts}
            curves[f"model {algorithm}"] = _normalised({d: v * 1e3 for d, v in ms.items()})
        if protocol is not None:
            ks = {s["dirty_pages"]: float(s[key]["p50"]) for s in stopped
                  if s["protocol"] == protocol and s["pages"] == pages}
            if ks:
                curves[f"kernel {protocol}"] = _normalised(ks)
    sentences = []
    for algorithm, protocol, _ in PAIRS:
        m = curves.get(f"model {algorithm}") if algorithm else None
        k = curves.get(f"kernel {protocol}") if protocol else None
        sentences.append(_sentence(algorithm, protocol, m, k))
    return {"pages": pages, "dirty_pages": dirty, "curves": curves, "sentences": sentences,
            "model_error": model.error, "model_config": config.to_json(),
            "normalisation": "each curve divided by its own median at the largest dirty "
                             "count; raw medians in 'raw_us'"}


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
        return (f"model {algorithm} against kernel {protocol}: from one dirty page to all "
                f"the kernel grows {gk:g}x, the model {gm:g}x: "
                + ("the shapes agree (within 3x)" if agree else
                   "the shapes part: " + ("the model's fixed cost (Python per call) "
                                          "hides the per-page growth" if gm < gk else
                                          "the model grows faster than the kernel")))
    if k:
        return (f"kernel {protocol}: grows {k['growth']:g}x from one dirty page to all "
                f"(reap in Python, RESET in the kernel); the model's perf has no ring rig")
    if m:
        return (f"model {algorithm}: grows {m['growth']:g}x; no srcu GET in today's kernel: "
                f"its 2012 cost is the prediction (a fixed synchronize_srcu_expedited plus a "
                f"whole-slot write-protect: flat in the dirty count)")
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
                     str(r.get("faults_per_s", "-")), str(r["harvests"]),
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
    out.append(f"\n2012 prediction (srcu GET vs xchg GET), sync = synchronize_srcu_expedited "
               f"(default {cross['sync_us_default']:g} us: {cross['sync_us_source']}):")
    rows = []
    for row in cross["by_slot"]:
        rows.append([str(row["pages"])] + [
            "never" if v["xchg_slower_from_fraction"] is None
            else f"{v['xchg_slower_from_fraction']:g}"
            for _, v in sorted(row["by_sync_us"].items(), key=lambda kv: float(kv[0]))])
    syncs = sorted(cross["by_slot"][0]["by_sync_us"], key=float) if cross["by_slot"] else []
    out.append(_table(["pages"] + [f"sync {s} us" for s in syncs], rows))
    if cross["by_slot"]:
        row = cross["by_slot"][-1]
        need = row["by_sync_us"][f"{cross['sync_us_default']:g}"][
            "crossover_needs_slot_write_protect_below_ns_per_page"]
        out.append(f"whole-slot write-protect measured: "
                   f"{cross['slot_write_protect_ns_per_page']:g} ns/page; at "
                   f"{row['pages']} pages and sync {cross['sync_us_default']:g} us a "
                   f"crossover needs it below {need:g} ns/page")
    out.append("(xchg slower than srcu from this dirty fraction on.) assumptions: "
               + cross["assumptions"])
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


def recompute_crossover(report: dict[str, Any], sync_us: float) -> None:
    report["crossover"] = srcu_crossover(report, sync_us)


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
    fits = {f["pages"]: f for f in report["fits"].values() if f["protocol"] == "get"}
    if cross["by_slot"] and fits:
        row = max(cross["by_slot"], key=lambda r: r["pages"])
        fit = fits[row["pages"]]
        pages = row["pages"]
        grid = [pages * 10 ** (k / 10) for k in range(-round(10 * math.log10(pages)), 1)]
        c.plot(grid, [fit["intercept_us"] + fit["ns_per_dirty_page"] / 1e3 * g for g in grid],
               "k-", lw=2, label=f"xchg GET, measured line ({pages} pages)")
        pts = sorted((x for x in report["stopped"] if x["protocol"] == "get"
                      and x["pages"] == pages), key=lambda x: x["dirty_pages"])
        c.plot([x["dirty_pages"] for x in pts], [x["get_us"]["p50"] for x in pts], "ko",
               label="xchg GET, measured p50")
        for i, (sync, v) in enumerate(sorted(row["by_sync_us"].items(),
                                             key=lambda kv: float(kv[0]))):
            c.axhline(v["srcu_get_us"], color=f"C{i}", ls="--",
                      label=f"srcu GET predicted, sync {sync} us")
        c.set(xscale="log", yscale="log", xlabel="dirty pages",
              ylabel="GET, us",
              title="predicted 2012 crossover: srcu (flat) against xchg")
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


__all__ += ["SYNC_SWEEP_US", "recompute_crossover"]
