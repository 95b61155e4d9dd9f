"""truncated(k): exact through the last k inner steps, identity Jacobians before (k = 0 is FOM, k = r exact)."""

import jax
import numpy as np
import pytest

from helpers import flat, pytree_problem
from test_estimators import _nonlinear_problem
from ufom_bench import estimators as E
from ufom_bench.errors import UserError
from ufom_bench.memory import temp_bytes
from ufom_bench.problem import task_at

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

KEY = jax.random.PRNGKey(0)
sg = jax.lax.stop_gradient


def reference(problem, theta, task, k):
    """jax.grad through the unrolled loop where phi_{r-k} keeps only V's dependence on theta:
    phi_{r-k} = stop_gradient(phi_{r-k}) + V(theta) - stop_gradient(V(theta)) (identity Jacobians before)."""

    def loss(theta):
        phi0 = problem.init_inner(theta, task)
        phi = phi0
        for alpha in problem.step_sizes[: problem.r - k]:
            g = jax.grad(problem.inner_loss, argnums=1)(theta, phi, task)
            phi = jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, g)
        phi = jax.tree_util.tree_map(lambda p, v: sg(p) + v - sg(v), phi, phi0)
        for alpha in problem.step_sizes[problem.r - k:]:
            g = jax.grad(problem.inner_loss, argnums=1)(theta, phi, task)
            phi = jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, g)
        return problem.outer_loss(theta, phi, task)

    return jax.grad(loss)(theta)


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_truncated_equals_its_definition_and_its_ends(k):
    problem = pytree_problem(r=5)
    theta, task = problem.theta0, task_at(problem, 2)
    g, info, _ = jax.jit(E.truncated(k).estimate)(problem, theta, task, KEY, ())
    np.testing.assert_allclose(flat(g), flat(reference(problem, theta, task, k)), rtol=1e-10, atol=1e-12)
    assert (int(info.grad_calls), int(info.hvp_calls)) == (problem.r + 1, k)  # r + 1 grads, k HVPs
    assert bool(info.exact) == (k == problem.r) and not bool(info.diverged)
    end = {0: "fom", 5: "exact"}.get(k)
    if end:
        np.testing.assert_allclose(flat(g), flat(E.get(end).estimate(problem, theta, task, KEY, ())[0]), rtol=1e-14)


def test_truncated_is_biased_in_between():
    problem = pytree_problem(r=5)
    theta, task = problem.theta0, task_at(problem, 2)
    g = {k: flat(E.truncated(k).estimate(problem, theta, task, KEY, ())[0]) for k in (0, 2, 5)}
    assert np.linalg.norm(g[2] - g[5]) > 1e-3 * np.linalg.norm(g[5])  # the wrong variant (k = r) differs


def _temp(k, r):
    problem, task = _nonlinear_problem(r)
    return temp_bytes(E.truncated(k).estimate, problem, problem.theta0, task, KEY, ())


def test_memory_is_constant_in_r_and_grows_with_k():
    for k in (1, 4):
        small, large = _temp(k, 10), _temp(k, 1000)
        assert abs(large - small) <= 0.01 * small, (k, small, large)
    assert _temp(8, 100) - _temp(1, 100) >= 7 * 64 * 4  # at least one stored phi (64 floats) per extra step


@pytest.mark.parametrize("k, message", [(-1, "k = -1"), (1.5, "k = 1.5"), (True, "k = True"),
                                        (7, "k <= r, got k = 7")])
def test_bad_k_is_named(k, message):
    problem = pytree_problem(r=5)
    with pytest.raises(UserError, match=message):
        E.truncated(k).estimate(problem, problem.theta0, task_at(problem, 0), KEY, ())
