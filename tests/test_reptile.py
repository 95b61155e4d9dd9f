"""Reptile (issue 7, item 3): the direction theta - phi_r, its counted calls, the V = theta requirement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from helpers import pytree_problem
from ufom_bench.data.fewshot import TaskSampler
from ufom_bench.estimators.reptile import reptile
from ufom_bench.problems.fewshot import fewshot, sinusoid

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64


def _by_hand(problem, theta, task):
    phi = theta
    for alpha in np.asarray(problem.step_sizes):
        g = jax.grad(problem.inner_loss, argnums=1)(theta, phi, task)
        phi = jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, g)
    return jax.tree_util.tree_map(jnp.subtract, theta, phi)


@pytest.mark.parametrize("make", [
    lambda: sinusoid(k=5, r=4, alpha=[0.01, 0.02, 0.03, 0.02]),
    lambda: fewshot(TaskSampler.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)),
                    m=2, k=1, r=3, alpha=0.4, filters=2),
])
def test_direction_and_counts(make):
    problem = make()
    task = problem.sample_task(jax.random.PRNGKey(1))
    theta = problem.theta0
    g, info, state = jax.jit(reptile().estimate)(problem, theta, task, jax.random.PRNGKey(0), ())
    np.testing.assert_allclose(ravel_pytree(g)[0], ravel_pytree(_by_hand(problem, theta, task))[0],
                               rtol=1e-10, atol=1e-12)
    assert (int(info.grad_calls), int(info.hvp_calls)) == (problem.r, 0)  # no outer gradient: r, not r + 1
    assert not bool(info.exact) and bool(info.finite) and state == ()
    # scaled by sum(alpha): the alpha-weighted mean inner gradient
    gs, _, _ = reptile("sum_alpha").estimate(problem, theta, task, jax.random.PRNGKey(0), ())
    np.testing.assert_allclose(ravel_pytree(gs)[0], ravel_pytree(g)[0] / float(jnp.sum(problem.step_sizes)),
                               rtol=1e-10, atol=1e-12)


def test_outer_sgd_step_is_reptile_update():
    problem = sinusoid(k=5, r=2)
    task = problem.sample_task(jax.random.PRNGKey(2))
    theta, eps = problem.theta0, 0.3
    g, _, _ = reptile().estimate(problem, theta, task, None, ())
    phi = jax.tree_util.tree_map(jnp.subtract, theta, g)  # phi_r
    stepped = jax.tree_util.tree_map(lambda t, d: t - eps * d, theta, g)
    want = jax.tree_util.tree_map(lambda t, p: t + eps * (p - t), theta, phi)
    np.testing.assert_allclose(ravel_pytree(stepped)[0], ravel_pytree(want)[0], rtol=1e-12)


def test_r1_scaled_is_inner_gradient_at_theta():
    problem = sinusoid(k=5, r=1, alpha=0.05)
    task = problem.sample_task(jax.random.PRNGKey(3))
    g, _, _ = reptile("sum_alpha").estimate(problem, problem.theta0, task, None, ())
    want = jax.grad(problem.inner_loss, argnums=1)(problem.theta0, problem.theta0, task)
    np.testing.assert_allclose(ravel_pytree(g)[0], ravel_pytree(want)[0], rtol=1e-10, atol=1e-12)


def test_bad_structure_raises():
    problem = pytree_problem()  # phi = {'u', 'm'}, theta = {'w', 'b'}
    task = problem.sample_task(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="V\\(theta, T\\) = theta"):
        reptile().estimate(problem, problem.theta0, task, None, ())
    # same structure, different shape
    bad = problem.replace(init_inner=lambda theta, task: {"w": theta["w"][:2], "b": theta["b"]},
                          inner_loss=lambda th, ph, t: jnp.sum(ph["w"] ** 2))
    with pytest.raises(ValueError, match="reptile needs"):
        reptile().estimate(bad, problem.theta0, task, None, ())
    with pytest.raises(ValueError, match="scale"):
        reptile("mean")
