"""The few-shot problem (issue 7, item 2): exact gradients against finite differences (float64, tiny conv
net), model shapes and jit, the sinusoid problem (meta-batches: tests/test_meta_batch.py).

Compilation dominates here (XLA compiles the conv net's HVPs in ~10 s on a CPU), so the conv net is compiled
only where the conv net itself is under test (finite differences, shapes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ufom_bench import estimators
from ufom_bench.data.fewshot import TaskSampler
from ufom_bench.problem import inner_path
from ufom_bench.problems.fewshot import conv4_apply, conv4_init, fewshot, mlp_apply, mlp_init, sinusoid
from ufom_bench.errors import UserError

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64


def _tiny_sampler(n_classes=4, per_class=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return TaskSampler.from_numpy(rng.integers(0, 256, (n_classes, per_class, size, size), dtype=np.uint8), name="tiny")


def _tiny_problem(norm="batch", **kw):
    params = dict(m=2, k=1, r=2, alpha=0.4, filters=2, norm=norm, dtype=jnp.float64)
    params.update(kw)
    return fewshot(_tiny_sampler(), **params)


def _fd_gradient(problem, theta, task, h=1e-5):
    """Central differences of L_out(theta, U_r(theta, T), T) over every coordinate of the raveled theta."""
    flat, unravel = ravel_pytree(theta)

    def f(x):
        th = unravel(x)
        return problem.outer_loss(th, inner_path(problem, th, task), task)

    eye = jnp.eye(flat.size, dtype=flat.dtype)
    values = jax.jit(jax.vmap(lambda e: f(flat + e)))(jnp.concatenate([h * eye, -h * eye]))
    return (values[: flat.size] - values[flat.size:]) / (2 * h)


@pytest.mark.slow  # the float64 unrolled-autodiff tests below check the same gradients to 1e-10
def test_exact_matches_finite_differences():
    problem = _tiny_problem("batch")  # the default normalisation (per-example "layer" is checked for shape)
    theta = problem.theta0
    task = problem.sample_task(jax.random.PRNGKey(3))
    assert ravel_pytree(theta)[0].size < 200  # small enough for FD over all coordinates
    fd = _fd_gradient(problem, theta, task)

    @jax.jit  # one compilation for both estimators
    def both(theta, task):
        key = jax.random.PRNGKey(0)
        return (estimators.exact().estimate(problem, theta, task, key, ())[:2],
                estimators.exact_me().estimate(problem, theta, task, key, ())[:2])

    (g, info), (g_me, info_me) = both(theta, task)
    g = ravel_pytree(g)[0]
    rel = float(jnp.linalg.norm(g - fd) / jnp.linalg.norm(fd))
    assert rel <= 1e-6, rel
    assert (int(info.grad_calls), int(info.hvp_calls)) == (problem.r + 1, problem.r)
    np.testing.assert_allclose(ravel_pytree(g_me)[0], g, rtol=1e-10, atol=1e-12)
    assert int(info_me.grad_calls) == problem.r + 1 + problem.r * (problem.r - 1) // 2


def test_conv4_shapes_and_jit():
    theta = conv4_init(0, (28, 28, 1), 5, filters=4, dtype=jnp.float32)
    assert theta["head"]["w"].shape == (2 * 2 * 4, 5)  # 28 -> 14 -> 7 -> 4 -> 2
    assert theta["block0"]["w"].shape == (3, 3, 1, 4) and theta["block3"]["w"].shape == (3, 3, 4, 4)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(theta))
    x = jax.random.uniform(jax.random.PRNGKey(0), (7, 28, 28, 1), jnp.float32)
    theta_none = conv4_init(0, (28, 28, 3), 5, filters=4, norm="none")
    assert "b" in theta_none["block0"] and "scale" not in theta_none["block0"]

    @jax.jit  # every variant in one program: one compilation
    def outputs(theta, x, theta_none):
        return {"batch": conv4_apply(theta, x, "batch"), "layer": conv4_apply(theta, x, "layer"),
                "layer1": conv4_apply(theta, x[:1], "layer"), "batch2": conv4_apply(theta, x[:2], "batch"),
                "none": conv4_apply(theta_none, jnp.ones((2, 28, 28, 3)), "none")}

    out = outputs(theta, x, theta_none)
    for norm in ("batch", "layer"):
        assert out[norm].shape == (7, 5) and out[norm].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out[norm])))
    # per-example normalisation: a prediction does not depend on the rest of the batch; batch norm does
    np.testing.assert_allclose(out["layer1"], out["layer"][:1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out["batch2"], out["batch"][:2], atol=1e-4)
    assert out["none"].shape == (2, 5)


def test_mlp_shapes_and_jit():
    theta = mlp_init(0, 1, 1)
    assert [theta[k]["w"].shape for k in ("dense0", "dense1", "out")] == [(1, 40), (40, 40), (40, 1)]
    out = jax.jit(mlp_apply)(theta, jnp.ones((10, 1)))
    assert out.shape == (10, 1)
    # the MLP on images flattens them
    problem = fewshot(_tiny_sampler(), model="mlp", m=3, k=1, r=2, hidden=(8,))
    assert problem.theta0["dense0"]["w"].shape == (64, 8) and problem.theta0["out"]["w"].shape == (8, 3)
    task = problem.sample_task(jax.random.PRNGKey(0))
    g, _, _ = jax.jit(estimators.fom().estimate)(problem, problem.theta0, task, jax.random.PRNGKey(0), ())
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(problem.theta0)


def test_sinusoid_problem_runs_with_fom_and_exact():
    problem = sinusoid(k=5, r=3, alpha=0.01)
    task = problem.sample_task(jax.random.PRNGKey(0))
    assert task.support_x.shape == (5, 1) and task.query_y.shape == (5, 1)
    for est in (estimators.fom(), estimators.exact()):
        g, info, _ = jax.jit(est.estimate)(problem, problem.theta0, task, jax.random.PRNGKey(1), ())
        assert bool(info.finite)
        assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(problem.theta0)
    # the outer loss is the query MSE at phi_r
    phi = inner_path(problem, problem.theta0, task)
    pred = mlp_apply(phi, task.query_x)
    np.testing.assert_allclose(problem.outer_loss(problem.theta0, phi, task), jnp.mean((pred - task.query_y) ** 2))


def test_bad_arguments():
    s = _tiny_sampler()
    with pytest.raises(ValueError, match="model"):
        fewshot(s, model="resnet", m=2)
    with pytest.raises(ValueError, match="norm"):
        fewshot(s, m=2, norm="instance")
    with pytest.raises(ValueError, match="k \\+ k_query"):
        fewshot(s, m=2, k=3, k_query=1)
    with pytest.raises(ValueError, match="alpha"):
        fewshot(s, m=2, r=3, alpha=[0.1, 0.2])
    with pytest.raises(ValueError, match="sampler"):
        fewshot(lambda key: None, m=2)
    with pytest.raises(ValueError, match="conv = 'fft'"):
        fewshot(s, m=2, conv="fft")
    with pytest.raises(UserError, match="inner = 'body'"):
        fewshot(s, m=2, inner="body")


def _unrolled_meta_gradient(problem, theta, task):
    """jax.grad of L_out(theta, phi_r, T) through a Python-unrolled inner loop (V = theta)."""
    def f(th):
        phi = th
        for alpha in np.asarray(problem.step_sizes):
            g = jax.grad(problem.inner_loss, argnums=1)(th, phi, task)
            phi = jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, g)
        return problem.outer_loss(th, phi, task)
    return jax.grad(f)(theta)


def test_slices_conv_equals_xla_conv_and_unrolled_autodiff():
    """The default convolution (strided slices and one dot) gives XLA's convolution's outputs and, through
    `meta_batch`, the meta-gradient of the loop unrolled on XLA's convolution by jax.grad (float64, relative
    1e-10); the counts are Proposition 1's (r = 3, filters 2, odd image size so SAME pads unevenly). The
    estimators on XLA's convolution are the old path (`conv="xla"`): compiling them too doubled the test."""
    sampler = TaskSampler.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 3, 9, 9), dtype=np.uint8))
    probs = {c: fewshot(sampler, m=2, k=1, r=3, alpha=0.4, filters=2, conv=c, dtype=jnp.float64)
             for c in ("slices", "xla")}
    theta = probs["xla"].theta0
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 9, 9, 1)))
    np.testing.assert_allclose(conv4_apply(theta, x, conv="slices"), conv4_apply(theta, x, conv="xla"),
                               rtol=1e-12, atol=1e-13)
    key = jax.random.PRNGKey(4)
    k_tasks, _ = jax.random.split(key)
    tasks = [probs["xla"].sample_task(k) for k in jax.random.split(k_tasks, 2)]
    unrolled = ravel_pytree(jax.tree_util.tree_map(
        lambda *g: sum(g) / 2, *[_unrolled_meta_gradient(probs["xla"], theta, t) for t in tasks]))[0]
    for conv, problem in [("slices", probs["slices"])]:
        for est in (estimators.exact(), estimators.exact_me()):
            g, info, _ = jax.jit(estimators.meta_batch(est, 2).estimate)(problem, theta, None, key, ())
            np.testing.assert_allclose(ravel_pytree(g)[0], unrolled, rtol=1e-10, atol=1e-12)
            r = problem.r
            extra = r * (r - 1) // 2 if est.name == "exact_me" else 0
            assert (int(info.grad_calls), int(info.hvp_calls)) == (2 * (r + 1 + extra), 2 * r), (conv, est.name)


