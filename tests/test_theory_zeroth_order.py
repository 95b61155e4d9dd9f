"""ufom_bench.theory.zeroth_order: every derived formula matches its stated form, the derivation can fail, the numeric forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from ufom_bench import theory
from ufom_bench.theory import zeroth_order as Z

pytestmark = pytest.mark.usefixtures("x64")


def test_every_derived_formula_matches_its_stated_form():
    checks = Z.derivation().checks
    assert set(checks) == {"pzobo_calls", "forward_gradient_calls", "es_calls", "gaussian_direction_trace_cov",
                           "sphere_direction_trace_cov", "es_quadratic_exact", "smoothing_bias_cubic"}
    assert all(c.matches for c in checks.values()), {k: c for k, c in checks.items() if not c.matches}
    assert Z.derivation().trace_cov_const == {"gaussian": Z.s + 1, "sphere": Z.s - 1}


def test_the_moment_derivation_can_fail():
    """The componentwise derivation distinguishes s + 1 from its neighbours, and Gaussian moments are right."""
    u1, u2 = sp.symbols("u_1 u_2")
    assert Z.gaussian_expectation(u1**4 * u2**2 + u1**3, [u1, u2]) == 3
    mean, tr, a = Z._direction_moments_components(3)
    assert mean == a
    assert sp.expand(tr - 4 * a.dot(a)) == 0 and sp.expand(tr - 3 * a.dot(a)) != 0
    mean_c, tr_c, a_c = Z._sphere_moments_circle()
    assert mean_c == a_c and sp.expand(tr_c - a_c.dot(a_c)) == 0  # s - 1 = 1 on the circle


def test_numeric_forms():
    assert Z.zeroth_order_calls("pzobo", 10, 3) == (41.0, 0.0)
    assert Z.zeroth_order_calls("forward_gradient", 10, 3) == (3.0, 30.0)
    assert Z.zeroth_order_calls("es", 10, 3) == (66.0, 0.0)
    assert theory.pzobo_trace_cov(2.0, 7, 4) == pytest.approx(4.0)
    assert theory.pzobo_trace_cov(2.0, 7, 4, "sphere") == pytest.approx(3.0)
    assert theory.forward_gradient_trace_cov(2.0, 7, 1) == theory.es_trace_cov(2.0, 7, 1) == pytest.approx(16.0)
    # arrays broadcast; jax inputs stay traceable
    np.testing.assert_allclose(theory.direction_trace_cov(1.0, np.array([2, 10, 100]), 1), [3, 11, 101])
    f = jax.jit(lambda a2: theory.direction_trace_cov(a2, 9.0, 2.0, "sphere"))
    assert float(f(jnp.asarray(3.0))) == pytest.approx(12.0)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="'cg'"):
        Z.zeroth_order_calls("cg", 10, 1)
    with pytest.raises(ValueError, match="'unit'"):
        Z.direction_trace_cov(1.0, 3, 1, "unit")
