"""Outer SGD (Algorithm 1) under a budget of function calls, with per-step records.

    theta_k = theta_{k-1} - gamma_k G(theta_{k-1}, T_k),   T_k ~ p(T)

The whole run is one jitted scan, so many runs vectorise with `train_many` (vmap over theta_0 and keys).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ufom_bench.estimators import Estimator
from ufom_bench.estimators.core import COUNT, all_finite, norm
from ufom_bench.problem import Problem, inner_path, meta_gradient, meta_objective
from ufom_bench.errors import UserError

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]

__all__ = ["Record", "train", "train_many", "to_frame", "inverse", "inverse_sqrt", "constant"]


def inverse(c: float = 10.0) -> Schedule:
    """gamma_k = c / (k + 1), the schedule of the paper's synthetic experiment (c = 10); satisfies (5)."""
    _check_positive("c", c)
    return lambda k: c / (k + 1.0)


def inverse_sqrt(c: float = 1.0) -> Schedule:
    """gamma_k = c k^(-1/2), the rate setting of Theorem 1, part 2 (eq. 18)."""
    _check_positive("c", c)
    return lambda k: c / jnp.sqrt(k)


def constant(c: float) -> Schedule:
    """gamma_k = c (does not satisfy (5); for comparisons only)."""
    _check_positive("c", c)
    return lambda k: c * jnp.ones_like(k)


def check_count(name: str, value) -> int:
    """A whole number >= 1 (an int, or a float with an integer value such as 1e5), else UserError naming it."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                    and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise UserError(f"{name} must be a whole number >= 1, got {name} = {value!r}")
    return int(value)


def _check_positive(name, value):
    if not (np.isfinite(value) and value > 0):
        raise UserError(f"step size {name} must be finite and > 0, got {name} = {value!r}")


class Record(NamedTuple):
    """Per-step records of a run (leading axis: step k = 1..max_steps; runs of `train_many` add an axis).

    active: the step was taken (the budget was not yet spent). grad_calls, hvp_calls, calls: cumulative
    counts after the step (calls = grads + HVPs, the paper's "function calls"). exact, q, finite: from the
    estimate's Info. diverged: the step was refused (the estimate diverged, see `Info.diverged`, or the
    update would have made theta or the optimizer state non-finite); theta stayed where it was.
    n_diverged: cumulative number of refused steps.
    loss: M_r(theta_k) when the problem has a finite task set, else L_out on the step's task at theta_k.
    meta_grad_norm: |dM_r/dtheta(theta_k)| (exact, finite task sets only; NaN otherwise).
    theta_norm: ||theta_k||_2.
    """

    active: jax.Array
    grad_calls: jax.Array
    hvp_calls: jax.Array
    calls: jax.Array
    exact: jax.Array
    q: jax.Array
    finite: jax.Array
    diverged: jax.Array
    n_diverged: jax.Array
    loss: jax.Array
    meta_grad_norm: jax.Array
    theta_norm: jax.Array


def default_max_steps(problem: Problem, budget: int) -> int:
    """The most steps a budget allows: every estimate costs at least FOM's r + 1 calls (Proposition 1)."""
    import theory

    return int(budget) // theory.branch_total(problem.r, 0) + 1


def guarded_step(active, estimate: Callable, update: Callable, theta, est_state, opt_state):
    """One outer step of Algorithm 1 under a budget, shared by every outer loop of the suite.

    When ``active``: ``(g, info, new_state) = estimate()``, ``(new_theta, new_opt) = update(g, opt_state,
    theta)``. The step is refused when the estimate diverged (``info.diverged``) or when the new theta or
    optimizer state is not finite: theta, the estimator state and the optimizer state are then kept, so
    nothing diverged is applied or averaged in, and ``refused`` tells the caller to count it.
    When not active (budget spent): nothing is computed (``lax.cond``), ``info`` is zeros (finite) and
    ``refused`` is False. Returns (theta, est_state, opt_state, info, refused).
    """

    def take(_):
        g, info, new_state = estimate()
        new_theta, new_opt = update(g, opt_state, theta)
        refused = info.diverged | ~all_finite((new_theta, new_opt))
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(refused, b, a), new, old)
        return keep(new_theta, theta), keep(new_state, est_state), keep(new_opt, opt_state), info, refused

    def skip(_):
        info = jax.eval_shape(estimate)[1]
        zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), info)
        return theta, est_state, opt_state, zeros._replace(finite=jnp.ones((), bool)), jnp.zeros((), bool)

    return jax.lax.cond(active, take, skip, None)


