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
