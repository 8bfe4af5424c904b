"""The README's "In your own tests" example, extracted from the README (not
retyped), run against the built-in non-atomic clear: it must fail, with
Hypothesis's example database off and a seed of its own each run."""

import pathlib
import re

import pytest
from hypothesis import Phase, settings
from hypothesis import seed as hseed

from concurrent_dirty import InvariantViolation

README = pathlib.Path(__file__).parent.parent / "README.md"
#: Runs here (each its own seed, no shrinking, to keep the suite short);
#: `python3 tools/readme_example.py --runs 20` runs the example 20 times
#: with every Hypothesis phase, shrinking included.
RUNS = 6


def readme_example(algorithm: str) -> str:
    text = README.read_text()
    section = text[text.index("### In your own tests"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the section has no python example"
    assert '"mypkg.mymodule:MyAlgorithm"' in code.group(1)
    return code.group(1).replace('"mypkg.mymodule:MyAlgorithm"', repr(algorithm))


def run_example(algorithm: str, seed: int, *, shrink: bool) -> None:
    """The example's test function, as the README has it, under a profile
    with the database off (and, unless ``shrink``, no shrinking: a failure
    found stays a failure, and the suite stays short)."""
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]
    settings.register_profile("readme-example", database=None, phases=phases)
    previous = settings._current_profile
    settings.load_profile("readme-example")
    try:
        namespace: dict[str, object] = {}
        exec(readme_example(algorithm), namespace)  # settings apply at decoration
        test = next(v for k, v in namespace.items() if k.startswith("test_"))
        hseed(seed)(test)()  # type: ignore[operator]
    finally:
        settings.load_profile(previous or "default")


@pytest.mark.parametrize("seed", range(RUNS))
def test_the_readme_example_fails_on_the_non_atomic_clear(seed):
    with pytest.raises(InvariantViolation, match="LOST DIRTY BIT"):
        run_example("nonatomic-clear", 1000 + seed, shrink=False)


def test_the_readme_example_reports_a_counterexample_proven_minimal():
    with pytest.raises(InvariantViolation, match=r"counterexample: 1 preemption, the "
                                                 r"fewest on this program"):
        run_example("nonatomic-clear", 1, shrink=True)
