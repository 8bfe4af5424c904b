"""The guest: a few dozen bytes of x86-64 that write pages from a list, and
the memory layout the host builds around them.

It plays the guest of the kernel's ``dirty_log_test``, with what the
harness's oracles need recorded in every page it writes:

* word 0: the page's **version**, bumped with ``lock xadd``: every write to a
  page, whichever vCPU makes it, gets the next number, so "the destination
  holds this write or a later one" is one comparison;
* word 1: the vCPU id; word 2: the vCPU's write sequence number;
* word 3: the TSC, read just before the store (the guest's own timeline:
  guest TSC equals host TSC on this hypervisor).

After a write's four stores the guest publishes, in unlogged memory, the
version it wrote to that page (``done[page]``, one array per vCPU) and its
write count (``progress``): a write visible there has completed, fault and
all, which is what oracle (b) demands from the next collection. It exits to
the host (``out 0xe1``) every ``sync_every`` writes, spins ``delay`` pauses after
each write (a guest doing other work between stores), and ends with ``out
0xe2`` when the host sets ``stop`` or its passes over the list are done.

Mode: 64-bit, at CPL3 by default (``GUEST_MODES``: ``long64-cpl3`` or
``long64-cpl0``, the same code). On a software hypervisor (kvm_pvm) only
CPL3 long-mode code runs natively; CPL0 goes through KVM's instruction
emulator, thousands of times slower and logging pages another way (which
makes it a path worth attacking too, at a few thousand writes a second). The
segments' hidden parts are loaded through ``KVM_SET_SREGS``, so the GDT
exists only to be valid; no IDT: any exception is a triple fault, which
the host reports (``KVM_EXIT_SHUTDOWN``) with the guest's registers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["CB", "DATA_BASE", "GUEST_MODE", "GUEST_MODES", "PORT_DONE", "PORT_SYNC", "GuestLayout",
           "assemble", "listing"]

#: The only mode this engine runs guests in (the mode is recorded in every
#: report; a VMX/SVM host would run the same code).
GUEST_MODE = "long64-cpl3"
GUEST_MODES = ("long64-cpl3", "long64-cpl0")
PORT_SYNC = 0xE1
PORT_DONE = 0xE2
PAGE = 4096
#: Logged guest memory starts at 1 GiB, slot after slot with no gaps.
DATA_BASE = 1 << 30
#: At most this many logged bytes (page tables map [0, DATA_BASE + this)).
MAX_DATA_BYTES = 4 << 30


class CB:
    """The per-vCPU control block (unlogged), u64 fields at these offsets."""

    LIST = 0x00        # guest address of the write list (u64 page indices)
    COUNT = 0x08       # entries in the list (at least 1)
    SYNC_EVERY = 0x10  # writes between sync exits; 0: none
    PROGRESS = 0x18    # written by the guest: writes completed
    VCPU_ID = 0x20
    PASSES = 0x28      # passes over the list; 0: until stop
    DONE = 0x30        # guest address of done[]: u64 version per data page
    DATA_BASE = 0x38
    STOP = 0x40        # written by the host: non-zero ends the guest
    DELAY = 0x48       # pause iterations after each write (the guest's work)


# (label, bytes, comment). A jump's bytes end in a placeholder rel8 that
# assemble() fills from its target label, given in the comment's ``->``.
_PROGRAM: list[tuple[str, bytes, str]] = [
    ("start", bytes.fromhex("4c8b07"), "mov r8, [rdi+LIST]"),
    ("", bytes.fromhex("4c8b4f08"), "mov r9, [rdi+COUNT]"),
    ("", bytes.fromhex("4c8b6f10"), "mov r13, [rdi+SYNC_EVERY]"),
    ("", bytes.fromhex("4c8b5720"), "mov r10, [rdi+VCPU_ID]"),
    ("", bytes.fromhex("4c8b6728"), "mov r12, [rdi+PASSES]"),
    ("", bytes.fromhex("4c8b5f30"), "mov r11, [rdi+DONE]"),
    ("", bytes.fromhex("4c8b7738"), "mov r14, [rdi+DATA_BASE]"),
    ("", bytes.fromhex("4d31ff"), "xor r15, r15            ; write sequence"),
    ("pass", bytes.fromhex("31db"), "xor ebx, ebx            ; i = 0"),
    ("loop", bytes.fromhex("48837f4000"), "cmp qword [rdi+STOP], 0"),
    ("", bytes.fromhex("7500"), "jne -> done"),
    ("", bytes.fromhex("4c39cb"), "cmp rbx, r9"),
    ("", bytes.fromhex("7300"), "jae -> pass_end"),
    ("", bytes.fromhex("498b34d8"), "mov rsi, [r8+rbx*8]     ; page index"),
    ("", bytes.fromhex("4889f1"), "mov rcx, rsi"),
    ("", bytes.fromhex("48c1e10c"), "shl rcx, 12"),
    ("", bytes.fromhex("4c01f1"), "add rcx, r14            ; the page's address"),
    ("", bytes.fromhex("b801000000"), "mov eax, 1"),
    ("", bytes.fromhex("f0480fc101"), "lock xadd [rcx], rax    ; version: the write"),
    ("", bytes.fromhex("488d6801"), "lea rbp, [rax+1]        ; this write's version"),
    ("", bytes.fromhex("4c895108"), "mov [rcx+8], r10        ; vCPU id"),
    ("", bytes.fromhex("49ffc7"), "inc r15"),
    ("", bytes.fromhex("4c897910"), "mov [rcx+16], r15       ; sequence number"),
    ("", bytes.fromhex("0f31"), "rdtsc"),
    ("", bytes.fromhex("48c1e220"), "shl rdx, 32"),
    ("", bytes.fromhex("4809d0"), "or rax, rdx"),
    ("", bytes.fromhex("48894118"), "mov [rcx+24], rax       ; TSC"),
    ("", bytes.fromhex("49892cf3"), "mov [r11+rsi*8], rbp    ; done[page] = version"),
    ("", bytes.fromhex("4c897f18"), "mov [rdi+PROGRESS], r15 ; completed"),
    ("", bytes.fromhex("48ffc3"), "inc rbx"),
    ("", bytes.fromhex("488b4748"), "mov rax, [rdi+DELAY]"),
    ("spin", bytes.fromhex("4885c0"), "test rax, rax"),
    ("", bytes.fromhex("7400"), "jz -> worked"),
    ("", bytes.fromhex("f390"), "pause                   ; the guest's own work"),
    ("", bytes.fromhex("48ffc8"), "dec rax"),
    ("", bytes.fromhex("eb00"), "jmp -> spin"),
    ("worked", bytes.fromhex("4d85ed"), "test r13, r13"),
    ("", bytes.fromhex("7400"), "jz -> loop"),
    ("", bytes.fromhex("4c89f8"), "mov rax, r15"),
    ("", bytes.fromhex("31d2"), "xor edx, edx"),
    ("", bytes.fromhex("49f7f5"), "div r13"),
    ("", bytes.fromhex("4885d2"), "test rdx, rdx"),
    ("", bytes.fromhex("7500"), "jnz -> loop"),
    ("", bytes([0xE6, PORT_SYNC]), "out 0xe1, al            ; sync point"),
    ("", bytes.fromhex("eb00"), "jmp -> loop"),
    ("pass_end", bytes.fromhex("4d85e4"), "test r12, r12"),
    ("", bytes.fromhex("7400"), "jz -> pass             ; passes 0: until stop"),
    ("", bytes.fromhex("49ffcc"), "dec r12"),
    ("", bytes.fromhex("7500"), "jnz -> pass"),
    ("done", bytes([0xE6, PORT_DONE]), "out 0xe2, al            ; the end"),
    ("", bytes.fromhex("eb00"), "jmp -> done"),
]


def assemble() -> bytes:
    """The guest's machine code, jumps resolved (rel8, from the next
    instruction)."""
    offsets: dict[str, int] = {}
    pos = 0
    for label, code, _ in _PROGRAM:
        if label:
            offsets[label] = pos
        pos += len(code)
    out = bytearray()
    for _, code, comment in _PROGRAM:
        if "->" in comment:
            target = comment.split("->")[1].split()[0]
            rel = offsets[target] - (len(out) + len(code))
            if not -128 <= rel <= 127:
                raise AssertionError(f"jump to {target} out of rel8 range: {rel}")
            code = code[:-1] + struct.pack("<b", rel)
        out += code
    return bytes(out)


def listing() -> list[tuple[int, bytes, str]]:
    """(offset, bytes, comment) per instruction, as assembled."""
    code = assemble()
    rows, pos = [], 0
    for _, raw, comment in _PROGRAM:
        rows.append((pos, code[pos:pos + len(raw)], comment))
        pos += len(raw)
    return rows


def _up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class GuestLayout:
    """Where everything lives in guest physical memory (identity-mapped).

    The system slot (id 0, never logged) holds, from address 0: the GDT,
    the TSS, the code, the page tables (2 MiB pages with the user bit, over
    [0, DATA_BASE + data bytes)), then per vCPU its control block, stack,
    write list and done[] array. Logged slots follow at ``DATA_BASE``."""

    nvcpus: int
    data_pages: int
    list_entries: int

    GDT = 0x0000
    TSS = 0x1000
    CODE = 0x2000
    PML4 = 0x4000
    PDPT = 0x5000
    PD = 0x6000

    @property
    def pds(self) -> int:
        return _up(DATA_BASE + self.data_pages * PAGE, 1 << 30) >> 30

    @property
    def vcpu_area(self) -> int:
        return _up(self.PD + self.pds * PAGE, PAGE)

    @property
    def list_bytes(self) -> int:
        return _up(self.list_entries * 8, PAGE)

    @property
    def done_bytes(self) -> int:
        return _up(self.data_pages * 8, PAGE)

    @property
    def per_vcpu(self) -> int:
        return 2 * PAGE + self.list_bytes + self.done_bytes

    def cb(self, vcpu: int) -> int:
        return self.vcpu_area + vcpu * self.per_vcpu

    def stack_top(self, vcpu: int) -> int:
        return self.cb(vcpu) + 2 * PAGE

    def write_list(self, vcpu: int) -> int:
        return self.cb(vcpu) + 2 * PAGE

    def done(self, vcpu: int) -> int:
        return self.write_list(vcpu) + self.list_bytes

    @property
    def system_bytes(self) -> int:
        return _up(self.vcpu_area + self.nvcpus * self.per_vcpu, 1 << 21)

    def build(self, memory: memoryview) -> None:
        """Write the GDT, TSS, code and page tables into the system slot."""
        if self.data_pages * PAGE > MAX_DATA_BYTES:
            raise ValueError(f"expected at most {MAX_DATA_BYTES >> 30} GiB of logged memory, "
                             f"got {self.data_pages} pages")
        if self.system_bytes > DATA_BASE:
            raise ValueError("expected the system slot to fit below the logged memory")
        gdt = [0,
               0x00AF9B000000FFFF,   # 0x08: kernel code, 64-bit
               0x00CF93000000FFFF,   # 0x10: kernel data
               0,
               0,
               0x00CFF3000000FFFF,   # 0x2b: user data (dpl 3)
               0x00AFFB000000FFFF]   # 0x33: user code, 64-bit (dpl 3)
        tss_limit = 0x67
        low = (tss_limit | ((self.TSS & 0xFFFFFF) << 16) | (0x8B << 40)
               | ((self.TSS >> 24) & 0xFF) << 56)
        gdt += [low, self.TSS >> 32]  # 0x38: the 64-bit TSS (busy)
        struct.pack_into(f"<{len(gdt)}Q", memory, self.GDT, *gdt)
        code = assemble()
        memory[self.CODE:self.CODE + len(code)] = code
        present_rw_user = 0x7
        struct.pack_into("<Q", memory, self.PML4, self.PDPT | present_rw_user)
        for i in range(self.pds):
            pd = self.PD + i * PAGE
            struct.pack_into("<Q", memory, self.PDPT + 8 * i, pd | present_rw_user)
            big = 0x80  # PS: a 2 MiB page
            struct.pack_into("<512Q", memory, pd,
                             *(((i << 30) + (j << 21)) | present_rw_user | big
                               for j in range(512)))
