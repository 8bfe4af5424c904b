import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def shm_guard():
    """Fails the test if it leaves a new segment in /dev/shm."""
    before = set(os.listdir("/dev/shm"))
    yield
    leaked = sorted(set(os.listdir("/dev/shm")) - before)
    assert not leaked, f"shared-memory segments left behind: {leaked}"
