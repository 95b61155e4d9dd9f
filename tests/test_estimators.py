"""The four estimators of the paper against each other, autodiff, finite differences and Proposition 1."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory

from helpers import flat, pytree_problem
from ufom_bench import estimators as E
from ufom_bench import montecarlo
from ufom_bench import problems
from ufom_bench.errors import UserError
from ufom_bench.memory import temp_bytes
from ufom_bench.problem import Problem, inner_path, task_at

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

KEY = jax.random.PRNGKey(0)


def unrolled_grad(problem, theta, task):
    """grad_theta L_out(theta, U_r(theta, T), T) by jax.grad through the unrolled inner loop."""
    return jax.grad(lambda th: problem.outer_loss(th, inner_path(problem, th, task), task))(theta)


def central_differences(problem, theta, task, h=1e-5):
    x0, unravel = jax.flatten_util.ravel_pytree(theta)
    f = lambda x: problem.outer_loss(unravel(x), inner_path(problem, unravel(x), task), task)
    eye = np.eye(x0.size)
    return np.array([(f(x0 + h * e) - f(x0 - h * e)) / (2 * h) for e in eye])


def rel_err(a, b):
    a, b = np.asarray(flat(a)), np.asarray(flat(b))
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def estimate(name, problem, theta, task, key=KEY, **params):
    est = E.get(name, **params)
    return jax.jit(est.estimate)(problem, theta, task, key, est.init(theta))


def test_exact_estimators_agree_with_autodiff_and_finite_differences():
    problem = pytree_problem(r=6)
    theta, task = problem.theta0, task_at(problem, 1)
    ref = unrolled_grad(problem, theta, task)
    fd = central_differences(problem, theta, task)
    assert rel_err(ref, jnp.asarray(fd)) <= 1e-8
    for name, params in [("exact", {}), ("exact_me", {}), ("ufom", {"q": 1.0})]:
        g, info, _ = estimate(name, problem, theta, task, **params)
        assert bool(info.exact) and bool(info.finite)
        assert rel_err(g, ref) <= 1e-8, name
        assert np.linalg.norm(flat(g) - fd) / np.linalg.norm(fd) <= 1e-8, name


def test_fom_is_eqs_10_11_by_hand():
    problem = pytree_problem(r=5)
    theta, task = problem.theta0, task_at(problem, 2)
    phi_r = inner_path(problem, theta, task)
    partial_theta = jax.grad(problem.outer_loss, argnums=0)(theta, phi_r, task)
    partial_phi = jax.grad(problem.outer_loss, argnums=1)(theta, phi_r, task)
    _, vjp = jax.vjp(lambda th: problem.init_inner(th, task), theta)
    by_hand = jax.tree_util.tree_map(jnp.add, partial_theta, vjp(partial_phi)[0])
    g, info, _ = estimate("fom", problem, theta, task)
    assert rel_err(g, by_hand) <= 1e-12
    assert not bool(info.exact)
    # and FOM really is biased here (the test problem has non-zero second-order terms)
    assert rel_err(g, unrolled_grad(problem, theta, task)) > 1e-2


@pytest.mark.parametrize("r", [1, 2, 5, 12])
def test_counted_calls_equal_proposition_1_per_branch(r):
    problem = pytree_problem(r=r)
    theta, task = problem.theta0, task_at(problem, 0)
    grads_fo, grads_ex = r + 1, r + 1 + r * (r - 1) // 2
    expected = {"fom": (grads_fo, 0), "exact": (r + 1, r), "exact_me": (grads_ex, r)}
    for name, (g_calls, h_calls) in expected.items():
        _, info, _ = estimate(name, problem, theta, task)
        assert (int(info.grad_calls), int(info.hvp_calls)) == (g_calls, h_calls), name
    seen = set()
    run = jax.jit(E.ufom(q=0.5).estimate)
    for i in range(40):  # both branches of UFOM
        _, info, _ = run(problem, theta, task, jax.random.PRNGKey(i), ())
        want = (grads_ex, r) if bool(info.exact) else (grads_fo, 0)
        assert (int(info.grad_calls), int(info.hvp_calls)) == want
        seen.add(bool(info.exact))
    assert seen == {True, False}
    # theory.branch_total, which the outer loops' budgets use, is the same count
    assert theory.branch_total(r, 0) == grads_fo and theory.branch_total(r, 1) == grads_ex + r


def test_ufom_mean_cost_matches_proposition_1():
    """Mean grad calls over n draws vs r + 1 + q r(r-1)/2: |z| < 4 with the Bernoulli standard error."""
    r, q, n = 8, 0.3, 4000
    problem = pytree_problem(r=r)
    est = E.ufom(q)
    run = jax.jit(jax.vmap(lambda k: est.estimate(problem, problem.theta0, task_at(problem, 0), k, ())[1]))
    info = run(jax.random.split(KEY, n))
    calls = np.asarray(info.grad_calls, float)
    expected = r + 1 + q * r * (r - 1) / 2
    se = (r * (r - 1) / 2) * np.sqrt(q * (1 - q) / n)
    assert abs(calls.mean() - expected) / se < 4
    np.testing.assert_array_equal(np.asarray(info.hvp_calls), r * np.asarray(info.exact))


@pytest.mark.parametrize("q", [0.1, 0.5])
def test_ufom_is_unbiased(q):
    """Over n (task, xi) draws each coordinate's mean minus the exact mean E_T G has |z| < 4.

    Power: the same draws with a wrong 1/(2q) factor give |z| > 4 in some coordinate, so a wrong
    correction factor fails this test.
    """
    n = 20_000
    problem = pytree_problem(r=5, n_tasks=4)
    theta = problem.theta0
    est = E.ufom(q)

    def draw(key):
        k_task, k_est = jax.random.split(key)
        task = problem.sample_task(k_task)
        g, info, _ = est.estimate(problem, theta, task, k_est, ())
        g_fo, g_ex, _ = montecarlo.pair(problem, theta, task)
        g_fo, g_ex = flat(g_fo), flat(g_ex)
        wrong = g_fo + info.exact / (2 * q) * (g_ex - g_fo)
        return flat(g), wrong, g_fo, g_ex, info.exact

    g, wrong, g_fo, g_ex, xi = jax.jit(jax.vmap(draw))(jax.random.split(KEY, n))
    exact_mean = np.mean([flat(montecarlo.pair(problem, theta, task_at(problem, i))[1]) for i in range(4)], axis=0)

    def z(samples):
        samples = np.asarray(samples)
        return (samples.mean(0) - exact_mean) / (samples.std(0, ddof=1) / np.sqrt(n))

    # the UFOM draw is the pair's combination, exactly (eqs. 12-13)
    np.testing.assert_allclose(g, g_fo + (np.asarray(xi)[:, None] / q) * (g_ex - g_fo), rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(z(g))) < 4, z(g)
    assert np.max(np.abs(z(wrong))) > 4, "the test has no power against a wrong 1/q factor"


def _nonlinear_problem(r, p=64):
    """A problem with a phi-dependent Hessian, so Algorithm 2 must keep its stored states."""
    task = {"A": jnp.eye(p) * 0.5 + 0.01, "y": jnp.ones(p)}
    return Problem(
        inner_loss=lambda th, ph, T: jnp.sum(jnp.log(jnp.cosh(T["A"] @ ph))) - ph @ th,
        outer_loss=lambda th, ph, T: 0.5 * jnp.sum((ph - T["y"]) ** 2),
        init_inner=lambda th, T: jnp.tanh(th),
        sample_task=lambda key: task,
        step_sizes=jnp.full((r,), 0.1),
        theta0=jnp.zeros(p),
    ), task


def _temp(name, r):
    problem, task = _nonlinear_problem(r)
    est = E.get(name)
    return temp_bytes(est.estimate, problem, problem.theta0, task, KEY, ())


def test_temp_bytes_constant_in_r_except_algorithm_2():
    for name in ["fom", "exact_me", "ufom"]:
        small, large = _temp(name, 10), _temp(name, 1000)
        assert abs(large - small) <= 0.01 * small, (name, small, large)
    t10, t100, t1000 = (_temp("exact", r) for r in (10, 100, 1000))
    per_step = (t1000 - t100) / 900
    assert per_step >= 64 * 4  # at least one stored phi (p = 64 floats) per inner step
    assert (t100 - t10) / 90 == pytest.approx(per_step, rel=0.01)  # linear in r


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: E.ufom(q=0.0), "q = 0.0"),
        (lambda: E.ufom(q=1.5), "q = 1.5"),
        (lambda: E.ufom(q=float("nan")), "q = nan"),
        (lambda: E.ufom(q="0.5"), "q = '0.5'"),
        (lambda: E.ufom(q=True), "q = True"),
        (lambda: E.adaptive_ufom(q_min="0.05"), "q = '0.05'"),
        (lambda: problems.quadratic(p=4, alpha="1"), "alpha = '1'"),
        (lambda: problems.quadratic(p=4, alpha=True), "alpha = True"),
        (lambda: E.get("no_such_estimator"), "no_such_estimator"),
        (lambda: pytree_problem(alphas=jnp.zeros((0,))), "r = 0"),
        (lambda: pytree_problem(alphas=jnp.array([0.1, -0.2, 0.1])), "alpha_2 = -0.2"),
        (lambda: pytree_problem(alphas=jnp.array([0.1, 0.0])), "alpha_2 = 0.0"),
        (lambda: pytree_problem(alphas=jnp.array([[0.1]])), "1-D"),
        (lambda: pytree_problem().replace(theta0={"w": jnp.array([jnp.nan]), "b": jnp.zeros(2)}), "theta0['w']"),
        (lambda: pytree_problem().replace(theta0=jnp.array([1, 2])), "floating"),
    ],
)
def test_bad_inputs_raise_clear_errors(factory, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        factory()


def test_mismatched_theta_pytree_is_named():
    problem = pytree_problem()
    bad = {"w": jnp.zeros(3)}
    with pytest.raises(ValueError, match="pytree structure"):
        estimate("fom", problem, bad, task_at(problem, 0))
    wrong_shape = {"w": jnp.zeros(4), "b": jnp.zeros((2, 2))}
    with pytest.raises(ValueError, match=r"theta\['w'\] has shape \(4,\)"):
        estimate("exact", problem, wrong_shape, task_at(problem, 0))
    integer = {"w": jnp.zeros(3, int), "b": jnp.zeros((2, 2))}
    with pytest.raises(UserError, match=r"theta\['w'\] must be a floating array, got dtype int"):
        estimate("fom", problem, integer, task_at(problem, 0))


def test_divergent_inner_loop_is_flagged():
    problem = pytree_problem(alphas=jnp.full((30,), 50.0))  # far beyond 2 / L: the inner loop blows up
    theta, task = problem.theta0, task_at(problem, 0)
    for name in ["fom", "exact", "exact_me"]:
        g, info, _ = estimate(name, problem, theta, task)
        assert not bool(info.finite), name
        assert not np.all(np.isfinite(flat(g)))


def test_counters_under_vmap_and_grad_of_the_estimate():
    problem = pytree_problem(r=4)
    tasks = problem.tasks
    est = E.exact()
    f = jax.vmap(lambda t: est.estimate(problem, problem.theta0, t, KEY, ())[1].grad_calls)
    np.testing.assert_array_equal(f(tasks), 5)
    # differentiating through an estimate (e.g. a penalty on it) keeps the counters exact integers
    def penalty(theta):
        g, info, _ = est.estimate(problem, theta, task_at(problem, 0), KEY, ())
        return jnp.sum(flat(g) ** 2), info

    (_, info), dtheta = jax.value_and_grad(penalty, has_aux=True)(problem.theta0)
    assert (int(info.grad_calls), int(info.hvp_calls)) == (5, 4)
    assert np.all(np.isfinite(flat(dtheta)))


def test_ufom_takes_a_traced_q_and_q_zero_is_fom():
    problem = pytree_problem(r=4)
    theta, task = problem.theta0, task_at(problem, 1)
    qs = jnp.array([0.0, 0.3, 1.0])
    keys = jax.random.split(KEY, 3)
    grads, infos, _ = jax.vmap(lambda q, k: E.ufom(q).estimate(problem, theta, task, k, ()))(qs, keys)
    np.testing.assert_array_equal(flat(jax.tree_util.tree_map(lambda g: g[0], grads)),
                                  flat(estimate("fom", problem, theta, task)[0]))
    assert (int(infos.grad_calls[0]), int(infos.hvp_calls[0]), bool(infos.exact[0])) == (5, 0, False)
    for i, q in ((1, 0.3), (2, 1.0)):  # the concrete-q estimator on the same key
        want, info, _ = E.ufom(q).estimate(problem, theta, task, keys[i], ())
        np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda g: g[i], grads)), flat(want), rtol=1e-12)
        assert bool(infos.exact[i]) == bool(info.exact)
    assert E.ufom(0.3).name == "ufom(q=0.3)"
