"""Divergent inner loops (issue 12, defect 2): flagged in Info, refused by the outer loop, excluded by Monte Carlo.

A diverged estimate is one whose computation was not finite or whose inner gradient norm grew by more than
DIVERGENCE_GROWTH along the path (`estimators.core`). These tests use the quadratic with a huge inner step
(|1 - alpha lambda| up to 99), where FOM used to return a finite 1.4e19 "gradient" with finite = True.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import flat
from ufom_bench import Problem, problems
from ufom_bench import estimators as E
from ufom_bench import montecarlo as mc
from ufom_bench.estimators import DIVERGENCE_GROWTH
from ufom_bench.train import constant, train

KEY = jax.random.PRNGKey(0)
ESTIMATORS = ["fom", "exact", "exact_me", "ufom", "adaptive_ufom"]


def _estimate(name, problem, theta, task, key=KEY):
    est = E.get(name)
    return est.estimate(problem, theta, task, key, est.init(theta))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_huge_inner_step_is_flagged_diverged(name, dtype, x64):
    problem = problems.quadratic(p=4, alpha=100.0, dtype=dtype)
    task = problem.sample_task(KEY)
    _, info, _ = _estimate(name, problem, problem.theta0, task)
    assert bool(info.diverged), (name, dtype)


def test_growth_rule_flags_a_finite_runaway_loop_in_float64(x64):
    # In float64 nothing overflows: every value is finite, and only the growth rule sees the divergence.
    problem = problems.quadratic(p=4, alpha=100.0, dtype=jnp.float64)
    g, info, _ = _estimate("fom", problem, problem.theta0, problem.sample_task(KEY))
    assert np.all(np.isfinite(flat(g))) and np.abs(flat(g)).max() > 1e15
    assert bool(info.finite) and bool(info.diverged)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_stable_inner_loop_is_not_flagged(name):
    problem = problems.quadratic(p=4)  # alpha = 1/L: |1 - alpha lambda| < 1
    for i in range(problem.num_tasks):
        task = jax.tree_util.tree_map(lambda x: x[i], problem.tasks)
        _, info, _ = _estimate(name, problem, problem.theta0, task, jax.random.PRNGKey(i))
        assert bool(info.finite) and not bool(info.diverged), (name, i)


def _scalar_problem(r: int, alpha: float) -> Problem:
    """L_in = phi^2 / 2, phi_0 = theta: dL_in/dphi(phi_j) = (1 - alpha)^j theta, so the peak growth over the
    r gradient evaluations is |1 - alpha|^(r - 1) exactly."""
    return Problem(
        inner_loss=lambda th, phi, t: 0.5 * jnp.sum(phi**2),
        outer_loss=lambda th, phi, t: 0.5 * jnp.sum((phi - 1.0) ** 2),
        init_inner=lambda th, t: th,
        sample_task=lambda key: jnp.zeros(()),
        step_sizes=jnp.full((r,), alpha),
        theta0=jnp.array([0.5]),
    )


def test_growth_threshold_is_exactly_the_documented_factor():
    assert DIVERGENCE_GROWTH == 1e3
    # |1 - alpha| = 2: growth 2^9 = 512 < 1e3 at r = 10, 2^10 = 1024 > 1e3 at r = 11.
    for r, expected in [(10, False), (11, True)]:
        _, info, _ = _estimate("fom", _scalar_problem(r, 3.0), jnp.array([0.5]), jnp.zeros(()))
        assert bool(info.finite) and bool(info.diverged) == expected, r


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", ["fom", "ufom", "adaptive_ufom"])
def test_train_refuses_every_diverged_step(name, dtype, x64):
    problem = problems.quadratic(p=4, alpha=100.0, dtype=dtype)
    theta, rec = train(problem, E.get(name), problem.theta0, KEY, budget=200, track_meta=False)
    active = np.asarray(rec.active)
    assert active.sum() > 0 and np.asarray(rec.diverged)[active].all()
    assert int(rec.n_diverged[-1]) == active.sum()
    np.testing.assert_array_equal(flat(theta), flat(problem.theta0))  # nothing was applied


def test_train_never_makes_theta_nonfinite():
    # A stable inner loop but an outer step that grows theta geometrically (float32): once the losses at
    # theta overflow, the estimates are refused; theta stays finite and the refusals are counted.
    problem = problems.quadratic(p=4, dtype=jnp.float32)
    theta, rec = train(problem, E.fom(), problem.theta0, KEY, budget=3000, schedule=constant(50.0),
                       track_meta=False)
    active = np.asarray(rec.active)
    norms = np.asarray(rec.theta_norm)[active]
    assert np.isfinite(norms).all() and np.all(np.isfinite(flat(theta)))
    assert norms.max() > 1e15  # it did run away
    refused = np.asarray(rec.diverged)[active]
    assert refused.sum() > 0 and int(rec.n_diverged[-1]) == refused.sum()
    np.testing.assert_array_equal(np.diff(norms)[refused[1:]], 0.0)  # a refused step leaves theta alone


def test_train_refuses_a_finite_estimate_whose_step_overflows():
    # The estimate is finite and not diverged, but gamma * G overflows float32: the step is refused.
    problem = problems.quadratic(p=4, dtype=jnp.float32)
    theta, rec = train(problem, E.fom(), problem.theta0, KEY, budget=55, schedule=constant(3e38),
                       track_meta=False)
    active = np.asarray(rec.active)
    assert np.asarray(rec.finite)[active].all() and np.asarray(rec.diverged)[active].all()
    assert int(rec.n_diverged[-1]) == active.sum() == 5
    np.testing.assert_array_equal(flat(theta), flat(problem.theta0))


def test_montecarlo_excludes_a_finite_runaway_task(x64):
    # Task a = 3 grows the inner gradient by 2^11 = 2048 over r = 12 steps: finite in float64, diverged.
    a = jnp.array([0.5, 3.0])
    problem = Problem(
        inner_loss=lambda th, phi, t: 0.5 * t * jnp.sum(phi**2),
        outer_loss=lambda th, phi, t: 0.5 * jnp.sum((phi - 1.0) ** 2),
        init_inner=lambda th, t: th,
        sample_task=lambda key: a[jax.random.randint(key, (), 0, 2)],
        step_sizes=jnp.ones((12,)),
        theta0=jnp.array([0.7, -1.2]),
        tasks=a,
    )
    m = mc.moments(problem, problem.theta0)
    assert m.n == 2 and m.n_diverged == 1
    cr = 0.5**12  # the stable task alone: G_FO = c^r theta - 1, G = c^r G_FO
    fo = cr * np.asarray(problem.theta0) - 1.0
    np.testing.assert_allclose(m.d2, np.sum((fo - cr * fo) ** 2), rtol=1e-12)
