"""Outer SGD (Algorithm 1) under a budget of function calls, with per-step records.

    theta_k = theta_{k-1} - gamma_k G(theta_{k-1}, T_k),   T_k ~ p(T)

The one outer loop of the suite (every experiment runs it): the whole run is one jitted scan, so many runs
vectorise with `train_many` (vmap over theta_0 and keys). Step sizes follow a schedule of the step number or
of the calls spent, or an optax optimizer (alone, or as the direction a schedule scales); theta may be any
pytree; a meta-batch is an estimator (`estimators.meta_batch`). Evaluation budgets: ``snapshots`` keep theta
after given numbers of calls within the same scan. A run can also go in segments (`start`, then `resume`
from the returned `Carry` with a traced ``stop``), one compiled program for every segment.
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

__all__ = ["Carry", "Record", "Snapshots", "start", "resume", "train", "train_many", "to_frame", "inverse",
           "inverse_sqrt", "constant", "linear_to_zero", "guarded_step"]


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


def linear_to_zero(c, total) -> Schedule:
    """gamma(x) = c (1 - min(x / total, 1)): annealed linearly to 0 over ``total`` (calls, with
    ``schedule_on="calls"``), in the dtype of ``c``. ``c`` and ``total`` may be traced (one compiled program
    for every value); concrete values are checked."""
    if not isinstance(c, jax.core.Tracer):
        _check_positive("c", float(c))
    if not isinstance(total, jax.core.Tracer):
        _check_positive("total", float(total))
    dtype = jnp.result_type(c)

    def gamma(x):
        frac = jnp.clip(jnp.asarray(x).astype(dtype) / total, 0.0, 1.0)
        return (c * (1.0 - frac)).astype(dtype)

    return gamma


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
    loss: M_r(theta_k) when the problem has a finite task set (``track_meta``), else L_out on the step's task
    at theta_k (NaN with ``track_loss=False`` or an estimator that draws its own tasks).
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
    from ufom_bench import theory

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


class Carry(NamedTuple):
    """The state of a run between steps (and between `resume` calls): theta, the estimator's and the
    optimizer's state, cumulative grad and HVP calls, refused steps, steps taken, and the PRNG key."""

    theta: PyTree
    est_state: PyTree
    opt_state: PyTree
    grads: jax.Array
    hvps: jax.Array
    n_diverged: jax.Array
    steps: jax.Array
    key: jax.Array


class Snapshots(NamedTuple):
    """theta after each evaluation budget b_p of a run (every leaf gets a leading axis P) and the calls
    actually spent when it was taken (P,)."""

    theta: PyTree
    calls: jax.Array


def start(estimator: Estimator, theta0: PyTree, key: jax.Array,
          optimizer: optax.GradientTransformation | None = None) -> Carry:
    """The carry of a run before its first step (zero calls, the estimator's and optimizer's initial state)."""
    zero = jnp.zeros((), COUNT)
    opt_state0 = optimizer.init(theta0) if optimizer is not None else ()
    return Carry(theta0, estimator.init(theta0), opt_state0, zero, zero, zero, zero, key)


def train(
    problem: Problem,
    estimator: Estimator,
    theta0: PyTree,
    key: jax.Array,
    *,
    budget: int,
    schedule: Schedule | None = None,
    schedule_on: str = "steps",
    optimizer: optax.GradientTransformation | None = None,
    max_steps: int | None = None,
    track_meta: bool | None = None,
    track_loss: bool = True,
    snapshots=None,
):
    """Run Algorithm 1 until ``budget`` function calls (grads + HVPs) are spent or ``max_steps`` steps.

    A step is taken while the calls spent so far are below the budget, so the last step may overshoot it
    by one estimate's cost (recorded). A diverged estimate (`Info.diverged`: a non-finite computation or a
    runaway inner loop) or a step that would make theta non-finite is refused, never applied: refused
    steps are flagged in ``Record.diverged`` and counted in ``Record.n_diverged`` (their calls are spent).

    Args:
      problem, estimator: the ABLO problem and a hypergradient estimator (a `meta_batch` too).
      theta0: the start (any pytree). key: PRNG key for tasks and the estimator's randomness.
      budget: function calls to spend (a whole number > 0).
      schedule: the step size gamma as a function of the step number k = 1, 2, ... (``schedule_on="steps"``)
        or of the calls spent before the step (``schedule_on="calls"``, e.g. `linear_to_zero`).
        Without ``optimizer``: theta_k = theta_{k-1} - gamma G (default `inverse(10.0)`, the paper's 10/(k+1)).
      optimizer: an optax transformation. Alone, its updates are applied as they are (``optax.adam(lr)``);
        with a ``schedule``, its output u is a direction and theta_k = theta_{k-1} - gamma u
        (``optax.scale_by_adam()`` with a step size annealed over the calls spent).
      max_steps: the scan length (default: the most steps the budget allows).
      track_meta: record M_r and |dM_r/dtheta| exactly (default: when the problem has a finite task set).
      track_loss: without track_meta, record L_out at phi_r on the step's task (r uncounted grads a step);
        NaN when False or when the estimator draws its own tasks.
      snapshots: evaluation budgets b_1 <= ... <= b_P <= budget: keep theta after each (see `resume`).
    Returns:
      (theta after the run, Record with one row per step), and the `Snapshots` when ``snapshots`` is given.
    """
    budget = check_count("budget", budget)
    max_steps = default_max_steps(problem, budget) if max_steps is None else check_count("max_steps", max_steps)
    out = resume(problem, estimator, start(estimator, theta0, key, optimizer), stop=budget, max_steps=max_steps,
                 schedule=schedule, schedule_on=schedule_on, optimizer=optimizer, track_meta=track_meta,
                 track_loss=track_loss, snapshots=snapshots)
    return (out[0].theta,) + tuple(out[1:])


