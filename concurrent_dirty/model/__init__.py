"""The modelled machine: 64-bit atomic words over shared memory, the arena
that holds them, ``mmu_lock`` and SRCU, memslots, the VM (pages, SPTE
write protection, TLBs) and the vCPU's write protocol.

Layer 2. Every visible effect goes through the switch point; nothing here
schedules.

May import: :mod:`concurrent_dirty.errors`, :mod:`concurrent_dirty._core`.
"""
