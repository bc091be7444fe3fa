"""Shared fixtures. float64 is switched on per test (``x64`` fixture), never globally at import."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats; the setting is restored afterwards."""
    with jax.enable_x64(True):
        yield


# The longest test files (about 2-5 minutes each here), handed to the two xdist workers first (--dist loadfile
# gives whole files in collection order): the short files then fill in around them instead of one long file
# running alone at the end.
LONGEST_FILES = ("test_sharding.py", "test_run_identity.py", "test_runner.py", "test_bench_smoke.py",
                 "test_thermox_fuzz.py", "test_qa_task.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable within and after them
