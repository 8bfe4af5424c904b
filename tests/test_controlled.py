"""The controlled engine: one thread at a time, blocking, deadlocks, step
bounds, errors, and the schedulers' determinism."""

import threading

import pytest

from concurrent_dirty import (
    HARVESTER,
    Program,
    Scenario,
    SrcuDirtyLog,
    make_program,
    run_controlled,
)
from concurrent_dirty.schedulers import (
    ChoiceScheduler,
    DfsScheduler,
    Metrics,
    PctScheduler,
    RandomScheduler,
    ReplayScheduler,
)
from concurrent_dirty.search.replay import replay
from concurrent_dirty.search.runner import explore

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"
SMALL = Scenario(writers=2, slots=1, pages=4, writes=2, on_behalf=0.5)
# Two writers, one on-behalf write each: the smallest program in which the
# load-then-store clear loses a bit, with one preemption.
RACE = Program(writes=(((0, True),), ((1, True),)), rounds=1)


def fresh(scheduler):
    assert scheduler.new_execution()
    return scheduler


def trace_of(result):
    return [(s.thread, s.op, s.target, s.word, s.before, s.after)
            for s in result.outcome.trace]


@pytest.mark.parametrize("algorithm", ["srcu", "xchg", "manual"])
@pytest.mark.parametrize("scheduler", ["random", "pct", "dfs"])
def test_correct_algorithms_never_fail_under_any_scheduler(algorithm, scheduler):
    r = explore(algorithm, SMALL, scheduler=scheduler, executions=150, seconds=120,
                preemptions=1)
    assert r.failure is None, r.failure and r.failure.counterexample()
    assert r.executions == (150 if scheduler != "dfs" else r.executions) and r.steps > 0


def test_random_finds_the_broken_clear():
    r = explore(BROKEN, SMALL, scheduler="random", executions=3000, seconds=120)
    assert r.failure is not None and r.failure.outcome.kind == "violation"


def test_pct_finds_the_broken_clear_in_a_fixed_program():
    r = explore(BROKEN, SMALL, scheduler="pct", executions=5000, seconds=120, program=RACE)
    assert r.failure is not None and r.failure.outcome.kind == "violation"


def test_pct_finds_the_broken_clear_across_programs():
    r = explore(BROKEN, SMALL, scheduler="pct", executions=5000, seconds=120,
                vary_program=True)
    assert r.failure is not None and r.failure.outcome.kind == "violation"
    assert r.guarantee == ""


def test_dfs_with_one_preemption_finds_the_broken_clear():
    r = explore(BROKEN, SMALL, scheduler="dfs", preemptions=1, executions=None, seconds=120,
                program=RACE)
    assert r.failure is not None
    assert r.failure.outcome.preemptions == 1
    assert "<== preempts harvester" in r.failure.counterexample()


def test_dfs_without_preemptions_finds_nothing_and_exhausts_the_space():
    r = explore(BROKEN, SMALL, scheduler="dfs", preemptions=0, executions=None, seconds=120,
                program=RACE)
    assert r.failure is None
    assert r.exhausted is True
    assert r.preemptions == 0 and r.executions > 1


def test_dfs_space_grows_with_the_bound_and_is_exhausted():
    sizes = []
    for bound in (0, 1, 2):
        r = explore("xchg", SMALL, scheduler="dfs", preemptions=bound, executions=None,
                    seconds=120, program=RACE)
        assert r.exhausted is True and r.failure is None
        sizes.append(r.executions)
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize("make", [lambda s: RandomScheduler(s), lambda s: PctScheduler(s)])
def test_same_seed_same_trace_different_seed_different_trace(make):
    program = make_program(SMALL)
    runs = {}
    for seed in (1, 1, 2):
        r = run_controlled("xchg", SMALL, program, fresh(make(seed)), trace=True)
        runs.setdefault(seed, []).append(trace_of(r))
    assert runs[1][0] == runs[1][1]
    assert runs[1][0] != runs[2][0]


def test_replaying_a_recorded_schedule_gives_the_same_trace():
    program = make_program(SMALL)
    first = run_controlled("srcu", SMALL, program, fresh(RandomScheduler(5)), trace=True)
    again = run_controlled("srcu", SMALL, program,
                           fresh(ReplayScheduler(first.outcome.schedule)), trace=True)
    assert trace_of(first) == trace_of(again)


