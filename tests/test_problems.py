"""The synthetic problems: the piecewise loss, the Theorem 2 counterexample, the quadratic and closed forms.

Run in float64 (conftest.py). Closed forms are checked against autodiff through `ufom_bench.problem`.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import problems as P
from ufom_bench.problem import FROM_TASKS, inner_path, meta_gradient, meta_objective, task_at

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64


def _rows(problem):
    return [task_at(problem, i) for i in range(problem.num_tasks)]


def _autodiff_exact(problem, theta, task):
    """grad_theta L_out(theta, U^(r)(theta, T), T) by reverse mode through the unrolled inner GD."""
    return jax.grad(lambda th: problem.outer_loss(th, inner_path(problem, th, task), task))(theta)


def _autodiff_fo(problem, theta, task):
    """Eqs. (10-11) by autodiff: dL_out/dtheta + (dV/dtheta)^T dL_out/dphi at phi_r (phi_r held fixed)."""
    phi = inner_path(problem, theta, task)
    d_theta, d_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(theta, phi, task)
    _, vjp = jax.vjp(lambda th: problem.init_inner(th, task), theta)
    return d_theta + vjp(d_phi)[0]


@jax.jit
def _expected_fo(problem, theta):
    """E_T G_FO(theta, T) over the finite task set, by autodiff."""
    return problem.task_probs @ jax.vmap(lambda t: _autodiff_fo(problem, theta, t))(problem.tasks)


_meta_grad = jax.jit(meta_gradient)


def _grid(fn, problem, thetas):
    """fn(problem, theta, task) for every theta (rows) and every task (columns), jitted once."""
    per_task = jax.vmap(fn, in_axes=(None, None, 0))
    return jax.jit(jax.vmap(per_task, in_axes=(None, 0, None)))(problem, thetas, problem.tasks)


# ---------------------------------------------------------------------------------------------------------
# piecewise_loss


def _notes_f(phi, a, b, A):
    """NOTES.md's three pieces, literally, in numpy."""
    z = np.abs(phi - b / a)
    return np.where(
        z <= A,
        a * z**2 / 2,
        np.where(
            z <= A + 1,
            -a * (z - A) ** 3 / 6 + a * (z - A) ** 2 / 2 + a * A * z - a * A**2 / 2,
            (a / 2 + a * A) * z - a / 6 - a * A**2 / 2 - a * A / 2,
        ),
    )


A_B_A = [(0.5, 0.0, 3.0), (1.5, 17.4, 12.6), (2.0, -3.0, 0.25)]


