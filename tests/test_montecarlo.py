"""ufom_bench.montecarlo: D^2, V^2 (eqs. 14, 16), FOM's bias and UFOM's second moment (Lemma 1).

Statistical checks use |estimate - truth| < Z * SE with Z = 4 (a false alarm has probability about 6e-5 per
comparison under the normal approximation), with sample sizes that make the SE small next to the effects.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat, pytree_problem

from ufom_bench import theory
from ufom_bench import Problem, montecarlo as mc, problems

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

Z = 4.0  # test tolerance in standard errors
N_CHUNKED, CHUNK = 203, 16  # shared sizes, so that compiled programs are reused across tests


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ptree():
    """One instance for the module: compiled programs are cached per problem (its functions are static)."""
    return pytree_problem()


@pytest.fixture(scope="module")
def quad():
    """A quadratic problem with closed forms, and a theta where every quantity is O(1)-ish."""
    problem = problems.quadratic(p=4, n_tasks=6, r=5, alpha=0.5, seed=1)
    theta = jnp.array([0.3, -0.5, 0.8, 0.1])
    fo = jax.vmap(lambda t: problems.quadratic_fo_gradient(problem, theta, t))(problem.tasks)
    ex = jax.vmap(lambda t: problems.quadratic_exact_gradient(problem, theta, t))(problem.tasks)
    return problem, theta, np.asarray(fo), np.asarray(ex)


def closed_form(problem, theta, fo, ex):
    """Population moments from the closed-form per-task gradients (for comparisons and true SEs)."""
    w = np.asarray(problem.task_probs)
    d = np.sum((fo - ex) ** 2, 1)
    v = np.sum(ex**2, 1)
    bv = problems.quadratic_bias_variance(problem, theta)
    return {
        "d2": float(bv.d2),
        "v2": float(bv.v2),
        "bias": w @ (fo - ex),
        "meta_grad": np.asarray(problems.quadratic_meta_gradient(problem, theta)),
        "d2_sd": np.sqrt(w @ (d - w @ d) ** 2),
        "v2_sd": np.sqrt(w @ (v - w @ v) ** 2),
    }


def divergent_problem(r: int = 12):
    """theta in R^2, phi = V(theta) = theta, L_in = a/2 ||phi||^2, L_out = 1/2 ||phi - 1||^2, alpha = 1.

    Task a = 1e30 diverges ((1 - a)^r overflows float64); a = 0.1, 1.8 contract. In closed form, with
    c = 1 - a: G_FO = c^r theta - 1, G = c^r (c^r theta - 1).
    """
    a = jnp.array([0.1, 1.8, 1e30])
    probs = jnp.array([0.5, 0.3, 0.2])
    tasks = {"a": a}

    def sample_task(key):
        return {"a": a[jax.random.choice(key, 3, p=probs)]}

    return Problem(
        inner_loss=lambda th, phi, t: 0.5 * t["a"] * jnp.sum(phi**2),
        outer_loss=lambda th, phi, t: 0.5 * jnp.sum((phi - 1.0) ** 2),
        init_inner=lambda th, t: th,
        sample_task=sample_task,
        step_sizes=jnp.ones((r,)),
        theta0=jnp.array([0.7, -1.2]),
        tasks=tasks,
        task_probs=probs,
        name="divergent",
    )


def divergent_closed_form(problem, theta, keep=(0, 1)):
    """E over the finite tasks only (probabilities renormalised) of ||G_FO - G||^2 and ||G||^2."""
    theta = np.asarray(theta)
    w = np.asarray(problem.task_probs)[list(keep)]
    w = w / w.sum()
    d2 = v2 = 0.0
    for wi, i in zip(w, keep):
        cr = (1.0 - float(problem.tasks["a"][i])) ** problem.r
        fo, g = cr * theta - 1.0, cr * (cr * theta - 1.0)
        d2 += wi * np.sum((fo - g) ** 2)
        v2 += wi * np.sum(g**2)
    return d2, v2


# ------------------------------------------------------------------------------------------------ D^2, V^2


def test_exact_mode_equals_closed_form(quad):
    problem, theta, fo, ex = quad
    cf = closed_form(problem, theta, fo, ex)
    m = mc.moments(problem, theta)
    assert m.method == "exact" and m.n == problem.num_tasks and m.n_diverged == 0
    np.testing.assert_allclose(m.d2, cf["d2"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.v2, cf["v2"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.bias, cf["bias"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.meta_grad, cf["meta_grad"], rtol=1e-10, atol=1e-10)
    assert m.d2_se == 0 and m.v2_se == 0 and not np.any(m.bias_se) and not np.any(m.meta_grad_se)
    # FOM is biased here, and Jensen: ||E[G_FO - G]||^2 <= E||G_FO - G||^2.
    assert 1e-3 < np.sum(m.bias**2) <= m.d2


def test_sampled_mode_matches_closed_form_within_ci(quad):
    problem, theta, fo, ex = quad
    cf = closed_form(problem, theta, fo, ex)
    n = 4000
    m = mc.moments(problem, theta, n, jax.random.PRNGKey(0), method="sampled")
    assert m.method == "sampled" and m.n == n and m.n_diverged == 0
    for field in ("d2", "v2"):
        est, se = getattr(m, field), getattr(m, field + "_se")
        assert abs(est - cf[field]) < Z * se, (field, est, cf[field], se)
        # Power: the SE is small next to the value, and it estimates the true sd / sqrt(n).
        assert se < 0.05 * cf[field]
        np.testing.assert_allclose(se, cf[field + "_sd"] / np.sqrt(n), rtol=0.2)
        lo, hi = m.ci(field, z=Z)
        assert lo < cf[field] < hi
    for field in ("bias", "meta_grad"):
        est, se = getattr(m, field), getattr(m, field + "_se")
        assert np.all(np.abs(est - cf[field]) < Z * se), (field, est, cf[field], se)
        assert np.all(se > 0)


def test_auto_samples_without_a_finite_task_set(ptree):
    problem = ptree
    open_problem = problem.replace(tasks=None, task_probs=None)  # sample_task still draws the same tasks
    m = mc.moments(open_problem, problem.theta0, 64, jax.random.PRNGKey(1))
    assert m.method == "sampled" and m.n == 64 and m.d2_se > 0
    with pytest.raises(ValueError, match="finite task set"):
        mc.moments(open_problem, problem.theta0, 64, jax.random.PRNGKey(1), method="exact")
    with pytest.raises(ValueError, match="PRNG key"):
        mc.moments(open_problem, problem.theta0, 64)
    with pytest.raises(ValueError, match="method"):
        mc.moments(problem, problem.theta0, method="bogus")


# ------------------------------------------------------------------------------------------------ UFOM


def test_ufom_identity_equals_direct_sampling(ptree):
    """Sampled mode on a nonlinear pytree problem: the paired difference is within Z SEs for every q."""
    problem = ptree
    qs = np.array([0.2, 0.5, 1.0])
    u = mc.ufom_moments(problem, problem.theta0, qs, 3000, jax.random.PRNGKey(2), method="sampled")
    assert u.method == "sampled" and u.n == 3000 and u.n_xi == 1 and u.second_moment.shape == (3,)
    assert np.all(np.abs(u.direct - u.second_moment) < Z * u.diff_se), (u.direct, u.second_moment, u.diff_se)
    # q = 1 is the exact gradient: no xi noise.
    np.testing.assert_allclose(u.direct[2], u.second_moment[2], rtol=1e-12)
    # The same pairs as `moments`, and the identity is linear in them.
    m = mc.moments(problem, problem.theta0, 3000, jax.random.PRNGKey(2), method="sampled")
    assert (u.moments.d2, u.moments.v2, u.moments.d2_se) == (m.d2, m.v2, m.d2_se)
    np.testing.assert_allclose(u.second_moment, m.v2 + (1 / qs - 1) * m.d2, rtol=1e-12)
    # Power: a wrong identity (V^2 + D^2 / q) is rejected at q = 0.2.
    assert abs(u.direct[0] - (m.v2 + m.d2 / 0.2)) > Z * u.diff_se[0]


def test_ufom_exact_mode_identity_and_theory(ptree):
    problem = ptree
    q = 0.3
    u = mc.ufom_moments(problem, problem.theta0, q, 2000, jax.random.PRNGKey(3))
    m = mc.moments(problem, problem.theta0)
    assert u.method == "exact" and u.n == problem.num_tasks and u.n_xi == 2000
    assert isinstance(u.second_moment, float) and u.second_moment_se == 0
    np.testing.assert_allclose(u.second_moment, m.v2 + (1 / q - 1) * m.d2, rtol=1e-13)
    np.testing.assert_allclose(u.second_moment, float(theory.ufom_second_moment(m.v2, m.d2, q)), rtol=1e-13)
    # Lemma 1 at this theta (the sup over theta bounds it from above).
    assert u.second_moment <= float(theory.lemma1_bound(m.d2, m.v2, q)) * (1 + 1e-12)
    # Direct sampling of xi (stratified by task): within Z SEs, and the SE is informative.
    assert abs(u.direct - u.second_moment) < Z * u.direct_se
    assert 0 < u.direct_se < 0.1 * u.second_moment


def test_ufom_moments_validates_q(ptree):
    problem = ptree
    for bad in (0.0, 1.5, -0.1, [0.5, 0.0]):
        with pytest.raises(ValueError, match="q"):
            mc.ufom_moments(problem, problem.theta0, bad, 10, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="xi draws"):
        mc.ufom_moments(problem, problem.theta0, 0.5, 1, jax.random.PRNGKey(0))


# ------------------------------------------------------------------------------------------------ non-finite


def test_nonfinite_tasks_counted_and_excluded_exact():
    problem = divergent_problem()
    theta = problem.theta0
    m = mc.moments(problem, theta)
    assert m.method == "exact" and m.n == 3 and m.n_diverged == 1
    d2, v2 = divergent_closed_form(problem, theta)
    np.testing.assert_allclose([m.d2, m.v2], [d2, v2], rtol=1e-12)
    assert np.all(np.isfinite(m.bias)) and np.all(np.isfinite(m.meta_grad))


def test_nonfinite_draws_counted_and_excluded_sampled():
    problem = divergent_problem()
    theta, n, key = problem.theta0, 400, jax.random.PRNGKey(4)
    m = mc.moments(problem, theta, n, key, method="sampled")
    s = mc.gradient_samples(problem, theta, n, key, method="sampled")
    finite = np.asarray(s.finite)
    assert m.n == n and m.n_diverged == int((~finite).sum())
    assert abs(m.n_diverged - 0.2 * n) < Z * np.sqrt(n * 0.2 * 0.8)  # task a = 1e30 has p = 0.2
    g_fo, g = np.asarray(s.g_fo)[finite], np.asarray(s.g)[finite]
    np.testing.assert_allclose(m.d2, np.mean(np.sum((g_fo - g) ** 2, 1)), rtol=1e-12)
    np.testing.assert_allclose(m.meta_grad, g.mean(0), rtol=1e-12, atol=1e-300)
    # The mean over finite draws estimates the expectation conditional on finiteness.
    d2, _ = divergent_closed_form(problem, theta)
    assert np.isfinite(m.d2) and abs(m.d2 - d2) < Z * m.d2_se


def test_all_nonfinite_gives_nan():
    problem = pytree_problem(alphas=jnp.full((30,), 50.0))  # every task's inner loop diverges
    for m in (mc.moments(problem, problem.theta0),
              mc.moments(problem, problem.theta0, 16, jax.random.PRNGKey(5), method="sampled")):
        assert m.n_diverged == m.n
        assert np.isnan(m.d2) and np.isnan(m.v2) and np.isnan(m.d2_se)
        assert np.all(np.isnan(m.bias)) and np.all(np.isnan(m.meta_grad))
    sup = mc.grid_sup([m, m], "d2")
    assert np.isnan(sup.value) and sup.index == -1 and sup.n_undefined == 2


# ------------------------------------------------------------------------------------------------ chunking


def test_chunking_matches_one_batch(ptree):
    """Tasks are tied to per-row keys, so chunking changes only how rows are batched (to within rounding)."""
    problem = ptree
    key, n = jax.random.PRNGKey(6), N_CHUNKED
    ref = mc.gradient_samples(problem, problem.theta0, n, key, method="sampled", chunk_size=n)
    ref_m = mc.moments(problem, problem.theta0, n, key, method="sampled", chunk_size=n)
    for chunk in (1, CHUNK, 10_000):
        s = mc.gradient_samples(problem, problem.theta0, n, key, method="sampled", chunk_size=chunk)
        np.testing.assert_allclose(s.g_fo, ref.g_fo, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(s.g, ref.g, rtol=1e-13, atol=1e-15)
        m = mc.moments(problem, problem.theta0, n, key, method="sampled", chunk_size=chunk)
        for field in ("d2", "d2_se", "v2", "v2_se", "bias", "meta_grad"):
            np.testing.assert_allclose(getattr(m, field), getattr(ref_m, field), rtol=1e-12)
    # Rows are the per-sample gradients of `montecarlo.pair` on the sampled tasks.
    keys = jax.random.split(jax.random.fold_in(jax.random.split(key)[0], 0), n)
    task = problem.sample_task(keys[7])
    g_fo, g, _ = jax.jit(mc.pair)(problem, problem.theta0, task)
    np.testing.assert_allclose(ref.g_fo[7], flat(g_fo), rtol=1e-13)
    np.testing.assert_allclose(ref.g[7], flat(g), rtol=1e-13)


# ------------------------------------------------------------------------------------------------ grids


def test_grid_sup_and_frame_on_piecewise_tasks():
    """Figure 1d's quantities: D^2, V^2 over a theta grid and their sups (eqs. 14, 16 on the grid)."""
    problem = problems.piecewise_tasks(a=(0.5, 1.5), b=(0.0, 10.0), A=400.0, alpha=0.05, r=10)
    grid = jnp.linspace(-50.0, 50.0, 41)
    cells = mc.moments_grid(problem, grid, chunk_size=16)
    cf = jax.vmap(lambda t: problems.piecewise_bias_variance(problem, t))(grid)
    np.testing.assert_allclose([c.d2 for c in cells], cf.d2, rtol=1e-10)
    np.testing.assert_allclose([c.v2 for c in cells], cf.v2, rtol=1e-10)
    sup_d, sup_v = mc.grid_sup(cells, "d2"), mc.grid_sup(cells, "v2")
    assert sup_d.index == int(np.argmax(cf.d2)) and sup_d.se == 0 and sup_d.method == "exact"
    np.testing.assert_allclose([sup_d.value, sup_v.value], [np.max(cf.d2), np.max(cf.v2)], rtol=1e-10)
    # One grid cell equals the single-theta computation.
    one = mc.moments(problem, grid[7])
    np.testing.assert_allclose([one.d2, one.v2], [cells[7].d2, cells[7].v2], rtol=1e-13)

    frame = mc.to_frame(cells, grid, alpha=0.05)
    assert len(frame) == grid.shape[0]
    assert {"cell", "theta", "d2", "d2_se", "v2", "v2_se", "bias_norm", "meta_grad_norm", "n", "n_diverged",
            "method", "alpha"} <= set(frame.columns)
    assert all(np.ndim(v) == 0 for v in frame.iloc[0])
    np.testing.assert_allclose(frame["theta"], grid)
    np.testing.assert_allclose(frame["d2"], cf.d2, rtol=1e-10)


