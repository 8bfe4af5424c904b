"""A streaming latency histogram in fixed memory, in the spirit of
HdrHistogram: however long a run lasts, recording a harvest latency costs
one logarithm and one counter, and the memory never grows.

Buckets are geometric, each ``RATIO`` (1.02) times wider than the last,
from ``LOW`` (100 ns) to ``HIGH`` (1000 s): 1164 counters in all, plus one
for values below ``LOW`` and one for values above ``HIGH``. A percentile is
reported as its bucket's geometric middle, clamped to the exact minimum and
maximum seen, so for values inside [LOW, HIGH] it is within
``RELATIVE_ERROR`` (sqrt(1.02) - 1, just under 1%: two significant digits)
of the exact value at the same rank of the sorted samples. ``max`` and
``min`` are exact; a percentile that falls below ``LOW`` is reported as the
minimum, one above ``HIGH`` as the maximum.

The rank of percentile ``q`` over ``n`` samples is ``min(n - 1, int(q * n))``
(0-based), the element that :func:`sorted` would put there.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["HIGH", "LOW", "RATIO", "RELATIVE_ERROR", "LatencyHistogram"]

LOW = 1e-7
HIGH = 1e3
RATIO = 1.02
RELATIVE_ERROR = math.sqrt(RATIO) - 1
_LOG_RATIO = math.log(RATIO)
#: Buckets covering [LOW, HIGH), then one below LOW (index 0) and one at or
#: above HIGH (the last index).
_SPAN = math.ceil(math.log(HIGH / LOW) / _LOG_RATIO)
NBUCKETS = _SPAN + 2


class LatencyHistogram:
    """Counts of latencies (seconds) in fixed-size log buckets."""

    __slots__ = ("_counts", "count", "max", "min")

    def __init__(self) -> None:
        self._counts = array("Q", bytes(8 * NBUCKETS))
        self.count = 0
        self.max = 0.0
        self.min = math.inf

    @property
    def buckets(self) -> int:
        """The number of counters: fixed, whatever was recorded."""
        return len(self._counts)

    @staticmethod
    def _index(seconds: float) -> int:
        if seconds < LOW:
            return 0
        if seconds >= HIGH:
            return NBUCKETS - 1
        return 1 + min(_SPAN - 1, int(math.log(seconds / LOW) / _LOG_RATIO))

    @staticmethod
    def _middle(index: int) -> float:
        if index == 0:
            return 0.0  # clamped to the exact minimum
        if index == NBUCKETS - 1:
            return math.inf  # clamped to the exact maximum
        return LOW * math.exp((index - 0.5) * _LOG_RATIO)

    def record(self, seconds: float) -> None:
        """Count one latency (negative or NaN values count as 0)."""
        if not seconds > 0.0:
            seconds = 0.0
        self._counts[self._index(seconds)] += 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    append = record  # a drop-in for the list it replaces

    def percentile(self, q: float) -> float:
        """The latency at quantile ``q`` (0 to 1), in seconds; 0.0 if empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"expected a quantile from 0 to 1, got {q!r}")
        if not self.count:
            return 0.0
        rank = min(self.count - 1, int(q * self.count))  # 0-based
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen > rank:
                return min(self.max, max(self.min, self._middle(index)))
        return self.max  # pragma: no cover (counts always sum to count)

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this one."""
        for i, n in enumerate(other._counts):
            if n:
                self._counts[i] += n
        self.count += other.count
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    def clear(self) -> None:
        self._counts = array("Q", bytes(8 * NBUCKETS))  # one memset, same size
        self.count = 0
        self.max = 0.0
        self.min = math.inf

    def __len__(self) -> int:
        return self.count

    def percentiles_ms(self) -> dict[str, float]:
        """``{"p50", "p99", "max"}`` in milliseconds, the shape of a stress
        report's ``harvest_latency_ms`` (all 0.0 when nothing was recorded)."""
        return {"p50": round(self.percentile(0.5) * 1e3, 4),
                "p99": round(self.percentile(0.99) * 1e3, 4),
                "max": round(self.max * 1e3, 4)}
