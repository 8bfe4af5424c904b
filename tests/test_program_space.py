"""The default program space: two scopes, per-writer on-behalf shares, and
the model options (fast page fault, PML, PML buffer size) drawn per
execution unless the user, the algorithm's ``model`` or its ``varies`` pins
them; the portfolio's rotation; the same dimensions under Hypothesis."""

from typing import ClassVar

import pytest

from concurrent_dirty import ALL_MODEL_OPTIONS, DirtyLogAlgorithm, Scenario, XchgDirtyLog
from concurrent_dirty.cli.main import build_parser
from concurrent_dirty.dirtylog import resolve_algorithm
from concurrent_dirty.harness.program import (
    MODEL_OPTIONS,
    ProgramSpace,
    make_program,
    on_behalf_share,
)
from concurrent_dirty.search.portfolio import MEMBERS, ROTATION, SLICE, SMALL_PHASE
from concurrent_dirty.search.runner import explore

N = 400


def _draws(space, seed=0, n=N, algorithm="xchg"):
    base = Scenario(algorithm=algorithm, seed=seed)
    return [space.draw(base, i) for i in range(1, n + 1)]


def test_each_model_option_is_drawn_both_ways():
    scenarios = [sc for sc, _ in _draws(ProgramSpace())]
    assert {sc.fast_page_fault for sc in scenarios} == {False, True}
    assert {sc.pml for sc in scenarios} == {False, True}
    with_pml = {sc.pml_entries for sc in scenarios if sc.pml}
    assert 512 in with_pml and with_pml & {1, 2, 4}
    # Without PML the buffer's size is the scenario's (no VM of its own).
    assert {sc.pml_entries for sc in scenarios if not sc.pml} == {512}


@pytest.mark.parametrize("pins", [dict(fast_page_fault=True), dict(fast_page_fault=False),
                                  dict(pml=True, pml_entries=2), dict(pml=False)])
def test_a_pinned_model_option_stays_pinned(pins):
    for sc, _ in _draws(ProgramSpace(**pins), n=100):
        assert all(getattr(sc, k) == v for k, v in pins.items())


def test_the_same_seed_gives_the_same_programs_and_another_seed_others():
    assert _draws(ProgramSpace(), seed=3, n=50) == _draws(ProgramSpace(), seed=3, n=50)
    assert _draws(ProgramSpace(), seed=3, n=50) != _draws(ProgramSpace(), seed=4, n=50)


def test_pinning_a_model_option_leaves_the_programs_as_they_were():
    free = _draws(ProgramSpace(), n=50)
    pinned = _draws(ProgramSpace(pml=False, fast_page_fault=True), n=50)
    assert [p for _, p in free] == [p for _, p in pinned]


def test_both_scopes_are_drawn():
    shapes = [(sc.slots, sc.pages, sc.writers, len(p.writes[0]), p.rounds)
              for sc, p in _draws(ProgramSpace())]
    small = [s for s in shapes if s[0] == 1 and s[1] <= 2 and s[2] == 2 and s[3] >= 5
             and s[4] >= 3]
    one_word = [s for s in small if s[1] == 2]
    wide = [s for s in shapes if s[1] > 2]
    assert len(small) > N // 2 and len(wide) > N // 20
    # Races on one bitmap word need two of its pages, in many rounds.
    assert N // 10 < len(one_word) < len(small) // 2


def test_a_pinned_shape_dimension_holds_in_both_scopes():
    for sc, p in _draws(ProgramSpace(pages=64, writes=2), n=100):
        assert sc.pages == 64 and all(len(w) == 2 for w in p.writes)


def test_each_writer_draws_its_own_on_behalf_share():
    sc = Scenario(seed=0)
    pairs = [(on_behalf_share(sc, e, 0), on_behalf_share(sc, e, 1)) for e in range(1, 200)]
    assert any(a == 0.0 and b == 1.0 for a, b in pairs)
    assert any(a != b for a, b in pairs)
    assert on_behalf_share(Scenario(on_behalf=0.3), 5, 1) == 0.3
    # Writer 0 of a guest-only execution makes no on-behalf write.
    e = next(e for e, (a, _) in enumerate(pairs, 1) if a == 0.0)
    program = make_program(Scenario(seed=0, writes=8), rounds=1, execution=e)
    assert not any(flag for _, flag in program.writes[0])


