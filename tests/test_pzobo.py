"""pzobo(mu, n_dirs, directions): PZOBO's estimate against its definition, its counts, its limit mu -> 0, its
unbiasedness and covariance trace (theory.zeroth_order), memory O(1) in r, and its parameter checks.

Also the statistics the zeroth-order tests share (imported by test_forward_gradient and test_es).
Statistical tests: |z| < Z_LEVEL per coordinate (s = 7 coordinates: a false failure has probability below
7 * 7e-6 per test), over N draws; each is shown to reject a wrong-scale variant at the same level.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory
from helpers import flat, pytree_problem
from test_estimators import _nonlinear_problem
from ufom_bench import estimators as E
from ufom_bench import problems
from ufom_bench.errors import UserError
from ufom_bench.estimators.pzobo import direction
from ufom_bench.memory import temp_bytes
from ufom_bench.problem import inner_path, task_at

pytestmark = pytest.mark.usefixtures("x64")

KEY = jax.random.PRNGKey(0)
Z_LEVEL = 4.5
N = 4000  # draws for the mean (unbiasedness) tests
N_TRACE = 20000  # draws for the covariance-trace tests
tmap = jax.tree_util.tree_map


# ------------------------------------------------------------------------------------------- shared statistics

def keys(n, seed=1):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def samples(fn, n=N, seed=1):
    """fn(key) -> pytree, vmapped over n keys and flattened: an (n, s) array."""
    return np.asarray(jax.jit(jax.vmap(lambda k: flat(fn(k))))(keys(n, seed)))


def max_z(x, target):
    """max over coordinates of |mean - target| / (std / sqrt(n))."""
    se = x.std(0, ddof=1) / np.sqrt(len(x))
    return float(np.max(np.abs(x.mean(0) - np.asarray(target)) / se))


def trace_cov(x):
    """(tr of the sample covariance, its standard error): the mean of ||x_n - mean||^2 (n / (n-1)) and its SE."""
    d = np.sum((x - x.mean(0)) ** 2, axis=1) * len(x) / (len(x) - 1)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(x)))


def run(est, problem, theta, task, key=KEY):
    """One jitted estimate: (grad, info)."""
    return jax.jit(est.estimate)(problem, theta, task, key, ())[:2]


@functools.lru_cache(maxsize=None)
def setting(r=4, i=1):
    """pytree_problem (s = 7, theta also in L_in and L_out) at theta0 on task i: (problem, theta, task, G, b1)."""
    problem = pytree_problem(r=r)
    theta, task = problem.theta0, task_at(problem, i)
    g_exact = run(E.exact(), problem, theta, task)[0]
    b1 = jax.jit(lambda th: jax.grad(problem.outer_loss, argnums=0)(th, inner_path(problem, th, task), task))(theta)
    return problem, theta, task, g_exact, b1


# ------------------------------------------------------------------------------------------- pzobo by hand

def by_hand(problem, theta, task, key, mu, n_dirs, directions="gaussian", u_scale=1.0, average=True):
    """PZOBO written out: b1 + (1/Q) sum_j <(phi_r(theta + mu u_j) - phi_r(theta)) / mu, b2> u_j, the j-th
    direction from fold_in(key, j). ``u_scale`` and ``average`` = False give the wrong variants."""
    phi = inner_path(problem, theta, task)
    b1, b2 = jax.grad(problem.outer_loss, argnums=(0, 1))(theta, phi, task)
    out = flat(b1)
    for j in range(n_dirs):
        u = tmap(lambda x: u_scale * x, direction(jax.random.fold_in(key, j), theta, directions))
        phi_u = inner_path(problem, tmap(lambda t, d: t + mu * d, theta, u), task)
        c = jnp.dot(flat(phi_u) - flat(phi), flat(b2)) / mu
        out = out + c * flat(u) / (n_dirs if average else 1)
    return out


@pytest.mark.parametrize("directions", ["gaussian", "sphere"])
@pytest.mark.parametrize("n_dirs", [1, 3])
def test_pzobo_is_its_definition(n_dirs, directions):
    problem, theta, task, _, _ = setting()
    g, info = run(E.pzobo(0.05, n_dirs, directions), problem, theta, task)
    want = jax.jit(lambda k: by_hand(problem, theta, task, k, 0.05, n_dirs, directions))(KEY)
    np.testing.assert_allclose(flat(g), want, rtol=1e-12)
    assert bool(info.finite) and not bool(info.diverged) and not bool(info.exact)


def test_sphere_directions_have_radius_sqrt_s():
    theta = pytree_problem().theta0  # s = 7 over two leaves
    for k in keys(5):
        assert float(jnp.linalg.norm(flat(direction(k, theta, "sphere")))) == pytest.approx(np.sqrt(7), rel=1e-14)


@pytest.mark.parametrize("r, n_dirs", [(1, 1), (6, 5)])
def test_counted_calls_equal_theory(r, n_dirs):
    problem = pytree_problem(r=r)
    _, info = run(E.pzobo(0.01, n_dirs), problem, problem.theta0, task_at(problem, 0))
    grads, hvps = theory.zeroth_order_calls("pzobo", r, n_dirs)
    assert (int(info.grad_calls), int(info.hvp_calls)) == (int(grads), int(hvps)) == ((n_dirs + 1) * r + 1, 0)


def test_finite_difference_tends_to_the_jacobian_linearly_in_mu():
    """Per draw, G_mu - (b1 + (1/Q) sum_j u_j u_j^T J^T b2) = O(mu) (the path is nonlinear in theta)."""
    problem, theta, task, g_exact, b1 = setting()
    a = flat(g_exact) - flat(b1)  # J^T b2
    us = [flat(direction(jax.random.fold_in(KEY, j), theta)) for j in range(2)]
    limit = flat(b1) + sum(u * jnp.dot(u, a) for u in us) / 2
    err = {mu: float(jnp.linalg.norm(flat(run(E.pzobo(mu, 2), problem, theta, task)[0]) - limit))
           for mu in (1e-2, 1e-3, 1e-6)}
    assert 5 < err[1e-2] / err[1e-3] < 20, err
    assert err[1e-6] < 1e-6 * float(jnp.linalg.norm(limit)), err


@functools.lru_cache(maxsize=None)
def pzobo_samples(directions):
    """N_TRACE draws of pzobo(mu = 1e-5, Q = 2) on `setting()` (shared by the mean and the trace tests)."""
    problem, theta, task, _, _ = setting()
    est = E.pzobo(1e-5, 2, directions)
    return samples(lambda k: est.estimate(problem, theta, task, k, ())[0], n=N_TRACE)


@pytest.mark.parametrize("directions", ["gaussian", "sphere"])
def test_unbiased_as_mu_tends_to_0_and_wrong_scales_fail(directions):
    """N = 4000 draws, Q = 2, mu = 1e-5 (smoothing bias O(mu^2), far below the SE): mean within Z_LEVEL SEs of
    the exact gradient; the authors' unit-norm directions (no sqrt(s)) and a sum instead of the mean are not."""
    problem, theta, task, g_exact, _ = setting()
    x = pzobo_samples(directions)[:N]
    assert max_z(x, flat(g_exact)) < Z_LEVEL
    s = x.shape[1]
    if directions == "sphere":
        unit = samples(lambda k: by_hand(problem, theta, task, k, 1e-5, 2, "sphere", u_scale=1 / np.sqrt(s)))
        assert max_z(unit, flat(g_exact)) > Z_LEVEL
    summed = samples(lambda k: by_hand(problem, theta, task, k, 1e-5, 2, directions, average=False))
    assert max_z(summed, flat(g_exact)) > Z_LEVEL


