"""The one switch-point function every visible shared-state effect goes through.

Every atomic word operation, every ``mmu_lock`` acquire and release, every
guest page write and every SRCU read-side entry and exit calls
:func:`switch_point` *before* its visible effect, with a short operation
name, the name of the object touched and an index. The free-running engines
install a noise hook here (random yields and short sleeps, in the manner of
IBM's ConTest) and a controlled scheduler can install itself here without a
single change to the algorithms: the primitives are facades that keep no
scheduling logic (tokio-rs/loom and awslabs/shuttle are built the same way).

The hook is per process and held in a module global so that the hot path is
one global load and one ``is None`` test when no hook is installed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

__all__ = ["NoiseHook", "SwitchHook", "current", "install", "switch_point"]

SwitchHook = Callable[[str, str, int], None]

#: The installed hook, or None. Read directly by the hot paths.
HOOK: SwitchHook | None = None


def switch_point(op: str, target: str, index: int = 0) -> None:
    """Announce that the calling thread is about to perform ``op`` on
    ``target[index]``. A no-op unless a hook is installed."""
    hook = HOOK
    if hook is not None:
        hook(op, target, index)


def cpu_relax(target: str, index: int = 0) -> None:
    """A spin-wait iteration: the caller cannot progress until another
    thread acts. Free-running, give up the CPU; under a controlled scheduler
    (a hook with ``handles_yield``), a ``yield`` switch point that makes the
    scheduler run someone else."""
    hook = HOOK
    if hook is not None and getattr(hook, "handles_yield", False):
        hook("yield", target, index)
    else:
        time.sleep(0)


def install(hook: SwitchHook | None) -> SwitchHook | None:
    """Install ``hook`` for this process; return the previous one."""
    global HOOK
    previous, HOOK = HOOK, hook
    return previous


def current() -> SwitchHook | None:
    return HOOK


class NoiseHook:
    """ConTest-style noise: at each switch point, with probability
    ``probability``, give up the CPU (``sleep(0)``) or, one time in four,
    sleep for a few microseconds. Each thread draws from its own generator,
    seeded from ``seed`` and the thread's name, so noise needs no lock."""

    def __init__(self, probability: float, seed: int) -> None:
        self.probability = probability
        self.seed = seed
        self._local = threading.local()

    def _rng(self) -> random.Random:
        rng: random.Random | None = getattr(self._local, "rng", None)
        if rng is None:
            rng = random.Random(f"noise:{self.seed}:{threading.current_thread().name}")
            self._local.rng = rng
        return rng

    def __call__(self, op: str, target: str, index: int) -> None:
        rng = self._rng()
        if rng.random() < self.probability:
            if rng.random() < 0.25:
                time.sleep(rng.random() * 20e-6)
            else:
                time.sleep(0)
