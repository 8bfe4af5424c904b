"""The default test run leaves the long tests out (issue 20): each entry of
conftest's table names a test that exists, and pyproject's default
selection is the one the table's markers need."""

import pathlib
import tomllib

from tests.conftest import DEFAULT_SELECTION, LONG

ROOT = pathlib.Path(__file__).parent.parent


def test_every_long_test_named_exists():
    missing = []
    for file, tests in LONG.items():
        source = (ROOT / "tests" / file).read_text()
        missing += [f"{file}::{name}" for name in tests
                    if name != "*" and f"def {name}(" not in source]
    assert missing == []


def test_the_default_run_deselects_every_long_marker_and_ci_runs_them():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert f"-m '{DEFAULT_SELECTION}'" in config["ini_options"]["addopts"]
    registered = {m.split(":")[0] for m in config["ini_options"]["markers"]}
    used = {marker for tests in LONG.values() for marker in tests.values()}
    assert used <= registered == {"slow", "jobs", "signals", "kvm"}
    assert all(f"not {m}" in DEFAULT_SELECTION for m in registered)
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python3 -m pytest -m "slow or jobs or signals or kvm"' in ci
