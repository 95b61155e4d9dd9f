"""`estimators.meta_batch`: the mean of per-task estimates (float64), counts = size x per-task counts, one
coin per meta-step when the key is shared, Adaptive UFOM's state reduced over the batch, the key stream
the outer loop gives it, and one compilation across meta-steps. The tasks are few-shot image tasks with a
small MLP (the semantics do not depend on the model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ufom_bench import estimators
from ufom_bench.data.fewshot import TaskSampler
from ufom_bench.errors import UserError
from ufom_bench.problems.fewshot import fewshot
from ufom_bench.train import train

pytestmark = pytest.mark.usefixtures("x64")


def _problem(r=2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    return fewshot(TaskSampler.from_numpy(images, name="tiny"), model="mlp", hidden=(4,), m=2, k=1, r=r, alpha=0.4,
                   dtype=jnp.float64)


def test_mean_of_per_task_estimates_and_counts():
    problem = _problem()
    key = jax.random.PRNGKey(5)
    est = estimators.exact()
    batch = estimators.meta_batch(est, 3)
    assert batch.draws_tasks and not est.draws_tasks
    g, info, _ = jax.jit(batch.estimate)(problem, problem.theta0, None, key, ())
    # the same tasks by hand: (k_tasks, k_est) = split(key), task b from the b-th subkey of k_tasks
    k_tasks, k_est = jax.random.split(key)
    singles = [est.estimate(problem, problem.theta0, problem.sample_task(kk), k_est, ())
               for kk in jax.random.split(k_tasks, 3)]
    mean = jax.tree_util.tree_map(lambda *x: sum(x) / 3, *[s[0] for s in singles])
    np.testing.assert_allclose(ravel_pytree(g)[0], ravel_pytree(mean)[0], rtol=1e-13, atol=1e-15)
    one = singles[0][1]
    assert (int(info.grad_calls), int(info.hvp_calls)) == (3 * int(one.grad_calls), 3 * int(one.hvp_calls))
    assert (int(one.grad_calls), int(one.hvp_calls)) == (problem.r + 1, problem.r)  # exact: r + 1 grads, r HVPs


@pytest.mark.parametrize("shared", [True, False])
def test_ufom_coin_shared_or_per_task(shared):
    """shared_key: one coin xi for the batch (0 or B tasks exact); independent keys: any number."""
    problem = _problem(r=3)
    r, B = problem.r, 6
    fn = jax.jit(lambda key: estimators.meta_batch(estimators.ufom(q=0.5), B, shared_key=shared).estimate(
        problem, problem.theta0, None, key, ()))
    seen = set()
    for i in range(8):
        _, info, _ = fn(jax.random.PRNGKey(i))
        n_exact = int(info.hvp_calls) // r  # tasks whose exact branch ran
        assert int(info.grad_calls) == B * (r + 1) + n_exact * r * (r - 1) // 2
        assert bool(info.exact) == (n_exact > 0)
        if shared:
            assert n_exact in (0, B)
        seen.add(n_exact)
    assert len(seen) > 1  # both kinds of meta-step occur in 8 draws (q = 1/2)
    if not shared:
        assert seen - {0, B}  # a wrong (shared) coin would never give a partial batch


def test_adaptive_ufom_state_reduced_over_the_batch():
    """Always exact (q_min = 1): every task updates; the state is the mean of the per-task updates."""
    problem = _problem()
    inner = estimators.adaptive_ufom(q_min=1.0)
    batch = estimators.meta_batch(inner, 4)
    key = jax.random.PRNGKey(0)
    state0 = batch.init(problem.theta0)
    _, _, state = jax.jit(batch.estimate)(problem, problem.theta0, None, key, state0)
    k_tasks, k_est = jax.random.split(key)
    per_task = [inner.estimate(problem, problem.theta0, problem.sample_task(kk), k_est, state0)[2]
                for kk in jax.random.split(k_tasks, 4)]
    assert int(state.k_upd) == 1 and state.d2_sm.shape == ()
    np.testing.assert_allclose(float(state.d2_sm), np.mean([float(s.d2_sm) for s in per_task]), rtol=1e-13)
    np.testing.assert_allclose(float(state.v2_sm), np.mean([float(s.v2_sm) for s in per_task]), rtol=1e-13)


def test_train_gives_one_key_per_meta_step_and_compiles_once():
    """In `train` a meta-batch estimator gets (key, k) = split(carried key) and no task; its steps are one
    compiled scan (no retrace per meta-step)."""
    problem = _problem()
    batch = estimators.meta_batch(estimators.fom(), 3)
    key = jax.random.PRNGKey(2)
    run = jax.jit(lambda k: train(problem, batch, problem.theta0, k, budget=1, max_steps=3, schedule=lambda k: 0.1))
    theta, rec = run(key)
    g, info, _ = batch.estimate(problem, problem.theta0, None, jax.random.split(key)[1], ())
    by_hand = jax.tree_util.tree_map(lambda t, d: t - 0.1 * d, problem.theta0, g)
    np.testing.assert_allclose(ravel_pytree(theta)[0], ravel_pytree(by_hand)[0], rtol=1e-13)
    assert int(np.asarray(rec.active).sum()) == 1 and int(rec.calls[0]) == int(info.grad_calls) == 3 * (problem.r + 1)
    assert np.isnan(np.asarray(rec.loss)).all()  # no task of its own to record a loss on
    run(jax.random.PRNGKey(3))
    assert run._cache_size() == 1


def test_bad_arguments():
    with pytest.raises(UserError, match="size must be an integer >= 1, got size = 0"):
        estimators.meta_batch(estimators.fom(), 0)
    with pytest.raises(UserError, match="already draws its own tasks"):
        estimators.meta_batch(estimators.meta_batch(estimators.fom(), 2), 2)
    with pytest.raises(UserError, match="wraps an Estimator"):
        estimators.meta_batch(lambda *a: None, 2)


@pytest.mark.parametrize("shared_key", [True, False])
def test_map_strategy_equals_vmap(shared_key):
    """`lax.map` over the tasks gives the vmapped estimate, Info and state (float64), for UFOM's coin
    shared or per task, and Adaptive UFOM's state."""
    problem = _problem()
    key = jax.random.PRNGKey(11)
    for est in (estimators.ufom(0.5), estimators.adaptive_ufom()):
        state = est.init(problem.theta0)
        out = {s: jax.jit(estimators.meta_batch(est, 3, shared_key=shared_key, strategy=s).estimate)(
            problem, problem.theta0, None, key, state) for s in ("vmap", "map")}
        for a, b in zip(jax.tree_util.tree_leaves(out["vmap"]), jax.tree_util.tree_leaves(out["map"])):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, atol=1e-14)


def test_bad_strategy_is_named():
    with pytest.raises(UserError, match="strategy = 'scan'"):
        estimators.meta_batch(estimators.fom(), 2, strategy="scan")
