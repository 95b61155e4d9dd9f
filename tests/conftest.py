"""Shared fixtures. Tests run in JAX's defaults (float32); a test that claims exactness asks for float64
with the ``x64`` fixture, a whole module with ``pytestmark = pytest.mark.usefixtures("x64")`` (STYLE.md:
'Theory checks run in float64')."""

import jax
import pytest


@pytest.fixture
def x64():
    """float64 for the duration of one test (JAX's scoped ``enable_x64``; nothing global is switched)."""
    with jax.enable_x64(True):
        yield


def _module_wants_x64(module) -> bool:
    marks = getattr(module, "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    return any(m.name == "usefixtures" and "x64" in m.args for m in marks)


@pytest.fixture(scope="module", autouse=True)
def _x64_module(request):
    """A module marked with the ``x64`` fixture runs whole under it, its module-scoped fixtures included
    (they are set up before any function-scoped fixture)."""
    if _module_wants_x64(request.module):
        with jax.enable_x64(True):
            yield
    else:
        yield
