"""implicit_cg(iters) and neumann(terms) (issue 15, item 4): the implicit-function gradient at phi_r against
closed forms, their counted calls against theory.implicit, O(1) memory in r, bad parameters, and the one
not-applicable mechanism they share with Reptile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ufom_bench import theory
from helpers import flat, pytree_problem
from test_estimators import _nonlinear_problem
from ufom_bench import Problem, estimators as E, problems
from ufom_bench.errors import UserError
from ufom_bench.memory import temp_bytes
from ufom_bench.problem import inner_path, task_at
from ufom_bench.problems.fewshot import sinusoid

pytestmark = pytest.mark.usefixtures("x64")
KEY = jax.random.PRNGKey(0)


def quadratic_ift(problem, theta, task):
    """lam (theta - t) + B^T A^{-1} (phi_r - y): G_IFT at phi_r in closed form ((d2 L_in/dtheta dphi)^T = -B^T)."""
    phi = problems.quadratic_inner_path(problem, theta, task)
    return task.lam * (theta - task.t) + task.B.T @ jnp.linalg.solve(task.A, phi - task.y)


@pytest.fixture(scope="module")
def quad():
    with jax.enable_x64(True):
        # alpha = 1 and cond = 10: the Neumann series contracts by |1 - alpha lambda| <= 0.9 per term.
        return problems.quadratic(p=6, n_tasks=3, r=5, alpha=1.0, seed=3), jnp.linspace(-0.7, 0.9, 6)


@pytest.mark.parametrize("make, tol", [(lambda: E.implicit_cg(6), 1e-10), (lambda: E.implicit_cg(25), 1e-10),
                                       (lambda: E.neumann(400), 1e-8)])
def test_quadratic_closed_form_and_counts(quad, make, tol):
    problem, theta = quad
    est = make()
    tasks = problem.tasks
    g, info, _ = jax.jit(jax.vmap(est.estimate, in_axes=(None, None, 0, None, None)))(problem, theta, tasks, KEY, ())
    want = jax.vmap(lambda t: quadratic_ift(problem, theta, t))(tasks)
    np.testing.assert_allclose(g, want, rtol=0, atol=tol * float(jnp.max(jnp.abs(want))))
    calls = (theory.implicit_cg_calls(problem.r, 6 if "iters=6" in est.name else 25) if "cg" in est.name
             else theory.neumann_calls(problem.r, 400))
    assert np.all(np.asarray(info.grad_calls) == calls[0]) and np.all(np.asarray(info.hvp_calls) == calls[1])
    assert not np.any(info.exact) and np.all(info.finite) and not np.any(info.diverged)


def test_cg_with_fewer_iterations_than_dim_is_not_the_solve(quad):
    """The wrong variant: 2 CG iterations on a 6-dimensional H is far from G_IFT (the check above can fail)."""
    problem, theta = quad
    task = task_at(problem, 0)
    g = E.implicit_cg(2).estimate(problem, theta, task, KEY, ())[0]
    assert float(jnp.linalg.norm(g - quadratic_ift(problem, theta, task))) > 1e-3


def convex_pytree_problem(r=4):
    """theta = {'w': (3,), 'b': ()}, phi = (3,): L_in strongly convex in phi (A PD + softplus + exp(b) ||phi||^2),
    theta in L_in (sin w . phi, exp(b)) and in L_out (0.3 ||w||^2); V = tanh(w) depends on theta (dropped by G_IFT)."""
    A = jnp.array([[2.0, 0.3, 0.0], [0.3, 1.5, 0.2], [0.0, 0.2, 1.0]])
    task = {"y": jnp.array([0.5, -1.0, 0.3])}

    def inner_loss(theta, phi, task):
        return (0.5 * phi @ A @ phi + jnp.sum(jax.nn.softplus(phi)) - jnp.sin(theta["w"]) @ phi
                + 0.1 * jnp.exp(theta["b"]) * jnp.sum(phi**2))

    return Problem(
        inner_loss=inner_loss,
        outer_loss=lambda th, ph, t: jnp.sum((ph - t["y"]) ** 2) + 0.3 * jnp.sum(th["w"] ** 2),
        init_inner=lambda th, t: jnp.tanh(th["w"]),
        sample_task=lambda key: task,
        step_sizes=jnp.linspace(0.2, 0.3, r),
        theta0={"w": jnp.array([0.2, -0.4, 0.6]), "b": jnp.array(0.3)},
        name="convex_pytree",
    ), task


def by_hand(problem, theta, task):
    """G_IFT from dense derivatives: d L_out/dtheta - J_mixed^T H^{-1} dL_out/dphi at phi_r (numpy solve)."""
    phi = inner_path(problem, theta, task)
    flat_theta, unravel = ravel_pytree(theta)
    g_in = lambda th, ph: jax.grad(problem.inner_loss, argnums=1)(unravel(th), ph, task)
    H = jax.jacobian(g_in, argnums=1)(flat_theta, phi)  # d2 L_in / dphi2  [p, p]
    J = jax.jacobian(g_in, argnums=0)(flat_theta, phi)  # d/dtheta of dL_in/dphi  [p, s]
    b1, b2 = jax.grad(lambda th, ph: problem.outer_loss(unravel(th), ph, task), argnums=(0, 1))(flat_theta, phi)
    return np.asarray(b1) - np.asarray(J).T @ np.linalg.solve(np.asarray(H), np.asarray(b2)), np.asarray(H)


def test_pytree_theta_nonquadratic_inner_equals_definition():
    problem, task = convex_pytree_problem()
    theta = problem.theta0
    want, H = by_hand(problem, theta, task)
    assert np.all(np.linalg.eigvalsh(H) > 0.5)  # strongly convex at phi_r
    for est, tol in [(E.implicit_cg(3), 1e-10), (E.implicit_cg(10), 1e-10), (E.neumann(300), 1e-8)]:
        g, info, _ = jax.jit(est.estimate)(problem, theta, task, KEY, ())
        np.testing.assert_allclose(flat(g), want, rtol=0, atol=tol * np.max(np.abs(want)), err_msg=est.name)
    # terms = 1: v = alpha_r b2, so G = b1 - alpha_r (d2 L_in/dtheta dphi)^T b2 (the series' first term)
    phi = inner_path(problem, theta, task)
    b1, b2 = jax.grad(problem.outer_loss, argnums=(0, 1))(theta, phi, task)
    _, vjp = jax.vjp(lambda th: jax.grad(problem.inner_loss, argnums=1)(th, phi, task), theta)
    alpha = problem.step_sizes[-1]
    one = jax.tree_util.tree_map(lambda a, h: a - alpha * h, b1, vjp(b2)[0])
    g1, info1, _ = E.neumann(1).estimate(problem, theta, task, KEY, ())
    np.testing.assert_allclose(flat(g1), flat(one), rtol=1e-12, atol=1e-14)
    assert (int(info1.grad_calls), int(info1.hvp_calls)) == tuple(theory.neumann_calls(problem.r, 1))


def test_bias_vanishes_with_r_on_the_quadratic():
    """G_IFT drops V's term and targets phi*: on the quadratic both gaps shrink like 0.9^r, so at r = 300 it
    equals the exact ABLO gradient (Algorithm 2), while at r = 5 it does not (the bias is real)."""
    theta = jnp.linspace(-0.7, 0.9, 6)
    for r, close in [(300, True), (5, False)]:
        problem = problems.quadratic(p=6, n_tasks=3, r=r, alpha=1.0, seed=3)
        task = task_at(problem, 1)
        g = E.implicit_cg(12).estimate(problem, theta, task, KEY, ())[0]
        exact = E.exact().estimate(problem, theta, task, KEY, ())[0]
        gap = float(jnp.linalg.norm(g - exact) / jnp.linalg.norm(exact))
        assert (gap < 1e-8) if close else (gap > 1e-2), (r, gap)


@pytest.mark.parametrize("name", ["implicit_cg", "neumann"])
def test_memory_is_constant_in_r(name):
    def temp(r):
        problem, task = _nonlinear_problem(r)  # theta enters L_in (- phi . theta)
        return temp_bytes(E.get(name).estimate, problem, problem.theta0, task, KEY, ())

    small, large = temp(10), temp(1000)
    assert abs(large - small) <= 0.01 * small, (name, small, large)


@pytest.mark.parametrize("factory, message", [
    (lambda: E.implicit_cg(0), "iters = 0"), (lambda: E.implicit_cg(-1), "iters = -1"),
    (lambda: E.implicit_cg(2.5), "iters = 2.5"), (lambda: E.implicit_cg(True), "iters = True"),
    (lambda: E.get("implicit_cg", iters="3"), "iters = '3'"),
    (lambda: E.neumann(0), "terms = 0"), (lambda: E.neumann(1.0), "terms = 1.0"), (lambda: E.neumann(None), "terms = None"),
])
def test_bad_parameters_are_named(factory, message):
    with pytest.raises(UserError, match=message):
        factory()


# ------------------------------------------------------------------------------------------ applicability


def test_not_applicable_where_theta_enters_only_through_v():
    """The counterexample and MAML (sinusoid) read theta only in V: one mechanism says so, before running
    (estimators.not_applicable) and when running (NotApplicable, a UserError)."""
    counter = problems.counterexample(r=3)
    maml = sinusoid(k=5, r=2)
    for problem in (counter, maml):
        task = problem.sample_task(KEY)
        for name in ("implicit_cg", "neumann"):
            reason = E.not_applicable(name, problem)
            assert reason is not None and "identically 0" in reason and problem.name in reason
            with pytest.raises(E.NotApplicable, match="only through V"):
                E.get(name).estimate(problem, problem.theta0, task, KEY, ())
            with pytest.raises(UserError):  # NotApplicable is a UserError: the CLI prints it as one line
                jax.jit(E.get(name).estimate)(problem, problem.theta0, task, KEY, ())
    quad = problems.quadratic(p=3, n_tasks=2, r=2)
    hyper, _ = convex_pytree_problem()
    for problem in (quad, hyper, _nonlinear_problem(3)[0]):
        assert E.not_applicable("implicit_cg", problem) is None and E.not_applicable("neumann", problem) is None


def test_reptile_uses_the_same_mechanism():
    """Reptile where it was refused (phi not in theta's space) and where V(theta, T) = E theta + v != theta."""
    ptree = pytree_problem()
    quad = problems.quadratic(p=3, n_tasks=2, r=2)
    for problem in (ptree, quad):
        reason = E.not_applicable("reptile", problem)
        assert reason is not None and reason.startswith("reptile needs V(theta, T) = theta")
        with pytest.raises(E.NotApplicable, match="reptile needs V"):
            E.reptile().estimate(problem, problem.theta0, problem.sample_task(KEY), KEY, ())
    for problem in (problems.counterexample(r=3), sinusoid(k=5, r=2)):
        assert E.not_applicable("reptile", problem) is None
    for name in ("exact", "fom", "ufom", "truncated"):  # the others carry no rule
        assert E.not_applicable(name, quad) is None and E.get(name).applicability is None


def test_the_rule_sees_through_jit_and_is_conservative():
    """theta read inside a jitted L_in counts; theta in L_in's value but not in dL_in/dphi does not (the mixed
    derivative is 0); 0 * theta on a data path to dL_in/dphi does (the rule reads programs, not values)."""
    base, _ = convex_pytree_problem()
    no_theta = lambda th, ph, t: jnp.sum(ph**2) + 0.0 * jnp.sum(jnp.zeros(3))
    zero_times_theta = lambda th, ph, t: jnp.sum(ph**2) + 0.0 * jnp.sum(th["w"]) * jnp.sum(ph)
    frozen = base.replace(outer_loss=lambda th, ph, t: jnp.sum(ph**2))
    assert E.not_applicable("implicit_cg", frozen.replace(inner_loss=jax.jit(base.inner_loss))) is None
    assert E.not_applicable("implicit_cg", frozen.replace(inner_loss=no_theta)) is not None
    # theta reaches L_in's value, not dL_in/dphi: the mixed derivative is 0, so still not applicable
    additive = lambda th, ph, t: jnp.sum(ph**2) + jnp.sum(jnp.sin(th["w"]))
    assert E.not_applicable("implicit_cg", frozen.replace(inner_loss=additive)) is not None
    # 0 * theta is a data path: applicable (the rule is structural), and the estimate is then 0
    assert E.not_applicable("implicit_cg", frozen.replace(inner_loss=zero_times_theta)) is None
