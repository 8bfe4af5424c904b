"""The kernel's ``dirty_log_perf_test`` on this machine's ``/dev/kvm``.

Three phases, each on fresh VMs (``KvmVm``) running the harness's guest
(``guest.py``):

* **stopped**: for each protocol (``get``: plain KVM_GET_DIRTY_LOG, the
  xchg-era collect + clear + write-protect; ``clear-slot``: manual protect,
  GET then one CLEAR over the whole slot; ``clear-64``: GET then one CLEAR
  per dirty 64-page word, QEMU's granularity at its finest; ``ring``: the
  dirty ring reaped in Python and RESET), slot size and dirty fraction, the
  guest dirties the chosen pages once (``PASSES`` 1, then ``out 0xe2``) and,
  with its thread out of KVM_RUN, the ioctl alone is timed (the argument
  is packed beforehand; ``perf_counter_ns`` around the libc call). For
  ``get`` the time userspace takes to copy the collected pages (Python
  slicing into a 1 MiB buffer) is timed too (claim v). The guest is then
  restarted from its first instruction (``KvmVcpu.restart``).
* **running**: the guest cycles through its pages (``PASSES`` 0), paced by
  ``DELAY`` to about one write per ``write_ns``, while the harvester
  collects every ``harvest_ms``. Around each harvest the host reads its TSC
  (an ``rdtsc`` stub mmapped executable and called through ctypes: guest
  TSC equals host TSC on this hypervisor) and afterwards reads the TSC the
  guest stamped into each page it wrote around that time (word 3; word 2,
  the write's sequence number, proves the page was not rewritten since):
  the **gap** is the longest interval between two consecutive writes of one
  vCPU that overlaps the harvest. With logging off the same is read at the
  same ticks (a harvest of length zero): the baseline. Guest writes per
  second come from the guest's progress counter; **faults per second are
  read from KVM's binary statistics** (``KVM_GET_STATS_FD`` on each vCPU,
  opened before it runs: the change of ``pf_taken`` over the run; the other
  counters' changes, ``pf_fixed``, ``pf_fast``, ``exits``, the VM's
  ``remote_tlb_flush``..., are kept in the JSON under ``kvm_stats``). Where
  the ioctl fails the column says ``n/a`` and ``stats_error`` says why; the
  bits (or ring entries) harvested per second stay beside it as a
  cross-check (each is at least one write-protect fault).
* **ring**: as running, with the dirty ring (several sizes): reap and RESET
  time per entry, ring-full exits per second and how long each waited for
  the reaper.

Timing only; correctness is the migration engine's job. Everything here is
noisy on a shared 2-core machine: the report records the load average and
every verdict compares numbers measured in the same run.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import platform
import random
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExecutionFailed, UsageError
from . import _abi
from ._abi import KvmIoctlError
from .guest import CB, DATA_BASE, GUEST_MODE, PAGE, GuestLayout
from .vcpu import KvmVcpu, kick_handler
from .vm import KvmVm, Memslot, probe

__all__ = ["KvmPerfConfig", "host_info", "run_kvm_perf", "srcu_crossover"]

STOPPED_PROTOCOLS = ("get", "clear-slot", "clear-64", "ring")
RUNNING_PROTOCOLS = ("none", "get", "clear-slot")
#: The seed's threshold for guest-visible latency (60c34612: "less than 200us").
THRESHOLD_US = 200.0
#: Default cost of the 2012 ``synchronize_srcu_expedited`` in the old GET:
#: the seed's "ms order of latency" (60c34612's message). A parameter.
DEFAULT_SYNC_US = 1000.0
SYNC_SWEEP_US = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


@dataclass
class KvmPerfConfig:
    pages: list[int] = field(default_factory=lambda: [4096, 65536, 262144])
    #: None: one page, 1%, 10%, 100%.
    fractions: list[float] | None = None
    vcpus: list[int] = field(default_factory=lambda: [1, 2])
    rings: list[int] = field(default_factory=lambda: [256, 4096])
    rounds: int = 3
    run_seconds: float = 1.0
    harvest_ms: float = 10.0
    #: The running guest's pace: about one page write per this many ns.
    write_ns: float = 1000.0
    #: Slot sizes of the running and ring phases (the stopped phase uses all).
    running_pages: list[int] = field(default_factory=lambda: [4096, 262144])
    seed: int = 0

    def fraction_list(self) -> list[float]:
        if self.fractions:
            return sorted(set(self.fractions))
        return [0.0, 0.01, 0.1, 1.0]  # 0.0: one page

    def validate(self) -> None:
        for n in self.pages + self.running_pages:
            if not 64 <= n <= 1 << 20 or n % 64:
                raise UsageError(f"expected slot sizes that are multiples of 64 pages between "
                                 f"64 and {1 << 20}, got {n}")
        for f in self.fraction_list():
            if not 0 <= f <= 1:
                raise UsageError(f"expected dirty fractions in [0, 1] (0: one page), got {f}")
        for r in self.rings:
            if r < 64 or r & (r - 1) or r * 16 > 1 << 20:
                raise UsageError(f"expected ring sizes that are powers of two from 64 to "
                                 f"65536 entries, got {r}")
        if self.rounds < 1 or self.run_seconds <= 0 or self.harvest_ms <= 0:
            raise UsageError("expected rounds >= 1 and positive --run-seconds/--harvest-ms")
        for v in self.vcpus:
            if not 1 <= v <= 8:
                raise UsageError(f"expected 1 to 8 vCPUs, got {v}")

    def to_json(self) -> dict[str, Any]:
        return {"pages": self.pages, "fractions": self.fraction_list(), "vcpus": self.vcpus,
                "rings": self.rings, "rounds": self.rounds, "run_seconds": self.run_seconds,
                "harvest_ms": self.harvest_ms, "write_ns": self.write_ns,
                "running_pages": self.running_pages, "seed": self.seed}


def _dirty_count(fraction: float, pages: int) -> int:
    return max(1, min(pages, round(fraction * pages)))


def _stats(samples: list[float], scale: float = 1e6) -> dict[str, float | int]:
    """count, p50, p99, max of samples in seconds, in microseconds."""
    if not samples:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(samples)
    p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
    return {"count": len(s), "p50": round(statistics.median(s) * scale, 2),
            "p99": round(p99 * scale, 2), "max": round(s[-1] * scale, 2)}


# -- the host's TSC ----------------------------------------------------------------

_RDTSC_CODE = bytes.fromhex(
    "0f31"        # rdtsc
    "48c1e220"    # shl rdx, 32
    "4809d0"      # or rax, rdx
    "c3")         # ret
_rdtsc_fn: Callable[[], int] | None = None
_rdtsc_map: mmap.mmap | None = None


def rdtsc() -> int:
    """The host's TSC, from a ten-byte stub in an executable mapping."""
    global _rdtsc_fn, _rdtsc_map
    if _rdtsc_fn is None:
        _rdtsc_map = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        _rdtsc_map.write(_RDTSC_CODE)
        address = KvmVm.address(_rdtsc_map)
        _rdtsc_fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(address)
    return int(_rdtsc_fn())