def test_the_algorithm_model_pins_its_options():
    space = ProgramSpace().for_algorithm(resolve_algorithm("xchg-pml"), Scenario())
    assert space.pml is True and space.fast_page_fault is None
    space = ProgramSpace(pml=False).for_algorithm(resolve_algorithm("xchg-fast-pf"), Scenario())
    assert (space.fast_page_fault, space.pml) == (True, False)
    full = resolve_algorithm("concurrent_dirty.mutants.pml:PmlFullDropsLast")
    assert ProgramSpace().for_algorithm(full, Scenario()).pml_entries == 2


class ForTheSeedModelOnly(DirtyLogAlgorithm):
    """A user's algorithm that does not say it supports any model option
    (the default): the seed harvest, without the kick PML needs."""

    def mark_page_dirty(self, gfn, vcpu_id):
        slot = self.kvm.gfn_to_memslot(gfn)
        self.kvm.dirty_bitmap(slot.id).set_bit(gfn - slot.base_gfn)

    def get_dirty_log(self, slot_id):
        return XchgDirtyLog.get_dirty_log(self, slot_id)  # type: ignore[arg-type]

    _take_word = XchgDirtyLog._take_word
    _write_protect_word = XchgDirtyLog._write_protect_word
    _flush = XchgDirtyLog._flush


class OptsIn(XchgDirtyLog):
    varies: ClassVar[frozenset[str]] = frozenset({"pml"})


def test_a_user_algorithm_varies_nothing_unless_it_says_so():
    assert ForTheSeedModelOnly.varies == frozenset()
    assert ProgramSpace().for_algorithm(XchgDirtyLog, Scenario()) == ProgramSpace()
    opts_in = ProgramSpace().for_algorithm(OptsIn, Scenario())
    assert (opts_in.fast_page_fault, opts_in.pml, opts_in.pml_entries) == (False, None, 512)
    space = ProgramSpace().for_algorithm(ForTheSeedModelOnly, Scenario())
    assert (space.fast_page_fault, space.pml, space.pml_entries) == (False, False, 512)
    seen: list[Scenario] = []

    class Recording(ProgramSpace):
        def draw(self, base, execution, features=None):
            case = super().draw(base, execution, features)
            seen.append(case[0])
            return case

        def tiny(self, base, index):
            case = super().tiny(base, index)
            seen.append(case[0])
            return case

    # The small scope's phase, then the bandit's draws: neither turns on an
    # option the algorithm does not vary.
    n = 2 * SMALL_PHASE + 80
    explore(ForTheSeedModelOnly, Scenario(), executions=n, seconds=60, space=Recording())
    assert len(seen) > 20 and {(sc.fast_page_fault, sc.pml) for sc in seen} == {(False, False)}
    seen.clear()
    explore(XchgDirtyLog, Scenario(), executions=n, seconds=60, space=Recording())
    assert {sc.pml for sc in seen} == {False, True}


def test_every_builtin_varies_every_model_option():
    for name in ("srcu", "xchg", "manual", "xchg-fast-pf", "xchg-pml"):
        assert resolve_algorithm(name).varies == ALL_MODEL_OPTIONS == set(MODEL_OPTIONS)


def test_pinned_counts_the_model_options():
    shape = dict(writers=2, slots=1, pages=1, writes=3, rounds=2, initially_set=False)
    assert not ProgramSpace(**shape).pinned
    assert ProgramSpace(**shape, fast_page_fault=False, pml=False).pinned
    assert not ProgramSpace(**shape, fast_page_fault=False, pml=True).pinned
    assert ProgramSpace(**shape, fast_page_fault=False, pml=True, pml_entries=4).pinned


@pytest.mark.parametrize("argv, pins", [
    ([], dict(fast_page_fault=None, pml=None, pml_entries=None)),
    (["--no-fast-page-fault", "--pml", "--pml-entries", "2"],
     dict(fast_page_fault=False, pml=True, pml_entries=2)),
    (["--fast-page-fault", "--no-pml"], dict(fast_page_fault=True, pml=False, pml_entries=None)),
])
def test_fuzz_options_pin_the_model_options(argv, pins):
    from concurrent_dirty.cli.campaign import search_options

    ns = build_parser().parse_args(["fuzz", *argv])
    space = search_options(ns)["space"]
    assert {k: getattr(space, k) for k in pins} == pins


