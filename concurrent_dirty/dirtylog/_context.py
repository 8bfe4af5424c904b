"""What ``mark_page_dirty`` is told: where a dirty mark comes from.

KVM marks a page dirty from several paths that hold different locks, and an
algorithm may care which (``mark_page_dirty_in_slot`` asks
``kvm_get_running_vcpu()`` for the dirty ring; a bitmap algorithm must
stay atomic because not every caller holds ``mmu_lock``):

* ``fault``: the vCPU's slow page fault, under ``mmu_lock``;
* ``fast_fault``: the fast page fault (c7ba5b48cc8d), *without*
  ``mmu_lock``, after its cmpxchg made the SPTE writable;
* ``on_behalf``: KVM writing guest memory for the guest
  (``kvm_write_guest``), without ``mmu_lock``;
* ``pml``: a vCPU draining its Page Modification Log at a VM exit, without
  ``mmu_lock``.

``vcpu`` is the vCPU the mark runs on, or None when no vCPU is running:
a device write (an on-behalf write made by a VM ioctl or a device model,
kind 2 in a program), which the dirty ring must log in the bitmap beside
its rings (``KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP``).

Backward compatibility: an algorithm whose ``mark_page_dirty`` takes only
``(gfn, vcpu_id)`` keeps working. The harness looks at the signature once
per class (:func:`marker`) and passes ``context=`` only to methods that
accept a ``context`` keyword (or ``**kwargs``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FAST_FAULT", "FAULT", "ON_BEHALF", "PML", "SOURCES", "MarkContext",
           "accepts_context", "marker"]

FAULT, FAST_FAULT, ON_BEHALF, PML = "fault", "fast_fault", "on_behalf", "pml"
SOURCES = (FAULT, FAST_FAULT, ON_BEHALF, PML)


@dataclass(frozen=True, slots=True)
class MarkContext:
    """Where one ``mark_page_dirty`` call comes from."""

    #: One of :data:`SOURCES`.
    source: str
    #: The vCPU the mark runs on, or None.
    vcpu: int | None
    #: Whether the caller holds ``mmu_lock`` (only the slow fault does).
    mmu_lock: bool

    @classmethod
    def of(cls, source: str, vcpu: int | None) -> MarkContext:
        if source not in SOURCES:
            raise ValueError(f"expected a mark source in {list(SOURCES)}, got {source!r}")
        return cls(source, vcpu, source == FAULT)


_ACCEPTS: dict[type, bool] = {}


def accepts_context(cls: type) -> bool:
    """Whether ``cls.mark_page_dirty`` takes a ``context`` keyword; looked
    at once per class."""
    known = _ACCEPTS.get(cls)
    if known is None:
        try:
            params = inspect.signature(getattr(cls, "mark_page_dirty")).parameters  # noqa: B009
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        known = _ACCEPTS[cls] = any(
            p.kind is inspect.Parameter.VAR_KEYWORD
            or (p.name == "context" and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD))
            for p in params.values())
    return known


def marker(algorithm: Any) -> Callable[[int, int, MarkContext], None]:
    """``mark(gfn, vcpu_id, context)`` for ``algorithm``: its
    ``mark_page_dirty`` with the context if it accepts one, else the old
    two-argument call."""
    mark = algorithm.mark_page_dirty
    if accepts_context(type(algorithm)):
        return lambda gfn, vcpu_id, context: mark(gfn, vcpu_id, context=context)
    return lambda gfn, vcpu_id, context: mark(gfn, vcpu_id)