def test_sampled_grid_on_pytree_theta(ptree):
    problem = ptree
    thetas = jax.tree_util.tree_map(lambda x: jnp.stack([x, 0.5 * x, -x]), problem.theta0)
    key = jax.random.PRNGKey(8)
    cells = mc.moments_grid(problem, thetas, 32, key, method="sampled")
    assert len(cells) == 3 and all(c.method == "sampled" and c.bias.shape == (7,) for c in cells)
    # Cell 0 is the single-theta computation under the same key.
    one = mc.moments(problem, problem.theta0, 32, key, method="sampled")
    np.testing.assert_allclose([one.d2, one.v2], [cells[0].d2, cells[0].v2], rtol=1e-12)
    sup = mc.grid_sup(cells, "v2")
    assert sup.value == max(c.v2 for c in cells) and sup.se == cells[sup.index].v2_se > 0
    frame = mc.to_frame(cells, thetas)
    assert [f"theta_{j}" for j in range(7)] == [c for c in frame.columns if c.startswith("theta")]
    with pytest.raises(ValueError, match="shape"):
        mc.moments_grid(problem, problem.theta0, 4, key)  # no grid axis


# ------------------------------------------------------------------------------------------------ devices


def test_runs_on_one_device(ptree):
    if jax.device_count() != 1:
        pytest.skip("checks the single-device path")
    m = mc.moments(ptree, ptree.theta0, N_CHUNKED, jax.random.PRNGKey(9), method="sampled", chunk_size=CHUNK)
    assert m.n == N_CHUNKED and m.n_diverged == 0 and np.isfinite(m.d2) and m.d2_se > 0


