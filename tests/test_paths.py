"""The KVM paths after 2012 (issue 9): what mark_page_dirty is told, the
harvester's CLEAR granularity, and the fast page fault, under every engine."""

import pytest

from concurrent_dirty import (
    AlgorithmError,
    ManualDirtyLog,
    Program,
    Scenario,
    XchgDirtyLog,
    run_cell,
    run_controlled,
)
from concurrent_dirty.cli.main import main
from concurrent_dirty.cli.stress import rerun_command
from concurrent_dirty.dirtylog import MarkContext, resolve_algorithm
from concurrent_dirty.dirtylog._context import accepts_context
from concurrent_dirty.harness.execution import Vm
from concurrent_dirty.harness.token import decode
from concurrent_dirty.model.kvm import DIRTY, MMU_WRITABLE, WRITABLE, make_page, page_value
from concurrent_dirty.schedulers import RandomScheduler
from concurrent_dirty.search.runner import explore

BUDGET = dict(seconds=30, max_executions=30)


def fresh(scheduler):
    assert scheduler.new_execution()
    return scheduler


class RecordsContexts(XchgDirtyLog):
    """xchg that records every mark's context (controlled engine: one process)."""

    name = "records-contexts"
    seen: list = []

    def mark_page_dirty(self, gfn, vcpu_id, *, context=None):
        RecordsContexts.seen.append((vcpu_id, context))
        super().mark_page_dirty(gfn, vcpu_id, context=context)


class OldSignature(XchgDirtyLog):
    """A user algorithm written before the context existed."""

    name = "old-signature"

    def mark_page_dirty(self, gfn, vcpu_id):
        super().mark_page_dirty(gfn, vcpu_id)


class TakesKwargs(XchgDirtyLog):
    def mark_page_dirty(self, gfn, vcpu_id, **kw):
        super().mark_page_dirty(gfn, vcpu_id, **kw)


class RecordsClears(ManualDirtyLog):
    name = "records-clears"
    calls: list = []

    def clear_dirty_log(self, slot_id, first_page, mask, num_pages=None):
        RecordsClears.calls.append((first_page, len(mask), num_pages))
        super().clear_dirty_log(slot_id, first_page, mask, num_pages)


class NeedsAnUnknownOption(XchgDirtyLog):
    name = "needs-an-unknown-option"
    model = {"warp_drive": True}


# Every writer writes two pages as the guest and one on its behalf.
GUEST_AND_ON_BEHALF = Program(writes=(((0, False), (1, True), (0, False)),
                                      ((1, False), (0, True), (1, False))), rounds=1)


def _contexts(fast):
    RecordsContexts.seen = []
    sc = Scenario(slots=1, pages=2, fast_page_fault=fast)
    r = run_controlled(RecordsContexts, sc, GUEST_AND_ON_BEHALF, fresh(RandomScheduler(seed=1)))
    assert r.outcome.kind == "ok"
    return RecordsContexts.seen


@pytest.mark.parametrize("fast, fault_source", [(False, "fault"), (True, "fast_fault")])
def test_mark_page_dirty_is_told_its_path_vcpu_and_lock(fast, fault_source):
    seen = _contexts(fast)
    assert {c.source for _, c in seen} == {fault_source, "on_behalf"}
    for vcpu_id, c in seen:
        assert isinstance(c, MarkContext)
        assert c.vcpu == vcpu_id
        assert c.mmu_lock == (c.source == "fault")


def test_the_signature_is_looked_at_once_per_class():
    assert accepts_context(XchgDirtyLog) and accepts_context(TakesKwargs)
    assert not accepts_context(OldSignature)


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_an_old_signature_algorithm_still_runs_free(engine, shm_guard):
    r = run_cell(Scenario(algorithm="tests.test_paths:OldSignature", engine=engine,
                          on_behalf=0.5, fast_page_fault=True, **BUDGET))
    assert (r.error, r.violations) == (None, [])


def test_an_old_signature_algorithm_still_runs_under_control():
    r = explore(OldSignature, Scenario(slots=1, pages=4, writes=2, on_behalf=0.5,
                                       fast_page_fault=True),
                scheduler="random", executions=300, seconds=30)
    assert r.failure is None and r.executions == 300


# 130 pages: two full words and a partial last word of two pages.
EVERY_WORD = Program(writes=(((0, False), (70, True)), ((129, False), (64, True))), rounds=1)


@pytest.mark.parametrize("clear_words, ranges", [
    (1, [(0, 1, 64), (64, 1, 64), (128, 1, 2)]),
    (2, [(0, 2, 128), (128, 1, 2)]),
    (3, [(0, 3, 130)]),
    (0, [(0, 3, 130)]),
])
def test_the_harvester_clears_in_ranges_of_clear_words(clear_words, ranges):
    RecordsClears.calls = []
    sc = Scenario(slots=1, pages=130, clear_words=clear_words)
    r = run_controlled(RecordsClears, sc, EVERY_WORD, fresh(RandomScheduler(seed=0)))
    assert r.outcome.kind == "ok"
    # Every range was dirty in some round: each appears, in slot order per round.
    assert sorted(set(RecordsClears.calls)) == ranges


