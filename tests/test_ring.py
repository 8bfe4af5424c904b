"""The dirty ring (issue 9): per-vCPU rings, the bitmap for writes with no
vCPU, the reaper, the soft limit, and its options, under every engine."""

import pytest

from concurrent_dirty import AlgorithmError, Program, Scenario, run_cell, run_controlled
from concurrent_dirty.cli.main import main
from concurrent_dirty.dirtylog import DirtyRingLog, resolve_algorithm
from concurrent_dirty.errors import UsageError
from concurrent_dirty.harness.execution import Vm
from concurrent_dirty.harness.program import (
    DEVICE,
    RING_SIZES,
    ProgramSpace,
    is_ring_algorithm,
    make_program,
)
from concurrent_dirty.model.kvm import RING_DIRTY
from concurrent_dirty.mutants import MUTANTS
from concurrent_dirty.schedulers import RandomScheduler
from concurrent_dirty.search.runner import explore
from tests.test_paths import BUDGET, fresh

RING_MUTANTS = sorted(n for n, m in MUTANTS.items() if m.breaks == "ring" and not m.benign)
RING_LOOK_ALIKES = sorted(n for n, m in MUTANTS.items() if m.breaks == "ring" and m.benign)


class RecordsRing(DirtyRingLog):
    """The ring, recording where each mark went (controlled: one process)."""

    name = "records-ring"
    pushes: list = []
    bitmap: list = []

    def _push(self, vcpu, slot_id, offset):
        RecordsRing.pushes.append((vcpu, slot_id, offset))
        super()._push(vcpu, slot_id, offset)

    def _mark_no_vcpu(self, slot_id, offset):
        RecordsRing.bitmap.append((slot_id, offset))
        super()._mark_no_vcpu(slot_id, offset)


class NeverRecycles(DirtyRingLog):
    """A reset that recycles nothing: a full ring never gets room."""

    name = "never-recycles"

    def _reset(self):
        return


def test_the_ring_is_found_by_name_and_turns_its_model_on():
    assert resolve_algorithm("ring") is DirtyRingLog
    assert is_ring_algorithm("ring") and not is_ring_algorithm("xchg")
    vm = Vm(DirtyRingLog, Scenario(slots=1, pages=4, writers=2), shared=False,
            engine="controlled")
    try:
        assert vm.scenario.dirty_ring and vm.kvm.dirty_ring
        assert vm.kvm.ring.nwords == 2 * 2 * vm.scenario.ring_entries
    finally:
        vm.close()


def test_vcpu_marks_go_to_the_vcpus_ring_and_device_marks_to_the_bitmap():
    RecordsRing.pushes, RecordsRing.bitmap = [], []
    program = Program(writes=(((0, 0), (1, 1), (2, DEVICE)),), rounds=1)
    r = run_controlled(RecordsRing, Scenario(slots=1, pages=4), program,
                       fresh(RandomScheduler(seed=3)))
    assert r.outcome.kind == "ok", r.outcome.message
    assert (0, 0, 0) in RecordsRing.pushes and (0, 0, 1) in RecordsRing.pushes
    assert RecordsRing.bitmap == [(0, 2)]
    assert r.image[:3] == tuple(r.image[:3]) and all(r.image[:3])


def test_an_entry_is_published_after_its_word():
    vm = Vm(DirtyRingLog, Scenario(slots=2, pages=4, writers=1), shared=False,
            engine="controlled")
    try:
        vm.begin(1)
        kvm = vm.kvm
        vm.algorithm._push(0, 1, 3)
        entry, flags = kvm.ring_entry(0, 0)
        assert kvm.ring.peek(flags) == RING_DIRTY
        assert kvm.ring_gfn(kvm.ring.peek(entry)) == kvm.id_to_memslot(1).base_gfn + 3
        assert kvm.ring_used(0) == 1 and not kvm.ring_soft_full(0)
        assert vm.algorithm.reap() == 1 and kvm.ring_used(0) == 0
    finally:
        vm.close()


def test_a_vcpu_at_its_soft_limit_exits_and_reaps():
    # One vCPU, on-behalf writes only (each pushes an entry), a 4-entry
    # ring with a limit of 2 and no harvest round: the vCPU must reap.
    sc = Scenario(slots=1, pages=8, ring_entries=4, ring_soft_limit=2)
    program = Program(writes=(tuple((g, 1) for g in range(8)),), rounds=0)
    r = run_controlled(DirtyRingLog, sc, program, fresh(RandomScheduler(seed=0)), trace=True)
    assert r.outcome.kind == "ok", r.outcome.message
    reaps = [line for line in r.counterexample().splitlines()
             if "vcpu 0" in line and " lock " in line and "reaper" in line]
    assert len(reaps) >= 3  # 8 pushes, room for 2 at a time


def test_a_reaper_that_never_makes_room_is_reported_as_a_deadlock_naming_the_vcpu():
    sc = Scenario(slots=1, pages=8, ring_entries=4, ring_soft_limit=2)
    program = Program(writes=(tuple((g, 1) for g in range(6)),), rounds=0)
    r = run_controlled(NeverRecycles, sc, program, fresh(RandomScheduler(seed=0)))
    assert r.outcome.kind == "deadlock"
    assert "vcpu 0's dirty ring at its soft limit" in r.outcome.message
    assert "waiting for the reaper" in r.outcome.message


def test_a_reaper_that_never_makes_room_is_reported_free_running(shm_guard):
    r = run_cell(Scenario(algorithm="tests.test_ring:NeverRecycles", engine="threads",
                          ring_entries=4, ring_soft_limit=2, on_behalf=1.0, writers=1,
                          lock_timeout=0.5, seconds=5, max_executions=5))
    assert r.error is not None and "waiting for the reaper" in r.error


