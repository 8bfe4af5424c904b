"""Issue 20, item 5: tools/readme_samples.py regenerates the README's
samples and CLI tables from the build, and --check fails (exit 1, naming
the sample and the line) when one is stale or its command no longer runs."""

import subprocess
import sys
from pathlib import Path

from tests.test_tokens import REGRESSIONS

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "readme_samples.py"


def tool(readme, *args):
    done = subprocess.run([sys.executable, str(TOOL), *args, "--readme", str(readme)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return done.returncode, done.stdout


def test_a_written_sample_checks_and_a_stale_one_fails(tmp_path):
    token = REGRESSIONS[0][2]
    command = f"concurrent-dirty replay {token} --algorithm xchg"
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n<!-- sample: {command} -->\n```\nold\n```\n\n"
                      f"<!-- cli-table: replay -->\n<!-- /cli-table -->\n")
    assert tool(readme, "--write")[0] == 0
    text = readme.read_text()
    assert f"$ {command}\nverdict: PASS against xchg" in text
    assert "| `--algorithm NAME|module:Class` |" in text.replace("\\|", "|")
    code, out = tool(readme, "--check")
    assert code == 0, out
    # A stale verdict: the sample and the line are named.
    readme.write_text(text.replace("verdict: PASS against xchg", "verdict: FAIL against xchg"))
    code, out = tool(readme, "--check")
    assert code == 1
    assert f"README.md:3 `{command}` is stale: sample line 2 'verdict: FAIL against xchg" in out
    # A CLI table that no longer says what --help says.
    readme.write_text(text.replace("replay against this algorithm", "replay against that one"))
    code, out = tool(readme, "--check")
    assert code == 1 and "CLI table of `replay` differs from its --help at row 3" in out


def test_a_sample_whose_command_no_longer_runs_fails_the_check(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- sample: concurrent-dirty fuzz --no-such-option -->\n```\n$ x\n```\n"
                      "<!-- sample[long]: concurrent-dirty mutants -->\n```\nnot run\n```\n")
    code, out = tool(readme, "--check")
    assert code == 1
    assert "`concurrent-dirty fuzz --no-such-option` no longer runs: exit 2" in out
    assert "mutants" not in out.split("readme_samples:")[0]  # long: only with --long


def test_times_rates_and_tokens_do_not_make_a_sample_stale():
    sys.path.insert(0, str(ROOT / "tools"))
    import readme_samples as r

    assert r.matches(["in 1.80s (60 executions/s, 5109 switch points/s)", "cd2.eNq..."],
                     ["in 2.45s (44 executions/s, 3760 switch points/s)", "cd2.eNqAbCdEf"],
                     counts=False) is None
    assert r.matches(["108 executions"], ["109 executions"], counts=False) is not None
    assert r.matches(["108 executions"], ["109 executions"], counts=True) is None
    assert r.matches(["a", "...", "d"], ["a", "b", "c", "d"], counts=False) is None
