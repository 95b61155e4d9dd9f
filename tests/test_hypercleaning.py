"""The data-hypercleaning problem (Section 5.2): exact hypergradient vs finite differences, FOM = 0, metrics.

Float64 (conftest.py), tiny sizes: the exact gradient check is a theory check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import estimators
from ufom_bench.problem import inner_path, meta_gradient, task_at
from ufom_bench.problems.hypercleaning import (
    HypercleaningTask,
    cross_entropy,
    hypercleaning,
    hypercleaning_metrics,
    mlp_apply,
)

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

N, D, H, C, M = 6, 5, 4, 3, 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (N, D))
    y = rng.integers(0, C, N).astype(np.int32)
    Xv = rng.uniform(0, 1, (M, D))
    yv = rng.integers(0, C, M).astype(np.int32)
    return X, y, Xv, yv


def _tiny(r=3, alpha=0.7, seed=0):
    X, y, Xv, yv = _data(seed)
    return hypercleaning(X, y, Xv, yv, hidden=H, r=r, alpha=alpha, seed=seed, n_classes=C, dtype=jnp.float64)


def _theta(seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 1.0, N))


def _objective(problem, theta):
    task = task_at(problem, 0)
    return problem.outer_loss(theta, inner_path(problem, theta, task), task)


def _run(name, problem, theta):
    est = estimators.get(name)
    task = task_at(problem, 0)
    f = jax.jit(lambda p, th: est.estimate(p, th, task, jax.random.PRNGKey(0), est.init(th)))
    g, info, _ = f(problem, theta)
    return np.asarray(g), info


def test_structure():
    p = _tiny()
    assert p.name == "hypercleaning" and p.r == 3 and p.num_tasks == 1
    assert isinstance(p.tasks, HypercleaningTask)
    assert p.tasks.X_train.shape == (1, N, D) and p.tasks.y_train.dtype == jnp.int32
    np.testing.assert_array_equal(p.theta0, np.zeros(N))
    np.testing.assert_allclose(p.step_sizes, np.full(3, 0.7))
    for k in range(3):  # |Omega_T| = 1: every draw is the task
        t = p.sample_task(jax.random.PRNGKey(k))
        for a, b in zip(jax.tree_util.tree_leaves(t), jax.tree_util.tree_leaves(task_at(p, 0))):
            np.testing.assert_array_equal(a, b)
    # V(theta, T) = phi_0 regardless of theta
    task = task_at(p, 0)
    v0, v1 = p.init_inner(p.theta0, task), p.init_inner(_theta(), task)
    for a, b in zip(jax.tree_util.tree_leaves(v0), jax.tree_util.tree_leaves(v1)):
        np.testing.assert_array_equal(a, b)


def test_default_dtype_float32():
    X, y, Xv, yv = _data()
    p = hypercleaning(X, y, Xv, yv, hidden=H, r=2, n_classes=C)
    assert p.theta0.dtype == jnp.float32 and p.step_sizes.dtype == jnp.float32
    assert p.tasks.X_train.dtype == jnp.float32 and p.tasks.phi0["W1"].dtype == jnp.float32
    g, _ = _run("exact", p, p.theta0)
    assert g.dtype == np.float32 and np.all(np.isfinite(g))


def test_losses_match_definition():
    """L_in = (1/n) sum sigma(theta_i) CCE_i and L_out = mean validation CCE, checked in numpy."""
    X, y, Xv, yv = _data()
    p = _tiny()
    task = task_at(p, 0)
    th = _theta()
    phi = task.phi0
    W1, b1, W2, b2 = (np.asarray(phi[k]) for k in ("W1", "b1", "W2", "b2"))

    def ce(Xa, ya):
        z = np.maximum(Xa @ W1 + b1, 0) @ W2 + b2
        z = z - z.max(1, keepdims=True)
        return -(z[np.arange(len(ya)), ya] - np.log(np.exp(z).sum(1)))

    w = 1 / (1 + np.exp(-np.asarray(th)))
    np.testing.assert_allclose(p.inner_loss(th, phi, task), np.sum(w * ce(X, y)) / N, rtol=1e-12)
    np.testing.assert_allclose(p.outer_loss(th, phi, task), np.mean(ce(Xv, yv)), rtol=1e-12)
    np.testing.assert_allclose(cross_entropy(mlp_apply(phi, jnp.asarray(X)), jnp.asarray(y)), ce(X, y), rtol=1e-12)


@pytest.mark.parametrize("theta_seed", [None, 1, 2])
def test_exact_matches_finite_differences(theta_seed):
    """estimators.exact = central differences of L_out(theta, U_r(theta), T) (r = 3, float64), rel. err <= 1e-6."""
    p = _tiny(r=3)
    th = p.theta0 if theta_seed is None else _theta(theta_seed)
    g, info = _run("exact", p, th)
    assert int(info.grad_calls) == 4 and int(info.hvp_calls) == 3
    f = jax.jit(_objective)
    eps = 1e-5
    fd = np.array([(f(p, th.at[i].add(eps)) - f(p, th.at[i].add(-eps))) / (2 * eps) for i in range(N)])
    assert np.linalg.norm(g) > 1e-4  # the check has something to check
    assert np.linalg.norm(g - fd) <= 1e-6 * np.linalg.norm(fd), (g, fd)
    np.testing.assert_allclose(g, meta_gradient(p, th), rtol=1e-10, atol=1e-14)


def test_exact_me_equals_exact():
    p = _tiny(r=5)
    th = _theta(3)
    g, _ = _run("exact", p, th)
    g_me, info = _run("exact_me", p, th)
    assert int(info.grad_calls) == 6 + 5 * 4 // 2 and int(info.hvp_calls) == 5
    np.testing.assert_allclose(g_me, g, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("theta_seed", [None, 1])
def test_fom_is_identically_zero(theta_seed):
    """G_FO = dL_out/dtheta + (dV/dtheta)^T dL_out/dphi (eqs. 10-11) = 0 + 0 here, although G != 0.

    L_out does not involve theta and V(theta, T) = phi_0: FOM's bias D^2 equals the whole ||G||^2.
    """
    p = _tiny(r=4)
    th = p.theta0 if theta_seed is None else _theta(theta_seed)
    g_fo, info = _run("fom", p, th)
    g, _ = _run("exact", p, th)
    assert int(info.grad_calls) == 5
    np.testing.assert_array_equal(g_fo, np.zeros(N))
    assert np.linalg.norm(g) > 1e-4
    # UFOM (eqs. 12-13) is then (xi / q) G: zero unless the exact branch runs
    q = 0.3
    est = estimators.get("ufom", q=q)
    task = task_at(p, 0)
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    gu, iu, _ = jax.jit(jax.vmap(lambda k: est.estimate(p, th, task, k, est.init(th))))(keys)
    xi = np.asarray(iu.exact)
    assert 0 < xi.sum() < len(xi)
    np.testing.assert_allclose(gu, xi[:, None] * g[None] / q, rtol=1e-10, atol=1e-15)


def test_metrics():
    X, y_true, Xv, yv = _data()
    y_seen = y_true.copy()
    mask = np.array([True, False, True, False, False, False])
    y_seen[mask] = (y_seen[mask] + 1) % C
    p = hypercleaning(X, y_seen, Xv, yv, hidden=H, r=3, alpha=0.7, n_classes=C, dtype=jnp.float64)
    theta = jnp.array([-1.0, 0.5, -0.2, -3.0, 2.0, 0.0])  # flags 0, 2, 3: TP = 2, FP = 1, FN = 0
    Xt, yt = _data(5)[2:]
    m = jax.jit(hypercleaning_metrics)(p, theta, Xt, yt, jnp.asarray(mask))
    np.testing.assert_allclose(m.precision, 2 / 3)
    np.testing.assert_allclose(m.recall, 1.0)
    np.testing.assert_allclose(m.f1, 2 * 2 / (3 + 2))
    assert int(m.n_flagged) == 3
    phi = inner_path(p, theta, task_at(p, 0))
    pred = np.asarray(jnp.argmax(mlp_apply(phi, jnp.asarray(X)), -1))
    np.testing.assert_allclose(m.train_clean_accuracy, np.mean(pred[~mask] == y_true[~mask]))
    pred_t = np.asarray(jnp.argmax(mlp_apply(phi, jnp.asarray(Xt)), -1))
    np.testing.assert_allclose(m.test_accuracy, np.mean(pred_t == yt))
    np.testing.assert_allclose(m.test_loss, np.mean(cross_entropy(mlp_apply(phi, jnp.asarray(Xt)), jnp.asarray(yt))))
    np.testing.assert_allclose(m.val_loss, _objective(p, theta))
    # at theta0 nothing is flagged: F1 = precision = recall = 0 by convention
    m0 = hypercleaning_metrics(p, p.theta0, Xt, yt, jnp.asarray(mask))
    assert float(m0.f1) == float(m0.precision) == float(m0.recall) == 0.0


def test_bad_inputs():
    X, y, Xv, yv = _data()

    def build(**kw):
        args = dict(X_train=X, y_train=y, X_val=Xv, y_val=yv, hidden=H, r=2, n_classes=C)
        args.update(kw)
        return hypercleaning(**args)

    with pytest.raises(ValueError, match=r"y_train.shape = \(5,\)"):
        build(y_train=y[:-1])
    with pytest.raises(ValueError, match=r"y_val.shape = \(5,\)"):
        build(y_val=np.concatenate([yv, yv[:1]]))
    with pytest.raises(ValueError, match="X_val has 4 features"):
        build(X_val=Xv[:, :4])
    with pytest.raises(ValueError, match="X_train must be a non-empty 2-D"):
        build(X_train=X[0])
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=f"alpha = {bad!r}"):
            build(alpha=bad)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"r = {bad!r}"):
            build(r=bad)
    with pytest.raises(ValueError, match="hidden = 0"):
        build(hidden=0)
    with pytest.raises(ValueError, match="y_train must be in 0..2"):
        build(y_train=np.full(N, 3, np.int32))
    with pytest.raises(ValueError, match="integer labels"):
        build(y_train=y.astype(float))
    with pytest.raises(ValueError, match="X_train must hold finite"):
        build(X_train=np.where(X > 0.5, np.nan, X))
    with pytest.raises(ValueError, match="dtype"):
        build(dtype=jnp.int32)
