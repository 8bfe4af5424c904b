"""Hypothesis: atomic words, the bit loop and memslots against plain models."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concurrent_dirty import (
    AlgorithmMisuse,
    AtomicWords,
    Memslot,
    MemslotTable,
    UsageError,
    check_clear_range,
    for_each_set_bit,
)

M64 = (1 << 64) - 1
NWORDS = 4
word = st.integers(0, M64)
index = st.integers(0, NWORDS - 1)
bit = st.integers(0, NWORDS * 64 - 1)

ops = st.one_of(
    st.tuples(st.just("store"), index, word),
    st.tuples(st.just("exchange"), index, word),
    st.tuples(st.just("compare_exchange"), index, word, word),
    st.tuples(st.just("fetch_or"), index, word),
    st.tuples(st.just("fetch_and"), index, word),
    st.tuples(st.just("fetch_andnot"), index, word),
    st.tuples(st.just("fetch_add"), index, word),
    st.tuples(st.just("set_bit"), bit),
    st.tuples(st.just("clear_bit"), bit),
    st.tuples(st.just("test_and_set_bit"), bit),
    st.tuples(st.just("test_and_clear_bit"), bit),
)


def model_step(m, op):
    name, *args = op
    if name in ("set_bit", "clear_bit", "test_and_set_bit", "test_and_clear_bit"):
        (nr,) = args
        i, b = divmod(nr, 64)
        was = bool(m[i] >> b & 1)
        if "set" in name:
            m[i] |= 1 << b
        else:
            m[i] &= ~(1 << b) & M64
        return was if name.startswith("test") else None
    i = args[0]
    old = m[i]
    if name == "store":
        m[i] = args[1]
        return None
    if name == "exchange":
        m[i] = args[1]
    elif name == "compare_exchange":
        if old == args[1]:
            m[i] = args[2]
            return (True, old)
        return (False, old)
    elif name == "fetch_or":
        m[i] = old | args[1]
    elif name == "fetch_and":
        m[i] = old & args[1]
    elif name == "fetch_andnot":
        m[i] = old & ~args[1] & M64
    elif name == "fetch_add":
        m[i] = (old + args[1]) & M64
    return old


@given(program=st.lists(ops, max_size=40))
def test_atomic_words_match_a_list_of_ints(program):
    model = [0] * NWORDS
    with AtomicWords(bytearray(8 * NWORDS)) as w:
        for op in program:
            expected = model_step(model, op)
            got = getattr(w, op[0])(*op[1:])
            assert got == expected, op
        assert w.snapshot() == model


@given(word)
def test_lowest_set_bit_loop_matches_a_simple_scan(mask):
    assert list(for_each_set_bit(mask)) == [b for b in range(64) if mask >> b & 1]


@given(st.integers(0, (1 << 300) - 1))
def test_lowest_set_bit_loop_handles_wide_masks(mask):
    assert list(for_each_set_bit(mask)) == [b for b in range(mask.bit_length()) if mask >> b & 1]


slot_sizes = st.lists(st.tuples(st.integers(0, 5), st.integers(1, 200)), min_size=1, max_size=6)


def build(sizes):
    slots, base = [], 0
    for n, (gap, npages) in enumerate(sizes):
        base += gap
        slots.append(Memslot(id=10 + n, base_gfn=base, npages=npages))
        base += npages
    return slots


@given(slot_sizes, st.data())
def test_gfn_to_memslot_matches_a_linear_scan(sizes, data):
    slots = build(sizes)
    table = MemslotTable(reversed(slots))
    gfn = data.draw(st.integers(0, table.total_gfns + 3))
    expected = next((s for s in slots if s.base_gfn <= gfn < s.base_gfn + s.npages), None)
    assert table.gfn_to_memslot(gfn) == expected


@given(slot_sizes)
def test_id_to_memslot_finds_every_slot(sizes):
    slots = build(sizes)
    table = MemslotTable(slots)
    for s in slots:
        assert table.id_to_memslot(s.id) is s
    assert [s.nwords for s in table] == [(s.npages + 63) // 64 for s in slots]


def test_overlapping_slots_are_rejected():
    with pytest.raises(UsageError, match=r"^expected non-overlapping memslots, got slot 0 "
                                         r"\[0, 10\) overlapping slot 1 at gfn 5$"):
        MemslotTable([Memslot(0, 0, 10), Memslot(1, 5, 10)])


def test_unknown_slot_id_is_a_clear_error():
    table = MemslotTable.contiguous(2, 64)
    with pytest.raises(UsageError, match=r"^expected a memslot id in \[0, 1\], got 7$"):
        table.id_to_memslot(7)


@pytest.mark.parametrize("npages", [0, -3])
def test_non_positive_slot_size_is_rejected(npages):
    with pytest.raises(UsageError, match=rf"^expected an int >= 1 for memslot npages, "
                                         rf"got {npages}$"):
        Memslot(0, 0, npages)


@given(st.integers(1, 300), st.integers(0, 320), st.integers(0, 6), st.data())
def test_clear_range_accepts_exactly_kvms_rule(npages, first, words, data):
    slot = Memslot(0, 0, npages)
    num = data.draw(st.one_of(st.none(), st.integers(-1, 330)))
    mask = [0] * words
    eff = min(64 * words, npages - first) if num is None else num
    valid = (first % 64 == 0 and first < npages and 1 <= eff <= npages - first
             and (eff % 64 == 0 or first + eff == npages) and words >= (eff + 63) // 64)
    if valid:
        assert check_clear_range(slot, first, mask, num) == eff
    else:
        with pytest.raises(AlgorithmMisuse,
                           match=r"^KVM_CLEAR_DIRTY_LOG on slot 0: (mask too small: )?expected"):
            check_clear_range(slot, first, mask, num)