def test_trace_is_one_total_order_of_operations():
    r = run_controlled("xchg", SMALL, make_program(SMALL), fresh(RandomScheduler(3)),
                       trace=True)
    steps = [s.index for s in r.outcome.trace]
    assert steps == list(range(1, len(steps) + 1))
    assert {s.thread for s in r.outcome.trace} == {0, 1, 2}


def test_a_true_deadlock_names_each_thread_and_the_lock_holder():
    program = Program(writes=(((0, False),),), rounds=1)
    # Decision 0: run the harvester (id 1) first; it keeps mmu_lock after GET.
    r = run_controlled("tests.broken_algorithms:ForgetsToUnlock", SMALL, program,
                       fresh(ChoiceScheduler([1])))
    assert r.outcome.kind == "deadlock"
    assert r.outcome.message == ("deadlock: no thread can run; vcpu 0 waits for mmu_lock, "
                                 "held by harvester; harvester waits for vcpu 0 to finish")


def test_a_spin_loop_without_yield_hits_the_step_bound():
    # A spin that no other thread can end (the harvester waits for the
    # vCPU to finish) is step-bound, naming the word it spins on.
    r = run_controlled("tests.broken_algorithms:SpinsWithoutYield", SMALL,
                       Program(writes=(((0, True),),), rounds=0), fresh(RandomScheduler(0)),
                       max_steps=300)
    assert r.outcome.kind == "step-bound"
    assert r.outcome.message == (
        "the execution exceeded 300 steps (max_steps) at vcpu 0's load on dirty_bitmap:0[1]: "
        "a livelock or a wait for something that never comes; vcpu 0 keeps loading "
        "dirty_bitmap:0[1] (= 0x0), with no store in between, and no other thread changes "
        "them")


def test_an_exception_in_a_thread_ends_the_execution_cleanly():
    before = threading.active_count()
    r = run_controlled("tests.broken_algorithms:CrashesInWriter", SMALL, make_program(SMALL),
                       fresh(RandomScheduler(0)))
    assert r.outcome.kind == "error"
    assert "RuntimeError: writer crashed on purpose" in r.outcome.message
    # every controlled body has returned; at most idle carriers were added
    assert threading.active_count() <= before + 3
    again = run_controlled("xchg", SMALL, make_program(SMALL), fresh(RandomScheduler(0)))
    assert again.outcome.kind == "ok"


def test_a_scheduler_that_fails_when_a_thread_finishes_ends_the_execution():
    class Flaky(RandomScheduler):
        calls = 0

        def next_thread(self, runnable, current):
            self.calls += 1
            if current is None and self.calls > 1:
                raise RuntimeError("scheduler broke")
            return super().next_thread(runnable, current)

    r = run_controlled("xchg", SMALL, make_program(SMALL), fresh(Flaky(0, stay=0.99)))
    assert r.outcome.kind == "error" and "RuntimeError: scheduler broke" in r.outcome.message
    again = run_controlled("xchg", SMALL, make_program(SMALL), fresh(RandomScheduler(0)))
    assert again.outcome.kind == "ok"  # the carriers survived


class GraceUnderLock(SrcuDirtyLog):
    """Waits for a grace period while holding mmu_lock: a vCPU inside its
    read-side section that needs the lock can never leave the section."""

    name = "grace-under-lock"

    def get_dirty_log(self, slot_id):
        with self.kvm.mmu_lock.held(HARVESTER):
            self.kvm.srcu.synchronize()
        return super().get_dirty_log(slot_id)


def test_a_grace_period_under_mmu_lock_is_a_deadlock_naming_both_waits():
    r = explore("tests.test_controlled:GraceUnderLock", SMALL, scheduler="dfs", preemptions=1,
                executions=None, seconds=60, program=Program(writes=(((0, False),),), rounds=1))
    assert r.failure is not None and r.failure.outcome.kind == "deadlock"
    assert r.failure.outcome.message == (
        "deadlock: no thread can run; vcpu 0 waits for mmu_lock, held by harvester; "
        "harvester waits for a grace period: vcpu 0 stayed in its SRCU read-side section")


def test_metrics_wrapper_counts_preemptions_and_switches():
    m = Metrics(RandomScheduler(1, stay=0.0))
    for _ in range(3):
        assert m.new_execution()
        run_controlled("xchg", SMALL, make_program(SMALL), m)
    assert m.executions == 3
    assert m.decisions > 0 and m.preemptions > 0 and m.switches >= m.preemptions


