"""The bug zoo: every mutant is caught and replays from a committed token;
the benign look-alikes and the correct algorithms are never reported."""

import json
import pathlib

import pytest

from concurrent_dirty import AlgorithmError, XchgDirtyLog, replay, run_cell
from concurrent_dirty.cli.main import main
from concurrent_dirty.dirtylog import ALGORITHMS
from concurrent_dirty.mutants import MUTANTS, register_mutant, resolve_mutant
from concurrent_dirty.search.zoo import format_table, run_zoo

TOKENS = json.loads((pathlib.Path(__file__).parent / "regression_tokens.json").read_text())
MUTANT_NAMES = sorted(n for n, m in MUTANTS.items() if not m.benign)
BENIGN_NAMES = sorted(n for n, m in MUTANTS.items() if m.benign)


def test_the_zoo_has_every_class_of_race_the_issue_names():
    assert set(MUTANT_NAMES) >= {
        "nonatomic-clear", "skip-write-protect", "no-tlb-flush", "flush-after-copy",
        "bit-before-data", "manual-clear-unsynced", "manual-nonatomic-andnot",
        "srcu-no-grace-period", "srcu-reader-outside-section"}
    assert len(BENIGN_NAMES) >= 3
    for m in MUTANTS.values():
        assert m.summary and m.breaks in ALGORITHMS


@pytest.mark.parametrize("name", MUTANT_NAMES)
def test_every_mutant_has_a_committed_token_that_fails_on_it(name):
    entry = TOKENS[name]
    r = replay(entry["token"])
    assert r.algorithm == name
    assert (r.outcome.kind, r.outcome.step) == (entry["kind"], entry["step"])
    assert r.outcome.kind == "violation"


@pytest.mark.parametrize("name", MUTANT_NAMES)
def test_every_token_passes_on_the_algorithm_the_mutant_breaks(name):
    entry = TOKENS[name]
    assert replay(entry["token"], algorithm=entry["breaks"]).outcome.kind == "ok"


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_benign_look_alikes_are_never_reported_by_the_controlled_engine(name):
    report = run_zoo([MUTANTS[name]], ("random", "pct", "dfs"), seeds=1, budget=1.0,
                     correct=False)
    assert report.false_alarms() == []
    assert all(c.trials[0].executions > 0 for c in report.cells)


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_benign_look_alikes_stay_clean_free_running(name, shm_guard):
    from concurrent_dirty import Scenario

    for engine in ("threads", "processes"):
        r = run_cell(Scenario(algorithm=MUTANTS[name].ref, engine=engine, seconds=30,
                              max_executions=30, on_behalf=0.5))
        assert (r.error, r.violations) == (None, [])


def test_a_users_own_mutant_joins_the_table():
    class ForgetsEveryOtherWord(XchgDirtyLog):
        """Harvests only even words: pages 64-127 are never reported."""

        name = "forgets-odd-words"

        def get_dirty_log(self, slot_id):
            words = super().get_dirty_log(slot_id)
            return [w if i % 2 == 0 else 0 for i, w in enumerate(words)]

    import sys

    module = sys.modules[__name__]
    module.ForgetsEveryOtherWord = ForgetsEveryOtherWord  # importable by reference
    ForgetsEveryOtherWord.__qualname__ = "ForgetsEveryOtherWord"
    mutant = register_mutant(ForgetsEveryOtherWord, breaks="xchg", scenario={"pages": 128})
    try:
        assert MUTANTS["forgets-odd-words"] is mutant
        report = run_zoo([mutant], ("random",), seeds=1, budget=5.0, correct=False)
        assert report.score("random") == (1, 1)
        assert "mutation score random         1/1 (100%)" in format_table(report)
    finally:
        del MUTANTS["forgets-odd-words"]


def test_unknown_mutant_names_suggest_the_closest():
    with pytest.raises(AlgorithmError, match=r"got 'no-tlb-flsh'; did you mean "
                                             r"'no-tlb-flush'\?$"):
        resolve_mutant("no-tlb-flsh")