_SHARDED = """
import jax, numpy as np, sys
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, "tests")
from helpers import pytree_problem
from ufom_bench import montecarlo as mc
assert jax.device_count() == 2, jax.devices()
problem = pytree_problem()
n, chunk = int(sys.argv[2]), int(sys.argv[3])
s = mc.gradient_samples(problem, problem.theta0, n, jax.random.PRNGKey(10), method="sampled", chunk_size=chunk)
np.save(sys.argv[1], np.asarray(s.g))
"""


def test_sharded_over_two_host_devices_matches(tmp_path, ptree):
    """The sample axis sharded over 2 (forced host) devices gives the same rows as one device."""
    out = tmp_path / "g.npy"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = [str(out), str(N_CHUNKED), str(CHUNK)]
    subprocess.run([sys.executable, "-c", textwrap.dedent(_SHARDED), *args], cwd=root, env=env, check=True,
                   timeout=120)
    s = mc.gradient_samples(ptree, ptree.theta0, N_CHUNKED, jax.random.PRNGKey(10), method="sampled",
                            chunk_size=CHUNK)
    np.testing.assert_allclose(np.load(out), s.g, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------------------------ from samples


def test_moments_and_ufom_from_precomputed_samples(ptree):
    """`moments_of` / `ufom_moments_of` on one `gradient_samples` equal `moments` / `ufom_moments` (same key)."""
    problem, key, qs = ptree, jax.random.PRNGKey(2), np.array([0.2, 0.5, 1.0])
    s = mc.gradient_samples(problem, problem.theta0, 3000, key, method="sampled")
    (m,) = mc.moments_of(s)
    want = mc.moments(problem, problem.theta0, 3000, key, method="sampled")
    assert (m.d2, m.v2, m.d2_se, m.n) == (want.d2, want.v2, want.d2_se, want.n)
    u, u_want = mc.ufom_moments_of(s, qs, key), mc.ufom_moments(problem, problem.theta0, qs, 3000, key, method="sampled")
    for field in ("second_moment", "second_moment_se", "direct", "direct_se", "diff_se"):
        np.testing.assert_array_equal(getattr(u, field), getattr(u_want, field))
    # exact mode: n_xi xi draws per task
    se = mc.gradient_samples(problem, problem.theta0)
    ue = mc.ufom_moments_of(se, 0.3, jax.random.PRNGKey(3), n_xi=2000)
    ue_want = mc.ufom_moments(problem, problem.theta0, 0.3, 2000, jax.random.PRNGKey(3))
    assert (ue.second_moment, ue.direct, ue.n_xi) == (ue_want.second_moment, ue_want.direct, 2000)
    with pytest.raises(ValueError, match="one theta"):
        mc.ufom_moments_of(mc.gradient_samples(problem, jax.tree_util.tree_map(lambda x: x[None], problem.theta0),
                                               grid=True), 0.5, key)


def test_ufom_variance_exact_and_sampled(quad):
    """Var = E||G_UFO||^2 - ||dM/dtheta||^2: exact over the finite task set; sampled within Z SEs of it."""
    problem, theta, fo, ex = quad
    truth = closed_form(problem, theta, fo, ex)
    qs = np.array([0.1, 0.5, 1.0])
    want = truth["v2"] + (1 / qs - 1) * truth["d2"] - np.sum(truth["meta_grad"] ** 2)
    u = mc.ufom_moments_of(mc.gradient_samples(problem, theta), qs, jax.random.PRNGKey(0))
    var, se = mc.ufom_variance(u)
    np.testing.assert_allclose(var, want, rtol=1e-9)
    assert np.all(se == 0)
    # q = 1: the exact gradient's variance, the weighted variance of the per-task G
    w = np.asarray(problem.task_probs)
    np.testing.assert_allclose(var[2], w @ np.sum((ex - w @ ex) ** 2, 1), rtol=1e-9)
    us = mc.ufom_moments_of(mc.gradient_samples(problem, theta, 20_000, jax.random.PRNGKey(1), method="sampled"),
                            qs, jax.random.PRNGKey(1))
    var_s, se_s = mc.ufom_variance(us)
    assert np.all(np.abs(var_s - want) < Z * se_s), (var_s, want, se_s)
