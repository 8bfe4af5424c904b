"""Issue 20, item 1: the report invariants (tests/report_invariants.py)
over every zoo mutant under every model engine, the free-running engines'
reports and the kernel engine's mutants. Long (marker ``slow``, ``kvm``
for the kernel): a small budget per cell."""

import os
import re
import shlex

import pytest

from concurrent_dirty import Scenario
from concurrent_dirty.engines.free import run_cell
from concurrent_dirty.harness.program import ProgramSpace
from concurrent_dirty.mutants import MUTANTS
from concurrent_dirty.search.hypothesis import hypothesis_search
from concurrent_dirty.search.runner import explore
from concurrent_dirty.search.zoo import CONTROLLED_ENGINES
from tests.report_invariants import check_report

#: Seconds per mutant and engine (the zoo's defaults otherwise: every
#: execution's program drawn from the program space).
BUDGET = 0.5
SEED = 3


@pytest.mark.slow
@pytest.mark.parametrize("engine", CONTROLLED_ENGINES)
def test_every_mutant_report_keeps_the_invariants(engine):
    checked, failed, bad = 0, 0, []
    for name, mutant in MUTANTS.items():
        if engine == "hypothesis":
            r = hypothesis_search(mutant.ref, seed=SEED, seconds=BUDGET)
        else:
            r = explore(mutant.ref, Scenario(algorithm=mutant.ref, seed=SEED),
                        scheduler=engine, executions=None, seconds=BUDGET, seed=SEED,
                        space=ProgramSpace())
        try:
            check_report(r, seed=SEED)
        except AssertionError as exc:
            bad.append(f"{name}/{engine}: {exc!r}"[:400])
        checked += 1
        failed += r.failure is not None
    assert not bad, "\n".join(bad)
    # The small budget finds a third of them or more (the zoo's figures
    # need more): the invariants were checked on failures, not only passes.
    assert failed >= 8, (failed, checked)


LABEL = re.compile(r"\[([^/\]]+)/(\w+) seed (\d+) execution (\d+)\]")


def _free_invariants(r, seed):
    """A free-running cell's violations: each names the seed the cell used
    and an execution it ran; its rerun command gives that seed."""
    assert f"--seed {seed}" in r.rerun
    for v in r.violations:
        m = LABEL.search(v.describe())
        assert m, v.describe()
        assert (int(m.group(3)), int(m.group(4))) == (seed, v.execution)
        assert 1 <= v.execution <= max(1, r.executions)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_free_running_reports_name_the_seed_and_execution_they_ran(engine):
    from concurrent_dirty.cli.main import build_parser
    from concurrent_dirty.cli.stress import explore_command, rerun_command

    found = 0
    mutants = list(MUTANTS.values())
    if engine == "processes":
        # One mutant per module (each cell starts its writer processes,
        # seconds under load): the labels are the same code as threads'.
        mutants = list({m.ref.split(":")[0]: m for m in reversed(mutants)}.values())
    for mutant in mutants:
        scenario = Scenario(algorithm=mutant.ref, engine=engine, seconds=BUDGET, seed=SEED,
                            mode="short", writers=2, slots=1, pages=8, writes=16)
        r = run_cell(scenario)
        r.rerun = rerun_command(scenario)
        _free_invariants(r, SEED)
        for v in r.violations[:1]:
            found += 1
            # The fuzz command for the failing execution parses, and pins it.
            words = shlex.split(explore_command(scenario, v.execution))
            assert words[words.index("--execution") + 1] == str(v.execution)
            assert words[words.index("--seed") + 1] == str(SEED)
            build_parser().parse_args(words[1:])
    assert found, "no mutant failed under the free-running engine within the budget"


@pytest.mark.kvm
def test_kernel_mutant_reports_name_the_seed_and_execution_they_ran():
    if not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm on this machine: the kernel engine cannot run")
    from concurrent_dirty.cli.stress import rerun_command
    from concurrent_dirty.kvm.registry import KERNEL_MUTANTS

    for name in KERNEL_MUTANTS:
        scenario = Scenario(algorithm=name, engine="kvm", seconds=1.0, seed=SEED)
        r = run_cell(scenario)
        r.rerun = rerun_command(scenario)
        _free_invariants(r, SEED)