@pytest.mark.parametrize("a,b,A", A_B_A)
def test_piecewise_loss_is_notes_polynomial(a, b, A):
    c = b / a
    phi = c + np.linspace(-(A + 4), A + 4, 2001)
    np.testing.assert_allclose(P.piecewise_loss(jnp.asarray(phi), a, b, A), _notes_f(phi, a, b, A), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("a,b,A", A_B_A)
def test_piecewise_c2_at_knots(a, b, A):
    """f, f', f'' (by autodiff) are continuous at z = A and z = A + 1 on both sides of c.

    Across a knot at distance eps: |f jump| <= 2 eps max|f'|, |f' jump| <= 2 eps a, |f'' jump| <= 2 eps a
    (f'' is a-Lipschitz); a missing C^k would show an O(1) jump instead.
    """
    f = jax.jit(lambda x: P.piecewise_loss(x, a, b, A))
    df, d2f = jax.jit(jax.grad(f)), jax.jit(jax.grad(jax.grad(f)))
    c, eps = b / a, 1e-7
    for knot in (c + A, c + A + 1, c - A, c - A - 1):
        lo, hi = jnp.asarray(knot - eps), jnp.asarray(knot + eps)
        assert abs(f(hi) - f(lo)) <= 2 * eps * a * (A + 0.5) * (1 + 1e-6)
        assert abs(df(hi) - df(lo)) <= 2 * eps * a * (1 + 1e-6)
        assert abs(d2f(hi) - d2f(lo)) <= 2 * eps * a * (1 + 1e-6) + 1e-12
        # at the knot itself autodiff agrees with the closed forms
        k = jnp.asarray(knot)
        np.testing.assert_allclose(df(k), P.piecewise_grad(k, a, b, A), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d2f(k), P.piecewise_hess(k, a, b, A), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("a,b,A", A_B_A)
def test_piecewise_derivatives_exact_finite_and_bounded(a, b, A):
    c = b / a
    special = c + np.array([0.0, A, -A, A + 1, -A - 1, A + 0.5, -(A + 0.5), 1e6, -1e6, 1e15, -1e15])
    phi = jnp.asarray(np.concatenate([c + np.linspace(-(A + 3), A + 3, 1001), special]))
    f = lambda x: P.piecewise_loss(x, a, b, A)  # noqa: E731
    g = jax.jit(jax.vmap(jax.grad(f)))(phi)
    h = jax.jit(jax.vmap(jax.hessian(f)))(phi)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    np.testing.assert_allclose(g, P.piecewise_grad(phi, a, b, A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, P.piecewise_hess(phi, a, b, A), rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(g)) <= a * (A + 0.5) * (1 + 1e-12)
    assert np.min(h) >= 0 and np.max(h) <= a * (1 + 1e-12)
    # quadratic zone: f' = a phi - b; tails: f' = +-a (A + 1/2), f'' = 0
    assert float(g[1001]) == 0.0 and float(h[1001]) == a  # phi = c exactly
    np.testing.assert_allclose(g[-4:], a * (A + 0.5) * np.array([1, -1, 1, -1]), rtol=1e-12)
    np.testing.assert_array_equal(h[-4:], 0.0)
    # f'' is a-Lipschitz on a fine grid
    x = c + np.linspace(-(A + 2), A + 2, 20001)
    hx = np.asarray(P.piecewise_hess(jnp.asarray(x), a, b, A))
    assert np.max(np.abs(np.diff(hx)) / np.diff(x)) <= a * (1 + 1e-6)


# ---------------------------------------------------------------------------------------------------------
# The Theorem 2 counterexample


@pytest.mark.parametrize(
    "kw",
    [{}, {"D": 1.0}, {"D": 1e-3, "r": 3, "alpha": 0.3}, {"b1": 2.0}, {"a": (2.0, 0.7), "D": 0.5, "alpha": 0.2}],
)
def test_counterexample_gap_is_sqrt_2d(kw):
    D = kw.get("D", 0.06)
    problem = P.counterexample(**kw)
    pts = P.counterexample_points(problem)
    a, b = np.asarray(problem.tasks.a), np.asarray(problem.tasks.b)
    p = (1 - problem.step_sizes[0] * a) ** problem.r
    assert pts.fom_in_quadratic_zone
    # the closed form: sum_i a_i p_i (theta - b_i / a_i) = 0
    np.testing.assert_allclose(pts.fom_fixed_point, np.sum(p * b) / np.sum(a * p), rtol=1e-14)
    theta_fo = jnp.asarray(pts.fom_fixed_point)
    # ... is where the expected FOM gradient (eqs. 10-11 by autodiff) vanishes
    assert abs(float(_expected_fo(problem, theta_fo))) < 1e-12 * (1 + np.max(np.abs(b)))
    # ... and |dM_r/dtheta| there is sqrt(2D) (autodiff through inner GD, exact over the two tasks)
    g = float(_meta_grad(problem, theta_fo))
    assert abs(abs(g) - np.sqrt(2 * D)) <= 1e-8 * np.sqrt(2 * D), (g, np.sqrt(2 * D))
    assert abs(abs(pts.meta_grad_at_fom) - np.sqrt(2 * D)) <= 1e-8 * np.sqrt(2 * D)


@pytest.mark.parametrize("kw", [{}, {"D": 1.0, "b1": -3.0}])
def test_counterexample_stationary_point(kw):
    problem = P.counterexample(**kw)
    pts = P.counterexample_points(problem)
    assert abs(float(_meta_grad(problem, jnp.asarray(pts.stationary_point)))) < 1e-8
    # in the quadratic zone dM_r/dtheta = 1/2 sum a_i p_i^2 (theta - c_i): closed-form root
    a, b = np.asarray(problem.tasks.a), np.asarray(problem.tasks.b)
    p = (1 - problem.step_sizes[0] * a) ** problem.r
    np.testing.assert_allclose(pts.stationary_point, np.sum(p**2 * b) / np.sum(a * p**2), rtol=1e-10)
    # FOM stalls measurably far from it
    assert abs(pts.fom_fixed_point - pts.stationary_point) > 1.0


def test_counterexample_fixed_point_in_quadratic_zone_of_both_tasks():
    problem = P.counterexample()
    pts = P.counterexample_points(problem)
    for theta in (pts.fom_fixed_point, pts.stationary_point):
        for task in _rows(problem):
            c, A = float(task.b / task.a), float(task.A)
            phi = theta
            for alpha in np.asarray(problem.step_sizes):
                assert abs(phi - c) <= A - 1  # well inside: A = |c_1 - c_2| + 1
                phi = phi - alpha * float(P.piecewise_grad(phi, task.a, task.b, task.A))
            assert abs(phi - c) <= A - 1


def test_notes_fixed_point_equation_has_an_extra_p():
    """NOTES.md prints sum_i a_i p_i (p_i theta - b_i/a_i) = 0; its root is not FOM's fixed point."""
    prm = P.counterexample_parameters()
    problem = P.counterexample()
    theta_notes = np.sum(prm.p * prm.b) / np.sum(prm.a * prm.p**2)
    assert abs(float(_expected_fo(problem, jnp.asarray(theta_notes)))) > 1.0


def test_counterexample_points_outside_quadratic_zone():
    """A small zone (A = 0.5) puts FOM's fixed point on the cubic / linear pieces: found by root finding."""
    problem = P.piecewise_tasks(a=(0.5, 1.5), b=(0.0, 15.0), A=0.5, alpha=0.1, r=10, probs=(0.3, 0.7))
    pts = P.counterexample_points(problem)
    assert not pts.fom_in_quadratic_zone
    assert abs(float(_expected_fo(problem, jnp.asarray(pts.fom_fixed_point)))) < 1e-10
    assert abs(float(_meta_grad(problem, jnp.asarray(pts.stationary_point)))) < 1e-10


def test_piecewise_closed_forms_match_autodiff():
    """Exact and FOM gradients, M_r' and D^2, V^2, over every zone, with non-constant step sizes."""
    problem = P.piecewise_tasks(a=(0.5, 1.5, 1.0), b=(0.0, 10.0, -4.0), A=2.0, alpha=0.1, r=8,
                                probs=(0.2, 0.5, 0.3))
    problem = problem.replace(step_sizes=jnp.linspace(0.05, 0.6, 8))
    w = np.asarray(problem.task_probs)
    thetas = jnp.linspace(-12.0, 25.0, 75)
    ex = _grid(P.piecewise_exact_gradient, problem, thetas)
    fo = _grid(P.piecewise_fo_gradient, problem, thetas)
    assert np.ptp(ex) > 1 and np.ptp(fo) > 1
    np.testing.assert_allclose(ex, _grid(_autodiff_exact, problem, thetas), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(fo, _grid(_autodiff_fo, problem, thetas), rtol=1e-10, atol=1e-13)
    mg = jax.jit(jax.vmap(meta_gradient, in_axes=(None, 0)))(problem, thetas)
    np.testing.assert_allclose(mg, ex @ w, rtol=1e-10, atol=1e-13)
    bv = jax.jit(jax.vmap(P.piecewise_bias_variance, in_axes=(None, 0)))(problem, thetas)
    np.testing.assert_allclose(bv.d2, (fo - ex) ** 2 @ w, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(bv.v2, ex**2 @ w, rtol=1e-10, atol=1e-15)


def test_sample_task_draws_with_probs_under_jit_and_vmap():
    problem = P.piecewise_tasks(a=(0.5, 1.5, 1.0), b=(0.0, 1.0, 2.0), A=5.0, alpha=0.1, r=3, probs=(0.2, 0.5, 0.3))
    n = 20000
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    draws = jax.jit(jax.vmap(problem.sample_task))(keys)
    assert isinstance(draws, P.PiecewiseTask) and draws.b.shape == (n,)
    freq = np.array([np.mean(np.asarray(draws.b) == v) for v in (0.0, 1.0, 2.0)])
    probs = np.array([0.2, 0.5, 0.3])
    z = (freq - probs) / np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(z) < 4), z  # level: |z| < 4 per category over 20000 draws
    np.testing.assert_array_equal(np.asarray(draws.a)[np.asarray(draws.b) == 1.0], 1.5)  # rows stay whole


def test_problems_differing_only_in_arrays_share_compilation():
    """The finite-task sampler is bound to its problem and flattens to the unbound marker: problems that
    differ only in arrays (step sizes, the tasks themselves) have one tree structure, so a jitted function
    is traced once; the tasks are leaves (held once), and the draw follows them."""

    @jax.jit
    def f(problem, theta):
        return meta_gradient(problem, theta)

    one = P.piecewise_tasks((0.5, 1.5), (0.0, 10.0), 400.0, alpha=0.01, r=10)
    two = P.piecewise_tasks((0.5, 1.5), (0.0, 10.0), 400.0, alpha=0.02, r=10)
    other = P.piecewise_tasks((0.5, 1.5), (0.0, 11.0), 400.0, alpha=0.01, r=10)
    assert one.sample_task.problem is one and jax.tree_util.tree_structure(one) == jax.tree_util.tree_structure(other)
    assert float(f(one, 3.0)) != float(f(two, 3.0))
    assert float(f(other, 3.0)) != float(f(one, 3.0))
    assert f._cache_size() == 1
    key = jax.random.PRNGKey(3)
    moved = one.replace(tasks=other.tasks)  # draws from its own (new) tasks
    np.testing.assert_array_equal(moved.sample_task(key).b, other.sample_task(key).b)
    hidden = one.replace(tasks=None, task_probs=None)  # no exposed task set: still draws one's tasks
    np.testing.assert_array_equal(hidden.sample_task(key).b, one.sample_task(key).b)
    with pytest.raises(ValueError, match="needs Problem.tasks"):
        one.replace(sample_task=FROM_TASKS, tasks=None, task_probs=None)


def test_dtypes():
    assert P.counterexample(dtype=jnp.float32).tasks.b.dtype == jnp.float32
    assert P.counterexample().step_sizes.dtype == jnp.float64  # x64 on in tests: the default float
    q = P.quadratic(p=3, n_tasks=2, dtype=jnp.float32)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(q))


# ---------------------------------------------------------------------------------------------------------
# The quadratic


@pytest.fixture(scope="module")
def quad():
    return P.quadratic(p=6, n_tasks=4, step_sizes=np.linspace(0.2, 1.1, 7), seed=3, cond=20.0, lam=0.3)


def test_quadratic_structure(quad):
    t = quad.tasks
    assert quad.r == 7 and t.A.shape == (4, 6, 6) and t.c.shape == (4, 6) and quad.theta0.shape == (6,)
    for A in np.asarray(t.A):
        np.testing.assert_allclose(A, A.T, atol=1e-14)
        eig = np.linalg.eigvalsh(A)
        np.testing.assert_allclose([eig[0], eig[-1]], [1 / 20.0, 1.0], rtol=1e-10)
    assert np.linalg.norm(np.asarray(t.B[0])) > 1 and np.linalg.norm(np.asarray(t.lam)) > 0  # coupling, theta term
    np.testing.assert_array_equal(t.E[0], t.E[-1])
    again = P.quadratic(p=6, n_tasks=4, step_sizes=np.linspace(0.2, 1.1, 7), seed=3, cond=20.0, lam=0.3)
    np.testing.assert_array_equal(again.tasks.B, t.B)
    assert not np.allclose(P.quadratic(p=6, n_tasks=4, seed=4).tasks.B, t.B)
    np.testing.assert_array_equal(P.quadratic(p=4, r=5).step_sizes, np.ones(5))


def test_quadratic_exact_gradient_matches_autodiff(quad):
    thetas = jnp.asarray(np.random.default_rng(0).standard_normal((5, 6)))
    want = _grid(_autodiff_exact, quad, thetas)
    got = _grid(P.quadratic_exact_gradient, quad, thetas)
    assert np.max(np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)) <= 1e-10
    # the forward recursion J_r (phi_r = J_r theta + k_r) gives the same, and the same phi_r
    J, k = jax.vmap(P.quadratic_response, in_axes=(None, 0))(quad, quad.tasks)
    phi = _grid(P.quadratic_inner_path, quad, thetas)
    np.testing.assert_allclose(phi, _grid(inner_path, quad, thetas), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(phi, np.einsum("tij,nj->nti", J, thetas) + k, rtol=1e-12, atol=1e-14)
    t = quad.tasks
    forward = t.lam[:, None] * (thetas[:, None] - t.t) + np.einsum("tji,ntj->nti", J, phi - t.y)
    assert np.max(np.linalg.norm(forward - want, axis=-1) / np.linalg.norm(want, axis=-1)) <= 1e-10


def test_quadratic_fo_gradient_matches_eq_10_11(quad):
    thetas = jnp.asarray(np.random.default_rng(1).standard_normal((5, 6)))
    want = _grid(_autodiff_fo, quad, thetas)
    got = _grid(P.quadratic_fo_gradient, quad, thetas)
    assert np.max(np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)) <= 1e-10
    exact = _grid(P.quadratic_exact_gradient, quad, thetas)
    assert np.min(np.linalg.norm(got - exact, axis=-1)) > 1e-3  # FOM is biased here


def test_quadratic_meta_closed_forms(quad):
    thetas = jnp.asarray(np.random.default_rng(2).standard_normal((4, 6)))
    over = lambda f: jax.jit(jax.vmap(f, in_axes=(None, 0)))(quad, thetas)  # noqa: E731
    form = jax.jit(P.quadratic_meta_form)(quad)
    m, g = over(meta_objective), over(meta_gradient)
    np.testing.assert_allclose(over(P.quadratic_meta_objective), m, rtol=1e-12)
    np.testing.assert_allclose(0.5 * np.einsum("ni,ij,nj->n", thetas, form.hessian, thetas)
                               - thetas @ form.linear + form.const, m, rtol=1e-10)
    np.testing.assert_allclose(over(P.quadratic_meta_gradient), g, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(thetas @ form.hessian.T - form.linear, g, rtol=1e-10, atol=1e-14)
    hess = jax.jit(jax.hessian(meta_objective, argnums=1))(quad, thetas[0])
    np.testing.assert_allclose(form.hessian, hess, rtol=1e-10, atol=1e-14)
    star = P.quadratic_stationary_point(quad)
    assert np.linalg.norm(jax.jit(meta_gradient)(quad, star)) < 1e-12


def test_quadratic_bias_variance_is_the_average_over_tasks(quad):
    thetas = jnp.asarray(np.random.default_rng(3).standard_normal((4, 6)))
    w = np.asarray(quad.task_probs)
    ex = _grid(_autodiff_exact, quad, thetas)
    fo = _grid(_autodiff_fo, quad, thetas)
    bv = jax.jit(jax.vmap(P.quadratic_bias_variance, in_axes=(None, 0)))(quad, thetas)
    np.testing.assert_allclose(bv.d2, np.sum((fo - ex) ** 2, axis=-1) @ w, rtol=1e-10)
    np.testing.assert_allclose(bv.v2, np.sum(ex**2, axis=-1) @ w, rtol=1e-10)
    assert np.all(bv.d2 > 0)


def test_quadratic_sample_task_under_vmap(quad):
    draws = jax.vmap(quad.sample_task)(jax.random.split(jax.random.PRNGKey(1), 400))
    assert draws.A.shape == (400, 6, 6)
    seen = {int(np.argmax(np.all(np.asarray(quad.tasks.c) == c, axis=1))) for c in np.asarray(draws.c)}
    assert seen == {0, 1, 2, 3}


@pytest.mark.slow
def test_quadratic_p1000_is_fast():
    # A time bound is the point: building p = 1000 takes seconds (numpy factorisations and products of
    # 1000 x 1000 matrices per task). The machine is shared, so the bound is generous: 120 s, about ten times
    # the slowest build seen under load, fails only a pathologically slow build (e.g. a Python loop over entries).
    t0 = time.perf_counter()
    q = P.quadratic(p=1000, n_tasks=8)
    jax.block_until_ready(q.tasks)
    assert time.perf_counter() - t0 < 120.0
    g = jax.jit(P.quadratic_meta_gradient)(q, q.theta0)
    assert g.shape == (1000,) and np.all(np.isfinite(g))


# ---------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: P.piecewise_tasks((0.5, 1.5), (0, 1), 3.0, alpha=-0.1, r=10), r"alpha = -0\.1"),
        (lambda: P.piecewise_tasks((0.5, 1.5), (0, 1), 3.0, alpha=0.0, r=10), r"alpha = 0\.0"),
        (lambda: P.piecewise_tasks((0.5, 1.5), (0, 1), 3.0, alpha=0.1, r=0), r"r = 0"),
        (lambda: P.piecewise_tasks((0.5, -1.5), (0, 1), 3.0, alpha=0.1, r=10), r"a_2 = -1\.5"),
        (lambda: P.piecewise_tasks((0.5, 1.5), (0, 1, 2), 3.0, alpha=0.1, r=10), r"length 2"),
        (lambda: P.piecewise_tasks((0.5, 1.5), (0, 1), -3.0, alpha=0.1, r=10), r"A = -3\.0"),
        (lambda: P.piecewise_tasks((0.5, 1.5), (0, 1), 3.0, 0.1, 10, probs=(0.5, 0.6)), r"probs"),
        (lambda: P.counterexample(D=0.0), r"D = 0\.0"),
        (lambda: P.counterexample(D=-1.0), r"D = -1\.0"),
        (lambda: P.counterexample(alpha=-0.1), r"alpha = -0\.1"),
        (lambda: P.counterexample(r=0), r"r = 0"),
        (lambda: P.counterexample(a=(0.0, 1.5)), r"a_1 = 0\.0"),
        (lambda: P.counterexample(a=(1.0, 1.0)), r"a = \[1\.0, 1\.0\]"),
        (lambda: P.counterexample(alpha=1.0), r"alpha \* a_2"),
        (lambda: P.quadratic(p=1), r"p = 1"),
        (lambda: P.quadratic(alpha=-0.5), r"alpha = -0\.5"),
        (lambda: P.quadratic(r=0), r"r = 0"),
        (lambda: P.quadratic(step_sizes=[0.1, -0.2]), r"alpha_2 = -0\.2"),
        (lambda: P.quadratic(step_sizes=[0.1, 0.2], r=3), r"r = 3"),
        (lambda: P.quadratic(alpha=0.1, step_sizes=[0.1]), r"alpha = 0\.1"),
        (lambda: P.quadratic(cond=0.5), r"cond = 0\.5"),
        (lambda: P.quadratic(n_tasks=0), r"n_tasks = 0"),
    ],
)
def test_bad_input_raises_naming_the_value(build, match):
    with pytest.raises(ValueError, match=match):
        build()
