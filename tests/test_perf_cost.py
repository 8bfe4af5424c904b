"""``perf --cost-mode kernel``: the model under the controlled engine on a
virtual clock at the kernel's costs; and KVM_GET_STATS_FD's parsing.

Deterministic: no timing assertions. The virtual clock's arithmetic is
checked on hand-made event lists; the cost mode's promise that it changes
no schedule is checked by running the same seed with and without the
recorder; the crossover's direction by sweeping the sync cost.
"""

from __future__ import annotations

import json
import pathlib
import struct
from dataclasses import replace

import pytest

from concurrent_dirty.cli.main import main
from concurrent_dirty.errors import ExecutionFailed, UsageError
from concurrent_dirty.kvm import _abi
from concurrent_dirty.search.perf_cost import (
    DEFAULT_COSTS,
    CostConfig,
    Costs,
    costs_from_kernel,
    price,
    run_cost_sweep,
    simulate,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: Round numbers so that every expected sum is exact.
C = Costs(ioctl_ns=1000.0, word_ns=2.0, protect_ns=30.0, slot_protect_ns=5.0, sync_ns=7000.0,
          lock_ns=10.0, write_ns=100.0, fault_ns=400.0, push_ns=60.0, reap_ns=500.0,
          flush_ns=0.0, copy_ns=1500.0, srcu_protect="slot")
H = 1  # the harvester's thread id in these event lists (vCPU 0 is thread 0)


def test_the_clock_charges_each_operation_its_cost():
    events = [(H, "mark:begin:get", "", 0), (H, "mark:ioctl", "", 0),
              (H, "load", "dirty_bitmap:0", 0), (H, "xchg", "dirty_bitmap:0", 0),
              (H, "store", "dirty_bitmap:0", 64),
              (H, "lock", "mmu_lock", 0), (H, "fetch_and", "pages", 3),
              (H, "fetch_and", "pages", 5), (H, "unlock", "mmu_lock", 0),
              (H, "mark:end:get", "", 0), (H, "mark:copy", "", 2)]
    p = price(events, C, pages=128, harvester=H)
    assert p.phases["get"] == 1000 + 3 * 2 + 10 + 2 * 30
    assert p.phases["copy"] == 2 * 1500
    assert p.clocks[H] == 1000 + 3 * 2 + 10 + 2 * 30


def test_srcu_pays_the_grace_period_and_the_whole_slot_once():
    events = [(H, "mark:begin:get", "", 0), (H, "fetch_add", "srcu_gp", 0),
              (H, "wait", "srcu", 0), (H, "lock", "mmu_lock", 0),
              *[(H, "fetch_and", "pages", g) for g in range(3)],
              (H, "unlock", "mmu_lock", 0), (H, "mark:end:get", "", 0)]
    slot = price(events, C, pages=128, harvester=H, srcu_algorithm=True)
    assert slot.phases["get"] == 7000 + 10 + 128 * 5  # one slot protect, not three
    harvested = price(events, replace(C, srcu_protect="harvested"), pages=128, harvester=H,
                      srcu_algorithm=True)
    assert harvested.phases["get"] == 7000 + 10 + 3 * 30
    # xchg's events are never charged the slot
    assert price(events, C, pages=128, harvester=H).phases["get"] == 7000 + 10 + 3 * 30


def test_a_grace_period_waits_for_a_section_that_began_before_it():
    # vCPU 0 enters its section at 0 and, after a write (100), leaves it at
    # 100; the harvester starts the grace period at 0 and must wait until 100.
    events = [(0, "enter", "srcu", 0), (H, "mark:begin:get", "", 0),
              (H, "fetch_add", "srcu_gp", 0), (0, "cmpxchg", "pages", 1),
              (0, "exit", "srcu", 0), (H, "wait", "srcu", 0), (H, "mark:end:get", "", 0)]
    assert price(events, C, pages=64, harvester=H).phases["get"] == 7000  # 7000 > 100
    cheap = replace(C, sync_ns=1.0)
    assert price(events, cheap, pages=64, harvester=H).phases["get"] == 100


def test_a_lock_hand_off_costs_a_wait_only_when_the_holds_overlap_in_virtual_time():
    # vCPU 0 faults at 0: takes mmu_lock (fault 400 + lock 10), holds it until 410.
    writer = [(0, "lock", "mmu_lock", 0), (0, "unlock", "mmu_lock", 0)]
    # the harvester reaches the lock at 1000 (its ioctl): after the release, no wait
    late = [(H, "mark:begin:get", "", 0), (H, "mark:ioctl", "", 0), *writer,
            (H, "lock", "mmu_lock", 0), (H, "mark:end:get", "", 0)]
    assert price(late, C, pages=64, harvester=H).phases["get"] == 1000 + 10
    # with a cheap ioctl it arrives at 100, inside the hold: it waits until 410
    early = price(late, replace(C, ioctl_ns=100.0), pages=64, harvester=H)
    assert early.phases["get"] == 410 + 10
    # a vCPU that takes the lock the harvester holds waits for the release
    held = [(H, "lock", "mmu_lock", 0), (H, "mark:ioctl", "", 0), (H, "unlock", "mmu_lock", 0),
            (0, "lock", "mmu_lock", 0)]
    p = price(held, C, pages=64, harvester=H)
    assert p.vcpu_waits == [1010.0]
    assert p.clocks[0] == 1010 + 400 + 10


def test_ring_operations_are_charged_push_reap_and_words():
    events = [(0, "store", "ring", 0), (0, "store", "ring", 1), (0, "store", "ring_index", 0),
              (H, "load", "ring", 1), (H, "load", "ring", 0),
              (H, "set_bit", "algo:collected:0", 0), (H, "store", "ring", 1)]
    p = price(events, C, pages=64, harvester=H)
    assert p.clocks[0] == 60 + 2
    assert p.clocks[H] == 2 + 2 + 500 + 2


@pytest.mark.parametrize("spec", ["srcu", "xchg", "manual", "ring-64"])
def test_the_cost_mode_changes_no_schedule(spec):
    kw = dict(vcpus=2, writes=6, seed=3, trace=True)
    costed = simulate(spec, 256, 40, record=True, **kw)
    plain = simulate(spec, 256, 40, record=False, **kw)
    assert costed.events and not plain.events
    assert costed.schedule == plain.schedule
    assert costed.trace == plain.trace
    assert costed.harvested == plain.harvested >= 40
    # deterministic: the same seed records the same operations, priced the same
    again = simulate(spec, 256, 40, record=True, **kw)
    assert again.events == costed.events
    h = costed.vcpus
    assert price(again.events, C, pages=256, harvester=h) == \
        price(costed.events, C, pages=256, harvester=h)
    # and a schedule of its own: two vCPUs and the harvester all ran
    assert set(costed.schedule) == {0, 1, 2}


def test_another_seed_gives_another_schedule():
    a = simulate("xchg", 256, 40, vcpus=2, writes=6, seed=1)
    b = simulate("xchg", 256, 40, vcpus=2, writes=6, seed=2)
    assert a.schedule != b.schedule


def test_the_crossover_moves_up_as_the_sync_cost_grows():
    # a cheap whole-slot protect (1 ns a page against 30 per dirty page), so
    # that the old GET wins at many dirty pages while the sync is cheap
    costs = replace(C, slot_protect_ns=1.0)
    report = run_cost_sweep(CostConfig(algorithms=["srcu", "xchg"], pages=[1024],
                                       dirty=[1, 16, 128, 512, 1024], writes=2), costs)
    row = report.crossover["by_slot"][0]["by_sync_us"]
    syncs = sorted(row, key=float)
    assert syncs == ["10", "30", "100", "300", "1000", "3000"]
    where = [row[s]["xchg_slower_from_dirty_pages"] for s in syncs]
    assert where[0] is not None  # a 10 us grace period: xchg is slower from some count on
    assert where[-1] is None     # 3 ms: never within 1024 pages
    as_numbers = [w if w is not None else float("inf") for w in where]
    assert as_numbers == sorted(as_numbers)
    # srcu's harvest is flat in the dirty count (the whole slot; only zeroing the
    # harvested half's 16 words adds to it) and grows with the sync
    for s in syncs:
        values = row[s]["srcu_harvest_us"].values()
        assert max(values) - min(values) <= (16 * C.word_ns + 10) / 1e3
    flat = [row[s]["srcu_get_us"] for s in syncs]
    assert flat == sorted(flat) and flat[0] < flat[-1]
    # where there is no crossover, the slot protect a crossover needs falls as the sync grows
    need = [row[s]["crossover_needs_slot_write_protect_below_ns_per_page"] for s in syncs]
    assert need == sorted(need, reverse=True)


def test_costs_from_the_documented_kernel_report_are_the_built_in_defaults():
    report = json.loads((ROOT / "docs/perf/dirty_log_perf_kvm.json").read_text())
    derived = costs_from_kernel(report)
    for name in ("ioctl_ns", "word_ns", "protect_ns", "slot_protect_ns", "write_ns",
                 "fault_ns", "push_ns", "reap_ns", "copy_ns"):
        assert getattr(derived, name) == pytest.approx(getattr(DEFAULT_COSTS, name),
                                                       rel=2e-3, abs=0.6), name
    assert derived.sync_ns == DEFAULT_COSTS.sync_ns == 1e6
    with pytest.raises(UsageError):
        costs_from_kernel({"fits": {}})


@pytest.mark.parametrize("bad", [CostConfig(sync_us=0.0), CostConfig(sync_us=2e6),
                                 CostConfig(srcu_protect="half"), CostConfig(pages=[32]),
                                 CostConfig(algorithms=["ring-3"]), CostConfig(vcpus=0),
                                 CostConfig(algorithms=["nonesuch"])])
def test_bad_cost_mode_settings_are_usage_errors(bad):
    with pytest.raises(UsageError):
        bad.validate()


def test_perf_cost_mode_cli_prints_the_table_and_the_crossover(tmp_path, capsys):
    path = tmp_path / "cost.json"
    assert main(["perf", "--cost-mode", "kernel", "--pages", "256", "--fraction", "0.1,1",
                 "--algorithm", "srcu", "--algorithm", "xchg", "--algorithm", "ring-64",
                 "--srcu-sync-us", "30", "--quiet", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "harvest us" in out and "2012 crossover from the cost mode" in out
    report = json.loads(path.read_text())
    assert report["config"]["sync_us"] == 30.0 and report["costs"]["sync_ns"] == 30000.0
    assert [(p["algorithm"], p["dirty_pages"]) for p in report["points"]] == [
        (a, d) for a in ("srcu", "xchg", "ring-64") for d in (26, 256)]
    assert all(p["harvested"] >= p["dirty_pages"] - p["exit_reaped"]
               for p in report["points"])
    assert report["crossover"]["by_slot"][0]["pages"] == 256


@pytest.mark.parametrize("args, expected", [
    (["--srcu-sync-us", "0"], "expected a number of microseconds > 0 and <= 1000000"),
    (["--srcu-protect", "half"], "invalid choice: 'half'"),
    (["--costs", "/nonexistent.json"], "expected --costs to name a perf --engine kvm JSON"),
    (["--algorithm", "ring-3"], "expected a ring size from 16 to 65536 entries"),
    (["--pages", "32"], "expected cost-mode pages from 64 to 262144"),
])
def test_bad_cost_mode_options_are_one_line_exit_2(capsys, args, expected):
    try:
        code = main(["perf", "--cost-mode", "kernel", "--quiet", *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err


# -- KVM_GET_STATS_FD --------------------------------------------------------------

def _stats_buffer(names: list[tuple[str, int, list[int]]], name_size: int = 48) -> bytes:
    """A stats fd's bytes: header, id, descriptors, data (as the kernel lays
    them out: kvm_stats_header, then id, then kvm_stats_desc + name each)."""
    header = _abi.STATS_HEADER.size
    id_offset = header
    desc_offset = id_offset + name_size
    step = _abi.STATS_DESC.size + name_size
    data_offset = desc_offset + step * len(names)
    buf = bytearray(_abi.STATS_HEADER.pack(0, name_size, len(names), id_offset, desc_offset,
                                           data_offset))
    buf += b"kvm-42/vcpu-0".ljust(name_size, b"\0")
    data = bytearray()
    for name, flags, values in names:
        buf += _abi.STATS_DESC.pack(flags, 0, len(values), len(data), 0)
        buf += name.encode().ljust(name_size, b"\0")
        data += struct.pack(f"<{len(values)}Q", *values)
    return bytes(buf + data)


def test_stats_descriptors_are_parsed_from_a_synthetic_buffer():
    buf = _stats_buffer([("pf_taken", 0, [123]), ("pf_fixed", 0, [45]),
                         ("halt_wait_hist", 4, [1, 2, 3])])
    layout = _abi.parse_stats(buf)
    assert layout.ident == "kvm-42/vcpu-0"
    assert set(layout.descs) == {"pf_taken", "pf_fixed", "halt_wait_hist"}
    assert layout.descs["halt_wait_hist"][1:] == (3, "log-hist")
    data = buf[layout.data_offset:]
    assert layout.values(data) == {"pf_taken": 123, "pf_fixed": 45, "halt_wait_hist": 6}
    assert layout.data_size == 5 * 8


@pytest.mark.parametrize("buf", [b"", b"\0" * 10, _abi.STATS_HEADER.pack(0, 48, 99, 24, 72, 0)])
def test_a_malformed_stats_buffer_is_a_one_line_error(buf):
    with pytest.raises(ExecutionFailed) as info:
        _abi.parse_stats(buf)
    assert "\n" not in str(info.value)


def test_a_short_data_block_is_a_one_line_error():
    buf = _stats_buffer([("pf_taken", 0, [1])])
    layout = _abi.parse_stats(buf)
    with pytest.raises(ExecutionFailed, match="pf_taken"):
        layout.values(b"")


@pytest.mark.kvm
def test_this_machines_kvm_stats_are_read():
    from concurrent_dirty.kvm.vm import KvmVm, probe

    found = probe()
    if found.reason is not None:
        pytest.skip(f"no KVM: {found.reason}")
    import os

    vm = KvmVm()
    try:
        fd, layout = _abi.open_stats(vm.fd, "the VM")
        try:
            assert layout.ident.startswith("kvm-")
            values = _abi.read_stats(fd, layout)
            assert values and all(isinstance(v, int) and v >= 0 for v in values.values())
        finally:
            os.close(fd)
        vcpu = _abi.ioctl(vm.fd, _abi.KVM_CREATE_VCPU, 0, what="vcpu 0")
        vm.fds.append(vcpu)
        fd, layout = _abi.open_stats(vcpu, "vcpu 0")
        try:
            assert "/vcpu-0" in layout.ident
            assert "pf_taken" in _abi.read_stats(fd, layout)
        finally:
            os.close(fd)
    finally:
        vm.close()
