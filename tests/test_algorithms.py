"""Each built-in algorithm, under each engine, within a small budget: zero
violations. And the broken ones: caught, with a clear report."""

import pytest

from concurrent_dirty import (
    AlgorithmMisuse,
    AtomicWords,
    DeadlockError,
    MmuLock,
    Scenario,
    XchgDirtyLog,
    run_cell,
)

BUDGET = dict(seconds=30, max_executions=40)


@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("algorithm", ["srcu", "xchg", "manual"])
def test_builtin_algorithm_loses_no_dirty_bit(algorithm, engine, shm_guard):
    r = run_cell(Scenario(algorithm=algorithm, engine=engine, **BUDGET))
    assert r.error is None
    assert r.violations == []
    assert r.executions == 40
    assert r.writes == 40 * 2 * 16
    assert r.rounds >= 80 and r.bits > 0 and r.copied > 0


@pytest.mark.parametrize("workload", ["hot", "sequential"])
@pytest.mark.parametrize("algorithm", ["srcu", "xchg", "manual"])
def test_workloads_and_odd_slot_sizes_lose_nothing(algorithm, workload):
    r = run_cell(Scenario(algorithm=algorithm, workload=workload, pages=100, slots=3,
                          writers=3, on_behalf=0.3, **BUDGET))
    assert (r.error, r.violations) == (None, [])


def test_manual_with_initially_set_loses_nothing():
    r = run_cell(Scenario(algorithm="manual", initially_set=True, pages=70, **BUDGET))
    assert (r.error, r.violations) == (None, [])
    assert r.copied >= 40 * 140  # every page is reported in every execution's first round


def test_long_mode_runs_one_execution_for_the_budget():
    r = run_cell(Scenario(algorithm="xchg", mode="long", seconds=0.5, pages=300))
    assert (r.executions, r.error, r.violations) == (1, None, [])
    assert r.writes > 100


def test_noise_and_switch_interval_keep_correct_algorithms_clean():
    r = run_cell(Scenario(algorithm="xchg", noise=0.2, switch_interval=1e-5, **BUDGET))
    assert (r.error, r.violations) == (None, [])


def test_processes_engine_catches_a_load_then_store_clear(shm_guard):
    r = run_cell(Scenario(algorithm="tests.broken_algorithms:NonatomicClearXchg",
                          engine="processes", seconds=60, on_behalf=0.5),
                 rerun="RERUN-CMD")
    assert r.error is None
    assert r.violations, f"not caught in {r.executions} executions ({r.seconds:.1f}s)"
    v = r.violations[0]
    assert v.algorithm == "nonatomic-clear" and v.engine == "processes"
    text = v.describe()
    assert f"slot {v.slot} page {v.page} (gfn {v.gfn})" in text
    assert f"vcpu {v.write_vcpu}" in text and f"execution {v.execution}" in text
    assert text.endswith("rerun: RERUN-CMD")


def test_a_lock_never_released_is_reported_as_a_deadlock(shm_guard):
    r = run_cell(Scenario(algorithm="tests.broken_algorithms:ForgetsToUnlock",
                          lock_timeout=0.5, **BUDGET))
    assert r.error is not None
    assert r.error == ("DeadlockError: harvester tried to take mmu_lock, which it already "
                       "holds: a recursive lock or a missing unlock")


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_a_dying_writer_stops_the_run_and_cleans_up(engine, shm_guard):
    r = run_cell(Scenario(algorithm="tests.broken_algorithms:CrashesInWriter", engine=engine,
                          **BUDGET))
    assert r.error is not None and r.error.startswith("WorkerDied: vcpu ")
    expected = "died with signal 9" if engine == "processes" else "writer crashed on purpose"
    assert expected in r.error


def test_taking_mmu_lock_twice_is_a_deadlock():
    with AtomicWords(bytearray(8)) as w:
        lock = MmuLock(w, timeout=1)
        lock.acquire(3)
        with pytest.raises(DeadlockError, match=r"^vcpu 3 tried to take mmu_lock, which it "
                                                r"already holds"):
            lock.acquire(3)


def test_waiting_too_long_names_the_holder():
    with AtomicWords(bytearray(8)) as w:
        lock = MmuLock(w, timeout=0.05)
        lock.acquire(0xFFFF)
        with pytest.raises(DeadlockError, match=r"^vcpu 1 waited 0.05s for mmu_lock, held by "
                                                r"harvester"):
            lock.acquire(1)


def test_releasing_a_lock_held_by_someone_else_is_an_error():
    with AtomicWords(bytearray(8)) as w:
        lock = MmuLock(w, timeout=1)
        lock.acquire(1)
        with pytest.raises(AlgorithmMisuse, match=r"^vcpu 2 released mmu_lock held by vcpu 1$"):
            lock.release(2)


