#!/usr/bin/env python3
"""ns per operation: AtomicWords beside the public ``atomics`` API and the
bare patomic call through ctypes, measured in one run on one buffer.

    python tools/bench_atomics.py [--calls N] [--repeat R]

The "bare ctypes" column calls the same patomic function pointer that
``atomics`` uses, with preallocated argument cells: the floor for any
Python-level wrapper that goes through ctypes. Each figure is the best of
R repeats of N calls (the minimum is the least disturbed by the machine).
"""

from __future__ import annotations

import argparse
import ctypes
import timeit

import atomics
from atomics._impl.patomic import Patomic

from concurrent_dirty import AtomicWords


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    buf = bytearray(64)
    words = AtomicWords(buf, 4)
    ctx = atomics.atomicview(buffer=memoryview(buf)[16:24], atype=atomics.UINT)
    public = ctx.__enter__()
    ops = Patomic.ops(8)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf)) + 16
    d, r = ctypes.c_uint64(1), ctypes.c_uint64()
    bd, br = ctypes.byref(d), ctypes.byref(r)
    seq = int(atomics.MemoryOrder.SEQ_CST)
    cmpxchg = ops.xchg_ops.fp_cmpxchg_strong

    rows = [
        ("load", lambda: words.load(2), lambda: public.load(),
         lambda: ops.fp_load(addr, seq, br)),
        ("store", lambda: words.store(2, 1), lambda: public.store(1),
         lambda: ops.fp_store(addr, bd, seq)),
        ("exchange", lambda: words.exchange(2, 1), lambda: public.exchange(1),
         lambda: ops.xchg_ops.fp_exchange(addr, bd, seq, br)),
        ("compare_exchange", lambda: words.compare_exchange(2, 1, 1),
         lambda: public.cmpxchg_strong(1, 1),
         lambda: cmpxchg(addr, bd, bd, seq, seq)),
        ("fetch_or / set_bit", lambda: words.fetch_or(2, 1), lambda: public.bin_fetch_or(1),
         lambda: ops.binary_ops.fp_fetch_or(addr, bd, seq, br)),
        ("fetch_and", lambda: words.fetch_and(2, ~0), lambda: public.bin_fetch_and(1),
         lambda: ops.binary_ops.fp_fetch_and(addr, bd, seq, br)),
        ("fetch_andnot", lambda: words.fetch_andnot(2, 0), lambda: public.bin_fetch_and(1),
         lambda: ops.binary_ops.fp_fetch_and(addr, bd, seq, br)),
        ("fetch_add", lambda: words.fetch_add(2, 1), lambda: public.fetch_add(1),
         lambda: ops.unsigned_ops.fp_fetch_add(addr, bd, seq, br)),
        ("test_and_set_bit", lambda: words.test_and_set_bit(130), lambda: public.bit_test_set(2),
         lambda: ops.bitwise_ops.fp_test_set(addr, 2, seq)),
        ("test_and_clear_bit", lambda: words.test_and_clear_bit(130),
         lambda: public.bit_test_reset(2), lambda: ops.bitwise_ops.fp_test_reset(addr, 2, seq)),
    ]

    def measure(*fns: object) -> list[float]:
        # Interleave the three so that a noisy moment hits them alike; keep
        # each one's best repeat.
        best = [float("inf")] * len(fns)
        for _ in range(args.repeat):
            for k, fn in enumerate(fns):
                t = timeit.timeit(fn, number=args.calls)  # type: ignore[arg-type]
                best[k] = min(best[k], t / args.calls * 1e9)
        return best

    print(f"{'operation':<20} {'AtomicWords':>12} {'atomics API':>12} {'bare ctypes':>12} "
          f"{'vs bare':>8} {'API/ours':>9}")
    for name, ours, api, bare in rows:
        o, a, b = measure(ours, api, bare)
        print(f"{name:<20} {o:>10.0f}ns {a:>10.0f}ns {b:>10.0f}ns {o / b:>7.2f}x {a / o:>8.1f}x")
    ctx.__exit__(None, None, None)
    words.close()


if __name__ == "__main__":
    main()