@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("clear_words", [0, 2])
def test_manual_with_multi_word_clears_loses_nothing_free(engine, clear_words, shm_guard):
    r = run_cell(Scenario(algorithm="manual", engine=engine, pages=130, slots=2,
                          clear_words=clear_words, on_behalf=0.3, **BUDGET))
    assert (r.error, r.violations) == (None, [])


@pytest.mark.parametrize("scheduler", ["random", "pct", "dfs"])
@pytest.mark.parametrize("clear_words", [0, 2])
def test_manual_with_multi_word_clears_loses_nothing_under_control(scheduler, clear_words):
    sc = Scenario(algorithm="manual", slots=1, pages=130, writes=2, on_behalf=0.5,
                  clear_words=clear_words)
    r = explore("manual", sc, scheduler=scheduler, executions=300, seconds=30,
                program=EVERY_WORD if scheduler == "dfs" else None)
    assert r.failure is None and r.executions > 0


def test_the_fast_fix_leaves_a_writable_mmu_writable_spte_and_its_bit():
    vm = Vm(resolve_algorithm("xchg-fast-pf"), Scenario(slots=1, pages=4), shared=False,
            engine="controlled")
    try:
        assert vm.scenario.fast_page_fault  # turned on by the algorithm's model
        vm.begin(1)
        assert vm.kvm.pages.load(2) == MMU_WRITABLE  # mapped, protected for logging
        vcpu = vm.local_vcpus()[0]
        vcpu.guest_write(2)
        assert (vcpu.faults, vcpu.fast_faults) == (1, 1)
        word = vm.kvm.pages.load(2)
        assert word & (WRITABLE | MMU_WRITABLE) == WRITABLE | MMU_WRITABLE
        assert vm.kvm.dirty_bitmap(0).load(0) == 1 << 2
    finally:
        vm.close()


def test_a_plain_spte_store_replaces_the_spte_bits_and_keeps_the_data():
    vm = Vm(XchgDirtyLog, Scenario(slots=1, pages=2), shared=False, engine="controlled")
    try:
        vm.begin(1)
        vm.kvm.pages.store(1, make_page(7, 0, WRITABLE | MMU_WRITABLE | DIRTY))
        vm.kvm.store_spte(1, MMU_WRITABLE)
        word = vm.kvm.pages.load(1)
        assert word & 7 == MMU_WRITABLE
        assert page_value(word) == page_value(make_page(7, 0, 0))
    finally:
        vm.close()


@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("algorithm", ["xchg-fast-pf", "xchg", "manual", "srcu"])
def test_algorithms_lose_nothing_with_the_fast_page_fault_free(algorithm, engine, shm_guard):
    r = run_cell(Scenario(algorithm=algorithm, engine=engine, fast_page_fault=True,
                          on_behalf=0.3, **BUDGET))
    assert (r.error, r.violations) == (None, [])
    assert r.faults > 0


@pytest.mark.parametrize("scheduler", ["random", "pct", "dfs"])
@pytest.mark.parametrize("algorithm", ["xchg-fast-pf", "xchg", "manual", "srcu"])
def test_algorithms_lose_nothing_with_the_fast_page_fault_under_control(algorithm, scheduler):
    sc = Scenario(algorithm=algorithm, slots=1, pages=1, writes=3, on_behalf=0.5,
                  fast_page_fault=True)
    r = explore(algorithm, sc, scheduler=scheduler, executions=300, seconds=30,
                vary_program=scheduler == "random")
    assert r.failure is None and r.executions > 0


def test_an_unknown_model_option_is_refused():
    with pytest.raises(AlgorithmError, match=r"^expected needs-an-unknown-option.model to map "
                                             r"model options \['clear_words', 'dirty_ring', "
                                             r"'fast_page_fault', 'pml', 'pml_entries', "
                                             r"'tlb'\] to values, got "
                                             r"\{'warp_drive': True\}$"):
        Vm(NeedsAnUnknownOption, Scenario(), shared=False, engine="controlled")


def _pending(algorithm, **fields):
    from concurrent_dirty.harness.program import make_program
    from concurrent_dirty.search.replay import pending_token

    sc = Scenario(algorithm=algorithm, slots=1, pages=130, fast_page_fault=True, **fields)
    return pending_token(resolve_algorithm(algorithm), sc, make_program(sc))


def test_a_pending_token_round_trips_the_path_options():
    case = decode(_pending("xchg", clear_words=2))
    assert (case.scenario.clear_words, case.scenario.fast_page_fault) == (2, True)


