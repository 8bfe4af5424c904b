"""Issue 11: errors in the code under test are reports, a failure ends the
run, hangs are bounded in every engine, replays say when they diverge."""

import json

import pytest

from concurrent_dirty.cli.main import main

RAISES = ["tests.broken_algorithms:RaisesInConstructor",
          "tests.broken_algorithms:RaisesInSharedWords",
          "tests.broken_algorithms:RaisesInEnable"]
METHOD = {"RaisesInConstructor": "RaisesInConstructor.__init__ (the constructor) raised",
          "RaisesInSharedWords": "RaisesInSharedWords.shared_words raised",
          "RaisesInEnable": "RaisesInEnable.enable_dirty_logging raised"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _trimmed(out, ref):
    """The report names the method and shows the user's frames only."""
    assert METHOD[ref.split(":")[1]] in out
    assert "ValueError: broken on purpose" in out
    assert "broken_algorithms.py" in out
    assert "concurrent_dirty/harness" not in out and "concurrent_dirty/engines" not in out


@pytest.mark.parametrize("ref", RAISES)
@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_stress_reports_a_raising_method_and_ends_the_run(capsys, tmp_path, shm_guard, ref,
                                                           engine):
    path = tmp_path / "out.json"
    code, out, err = run(capsys, "stress", "--algorithm", ref, "--algorithm", "xchg",
                         "--engine", engine, "--seconds", "0.3", "--quiet", "--json", str(path))
    assert code == 1
    assert "Traceback" not in err
    assert "verdict: FAIL" in out
    _trimmed(out, ref)
    statuses = [r["status"] for r in json.loads(path.read_text())["results"]]
    assert statuses == ["ERROR", "not run"]
    assert "not run: the run ended at the first error" in out


@pytest.mark.parametrize("ref", RAISES)
def test_fuzz_and_replay_report_a_raising_method(capsys, tmp_path, ref):
    token_file = tmp_path / "token"
    code, out, err = run(capsys, "fuzz", "--algorithm", ref, "--seconds", "2", "--quiet",
                         "--token-file", str(token_file))
    assert code == 1 and "Traceback" not in err
    _trimmed(out, ref)
    assert "verdict: FAIL (error at step 0" in out
    code, out, err = run(capsys, "replay", token_file.read_text().strip())
    assert code == 1 and "Traceback" not in err
    _trimmed(out, ref)


def test_hypothesis_fuzz_reports_a_raising_method(capsys):
    code, out, err = run(capsys, "fuzz", "--algorithm", RAISES[2], "--scheduler", "hypothesis",
                         "--seconds", "2", "--quiet")
    assert code == 1 and "Traceback" not in err
    _trimmed(out, RAISES[2])
