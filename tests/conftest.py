import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def shm_guard():
    """Fails the test if it leaves a shared-memory segment behind. It looks
    only at this process's own segments (``live_segments()`` and the names
    in /dev/shm with this pid's ``cd-<pid>-`` prefix), never at the rest of
    /dev/shm, so other programs on the machine cannot make a test fail."""
    from concurrent_dirty.model.arena import live_segments

    prefix = f"cd-{os.getpid()}-"

    def own():
        try:
            return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}
        except FileNotFoundError:
            return set()

    before = own()
    yield
    assert live_segments() == [], f"segments still linked: {live_segments()}"
    leaked = sorted(own() - before)
    assert not leaked, f"shared-memory segments left behind: {leaked}"