def test_pct_reports_its_guarantee_after_a_clean_run_on_a_pinned_program():
    r = explore("xchg", SMALL, scheduler="pct", executions=50, seconds=60, depth=2,
                vary_program=False)
    assert r.guarantee.startswith("pct guarantee for this program: with n=3 threads and at "
                                  "most k=")
    assert "clean executions within their k (of 50) the chance such a bug was missed is <=" \
        in r.guarantee


def test_pct_states_no_bound_when_the_program_varies():
    r = explore("xchg", SMALL, scheduler="pct", executions=50, seconds=60, depth=2)
    assert r.guarantee.startswith("pct guarantee: none; the program varied between executions")


def test_bad_scheduler_arguments_are_clear_errors():
    from concurrent_dirty import UsageError

    with pytest.raises(UsageError, match=r"^expected a preemption bound >= 0, got -1$"):
        DfsScheduler(-1)
    with pytest.raises(UsageError, match=r"^expected a bug depth >= 1 for pct, got 0$"):
        PctScheduler(depth=0)
    with pytest.raises(UsageError, match=r"^expected 0 <= stay < 1 for the random "
                                         r"scheduler, got 1.5$"):
        RandomScheduler(stay=1.5)


@pytest.mark.parametrize("scheduler", ["random", "pct", "auto"])
def test_a_search_failure_is_minimized_to_the_fewest_preemptions(scheduler):
    from concurrent_dirty.search.minimize import MINIMIZE_EXECUTIONS

    r = explore(BROKEN, SMALL, scheduler=scheduler, executions=None, seconds=120)
    assert r.failure is not None
    m = r.extra["minimized"]
    assert m["preemptions"] == r.failure.outcome.preemptions <= m["preemptions_found"]
    assert m.get("by") == "search" or m["executions"] <= MINIMIZE_EXECUTIONS
    # One preemption suffices for the broken clear (the dfs tests above),
    # and a program this small has its bound 0 exhausted at once.
    assert (m["preemptions"], m["fewest"]) == (1, True)
    assert "counterexample: 1 preemption, the fewest on this program" in r.summary()
    assert r.extra["first_failure_execution"] == r.executions
    # The minimized counterexample's token replays the same failure.
    again = replay(r.failure.token)
    assert (again.outcome.kind, again.outcome.step) == (r.failure.outcome.kind,
                                                        r.failure.outcome.step)


def test_fewest_preemptions_keeps_the_failure_and_never_adds_preemptions():
    from concurrent_dirty.search.minimize import fewest_preemptions

    r = explore(BROKEN, SMALL, scheduler="random", executions=None, seconds=120, seed=3)
    found = r.failure
    assert found is not None
    result, proven = fewest_preemptions(found, seconds=30)
    assert result.outcome.kind == found.outcome.kind
    assert result.outcome.preemptions <= found.outcome.preemptions
    assert proven and result.outcome.preemptions == 1
    # With no time at all nothing is proven, and the failure stays.
    same, proven = fewest_preemptions(found, seconds=0)
    assert not proven or found.outcome.preemptions == 0
    assert (same.outcome.kind, same.outcome.schedule) == (found.outcome.kind,
                                                          found.outcome.schedule)


def test_minimization_is_counted_in_executions_not_seconds(monkeypatch):
    # The same seed gives the same printed counterexample on a fast machine
    # and on a slow one: here the "slow machine" is minimisation's clock
    # running 1000 times faster, and the safety net (10 hours, 36 s of real
    # time on that clock) does not cut in, however loaded the machine.
    import time as real_time

    from concurrent_dirty.search import minimize

    r1 = explore(BROKEN, SMALL, scheduler="random", executions=None, seconds=36_000, seed=3)
    start = real_time.monotonic()
    monkeypatch.setattr(minimize, "_clock",
                        lambda: start + (real_time.monotonic() - start) * 1000)
    r2 = explore(BROKEN, SMALL, scheduler="random", executions=None, seconds=36_000, seed=3)
    for r in (r1, r2):
        assert r.failure is not None and not r.extra["minimized"]["timed_out"]
    assert r1.failure.outcome.schedule == r2.failure.outcome.schedule
    assert r1.extra["minimized"]["executions"] == r2.extra["minimized"]["executions"] > 0
    assert "minimized in " + str(r1.extra["minimized"]["executions"]) + " executions" \
        in r1.summary()