def test_the_portfolio_gives_random_three_slices_in_six():
    # The small scope's phase takes every other slice until it had its
    # executions; then whole turns of the rotation.
    turns = -(-SMALL_PHASE // (len(ROTATION) * SLICE)) + 1
    r = explore("xchg", Scenario(), executions=SMALL_PHASE + turns * len(ROTATION) * SLICE,
                seconds=60, space=ProgramSpace())
    assert r.failure is None
    assert r.extra["portfolio"]["executions"] == {
        "small": SMALL_PHASE, "random": 3 * SLICE * turns, "pct": SLICE * turns,
        "dfs": SLICE * turns, "coverage": SLICE * turns}
    assert set(ROTATION) == set(MEMBERS)


def test_hypothesis_draws_the_model_options_and_keeps_pins():
    from hypothesis import HealthCheck, given, settings

    from concurrent_dirty.search.hypothesis import interleavings

    def collect(strategy, n=80):
        seen = []

        @settings(max_examples=n, database=None, derandomize=True, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def test(case):
            seen.append((case.scenario.fast_page_fault, case.scenario.pml,
                         case.scenario.pml_entries, case.scenario.clear_words))
        test()
        return seen

    seen = collect(interleavings("xchg"))
    assert {s[0] for s in seen} == {False, True} and {s[1] for s in seen} == {False, True}
    pinned = collect(interleavings("xchg", fast_page_fault=True, pml=False,
                                   base=Scenario(clear_words=2)), n=20)
    assert {s for s in pinned} == {(True, False, 512, 2)}
    assert {s[1] for s in collect(interleavings("xchg-pml"), n=20)} == {True}


def test_luby_sequence():
    from concurrent_dirty.search.portfolio import luby

    assert [luby(i) for i in range(1, 16)] == [1, 1, 2, 1, 1, 2, 4, 1, 1, 2, 1, 1, 2, 4, 8]
    with pytest.raises(ValueError):
        luby(0)


def test_dfs_over_varied_programs_spends_luby_budgets_per_program():
    from concurrent_dirty.search.portfolio import DFS_BASE_BUDGET, luby

    # After the small scope's phase (its cases, not the space's draws).
    r = explore("xchg", Scenario(), scheduler="dfs",
                executions=SMALL_PHASE + 40 * DFS_BASE_BUDGET, seconds=120, space=ProgramSpace())
    assert r.failure is None and r.executions == SMALL_PHASE + 40 * DFS_BASE_BUDGET
    summary = r.extra["portfolio"]
    runs, exhausted = summary["dfs_runs"], summary["dfs_bounds_exhausted"]
    assert summary["executions"] == {"small": SMALL_PHASE, "dfs": 40 * DFS_BASE_BUDGET} \
        == {"small": SMALL_PHASE, "dfs": sum(runs)}
    # Program k gets DFS_BASE_BUDGET * luby(k) executions, fewer only if it
    # ran out of schedules first (every bound up to 3 exhausted); the last
    # one was cut by the campaign's end.
    for k, (n, bound) in enumerate(zip(runs[:-1], exhausted[:-1], strict=True), start=1):
        assert n == DFS_BASE_BUDGET * luby(k) or (n < DFS_BASE_BUDGET * luby(k) and bound == 3)
    assert len(runs) >= 15  # so many programs: the first 15 terms add up to 32 budgets


def test_dfs_on_a_pinned_program_runs_its_bounds_out():
    # One tiny program, no bound given: iterative bounds 0-3 to the end,
    # however many executions that takes (it used to stop at 300).
    r = explore("xchg", Scenario(writers=1, slots=1, pages=1, writes=1), scheduler="dfs",
                executions=None, seconds=120, rounds=1)
    assert r.failure is None and r.executions > 300
    assert r.extra["portfolio"]["dfs_bounds_exhausted"] == [3]
    assert r.extra["portfolio"]["dfs_runs"] == [r.executions]
    assert "every schedule exhausted up to 3 preemptions on 1" in r.guarantee


# -- the deep scope, the small scope's phase, the bandit -----------------------------------

def _deep_draws(algorithm="xchg", n=N):
    base = Scenario(algorithm=algorithm, seed=0)
    return [ProgramSpace().draw(base, i) for i in range(1, n + 1)]


def _runs(writes):
    """A writer's pages, split at each return to a page already seen in the
    pass: the orders in which it visits its pages."""
    passes, cur = [], []
    for gfn, _ in writes:
        if gfn in cur:
            passes.append(tuple(cur))
            cur = []
        cur.append(gfn)
    return passes + [tuple(cur)]


def test_the_deep_scope_draws_each_shape_by_default():
    from concurrent_dirty.harness.program import build_memslots

    word = boundary = refault = 0
    for sc, p in _deep_draws():
        if p.rounds < 2 or min(len(w) for w in p.writes) < 8:
            continue
        memslots = list(build_memslots(sc))
        for w in p.writes:
            pages = {g for g, _ in w}
            words = {(s.id, (g - s.base_gfn) // 64) for g in pages for s in memslots
                     if s.base_gfn <= g < s.end_gfn}
            orders = {r for r in _runs(w) if len(r) == len(pages)}
            # Several pages of one word, written in more than one order.
            if len(words) == 1 and len(pages) >= 3 and len(orders) >= 2:
                word += 1
            # Both sides of a word boundary and of a slot boundary.
            offsets = {g - s.base_gfn for g in pages for s in memslots
                       if s.base_gfn <= g < s.end_gfn}
            ends = {s.end_gfn - 1 for s in memslots} & pages
            starts = {s.base_gfn for s in memslots[1:]} & pages
            if {63, 64} <= offsets and ends and (starts or len(memslots) == 1):
                boundary += 1
            # One or two pages re-faulted round after round.
            if len(pages) <= 2 and len(w) >= 8:
                refault += 1
    assert word > 5 and boundary > 5 and refault > 5


def test_the_deep_scope_writes_more_than_a_ring_holds():
    deep = [(sc, p) for sc, p in _deep_draws("ring") if sc.pages in (65, 100, 128, 129, 200)
            and p.rounds >= 2 and min(len(w) for w in p.writes) >= 8]
    assert len(deep) > 10
    assert any(min(len(w) for w in p.writes) > sc.ring_entries for sc, p in deep)
    wrapping = [sc for sc, p in deep if all(len(w) > sc.ring_entries for w in p.writes)]
    assert {sc.ring_entries for sc in wrapping} >= {4, 8}


def test_features_override_the_scope_and_the_options_and_nothing_else():
    base = Scenario(seed=5)
    sc, p = ProgramSpace().draw(base, 7, {"scope": "deep", "pml": True})
    assert sc.pages in (65, 100, 128, 129, 200) and sc.pml and len(p.writes[0]) >= 8
    assert ProgramSpace().draw(base, 7, {"scope": "deep", "pml": True}) == (sc, p)
    sc, _ = ProgramSpace(pml=False).draw(base, 7, {"pml": True})
    assert sc.pml is False  # a pin wins over the bandit


def test_the_small_scope_enumerates_every_tiny_program_under_every_option():
    from concurrent_dirty.harness.program import TINY_OPTIONS, tiny_cases

    space = ProgramSpace()
    cases = {(sc.fast_page_fault, sc.pml, sc.pml_entries if sc.pml else 0, sc.initially_set,
              p) for sc, p in (space.tiny(Scenario(), i) for i in range(tiny_cases()))}
    assert len(cases) == tiny_cases() == 945 * len(TINY_OPTIONS)
    for sc, p in (space.tiny(Scenario(), i) for i in range(0, tiny_cases(), 97)):
        assert (sc.slots, sc.pages, p.rounds) == (1, 2, 1)
        assert len(p.writes) <= 2 and all(1 <= len(w) <= 2 for w in p.writes)
    # A pinned option holds there too.
    assert all(not space_sc.pml for space_sc, _ in
               (ProgramSpace(pml=False).tiny(Scenario(), i) for i in range(60)))


def test_the_small_phase_finds_the_non_atomic_clear_with_the_fewest_preemptions():
    from concurrent_dirty import MUTANTS

    ref = MUTANTS["nonatomic-clear"].ref
    r = explore(ref, Scenario(algorithm=ref), executions=SMALL_PHASE, seconds=60,
                space=ProgramSpace())
    assert r.failure is not None and r.extra["found_by"] == "small"
    assert r.extra["minimized"]["fewest"] and "the fewest on this program" in r.summary()
    again = explore(ref, Scenario(algorithm=ref), executions=SMALL_PHASE, seconds=60,
                    space=ProgramSpace())
    assert again.failure.token == r.failure.token and again.executions == r.executions


def test_a_rings_small_phase_races_two_rounds_and_finds_the_reaper_reading_early():
    # The reaper reading an entry's page before its flags needs an entry
    # collected in one round and reset in the next: the ring's small cases
    # race two rounds, and the phase finds it under the race search,
    # whatever the seed (its cases do not depend on it).
    from concurrent_dirty import MUTANTS

    ref = MUTANTS["ring-gfn-before-flags"].ref
    r = explore(ref, Scenario(algorithm=ref), executions=2 * SMALL_PHASE + 100, seconds=120,
                space=ProgramSpace(), seed=0)
    assert r.failure is not None and r.extra["found_by"] == "small"
    assert r.failure.program.rounds == 2 and r.extra["minimized"]["fewest"]
    assert r.extra["portfolio"]["executions"]["small"] > 0


@pytest.mark.parametrize("name", ["fast-pf-flush-from-read", "fast-pf-plain-write-protect"])
def test_the_small_phase_finds_the_fast_page_faults_two_preemption_races(name):
    # An on-behalf write beside two guest writes of the same page, two
    # rounds, two preemptions: iterative DFS needed about a thousand
    # executions on that program, the race search tens; the fast page
    # fault's small phase starts with it (after the rotation's first slice).
    from concurrent_dirty import MUTANTS
    from concurrent_dirty.search.portfolio import SLICE

    ref = MUTANTS[name].ref
    r = explore(ref, Scenario(algorithm=ref, seed=1), executions=SLICE + SMALL_PHASE,
                seconds=120, space=ProgramSpace(), seed=1)
    assert r.failure is not None and r.extra["found_by"] == "small"
    assert r.failure.program.rounds == 2 and r.failure.outcome.preemptions <= 2
    assert r.failure.program.writes == (((0, 1),), ((0, 0), (0, 0)))


def test_shards_take_disjoint_small_cases_and_draws():
    seen: dict[int, list] = {1: [], 2: []}

    class Recording(ProgramSpace):
        def tiny(self, base, index, rounds=1):
            seen[shard].append(("tiny", index))
            return super().tiny(base, index, rounds)

        def draw(self, base, execution, features=None):
            seen[shard].append(("draw", execution))
            return super().draw(base, execution, features)

    for shard in (1, 2):
        explore("xchg", Scenario(), executions=SMALL_PHASE + 40, seconds=60,
                space=Recording(), first=shard, stride=2)
    assert seen[1] and seen[2] and not set(seen[1]) & set(seen[2])


def test_the_bandit_moves_toward_what_yields_and_starves_nothing():
    from concurrent_dirty.search.portfolio import FeatureBandit

    arms = {"scope": (("small", "wide", "deep"), (0.6, 0.2, 0.2))}
    bandit = FeatureBandit(0, arms)
    assert bandit.weights("scope") == [0.6, 0.2, 0.2]  # no yield yet: the priors
    for _ in range(300):
        choice = bandit.choose()
        bandit.reward(choice, 1.0 if choice["scope"] == "deep" else 0.0)
    w = dict(zip(("small", "wide", "deep"), bandit.weights("scope"), strict=True))
    assert w["deep"] > 2 * 0.2 and min(w.values()) > 0.02  # twice its prior, none starved
    other = FeatureBandit(0, arms)
    for _ in range(300):
        choice = other.choose()
        other.reward(choice, 1.0 if choice["scope"] == "deep" else 0.0)
    assert other.weights("scope") == bandit.weights("scope")  # deterministic


def test_the_auto_portfolio_reports_its_small_phase_and_bandit():
    r = explore("xchg", Scenario(), executions=2 * SMALL_PHASE + 100, seconds=60,
                space=ProgramSpace())
    summary = r.extra["portfolio"]
    assert summary["executions"]["small"] == SMALL_PHASE and summary["small_cases"] > 1
    assert set(summary["bandit_shares"]) == {"scope", "fast_page_fault", "pml", "initially_set"}
    assert sum(summary["bandit_draws"]["scope"].values()) > 0
    assert "small scope" in r.guarantee
    # A pinned shape: no small phase (its programs would not be the user's).
    pinned = explore("xchg", Scenario(), executions=40, seconds=60,
                     space=ProgramSpace(writers=3))
    assert "small" not in pinned.extra["portfolio"]["executions"]


def test_auto_runs_no_small_phase_for_pml_and_one_for_the_fast_page_fault():
    # The zoo's PML bugs are found by the random walk within a few
    # executions (but for one the small scope does not show): the phase
    # only delayed them. The fast page fault's races need it.
    def tried(name):
        r = explore(name, Scenario(algorithm=name), executions=40, seconds=60,
                    space=ProgramSpace())
        assert r.failure is None
        return r.extra["portfolio"]["executions"]

    assert "small" not in tried("xchg-pml")
    # From the second slice on: the random walk's first 16 come first.
    assert tried("xchg-fast-pf") == {"small": 16, "random": 16, "pct": 8, "dfs": 0,
                                     "coverage": 0}