@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("entries, soft, batch", [(4, 2, 0), (4, 3, 1), (16, 15, 0)])
def test_the_ring_loses_nothing_free(engine, entries, soft, batch, shm_guard):
    r = run_cell(Scenario(algorithm="ring", engine=engine, on_behalf=0.3, ring_entries=entries,
                          ring_soft_limit=soft, ring_batch=batch, **BUDGET))
    assert (r.error, r.violations) == (None, [])
    assert r.faults > 0


@pytest.mark.parametrize("scheduler", ["random", "pct", "dfs"])
def test_the_ring_loses_nothing_under_control(scheduler):
    sc = Scenario(algorithm="ring", slots=1, pages=2, writes=5, on_behalf=0.5,
                  ring_entries=4, ring_soft_limit=2, ring_batch=1)
    r = explore("ring", sc, scheduler=scheduler, executions=300, seconds=30,
                vary_program=scheduler != "dfs")
    assert r.failure is None and r.executions > 0


@pytest.mark.parametrize("name", RING_LOOK_ALIKES)
def test_ring_look_alikes_are_never_reported_by_the_default_search(name):
    r = explore(MUTANTS[name].ref, Scenario(algorithm=MUTANTS[name].ref), executions=400,
                seconds=60, space=ProgramSpace())
    assert r.failure is None and r.executions == 400


@pytest.mark.parametrize("name", RING_MUTANTS)
def test_ring_mutants_are_found_by_the_default_search(name):
    # fuzz's defaults: the portfolio over the whole program space, seed 0.
    r = explore(MUTANTS[name].ref, Scenario(algorithm=MUTANTS[name].ref), executions=3000,
                seconds=120, space=ProgramSpace())
    assert r.failure is not None, f"{name}: nothing in {r.executions} executions"


def test_the_program_space_draws_ring_geometry_only_for_ring_algorithms():
    space = ProgramSpace()
    rings = [space.draw(Scenario(algorithm="ring"), n)[0] for n in range(1, 200)]
    assert {s.ring_entries for s in rings} == set(RING_SIZES)
    assert {s.ring_batch for s in rings} == {0, 1, 2}
    assert all(2 <= s.soft_limit < s.ring_entries for s in rings)
    assert any(s.writes == s.ring_entries + 1 for s in rings)  # a ring that wraps
    plain = [space.draw(Scenario(algorithm="xchg"), n)[0] for n in range(1, 50)]
    assert {(s.ring_entries, s.ring_soft_limit, s.ring_batch) for s in plain} == {(8, None, 0)}
    pinned = ProgramSpace(ring_entries=8, ring_soft_limit=5, ring_batch=1)
    assert {(s.ring_entries, s.ring_soft_limit, s.ring_batch)
            for s in (pinned.draw(Scenario(algorithm="ring"), n)[0] for n in range(1, 50))} \
        == {(8, 5, 1)}
    again = [space.draw(Scenario(algorithm="ring"), n)[0] for n in range(1, 200)]
    assert again == rings


def test_device_writes_are_drawn_and_round_trip():
    kinds = {k for w in make_program(Scenario(on_behalf=1.0, writes=64)).writes for _, k in w}
    assert kinds == {1, 2}
    program = Program(writes=(((0, 0), (1, 1), (2, 2)),), rounds=1)
    assert Program.from_json(program.to_json()) == program
    with pytest.raises(ValueError, match="expected a write kind 0, 1 or 2, got 3"):
        Program.from_json({"writes": [[[0, 3]]], "rounds": 1})


@pytest.mark.parametrize("fields, message", [
    (dict(ring_entries=6), "expected a power of two from 4 to 65536 for ring_entries, got 6"),
    (dict(ring_entries=2), "expected a power of two from 4 to 65536 for ring_entries, got 2"),
    (dict(ring_entries=4, ring_soft_limit=4), "expected a ring soft limit from 2 to 3 for a "
                                               "4-entry ring"),
    (dict(ring_soft_limit=1), "a limit of 1 livelocks"),
    (dict(ring_batch=-1), "expected a reaper batch from 0 (all) to 65536"),
    (dict(dirty_ring=True, pml=True), "expected the dirty ring or PML, got both"),
])
def test_bad_ring_geometry_is_a_usage_error(fields, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Scenario(**fields)


@pytest.mark.parametrize("argv, message", [
    (["--ring-entries", "6"], "argument --ring-entries: expected a power of two from 4 to "
                              "65536, got '6'"),
    (["--ring-entries", "4", "--ring-soft-limit", "4"],
     "expected a ring soft limit from 2 to 3 for a 4-entry ring"),
])
@pytest.mark.parametrize("command", ["fuzz", "stress"])
def test_bad_ring_options_are_one_line_exit_2(capsys, shm_guard, command, argv, message):
    try:
        code = main([command, "--algorithm", "ring", "--seconds", "1", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_a_soft_limit_alone_gets_a_ring_above_it(capsys, shm_guard):
    assert main(["stress", "--algorithm", "ring", "--ring-soft-limit", "9", "--seconds", "0.3",
                 "--engine", "threads"]) == 0


def test_a_ring_model_needs_a_reaper():
    class RingWithoutReap:
        model = {"dirty_ring": True}

        def mark_page_dirty(self, gfn, vcpu_id):
            pass

        def get_dirty_log(self, slot_id):
            return []

        @classmethod
        def shared_words(cls, memslots):
            return {}

        def enable_dirty_logging(self, slot):
            pass

        def read_side(self, vcpu_id):
            pass

    import sys
    sys.modules[__name__].RingWithoutReap = RingWithoutReap
    with pytest.raises(AlgorithmError, match=r"missing reap \(model turns the dirty ring on\)"):
        resolve_algorithm("tests.test_ring:RingWithoutReap")
