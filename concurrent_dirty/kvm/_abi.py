"""The x86-64 KVM ABI this engine speaks: ioctl numbers, structure layouts,
exit reasons and capabilities (``include/uapi/linux/kvm.h``,
``Documentation/virt/kvm/api.rst``), and one ioctl call that turns every
failure into a one-line :class:`KvmIoctlError`.

Every ioctl goes through libc's ``ioctl`` by ctypes (``CDLL``, which drops
the GIL for the call: a vCPU thread in ``KVM_RUN`` leaves the other threads
running). Not ``fcntl.ioctl``: it retries a call interrupted by a signal
(PEP 475), so a vCPU kicked out of ``KVM_RUN`` by a signal with
``immediate_exit`` set would re-enter and be kicked again forever; and its
integer argument is a C ``int``, too small for an address.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from ..errors import ExecutionFailed

__all__ = ["KvmIoctlError", "KvmStats", "ioctl", "open_stats", "parse_stats", "read_stats"]

# -- ioctl numbers (x86-64) ----------------------------------------------------
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_GET_SUPPORTED_CPUID = 0xC008AE05
KVM_CREATE_VCPU = 0xAE41
KVM_GET_DIRTY_LOG = 0x4010AE42
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_SET_CPUID2 = 0x4008AE90
KVM_ENABLE_CAP = 0x4068AEA3
KVM_CLEAR_DIRTY_LOG = 0xC018AEC0
KVM_RESET_DIRTY_RINGS = 0xAEC7
#: _IO(KVMIO, 0xce), on a VM or a vCPU fd: a new fd of binary statistics.
KVM_GET_STATS_FD = 0xAECE

NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("KVM_") and isinstance(v, int)}

# -- capabilities ------------------------------------------------------------------
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
KVM_CAP_DIRTY_LOG_RING = 192
KVM_CAP_DIRTY_LOG_RING_ACQ_REL = 223
KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP = 225

#: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's argument bits.
MANUAL_PROTECT_ENABLE = 1
INITIALLY_SET = 2

# -- memslots ----------------------------------------------------------------------
KVM_MEM_LOG_DIRTY_PAGES = 1

# -- exits (struct kvm_run) -------------------------------------------------------
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_DIRTY_RING_FULL = 31
EXIT_NAMES = {2: "IO", 5: "HLT", 6: "MMIO", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR",
              17: "INTERNAL_ERROR", 31: "DIRTY_RING_FULL"}

#: struct kvm_run offsets: immediate_exit (u8), exit_reason (u32), and the
#: exit union (``io``: direction u8, size u8, port u16, count u32,
#: data_offset u64).
RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
RUN_EXIT_UNION = 32

# -- the dirty ring ------------------------------------------------------------------
#: The ring is mmapped at this page of the vCPU fd.
KVM_DIRTY_LOG_PAGE_OFFSET = 64
#: struct kvm_dirty_gfn: u32 flags, u32 slot (as_id << 16 | id), u64 offset.
DIRTY_GFN = struct.Struct("<IIQ")
KVM_DIRTY_GFN_F_DIRTY = 1
KVM_DIRTY_GFN_F_RESET = 2
#: Ring sizes in bytes the kernel accepts: a power of two, 4 KiB to 1 MiB
#: (KVM_CAP_DIRTY_LOG_RING's value on this host).
RING_MIN_BYTES = 4096

# -- structures ------------------------------------------------------------------
#: struct kvm_userspace_memory_region.
MEMORY_REGION = struct.Struct("<IIQQQ")
#: struct kvm_dirty_log: slot, pad, bitmap pointer.
DIRTY_LOG = struct.Struct("<IIQ")
#: struct kvm_clear_dirty_log: slot, num_pages, first_page, bitmap pointer.
CLEAR_LOG = struct.Struct("<IIQQ")
#: struct kvm_enable_cap: cap, flags, args[4], pad[64].
ENABLE_CAP = struct.Struct("<II4Q64x")
#: struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags.
REGS = struct.Struct("<18Q")
REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
#: struct kvm_segment: base, limit, selector, type, present, dpl, db, s, l,
#: g, avl, unusable, padding.
SEGMENT = struct.Struct("<QIH8BBx")
SREGS_SIZE = 312
#: In struct kvm_sregs: cs ds es fs gs ss tr ldt (24 bytes each), gdt, idt
#: (u64 base, u16 limit, 6 bytes pad), then cr0 cr2 cr3 cr4 cr8 efer apic_base.
SREGS_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
SREGS_GDT = 192
SREGS_IDT = 208
SREGS_CR0 = 224
SREGS_CR3 = 240
SREGS_CR4 = 248
SREGS_EFER = 264
#: struct kvm_cpuid2 header (nent, pad) and struct kvm_cpuid_entry2.
CPUID_ENTRY_SIZE = 40

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int


class KvmIoctlError(ExecutionFailed):
    """An ioctl on /dev/kvm failed: the message names the ioctl, its
    arguments and errno. On the kvm engine this is an error of the run
    (exit 1), or of the protocol under test when it made the call."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


def errno_name(err: int) -> str:
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