def tsc_hz(seconds: float = 0.1) -> float:
    t0, c0 = time.perf_counter(), rdtsc()
    time.sleep(seconds)
    t1, c1 = time.perf_counter(), rdtsc()
    return (c1 - c0) / (t1 - t0)


def host_info() -> dict[str, Any]:
    """Kernel, hypervisor, cores and load of this machine."""
    hypervisor = next((m for m in ("kvm_pvm", "kvm_intel", "kvm_amd")
                       if os.path.isdir(f"/sys/module/{m}")), "unknown")
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {"kernel": platform.release(), "hypervisor": hypervisor,
            "cores": os.cpu_count() or 0, "load_average": load,
            "machine": platform.machine(), "python": platform.python_version(),
            "guest_mode": GUEST_MODE}


# -- a VM for one measurement ------------------------------------------------------

class _Rig:
    def __init__(self, pages: int, vcpus: int, *, manual: bool = False, ring: int = 0,
                 logging: bool = True) -> None:
        self.vm = KvmVm()
        try:
            per = -(-pages // vcpus)
            self.layout = GuestLayout(nvcpus=vcpus, data_pages=pages, list_entries=max(per, 1))
            self.system = self.vm.add_system(self.layout)
            if manual:
                self.vm.enable_manual_protect(initially_set=False)
            if ring:
                self.vm.enable_ring(ring)
            self.vm.add_data_slots([pages], logging=logging)
            self.slot: Memslot = self.vm.slots[0]
            self.vcpus = [KvmVcpu(self.vm, i, self.layout, self.system) for i in range(vcpus)]
            self.lists: list[list[int]] = [[] for _ in range(vcpus)]
            self.bitmap = ctypes.create_string_buffer(8 * self.slot.nwords)
            self.get_arg = ctypes.create_string_buffer(
                _abi.DIRTY_LOG.pack(self.slot.id, 0, ctypes.addressof(self.bitmap)))
            self.fetch = [0] * vcpus
        except BaseException:
            self.vm.close()
            raise

    def load(self, vcpu: KvmVcpu, pages: list[int], passes: int, delay: int) -> None:
        layout = self.layout
        self.lists[vcpu.id] = pages
        struct.pack_into(f"<{len(pages)}Q", self.system, layout.write_list(vcpu.id), *pages)
        for name, value in ((CB.LIST, layout.write_list(vcpu.id)), (CB.COUNT, len(pages)),
                            (CB.SYNC_EVERY, 0), (CB.VCPU_ID, vcpu.id), (CB.PASSES, passes),
                            (CB.DONE, layout.done(vcpu.id)), (CB.DATA_BASE, DATA_BASE),
                            (CB.STOP, 0), (CB.DELAY, delay), (CB.PROGRESS, 0)):
            vcpu.cb_store(name, value)

    def run_once(self, vcpu: KvmVcpu) -> None:
        """Run the loaded list to its end (the guest exits with out 0xe2)."""
        if vcpu.thread is None:
            vcpu.start()
        else:
            vcpu.restart()
        if not vcpu.done.wait(120):
            raise KvmIoctlError(f"vcpu {vcpu.id}: the guest did not finish its pass in 120s", 0)
        vcpu.join(5.0)
        if vcpu.error is not None:
            raise vcpu.error

    def timed(self, request: int, arg: ctypes.Array[ctypes.c_char], what: str) -> float:
        address = ctypes.addressof(arg)
        t0 = time.perf_counter_ns()
        ret = _abi._ioctl(self.vm.fd, request, address)
        t1 = time.perf_counter_ns()
        if ret < 0:
            err = ctypes.get_errno()
            raise KvmIoctlError(f"{_abi.NAMES.get(request, hex(request))}({what}) failed: "
                                f"{_abi.errno_name(err)}", err)
        return (t1 - t0) / 1e9

    def get(self) -> float:
        return self.timed(_abi.KVM_GET_DIRTY_LOG, self.get_arg, f"slot {self.slot.id}")

    def words(self) -> tuple[int, ...]:
        return struct.unpack(f"<{self.slot.nwords}Q", self.bitmap.raw)

    def clear_slot(self) -> tuple[float, int]:
        arg = ctypes.create_string_buffer(_abi.CLEAR_LOG.pack(
            self.slot.id, self.slot.npages, 0, ctypes.addressof(self.bitmap)))
        return self.timed(_abi.KVM_CLEAR_DIRTY_LOG, arg, "whole slot"), 1

    def clear_words(self) -> tuple[float, int]:
        base = ctypes.addressof(self.bitmap)
        args = [ctypes.create_string_buffer(_abi.CLEAR_LOG.pack(
            self.slot.id, min(64, self.slot.npages - 64 * w), 64 * w, base + 8 * w))
            for w, word in enumerate(self.words()) if word]
        return sum(self.timed(_abi.KVM_CLEAR_DIRTY_LOG, a, "64 pages") for a in args), len(args)

    def reap(self) -> tuple[int, float]:
        """Every vCPU's published ring entries, marked harvested (x86: plain
        loads are acquire, plain stores release); returns (entries, s)."""
        t0 = time.perf_counter_ns()
        n = 0
        size = _abi.DIRTY_GFN.size
        for vcpu in self.vcpus:
            ring = vcpu.ring
            assert ring is not None
            entries = len(ring) // size
            index = self.fetch[vcpu.id]
            while True:
                at = (index % entries) * size
                flags = struct.unpack_from("<I", ring, at)[0]
                if not flags & _abi.KVM_DIRTY_GFN_F_DIRTY:
                    break
                _abi.DIRTY_GFN.unpack_from(ring, at)
                struct.pack_into("<I", ring, at, _abi.KVM_DIRTY_GFN_F_RESET)
                index += 1
                n += 1
            self.fetch[vcpu.id] = index
        return n, (time.perf_counter_ns() - t0) / 1e9

    def reset(self) -> tuple[int, float]:
        t0 = time.perf_counter_ns()
        ret = _abi._ioctl(self.vm.fd, _abi.KVM_RESET_DIRTY_RINGS, None)
        t1 = time.perf_counter_ns()
        if ret < 0:
            err = ctypes.get_errno()
            raise KvmIoctlError(f"KVM_RESET_DIRTY_RINGS failed: {_abi.errno_name(err)}", err)
        return ret, (t1 - t0) / 1e9

    def close(self) -> None:
        for vcpu in getattr(self, "vcpus", []):
            vcpu.kick()
        for vcpu in getattr(self, "vcpus", []):
            vcpu.close()
        self.system.release()
        self.vm.close()


def _copy_collected(rig: _Rig, scratch: bytearray) -> tuple[int, float]:
    """Userspace's part: copy every collected page (claim v)."""
    memory = rig.slot.memory
    slots = len(scratch) // PAGE
    t0 = time.perf_counter()
    n = 0
    for w, word in enumerate(rig.words()):
        while word:
            low = word & -word
            offset = 64 * w + low.bit_length() - 1
            at = (n % slots) * PAGE
            scratch[at:at + PAGE] = memory[offset * PAGE:(offset + 1) * PAGE]
            n += 1
            word ^= low
    return n, time.perf_counter() - t0


# -- phase 1: the vCPU stopped ------------------------------------------------------

def _stopped(protocol: str, pages: int, config: KvmPerfConfig,
             rng: random.Random) -> list[dict[str, Any]]:
    ring = 0
    if protocol == "ring":
        ring = 1 << max(12, (2 * pages - 1).bit_length())  # room for every page, and more
    rig = _Rig(pages, 1, manual=protocol.startswith("clear"), ring=ring)
    scratch = bytearray(256 * PAGE)
    out: list[dict[str, Any]] = []
    try:
        vcpu = rig.vcpus[0]
        for fraction in config.fraction_list():
            dirty = _dirty_count(fraction, pages)
            gets: list[float] = []
            clears: list[float] = []
            copies: list[float] = []
            harvested: list[int] = []
            ioctls: list[int] = []
            resets: list[float] = []
            for _ in range(config.rounds):
                chosen = sorted(rng.sample(range(pages), dirty))
                rig.load(vcpu, chosen, passes=1, delay=0)
                rig.run_once(vcpu)
                if protocol == "ring":
                    n, reap_s = rig.reap()
                    got, reset_s = rig.reset()
                    gets.append(reap_s)
                    resets.append(reset_s)
                    harvested.append(n)
                    continue
                gets.append(rig.get())
                harvested.append(sum(w.bit_count() for w in rig.words()))
                if protocol == "get":
                    _, copy_s = _copy_collected(rig, scratch)
                    copies.append(copy_s)
                elif protocol == "clear-slot":
                    s, k = rig.clear_slot()
                    clears.append(s)
                    ioctls.append(k)
                else:
                    s, k = rig.clear_words()
                    clears.append(s)
                    ioctls.append(k)
            point: dict[str, Any] = {
                "protocol": protocol, "pages": pages, "fraction": fraction,
                "dirty_pages": dirty, "rounds": len(gets),
                "harvested": round(statistics.mean(harvested), 1)}
            if protocol == "ring":
                point["ring_entries"] = ring
                point["reap_us"] = _stats(gets)
                point["reset_us"] = _stats(resets)
                point["reap_ns_per_entry"] = round(statistics.median(gets) * 1e9
                                                   / max(1, statistics.mean(harvested)), 1)
                point["reset_ns_per_entry"] = round(statistics.median(resets) * 1e9
                                                    / max(1, statistics.mean(harvested)), 1)
                point["harvest_us"] = _stats([a + b for a, b in zip(gets, resets, strict=True)])
            else:
                point["get_us"] = _stats(gets)
                if clears:
                    point["clear_us"] = _stats(clears)
                    point["clear_ioctls"] = round(statistics.mean(ioctls), 1)
                    point["harvest_us"] = _stats([a + b for a, b in zip(gets, clears,
                                                                        strict=True)])
                else:
                    point["harvest_us"] = _stats(gets)
                if copies:
                    point["copy_us"] = _stats(copies)
            out.append(point)
    finally:
        rig.close()
    return out


def _memslot_flips(pages: int) -> dict[str, Any]:
    """Time KVM_SET_USER_MEMORY_REGION turning logging on: on an empty
    64-page slot (the memslot update alone: it includes a
    ``synchronize_srcu_expedited`` of kvm->srcu in kvm_swap_active_memslots)
    and on a ``pages``-page slot whose every page is mapped (adds the
    whole-slot write-protect, ``kvm_mmu_slot_remove_write_access``, what
    b050b015's srcu GET did under mmu_lock)."""
    result: dict[str, Any] = {"pages": pages}
    for label, n, dirty_all in (("small", 64, False), ("large", pages, True)):
        rig = _Rig(n, 1, logging=False)
        try:
            vcpu = rig.vcpus[0]
            times = []
            for _ in range(3):
                if dirty_all:
                    rig.load(vcpu, list(range(n)), passes=1, delay=0)
                    rig.run_once(vcpu)
                t0 = time.perf_counter_ns()
                rig.vm.set_logging(rig.slot, True)
                times.append((time.perf_counter_ns() - t0) / 1e9)
                rig.vm.set_logging(rig.slot, False)
            result[f"{label}_us"] = _stats(times)
        finally:
            rig.close()
    small = result["small_us"]["p50"]
    large = result["large_us"]["p50"]
    result["slot_write_protect_ns_per_page"] = round(max(0.0, large - small) * 1e3 / pages, 2)
    result["memslot_update_us"] = small
    return result


# -- phase 2: the guest running -------------------------------------------------------

def calibrate_delay(write_ns: float, hz: float) -> dict[str, Any]:
    """The DELAY (pause iterations) that paces the guest to about one write
    per ``write_ns`` with logging off, from the guest's own TSC stamps (the
    median interval between consecutive writes: robust to the host
    descheduling the vCPU thread, which a wall-clock rate is not)."""
    pages = 4096
    rig = _Rig(pages, 1, logging=False)
    try:
        vcpu = rig.vcpus[0]
        trial = 200
        out: dict[str, Any] = {"trial_delay": trial}
        for label, delay in (("first", trial), ("second", 0)):
            rig.load(vcpu, list(range(pages)), passes=2, delay=delay)
            rig.run_once(vcpu)  # the first pass maps the pages, the second is timed
            stamps = [struct.unpack_from("<Q", rig.slot.memory, p * PAGE + 24)[0]
                      for p in range(pages)]
            ns = statistics.median(b - a for a, b in zip(stamps, stamps[1:],
                                                         strict=False)) * 1e9 / hz
            out[f"ns_per_write_at_delay_{delay}"] = round(ns, 2)
            if label == "first":
                trial_ns = ns
        base = out["ns_per_write_at_delay_0"]
        per_pause = max(1e-3, (trial_ns - base) / trial)
        out["ns_per_pause"] = round(per_pause, 3)
        out["delay"] = max(0, round((write_ns - base) / per_pause))
        out["write_ns"] = write_ns
        return out
    finally:
        rig.close()


class _Window:
    """One harvest on the guests' timelines."""

    def __init__(self, tsc0: int, tsc1: int, starts: list[int], ends: list[int]) -> None:
        self.tsc0, self.tsc1, self.starts, self.ends = tsc0, tsc1, starts, ends


def _gaps(rig: _Rig, w: _Window, hz: float) -> tuple[list[float], list[float], int]:
    """Per vCPU: the longest gap between two consecutive writes that
    overlaps the harvest [tsc0, tsc1]; and every other gap (the baseline);
    and the writes that could not be read (rewritten since)."""
    overlapping: list[float] = []
    others: list[float] = []
    lost = 0
    memory = rig.slot.memory
    for vcpu in rig.vcpus:
        pages = rig.lists[vcpu.id]
        count = len(pages)
        first = max(1, w.starts[vcpu.id] - 2)
        last = w.ends[vcpu.id] + 2
        if last - first >= count:
            lost += last - first
            continue
        stamps: list[int | None] = []
        for seq in range(first, last + 1):
            page = pages[(seq - 1) % count]
            got_seq, tsc = struct.unpack_from("<QQ", memory, page * PAGE + 16)
            stamps.append(tsc if got_seq == seq else None)
        best = 0
        for a, b in zip(stamps, stamps[1:], strict=False):
            if a is None or b is None:
                lost += 1
                continue
            gap = b - a
            if a <= w.tsc1 and b >= w.tsc0:
                best = max(best, gap)
            else:
                others.append(gap / hz)
        if best:
            overlapping.append(best / hz)
    return overlapping, others, lost


#: The counters kept from KVM's binary statistics (whichever this host has).
STATS_KEPT = ("pf_taken", "pf_fixed", "pf_fast", "pf_spurious", "pf_emulate", "exits",
              "io_exits", "tlb_flush", "remote_tlb_flush", "remote_tlb_flush_requests",
              "mmu_pte_write", "pages_4k", "mmu_cache_miss")


class _Stats:
    """KVM_GET_STATS_FD on the VM and each vCPU (opened before the vCPUs
    run); :meth:`sample` sums every vCPU's counters and adds the VM's. A
    failure leaves :attr:`error` set and every sample empty: never a crash."""

    def __init__(self, rig: _Rig) -> None:
        self.fds: list[tuple[int, _abi.KvmStats]] = []
        self.error: str | None = None
        try:
            self.fds.append(_abi.open_stats(rig.vm.fd, "the VM"))
            for vcpu in rig.vcpus:
                self.fds.append(_abi.open_stats(vcpu.fd, f"vcpu {vcpu.id}"))
        except (OSError, KvmIoctlError, ExecutionFailed) as exc:
            self.error = str(exc)
            self.close()

    def sample(self) -> dict[str, int]:
        if self.error is not None:
            return {}
        total: dict[str, int] = {}
        try:
            for fd, layout in self.fds:
                for name, value in _abi.read_stats(fd, layout).items():
                    if name in STATS_KEPT:
                        total[name] = total.get(name, 0) + value
        except (OSError, ExecutionFailed) as exc:
            self.error = f"reading KVM stats failed: {exc}"
            return {}
        return total

    def close(self) -> None:
        for fd, _ in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def _running(kind: str, pages: int, vcpus: int, config: KvmPerfConfig, delay: int,
             hz: float, ring: int = 0) -> dict[str, Any]:
    rig = _Rig(pages, vcpus, manual=kind.startswith("clear"), ring=ring,
               logging=kind != "none")
    stats = _Stats(rig)
    harvests: list[float] = []
    gaps: list[float] = []
    baseline: list[float] = []
    lost = 0
    harvested = 0
    reap_s: list[float] = []
    reset_s: list[float] = []
    entries = 0
    wake = threading.Event()
    cond = threading.Condition()
    generation = [0]
    stopping = [False]

    def wait_for_room(vcpu: KvmVcpu) -> None:
        with cond:
            seen = generation[0]
            wake.set()
            cond.wait_for(lambda: generation[0] != seen or stopping[0] or vcpu.kicked, 1.0)

    try:
        for vcpu in rig.vcpus:
            mine = list(range(vcpu.id, pages, vcpus))
            rig.load(vcpu, mine, passes=0, delay=delay)
            vcpu.on_ring_full = wait_for_room
        for vcpu in rig.vcpus:
            vcpu.start()
        start = time.perf_counter()
        p_start = [v.progress for v in rig.vcpus]
        s_start = stats.sample()
        period = config.harvest_ms / 1e3
        next_tick = start + period
        end = start + config.run_seconds
        while time.perf_counter() < end:
            woke = wake.wait(max(0.0, next_tick - time.perf_counter()))
            wake.clear()
            if not woke:
                next_tick += period
            for vcpu in rig.vcpus:
                if vcpu.error is not None:
                    raise vcpu.error
            starts = [v.progress for v in rig.vcpus]
            tsc0 = rdtsc()
            if kind == "get":
                spent = rig.get()
            elif kind.startswith("clear"):
                spent = rig.get() + rig.clear_slot()[0]
            elif kind == "ring":
                n, r = rig.reap()
                _, s = rig.reset()
                with cond:
                    generation[0] += 1
                    cond.notify_all()
                entries += n
                reap_s.append(r)
                reset_s.append(s)
                spent = r + s
            else:
                spent = 0.0
            tsc1 = rdtsc()
            ends = [v.progress for v in rig.vcpus]
            if kind != "none":
                harvests.append(spent)
            if kind in ("get", "clear-slot"):
                harvested += sum(w.bit_count() for w in rig.words())
            if woke:
                continue  # a ring-full wake: no timeline read (the guest is waiting)
            # let every vCPU write a few more pages, then read the timeline
            # (few wake-ups: each one of this thread's may take a vCPU's core)
            for nap in (0.002, 0.008):
                if all(v.progress >= e + 3 for v, e in zip(rig.vcpus, ends, strict=True)):
                    break
                time.sleep(nap)
            ends = [v.progress for v in rig.vcpus]
            o, b, lo = _gaps(rig, _Window(tsc0, tsc1, starts, ends), hz)
            gaps += o
            baseline += b
            lost += lo
        elapsed = time.perf_counter() - start
        writes = sum(v.progress - p for v, p in zip(rig.vcpus, p_start, strict=True))
        s_end = stats.sample()
        for vcpu in rig.vcpus:
            vcpu.cb_store(CB.STOP, 1)
        with cond:
            stopping[0] = True
            cond.notify_all()
        give_up = time.monotonic() + 10
        while not all(v.done.is_set() for v in rig.vcpus) and time.monotonic() < give_up:
            if kind == "ring":  # a full ring keeps the guest from reading STOP
                rig.reap()
                rig.reset()
                with cond:
                    generation[0] += 1
                    cond.notify_all()
            time.sleep(0.001)
        for vcpu in rig.vcpus:
            vcpu.join(10.0)
            if vcpu.error is not None:
                raise vcpu.error
        point: dict[str, Any] = {
            "protocol": kind if kind != "ring" else f"ring-{ring}", "pages": pages,
            "vcpus": vcpus, "seconds": round(elapsed, 3), "writes": writes,
            "writes_per_s": round(writes / elapsed), "harvests": len(harvests),
            "harvest_us": _stats(harvests), "gap_us": _stats(gaps),
            "between_writes_us": _stats(baseline), "timeline_unread": lost}
        if kind == "ring":
            exits = sum(v.ring_full_exits for v in rig.vcpus)
            waits = [w for v in rig.vcpus for w in v.ring_full_waits]
            point.update(ring_entries=ring, reaped=entries,
                         harvested_per_s=round(entries / elapsed),
                         reap_ns_per_entry=round(sum(reap_s) * 1e9 / max(1, entries), 1),
                         reset_ns_per_entry=round(sum(reset_s) * 1e9 / max(1, entries), 1),
                         ring_full_exits=exits, ring_full_exits_per_s=round(exits / elapsed),
                         ring_full_wait_us=_stats(waits))
        elif kind != "none":
            point["harvested_per_s"] = round(harvested / elapsed)
            point["harvested"] = harvested
        delta = {k: s_end[k] - s_start.get(k, 0) for k in s_end}
        if stats.error is None and "pf_taken" in delta:
            point["faults_per_s"] = round(delta["pf_taken"] / elapsed)
            point["faults_source"] = "KVM_GET_STATS_FD: vCPUs' pf_taken"
        else:
            point["faults_per_s"] = None
            point["stats_error"] = stats.error or "this host's vCPU stats have no pf_taken"
        point["kvm_stats"] = delta
        return point
    finally:
        with cond:
            stopping[0] = True
            cond.notify_all()
        stats.close()
        rig.close()


# -- the sweep -----------------------------------------------------------------------

def run_kvm_perf(config: KvmPerfConfig,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the three phases; return the report (see the module docstring).
    Raises :class:`~concurrent_dirty.kvm.vm.KvmUnavailable` where there is
    no usable /dev/kvm."""
    config.validate()
    p = probe()
    p.require()
    p.require("manual")
    say = progress or (lambda s: None)
    began = time.monotonic()
    report: dict[str, Any] = {"tool": "concurrent-dirty", "command": "perf --engine kvm",
                              "host": host_info(), "config": config.to_json()}
    rng = random.Random(config.seed)
    with kick_handler():
        hz = tsc_hz()
        report["tsc_hz"] = round(hz)
        stopped: list[dict[str, Any]] = []
        for protocol in STOPPED_PROTOCOLS:
            if protocol == "ring" and not (p.ring_bytes and p.ring_acq_rel):
                continue
            for pages in config.pages:
                if protocol == "ring" and pages > p.ring_bytes // 32:
                    continue  # the ring cannot hold every page (twice)
                t = time.monotonic()
                stopped += _stopped(protocol, pages, config, rng)
                say(f"stopped {protocol} {pages} pages: {time.monotonic() - t:.1f}s")
        report["stopped"] = stopped
        report["memslot_flip"] = _memslot_flips(max(config.pages))
        say("memslot flips timed")
        pace = calibrate_delay(config.write_ns, hz)
        report["pace"] = pace
        running: list[dict[str, Any]] = []
        for pages in config.running_pages:
            for vcpus in config.vcpus:
                for kind in RUNNING_PROTOCOLS:
                    running.append(_running(kind, pages, vcpus, config, pace["delay"], hz))
                    say(f"running {kind} {pages} pages {vcpus} vcpus")
                if p.ring_bytes and p.ring_acq_rel and pages == min(config.running_pages):
                    for entries in config.rings:
                        running.append(_running("ring", pages, vcpus, config, pace["delay"],
                                                hz, ring=entries))
                        say(f"running ring-{entries} {pages} pages {vcpus} vcpus")
        report["running"] = running
    report["host"]["load_average_end"] = host_info()["load_average"]
    report["fits"] = get_fits(report)
    report["crossover"] = srcu_crossover(report)
    report["claims"] = claims(report)
    report["seconds"] = round(time.monotonic() - began, 1)
    return report


# -- fits, the 2012 prediction and the claims ---------------------------------------

def _median(point: dict[str, Any], key: str) -> float:
    return float(point[key]["p50"])


def get_fits(report: dict[str, Any]) -> dict[str, Any]:
    """Per protocol and slot size, the line through the one-dirty-page and
    the all-dirty medians: intercept (us: the fixed cost, the scan of the
    bitmap's words), ns per further dirty page; and the intercept per
    bitmap word. (Two points, not least squares: the largest point would
    dominate a least-squares line and could make its intercept negative.)"""
    fits: dict[str, Any] = {}
    for protocol in ("get", "clear-slot"):
        for pages in sorted({s["pages"] for s in report["stopped"]}):
            pts = [s for s in report["stopped"] if s["protocol"] == protocol
                   and s["pages"] == pages]
            if len(pts) < 2:
                continue
            key = "get_us" if protocol == "get" else "harvest_us"
            one = min(pts, key=lambda s: s["dirty_pages"])
            top = max(pts, key=lambda s: s["dirty_pages"])
            span = top["dirty_pages"] - one["dirty_pages"]
            slope = (_median(top, key) - _median(one, key)) / span if span else 0.0
            fits[f"{protocol}/{pages}"] = {
                "protocol": protocol, "pages": pages,
                "intercept_us": round(_median(one, key) - slope * one["dirty_pages"], 2),
                "ns_per_dirty_page": round(slope * 1e3, 2),
                "one_page_us": _median(one, key),
                "ns_per_bitmap_word": round(_median(one, key) * 1e3 / (pages // 64), 2)}
    return fits


def srcu_crossover(report: dict[str, Any], sync_us: float = DEFAULT_SYNC_US) -> dict[str, Any]:
    """The 2012 crossover between the old (srcu, b050b015) GET and the
    xchg GET (60c34612), predicted from this kernel's costs. See
    :data:`CROSSOVER_ASSUMPTIONS`."""
    flip = report["memslot_flip"]
    wp = float(flip["slot_write_protect_ns_per_page"]) / 1e3   # us per page of the slot
    out: dict[str, Any] = {"sync_us_default": sync_us, "sync_us_source":
                           "60c34612's message: the srcu GET 'sometimes gives us ms order "
                           "of latency' (1 ms); swept below as a parameter",
                           "slot_write_protect_ns_per_page":
                               flip["slot_write_protect_ns_per_page"],
                           "assumptions": CROSSOVER_ASSUMPTIONS, "by_slot": []}
    for _key, fit in sorted(report["fits"].items()):
        if fit["protocol"] != "get":
            continue
        pages = fit["pages"]
        words = pages // 64
        copy_word = fit["ns_per_bitmap_word"] / 1e3
        c_page = max(1e-6, fit["ns_per_dirty_page"] / 1e3)
        row: dict[str, Any] = {"pages": pages, "by_sync_us": {}}
        for s in sorted({*SYNC_SWEEP_US, sync_us}):
            srcu = s + wp * pages + copy_word * words
            dirty = (srcu - fit["intercept_us"]) / c_page
            # the whole-slot write-protect cost below which the old GET wins at
            # all pages dirty (a crossover exists at all)
            need = (fit["intercept_us"] + c_page * pages - s - copy_word * words) / pages
            row["by_sync_us"][f"{s:g}"] = {
                "srcu_get_us": round(srcu, 1),
                "crossover_needs_slot_write_protect_below_ns_per_page":
                    round(max(0.0, need) * 1e3, 2),
                "xchg_slower_from_dirty_pages": None if dirty > pages else max(0, round(dirty)),
                "xchg_slower_from_fraction": None if dirty > pages
                else round(max(0.0, dirty) / pages, 4)}
        out["by_slot"].append(row)
    return out


CROSSOVER_ASSUMPTIONS = (
    "An analytic cost model, not the Python model under a virtual clock: the old GET "
    "(b050b015) costs sync_us (one synchronize_srcu_expedited) + the whole-slot "
    "write-protect measured here (KVM_SET_USER_MEMORY_REGION turning logging on over a "
    "fully mapped slot minus the same on an empty 64-page slot, per page) + a bitmap "
    "scan/copy at this kernel's cost per bitmap word (the one-dirty-page GET over the slot's "
    "words); it does not depend on the dirty count. The xchg GET costs this kernel's "
    "measured GET line (intercept + ns per dirty page, stopped vCPU). Assumes 2012 "
    "hardware and a 2012 kernel scale like kvm_pvm's shadow paging on this host, that the "
    "slot is fully mapped, and no contention (stopped vCPU).")


def _claim_i_verdict(cross: dict[str, Any]) -> str:
    if not cross["by_slot"]:
        return "not measurable here (no GET fit)"
    sync = f"{cross['sync_us_default']:g}"
    found = [(row["pages"], row["by_sync_us"][sync]["xchg_slower_from_fraction"])
             for row in cross["by_slot"]]
    big = max(cross["by_slot"], key=lambda r: r["pages"])
    need = big["by_sync_us"][sync].get("crossover_needs_slot_write_protect_below_ns_per_page")
    method = cross.get("method", "the analytic cost model")
    head = ("predicted, not measured (today's kernel has no srcu GET; the srcu side is "
            f"{method} at sync {sync} us): the xchg GET is faster than the predicted srcu GET")
    if all(f is None for _, f in found):
        return (f"{head} at every dirty count of every slot: the first half holds; 'unless "
                f"too many dirty pages' is not reproduced"
                + (f": at {big['pages']} pages a crossover needs the whole-slot "
                   f"write-protect below {need:g} ns a page, measured "
                   f"{cross['slot_write_protect_ns_per_page']:g}" if need is not None else ""))
    return (f"{head} up to a crossover: "
            + ", ".join(f"{p} pages: xchg slower from fraction {f:g}" if f is not None
                        else f"{p} pages: never" for p, f in found)
            + ": both halves hold")


def _verdict(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "not measurable here"}[holds]


def claims(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's claims (and the later designs'), each with a verdict and
    the numbers behind it."""
    out: list[dict[str, Any]] = []
    stopped = report["stopped"]
    running = report["running"]
    fits = report["fits"]
    # (i) GET against dirty pages
    nums: dict[str, Any] = {}
    text = []
    for _key, fit in sorted(fits.items(), key=lambda kv: kv[1]["pages"]):
        if fit["protocol"] != "get":
            continue
        pts = [s for s in stopped if s["protocol"] == "get" and s["pages"] == fit["pages"]]
        over = [s["dirty_pages"] for s in pts if s["get_us"]["p50"] > THRESHOLD_US]
        cross = (THRESHOLD_US - fit["intercept_us"]) / max(1e-9, fit["ns_per_dirty_page"] / 1e3)
        nums[str(fit["pages"])] = {
            "get_us_by_dirty": {str(s["dirty_pages"]): s["get_us"]["p50"] for s in pts},
            "ns_per_dirty_page": fit["ns_per_dirty_page"],
            "ns_per_bitmap_word": fit["ns_per_bitmap_word"],
            "first_measured_over_200us": min(over) if over else None,
            "fit_passes_200us_at_dirty_pages": round(cross) if 0 <= cross <= fit["pages"]
            else None}
        passes = nums[str(fit["pages"])]["fit_passes_200us_at_dirty_pages"]
        text.append(f"{fit['pages']} pages: GET {fit['one_page_us']:g} us at one dirty page + "
                    f"{fit['ns_per_dirty_page']:g} ns a dirty page, "
                    f"{fit['ns_per_bitmap_word']:g} ns a bitmap word at one page, over 200 us "
                    + (f"from {passes} dirty pages" if passes is not None
                       else "at no dirty count in the slot"))
    cross = report["crossover"]
    pred = []
    for row in cross["by_slot"]:
        d = row["by_sync_us"][f"{cross['sync_us_default']:g}"]
        where = d["xchg_slower_from_fraction"]
        pred.append(f"{row['pages']} pages: xchg slower from "
                    f"{'never' if where is None else where}")
    out.append({"id": "i", "claim": "60c34612: the xchg GET is much faster than the old "
                "(srcu) one unless there are too many dirty pages",
                "verdict": _claim_i_verdict(cross),
                "numbers": {"get": nums, "srcu_prediction_at_sync_us":
                            cross["sync_us_default"], "prediction": pred},
                "summary": "; ".join(text + [f"srcu model at {cross['sync_us_default']:g} us "
                                             f"sync: " + ", ".join(pred)])})
    # (ii) guest-visible latency during a harvest
    rows = [r for r in running if r["protocol"] == "get"]
    base = {(r["pages"], r["vcpus"]): r for r in running if r["protocol"] == "none"}
    ii = {f"{r['pages']}p/{r['vcpus']}v": {
        "gap_p50_us": r["gap_us"]["p50"], "gap_p99_us": r["gap_us"]["p99"],
        "harvest_p50_us": r["harvest_us"]["p50"],
        "gap_without_logging_p50_us": base.get((r["pages"], r["vcpus"]), {}).get(
            "gap_us", {}).get("p50")} for r in rows}
    decided = [r for r in rows
               if (base.get((r["pages"], r["vcpus"]), {}).get("gap_us", {}).get("p50", 0)
                   < THRESHOLD_US)]
    under = [r for r in decided if r["gap_us"]["count"] and r["gap_us"]["p50"] < THRESHOLD_US]
    over = sorted({r["pages"] for r in decided if r["gap_us"]["p50"] >= THRESHOLD_US})
    noisy = sorted({f"{r['pages']}p/{r['vcpus']}v" for r in rows if r not in decided})
    if not rows:
        verdict = _verdict(None)
    elif not decided:
        verdict = ("not decidable on this host at this load: with logging off the same "
                   "measurement already gives a gap over 200 us (p50) in every configuration "
                   "(the vCPU thread descheduled: a software hypervisor sharing 2 busy cores)")
    else:
        verdict = (("holds (gap p50) for " + ", ".join(f"{r['pages']}p/{r['vcpus']}v"
                                                      for r in under)) if under
                   else "does not hold") + (f"; passes 200 us from {over[0]} pages"
                                            if over else "")
        if noisy:
            verdict += f"; not decidable for {', '.join(noisy)} (baseline over 200 us)"
    out.append({"id": "ii", "claim": "60c34612: a guest's latency during live migration "
                "falls under 200 us with the xchg GET",
                "verdict": verdict,
                "numbers": ii,
                "summary": "; ".join(f"{k}: gap p50 {v['gap_p50_us']} us, p99 "
                                     f"{v['gap_p99_us']} us (no logging p50 "
                                     f"{v['gap_without_logging_p50_us']} us)"
                                     for k, v in ii.items())})
    # (iii) manual protect against plain GET
    iii: dict[str, Any] = {}
    for r in running:
        if r["protocol"] in ("get", "clear-slot"):
            iii.setdefault(f"{r['pages']}p/{r['vcpus']}v", {})[r["protocol"]] = {
                "gap_p50_us": r["gap_us"]["p50"], "gap_p99_us": r["gap_us"]["p99"]}
    clear_curve = {f"{s['pages']}p/{s['dirty_pages']}d": {
        "get_us": s["get_us"]["p50"], "clear_us": s["clear_us"]["p50"],
        "ioctls": s["clear_ioctls"]} for s in stopped if s["protocol"].startswith("clear")
        and s["protocol"] == "clear-slot"}
    better = [k for k, v in iii.items() if "clear-slot" in v and "get" in v
              and v["clear-slot"]["gap_p99_us"] <= v["get"]["gap_p99_us"]]
    out.append({"id": "iii", "claim": "2a31b9db: manual protect (GET then CLEAR) keeps the "
                "guest out of its timeline less than plain GET",
                "verdict": (f"holds in {len(better)} of {len(iii)} configurations (gap p99); "
                            f"as (ii), the host's scheduling dominates the gaps here, while "
                            f"with the vCPU stopped GET under manual protect stays flat "
                            f"and CLEAR carries the per-page cost"
                            if iii else "not measured"),
                "numbers": {"gap": iii, "stopped_clear": clear_curve},
                "summary": "; ".join(f"{k}: GET gap p99 {v.get('get', {}).get('gap_p99_us')} "
                                     f"us, GET+CLEAR {v.get('clear-slot', {}).get('gap_p99_us')}"
                                     f" us" for k, v in iii.items())})
    # (iv) the ring against the bitmap at the same write rate
    iv: dict[str, Any] = {}
    for r in running:
        if r["protocol"] in ("get",) or r["protocol"].startswith("ring"):
            iv[f"{r['protocol']} {r['pages']}p/{r['vcpus']}v"] = {
                "writes_per_s": r["writes_per_s"], "faults_per_s": r.get("faults_per_s"),
                "gap_p99_us": r["gap_us"]["p99"],
                "harvest_ns_per_page": round(r["harvest_us"]["p50"] * 1e3 * r["harvests"]
                                             / max(1, r.get("harvested", r.get("reaped", 0))),
                                             1) if r["harvests"] else None,
                "ring_full_exits_per_s": r.get("ring_full_exits_per_s"),
                "ring_full_wait_p50_us": r.get("ring_full_wait_us", {}).get("p50")}
    getw = [v["writes_per_s"] for k, v in iv.items() if k.startswith("get ")]
    ringw = [v["writes_per_s"] for k, v in iv.items() if k.startswith("ring")]
    out.append({"id": "iv", "claim": "the dirty ring against the bitmap at the same write rate",
                "verdict": ("measured: ring writes/s " + ", ".join(str(w) for w in ringw)
                            + " against GET " + ", ".join(str(w) for w in getw)
                            + " (see numbers)") if ringw else "ring not offered",
                "numbers": iv,
                "summary": "; ".join(f"{k}: {v['writes_per_s']} writes/s, gap p99 "
                                     f"{v['gap_p99_us']} us, {v['harvest_ns_per_page']} ns a "
                                     f"harvested page" + (f", {v['ring_full_exits_per_s']} "
                                                          f"ring-full exits/s waiting "
                                                          f"p50 {v['ring_full_wait_p50_us']} us"
                                                          if v['ring_full_exits_per_s']
                                                          is not None else "")
                                     for k, v in iv.items())})
    # (v) getting the information against processing it
    v: dict[str, Any] = {}
    for s in stopped:
        if s["protocol"] == "get" and "copy_us" in s and s["fraction"] >= 0.1:
            v[f"{s['pages']}p/{s['dirty_pages']}d"] = {
                "get_us": s["get_us"]["p50"], "copy_us": s["copy_us"]["p50"],
                "copy_over_get": round(s["copy_us"]["p50"] / max(1e-9, s["get_us"]["p50"]), 1)}
    ratios = [x["copy_over_get"] for x in v.values()]
    out.append({"id": "v", "claim": "60c34612: in the extreme cases getting the dirty-page "
                "information is much faster than userspace processes it",
                "verdict": ("holds" if ratios and min(ratios) > 2 else "does not hold")
                + (f" (copy/GET {min(ratios):g}x to {max(ratios):g}x)" if ratios else ""),
                "numbers": v,
                "summary": "; ".join(f"{k}: GET {x['get_us']} us, copy {x['copy_us']} us"
                                     for k, x in v.items())})
    return out
