"""es(mu, n_dirs): antithetic Gaussian smoothing of the whole objective. Its definition, counts = theory, exact
u u^T G pairs and unbiasedness where the objective is quadratic in theta (problems.quadratic), covariance trace
(s + 1) ||G||^2 / Q there, O(mu^2) deviation on a nonlinear problem, O(1) memory in r, bad parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory
from helpers import flat, pytree_problem
from test_pzobo import N, N_TRACE, Z_LEVEL, max_z, run, samples, setting, trace_cov
from ufom_bench import estimators as E
from ufom_bench import problems
from ufom_bench.errors import UserError
from ufom_bench.estimators.pzobo import direction
from ufom_bench.problem import inner_path, task_at

pytestmark = pytest.mark.usefixtures("x64")

KEY = jax.random.PRNGKey(0)
tmap = jax.tree_util.tree_map


def by_hand(problem, theta, task, key, mu, n_dirs, two=2.0):
    """(1 / (2 mu Q)) sum_j (f(theta + mu u_j) - f(theta - mu u_j)) u_j, f = L_out(., U_r(.)); ``two`` = 1 is a
    wrong variant (the 2 of the central difference dropped)."""
    f = lambda th: problem.outer_loss(th, inner_path(problem, th, task), task)
    out = 0.0
    for j in range(n_dirs):
        u = direction(jax.random.fold_in(key, j), theta)
        diff = f(tmap(lambda t, d: t + mu * d, theta, u)) - f(tmap(lambda t, d: t - mu * d, theta, u))
        out = out + diff * flat(u) / (two * mu * n_dirs)
    return out


def directional(theta, key, g, n_dirs):
    """(1/Q) sum_j u_j u_j^T g with the estimator's directions: the limit mu -> 0 of es."""
    us = [flat(direction(jax.random.fold_in(key, j), theta)) for j in range(n_dirs)]
    return sum(u * jnp.dot(u, flat(g)) for u in us) / n_dirs


@pytest.mark.parametrize("n_dirs", [1, 3])
def test_es_is_its_definition(n_dirs):
    problem, theta, task, _, _ = setting()
    g, info = run(E.es(0.05, n_dirs), problem, theta, task)
    np.testing.assert_allclose(flat(g), jax.jit(lambda k: by_hand(problem, theta, task, k, 0.05, n_dirs))(KEY),
                               rtol=1e-12)
    assert bool(info.finite) and not bool(info.diverged) and not bool(info.exact)


@pytest.mark.parametrize("r, n_dirs", [(1, 1), (6, 5)])
def test_counted_calls_equal_theory(r, n_dirs):
    problem = pytree_problem(r=r)
    _, info = run(E.es(0.01, n_dirs), problem, problem.theta0, task_at(problem, 0))
    grads, hvps = theory.zeroth_order_calls("es", r, n_dirs)
    assert (int(info.grad_calls), int(info.hvp_calls)) == (int(grads), int(hvps)) == (2 * n_dirs * (r + 1), 0)


def test_deviation_from_the_directional_limit_is_second_order_in_mu():
    """On the nonlinear pytree problem, per draw: es(mu) - (1/Q) sum_j u_j u_j^T G = O(mu^2)."""
    problem, theta, task, g_exact, _ = setting()
    limit = directional(theta, KEY, g_exact, 2)
    err = {mu: float(jnp.linalg.norm(flat(run(E.es(mu, 2), problem, theta, task)[0]) - limit)) for mu in (1e-1, 1e-2)}
    assert 50 < err[1e-1] / err[1e-2] < 200, err


@functools.lru_cache(maxsize=None)
def quadratic_setting():
    """problems.quadratic (p = s = 5): f(theta) = L_out(theta, U_r(theta, T), T) is quadratic in theta."""
    problem = problems.quadratic(p=5, n_tasks=2, r=3)
    theta, task = problem.theta0 + 0.2, task_at(problem, 1)
    g_exact = problems.quadratic_exact_gradient(problem, theta, task)
    est = E.es(0.5, 2)  # a large mu: exact all the same
    x = samples(lambda k: est.estimate(problem, theta, task, k, ())[0], n=N_TRACE)
    return problem, theta, task, g_exact, x


def test_pairs_are_exact_on_a_quadratic_objective():
    problem, theta, task, g_exact, _ = quadratic_setting()
    for i in range(3):
        key = jax.random.PRNGKey(i)
        np.testing.assert_allclose(flat(run(E.es(0.5, 2), problem, theta, task, key)[0]),
                                   directional(theta, key, g_exact, 2), rtol=1e-9, atol=1e-12)


def test_unbiased_on_a_quadratic_objective_and_a_wrong_scale_fails():
    """N = 4000 draws, Q = 2, mu = 0.5: mean within Z_LEVEL SEs of the exact gradient; without the 2 of the
    central difference (twice the gradient) it is not."""
    problem, theta, task, g_exact, x = quadratic_setting()
    assert max_z(x[:N], g_exact) < Z_LEVEL
    wrong = samples(lambda k: by_hand(problem, theta, task, k, 0.5, 2, two=1.0))
    assert max_z(wrong, g_exact) > Z_LEVEL


def test_trace_of_covariance_equals_theory_on_a_quadratic_objective():
    """N_TRACE = 20000 draws, Q = 2: tr Cov within Z_LEVEL SEs of (s + 1) ||G||^2 / Q, not of (s - 1) ||G||^2 / Q."""
    _, _, _, g_exact, x = quadratic_setting()
    tr, se = trace_cov(x)
    g2, s = float(jnp.sum(g_exact**2)), x.shape[1]
    want = float(theory.es_trace_cov(g2, s, 2))
    print(f"es (quadratic): tr Cov measured {tr:.5g} +- {se:.2g}, theory {want:.5g}, s = {s}, Q = 2")
    assert abs(tr - want) < Z_LEVEL * se
    assert abs(tr - float(theory.direction_trace_cov(g2, s, 2, "sphere"))) > Z_LEVEL * se


@pytest.mark.parametrize("params, message", [
    ({"mu": 0}, "mu = 0"), ({"mu": -0.1}, "mu = -0.1"), ({"mu": float("nan")}, "mu = nan"),
    ({"mu": None}, "mu = None"), ({"n_dirs": 0}, "n_dirs = 0"), ({"n_dirs": "2"}, "n_dirs = '2'"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(UserError, match=message):
        E.get("es", **params)