def ioctl(fd: int, request: int, arg: int | ctypes.Array[ctypes.c_char] | None = None,
          *, what: str = "") -> int:
    """One ioctl; returns its (non-negative) result. ``arg`` is an integer
    (passed as is: a capability, an id, an address) or a ctypes buffer
    (passed by address). ``what`` describes the arguments for the error."""
    if isinstance(arg, ctypes.Array):
        value: int | None = ctypes.addressof(arg)
    else:
        value = arg
    ret = _ioctl(fd, request, value)
    if ret < 0:
        err = ctypes.get_errno()
        name = NAMES.get(request, f"ioctl {request:#x}")
        raise KvmIoctlError(f"{name}({what or (arg if isinstance(arg, int) else f'fd {fd}')}) "
                            f"failed: {errno_name(err)}", err)
    return int(ret)


def check_architecture() -> str | None:
    """None on x86-64, else why this engine cannot run here: the ring's
    plain loads and stores are acquire and release only under x86's TSO."""
    machine = platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return (f"the kvm engine runs on x86-64 only (its dirty-ring accesses rely on x86's "
                f"ordering), this machine is {machine}")
    return None


# -- binary statistics (KVM_GET_STATS_FD, Documentation/virt/kvm/api.rst 4.134) ---------
#: struct kvm_stats_header: flags, name_size, num_desc, id_offset, desc_offset,
#: data_offset (u32 each).
STATS_HEADER = struct.Struct("<6I")
#: struct kvm_stats_desc without its name: flags (u32), exponent (s16), size
#: (u16, in u64 values), offset (u32, from data_offset), bucket_size (u32);
#: the name (name_size bytes, NUL-padded) follows.
STATS_DESC = struct.Struct("<IhHII")
#: The stat's type, in flags bits 0-3 (cumulative, instant, peak, ...).
STATS_TYPE_NAMES = {0: "cumulative", 1: "instant", 2: "peak", 3: "linear-hist",
                    4: "log-hist"}


class KvmStats:
    """The layout of one stats fd: its id and, per stat, (offset in bytes
    from the start of the fd, number of u64 values, type name)."""

    def __init__(self, ident: str, data_offset: int,
                 descs: dict[str, tuple[int, int, str]]) -> None:
        self.ident = ident
        self.data_offset = data_offset
        self.descs = descs

    def values(self, data: bytes) -> dict[str, int]:
        """Each stat's value from ``data`` (the fd's bytes from
        ``data_offset``): one u64, or the sum of a histogram's buckets."""
        out = {}
        for name, (offset, size, _kind) in self.descs.items():
            at = offset - self.data_offset
            if at < 0 or at + 8 * size > len(data):
                raise ExecutionFailed(f"KVM stats {name!r}: expected {8 * size} bytes at "
                                      f"{offset}, got a {len(data)}-byte data block")
            out[name] = sum(struct.unpack_from(f"<{size}Q", data, at))
        return out

    @property
    def data_size(self) -> int:
        return max((o + 8 * n for o, n, _ in self.descs.values()), default=self.data_offset) \
            - self.data_offset


def parse_stats(buf: bytes) -> KvmStats:
    """Parse a stats fd's header, id and descriptors from ``buf`` (the fd's
    first bytes, up to its data block at least to the end of the
    descriptors); a malformed buffer raises a one-line error."""
    if len(buf) < STATS_HEADER.size:
        raise ExecutionFailed(f"KVM stats: expected a {STATS_HEADER.size}-byte header, got "
                              f"{len(buf)} bytes")
    _flags, name_size, num_desc, id_offset, desc_offset, data_offset = \
        STATS_HEADER.unpack_from(buf, 0)
    step = STATS_DESC.size + name_size
    if not 0 < name_size <= 4096 or desc_offset + num_desc * step > len(buf) \
            or id_offset + name_size > len(buf):
        raise ExecutionFailed(f"KVM stats: a header that does not fit its buffer (name_size "
                              f"{name_size}, {num_desc} descriptors at {desc_offset}, "
                              f"{len(buf)} bytes)")
    ident = buf[id_offset:id_offset + name_size].split(b"\0", 1)[0].decode(errors="replace")
    descs: dict[str, tuple[int, int, str]] = {}
    for k in range(num_desc):
        at = desc_offset + k * step
        flags, _exp, size, offset, _bucket = STATS_DESC.unpack_from(buf, at)
        raw = buf[at + STATS_DESC.size:at + step].split(b"\0", 1)[0]
        name = raw.decode(errors="replace")
        descs[name] = (data_offset + offset, size, STATS_TYPE_NAMES.get(flags & 0xF, "other"))
    return KvmStats(ident, data_offset, descs)


def open_stats(fd: int, what: str) -> tuple[int, KvmStats]:
    """``KVM_GET_STATS_FD`` on a VM or vCPU fd (open a vCPU's before it runs:
    the ioctl waits for ``KVM_RUN``); the new fd and its layout. Close the
    fd with ``os.close``."""
    stats_fd = ioctl(fd, KVM_GET_STATS_FD, None, what=what)
    try:
        head = os.pread(stats_fd, STATS_HEADER.size, 0)
        if len(head) < STATS_HEADER.size:
            raise ExecutionFailed(f"KVM stats of {what}: a {len(head)}-byte header")
        data_offset = STATS_HEADER.unpack(head)[5]
        return stats_fd, parse_stats(os.pread(stats_fd, data_offset, 0))
    except BaseException:
        os.close(stats_fd)
        raise


def read_stats(stats_fd: int, layout: KvmStats) -> dict[str, int]:
    """The current values of every stat of an open stats fd."""
    return layout.values(os.pread(stats_fd, layout.data_size, layout.data_offset))
