import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def shm_guard():
    """Fails the test if it leaves a shared-memory segment behind: none of
    this process's may stay linked, and (unless pytest-xdist workers share
    /dev/shm with us) no new entry may remain in /dev/shm."""
    from concurrent_dirty.model.arena import live_segments

    alone = "PYTEST_XDIST_WORKER" not in os.environ
    before = set(os.listdir("/dev/shm"))
    yield
    assert live_segments() == [], f"segments still linked: {live_segments()}"
    if alone:
        leaked = sorted(set(os.listdir("/dev/shm")) - before)
        assert not leaked, f"shared-memory segments left behind: {leaked}"
