"""The engine room: the switch point and the controlled runtime.

Layer 1. Knows nothing of KVM: no lock, page or bitmap is named here.
Primitives elsewhere are facades that announce their effects through
:mod:`.switch` and wait through :func:`.switch.block_until`; the runtime
decides who runs and models blocking with the reason the facade gave.

May import: :mod:`concurrent_dirty.errors` only.
"""
