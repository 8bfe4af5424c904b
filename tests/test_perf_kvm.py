"""``perf --engine kvm``: the kernel's dirty_log_perf_test in the harness.

Shapes, keys and verdict structure only: no timing assertions (the machine
is shared and the numbers are noisy). Tests that run guests are marked
``kvm`` and skip with the probe's reason where /dev/kvm is unusable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from concurrent_dirty.kvm.perf import (
    KvmPerfConfig,
    claims,
    get_fits,
    host_info,
    srcu_crossover,
)
from concurrent_dirty.kvm.vm import probe

PROBE = probe()
needs_kvm = pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "concurrent_dirty", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_without_kvm_perf_engine_kvm_is_one_line_exit_2_and_the_model_still_runs(tmp_path):
    env = {"CONCURRENT_DIRTY_KVM_DEVICE": "/nonexistent"}
    out = _cli("perf", "--engine", "kvm", env=env)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert "/nonexistent does not exist" in out.stderr
    model = _cli("perf", "--pages", "256", "--fraction", "1", "--rounds", "1",
                 "--algorithm", "xchg", "--quiet", env=env)
    assert model.returncode == 0, model.stderr
    assert "xchg" in model.stdout


def test_bad_kvm_sweep_settings_are_usage_errors():
    from concurrent_dirty.errors import UsageError

    for bad in (KvmPerfConfig(pages=[100]), KvmPerfConfig(rings=[300]),
                KvmPerfConfig(vcpus=[0]), KvmPerfConfig(rounds=0)):
        with pytest.raises(UsageError):
            bad.validate()


def test_host_info_names_kernel_hypervisor_cores_and_load():
    info = host_info()
    assert set(info) >= {"kernel", "hypervisor", "cores", "load_average", "guest_mode"}


def _synthetic() -> dict:
    """A report shaped as run_kvm_perf makes it, with made-up numbers."""
    stopped = []
    for pages in (4096, 65536):
        for dirty in (1, pages // 10, pages):
            us = 2 + 0.035 * dirty + pages / 64 * 0.01
            for protocol in ("get", "clear-slot"):
                p = {"protocol": protocol, "pages": pages, "fraction": dirty / pages,
                     "dirty_pages": dirty, "rounds": 1, "harvested": dirty,
                     "get_us": {"count": 1, "p50": us, "p99": us, "max": us},
                     "harvest_us": {"count": 1, "p50": 2 * us, "p99": 2 * us, "max": 2 * us}}
                if protocol == "get":
                    p["copy_us"] = {"count": 1, "p50": 30 * us, "p99": 30 * us, "max": 30 * us}
                else:
                    p["clear_us"] = p["get_us"]
                    p["clear_ioctls"] = 1
                stopped.append(p)
    gap = {"count": 5, "p50": 150.0, "p99": 400.0, "max": 500.0}
    running = [{"protocol": kind, "pages": 4096, "vcpus": 1, "writes_per_s": 1000,
                "harvests": 5, "harvest_us": gap, "gap_us": gap, "faults_per_s": 10,
                "harvested": 50} for kind in ("none", "get", "clear-slot")]
    running.append({"protocol": "ring-256", "pages": 4096, "vcpus": 1, "writes_per_s": 900,
                    "harvests": 5, "harvest_us": gap, "gap_us": gap, "faults_per_s": 9,
                    "reaped": 45, "ring_full_exits_per_s": 3, "ring_full_wait_us": gap})
    report = {"stopped": stopped, "running": running,
              "memslot_flip": {"slot_write_protect_ns_per_page": 5.0}}
    report["fits"] = get_fits(report)
    report["crossover"] = srcu_crossover(report, 1000.0)
    return report


def test_fits_crossover_and_claims_have_their_shape():
    report = _synthetic()
    fit = report["fits"]["get/65536"]
    assert fit["ns_per_dirty_page"] == pytest.approx(35.0, rel=1e-3)
    assert fit["intercept_us"] > 0
    cross = report["crossover"]
    assert cross["sync_us_default"] == 1000.0 and "60c34612" in cross["sync_us_source"]
    assert "assumptions" in cross
    row = cross["by_slot"][-1]["by_sync_us"]
    # srcu's cost does not depend on the dirty count; a larger sync moves the crossover up
    fractions = [row[k]["xchg_slower_from_fraction"] for k in ("10", "1000")]
    assert fractions[0] is not None
    assert fractions[1] is None or fractions[1] >= fractions[0]
    out = claims(report)
    assert [c["id"] for c in out] == ["i", "ii", "iii", "iv", "v"]
    for c in out:
        assert set(c) >= {"claim", "verdict", "numbers", "summary"}
        assert c["verdict"]
    assert out[4]["verdict"].startswith("holds")  # copy 30x the GET


@pytest.mark.kvm
@needs_kvm
def test_a_tiny_kernel_sweep_prints_verdicts_and_writes_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "kvm.json"
    out = _cli("perf", "--engine", "kvm", "--slot-pages", "256", "--fraction", "0.5,1",
               "--vcpus", "1", "--rounds", "1", "--run-seconds", "0.2", "--quiet",
               "--json", str(path), "--plot", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    assert "claims:" in out.stdout and "(v)" in out.stdout
    report = json.loads(path.read_text())
    assert set(report) >= {"host", "config", "stopped", "running", "fits", "crossover",
                           "claims", "comparison", "memslot_flip", "pace"}
    assert {s["protocol"] for s in report["stopped"]} >= {"get", "clear-slot", "clear-64"}
    assert {r["protocol"] for r in report["running"]} >= {"none", "get", "clear-slot"}
    for r in report["running"]:
        assert set(r["gap_us"]) == {"count", "p50", "p99", "max"}
        # faults from KVM_GET_STATS_FD (pf_taken), or n/a with the reason
        if r["faults_per_s"] is None:
            assert r["stats_error"]
        else:
            assert r["faults_source"].startswith("KVM_GET_STATS_FD")
            assert r["kvm_stats"]["pf_taken"] >= 0
    # the model side and the 2012 crossover come from the cost mode; the
    # analytic formula stays as a labelled cross-check
    assert report["crossover"]["method"] == "cost mode (virtual clock)"
    assert "cross-check" in report["crossover_analytic"]["label"]
    assert report["comparison"]["costs"]["sync_ns"] == 1e6
    assert any(n.startswith("model ring-") for n in report["comparison"]["curves"])
    assert "2012 crossover from the cost mode" in out.stdout
    assert report["host"]["kernel"] and report["host"]["load_average"]
    assert set(report["comparison"]["curves"]) >= {"model xchg", "kernel get"}
    assert len(report["comparison"]["sentences"]) == 4
    assert (tmp_path / "plots" / "dirty_log_perf_kvm.png").exists()
    assert (tmp_path / "plots" / "dirty_log_perf_kvm.svg").exists()


@pytest.mark.kvm
@needs_kvm
def test_a_vcpu_restarts_from_its_first_instruction():
    from concurrent_dirty.kvm.perf import _Rig
    from concurrent_dirty.kvm.vcpu import kick_handler

    with kick_handler():
        rig = _Rig(128, 1)
        try:
            vcpu = rig.vcpus[0]
            for n in (3, 5):
                rig.load(vcpu, list(range(n)), passes=1, delay=0)
                rig.run_once(vcpu)
                assert vcpu.progress == n
                rig.get()
                assert sum(w.bit_count() for w in rig.words()) == n
        finally:
            rig.close()
