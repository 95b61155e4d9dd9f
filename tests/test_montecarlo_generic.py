"""montecarlo.estimator_moments (issue 15, "Monte Carlo for any estimator"): bias, the variance split, MSE
and mean counted calls of any registered estimator against the exact G, on the quadratic's closed forms.

Statistical checks use |estimate - truth| < Z * SE with Z = 4 (a false alarm has probability about 6e-5 per
comparison under the normal approximation); each is paired with a wrong value that the same check rejects.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory
from ufom_bench import estimators as E, montecarlo as mc, problems
from ufom_bench.errors import UserError

pytestmark = pytest.mark.usefixtures("x64")
Z = 4.0
KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def quad():
    """The quadratic of tests/test_montecarlo.py (6 tasks, r = 5), its per-task closed forms, and D^2(theta)."""
    with jax.enable_x64(True):
        problem = problems.quadratic(p=4, n_tasks=6, r=5, alpha=0.5, seed=1)
        theta = jnp.array([0.3, -0.5, 0.8, 0.1])
        fo = np.asarray(jax.vmap(lambda t: problems.quadratic_fo_gradient(problem, theta, t))(problem.tasks))
        ex = np.asarray(jax.vmap(lambda t: problems.quadratic_exact_gradient(problem, theta, t))(problem.tasks))
        d2 = float(problems.quadratic_bias_variance(problem, theta).d2)
        return problem, theta, fo, ex, d2


def test_exact_has_no_bias_and_no_own_variance(quad):
    problem, theta, fo, ex, _ = quad
    m = mc.estimator_moments(problem, "exact", theta, n_keys=2, key=KEY)
    w = np.asarray(problem.task_probs)
    assert m.method == "exact" and m.n == 6 and m.n_keys == 2 and m.n_diverged == 0
    np.testing.assert_allclose(m.bias, 0, atol=1e-12)
    assert m.bias2 == pytest.approx(0, abs=1e-20) and m.mse == pytest.approx(0, abs=1e-20)
    assert m.var_est == 0 and m.var_est_se == 0 and m.bias2_se == 0
    np.testing.assert_allclose(m.meta_grad, w @ ex, rtol=1e-10)
    np.testing.assert_allclose(m.var_task, w @ np.sum((ex - w @ ex) ** 2, 1), rtol=1e-10)  # tr Cov_T(G)
    assert (m.grad_calls, m.hvp_calls) == pytest.approx((problem.r + 1, problem.r), rel=1e-12)


def test_fom_bias_is_the_closed_form(quad):
    problem, theta, fo, ex, d2 = quad
    w = np.asarray(problem.task_probs)
    m = mc.estimator_moments(problem, "fom", theta, n_keys=2, key=KEY)
    bias = w @ (fo - ex)
    np.testing.assert_allclose(m.bias, bias, rtol=1e-10)
    np.testing.assert_allclose(m.bias2, bias @ bias, rtol=1e-10)
    np.testing.assert_allclose(m.mse, d2, rtol=1e-10)  # E_T ||G_FO - G||^2 = D^2(theta) (eq. 14)
    np.testing.assert_allclose(m.var_task, w @ np.sum((fo - w @ fo) ** 2, 1), rtol=1e-10)
    assert m.var_est == 0 and np.all(m.bias_se == 0)
    grads, hvps = theory.branch_calls(problem.r, 0)
    assert (m.grad_calls, m.hvp_calls) == pytest.approx((grads, hvps), rel=1e-12)
    # sampled mode: 400 task draws; the exact bias lies within Z SEs per coordinate, a zero bias does not
    s = mc.estimator_moments(problem, "fom", theta, n_tasks=400, key=KEY, method="sampled")
    assert s.method == "sampled" and s.n == 400
    assert np.all(np.abs(s.bias - bias) < Z * s.bias_se), (s.bias, bias, s.bias_se)
    assert abs(s.bias2 - bias @ bias) < Z * s.bias2_se
    assert np.max(np.abs(s.bias) / s.bias_se) > Z  # the wrong variant (FOM unbiased) is rejected


def test_ufom_own_variance_is_lemma1_per_task(quad):
    """UFOM(q): E_T Var_xi = (1/q - 1) D^2(theta) (theory.ufom_xi_variance), unbiased, and Proposition 1's mean
    cost; exact over the 6 tasks with K = 1000 keys each (SEs from xi alone)."""
    problem, theta, fo, ex, d2 = quad
    q = 0.3
    samples = mc.estimator_samples(problem, E.ufom(q), theta, n_keys=1000, key=KEY)
    m = mc.estimator_moments_of(samples)
    want = float(theory.ufom_xi_variance(d2, q))
    assert abs(m.var_est - want) < Z * m.var_est_se, (m.var_est, want, m.var_est_se)
    wrong = float(theory.ufom_xi_variance(d2, q)) + d2  # (1/q) D^2: the variance around 0 instead of around G
    assert abs(m.var_est - wrong) > Z * m.var_est_se
    assert abs(m.bias2) < Z * m.bias2_se and np.all(np.abs(m.bias) < Z * m.bias_se)
    assert abs(m.mse - want) < Z * m.mse_se  # unbiased per task: MSE = the own variance
    w = np.asarray(problem.task_probs)
    assert abs(m.var_task - w @ np.sum((ex - w @ ex) ** 2, 1)) < Z * m.var_task_se  # m_T = G per task
    grads, hvps = theory.expected_calls(problem.r, q)
    assert abs(m.grad_calls - grads) < Z * m.grad_calls_se and abs(m.hvp_calls - hvps) < Z * m.hvp_calls_se
    # every single estimate cost exactly one of Algorithm 4's two branches
    branches = {tuple(theory.branch_calls(problem.r, xi)) for xi in (0, 1)}
    pairs = set(zip(np.asarray(samples.grad_calls).ravel().tolist(), np.asarray(samples.hvp_calls).ravel().tolist()))
    assert pairs <= branches and len(pairs) == 2


def test_implicit_bias_is_the_closed_form(quad):
    problem, theta, fo, ex, _ = quad
    w = np.asarray(problem.task_probs)

    def ift(t):
        phi = problems.quadratic_inner_path(problem, theta, t)
        return t.lam * (theta - t.t) + t.B.T @ jnp.linalg.solve(t.A, phi - t.y)

    g_ift = np.asarray(jax.vmap(ift)(problem.tasks))
    m = mc.estimator_moments(problem, E.implicit_cg(4), theta, n_keys=2, key=KEY)  # p = 4: CG solves exactly
    np.testing.assert_allclose(m.bias, w @ (g_ift - ex), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.mse, w @ np.sum((g_ift - ex) ** 2, 1), rtol=1e-9)
    assert (m.grad_calls, m.hvp_calls) == pytest.approx(tuple(theory.implicit_cg_calls(problem.r, 4)), rel=1e-12)


def test_results_do_not_depend_on_chunking(quad):
    """The same keys per (task, key) whatever the chunk (1 task row per chunk vs all 6): the same coins."""
    problem, theta, *_ = quad
    a = mc.estimator_samples(problem, E.ufom(0.5), theta, n_keys=3, key=KEY, chunk_size=3)
    b = mc.estimator_samples(problem, E.ufom(0.5), theta, n_keys=3, key=KEY, chunk_size=256)
    np.testing.assert_allclose(a.est, b.est, rtol=1e-12, atol=1e-14)  # other batch shapes: rounding only
    np.testing.assert_array_equal(a.grad_calls, b.grad_calls)


def test_refusals(quad):
    problem, theta, *_ = quad
    with pytest.raises(E.NotApplicable, match="reptile needs V"):
        mc.estimator_moments(problem, "reptile", theta, key=KEY)
    counter = problems.counterexample(r=3)
    with pytest.raises(E.NotApplicable, match="identically 0"):
        mc.estimator_moments(counter, "neumann", key=KEY)
    with pytest.raises(UserError, match="n_keys"):
        mc.estimator_moments(problem, "fom", theta, n_keys=1, key=KEY)
    with pytest.raises(UserError, match="PRNG key"):
        mc.estimator_moments(problem, "fom", theta)
    with pytest.raises(UserError, match="n_tasks"):
        mc.estimator_moments(problem, "fom", theta, key=KEY, method="sampled")
    with pytest.raises(UserError, match="unknown estimator"):
        mc.estimator_moments(problem, "no_such", theta, key=KEY)
