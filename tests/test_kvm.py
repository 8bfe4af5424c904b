"""The kvm engine: the guest's encoding, the VMM layer on the real
/dev/kvm, the protocols, the oracles and their mutants, teardown on every
path, and the command line.

Tests marked ``kvm`` run guests; where this machine has no usable /dev/kvm
they skip with the probe's one-line reason (``.ci/run`` prints whether they
ran). The others need no KVM.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from concurrent_dirty.errors import UsageError
from concurrent_dirty.harness.scenario import Scenario
from concurrent_dirty.kvm import guest
from concurrent_dirty.kvm._abi import KvmIoctlError
from concurrent_dirty.kvm.program import PATTERNS, draw_program, write_list
from concurrent_dirty.kvm.vm import KvmVm, probe

PROBE = probe()


def _lacks(algorithm: str) -> str | None:
    """Why ``algorithm`` cannot run here (no KVM, or not its capability)."""
    from concurrent_dirty.kvm.registry import resolve_protocol
    from concurrent_dirty.kvm.vm import KvmUnavailable

    try:
        PROBE.require(resolve_protocol(algorithm).interface)
    except KvmUnavailable as exc:
        return str(exc)
    return None

CORRECT = ("kvm-get", "kvm-clear", "kvm-ring")
MUTANTS = ("kvm-clear-copy-first", "kvm-clear-all-ones", "kvm-get-skip-tail",
           "kvm-get-stale-snapshot", "kvm-toggle-no-recopy", "kvm-ring-copy-before-reset",
           "kvm-ring-no-reset")


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "concurrent_dirty", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# -- the guest (no KVM needed) ---------------------------------------------------------

@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is not installed")
def test_the_guest_encoding_is_what_its_comments_say(tmp_path):
    code = guest.assemble()
    path = tmp_path / "guest.bin"
    path.write_bytes(code)
    out = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel",
                          str(path)], capture_output=True, text=True, check=True).stdout
    decoded = {}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t([0-9a-f ]+)\t(.*)$", line)
        if m:
            decoded[int(m.group(1), 16)] = m.group(3).split()[0]
    alias = {"je": "jz", "jne": "jnz", "jae": "jae", "lock": "lock"}
    rows = guest.listing()
    assert sorted(decoded) == [offset for offset, _, _ in rows]
    for offset, raw, comment in rows:
        want = comment.split()[0]
        got = alias.get(decoded[offset], decoded[offset])
        assert got == alias.get(want, want), f"{offset:#x} {raw.hex()}: {comment!r} is {got}"


def test_the_guest_jumps_land_on_their_labels():
    code = guest.assemble()
    labels = {}
    pos = 0
    for label, raw, _ in guest._PROGRAM:
        if label:
            labels[label] = pos
        pos += len(raw)
    for offset, raw, comment in guest.listing():
        if "->" in comment:
            target = comment.split("->")[1].split()[0]
            rel = struct.unpack("<b", raw[-1:])[0]
            assert offset + len(raw) + rel == labels[target], comment
    assert len(code) < 4096


def test_the_layout_refuses_more_than_four_gib_of_logged_memory():
    layout = guest.GuestLayout(nvcpus=1, data_pages=(4 << 30) // 4096 + 1, list_entries=1)
    with pytest.raises(ValueError, match=r"^expected at most 4 GiB of logged memory, got "
                                         r"1048577 pages$"):
        layout.build(memoryview(bytearray(layout.vcpu_area)))


# -- the program space (no KVM needed) -----------------------------------------------

def test_the_program_space_draws_every_dimension():
    scenario = Scenario(engine="kvm", algorithm="kvm-clear")
    programs = [draw_program(scenario, n, max_vcpus=2, interface="manual")
                for n in range(1, 301)]
    assert {p.pattern for p in programs} == set(PATTERNS)
    assert {p.vcpus for p in programs} == {1, 2}
    assert {p.pacing for p in programs} == {"back-to-back", "delay", "jitter"}
    assert {p.clear_words for p in programs} == {0, 1, 2, 4}
    assert {p.initially_set for p in programs} == {False, True}
    assert any(p.toggles for p in programs) and any(not p.toggles for p in programs)
    assert any(n % 64 for p in programs for n in p.slot_pages)
    assert any(len(p.slot_pages) > 1 for p in programs)
    ring = [draw_program(Scenario(engine="kvm", algorithm="kvm-ring"), n, max_vcpus=2,
                         interface="ring") for n in range(1, 101)]
    assert {p.ring_entries for p in ring} == {256, 512, 1024, 4096}


def test_given_options_pin_the_program():
    scenario = Scenario(engine="kvm", algorithm="kvm-ring", writers=1, slots=3, pages=65,
                        workload="edges", writes=5, ring_entries=512, interval=0.001,
                        guest_delay=7, toggles=0,
                        pinned=("writers", "slots", "pages", "workload", "writes",
                                "ring_entries", "interval"))
    for n in range(1, 50):
        p = draw_program(scenario, n, max_vcpus=2, interface="ring")
        assert (p.vcpus, p.slot_pages, p.pattern, p.writes, p.ring_entries, p.interval,
                p.pacing, p.guest_delay, p.toggles) == (
            1, (65, 65, 65), "edges", 5, 512, 0.001, "delay", 7, ())


def test_the_same_seed_draws_the_same_programs_and_lists():
    s = Scenario(engine="kvm", algorithm="kvm-get", seed=5)
    a = [draw_program(s, n, max_vcpus=2, interface="bitmap") for n in range(1, 20)]
    b = [draw_program(s, n, max_vcpus=2, interface="bitmap") for n in range(1, 20)]
    assert a == b
    assert write_list(a[3], 0, 5, 4) == write_list(b[3], 0, 5, 4)
    c = [draw_program(Scenario(engine="kvm", algorithm="kvm-get", seed=6), n, max_vcpus=2,
                      interface="bitmap") for n in range(1, 20)]
    assert a != c


def test_edge_patterns_hit_a_slots_first_and_last_pages_and_a_words_bits():
    s = Scenario(engine="kvm", algorithm="kvm-get", slots=2, pages=100, workload="edges",
                 writes=400, pinned=("slots", "pages", "workload", "writes"))
    p = draw_program(s, 1, max_vcpus=1, interface="bitmap")
    pages = set(write_list(p, 0, 0, 1))
    assert {0, 99, 100, 199, 64, 164, 63, 163} <= pages
    s = Scenario(engine="kvm", algorithm="kvm-get", slots=1, pages=130, workload="word-bits",
                 writes=400, pinned=("slots", "pages", "workload", "writes"))
    p = draw_program(s, 1, max_vcpus=1, interface="bitmap")
    assert set(write_list(p, 0, 0, 1)) == {0, 63, 64, 127, 128, 129}


def test_kvm_only_workloads_are_refused_on_the_model():
    with pytest.raises(UsageError, match=r"^expected a workload in \['uniform', 'hot', "
                                         r"'sequential'\] on the threads engine, got 'edges'"):
        Scenario(engine="threads", workload="edges")


def test_a_pinned_ring_smaller_than_the_kernels_is_refused():
    with pytest.raises(UsageError, match=r"^expected ring_entries from 256 to 65536 on the "
                                         r"kvm engine"):
        Scenario(engine="kvm", algorithm="kvm-ring", ring_entries=8, pinned=("ring_entries",))


# -- the probe and the command line without KVM ---------------------------------------

def test_an_absent_device_is_one_line_and_exit_2(tmp_path):
    missing = str(tmp_path / "kvm")
    assert probe(missing).reason == (f"{missing} does not exist: this machine offers no KVM "
                                     f"(a VM without nested virtualization, or the kvm module "
                                     f"not loaded)")
    out = tmp_path / "out.json"
    r = _cli("stress", "--engine", "kvm", "--seconds", "1", "--json", str(out),
             env={"CONCURRENT_DIRTY_KVM_DEVICE": missing})
    assert r.returncode == 2
    assert r.stderr == f"concurrent-dirty: error: {probe(missing).reason}\n"
    assert not out.exists()


def test_an_unopenable_device_says_why(tmp_path):
    path = tmp_path / "kvm"
    path.write_text("")
    path.chmod(0)
    reason = probe(str(path)).reason
    if os.geteuid() == 0:  # root opens anything: the API check speaks instead
        assert reason is not None and "answered but" in reason
    else:
        assert reason is not None and reason.startswith(f"cannot open {path}: ")


@pytest.mark.parametrize("args, message", [
    (["--engine", "threads", "--algorithm", "kvm-get"],
     "expected algorithms and engines that pair, got a kernel protocol 'kvm-get' with "
     "--engine threads (a kernel protocol runs on --engine kvm only)"),
    (["--engine", "kvm", "--algorithm", "xchg"],
     "expected algorithms and engines that pair, got a model algorithm 'xchg' with --engine "
     "kvm (a model algorithm runs on threads, processes and the controlled schedulers "
     "(fuzz))"),
    (["--engine", "threads", "--guest-delay", "3"],
     "expected --guest-delay with --engine kvm only (the guest's options), got it with "
     "--engine threads"),
])
def test_pairings_that_cannot_run_are_usage_errors(args, message):
    r = _cli("stress", "--seconds", "1", *args)
    assert (r.returncode, r.stderr, r.stdout) == (2, f"concurrent-dirty: error: {message}\n", "")


def test_the_controlled_engines_refuse_a_kernel_protocol_in_one_line():
    r = _cli("fuzz", "--algorithm", "kvm-ring", "--seconds", "1", "--jobs", "1")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.endswith("got 'kvm-ring' (the kernel protocols and their kvm-* mutants run "
                             "on the real kernel: concurrent-dirty stress --engine kvm)\n")
    assert r.stderr.count("\n") == 1


# -- the VMM layer on the real kernel ----------------------------------------------------

def _vm_with_guest(pages: int = 64, writes: int = 64, delay: int = 0):
    vm = KvmVm()
    layout = guest.GuestLayout(nvcpus=1, data_pages=pages, list_entries=writes)
    system = vm.add_system(layout)
    vm.add_data_slots([pages])
    from concurrent_dirty.kvm.vcpu import KvmVcpu

    vcpu = KvmVcpu(vm, 0, layout, system)
    lst = layout.write_list(0)
    struct.pack_into(f"<{writes}Q", system, lst, *[i % pages for i in range(writes)])
    for name, value in ((guest.CB.LIST, lst), (guest.CB.COUNT, writes),
                        (guest.CB.DONE, layout.done(0)), (guest.CB.DATA_BASE, guest.DATA_BASE),
                        (guest.CB.DELAY, delay)):
        vcpu.cb_store(name, value)
    return vm, vcpu, system


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_guest_writes_its_pages_and_the_log_reports_them():
    vm, vcpu, system = _vm_with_guest(pages=100, writes=100)
    try:
        vcpu.cb_store(guest.CB.PASSES, 3)
        from concurrent_dirty.kvm.vcpu import kick_handler

        with kick_handler():
            vcpu.start()
            assert vcpu.done.wait(10)
        assert vcpu.error is None
        assert vcpu.progress == 300
        slot = vm.slots[0]
        version, vcpu_id, seq, tsc = struct.unpack_from("<4Q", slot.memory, 99 * 4096)
        assert (version, vcpu_id, seq) == (3, 0, 300) and tsc > 0
        buf = ctypes.create_string_buffer(16)
        vm.get_dirty_log(slot, buf)
        assert struct.unpack("<2Q", buf.raw) == ((1 << 64) - 1, (1 << 36) - 1)
    finally:
        system.release()
        vm.close()


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_kick_gets_a_vcpu_out_of_kvm_run():
    # The guest loops forever with no exit of its own: only the kick
    # (immediate_exit and a signal to the thread) can end KVM_RUN.
    from concurrent_dirty.kvm.vcpu import kick_handler

    vm, vcpu, system = _vm_with_guest()
    try:
        with kick_handler():
            vcpu.start()
            time.sleep(0.3)
            assert vcpu.thread is not None and vcpu.thread.is_alive()
            assert vcpu.progress > 0
            t0 = time.monotonic()
            vcpu.kick()
            vcpu.join(5.0)
            assert not vcpu.thread.is_alive()
            assert time.monotonic() - t0 < 5.0
        assert vcpu.error is None
    finally:
        system.release()
        vm.close()


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_guest_fault_is_a_shutdown_with_its_registers():
    from concurrent_dirty.kvm.vcpu import kick_handler

    vm, vcpu, system = _vm_with_guest()
    try:
        vcpu.cb_store(guest.CB.DATA_BASE, 1 << 46)  # not mapped: #PF, no IDT: triple fault
        with kick_handler():
            vcpu.start()
            assert vcpu.done.wait(10)
        assert re.match(r"^vcpu 0: the guest shut down \(a triple fault: an exception with "
                        r"no handler\) at rip 0x[0-9a-f]+ \(code offset 0x3f\), ",
                        str(vcpu.error)), str(vcpu.error)
    finally:
        system.release()
        vm.close()


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_ioctl_errors_name_the_ioctl_its_arguments_and_errno():
    vm, vcpu, system = _vm_with_guest(pages=100)
    try:
        from concurrent_dirty.kvm.vm import Memslot

        ghost = Memslot(7, 0, 64, 0, vm.slots[0].memory, True)
        with pytest.raises(KvmIoctlError, match=r"^KVM_GET_DIRTY_LOG\(slot 7\) failed: ENOENT "
                                                r"\(No such file or directory\)$"):
            vm.get_dirty_log(ghost, ctypes.create_string_buffer(8))
        with pytest.raises(KvmIoctlError, match=r"^KVM_CLEAR_DIRTY_LOG\(slot 1, first_page 3, "
                                                r"num_pages 64\) failed: EINVAL"):
            vm.clear_dirty_log(vm.slots[0], 3, 64, ctypes.create_string_buffer(8))
        with pytest.raises(KvmIoctlError, match=r"^KVM_ENABLE_CAP\(cap 223, args 0x1000\) "
                                                r"failed: EINVAL"):
            vm.enable_ring(256)  # after a vCPU exists
        with pytest.raises(UsageError, match=r"^expected a bitmap buffer of at least 16 bytes "
                                             r"for slot 1 \(100 pages\), got 8$"):
            vm.get_dirty_log(vm.slots[0], ctypes.create_string_buffer(8))
    finally:
        system.release()
        vm.close()


# -- the engine: protocols, oracles, mutants ------------------------------------------------

def _own_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _maps() -> tuple[int, int]:
    """The VMs' own mappings not unmapped, and the vCPU mappings (kvm_run,
    the rings) the kernel lists in /proc/self/maps."""
    with open("/proc/self/maps") as f:
        vcpu_maps = sum(1 for line in f if "kvm" in line)
    return KvmVm.live_mappings, vcpu_maps


def _run(algorithm: str, **kw):
    from concurrent_dirty.kvm.engine import run_kvm_cell

    reason = _lacks(algorithm)
    if reason is not None:
        pytest.skip(f"no KVM for {algorithm}: {reason}")

    return run_kvm_cell(Scenario(engine="kvm", algorithm=algorithm, **kw))


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
@pytest.mark.parametrize("algorithm", CORRECT)
def test_a_correct_protocol_loses_no_bit_and_says_how_much_it_tried(algorithm):
    fds, maps, threads = _own_fds(), _maps(), threading.active_count()
    r = _run(algorithm, seconds=2.0)
    assert (r.status, r.error, r.violations) == ("ok", None, [])
    # How much it tried (the machine's load decides how much that is).
    assert r.executions >= 1 and r.writes > 0 and r.rounds >= 1 and r.bits > 0
    assert r.copied >= r.bits - r.spurious
    assert r.extra["guest_mode"] == "long64-cpl3"
    assert (_own_fds(), _maps(), threading.active_count()) == (fds, maps, threads)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
@pytest.mark.parametrize("mutant", MUTANTS)
def test_every_userspace_mutant_is_found(mutant):
    # The scenario its bug shows in (few executions each, whatever the
    # load): one vCPU sweeping 512 pages with some work between writes, so
    # a page's last write before a round is rarely rewritten over. How fast
    # the default drawn programs find each mutant is the zoo's table
    # (concurrent-dirty mutants --engine kvm), not a test's.
    hints = dict(writers=1, slots=1, pages=512, writes=512, workload="sequential",
                 guest_delay=256, toggles=0, ring_entries=4096,
                 pinned=("writers", "slots", "pages", "writes", "workload", "ring_entries"))
    hints.update({"kvm-get-skip-tail": dict(pages=100, writes=100),
                  "kvm-toggle-no-recopy": dict(toggles=2)}.get(mutant, {}))
    fds, threads = _own_fds(), threading.active_count()
    from concurrent_dirty.kvm.registry import resolve_protocol

    r = _run(mutant, seconds=60.0, watchdog=3.0, **hints)
    accepted = resolve_protocol(mutant).found_by_error
    assert r.violations or (r.error and r.error.split(":")[0] in accepted), \
        f"{mutant} escaped: {r.executions} executions, error {r.error}"
    if r.violations:
        v = r.violations[0]
        text = v.describe()
        assert text.startswith(f"LOST DIRTY BIT [{mutant}/kvm seed 0 execution {v.execution}] "
                               f"slot {v.slot} page {v.page} (gfn {v.gfn}): ")
        assert "source page: version" in text
        assert r.extra["failing_execution"] == v.execution
    assert (_own_fds(), threading.active_count()) == (fds, threads)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
@pytest.mark.parametrize("algorithm", CORRECT)
def test_a_gib_of_logged_memory_migrates_whole(algorithm):
    r = _run(algorithm, seconds=1.0, max_executions=1, slots=1, pages=262144, writes=4096,
             workload="uniform", pinned=("slots", "pages", "writes", "workload"))
    assert (r.status, r.error, r.executions) == ("ok", None, 1)
    assert r.scenario["pages"] * 4096 == 1 << 30
    # Harvested and copied (how many bits depends on the machine's load: a
    # loaded CI machine once harvested 377 in the second).
    assert r.bits > 0 and r.copied >= r.bits - r.spurious


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_full_ring_waits_for_the_reaper_and_loses_nothing():
    r = _run("kvm-ring", seconds=2.0, writers=1, slots=1, pages=4096, writes=4096,
             workload="sequential", ring_entries=256, interval=0.002, toggles=0,
             pinned=("writers", "slots", "pages", "writes", "workload", "ring_entries",
                     "interval"))
    assert (r.status, r.violations) == ("ok", [])
    assert r.extra["ring_full_exits"] > 0
    assert r.extra["ring_entries_reset"] == r.extra["ring_entries_reaped"] > 0


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_ring_never_reset_is_a_deadlock_naming_the_vcpu():
    # Copying every page every round hides the lost stores (oracle b holds),
    # so what is left of never resetting is the full ring.
    from concurrent_dirty.kvm import protocols, registry

    class CopyAllNoReset(protocols.RingProtocol):
        name = "kvm-test-copy-all-no-reset"

        def harvest(self) -> None:
            for vcpu in self.vcpus:
                self._reap(vcpu)
            for slot in self.vm.slots:
                for offset in range(slot.npages):
                    self._copy(slot, offset)

    registry.KERNEL_MUTANTS[CopyAllNoReset.name] = CopyAllNoReset
    try:
        r = _run(CopyAllNoReset.name, seconds=10.0, watchdog=1.0, writers=1, slots=1,
                 pages=512, writes=512, workload="sequential", ring_entries=256, toggles=0,
                 pinned=("writers", "slots", "pages", "writes", "workload", "ring_entries"))
    finally:
        del registry.KERNEL_MUTANTS[CopyAllNoReset.name]
    assert r.violations == []
    assert r.error is not None and re.match(
        r"^DeadlockError: vcpu 0 has waited \d+\.\ds in DIRTY_RING_FULL exits \(\d+ so far\): "
        r"the protocol never made room in its dirty ring \(KVM_RESET_DIRTY_RINGS\)$", r.error)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_protocol_that_never_returns_is_stopped_by_the_watchdog_and_cleaned_up():
    from concurrent_dirty.kvm import protocols, registry

    class Spins(protocols.GetProtocol):
        name = "kvm-test-spins"

        def harvest(self) -> None:
            while True:
                pass

    fds, maps, threads = _own_fds(), _maps(), threading.active_count()
    registry.KERNEL_MUTANTS["kvm-test-spins"] = Spins
    try:
        r = _run("kvm-test-spins", seconds=10.0, watchdog=1.0)
    finally:
        del registry.KERNEL_MUTANTS["kvm-test-spins"]
    assert r.error == ("HangError: the protocol's harvest has not returned within 1s "
                       "(the watchdog), nor sent a page")
    assert (_own_fds(), _maps(), threading.active_count()) == (fds, maps, threads)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_an_ioctl_the_protocol_gets_wrong_is_its_error_and_everything_is_released():
    from concurrent_dirty.kvm import protocols, registry

    class Misaligned(protocols.ClearProtocol):
        name = "kvm-test-misaligned"

        def _clear(self, slot, first_word, masks):
            self.vm.clear_dirty_log(slot, 64 * first_word + 1, 64,
                                    ctypes.create_string_buffer(8))

    fds, maps, threads = _own_fds(), _maps(), threading.active_count()
    registry.KERNEL_MUTANTS["kvm-test-misaligned"] = Misaligned
    try:
        r = _run("kvm-test-misaligned", seconds=5.0)
    finally:
        del registry.KERNEL_MUTANTS["kvm-test-misaligned"]
    assert r.error is not None and re.match(
        r"^KvmIoctlError: KVM_CLEAR_DIRTY_LOG\(slot \d+, first_page \d+, num_pages 64\) "
        r"failed: EINVAL \(Invalid argument\)$", r.error)
    assert (_own_fds(), _maps(), threading.active_count()) == (fds, maps, threads)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_an_interrupt_mid_execution_releases_everything():
    from concurrent_dirty.kvm.engine import run_kvm_cell

    fds, maps, threads = _own_fds(), _maps(), threading.active_count()
    calls = []

    def progress(p):
        calls.append(p)
        if p.rounds > 3:
            raise KeyboardInterrupt

    r = run_kvm_cell(Scenario(engine="kvm", algorithm="kvm-get", seconds=30.0),
                     progress=progress)
    assert r.interrupted and r.status == "interrupted"
    assert (_own_fds(), _maps(), threading.active_count()) == (fds, maps, threads)


# -- the command line on the real kernel -----------------------------------------------

@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_stress_engine_kvm_runs_every_protocol_with_a_table_and_json(tmp_path):
    out = tmp_path / "r.json"
    r = _cli("stress", "--engine", "kvm", "--seconds", "1", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert [line.split()[:3] for line in r.stdout.splitlines()[2:5]] == [
        [name, "kvm", "ok"] for name in CORRECT]
    assert r.stdout.splitlines()[-1].startswith("verdict: PASS (no dirty bit lost; 3 cells, ")
    report = json.loads(out.read_text())
    assert [(c["algorithm"], c["engine"], c["status"]) for c in report["results"]] == [
        (name, "kvm", "ok") for name in CORRECT]
    assert all(c["kvm"]["guest_mode"] == "long64-cpl3" for c in report["results"])


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_stress_reports_a_mutant_with_its_rerun_command():
    r = _cli("stress", "--engine", "kvm", "--algorithm", "kvm-get-skip-tail", "--seconds", "10",
             "--quiet", "--pages", "100", "--seed", "3")
    assert r.returncode == 1, r.stderr
    assert "LOST DIRTY BIT [kvm-get-skip-tail/kvm seed 3 execution " in r.stdout
    assert ("rerun: concurrent-dirty stress --algorithm kvm-get-skip-tail --engine kvm --seed 3 "
            "--pages 100 --seconds 10.0") in r.stdout


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_mutants_engine_kvm_scores_the_kernel_rows(tmp_path):
    out = tmp_path / "z.json"
    r = _cli("mutants", "--engine", "kvm", "--mutant", "kvm-get-skip-tail", "--seeds", "1",
             "--budget", "5", "--jobs", "1", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["engines"] == ["kvm"]
    assert report["scores"] == {"kvm": {"detected": 1, "mutants": 1}}
    assert [(c["subject"], c["role"], c["engine"], c["detected"]) for c in report["cells"]] == [
        ("kvm-get-skip-tail", "mutant", "kvm", 1), ("kvm-get", "correct", "kvm", 0),
        ("kvm-clear", "correct", "kvm", 0), ("kvm-ring", "correct", "kvm", 0)]


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_ctrl_c_ends_a_kvm_stress_run_with_130_and_its_partial_table():
    proc = subprocess.Popen([sys.executable, "-m", "concurrent_dirty", "stress", "--engine",
                             "kvm", "--algorithm", "kvm-get", "--seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        while True:  # a progress line: the cell is running
            line = proc.stderr.readline()
            assert line, "the run ended before printing progress"
            if "[kvm-get/kvm]" in line and "executions" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "kvm-get    kvm     interrupted" in out


def test_a_ring_out_of_step_is_reported_as_the_kernels_not_the_protocols():
    from types import SimpleNamespace

    from concurrent_dirty.kvm import _abi
    from concurrent_dirty.kvm.protocols import RingProtocol

    ring = bytearray(16 * 8)
    proto = RingProtocol.__new__(RingProtocol)
    proto.fetch = {0: 10}  # next: position 2
    vcpu = SimpleNamespace(id=0, ring=ring)
    assert proto.stall_report(vcpu) is None  # nothing published: in step
    for i in (5, 6, 7):
        _abi.DIRTY_GFN.pack_into(ring, 16 * i, _abi.KVM_DIRTY_GFN_F_DIRTY, 1, i)
    assert proto.stall_report(vcpu) == (
        "vcpu 0's dirty ring lost step: the next entry (index 10, position 2) is empty while 3 "
        "of its 8 entries are published, the first at position 5: the kernel pushed entries "
        "this reader never saw published (more than the ring holds since the last "
        "KVM_RESET_DIRTY_RINGS would do it: an overflow past the soft limit), and no reader "
        "that follows the ring in order, QEMU's included, can collect them")
    _abi.DIRTY_GFN.pack_into(ring, 16 * 2, _abi.KVM_DIRTY_GFN_F_DIRTY, 1, 2)
    assert proto.stall_report(vcpu) is None  # the next entry is there: a slow reaper


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
@pytest.mark.parametrize("algorithm", ["kvm-get", "kvm-clear"])
def test_a_cpl0_guest_loses_no_bit_either(algorithm):
    # On a software hypervisor CPL0 code runs through KVM's instruction
    # emulator, which logs pages on another path.
    r = _run(algorithm, seconds=2.0, guest_mode="long64-cpl0")
    assert (r.status, r.error, r.violations) == ("ok", None, [])
    assert r.writes > 0 and r.extra["guest_mode"] == "long64-cpl0"


def test_an_unknown_guest_mode_is_refused():
    with pytest.raises(UsageError, match=r"^expected a guest mode in \['long64-cpl3', "
                                         r"'long64-cpl0'\], got 'real'$"):
        Scenario(engine="kvm", algorithm="kvm-get", guest_mode="real")


def test_a_missing_capability_is_one_line():
    from concurrent_dirty.kvm.vm import KvmUnavailable, Probe

    bare = Probe(reason=None, api_version=12)
    bare.require("bitmap")
    with pytest.raises(KvmUnavailable, match=r"^KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is not offered "
                                             r"by this /dev/kvm: the manual-protect \(CLEAR\) "
                                             r"protocols cannot run$"):
        bare.require("manual")
    with pytest.raises(KvmUnavailable, match=r"^KVM_CAP_DIRTY_LOG_RING_ACQ_REL is not offered "
                                             r"by this /dev/kvm: the dirty-ring protocols "
                                             r"cannot run$"):
        bare.require("ring")


def test_model_only_options_with_kvm_alone_are_refused():
    r = _cli("stress", "--engine", "kvm", "--noise", "0.1", "--pml", "--seconds", "1")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == ("concurrent-dirty: error: expected the kvm engine's options with "
                        "--engine kvm alone, got --noise, --pml, which only the model's engines "
                        "use (the real kernel has its own fault path, TLB and ring)\n")


def test_an_abbreviated_option_pins_its_dimension():
    import argparse

    from concurrent_dirty.cli.main import _given, build_parser

    given = _given(build_parser(), ["stress", "--ring-ent", "512", "--pages=7", "--writ", "3"])
    assert {"--ring-entries", "--pages"} <= given
    assert "--writ" not in given  # ambiguous (--writers, --writes): argparse refuses it too
    assert isinstance(build_parser(), argparse.ArgumentParser)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_setup_failure_releases_what_was_built():
    from concurrent_dirty.kvm import protocols, registry

    class Refused(protocols.GetProtocol):
        name = "kvm-test-refused"

        def prepare(self) -> None:
            self.vm.enable_ring(100)  # not a power of two: EINVAL

    fds, maps, threads = _own_fds(), _maps(), threading.active_count()
    registry.KERNEL_MUTANTS[Refused.name] = Refused
    try:
        r = _run(Refused.name, seconds=2.0)
    finally:
        del registry.KERNEL_MUTANTS[Refused.name]
    assert r.error is not None and r.error.startswith(
        "KvmIoctlError: KVM_ENABLE_CAP(cap 223, args 0x640) failed: EINVAL")
    assert (_own_fds(), _maps(), threading.active_count()) == (fds, maps, threads)


@pytest.mark.kvm
@pytest.mark.skipif(PROBE.reason is not None, reason=f"no KVM: {PROBE.reason}")
def test_a_cell_off_the_main_thread_stops_its_vcpus_without_a_signal():
    # No handler can be installed there: the kick must not send the signal
    # (its default action ends the process); the guest's stop flag does it.
    from concurrent_dirty.kvm import protocols, registry

    class Raises(protocols.GetProtocol):
        name = "kvm-test-raises"
        rounds = 0

        def harvest(self) -> None:
            Raises.rounds += 1
            if Raises.rounds == 4:
                raise UsageError("raised by the protocol under test")
            super().harvest()

    out: list = []
    registry.KERNEL_MUTANTS[Raises.name] = Raises
    try:
        t = threading.Thread(target=lambda: out.append(_run(Raises.name, seconds=3.0)))
        t.start()
        t.join(60)
    finally:
        del registry.KERNEL_MUTANTS[Raises.name]
    assert out and out[0].error == "UsageError: raised by the protocol under test"
