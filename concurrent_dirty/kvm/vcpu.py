"""A vCPU run by one real OS thread in ``KVM_RUN``, its exits handled.

The GIL is dropped for the whole ``KVM_RUN`` call, so vCPU threads write
guest pages in parallel with the harvester, as QEMU's do. Exits:

* ``IO`` on port 0xe1: a sync point (counted; the thread goes back in);
  on 0xe2: the guest is done;
* ``DIRTY_RING_FULL``: the ring reached KVM's soft limit; the thread waits
  for the reaper (``on_ring_full``), then goes back in;
* ``SHUTDOWN``: the guest triple-faulted; the error gives its registers;
* ``INTR``: a kick (below) or a stray signal.

**Stopping a vCPU.** A thread blocked in ``KVM_RUN`` cannot be reached by
an asynchronous exception. :meth:`KvmVcpu.kick` sets ``kvm_run.immediate_exit``
and sends :data:`KICK_SIGNAL` to the thread (``pthread_kill``): the signal
makes ``KVM_RUN`` return ``EINTR`` at once, and ``immediate_exit`` makes
any later entry return at once, so no race between the check and the
entry can keep the thread inside (Documentation/virt/kvm/api.rst,
"immediate_exit"). The signal needs a handler, installed by
:func:`kick_handler` from the main thread; the handler does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator

from ..errors import CodeUnderTestError, HangError
from . import _abi
from ._abi import KvmIoctlError, ioctl
from .guest import CB, GUEST_MODE, PORT_DONE, PORT_SYNC, GuestLayout

__all__ = ["KICK_SIGNAL", "KvmVcpu", "kick_handler"]

#: The signal that kicks a vCPU thread out of KVM_RUN (QEMU uses SIG_IPI,
#: SIGUSR1; a real-time signal here, to leave SIGUSR1 to the user).
KICK_SIGNAL = signal.SIGRTMIN + 5
_installed = threading.local()


def _ignore(signum: int, frame: object) -> None:
    """The kick's handler: its delivery is all that matters."""


def kicks_work() -> bool:
    """Whether the kick's signal has a handler now (else it would kill)."""
    return signal.getsignal(KICK_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None)


@contextlib.contextmanager
def kick_handler() -> Iterator[bool]:
    """Install the kick's handler for the duration; yields whether kicks
    work (only the main thread can install a handler: elsewhere vCPUs are
    stopped by their guest's next check of ``stop`` instead)."""
    if threading.current_thread() is not threading.main_thread():
        yield kicks_work()
        return
    previous = signal.signal(KICK_SIGNAL, _ignore)
    try:
        yield True
    finally:
        # A kick sent to a thread the scheduler has not run yet is handled
        # when it runs: with the default action back it would end the
        # process. So the do-nothing handler stays unless the signal had
        # a handler of someone else's before.
        if previous not in (signal.SIG_DFL, None, _ignore):
            signal.signal(KICK_SIGNAL, previous)


