"""Adaptive UFOM (Section 4.5, eqs. 22-24) and Proposition 1 from sympy against the measured counters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory
from helpers import flat, pytree_problem
from ufom_bench import estimators as E
from ufom_bench import montecarlo
from ufom_bench.estimators.adaptive_ufom import adaptive_q
from ufom_bench.problem import task_at

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

KEY = jax.random.PRNGKey(7)


def per_task_moments(problem, theta):
    """||G_FO - G||^2 and ||G||^2 for every task of the finite set (exact, float64)."""
    d2, v2 = [], []
    for i in range(problem.num_tasks):
        g_fo, g, _ = montecarlo.pair(problem, theta, task_at(problem, i))
        d2.append(float(jnp.sum((flat(g_fo) - flat(g)) ** 2)))
        v2.append(float(jnp.sum(flat(g) ** 2)))
    return np.array(d2), np.array(v2)


def run_steps(problem, est, theta, n, key, state=None):
    """n Adaptive UFOM estimates at a fixed theta (so D^2 and V^2 are constant), tasks drawn from p(T)."""
    state = est.init(theta) if state is None else state

    def body(state, key):
        k_task, k_est = jax.random.split(key)
        g, info, new = est.estimate(problem, theta, problem.sample_task(k_task), k_est, state)
        return new, (state, new, info)

    return jax.jit(lambda s, k: jax.lax.scan(body, s, jax.random.split(k, n)))(state, key)


def test_single_task_q_equals_theory_after_first_update():
    """One task at a fixed theta: ||b_FO - b_Exact||^2 is deterministic, so (22) is exact after one update."""
    problem = pytree_problem(r=5, n_tasks=1)
    theta = problem.theta0
    d2, v2 = per_task_moments(problem, theta)
    scale = 0.01
    est = E.adaptive_ufom(q_min=0.05, d2_scale=scale)
    _, (before, _, info) = run_steps(problem, est, theta, 200, KEY)
    c_det, c_rnd = theory.costs(problem.r)
    q_star = max(float(theory.optimal_q(scale * d2[0], v2[0], c_det, c_rnd)), 0.05)
    assert 0.05 < q_star < 1  # a regime where the adaptive choice matters
    updated = np.asarray(before.k_upd) > 0
    assert updated.any() and not updated.all()
    np.testing.assert_allclose(np.asarray(info.q)[updated], q_star, rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(info.q)[~updated], 0.05)  # q_min before any update


def test_q_converges_to_theory_q_star():
    """Several tasks, fixed theta, beta = 0.995: q_k ends inside the q* range of the z = 4 bands of the
    smoothed estimates, sd(EMA) = sqrt((1 - beta) / (1 + beta)) sd(per-update sample)."""
    problem = pytree_problem(r=5, n_tasks=4)
    theta = problem.theta0
    d2_i, v2_i = per_task_moments(problem, theta)
    probs = np.asarray(problem.task_probs)
    scale, beta = 0.01, 0.995
    est = E.adaptive_ufom(beta=beta, d2_scale=scale)
    final, (_, _, info) = run_steps(problem, est, theta, 6000, KEY)
    assert int(final.k_upd) > 1500  # enough updates for the bias correction to be negligible
    shrink = np.sqrt((1 - beta) / (1 + beta))
    mean_sd = lambda x: (probs @ x, np.sqrt(probs @ (x - probs @ x) ** 2))
    (d2, d2_sd), (v2, v2_sd) = mean_sd(d2_i), mean_sd(v2_i)
    c_det, c_rnd = theory.costs(problem.r)
    q = lambda d, v: max(float(theory.optimal_q(scale * d, v, c_det, c_rnd)), 0.05)
    lo, hi = q(d2 - 4 * shrink * d2_sd, v2 + 4 * shrink * v2_sd), q(d2 + 4 * shrink * d2_sd, v2 - 4 * shrink * v2_sd)
    assert lo <= float(info.q[-1]) <= hi, (lo, float(info.q[-1]), hi, q(d2, v2))
    assert hi - lo < 0.5 * q(d2, v2)  # the band is tight enough for the check to mean something


def test_state_changes_only_when_the_exact_branch_runs():
    problem = pytree_problem(r=4)
    est = E.adaptive_ufom(q_min=0.2)
    _, (before, after, info) = run_steps(problem, est, problem.theta0, 300, KEY)
    xi = np.asarray(info.exact)
    assert xi.any() and not xi.all()
    for field in before._fields:
        b, a = np.asarray(getattr(before, field)), np.asarray(getattr(after, field))
        np.testing.assert_array_equal(a[~xi], b[~xi])
        assert np.all(a[xi] != b[xi]) if field == "k_upd" else True
    np.testing.assert_array_equal(np.asarray(after.k_upd), np.cumsum(xi))


def test_estimate_is_unbiased_given_the_state():
    """With the state frozen (q_k fixed by it), each coordinate of the mean over n (task, xi) draws is
    within |z| < 4 of E_T G."""
    problem = pytree_problem(r=5, n_tasks=4)
    theta = problem.theta0
    est = E.adaptive_ufom(d2_scale=0.01)
    state, (_, _, info) = run_steps(problem, est, theta, 100, KEY)
    q = float(adaptive_q(state, problem.r, q_min=0.05, beta=0.99, C1=1.0, C2=1.0, eps=0.0, d2_scale=0.01))
    assert 0.05 <= q < 1
    n = 20_000

    def draw(key):
        k_task, k_est = jax.random.split(key)
        g, info, _ = est.estimate(problem, theta, problem.sample_task(k_task), k_est, state)
        return flat(g), info.q

    g, qs = jax.jit(jax.vmap(draw))(jax.random.split(jax.random.PRNGKey(1), n))
    np.testing.assert_allclose(np.asarray(qs), q, rtol=1e-12)
    g = np.asarray(g)
    exact_mean = np.mean([flat(montecarlo.pair(problem, theta, task_at(problem, i))[1]) for i in range(4)], axis=0)
    z = (g.mean(0) - exact_mean) / (g.std(0, ddof=1) / np.sqrt(n))
    assert np.max(np.abs(z)) < 4, z


@pytest.mark.parametrize("r", [1, 3, 7])
def test_proposition_1_from_sympy_equals_measured_counts(r):
    problem = pytree_problem(r=r)
    task = task_at(problem, 0)
    run = jax.jit(E.ufom(0.5).estimate)
    seen = set()
    for i in range(30):
        _, info, _ = run(problem, problem.theta0, task, jax.random.PRNGKey(i), ())
        xi = int(info.exact)
        assert tuple(int(v) for v in theory.branch_calls(r, xi)) == (int(info.grad_calls), int(info.hvp_calls))
        seen.add(xi)
    assert seen == {0, 1}
    grads, hvps = theory.expected_calls(r, 0.5)
    assert (float(grads), float(hvps)) == (r + 1 + 0.5 * r * (r - 1) / 2, 0.5 * r)


@pytest.mark.parametrize(
    "params, message",
    [({"q_min": 0.0}, "q = 0.0"), ({"beta": 1.0}, "beta = 1.0"), ({"d2_scale": 0.0}, "d2_scale = 0.0"),
     ({"eps": 0.5}, "eps = 0.5"), ({"C1": -1.0}, "C1 = -1.0")],
)
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        E.adaptive_ufom(**params)
