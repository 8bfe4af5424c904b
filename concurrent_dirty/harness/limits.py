"""The numeric limits of the command line's options, in one place, so each
option's usage error can name its real range."""

from __future__ import annotations

__all__ = ["MAX_EXECUTIONS", "MAX_SECONDS", "MAX_TOTAL_PAGES", "SEED_RANGE"]

#: The longest time any option takes (about 116 days): far past any real
#: budget, and well inside what thread waits accept (threading.TIMEOUT_MAX).
MAX_SECONDS = 10_000_000
#: Executions per cell or per algorithm.
MAX_EXECUTIONS = 10**12
#: Seeds are 64-bit signed integers (what a replay token records).
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)
#: Guest pages in all, slots x pages per slot (as ``Scenario`` enforces).
MAX_TOTAL_PAGES = 1 << 24
