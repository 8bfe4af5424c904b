import concurrent_dirty


def test_all_lists_exactly_the_public_names():
    for name in concurrent_dirty.__all__:  # names resolve lazily (PEP 562): load them all
        getattr(concurrent_dirty, name)
    public = {n for n in vars(concurrent_dirty) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(concurrent_dirty, n)).__name__ == "module"}
    assert sorted(concurrent_dirty.__all__) == sorted(public - modules)


def test_every_exported_name_resolves():
    for name in concurrent_dirty.__all__:
        assert getattr(concurrent_dirty, name) is not None


def test_the_paths_algorithms_and_constants_are_exported():
    from concurrent_dirty.dirtylog import (
        PATH_ALGORITHMS,
        DirtyRingLog,
        FastPfXchgDirtyLog,
        MarkContext,
        PmlXchgDirtyLog,
    )
    from concurrent_dirty.model import kvm

    assert concurrent_dirty.DirtyRingLog is DirtyRingLog
    assert concurrent_dirty.FastPfXchgDirtyLog is FastPfXchgDirtyLog
    assert concurrent_dirty.PmlXchgDirtyLog is PmlXchgDirtyLog
    assert concurrent_dirty.MarkContext is MarkContext
    assert concurrent_dirty.PATH_ALGORITHMS is PATH_ALGORITHMS
    for name in ("WRITABLE", "MMU_WRITABLE", "DIRTY", "SPTE_MASK", "RING_DIRTY",
                 "RING_HARVESTED"):
        assert name in concurrent_dirty.__all__
        assert getattr(concurrent_dirty, name) == getattr(kvm, name)


def test_every_seam_exists_and_the_readme_lists_it():
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Bring your own algorithm", 1)[1].split("\n## ", 1)[0]
    for cls, seams in concurrent_dirty.SEAMS.items():
        assert getattr(concurrent_dirty, cls.__name__) is cls
        assert f"`{cls.__name__}`" in section
        for seam in seams:
            assert callable(getattr(cls, seam)), f"{cls.__name__}.{seam}"
            assert f"`{seam}`" in section, f"README does not list {cls.__name__}.{seam}"


class ForgetsToReprotect(concurrent_dirty.DirtyRingLog):
    """A ring variant written outside the project, against the public API:
    the reset recycles entries without re-protecting their pages."""

    def _reprotect(self, gfn: int) -> None:
        pass


def test_a_ring_mutant_needs_only_public_names():
    from concurrent_dirty import Scenario, explore

    report = explore(ForgetsToReprotect, Scenario(algorithm="ring", writers=1, pages=2),
                     scheduler="random", executions=300, seconds=60.0)
    assert report.failure is not None
    assert report.failure.outcome.kind == "violation"


class RemembersItsVcpu(concurrent_dirty.XchgDirtyLog):
    """Per-vCPU state in a Python attribute, as the README allows: each
    object must only ever mark for one vCPU."""

    owner: int | None = None

    def mark_page_dirty(self, gfn, vcpu_id, *, context=None):
        if self.owner is None:
            self.owner = vcpu_id
        if self.owner != vcpu_id:
            raise AssertionError(f"object of vcpu {self.owner} marked for vcpu {vcpu_id}")
        super().mark_page_dirty(gfn, vcpu_id, context=context)


def test_each_vcpu_gets_its_own_algorithm_object():
    from concurrent_dirty import Scenario, explore, run_cell

    report = explore(RemembersItsVcpu, Scenario(algorithm="xchg", writers=2, pages=4),
                     scheduler="random", executions=50, seconds=60.0)
    assert report.failure is None and report.executions == 50
    cell = run_cell(Scenario(algorithm="tests.test_exports:RemembersItsVcpu", writers=2,
                             engine="threads", seconds=0.2))
    assert not cell.violations and not cell.error