def test_a_verdict_says_whether_a_count_with_no_preemption_is_the_fewest():
    from concurrent_dirty.search.report import FuzzReport

    r = explore(BROKEN, SMALL, scheduler="random", executions=None, seconds=600, seed=3)
    assert r.failure is not None
    report = FuzzReport(algorithm="x", scheduler="random", failure=r.failure,
                        extra={"minimized": {"preemptions_found": 0, "preemptions": 0,
                                             "fewest": True, "seconds": 0.0,
                                             "executions": 0, "by": "none needed"}})
    assert "preemption, the fewest possible (the threads ran until they" in report.summary()
    report.extra = {}
    assert "not minimized (the search stopped at it)" in report.summary()


class _NextThreadOnly:
    """A scheduler with its ``keep`` hidden: every decision through
    ``next_thread`` with the list of runnable threads."""

    def __init__(self, inner):
        self.inner = inner

    def new_execution(self):
        return self.inner.new_execution()

    def next_thread(self, runnable, current):
        return self.inner.next_thread(runnable, current)


@pytest.mark.parametrize("make", [lambda: RandomScheduler(3), lambda: RandomScheduler(4, stay=0.9),
                                  lambda: PctScheduler(5, depth=3),
                                  lambda: PctScheduler(6, depth=None)],
                         ids=["random", "random-stay", "pct-3", "pct-cycling"])
@pytest.mark.parametrize("algorithm", ["xchg", "srcu", BROKEN])
def test_the_fast_step_keeps_every_schedule_and_count(make, algorithm):
    # keep() decides the running thread's steps without a list of runnable
    # threads; the schedules, verdicts and counts must be what next_thread
    # alone makes.
    scenario = Scenario(algorithm=algorithm, writers=2, slots=1, pages=4, writes=4,
                        on_behalf=0.5)
    runs = []
    for wrap in (lambda s: s, _NextThreadOnly):
        metrics = Metrics(wrap(make()))
        seen = []
        for n in range(1, 13):
            assert metrics.new_execution()
            r = run_controlled(algorithm, scenario, make_program(scenario, 2, n), metrics)
            seen.append((r.outcome.kind, r.outcome.schedule, r.outcome.preemptions,
                         r.outcome.switches))
        runs.append((seen, metrics.decisions, metrics.preemptions, metrics.switches))
    assert runs[0] == runs[1]
    assert runs[0][1] > 0


class _OldKeep:
    """A user's scheduler written for the earlier ``keep(current, live,
    can_run)``: it must still run, with the same decisions."""

    def __init__(self, inner):
        self.inner = inner
        self.kept = 0

    def new_execution(self):
        return self.inner.new_execution()

    def next_thread(self, runnable, current):
        return self.inner.next_thread(runnable, current)

    def keep(self, current, live, can_run):
        assert current in live and all(isinstance(t, int) for t in live)
        self.kept += 1
        return self.inner.keep(current, [t for t in live if can_run(t)], (), can_run)


def test_a_scheduler_with_the_earlier_keep_still_runs_the_same():
    scenario = Scenario(algorithm="xchg", writers=2, slots=1, pages=4, writes=4, on_behalf=0.5)
    runs = []
    for wrap in (lambda s: s, _OldKeep):
        scheduler = wrap(RandomScheduler(4, stay=0.9))
        seen = []
        for n in range(1, 7):
            assert scheduler.new_execution()
            r = run_controlled("xchg", scenario, make_program(scenario, 2, n), scheduler)
            seen.append((r.outcome.kind, r.outcome.schedule))
        runs.append(seen)
    assert runs[0] == runs[1]
    assert scheduler.kept > 0


def test_pct_counts_only_decisions_with_a_choice_into_its_k():
    # Thread "b" waits for "a" to finish. Where "b" runs first, it blocks at
    # once and "a" makes its 40 steps alone: no decision there has a choice,
    # and pct's k (its step count, which its change points and its bound
    # use) counts only the first decision, where both could run.
    from concurrent_dirty._core import switch
    from concurrent_dirty._core.runtime import Runtime

    def alone():
        for i in range(40):
            switch.switch_point(switch.Op.STORE, "w", i)

    b_first = 0
    for seed in range(12):
        pct = PctScheduler(seed, depth=2, k_hint=10)
        assert pct.new_execution()
        runtime = Runtime(pct, max_steps=1000)
        a = runtime.spawn("a", alone)
        b = runtime.spawn("b", lambda r=runtime, a=a: r.wait_for([a]))
        previous = switch.install(runtime)
        try:
            outcome = runtime.run()
        finally:
            switch.install(previous)
        assert outcome.kind == "ok" and outcome.steps == 41
        assert pct.new_execution()
        if outcome.schedule[0] == b:
            b_first += 1
            assert pct.k == 1, (seed, pct.k)  # k: the longest count seen
    assert b_first >= 2


