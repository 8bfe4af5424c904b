"""A minimal VMM: /dev/kvm, a VM, memslots over anonymous mmaps, and the
dirty-logging ioctls (``KVM_GET_DIRTY_LOG``, ``KVM_CLEAR_DIRTY_LOG``,
``KVM_RESET_DIRTY_RINGS``, the capabilities that switch them).

Standard library only. Every resource (fds, mappings, vCPU threads) is
owned by one :class:`KvmVm` whose :meth:`KvmVm.close` releases all of it,
and is idempotent: the engine calls it on every path out (an error, a
violation, Ctrl-C, the watchdog).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass
from typing import ClassVar

from ..errors import UsageError
from . import _abi
from ._abi import KvmIoctlError, ioctl
from .guest import DATA_BASE, PAGE, GuestLayout

__all__ = ["KvmUnavailable", "KvmVm", "Memslot", "Probe", "probe"]

#: The KVM device; ``CONCURRENT_DIRTY_KVM_DEVICE`` names another (a test
#: fakes an absent device with it).
DEVICE_ENV = "CONCURRENT_DIRTY_KVM_DEVICE"


def device() -> str:
    return os.environ.get(DEVICE_ENV) or "/dev/kvm"


class KvmUnavailable(UsageError):
    """The kvm engine cannot run on this machine: no /dev/kvm, no access to
    it, or a capability it needs is missing. The message is one line."""


@dataclass(frozen=True)
class Probe:
    """What this machine's KVM offers (``reason`` is None when usable)."""

    reason: str | None
    api_version: int = 0
    manual_protect: int = 0
    ring_bytes: int = 0
    ring_acq_rel: int = 0
    ring_with_bitmap: int = 0
    max_vcpus: int = 0
    recommended_vcpus: int = 0

    def require(self, what: str = "") -> None:
        if self.reason is not None:
            raise KvmUnavailable(self.reason)
        if what == "manual" and not self.manual_protect & _abi.MANUAL_PROTECT_ENABLE:
            raise KvmUnavailable("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is not offered by this "
                                 "/dev/kvm: the manual-protect (CLEAR) protocols cannot run")
        if what == "ring" and not (self.ring_bytes and self.ring_acq_rel):
            raise KvmUnavailable("KVM_CAP_DIRTY_LOG_RING_ACQ_REL is not offered by this "
                                 "/dev/kvm: the dirty-ring protocols cannot run")