class KvmVcpu:
    """One vCPU of a :class:`~concurrent_dirty.kvm.vm.KvmVm`."""

    def __init__(self, vm: object, vcpu_id: int, layout: GuestLayout,
                 system: memoryview, *, mode: str = GUEST_MODE) -> None:
        from .vm import KvmVm

        assert isinstance(vm, KvmVm)
        self.vm = vm
        self.id = vcpu_id
        self.layout = layout
        self.system = system
        self.cb = layout.cb(vcpu_id)
        self.mode = mode
        self.fd = ioctl(vm.fd, _abi.KVM_CREATE_VCPU, vcpu_id, what=f"vcpu {vcpu_id}")
        self.run_map: mmap.mmap | None = None
        self.ring: mmap.mmap | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.kicked = False
        self.syncs = 0
        self.ring_full_exits = 0
        self.ring_full_waits: list[float] = []
        self.exits = 0
        #: Why the thread could not be stopped, if it could not.
        self.stuck: str | None = None
        #: Called on a DIRTY_RING_FULL exit; returns once the reaper made
        #: room (or the run is ending).
        self.on_ring_full: Callable[[KvmVcpu], None] | None = None
        vm.on_close(self)
        self.run_map = mmap.mmap(self.fd, vm.vcpu_mmap_size, flags=mmap.MAP_SHARED,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if vm.ring_bytes:
            self.ring = mmap.mmap(self.fd, vm.ring_bytes, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE,
                                  offset=_abi.KVM_DIRTY_LOG_PAGE_OFFSET * mmap.PAGESIZE)
        self._setup()

    # -- set-up ------------------------------------------------------------------
    def _setup(self) -> None:
        nent = 256
        cpuid = ctypes.create_string_buffer(8 + nent * _abi.CPUID_ENTRY_SIZE)
        struct.pack_into("<I", cpuid, 0, nent)
        ioctl(self.vm.kvm_fd, _abi.KVM_GET_SUPPORTED_CPUID, cpuid, what=f"nent {nent}")
        ioctl(self.fd, _abi.KVM_SET_CPUID2, cpuid,
              what=f"nent {struct.unpack_from('<I', cpuid, 0)[0]}")
        sregs = ctypes.create_string_buffer(_abi.SREGS_SIZE)
        ioctl(self.fd, _abi.KVM_GET_SREGS, sregs)
        seg = _abi.SEGMENT
        layout = self.layout
        # 64-bit code and data, flat and present: user (CPL3) or kernel (CPL0).
        if self.mode == "long64-cpl0":
            code = seg.pack(0, 0xFFFFFFFF, 0x08, 0xB, 1, 0, 0, 1, 1, 1, 0, 0)
            data = seg.pack(0, 0xFFFFFFFF, 0x10, 0x3, 1, 0, 1, 1, 0, 1, 0, 0)
        else:
            code = seg.pack(0, 0xFFFFFFFF, 0x33, 0xB, 1, 3, 0, 1, 1, 1, 0, 0)
            data = seg.pack(0, 0xFFFFFFFF, 0x2B, 0x3, 1, 3, 1, 1, 0, 1, 0, 0)
        tss = seg.pack(layout.TSS, 0x67, 0x38, 0xB, 1, 0, 0, 0, 0, 0, 0, 0)
        ldt = seg.pack(0, 0xFFFF, 0, 0x2, 0, 0, 0, 0, 0, 0, 0, 1)
        for i, name in enumerate(_abi.SREGS_SEGMENTS):
            value = {"cs": code, "tr": tss, "ldt": ldt}.get(name, data)
            ctypes.memmove(ctypes.addressof(sregs) + i * seg.size, value, seg.size)
        struct.pack_into("<QH", sregs, _abi.SREGS_GDT, layout.GDT, 8 * 9 - 1)
        struct.pack_into("<QH", sregs, _abi.SREGS_IDT, 0, 0)
        struct.pack_into("<Q", sregs, _abi.SREGS_CR0, 0x80050033)  # PG WP NE ET MP PE
        struct.pack_into("<Q", sregs, _abi.SREGS_CR3, layout.PML4)
        struct.pack_into("<Q", sregs, _abi.SREGS_CR4, 0x20)  # PAE
        struct.pack_into("<Q", sregs, _abi.SREGS_EFER, 0x500)  # LME LMA
        ioctl(self.fd, _abi.KVM_SET_SREGS, sregs, what=f"vcpu {self.id}: {self.mode}")
        self._set_entry()

    def _set_entry(self) -> None:
        """Point the guest at its first instruction, stack and control block."""
        layout = self.layout
        regs = dict.fromkeys(_abi.REG_NAMES, 0)
        regs.update(rip=layout.CODE, rsp=layout.stack_top(self.id), rdi=self.cb, rflags=0x2)
        buf = ctypes.create_string_buffer(_abi.REGS.pack(*regs.values()))
        ioctl(self.fd, _abi.KVM_SET_REGS, buf, what=f"vcpu {self.id}")

    def regs(self) -> dict[str, int]:
        """The guest's registers (only while this vCPU is not in KVM_RUN)."""
        buf = ctypes.create_string_buffer(_abi.REGS.size)
        ioctl(self.fd, _abi.KVM_GET_REGS, buf)
        return dict(zip(_abi.REG_NAMES, _abi.REGS.unpack(buf.raw), strict=True))

    # -- the control block -------------------------------------------------------
    def cb_load(self, field: int) -> int:
        return int(struct.unpack_from("<Q", self.system, self.cb + field)[0])

    def cb_store(self, field: int, value: int) -> None:
        struct.pack_into("<Q", self.system, self.cb + field, value)

    @property
    def progress(self) -> int:
        """Writes this vCPU's guest has completed (read from guest memory:
        vCPU ioctls block while the thread is in KVM_RUN)."""
        return self.cb_load(CB.PROGRESS)

    # -- running -------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"vcpu {self.id}", daemon=True)
        self.thread.start()

    def restart(self) -> None:
        """Run the guest again from its first instruction (after it ended
        with ``out 0xe2``): its registers are reset with KVM_SET_REGS,
        which is only possible while no thread is in KVM_RUN, then a new
        thread enters. The control block (list, passes...) is the host's
        to set before."""
        if self.thread is not None and self.thread.is_alive():
            raise HangError(f"vcpu {self.id}: restart while its thread is still in KVM_RUN")
        if self.error is not None:
            raise self.error
        self._set_entry()
        self.done.clear()
        self.kicked = False
        if self.run_map is not None:
            self.run_map[_abi.RUN_IMMEDIATE_EXIT] = 0
        self.start()

    def _loop(self) -> None:
        assert self.run_map is not None
        run = self.run_map
        try:
            while not self.kicked:
                ret = _abi._ioctl(self.fd, _abi.KVM_RUN, None)
                self.exits += 1
                if ret < 0:
                    err = ctypes.get_errno()
                    if err == 4 and self.kicked:  # EINTR: the kick
                        return
                    if err == 4:
                        continue
                    raise KvmIoctlError(f"KVM_RUN(vcpu {self.id}) failed: "
                                        f"{_abi.errno_name(err)}", err)
                reason = struct.unpack_from("<I", run, _abi.RUN_EXIT_REASON)[0]
                if reason == _abi.KVM_EXIT_IO:
                    port = struct.unpack_from("<H", run, _abi.RUN_EXIT_UNION + 2)[0]
                    if port == PORT_SYNC:
                        self.syncs += 1
                        continue
                    if port == PORT_DONE:
                        return
                    raise CodeUnderTestError(f"vcpu {self.id}: the guest wrote to I/O port "
                                             f"{port:#x}, which it never uses")
                if reason == _abi.KVM_EXIT_DIRTY_RING_FULL:
                    self.ring_full_exits += 1
                    t0 = time.perf_counter()
                    if self.on_ring_full is not None:
                        self.on_ring_full(self)
                    self.ring_full_waits.append(time.perf_counter() - t0)
                    continue
                if reason == _abi.KVM_EXIT_INTR:
                    continue
                raise self._unexpected(reason)
        except BaseException as exc:  # the engine reports it; the thread ends
            self.error = exc
        finally:
            self.done.set()

    def _unexpected(self, reason: int) -> BaseException:
        name = _abi.EXIT_NAMES.get(reason, str(reason))
        try:
            regs = self.regs()
            state = (f"rip {regs['rip']:#x} (code offset {regs['rip'] - self.layout.CODE:#x}), "
                     f"rsp {regs['rsp']:#x}, rcx {regs['rcx']:#x}, rsi {regs['rsi']:#x}, "
                     f"progress {self.progress}")
        except KvmIoctlError as exc:
            state = f"registers unreadable: {exc}"
        if reason == _abi.KVM_EXIT_SHUTDOWN:
            return CodeUnderTestError(f"vcpu {self.id}: the guest shut down (a triple fault: "
                                      f"an exception with no handler) at {state}")
        return CodeUnderTestError(f"vcpu {self.id}: unexpected exit {name} at {state}")

    def kick(self) -> None:
        """Get the thread out of KVM_RUN now (see the module docstring).
        Without the kick's handler (off the main thread) no signal is sent,
        its default action would end the process: ``stop`` in the control
        block ends the guest at its next write instead."""
        self.kicked = True
        with contextlib.suppress(ValueError, TypeError):  # guest memory already released
            self.cb_store(CB.STOP, 1)
        if self.run_map is not None:
            self.run_map[_abi.RUN_IMMEDIATE_EXIT] = 1
        thread = self.thread
        if thread is not None and thread.ident is not None and not self.done.is_set() \
                and kicks_work():
            with contextlib.suppress(ProcessLookupError):
                signal.pthread_kill(thread.ident, KICK_SIGNAL)

    def join(self, timeout: float) -> None:
        """Wait for the thread; kick it again now and then (a kick sent
        between its check and its entry is caught by immediate_exit)."""
        thread = self.thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            if self.kicked and not self.done.is_set():
                self.kick()
            thread.join(0.05)
            if time.monotonic() > deadline:
                raise HangError(f"vcpu {self.id}'s thread did not leave KVM_RUN within "
                                f"{timeout:g}s of being stopped")

    def close(self) -> None:
        """Stop the thread and release the mappings and the fd; never
        raises. A thread that would not leave KVM_RUN is left behind
        (daemon): the kernel keeps its file until the ioctl returns."""
        import os

        if self.thread is not None and self.thread.is_alive():
            self.kick()
            try:
                self.join(5.0)
            except HangError as exc:
                self.stuck = str(exc)
        for name in ("ring", "run_map"):
            memory = getattr(self, name)
            setattr(self, name, None)
            if memory is not None:
                with contextlib.suppress(BufferError, ValueError):
                    memory.close()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