def test_a_thread_waiting_for_others_to_finish_is_not_asked_at_every_step():
    # keep() gets the threads that wait for nothing and, apart, those whose
    # condition must be asked; one that waits for another thread to finish
    # is in neither (only that thread's end frees it), and it runs after.
    from concurrent_dirty._core import switch
    from concurrent_dirty._core.runtime import Runtime

    class Spy:
        def __init__(self, seed):
            self.inner = RandomScheduler(seed, stay=0.9)
            self.seen = []

        def new_execution(self):
            return self.inner.new_execution()

        def next_thread(self, runnable, current):
            return self.inner.next_thread(runnable, current)

        def keep(self, current, free, held, can_run):
            self.seen.append((current, tuple(free), tuple(held)))
            return self.inner.keep(current, free, held, can_run)

    def alone(order):
        for i in range(30):
            switch.switch_point(switch.Op.STORE, "w", i)
        order.append("a")

    checked = 0
    for seed in range(16):
        order = []
        spy = fresh(Spy(seed))
        runtime = Runtime(spy, max_steps=1000)
        a = runtime.spawn("a", lambda order=order: alone(order))
        b = runtime.spawn("b", lambda r=runtime, a=a, order=order: (r.wait_for([a]),
                                                                      order.append("b")))
        previous = switch.install(runtime)
        try:
            outcome = runtime.run()
        finally:
            switch.install(previous)
        assert outcome.kind == "ok" and order == ["a", "b"]
        if outcome.schedule[0] == b:  # "b" waits from the start: "a" runs alone
            checked += 1
            assert len(spy.seen) == 30
            assert all(s == (a, (a,), ()) for s in spy.seen), spy.seen
    assert checked >= 2


def _random_walk_failure(min_preemptions=3):
    """A random walk's first failure with many preemptions (not minimised)."""
    scheduler = RandomScheduler(seed=1)
    for n in range(1, 5000):
        assert scheduler.new_execution()
        r = run_controlled(BROKEN, SMALL, make_program(SMALL, 2, execution=n), scheduler)
        if r.failed and r.outcome.preemptions >= min_preemptions:
            return r
    raise AssertionError("no failure in 5000 executions")


def test_thread_points_run_a_recorded_schedule_again():
    # A recorder's maps, given to ThreadPoints, give the very same schedule:
    # the preemptions named by each thread's own progress, the rest kept.
    from concurrent_dirty.schedulers import PointsRecorder, ThreadPoints

    found = _random_walk_failure()
    recorder = fresh(PointsRecorder(found.outcome.schedule))
    again = run_controlled(BROKEN, found.scenario, found.program, recorder)
    assert recorder.diverged_at is None and len(recorder.preempt) == found.outcome.preemptions
    points = fresh(ThreadPoints(dict(recorder.preempt), dict(recorder.follow)))
    same = run_controlled(BROKEN, found.scenario, found.program, points)
    assert same.outcome.schedule == again.outcome.schedule == found.outcome.schedule
    assert points.applied == list(recorder.preempt)
    # With no point at all, nothing is preempted.
    none = run_controlled(BROKEN, found.scenario, found.program,
                          fresh(ThreadPoints({}, dict(recorder.follow))))
    assert none.outcome.preemptions == 0


def test_dropping_preemptions_keeps_the_failure_within_its_quarter_of_the_budget():
    # Phase 0 of the minimisation: a random walk's counterexample loses the
    # preemptions it does not need, one run each, and still fails the same way.
    from concurrent_dirty.engines.controlled import run_controlled as run_one
    from concurrent_dirty.search.minimize import _drop_preemptions

    found = _random_walk_failure()
    runs = []

    def run(scheduler):
        runs.append(1)
        return run_one(found.algorithm_ref, found.scenario, found.program, scheduler)

    best = _drop_preemptions(found, run, lambda: len(runs) < 200)
    assert best.outcome.kind == found.outcome.kind
    assert best.outcome.preemptions < found.outcome.preemptions
    assert len(runs) <= 200
    # The result replays from its own schedule (a token needs nothing else).
    again = run_one(found.algorithm_ref, found.scenario, found.program,
                    fresh(ReplayScheduler(best.outcome.schedule)))
    assert (again.outcome.kind, again.outcome.step) == (best.outcome.kind, best.outcome.step)
    # No budget: the failure as it was.
    assert _drop_preemptions(found, run, lambda: False) is found
