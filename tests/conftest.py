"""Shared fixtures. float64 is switched on per test (``x64`` fixture), never globally at import."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats; the setting is restored afterwards."""
    with jax.enable_x64(True):
        yield