@pytest.mark.parametrize("directions", ["gaussian", "sphere"])
def test_trace_of_covariance_equals_theory(directions):
    """N_TRACE = 20000 draws, Q = 2: tr Cov within Z_LEVEL SEs of (s +- 1) ||J^T b2||^2 / Q, and not within
    Z_LEVEL SEs of the other direction kind's formula (s - 1 vs s + 1: 6 vs 8 at s = 7)."""
    problem, theta, task, g_exact, b1 = setting()
    a2 = float(jnp.sum((flat(g_exact) - flat(b1)) ** 2))
    x = pzobo_samples(directions)
    tr, se = trace_cov(x)
    want = float(theory.pzobo_trace_cov(a2, x.shape[1], 2, directions))
    other = float(theory.pzobo_trace_cov(a2, x.shape[1], 2, {"gaussian": "sphere", "sphere": "gaussian"}[directions]))
    print(f"pzobo {directions}: tr Cov measured {tr:.5g} +- {se:.2g}, theory {want:.5g}, s = {x.shape[1]}, Q = 2")
    assert abs(tr - want) < Z_LEVEL * se
    assert abs(tr - other) > Z_LEVEL * se


def test_exact_for_every_mu_where_the_path_is_affine():
    """problems.quadratic: phi_r is affine in theta, so the difference quotient is J u exactly."""
    problem = problems.quadratic(p=4, n_tasks=2, r=3)
    theta, task = problem.theta0 + 0.3, task_at(problem, 0)
    for mu in (1e-3, 1.0):
        np.testing.assert_allclose(flat(run(E.pzobo(mu, 2), problem, theta, task)[0]),
                                   flat(run(E.pzobo(1e-6, 2), problem, theta, task)[0]), rtol=1e-8)


# the three randomised estimators of issue 15 share these two properties
RANDOMISED = {"pzobo": lambda: E.pzobo(0.01, 2), "forward_gradient": lambda: E.forward_gradient(2),
              "es": lambda: E.es(0.01, 2)}


@pytest.mark.parametrize("name", list(RANDOMISED))
def test_memory_is_constant_in_r(name):
    def temp(r):
        problem, task = _nonlinear_problem(r)
        return temp_bytes(RANDOMISED[name]().estimate, problem, problem.theta0, task, KEY, ())

    small, large = temp(10), temp(1000)
    assert abs(large - small) <= 0.01 * small, (small, large)


@pytest.mark.parametrize("name", list(RANDOMISED))
def test_diverged_inner_loop_is_flagged(name):
    problem = problems.quadratic(p=4, alpha=100.0)
    _, info = run(RANDOMISED[name](), problem, problem.theta0, task_at(problem, 0))
    assert bool(info.diverged)


@pytest.mark.parametrize("params, message", [
    ({"mu": 0.0}, "mu = 0.0"), ({"mu": -1.0}, "mu = -1.0"), ({"mu": float("nan")}, "mu = nan"),
    ({"mu": float("inf")}, "mu = inf"), ({"mu": "0.1"}, "mu = '0.1'"), ({"mu": True}, "mu = True"),
    ({"n_dirs": 0}, "n_dirs = 0"), ({"n_dirs": 1.5}, "n_dirs = 1.5"), ({"n_dirs": True}, "n_dirs = True"),
    ({"directions": "unit"}, "directions = 'unit'"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(UserError, match=message):
        E.get("pzobo", **params)