def train(
    problem: Problem,
    estimator: Estimator,
    theta0: PyTree,
    key: jax.Array,
    *,
    budget: int,
    schedule: Schedule | None = None,
    optimizer: optax.GradientTransformation | None = None,
    max_steps: int | None = None,
    track_meta: bool | None = None,
) -> tuple[PyTree, Record]:
    """Run Algorithm 1 until ``budget`` function calls (grads + HVPs) are spent or ``max_steps`` steps.

    A step is taken while the calls spent so far are below the budget, so the last step may overshoot it
    by one estimate's cost (recorded). A diverged estimate (`Info.diverged`: a non-finite computation or a
    runaway inner loop) or a step that would make theta non-finite is refused, never applied: refused
    steps are flagged in ``Record.diverged`` and counted in ``Record.n_diverged`` (their calls are spent).

    Args:
      problem, estimator: the ABLO problem and a hypergradient estimator.
      theta0: the start. key: PRNG key for tasks and the estimator's randomness.
      budget: function calls to spend (a whole number > 0). schedule: gamma_k as a function of k = 1, 2, ... (default
        `inverse(10.0)`, the paper's 10/(k+1)); ignored when ``optimizer`` (an optax transformation) is given.
      max_steps: the scan length (default: the most steps the budget allows).
      track_meta: record M_r and |dM_r/dtheta| exactly (default: when the problem has a finite task set).
    Returns:
      (theta after the run, Record of arrays with one row per step).
    """
    budget = check_count("budget", budget)
    max_steps = default_max_steps(problem, budget) if max_steps is None else check_count("max_steps", max_steps)
    track_meta = problem.tasks is not None if track_meta is None else track_meta
    if track_meta and problem.tasks is None:
        raise UserError(f"track_meta needs a finite task set, and problem {problem.name!r} has none")
    schedule = inverse(10.0) if schedule is None else schedule
    opt_state0 = optimizer.init(theta0) if optimizer is not None else ()
    nan = jnp.full((), jnp.nan, jnp.result_type(float))

    def step(carry, k):
        theta, est_state, opt_state, grads, hvps, bad, key = carry
        key, k_task, k_est = jax.random.split(key, 3)
        active = grads + hvps < budget
        task = problem.sample_task(k_task)

        def update(g, opt_state, theta):
            if optimizer is None:
                gamma = schedule(k.astype(nan.dtype))
                return jax.tree_util.tree_map(lambda t, d: t - (gamma * d).astype(t.dtype), theta, g), opt_state
            updates, new_opt = optimizer.update(g, opt_state, theta)
            return optax.apply_updates(theta, updates), new_opt

        estimate = lambda: estimator.estimate(problem, theta, task, k_est, est_state)
        theta, est_state, opt_state, info, refused = guarded_step(active, estimate, update, theta, est_state,
                                                                  opt_state)
        grads, hvps = grads + info.grad_calls, hvps + info.hvp_calls
        bad = bad + refused.astype(COUNT)
        if track_meta:
            loss, mg = meta_objective(problem, theta), norm(meta_gradient(problem, theta))
        else:
            loss, mg = problem.outer_loss(theta, inner_path(problem, theta, task), task), nan
        rec = Record(active, grads, hvps, grads + hvps, info.exact, info.q, info.finite, refused, bad, loss, mg,
                     norm(theta))
        return (theta, est_state, opt_state, grads, hvps, bad, key), rec

    zero = jnp.zeros((), COUNT)
    carry0 = (theta0, estimator.init(theta0), opt_state0, zero, zero, zero, key)
    carry, records = jax.lax.scan(step, carry0, jnp.arange(1, max_steps + 1))
    return carry[0], records


def train_many(problem, estimator, theta0s, keys, **kwargs) -> tuple[PyTree, Record]:
    """`train` vmapped over starts ``theta0s`` (leading axis) and ``keys``, jitted as one program."""
    run = lambda th, k: train(problem, estimator, th, k, **kwargs)
    return jax.jit(jax.vmap(run))(theta0s, keys)


def to_frame(records: Record, **columns):
    """Records (one run, or many with a leading run axis) as a tidy pandas frame, one row per taken step."""
    import pandas as pd

    arrays = {f: np.asarray(v) for f, v in records._asdict().items()}
    if arrays["active"].ndim == 1:
        arrays = {f: v[None] for f, v in arrays.items()}
    runs, steps = arrays["active"].shape
    frame = pd.DataFrame({f: v.reshape(runs * steps) for f, v in arrays.items()})
    frame.insert(0, "step", np.tile(np.arange(1, steps + 1), runs))
    frame.insert(0, "run", np.repeat(np.arange(runs), steps))
    for name, value in columns.items():
        frame[name] = value
    return frame[frame["active"]].drop(columns="active").reset_index(drop=True)
