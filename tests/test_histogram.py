"""The streaming latency histogram: percentiles within its stated relative
error of the exact ones, in memory that does not grow."""

import math
import random

import pytest

from concurrent_dirty.harness.histogram import HIGH, LOW, RELATIVE_ERROR, LatencyHistogram

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0)


def exact(ordered, q):
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _samples(kind, seed, n):
    rng = random.Random(seed)
    if kind == "lognormal":  # harvest latencies: a body near 50 us, a long tail
        return [min(HIGH * 0.99, rng.lognormvariate(math.log(5e-5), 1.5)) for _ in range(n)]
    if kind == "uniform-log":  # every decade of the range
        return [LOW * (HIGH / LOW) ** rng.random() for _ in range(n)]
    return [rng.choice((1e-6, 2e-6, 3e-3)) * (1 + rng.random() * 1e-3) for _ in range(n)]


@pytest.mark.parametrize("kind", ["lognormal", "uniform-log", "clustered"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_are_within_the_stated_relative_error(kind, seed):
    samples = _samples(kind, seed, 5000)
    h = LatencyHistogram()
    for s in samples:
        h.record(s)
    ordered = sorted(samples)
    assert h.count == len(samples)
    for q in QUANTILES:
        want = exact(ordered, q)
        assert abs(h.percentile(q) - want) <= RELATIVE_ERROR * want * (1 + 1e-9), (q, want)
    assert h.max == ordered[-1] and h.min == ordered[0]
    assert RELATIVE_ERROR < 0.01  # two significant digits, as documented


def test_memory_does_not_grow_with_the_count():
    h = LatencyHistogram()
    size = h.buckets
    rng = random.Random(7)
    for _ in range(200_000):
        h.record(rng.expovariate(1e4))
    assert h.buckets == size and len(h._counts) == size
    assert size < 1200
    h.clear()
    assert h.buckets == size and h.count == 0


def test_values_outside_the_range_are_counted_and_max_is_exact():
    h = LatencyHistogram()
    for s in (0.0, -1.0, 1e-9, 5e3):
        h.record(s)
    assert h.count == 4
    assert h.max == 5e3 and h.min == 0.0
    assert h.percentile(0.0) == 0.0  # clamped to the exact minimum
    assert h.percentile(1.0) == 5e3


def test_merge_equals_recording_everything_in_one():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    rng = random.Random(3)
    for i in range(3000):
        s = rng.lognormvariate(-9, 1)
        (a if i % 3 else b).record(s)
        both.record(s)
    a.merge(b)
    assert a.count == both.count and a.max == both.max and a.min == both.min
    assert [a.percentile(q) for q in QUANTILES] == [both.percentile(q) for q in QUANTILES]


def test_the_report_shape_in_milliseconds():
    h = LatencyHistogram()
    assert h.percentiles_ms() == {"p50": 0.0, "p99": 0.0, "max": 0.0}
    for s in (1e-3, 2e-3, 3e-3):
        h.record(s)
    ms = h.percentiles_ms()
    assert list(ms) == ["p50", "p99", "max"]
    assert ms["max"] == 3.0
    assert abs(ms["p50"] - 2.0) <= 2.0 * RELATIVE_ERROR
    with pytest.raises(ValueError, match=r"^expected a quantile from 0 to 1, got 1.5$"):
        h.percentile(1.5)
