"""Algorithm 1 under a function-call budget: counts, vectorisation, non-finite handling, optax, snapshots at
evaluation budgets, schedules driven by calls, resuming from a carry (one compiled program per segment)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import flat, pytree_problem
from ufom_bench import estimators as E
from ufom_bench.errors import UserError
from ufom_bench.train import inverse, linear_to_zero, resume, start, to_frame, train, train_many

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

KEY = jax.random.PRNGKey(3)
EXACT_ME_R3 = 4 + 3 + 3  # calls of one exact_me estimate at r = 3: r + 1 + r(r-1)/2 grads and r HVPs


def test_budget_and_cumulative_counts():
    problem = pytree_problem(r=4)
    budget = 200
    theta, rec = jax.jit(lambda k: train(problem, E.exact_me(), problem.theta0, k, budget=budget))(KEY)
    active = np.asarray(rec.active)
    calls = np.asarray(rec.calls)[active]
    per_step = 5 + 6 + 4  # r + 1 + r(r-1)/2 grads and r HVPs
    assert np.array_equal(np.diff(np.concatenate([[0], calls])), np.full(active.sum(), per_step))
    assert calls[-1] - per_step < budget <= calls[-1]  # stops once the budget is spent
    assert np.all(np.asarray(rec.calls)[~active] == calls[-1])  # nothing spent after the stop
    assert np.isfinite(np.asarray(rec.meta_grad_norm)[active]).all()


def test_sgd_step_is_algorithm_1():
    problem = pytree_problem(r=3)
    est = E.exact()
    theta1, rec = train(problem, est, problem.theta0, KEY, budget=1, schedule=inverse(10.0))
    # replay the single step by hand: same key splitting as train
    _, k_task, k_est = jax.random.split(KEY, 3)
    task = problem.sample_task(k_task)
    g, _, _ = est.estimate(problem, problem.theta0, task, k_est, ())
    by_hand = jax.tree_util.tree_map(lambda t, d: t - 10.0 / 2.0 * d, problem.theta0, g)
    np.testing.assert_allclose(flat(theta1), flat(by_hand), rtol=1e-12)
    assert int(np.asarray(rec.active).sum()) == 1


def test_train_many_matches_single_runs():
    problem = pytree_problem(r=3)
    starts = jax.tree_util.tree_map(lambda x: jnp.stack([x, x + 0.1, x - 0.2]), problem.theta0)
    keys = jax.random.split(KEY, 3)
    est = E.ufom(0.3)
    thetas, recs = train_many(problem, est, starts, keys, budget=150)
    for i in range(3):
        start = jax.tree_util.tree_map(lambda x: x[i], starts)
        theta, rec = train(problem, est, start, keys[i], budget=150)
        np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda x: x[i], thetas)), flat(theta), rtol=1e-10)
        np.testing.assert_array_equal(np.asarray(recs.calls[i]), np.asarray(rec.calls))
    frame = to_frame(recs, estimator="ufom")
    assert set(frame["run"]) == {0, 1, 2} and (frame["estimator"] == "ufom").all()


def test_nonfinite_estimates_are_counted_and_not_applied():
    problem = pytree_problem(alphas=jnp.full((30,), 50.0))  # a divergent inner loop at every step
    theta, rec = train(problem, E.fom(), problem.theta0, KEY, budget=31 * 5)
    active = np.asarray(rec.active)
    assert int(rec.n_diverged[-1]) == 5 and active.sum() == 5 and not np.asarray(rec.finite)[active].any()
    assert np.asarray(rec.diverged)[active].all()
    np.testing.assert_array_equal(flat(theta), flat(problem.theta0))


def test_optax_optimizer_option():
    problem = pytree_problem(r=3)
    theta, rec = train(problem, E.exact(), problem.theta0, KEY, budget=400, optimizer=optax.adam(0.05))
    mg = np.asarray(rec.meta_grad_norm)[np.asarray(rec.active)]
    assert mg[-1] < mg[0]


@pytest.mark.parametrize("budget", [0, -5, None, 0.5, float("inf"), float("nan"), "100", True])
def test_bad_budget(budget):
    problem = pytree_problem(r=3)
    with pytest.raises(UserError, match=f"budget must be a whole number >= 1, got budget = {re.escape(repr(budget))}$"):
        train(problem, E.fom(), problem.theta0, KEY, budget=budget)


def test_whole_float_budget_is_accepted():
    problem = pytree_problem(r=3)
    _, rec = train(problem, E.fom(), problem.theta0, KEY, budget=8.0)
    assert int(np.asarray(rec.active).sum()) == 2  # 4 calls per FOM step


def test_bad_schedule_constant():
    with pytest.raises(ValueError, match="c = -1"):
        inverse(-1)


def test_snapshots_equal_final_thetas_of_smaller_budgets():
    """theta at budget b, copied inside one run, == the final theta of a run with budget b (pytree theta)."""
    problem = pytree_problem(r=3)
    est = E.adaptive_ufom(q_min=0.3)  # random cost per step: budgets fall inside and between steps
    points = (1, 20, 21, 95, 150)
    run = jax.jit(lambda k: train(problem, est, problem.theta0, k, budget=150, snapshots=points, max_steps=40,
                                      track_meta=False))
    _, rec, snaps = run(KEY)
    assert jax.tree_util.tree_structure(snaps.theta) == jax.tree_util.tree_structure(problem.theta0)
    # the runs with budget b: train's loop from its start, with the budget traced (one compilation)
    rerun = jax.jit(lambda b: resume(problem, est, start(est, problem.theta0, KEY), stop=b, max_steps=40,
                                         track_meta=False))
    for i, b in enumerate(points):
        carry, rec_b = rerun(jnp.asarray(b, jnp.int32))
        theta = carry.theta
        np.testing.assert_array_equal(flat(jax.tree_util.tree_map(lambda x: x[i], snaps.theta)), flat(theta))
        assert int(snaps.calls[i]) == int(np.asarray(rec_b.calls)[np.asarray(rec_b.active)][-1]) >= b
    np.testing.assert_array_equal(np.asarray(rec.calls), np.asarray(rec_b.calls))  # the last b is the budget
    for bad in ((60, 30), (60, 151), (0, 10)):
        with pytest.raises(UserError, match="increasing budgets"):
            train(problem, est, problem.theta0, KEY, budget=150, snapshots=bad)


def test_schedule_driven_by_calls():
    """gamma = c (1 - calls/budget) on the calls spent before the step: with exact_me's fixed cost per step
    that is the step schedule c (1 - (k - 1) cost / budget); an optimizer's direction is scaled by it."""
    problem = pytree_problem(r=3)
    budget, c = 100, 0.5
    run = lambda **kw: train(problem, E.exact_me(), problem.theta0, KEY, budget=budget, track_meta=False, **kw)
    by_calls = run(schedule=linear_to_zero(c, budget), schedule_on="calls")
    by_steps = run(schedule=lambda k: c * (1.0 - (k - 1.0) * EXACT_ME_R3 / budget))
    np.testing.assert_allclose(flat(by_calls[0]), flat(by_steps[0]), rtol=1e-13)
    wrong = run(schedule=linear_to_zero(c, budget))
    assert not np.allclose(flat(wrong[0]), flat(by_calls[0]), rtol=1e-6)  # on steps it is a different schedule
    adam = run(optimizer=optax.scale_by_adam(), schedule=linear_to_zero(c, budget), schedule_on="calls")
    assert not np.allclose(flat(adam[0]), flat(by_calls[0]), rtol=1e-6)
    with pytest.raises(UserError, match="schedule_on"):
        run(schedule_on="time")