def probe(path: str | None = None) -> Probe:
    """Open the device and read its capabilities; never raises."""
    dev = path or device()
    arch = _abi.check_architecture()
    if arch is not None:
        return Probe(reason=arch)
    if not os.path.exists(dev):
        return Probe(reason=f"{dev} does not exist: this machine offers no KVM "
                            f"(a VM without nested virtualization, or the kvm module not loaded)")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Probe(reason=f"cannot open {dev}: {exc.strerror} (the kvm engine needs "
                            f"read-write access: run as root or join the kvm group)")
    try:
        version = ioctl(fd, _abi.KVM_GET_API_VERSION)
        if version != 12:
            return Probe(reason=f"expected KVM API version 12 from {dev}, got {version}")

        def cap(n: int) -> int:
            return ioctl(fd, _abi.KVM_CHECK_EXTENSION, n, what=str(n))

        return Probe(reason=None, api_version=version,
                     manual_protect=cap(_abi.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
                     ring_bytes=cap(_abi.KVM_CAP_DIRTY_LOG_RING),
                     ring_acq_rel=cap(_abi.KVM_CAP_DIRTY_LOG_RING_ACQ_REL),
                     ring_with_bitmap=cap(_abi.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP),
                     max_vcpus=cap(_abi.KVM_CAP_MAX_VCPUS) or 4,
                     recommended_vcpus=cap(_abi.KVM_CAP_NR_VCPUS) or 4)
    except KvmIoctlError as exc:
        return Probe(reason=f"{dev} answered but {exc}")
    finally:
        os.close(fd)


@dataclass
class Memslot:
    """One memslot: ``npages`` pages at guest address ``gpa`` over an
    anonymous mapping. ``first`` is the slot's first page in the data
    page numbering (the guest's write lists and done[] arrays use it)."""

    id: int
    gpa: int
    npages: int
    first: int
    memory: mmap.mmap
    logging: bool

    @property
    def nwords(self) -> int:
        return -(-self.npages // 64)

    def page(self, offset: int) -> bytes:
        return self.memory[offset * PAGE:(offset + 1) * PAGE]


class KvmVm:
    """A VM with a system slot (id 0) and logged data slots (ids 1..)."""

    #: Mappings made by every VM of this process and not yet unmapped (the
    #: tests' leak check: /proc/self/maps also counts the allocator's own).
    live_mappings: ClassVar[int] = 0

    def __init__(self, path: str | None = None) -> None:
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []
        self.closers: list[object] = []
        self.slots: list[Memslot] = []
        self.system: mmap.mmap | None = None
        self.layout: GuestLayout | None = None
        self.ring_bytes = 0
        self.manual = 0
        self._closed = False
        self.kvm_fd = self._open(path or device())
        try:
            self.vcpu_mmap_size = ioctl(self.kvm_fd, _abi.KVM_GET_VCPU_MMAP_SIZE)
            self.fd = ioctl(self.kvm_fd, _abi.KVM_CREATE_VM, 0, what="type 0")
        except BaseException:
            self.close()
            raise
        self.fds.append(self.fd)

    def _open(self, device: str) -> int:
        try:
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KvmUnavailable(f"cannot open {device}: {exc.strerror}") from None
        self.fds.append(fd)
        return fd

    # -- memory ------------------------------------------------------------------
    def map(self, nbytes: int) -> mmap.mmap:
        memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.maps.append(memory)
        KvmVm.live_mappings += 1
        return memory

    @staticmethod
    def address(memory: mmap.mmap) -> int:
        buf = (ctypes.c_char * 1).from_buffer(memory)
        try:
            return ctypes.addressof(buf)
        finally:
            del buf

    def set_region(self, slot: int, flags: int, gpa: int, size: int, memory: mmap.mmap) -> None:
        arg = ctypes.create_string_buffer(_abi.MEMORY_REGION.pack(
            slot, flags, gpa, size, self.address(memory) if size else 0))
        ioctl(self.fd, _abi.KVM_SET_USER_MEMORY_REGION, arg,
              what=f"slot {slot}, flags {flags:#x}, gpa {gpa:#x}, size {size:#x}")

    def add_system(self, layout: GuestLayout) -> memoryview:
        self.layout = layout
        self.system = self.map(layout.system_bytes)
        view = memoryview(self.system)
        layout.build(view)
        self.set_region(0, 0, 0, layout.system_bytes, self.system)
        return view

    def add_data_slots(self, sizes: list[int], *, logging: bool = True) -> None:
        gpa, first = DATA_BASE, 0
        for i, npages in enumerate(sizes, start=1):
            memory = self.map(npages * PAGE)
            flags = _abi.KVM_MEM_LOG_DIRTY_PAGES if logging else 0
            self.set_region(i, flags, gpa, npages * PAGE, memory)
            self.slots.append(Memslot(i, gpa, npages, first, memory, logging))
            gpa += npages * PAGE
            first += npages

    def set_logging(self, slot: Memslot, logging: bool) -> None:
        """Turn a slot's dirty logging off or on (QEMU at migration start
        and cancel): KVM drops the slot's bitmap on off, and on on starts a
        fresh one and write-protects the slot (or, with INITIALLY_SET, sets
        every bit)."""
        flags = _abi.KVM_MEM_LOG_DIRTY_PAGES if logging else 0
        self.set_region(slot.id, flags, slot.gpa, slot.npages * PAGE, slot.memory)
        slot.logging = logging

    # -- capabilities --------------------------------------------------------------
    def enable_cap(self, cap: int, *args: int) -> None:
        argv = list(args) + [0] * (4 - len(args))
        arg = ctypes.create_string_buffer(_abi.ENABLE_CAP.pack(cap, 0, *argv))
        ioctl(self.fd, _abi.KVM_ENABLE_CAP, arg,
              what=f"cap {cap}, args {', '.join(f'{a:#x}' for a in args)}")

    def enable_manual_protect(self, initially_set: bool) -> None:
        bits = _abi.MANUAL_PROTECT_ENABLE | (_abi.INITIALLY_SET if initially_set else 0)
        self.enable_cap(_abi.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, bits)
        self.manual = bits

    def enable_ring(self, entries: int) -> None:
        """Before any vCPU exists (KVM refuses it after, with EINVAL)."""
        self.enable_cap(_abi.KVM_CAP_DIRTY_LOG_RING_ACQ_REL, entries * _abi.DIRTY_GFN.size)
        self.ring_bytes = entries * _abi.DIRTY_GFN.size

    # -- the dirty log -----------------------------------------------------------
    def get_dirty_log(self, slot: Memslot, buffer: ctypes.Array[ctypes.c_char]) -> None:
        """KVM_GET_DIRTY_LOG into ``buffer`` (``slot.nwords`` u64 words).
        Without manual protect the kernel also clears the bits it returns
        and write-protects those pages (the seed's xchg loop)."""
        if len(buffer) < 8 * slot.nwords:
            raise UsageError(f"expected a bitmap buffer of at least {8 * slot.nwords} bytes for "
                             f"slot {slot.id} ({slot.npages} pages), got {len(buffer)}")
        arg = ctypes.create_string_buffer(_abi.DIRTY_LOG.pack(slot.id, 0,
                                                              ctypes.addressof(buffer)))
        ioctl(self.fd, _abi.KVM_GET_DIRTY_LOG, arg, what=f"slot {slot.id}")

    def clear_dirty_log(self, slot: Memslot, first_page: int, num_pages: int,
                        masks: ctypes.Array[ctypes.c_char]) -> None:
        """KVM_CLEAR_DIRTY_LOG: clear (and write-protect) the bits of
        ``masks`` over ``num_pages`` pages from ``first_page`` (64-aligned;
        num_pages a multiple of 64 unless it reaches the slot's end)."""
        arg = ctypes.create_string_buffer(_abi.CLEAR_LOG.pack(
            slot.id, num_pages, first_page, ctypes.addressof(masks)))
        ioctl(self.fd, _abi.KVM_CLEAR_DIRTY_LOG, arg,
              what=f"slot {slot.id}, first_page {first_page}, num_pages {num_pages}")

    def reset_dirty_rings(self) -> int:
        return ioctl(self.fd, _abi.KVM_RESET_DIRTY_RINGS)

    # -- teardown ----------------------------------------------------------------
    def on_close(self, closer: object) -> None:
        """Register something with a ``close()`` (a vCPU) to release first."""
        self.closers.append(closer)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for closer in reversed(self.closers):
            try:
                closer.close()  # type: ignore[attr-defined]
            except BaseException as exc:  # release the rest first
                errors.append(exc)
        self.slots.clear()
        for memory in self.maps:
            try:
                memory.close()
                KvmVm.live_mappings -= 1
            except BufferError as exc:
                errors.append(exc)
        self.maps.clear()
        self.system = None
        for fd in reversed(self.fds):
            try:
                os.close(fd)
            except OSError as exc:
                errors.append(exc)
        self.fds.clear()
        if errors:
            raise errors[0]
