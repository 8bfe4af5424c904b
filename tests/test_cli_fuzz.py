"""``concurrent-dirty fuzz`` and ``replay``: verdicts, exit codes, JSON."""

import json

import pytest

from concurrent_dirty.cli.main import main
from tests.test_tokens import REGRESSIONS

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("scheduler", ["random", "pct", "dfs"])
def test_fuzz_correct_algorithm_exits_0_and_says_how_much_it_tried(capsys, scheduler):
    code, out, err = run(capsys, "fuzz", "--algorithm", "xchg", "--scheduler", scheduler,
                         "--executions", "40",
                         *(["--preemptions", "1"] if scheduler == "dfs" else []))
    assert code == 0, out
    assert "verdict: PASS (no failure; " in out and " switch points, " in out


def test_fuzz_broken_algorithm_exits_1_with_trace_token_and_snippet(capsys, tmp_path):
    path = tmp_path / "fuzz.json"
    token_file = tmp_path / "token.txt"
    code, out, err = run(capsys, "fuzz", "--algorithm", BROKEN, "--scheduler", "random",
                         "--executions", "3000", "--writers", "2", "--json", str(path),
                         "--token-file", str(token_file))
    assert code == 1
    assert "counterexample: nonatomic-clear, threads vcpu 0, vcpu 1, harvester" in out
    assert "<== preempts" in out
    report = json.loads(path.read_text())
    (result,) = report["results"]
    assert report["verdict"] == "fail" and result["status"] == "FAIL"
    token = result["token"]
    assert f"rerun:  concurrent-dirty replay {token}" in out
    assert f"replay('{token}').check()" in out
    assert token_file.read_text().strip() == token  # written before the run ends


def test_replay_reproduces_and_exits_1(capsys):
    _, step, token = REGRESSIONS[0]
    code, out, err = run(capsys, "replay", token)
    assert code == 1
    assert out.splitlines()[-1] == (f"verdict: FAIL against {BROKEN}: violation at step "
                                    f"{step}: the same failure, at the same step")


def test_replay_against_the_fixed_algorithm_exits_0(capsys):
    code, out, err = run(capsys, "replay", REGRESSIONS[1][2], "--algorithm", "xchg")
    assert code == 0
    assert "verdict: PASS against xchg: the replayed interleaving loses no dirty bit" in out


@pytest.mark.parametrize("argv, message", [
    (["replay", "garbage"], "expected a replay token like cd2.<base64>, got 'garbage'"),
    (["replay", "cd7.AAAA"], "expected a version 2 replay token, got version 7: it was made "
                             "by another release of concurrent-dirty, whose schedules differ; "
                             "rerun the fuzz command that found it to get a new token "
                             "(committed ones: python3 tools/make_regression_tokens.py)"),
    (["fuzz", "--algorithm", "xchgg"], "expected an algorithm in ['manual', 'ring', 'srcu', "
                                       "'xchg', 'xchg-fast-pf', 'xchg-pml'], a mutant name "
                                       "(concurrent-dirty mutants lists them), a kernel "
                                       "protocol (kvm-get, kvm-clear, kvm-ring: --engine kvm) "
                                       "or module:Class, got 'xchgg'; did you mean 'xchg'?"),
])
def test_fuzz_and_replay_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err == f"concurrent-dirty: error: {message}\n"


def test_unknown_scheduler_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fuzz", "--scheduler", "pc"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "concurrent-dirty: error: argument --scheduler: expected a scheduler in ['auto', "
        "'random', 'pct', 'dfs', 'hypothesis'], got 'pc'; did you mean 'pct'?\n")