def resume(
    problem: Problem,
    estimator: Estimator,
    carry: Carry,
    *,
    stop,
    max_steps: int,
    schedule: Schedule | None = None,
    schedule_on: str = "steps",
    optimizer: optax.GradientTransformation | None = None,
    track_meta: bool | None = None,
    track_loss: bool = True,
    snapshots=None,
):
    """The loop of `train` from ``carry`` (`start`, or the carry a previous call returned): ``max_steps``
    scan steps, each taken while the calls spent are below ``stop`` (a traced integer is fine, so the
    segments of a run between checkpoints are one compiled program). The other arguments are `train`'s.

    One step: split the carried key into (key, k_task, k_est), draw T_k ~ p(T) with k_task and estimate
    with k_est (an estimator that draws its own tasks, `Estimator.draws_tasks`, gets (key, k_est) and no
    task); then `guarded_step`. The key advances on every scan step, taken or not.

    Snapshots: a run's prefix does not depend on its budget, so the theta after b calls (the final theta of
    the same run with budget b) is the theta at the top of the first step that finds >= b calls spent: it
    is copied there, in the scan; a budget not reached before the scan ends gets the final theta.
    Returns (carry, Record), and the `Snapshots` when ``snapshots`` is given.
    """
    track_meta = problem.tasks is not None if track_meta is None else track_meta
    if track_meta and problem.tasks is None:
        raise UserError(f"track_meta needs a finite task set, and problem {problem.name!r} has none")
    if schedule_on not in ("steps", "calls"):
        raise UserError(f"schedule_on must be 'steps' or 'calls', got schedule_on = {schedule_on!r}")
    if schedule is None and optimizer is None:
        schedule = inverse(10.0)
    nan = jnp.full((), jnp.nan, jnp.result_type(float))
    budgets = None if snapshots is None else _check_snapshots(snapshots, stop)

    def update(g, opt_state, theta, gamma):
        if optimizer is None:
            return jax.tree_util.tree_map(lambda t, d: t - (gamma * d).astype(t.dtype), theta, g), opt_state
        updates, new_opt = optimizer.update(g, opt_state, theta)
        if schedule is None:
            return optax.apply_updates(theta, updates), new_opt
        return jax.tree_util.tree_map(lambda t, d: t - (gamma * d).astype(t.dtype), theta, updates), new_opt

    def step(state, _):
        c, snaps = state
        spent = c.grads + c.hvps
        if budgets is not None:
            snaps = _take_snapshots(snaps, c.theta, spent, budgets)
        if estimator.draws_tasks:
            key, k_est = jax.random.split(c.key)
            task = None
        else:
            key, k_task, k_est = jax.random.split(c.key, 3)
            task = problem.sample_task(k_task)
        active = spent < stop
        gamma = None
        if schedule is not None:
            gamma = schedule((c.steps + 1).astype(nan.dtype) if schedule_on == "steps" else spent)
        estimate = lambda: estimator.estimate(problem, c.theta, task, k_est, c.est_state)
        theta, est_state, opt_state, info, refused = guarded_step(
            active, estimate, lambda g, o, th: update(g, o, th, gamma), c.theta, c.est_state, c.opt_state)
        grads, hvps = c.grads + info.grad_calls, c.hvps + info.hvp_calls
        bad = c.n_diverged + refused.astype(COUNT)
        if track_meta:
            loss, mg = meta_objective(problem, theta), norm(meta_gradient(problem, theta))
        elif track_loss and task is not None:
            loss, mg = problem.outer_loss(theta, inner_path(problem, theta, task), task), nan
        else:
            loss, mg = nan, nan
        rec = Record(active, grads, hvps, grads + hvps, info.exact, info.q, info.finite, refused, bad, loss, mg,
                     norm(theta))
        new = Carry(theta, est_state, opt_state, grads, hvps, bad, c.steps + active.astype(COUNT), key)
        return (new, snaps), rec

    snaps0 = None if budgets is None else _empty_snapshots(carry.theta, budgets.shape[0])
    (carry, snaps), records = jax.lax.scan(step, (carry, snaps0), None, length=max_steps)
    if budgets is None:
        return carry, records
    return carry, records, _finish_snapshots(snaps, carry)


def _check_snapshots(points, stop) -> jax.Array:
    pts = np.asarray(points)
    concrete = not isinstance(stop, jax.core.Tracer)
    if (pts.ndim != 1 or pts.size < 1 or np.any(np.diff(pts) < 0) or pts[0] < 1
            or (concrete and pts[-1] > stop)):
        raise UserError(f"snapshots must be increasing budgets in [1, budget = {stop}], got {points!r}")
    return jnp.asarray(pts, COUNT)


def _empty_snapshots(theta, p: int):
    zeros = jax.tree_util.tree_map(lambda x: jnp.zeros((p,) + jnp.shape(x), jnp.result_type(x)), theta)
    return Snapshots(zeros, jnp.zeros((p,), COUNT)), jnp.zeros((p,), bool)


def _at(mask, leaf):
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _take_snapshots(snaps, theta, spent, budgets):
    (kept, calls), taken = snaps
    hit = ~taken & (spent >= budgets)
    kept = jax.tree_util.tree_map(lambda s, t: jnp.where(_at(hit, s), t[None], s), kept, theta)
    return Snapshots(kept, jnp.where(hit, spent, calls)), taken | hit


def _finish_snapshots(snaps, carry: Carry) -> Snapshots:
    (kept, calls), taken = snaps
    kept = jax.tree_util.tree_map(lambda s, t: jnp.where(_at(taken, s), s, t[None]), kept, carry.theta)
    return Snapshots(kept, jnp.where(taken, calls, carry.grads + carry.hvps))


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
