"""The hypercleaning experiment (simulations/hypercleaning.py): columns, no retracing, truncated K = 1."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simulations import hypercleaning as hc
from ufom_bench import Problem, problems
from ufom_bench.estimators._core import Estimator
from ufom_bench.problem import inner_path, task_at
from ufom_bench.train import train

EVAL_COLUMNS = {"record", "budget", "calls", "step", "val_loss", "test_accuracy", "test_loss",
                "train_clean_accuracy", "f1", "precision", "recall", "lr", "r"}
STEP_COLUMNS = {"record", "step", "calls", "val_loss", "q", "exact"}


@pytest.mark.parametrize("name", hc.ESTIMATORS)
def test_smoke_cell_has_every_column(name):
    df = hc.cell_hypercleaning({"scale": "smoke", "estimator": name, "seed": 0})
    ev, st = df[df["record"] == "eval"], df[df["record"] == "step"]
    assert EVAL_COLUMNS <= set(df.columns) and STEP_COLUMNS <= set(df.columns)
    s = hc.SCALES["smoke"]
    assert len(ev) == len(s["points"]) + 1 and ev["calls"].iloc[0] == 0
    assert np.all(np.diff(ev["calls"].to_numpy()) >= 0) and ev["calls"].iloc[-1] >= s["budget"]
    assert np.all(np.isfinite(ev[["val_loss", "test_accuracy", "test_loss", "train_clean_accuracy", "f1"]].to_numpy()))
    assert len(st) > 0 and np.all(np.isfinite(st["q"])) and np.all(np.diff(st["calls"].to_numpy()) > 0)
    if name == "fom":  # the FOM hypergradient is identically zero here: theta never moves, nothing is flagged
        assert np.all(ev["f1"] == 0) and np.allclose(ev["val_loss"], ev["val_loss"].iloc[0])
    if name == "adaptive_ufom":
        assert np.all(st["q"] >= hc.ADAPTIVE["q_min"] - 1e-6) and np.all(st["q"] <= 1)
    if name == "exact_me":
        assert np.all(st["q"] == 1)


def _counting(est: Estimator, traces: list) -> Estimator:
    def estimate(*args):
        traces.append(1)
        return est.estimate(*args)

    return Estimator(est.init, estimate, est.name)


def _tiny_hypercleaning(r=3, n=12, dtype=jnp.float64):
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(n, 5))
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return problems.hypercleaning(X, y, X[:6], y[:6], hidden=4, r=r, alpha=1.0, n_classes=3, dtype=dtype)


@pytest.mark.parametrize("name", hc.ESTIMATORS)
def test_no_retrace_across_outer_steps(name):
    problem = _tiny_hypercleaning(dtype=jnp.float32)
    traces = []
    est = _counting(hc.make_estimator(name), traces)
    run = jax.jit(lambda th, k: train(problem, est, th, k, budget=400, max_steps=30, optimizer=optax.adam(0.1),
                                      track_meta=False))
    _, rec = run(problem.theta0, jax.random.PRNGKey(0))
    n_traced = len(traces)
    assert int(np.asarray(rec.active).sum()) > 5  # many outer steps ...
    assert n_traced <= 2  # ... one trace (plus the shape-only trace of the skip branch), not one per step
    run(problem.theta0 + 0.1, jax.random.PRNGKey(1))  # new values: same compiled program
    assert len(traces) == n_traced


def test_truncated_k1_closed_form_scalar():
    """L_in = phi^2/2 - theta phi, L_out = (phi - 1)^2/2, V = 0: phi_j = (1-a) phi_{j-1} + a theta,
    d2 L_in/dtheta dphi = -1, so G = -a * (-1) * (phi_r - 1) = a (phi_r - 1)."""
    a, r, theta = 0.3, 4, 0.7
    problem = Problem(lambda th, ph, t: 0.5 * ph**2 - th * ph, lambda th, ph, t: 0.5 * (ph - 1.0) ** 2,
                      lambda th, t: jnp.zeros(()), lambda k: jnp.zeros(()), jnp.full((r,), a), jnp.asarray(0.0))
    phi = 0.0
    for _ in range(r):
        phi = (1 - a) * phi + a * theta
    g, info, _ = hc.truncated_k1().estimate(problem, jnp.asarray(theta), jnp.zeros(()), jax.random.PRNGKey(0), ())
    assert float(g) == pytest.approx(a * (phi - 1.0), rel=1e-12)
    assert int(info.grad_calls) == r + 1 and int(info.hvp_calls) == 1


def test_truncated_k1_matches_explicit_jacobian_on_tiny_hypercleaning():
    """G = -alpha_r J^T b with J = d(dL_in/dphi)/dtheta at phi_{r-1} built as a dense Jacobian; at r = 1 it is
    the exact gradient (jax.grad through the unrolled inner step)."""
    problem = _tiny_hypercleaning(r=3)
    task = task_at(problem, 0)
    theta = jnp.linspace(-1.0, 1.0, problem.theta0.shape[0])
    alphas = problem.step_sizes
    phi = task.phi0
    for alpha in alphas[:-1]:
        phi = jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, jax.grad(problem.inner_loss, 1)(theta, phi, task))
    phi_prev = phi
    grad_in = jax.grad(problem.inner_loss, 1)(theta, phi_prev, task)
    phi_r = jax.tree_util.tree_map(lambda p, d: p - alphas[-1] * d, phi_prev, grad_in)
    b = jax.grad(problem.outer_loss, 1)(theta, phi_r, task)
    flat = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
    J = jax.jacfwd(lambda th: flat(jax.grad(problem.inner_loss, 1)(th, phi_prev, task)))(theta)  # (p, n)
    want = -alphas[-1] * J.T @ flat(b)
    g, info, _ = hc.truncated_k1().estimate(problem, theta, task, jax.random.PRNGKey(0), ())
    np.testing.assert_allclose(np.asarray(g), np.asarray(want), rtol=1e-9, atol=1e-14)
    assert np.abs(np.asarray(want)).max() > 0

    one = _tiny_hypercleaning(r=1)
    task1 = task_at(one, 0)
    exact = jax.grad(lambda th: one.outer_loss(th, inner_path(one, th, task1), task1))(theta)
    g1, _, _ = hc.truncated_k1().estimate(one, theta, task1, jax.random.PRNGKey(0), ())
    np.testing.assert_allclose(np.asarray(g1), np.asarray(exact), rtol=1e-9, atol=1e-14)


def test_configs_and_scales():
    for scale in hc.SCALES:
        cfgs = hc.configs(scale)
        assert {c["estimator"] for c in cfgs} == set(hc.ESTIMATORS)
        assert len(cfgs) == len(hc.ESTIMATORS) * len(hc.SCALES[scale]["seeds"])
    with pytest.raises(ValueError, match="unknown scale"):
        hc.configs("huge")
    with pytest.raises(ValueError, match="unknown estimator"):
        hc.make_estimator("nope")