def test_clear_on_a_clearing_algorithm_is_refused():
    r"""CLEAR exists only with manual protect (KVM returns -EINVAL)."""
    from concurrent_dirty import XchgDirtyLog

    with pytest.raises(AlgorithmMisuse, match=r"^expected an algorithm with manual_protect"):
        XchgDirtyLog.clear_dirty_log(None, 0, 0, [1])  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_an_error_mid_execution_stops_long_running_writers(engine, shm_guard):
    import threading

    r = run_cell(Scenario(algorithm="tests.broken_algorithms:ForgetsToUnlock", engine=engine,
                          mode="long", seconds=600, lock_timeout=3))
    assert r.error is not None and r.error.startswith("DeadlockError: harvester tried")
    assert not [t.name for t in threading.enumerate() if t.name.startswith("vcpu-")]


def test_swarm_noise_draws_a_level_per_execution_and_role():
    from concurrent_dirty._core.switch import NOISE_LEVELS, NoiseHook

    hook = NoiseHook(None, seed=7)

    def levels(role):
        out = []
        for execution in range(1, 301):
            hook.begin_execution(execution, role)
            out.append(hook.level())
        return out

    writer, harvester = levels("vcpu-0"), levels("harvester")
    assert set(writer) == set(harvester) == set(NOISE_LEVELS)
    assert 0.3 < writer.count(0.0) / len(writer) < 0.7  # none about half the time
    assert writer != harvester  # each role draws its own
    assert levels("vcpu-0") == writer  # and the same again for the same seed
    pinned = NoiseHook(0.05, seed=7)
    for execution in range(1, 20):
        pinned.begin_execution(execution, "vcpu-1")
        assert pinned.level() == 0.05


class _SeesTheHook(XchgDirtyLog):
    """Records, in the threads engine, each writer's hook and noise level at
    its marks; raises (an error of the cell, on either engine) if the hook is
    not what the scenario's noise asks for."""

    seen: list = []
    noisy = True

    def mark_page_dirty(self, gfn, vcpu_id, *, context=None):
        import threading

        from concurrent_dirty._core import switch

        hook = switch.current()
        if self.noisy != isinstance(hook, switch.NoiseHook):
            raise AssertionError(f"expected noise {self.noisy}, but the hook is {hook!r}")
        level = hook.level() if hook is not None else None
        _SeesTheHook.seen.append((threading.current_thread().name, level))
        super().mark_page_dirty(gfn, vcpu_id, context=context)


class _SeesNoHook(_SeesTheHook):
    noisy = False


@pytest.mark.parametrize("engine", ["threads", "processes"])
@pytest.mark.parametrize("noise, algorithm", [(None, "_SeesTheHook"), (0.0, "_SeesNoHook")])
def test_noise_is_on_by_default_and_zero_turns_it_off(engine, noise, algorithm, shm_guard):
    r = run_cell(Scenario(algorithm=f"tests.test_algorithms:{algorithm}", engine=engine,
                          noise=noise, seconds=30, max_executions=5))
    assert (r.error, r.violations) == (None, [])
    # The check can fail: the wrong expectation is an error of the cell.
    wrong = "_SeesNoHook" if algorithm == "_SeesTheHook" else "_SeesTheHook"
    r = run_cell(Scenario(algorithm=f"tests.test_algorithms:{wrong}", engine=engine,
                          noise=noise, seconds=30, max_executions=5))
    assert r.error is not None and "expected noise" in r.error


def test_each_writer_draws_a_new_noise_level_every_execution():
    from concurrent_dirty._core.switch import NoiseHook

    _SeesTheHook.seen = []
    r = run_cell(Scenario(algorithm="tests.test_algorithms:_SeesTheHook", seed=5,
                          seconds=60, max_executions=40))
    assert (r.error, r.violations) == (None, [])
    expected = NoiseHook(None, seed=5)
    for vcpu in range(2):
        levels = set()
        for execution in range(1, 41):
            expected.begin_execution(execution, f"vcpu-{vcpu}")
            levels.add(expected.level())
        seen = {level for name, level in _SeesTheHook.seen if name == f"vcpu-{vcpu}"}
        # Every level this writer drew (one per execution) showed at its marks.
        assert seen == levels and len(levels) > 1


@pytest.mark.parametrize("engine, mutant", [
    ("threads", "srcu-no-grace-period"),   # the GIL alone never preempts inside the window
    ("processes", "srcu-protect-before-swap"),
])
def test_free_running_defaults_catch_races_in_narrow_windows(engine, mutant, shm_guard):
    # With no noise, the default table missed these in 3 seeds of 2s each
    # (and took hundreds of executions when it did find them); swarm noise
    # finds them in 1-10 (threads) and 28-114 (processes) executions.
    from concurrent_dirty.mutants import MUTANTS

    r = run_cell(Scenario(algorithm=MUTANTS[mutant].ref, engine=engine, seconds=60,
                          max_executions=100 if engine == "threads" else 600))
    assert r.error is None
    assert r.violations, f"not caught in {r.executions} executions ({r.seconds:.1f}s)"
