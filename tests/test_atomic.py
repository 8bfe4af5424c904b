import mmap
import multiprocessing
from multiprocessing import shared_memory

import atomics
import pytest

from concurrent_dirty import AtomicWords, UsageError
from concurrent_dirty.model.arena import new_segment_name

M64 = (1 << 64) - 1


@pytest.fixture
def words():
    with AtomicWords(bytearray(32), name="w") as w:
        yield w


def test_load_and_store_round_trip(words):
    words.store(1, 0xDEADBEEF)
    assert words.load(1) == 0xDEADBEEF
    assert words.load(0) == 0


def test_store_wraps_negative_values_to_64_bits(words):
    words.store(0, -1)
    assert words.load(0) == M64


def test_exchange_returns_previous_value(words):
    words.store(2, 7)
    assert words.exchange(2, 9) == 7
    assert words.load(2) == 9


def test_compare_exchange_succeeds_only_on_expected(words):
    words.store(0, 5)
    assert words.compare_exchange(0, 5, 6) == (True, 5)
    assert words.compare_exchange(0, 5, 7) == (False, 6)
    assert words.load(0) == 6


def test_fetch_or_and_andnot(words):
    words.store(0, 0b1010)
    assert words.fetch_or(0, 0b0101) == 0b1010
    assert words.fetch_and(0, 0b0110) == 0b1111
    assert words.fetch_andnot(0, 0b0010) == 0b0110
    assert words.load(0) == 0b0100


def test_fetch_add_wraps(words):
    assert words.fetch_add(3, -1) == 0
    assert words.load(3) == M64


def test_bit_operations_use_little_endian_layout(words):
    words.set_bit(65)
    assert words.load(1) == 0b10
    assert words.test_bit(65)
    assert words.test_and_set_bit(65) is True
    assert words.test_and_set_bit(0) is False
    assert words.test_and_clear_bit(65) is True
    assert words.test_and_clear_bit(65) is False
    words.set_bit(255)
    words.clear_bit(0)
    assert words.load(0) == 0 and words.load(3) == 1 << 63


def test_view_over_mmap_and_offset():
    with mmap.mmap(-1, 4096) as m:
        with AtomicWords(m, 2, offset=64) as w:
            w.store(1, 42)
        assert int.from_bytes(m[72:80], "little") == 42


def test_values_are_visible_through_the_public_atomics_api():
    buf = bytearray(16)
    with AtomicWords(buf, 2) as w:
        w.store(0, 123456789)
        with atomics.atomicview(buffer=memoryview(buf)[0:8], atype=atomics.UINT) as a:
            assert a.load() == 123456789
            a.store(99)
        assert w.load(0) == 99


def test_shared_memory_closes_and_unlinks_after_view_close(shm_guard):
    shm = shared_memory.SharedMemory(create=True, size=64, name=new_segment_name())
    try:
        w = AtomicWords(shm.buf, 8)
        w.store(7, 1)
        w.close()
        shm.close()  # would raise BufferError if the export were still held
    finally:
        shm.unlink()


def test_out_of_range_word_index_is_a_clear_error(words):
    with pytest.raises(IndexError, match=r"^word index out of range for w: expected "
                                         r"0 <= i < 4, got 4$"):
        words.load(4)
    with pytest.raises(IndexError, match=r"got -1$"):
        words.exchange(-1, 0)


def test_out_of_range_bit_is_a_clear_error(words):
    with pytest.raises(IndexError, match=r"^bit number out of range for w: expected "
                                         r"0 <= nr < 256, got 256$"):
        words.set_bit(256)


def test_buffer_too_small_is_a_clear_error():
    with pytest.raises(UsageError, match=r"^buffer too small for words: expected at least 40 "
                                         r"bytes \(5 words at offset 0\), got 32$"):
        AtomicWords(bytearray(32), 5)


def test_misaligned_offset_is_a_clear_error():
    with pytest.raises(UsageError, match=r"^misaligned buffer for words: expected an address "
                                         r"that is a multiple of 8"):
        AtomicWords(bytearray(64), 2, offset=3)


def test_read_only_and_non_buffers_are_rejected():
    with pytest.raises(UsageError, match=r"got a read-only one$"):
        AtomicWords(b"\0" * 16)
    with pytest.raises(UsageError, match=r"got int$"):
        AtomicWords(5)


def test_operations_after_close_raise(words):
    words.close()
    with pytest.raises(UsageError, match=r"^w is closed: no operation is allowed after close\(\)$"):
        words.load(0)
    words.close()  # idempotent


def _hammer(name, n, worker):
    shm = shared_memory.SharedMemory(name=name)
    w = AtomicWords(shm.buf, 2)
    for k in range(n):
        w.fetch_add(0, 1)
        w.set_bit(64 + (worker * 7 + k) % 64)
    w.close()
    shm.close()


def test_fetch_add_loses_no_update_between_real_processes(shm_guard):
    """Two processes increment one word on real shared memory: a load-then-
    store emulation would lose increments; one lock xadd loses none."""
    shm = shared_memory.SharedMemory(create=True, size=64, name=new_segment_name())
    try:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_hammer, args=(shm.name, 20000, i)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        with AtomicWords(shm.buf, 2) as w:
            assert w.load(0) == 40000
            assert w.load(1) == M64
    finally:
        shm.close()
        shm.unlink()


def test_every_engine_uses_hardware_atomic_words():
    # The design card: every word operation is one hardware atomic, under
    # the controlled engine too (plain reads and writes there were measured
    # faster, 2026-12-03, and declined: see the README's "Speed").
    from concurrent_dirty import Scenario
    from concurrent_dirty.dirtylog import resolve_algorithm
    from concurrent_dirty.engines.controlled import _vm
    from concurrent_dirty.harness.execution import COMPLETED, Vm

    scenario = Scenario(writers=2, slots=1, pages=4)
    cls = resolve_algorithm("xchg")
    assert type(_vm(cls, scenario).arena.words(COMPLETED)) is AtomicWords
    vm = Vm(cls, scenario, shared=False, engine="threads")
    try:
        assert type(vm.arena.words(COMPLETED)) is AtomicWords
    finally:
        vm.arena.close()
