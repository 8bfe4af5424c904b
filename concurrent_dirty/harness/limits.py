"""The numeric limits of the command line's options, in one place, so each
option's usage error can name its real range."""

from __future__ import annotations

__all__ = ["MAX_EXECUTIONS", "MAX_PROCESS_WRITERS", "MAX_SECONDS", "MAX_TOTAL_PAGES",
           "MAX_WRITERS", "SEED_RANGE"]

#: The longest time any option takes (about 116 days): far past any real
#: budget, and well inside what thread waits accept (threading.TIMEOUT_MAX).
MAX_SECONDS = 10_000_000
#: Executions per cell or per algorithm.
MAX_EXECUTIONS = 10**12
#: Seeds are 64-bit signed integers (what a replay token records).
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)
#: Guest pages in all, slots x pages per slot (as ``Scenario`` enforces).
#: Set-up and the oracle cost about 8 us per page per execution (write-
#: protecting every page, reading every page's completed write each round,
#: comparing every page at the end), all inside a cell's budget: at 2^18
#: pages a 2 s cell takes about 2.8 s of wall time in all; at 2^24 it took 95 s.
MAX_TOTAL_PAGES = 1 << 18
#: Writers per cell (threads): 64 threads start and stop within a budget.
MAX_WRITERS = 64
#: Writers per cell on the processes engine: each is a fresh interpreter
#: (about 0.1 s of CPU and 10 MB to start); 512 took 26 s before a 2 s cell.
MAX_PROCESS_WRITERS = 8