def _unrolled_head_meta_gradient(problem, theta, task, head="head"):
    """jax.grad of L_out(theta, phi_r, T) through a Python-unrolled inner loop over the head only,
    phi_0 = theta[head]: theta also enters every L_in and L_out directly (inner="head")."""
    def f(th):
        phi = th[head]
        for alpha in np.asarray(problem.step_sizes):
            g = jax.grad(problem.inner_loss, argnums=1)(th, phi, task)
            phi = jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, g)
        return problem.outer_loss(th, phi, task)
    return jax.grad(f)(theta)


@pytest.mark.parametrize("model", [pytest.param("conv4", marks=pytest.mark.slow), "mlp"])  # conv4: ~30 s compiling
def test_head_only_inner_loop(model):
    """inner="head" (ANIL, PZOBO's setting): phi is the head alone, V(theta, T) = theta's head; exact and
    exact_me equal jax.grad of the unrolled loop (float64, relative 1e-10), whose b1 = dL_out/dtheta is not zero
    (theta enters L_out directly), and the counts are Proposition 1's (r = 3); UFOM's exact branch (q = 1)
    equals it too; FOM's estimate differs (it drops the mixed derivative); Reptile is not defined."""
    kw = dict(m=2, k=1, r=3, alpha=0.4, filters=2, dtype=jnp.float64, hidden=(5,), model=model)
    problem = fewshot(_tiny_sampler(), inner="head", **kw)
    head = "head" if model == "conv4" else "out"
    assert problem.name.endswith("-head/2w1s") and set(problem.theta0) == set(fewshot(_tiny_sampler(), **kw).theta0)
    theta = problem.theta0
    task = problem.sample_task(jax.random.PRNGKey(3))
    phi0 = problem.init_inner(theta, task)
    assert jax.tree_util.tree_structure(phi0) == jax.tree_util.tree_structure(theta[head])
    b1 = jax.grad(problem.outer_loss)(theta, phi0, task)
    assert float(jnp.linalg.norm(ravel_pytree({k: v for k, v in b1.items() if k != head})[0])) > 1e-3
    want = ravel_pytree(_unrolled_head_meta_gradient(problem, theta, task, head))[0]
    r, key = problem.r, jax.random.PRNGKey(0)
    for est, extra in ((estimators.exact(), 0), (estimators.exact_me(), r * (r - 1) // 2),
                       (estimators.ufom(q=1.0), r * (r - 1) // 2)):
        g, info, _ = jax.jit(est.estimate)(problem, theta, task, key, ())
        np.testing.assert_allclose(ravel_pytree(g)[0], want, rtol=1e-10, atol=1e-12)
        assert (int(info.grad_calls), int(info.hvp_calls)) == (r + 1 + extra, r), est.name
    g_fo, info, _ = jax.jit(estimators.fom().estimate)(problem, theta, task, key, ())
    assert (int(info.grad_calls), int(info.hvp_calls)) == (r + 1, 0)
    assert float(jnp.linalg.norm(ravel_pytree(g_fo)[0] - want)) > 1e-6 * float(jnp.linalg.norm(want))
    assert "needs V(theta, T) = theta" in estimators.not_applicable(estimators.reptile(), problem)