@pytest.mark.parametrize("argv, message", [
    (["stress", "--clear-words", "-1"], "argument --clear-words: expected a number of words "
                                        "per CLEAR from 0 to 262144, got '-1'"),
    (["fuzz", "--clear-words", "x"], "argument --clear-words: expected a number of words per "
                                     "CLEAR from 0 to 262144, got 'x'"),
])
def test_bad_path_options_are_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"concurrent-dirty: error: {message}\n"


def test_the_rerun_command_names_the_path_options():
    cmd = rerun_command(Scenario(algorithm="manual", clear_words=0, fast_page_fault=True))
    assert "--clear-words 0" in cmd and "--fast-page-fault" in cmd


def test_path_algorithms_are_found_by_name_but_not_run_by_default():
    from concurrent_dirty.dirtylog import BUILTIN_ALGORITHMS, PATH_ALGORITHMS

    assert "xchg-fast-pf" in PATH_ALGORITHMS and "xchg-fast-pf" not in BUILTIN_ALGORITHMS
    assert resolve_algorithm("xchg-fast-pf").model == {"fast_page_fault": True}


# -- hardware Dirty bits and PML ---------------------------------------------

@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("algorithm", ["xchg-pml", "xchg", "manual", "srcu"])
def test_algorithms_lose_nothing_with_pml_free(algorithm, engine, shm_guard):
    r = run_cell(Scenario(algorithm=algorithm, engine=engine, pml=True, on_behalf=0.3,
                          **BUDGET))
    assert (r.error, r.violations) == (None, [])
    assert r.bits > 0


@pytest.mark.parametrize("scheduler", ["random", "pct", "dfs"])
@pytest.mark.parametrize("algorithm", ["xchg-pml", "xchg", "manual", "srcu"])
def test_algorithms_lose_nothing_with_pml_under_control(algorithm, scheduler):
    sc = Scenario(algorithm=algorithm, slots=1, pages=1, writes=3, on_behalf=0.5, pml=True)
    r = explore(algorithm, sc, scheduler=scheduler, executions=300, seconds=30,
                vary_program=scheduler == "random")
    assert r.failure is None and r.executions > 0


def test_a_guest_write_sets_dirty_once_and_logs_it_once():
    vm = Vm(resolve_algorithm("xchg-pml"), Scenario(slots=1, pages=4), shared=False,
            engine="controlled")
    try:
        assert vm.scenario.pml  # turned on by the algorithm's model
        vm.begin(1)
        vcpu = vm.local_vcpus()[0]
        vcpu.guest_write(1)
        vcpu.guest_write(1)  # through the cached dirty translation: not logged again
        assert vm.kvm.pages.load(1) & DIRTY
        assert vcpu.pml_buffer == [1] and vcpu.faults == 0
        assert vm.kvm.dirty_bitmap(0).load(0) == 0  # still in the buffer
        vcpu.exit_to_userspace()
        assert vcpu.pml_buffer == [] and vm.kvm.dirty_bitmap(0).load(0) == 1 << 1
    finally:
        vm.close()


def test_a_full_pml_buffer_is_drained_at_once():
    from concurrent_dirty.model.kvm import PML_ENTRIES

    vm = Vm(resolve_algorithm("xchg-pml"), Scenario(slots=1, pages=PML_ENTRIES + 1),
            shared=False, engine="controlled")
    try:
        vm.begin(1)
        vcpu = vm.local_vcpus()[0]
        for gfn in range(PML_ENTRIES):
            vcpu.guest_write(gfn)
        assert vcpu.pml_buffer == []
        bitmap = vm.kvm.dirty_bitmap(0)
        assert [bitmap.load(i) for i in range(8)] == [(1 << 64) - 1] * 8
    finally:
        vm.close()


def test_pml_marks_say_pml():
    RecordsContexts.seen = []
    sc = Scenario(slots=1, pages=2, pml=True)
    r = run_controlled(RecordsContexts, sc, GUEST_AND_ON_BEHALF, fresh(RandomScheduler(seed=1)))
    assert r.outcome.kind == "ok"
    # xchg write-protects what it harvests, so later writes fault as well.
    assert {c.source for _, c in RecordsContexts.seen} >= {"pml", "on_behalf"}
    assert all(c.mmu_lock == (c.source == "fault") for _, c in RecordsContexts.seen)


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_small_pml_buffers_lose_nothing_free(engine, shm_guard):
    r = run_cell(Scenario(algorithm="xchg-pml", engine=engine, pml_entries=1, on_behalf=0.3,
                          **BUDGET))
    assert (r.error, r.violations) == (None, [])


def test_the_rerun_command_names_the_pml_options():
    cmd = rerun_command(Scenario(algorithm="xchg", pml=True, pml_entries=2))
    assert "--pml" in cmd and "--pml-entries 2" in cmd