def test_linear_to_zero():
    gamma = linear_to_zero(0.2, 100)
    np.testing.assert_allclose([gamma(0), gamma(50), gamma(100), gamma(150)], [0.2, 0.1, 0.0, 0.0])
    with pytest.raises(UserError, match="total = 0"):
        linear_to_zero(0.2, 0)


def test_resume_in_segments_is_one_run_and_one_program():
    """Segments (`resume` from the carried state, ``stop`` traced) compile once and, when no segment ends
    with idle scan steps (each idle step still advances the key), reproduce the one-segment run."""
    problem = pytree_problem(r=3)
    est, opt = E.exact_me(), optax.adam(0.05)
    segment = jax.jit(lambda carry, stop: resume(problem, est, carry, stop=stop, max_steps=4, optimizer=opt,
                                                           track_meta=False))
    carry = start(est, problem.theta0, KEY, opt)
    recs = []
    for i in (1, 2, 3):
        carry, rec = segment(carry, jnp.asarray(4 * i * EXACT_ME_R3, jnp.int32))
        recs.append(rec)
        assert int(carry.steps) == 4 * i and int(carry.grads + carry.hvps) == 4 * i * EXACT_ME_R3
    assert segment._cache_size() == 1
    theta, rec = train(problem, est, problem.theta0, KEY, budget=12 * EXACT_ME_R3, max_steps=12, optimizer=opt,
                       track_meta=False)
    np.testing.assert_array_equal(flat(carry.theta), flat(theta))
    np.testing.assert_array_equal(np.concatenate([np.asarray(r.loss) for r in recs]), np.asarray(rec.loss))