def test_a_class_without_breaks_is_refused():
    with pytest.raises(AlgorithmError, match=r"^expected 'concurrent_dirty:XchgDirtyLog' to "
                                             r"name the algorithm it breaks"):
        resolve_mutant("concurrent_dirty:XchgDirtyLog")


def test_mutants_command_passes_on_a_small_controlled_table(capsys, tmp_path):
    path = tmp_path / "zoo.json"
    code = main(["mutants", "--mutant", "nonatomic-clear", "--mutant", "xchg-no-zero-skip",
                 "--engine", "random", "--engine", "pct", "--seeds", "1", "--budget", "3",
                 "--no-correct", "--json", str(path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mutation score controlled (any scheduler) 1/1" in out
    assert "benign look-alikes 1 and correct algorithms 0: 0 reports (as it must be)" in out
    data = json.loads(path.read_text())
    assert data["verdict"] == "pass" and data["undetected"] == []


def test_mutants_command_fails_when_a_benign_one_is_reported(capsys):
    code = main(["mutants", "--mutant", "tests.test_mutants:BrokenButCalledBenign",
                 "--engine", "random", "--seeds", "1", "--budget", "3", "--no-correct",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 reports: broken-but-called-benign/random" in out


class BrokenButCalledBenign(XchgDirtyLog):
    """Claims to be benign, skips write protection."""

    name = "broken-but-called-benign"
    breaks = "xchg"
    benign = True

    def get_dirty_log(self, slot_id):
        kvm = self.kvm
        slot = kvm.id_to_memslot(slot_id)
        bitmap = kvm.dirty_bitmap(slot_id)
        return [bitmap.exchange(i, 0) for i in range(slot.nwords)]


class BreaksNothingKnown(XchgDirtyLog):
    """A mutant whose ``breaks`` names no algorithm."""

    name = "breaks-nothing-known"
    breaks = "nosuch"


class BreaksAMisspelling(XchgDirtyLog):
    name = "breaks-a-misspelling"
    breaks = "xhcg"


class BreaksAMissingClass(XchgDirtyLog):
    name = "breaks-a-missing-class"
    breaks = "tests.broken_algorithms:Missing"


@pytest.mark.parametrize("cls, message", [
    ("BreaksNothingKnown", "expected 'tests.test_mutants:BreaksNothingKnown' to break a known "
                           "algorithm, one of ['manual', 'srcu', 'xchg'] or module:Class, got "
                           "breaks = 'nosuch'"),
    ("BreaksAMisspelling", "expected 'tests.test_mutants:BreaksAMisspelling' to break a known "
                           "algorithm, one of ['manual', 'srcu', 'xchg'] or module:Class, got "
                           "breaks = 'xhcg'; did you mean 'xchg'?"),
    ("BreaksAMissingClass", "expected 'tests.test_mutants:BreaksAMissingClass' to break a "
                            "known algorithm, got breaks = 'tests.broken_algorithms:Missing': "
                            "expected tests.broken_algorithms to define Missing for algorithm "
                            "'tests.broken_algorithms:Missing', got no attribute 'Missing'"),
])
def test_a_mutant_that_breaks_an_unknown_algorithm_is_exit_2(capsys, cls, message):
    code = main(["mutants", "--mutant", f"tests.test_mutants:{cls}", "--engine", "random",
                 "--seeds", "1", "--budget", "0.1", "--no-correct", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == f"concurrent-dirty: error: {message}\n"
    assert out == ""


def test_register_mutant_refuses_an_unknown_algorithm():
    with pytest.raises(AlgorithmError, match=r"^expected 'BreaksNothingKnown' to break a known "
                                             r"algorithm, one of \['manual', 'srcu', 'xchg'\] "
                                             r"or module:Class, got breaks = 'nosuch'$"):
        register_mutant(BreaksNothingKnown, breaks="nosuch")
    assert "breaks-nothing-known" not in MUTANTS
