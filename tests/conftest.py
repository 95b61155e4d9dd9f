"""Shared fixtures. Tests run in JAX's defaults (float32); a test that claims exactness asks for float64
with the ``x64`` fixture (a module: ``pytestmark = pytest.mark.usefixtures("x64")``), STYLE.md's 'Theory
checks run in float64'."""

import jax
import pytest


@pytest.fixture
def x64():
    """float64 for the duration of one test (JAX's scoped ``enable_x64``; nothing global is switched)."""
    with jax.enable_x64(True):
        yield

