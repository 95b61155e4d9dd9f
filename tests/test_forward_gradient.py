"""forward_gradient(n_dirs), (FG)^2U: its definition (JVPs of the unrolled objective), counts = theory, unbiased
with the covariance trace (s + 1) ||G||^2 / Q (|z| < Z_LEVEL, wrong scales rejected), O(1) memory in r."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory
from helpers import flat, pytree_problem
from test_pzobo import N, N_TRACE, Z_LEVEL, max_z, run, samples, setting, trace_cov
from ufom_bench import estimators as E
from ufom_bench.errors import UserError
from ufom_bench.estimators.pzobo import direction
from ufom_bench.problem import inner_path, task_at

pytestmark = pytest.mark.usefixtures("x64")

KEY = jax.random.PRNGKey(0)


def by_hand(problem, theta, task, key, n_dirs, v_scale=1.0, average=True):
    """(1/Q) sum_j (dM_T/dtheta . v_j) v_j with the directional derivative by jax.jvp of the unrolled objective
    (inner_path); ``v_scale`` and ``average`` = False give the wrong variants."""
    m = lambda th: problem.outer_loss(th, inner_path(problem, th, task), task)
    out = 0.0
    for j in range(n_dirs):
        v = jax.tree_util.tree_map(lambda x: v_scale * x, direction(jax.random.fold_in(key, j), theta))
        out = out + jax.jvp(m, (theta,), (v,))[1] * flat(v) / (n_dirs if average else 1)
    return out


@pytest.mark.parametrize("n_dirs", [1, 3])
def test_forward_gradient_is_its_definition(n_dirs):
    problem, theta, task, g_exact, _ = setting()
    g, info = run(E.forward_gradient(n_dirs), problem, theta, task)
    np.testing.assert_allclose(flat(g), jax.jit(lambda k: by_hand(problem, theta, task, k, n_dirs))(KEY), rtol=1e-12)
    vs = [flat(direction(jax.random.fold_in(KEY, j), theta)) for j in range(n_dirs)]
    np.testing.assert_allclose(flat(g), sum(v * jnp.dot(v, flat(g_exact)) for v in vs) / n_dirs, rtol=1e-10)
    assert bool(info.finite) and not bool(info.diverged) and not bool(info.exact)


@pytest.mark.parametrize("r, n_dirs", [(1, 1), (6, 5)])
def test_counted_calls_equal_theory(r, n_dirs):
    problem = pytree_problem(r=r)
    _, info = run(E.forward_gradient(n_dirs), problem, problem.theta0, task_at(problem, 0))
    grads, hvps = theory.zeroth_order_calls("forward_gradient", r, n_dirs)
    assert (int(info.grad_calls), int(info.hvp_calls)) == (int(grads), int(hvps)) == (n_dirs, n_dirs * r)


@functools.lru_cache(maxsize=None)
def fg_samples():
    problem, theta, task, _, _ = setting()
    est = E.forward_gradient(2)
    return samples(lambda k: est.estimate(problem, theta, task, k, ())[0], n=N_TRACE)


def test_unbiased_and_wrong_scales_fail():
    """N = 4000 draws, Q = 2: the mean is within Z_LEVEL SEs of the exact gradient; unit-norm directions
    (v / sqrt(s)) and a sum instead of the mean are not."""
    problem, theta, task, g_exact, _ = setting()
    x = fg_samples()[:N]
    assert max_z(x, flat(g_exact)) < Z_LEVEL
    s = x.shape[1]
    unit = samples(lambda k: by_hand(problem, theta, task, k, 2, v_scale=1 / np.sqrt(s)))
    summed = samples(lambda k: by_hand(problem, theta, task, k, 2, average=False))
    assert max_z(unit, flat(g_exact)) > Z_LEVEL and max_z(summed, flat(g_exact)) > Z_LEVEL


def test_trace_of_covariance_equals_theory():
    """N_TRACE = 20000 draws, Q = 2: tr Cov within Z_LEVEL SEs of (s + 1) ||G||^2 / Q, not of (s - 1) ||G||^2 / Q."""
    _, _, _, g_exact, _ = setting()
    x = fg_samples()
    tr, se = trace_cov(x)
    g2, s = float(jnp.sum(flat(g_exact) ** 2)), x.shape[1]
    want = float(theory.forward_gradient_trace_cov(g2, s, 2))
    print(f"forward_gradient: tr Cov measured {tr:.5g} +- {se:.2g}, theory {want:.5g}, s = {s}, Q = 2")
    assert abs(tr - want) < Z_LEVEL * se
    assert abs(tr - float(theory.direction_trace_cov(g2, s, 2, "sphere"))) > Z_LEVEL * se


@pytest.mark.parametrize("n_dirs, message", [(0, "n_dirs = 0"), (2.0, "n_dirs = 2.0"), (True, "n_dirs = True")])
def test_bad_parameters_are_named(n_dirs, message):
    with pytest.raises(UserError, match=message):
        E.get("forward_gradient", n_dirs=n_dirs)
