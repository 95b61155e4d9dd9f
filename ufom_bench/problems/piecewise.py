"""The scalar piecewise-polynomial problems of Section 5.1 / Figure 1, and the Theorem 2 counterexample.

Each task i has one convex C^2 loss f_i(phi) = f(phi; a_i, b_i, A) (NOTES.md, "UFOM synthetic experiment"),
used as both inner and outer loss; s = p = 1, V(theta, T) = theta, so L_in = L_out = f_i does not depend on
theta. With c = b/a and z = |phi - c|:

    f = a z^2 / 2                                           z <= A          (quadratic: f' = a phi - b)
    f = -a (z-A)^3/6 + a (z-A)^2/2 + a A z - a A^2/2        A < z <= A + 1  (cubic blend)
    f = (a/2 + a A) z - a/6 - a A^2/2 - a A/2               z > A + 1       (linear tails)

so f is convex and C^2, |f'| <= a (A + 1/2), 0 <= f'' <= a and f'' is a-Lipschitz (Assumption 1).
In closed form, with u = clip(z - A, 0, 1):  f' = sign(phi - c) a (min(z, A + 1) - u^2/2),  f'' = a (1 - u).

For this problem the two gradients of Section 2 are (eqs. 6-11 with V = theta, dL_out/dtheta = 0):
    G_FO(theta, T_i) = f_i'(phi_r),    G(theta, T_i) = f_i'(phi_r) prod_{j=1}^r (1 - alpha_j f_i''(phi_{j-1})).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from ufom_bench.problem import FROM_TASKS, Problem
from ufom_bench.problems.synthetic import (
    BiasVariance,
    check_finite,
    check_int,
    check_positive,
    check_probs,
    check_vector,
    resolve_dtype,
)
from ufom_bench.errors import UserError

__all__ = [
    "PiecewiseTask",
    "piecewise_loss",
    "piecewise_grad",
    "piecewise_hess",
    "piecewise_tasks",
    "piecewise_fo_gradient",
    "piecewise_exact_gradient",
    "piecewise_bias_variance",
    "CounterexampleParams",
    "counterexample_parameters",
    "counterexample",
    "CounterexamplePoints",
    "counterexample_points",
]


class PiecewiseTask(NamedTuple):
    """One task of a piecewise problem (a row of ``Problem.tasks``; stacked on axis 0 in the task set).

    Attributes:
      a: curvature a_i > 0 of the quadratic zone.
      b: linear coefficient b_i; the minimiser of f_i is c_i = b_i / a_i.
      A: half-width A > 0 of the quadratic zone (common to all tasks, stored per row).
    """

    a: jax.Array
    b: jax.Array
    A: jax.Array


# ---------------------------------------------------------------------------------------------------------
# The loss and its closed-form derivatives.


def piecewise_loss(phi, a, b, A) -> jax.Array:
    """The convex C^2 piecewise polynomial f(phi; a, b, A) of NOTES.md (Figure 1a), elementwise.

    With d = phi - b/a, z = |d|, u = z - A, w = z - A - 1:
        f = a d^2 / 2                                  z <= A
        f = a A^2/2 + a A u + a u^2/2 - a u^3/6        A < z <= A + 1   (= NOTES' cubic, expanded at z = A)
        f = a A^2/2 + a A + a/3 + a (A + 1/2) w        z > A + 1        (= NOTES' linear tail)
    Each branch is a polynomial in d, u or w (no cancellation of large terms), and the inputs of the branches
    not taken are replaced by 0 before evaluation (the "double where"), so `jax.grad` and `jax.hessian` are
    exact and finite everywhere, including d = 0 and the knots z = A, A + 1 (which belong to the lower zone).

    Args:
      phi: inner parameter(s).
      a: curvature, > 0 (not checked: traced values cannot be).
      b: linear coefficient; the minimiser is c = b / a.
      A: half-width of the quadratic zone, > 0.

    Returns:
      f(phi), broadcast over the arguments.
    """
    d = phi - b / a
    z = jnp.abs(d)
    in_quad = z <= A
    in_cubic = z <= A + 1
    dq = jnp.where(in_quad, d, 0.0)
    u = jnp.where(in_cubic, z - A, 0.0)
    w = jnp.where(in_cubic, 0.0, z - A - 1)
    quad = 0.5 * a * dq**2
    cubic = a * A * A / 2 + a * A * u + a * u**2 / 2 - a * u**3 / 6
    linear = a * A * A / 2 + a * A + a / 3 + a * (A + 0.5) * w
    return jnp.where(in_quad, quad, jnp.where(in_cubic, cubic, linear))


def _fprime(xp, phi, a, b, A):
    d = phi - b / a
    z = xp.abs(d)
    u = xp.clip(z - A, 0.0, 1.0)
    return xp.sign(d) * a * (xp.minimum(z, A + 1) - u**2 / 2)


def _fsecond(xp, phi, a, b, A):
    return a * (1 - xp.clip(xp.abs(phi - b / a) - A, 0.0, 1.0))


def piecewise_grad(phi, a, b, A) -> jax.Array:
    """f'(phi; a, b, A) in closed form (no autodiff): sign(d) a (min(z, A + 1) - u^2/2), u = clip(z - A, 0, 1).

    Equals a phi - b in the quadratic zone and +-a (A + 1/2) on the linear tails (NOTES.md).

    Args:
      phi, a, b, A: as in `piecewise_loss`.

    Returns:
      f'(phi), broadcast over the arguments.
    """
    return _fprime(jnp, phi, a, b, A)


def piecewise_hess(phi, a, b, A) -> jax.Array:
    """f''(phi; a, b, A) in closed form (no autodiff): a (1 - clip(|phi - b/a| - A, 0, 1)), in [0, a].

    Args:
      phi, a, b, A: as in `piecewise_loss`.

    Returns:
      f''(phi), broadcast over the arguments.
    """
    return _fsecond(jnp, phi, a, b, A)


# ---------------------------------------------------------------------------------------------------------
# The problem.


def _inner_loss(theta, phi, task: PiecewiseTask):
    return piecewise_loss(phi, task.a, task.b, task.A)


def _outer_loss(theta, phi, task: PiecewiseTask):
    return piecewise_loss(phi, task.a, task.b, task.A)


def _init_inner(theta, task: PiecewiseTask):
    return theta


def piecewise_tasks(
    a: Sequence[float],
    b: Sequence[float],
    A: float,
    alpha: float,
    r: int,
    probs: Sequence[float] | None = None,
    theta0: float = 0.0,
    dtype=None,
    name: str = "piecewise",
) -> Problem:
    """A finite set of scalar piecewise-polynomial tasks (Section 5.1): L_in = L_out = f_i(phi), V = theta.

    Task i is f_i = f(.; a_i, b_i, A) (`piecewise_loss`) with probability probs[i]; inner GD takes r steps of
    constant size alpha (eqs. 2-3): phi_0 = theta, phi_j = phi_{j-1} - alpha f_i'(phi_{j-1}).
    theta and phi are scalars (shape ()). Figure 1d uses a = (0.5, 1.5), b = (0, 10), A = 400, r = 10.

    Args:
      a: curvatures a_i > 0, one per task.
      b: linear coefficients b_i (minimisers c_i = b_i / a_i), same length as ``a``.
      A: half-width of the quadratic zone, > 0, common to all tasks.
      alpha: inner step size, > 0 (use ``problem.replace(step_sizes=...)`` for non-constant steps).
      r: number of inner steps, >= 1.
      probs: task probabilities (uniform when None).
      theta0: default starting theta.
      dtype: float dtype of every array; None means JAX's default float.
      name: label used in results tables.

    Returns:
      A `Problem` whose ``tasks`` is a stacked `PiecewiseTask`.

    Raises:
      ValueError: naming the bad value (a_i <= 0, A <= 0, alpha <= 0, r < 1, mismatched lengths, bad probs).
    """
    dt = resolve_dtype(dtype)
    a = check_vector("a", a)
    b = check_vector("b", b, a.shape[0])
    bad = np.flatnonzero(~(a > 0))
    if bad.size:
        raise UserError(f"every a_i must be > 0, got a_{bad[0] + 1} = {float(a[bad[0]])!r} (a = {a.tolist()!r})")
    A = check_positive("A", A)
    alpha = check_positive("alpha", alpha)
    r = check_int("r", r, 1)
    p = check_probs(probs, a.shape[0])
    theta0 = check_finite("theta0", theta0)
    n = a.shape[0]
    tasks = PiecewiseTask(
        a=jnp.asarray(a, dt), b=jnp.asarray(b, dt), A=jnp.asarray(np.full((n,), A), dt)
    )
    probs_arr = jnp.asarray(p, dt)
    return Problem(
        inner_loss=_inner_loss,
        outer_loss=_outer_loss,
        init_inner=_init_inner,
        sample_task=FROM_TASKS,
        step_sizes=jnp.full((r,), alpha, dt),
        theta0=jnp.asarray(theta0, dt),
        tasks=tasks,
        task_probs=probs_arr,
        name=name,
    )


# ---------------------------------------------------------------------------------------------------------
# Closed-form gradients (no autodiff).


def _path_and_product(problem: Problem, theta, task: PiecewiseTask):
    """phi_r and prod_j (1 - alpha_j f''(phi_{j-1})), by the closed-form f', f''."""

    def step(carry, alpha):
        phi, prod = carry
        h = piecewise_hess(phi, task.a, task.b, task.A)
        phi = phi - alpha * piecewise_grad(phi, task.a, task.b, task.A)
        return (phi, prod * (1 - alpha * h)), None

    theta = jnp.asarray(theta, problem.step_sizes.dtype)
    (phi, prod), _ = jax.lax.scan(step, (theta, jnp.ones_like(theta)), problem.step_sizes)
    return phi, prod


def piecewise_fo_gradient(problem: Problem, theta, task: PiecewiseTask) -> jax.Array:
    """G_FO(theta, T_i) = f_i'(phi_r) (eqs. 10-11 with V = theta, L_out = f_i), from closed-form f'.

    Args:
      problem: a problem built by `piecewise_tasks` or `counterexample` (its ``step_sizes`` are used).
      theta: scalar outer parameter.
      task: one `PiecewiseTask` row.

    Returns:
      The scalar FOM gradient.
    """
    phi, _ = _path_and_product(problem, theta, task)
    return piecewise_grad(phi, task.a, task.b, task.A)


def piecewise_exact_gradient(problem: Problem, theta, task: PiecewiseTask) -> jax.Array:
    """grad_theta L_out(theta, U^(r)(theta, T_i), T_i) = f_i'(phi_r) prod_{j=1}^r (1 - alpha_j f_i''(phi_{j-1})).

    Eqs. (6-9) with V = theta and L_in = L_out = f_i independent of theta; closed-form f', f'', no autodiff.

    Args:
      problem: a problem built by `piecewise_tasks` or `counterexample`.
      theta: scalar outer parameter.
      task: one `PiecewiseTask` row.

    Returns:
      The scalar exact ABLO gradient.
    """
    phi, prod = _path_and_product(problem, theta, task)
    return piecewise_grad(phi, task.a, task.b, task.A) * prod


def piecewise_bias_variance(problem: Problem, theta) -> BiasVariance:
    """D^2(theta) = E_T (G_FO - G)^2 and V^2(theta) = E_T G^2 (eqs. 14, 16 before the sup), exact over tasks.

    Figure 1d takes the max of these over a grid of theta (vmap this function over the grid).

    Args:
      problem: a problem built by `piecewise_tasks` or `counterexample`.
      theta: scalar outer parameter.

    Returns:
      `BiasVariance(d2, v2)`.
    """
    if problem.tasks is None:
        raise UserError(f"problem {problem.name!r} exposes no finite task set")
    fo = jax.vmap(lambda t: piecewise_fo_gradient(problem, theta, t))(problem.tasks)
    ex = jax.vmap(lambda t: piecewise_exact_gradient(problem, theta, t))(problem.tasks)
    w = problem.task_probs
    return BiasVariance(d2=jnp.sum(w * (fo - ex) ** 2), v2=jnp.sum(w * ex**2))


# ---------------------------------------------------------------------------------------------------------
# The Theorem 2 counterexample.


class CounterexampleParams(NamedTuple):
    """Parameters of the Theorem 2 construction (float64 numpy).

    Attributes:
      a: (a_1, a_2).
      b: (b_1, b_2).
      A: half-width of the quadratic zone, |b_1/a_1 - b_2/a_2| + 1.
      p: p_i = (1 - alpha a_i)^r, the contraction of r inner steps in the quadratic zone.
    """

    a: np.ndarray
    b: np.ndarray
    A: float
    p: np.ndarray


def counterexample_parameters(
    D: float = 0.06, r: int = 10, alpha: float = 0.1, a: Sequence[float] = (0.5, 1.5), b1: float = 0.0
) -> CounterexampleParams:
    """b_2 and A of the Theorem 2 / Figure 1 construction for a target gap D (NOTES.md).

    In the quadratic zone, with c_i = b_i/a_i and two equally likely tasks, phi_r - c_i = p_i (theta - c_i), so
        E G_FO(theta)   = (1/2) sum_i a_i p_i (theta - c_i)     (zero at theta_FO = sum p_i b_i / sum a_i p_i),
        dM_r/dtheta     = (1/2) sum_i a_i p_i^2 (theta - c_i),
        dM_r/dtheta(theta_FO) = (1/2) a_2 (c_2 - c_1) K,  with
        K = (a_1 p_1^2 + a_2 p_2^2) p_2 / (a_1 p_1 + a_2 p_2) - p_2^2 = a_1 p_1 p_2 (p_1 - p_2) / (a_1 p_1 + a_2 p_2).
    Choosing b_2 = a_2 b_1 / a_1 + 2 sqrt(2D) / |K| makes |dM_r/dtheta(theta_FO)| = sqrt(2D), i.e.
    |dM_r/dtheta|^2 = 2D > D at FOM's limit (Theorem 2). With b_1 = 0 this is NOTES' b_2 = sqrt(2D) 2 / |K|;
    the a_2 b_1 / a_1 shift keeps the gap exact for b_1 != 0 (M_r is translation invariant in c).
    A = |b_1/a_1 - b_2/a_2| + 1 keeps theta_FO, the stationary point and every inner path from them inside
    the quadratic zone of both tasks.

    Args:
      D: target gap, > 0.
      r: inner steps, >= 1.
      alpha: inner step size, > 0, with alpha a_i < 1 (monotone contraction; p_i > 0).
      a: the two curvatures, > 0 and distinct (K = 0 when p_1 = p_2).
      b1: b_1 (the figure uses 0).

    Returns:
      `CounterexampleParams`.

    Raises:
      ValueError: naming the bad value.
    """
    D = check_positive("D", D)
    r = check_int("r", r, 1)
    alpha = check_positive("alpha", alpha)
    a = check_vector("a", a)
    if a.shape[0] != 2:
        raise UserError(f"the counterexample has two tasks: a must have length 2, got a = {a.tolist()!r}")
    for i in range(2):
        if not a[i] > 0:
            raise UserError(f"every a_i must be > 0, got a_{i + 1} = {float(a[i])!r}")
        if not alpha * a[i] < 1:
            raise UserError(
                f"the construction needs alpha * a_i < 1, got alpha * a_{i + 1} = {alpha!r} * {float(a[i])!r}"
                f" = {float(alpha * a[i])!r}"
            )
    b1 = check_finite("b1", b1)
    p = (1 - alpha * a) ** r
    s1 = a[0] * p[0] + a[1] * p[1]
    K = a[0] * p[0] * p[1] * (p[0] - p[1]) / s1
    if not abs(K) > 0:
        raise UserError(
            f"the construction needs p_1 != p_2 (distinct a_i), got a = {a.tolist()!r}, p = {p.tolist()!r}"
        )
    b2 = a[1] * b1 / a[0] + 2 * np.sqrt(2 * D) / abs(K)
    b = np.array([b1, b2])
    A = float(abs(b[0] / a[0] - b[1] / a[1]) + 1)
    return CounterexampleParams(a=a, b=b, A=A, p=p)


def counterexample(
    D: float = 0.06,
    r: int = 10,
    alpha: float = 0.1,
    a: Sequence[float] = (0.5, 1.5),
    b1: float = 0.0,
    dtype=None,
    theta0: float = 0.0,
) -> Problem:
    """The Theorem 2 / Figure 1a-c counterexample: FOM-SGD stalls where |dM_r/dtheta| = sqrt(2D).

    Two equally likely piecewise tasks (`piecewise_tasks`) with b_2 and A from `counterexample_parameters`.
    `counterexample_points(problem)` gives FOM's fixed point and the true stationary point of M_r.

    Args:
      D: target gap, > 0 (the figure: 0.06).
      r: inner steps, >= 1 (the figure: 10).
      alpha: constant inner step size, > 0, alpha a_i < 1 (the figure: 0.1).
      a: the two curvatures (the figure: (0.5, 1.5)).
      b1: b_1 (the figure: 0).
      dtype: float dtype; None means JAX's default float.
      theta0: default starting theta (the figure draws theta_0 ~ U[-10, 30]).

    Returns:
      A `Problem` named "counterexample".

    Raises:
      ValueError: naming the bad value (D <= 0, r < 1, alpha <= 0, a_i <= 0, alpha a_i >= 1, a_1 = a_2).
    """
    prm = counterexample_parameters(D=D, r=r, alpha=alpha, a=a, b1=b1)
    return piecewise_tasks(prm.a, prm.b, prm.A, alpha, r, theta0=theta0, dtype=dtype, name="counterexample")


class CounterexamplePoints(NamedTuple):
    """Where FOM stops and where M_r is stationary, for a scalar piecewise problem (float64).

    Attributes:
      fom_fixed_point: theta_FO with E_T G_FO(theta_FO, T) = 0.
      stationary_point: theta* with dM_r/dtheta(theta*) = 0.
      meta_grad_at_fom: dM_r/dtheta(theta_FO) (sqrt(2D) in magnitude for `counterexample`).
      fom_in_quadratic_zone: whether every inner path from theta_FO stays in the quadratic zones, i.e.
        whether the closed form theta_FO = sum_i pi_i p_i b_i / sum_i pi_i a_i p_i was valid (otherwise
        theta_FO was found by root finding).
    """

    fom_fixed_point: float
    stationary_point: float
    meta_grad_at_fom: float
    fom_in_quadratic_zone: bool


def _np_task_arrays(problem: Problem):
    if problem.tasks is None or not isinstance(problem.tasks, PiecewiseTask):
        raise UserError(f"problem {problem.name!r} is not a piecewise problem (tasks must be a PiecewiseTask)")
    t = problem.tasks
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    return f64(t.a), f64(t.b), f64(t.A), f64(problem.task_probs), f64(problem.step_sizes)


def _np_gradients(theta: float, a, b, A, alphas):
    """(G_FO, G) per task at theta, float64 numpy, closed-form f' and f''."""
    phi = np.full_like(a, theta)
    prod = np.ones_like(a)
    for alpha in alphas:
        prod = prod * (1 - alpha * _fsecond(np, phi, a, b, A))
        phi = phi - alpha * _fprime(np, phi, a, b, A)
    fo = _fprime(np, phi, a, b, A)
    return fo, fo * prod


def _root(fn, lo: float, hi: float) -> float:
    for _ in range(200):
        flo, fhi = fn(lo), fn(hi)
        if flo == 0:
            return lo
        if fhi == 0:
            return hi
        if np.sign(flo) != np.sign(fhi):
            root = scipy.optimize.brentq(fn, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
            return float(root)
        width = hi - lo
        lo, hi = lo - width, hi + width
    raise RuntimeError(f"no sign change of the gradient found in [{lo!r}, {hi!r}]")


def counterexample_points(problem: Problem) -> CounterexamplePoints:
    """FOM's fixed point and the stationary point of M_r for a scalar piecewise problem, in float64.

    In the quadratic zone phi_r - c_i = p_i (theta - c_i), p_i = prod_j (1 - alpha_j a_i), so
    E_T G_FO = sum_i pi_i a_i p_i (theta - c_i) vanishes at theta_FO = sum_i pi_i p_i b_i / sum_i pi_i a_i p_i
    (used when every inner path from theta_FO stays in the quadratic zones, else theta_FO is found by Brent's
    method on E_T G_FO). NOTES.md writes this equation as sum_i a_i p_i (p_i theta - b_i/a_i) = 0, which has
    one factor p_i too many (its root is not where E_T G_FO vanishes). The stationary point theta* is found by
    Brent's method on dM_r/dtheta = E_T G (Assumption 2), computed in float64 numpy from the closed-form
    f', f'' (independent of JAX's x64 setting). Works for any `piecewise_tasks` problem.

    Args:
      problem: a problem built by `counterexample` or `piecewise_tasks`.

    Returns:
      `CounterexamplePoints`.
    """
    a, b, A, w, alphas = _np_task_arrays(problem)
    c = b / a
    p_steps = np.cumprod(1 - np.outer(alphas, a), axis=0)  # (r, n): contraction after j steps
    p = p_steps[-1]
    theta_fo = float(np.sum(w * p * b) / np.sum(w * a * p))
    # |phi_j - c_i| = |prod_{k<=j} (1 - alpha_k a_i)| |theta - c_i| while the path stays in the zone.
    reach = np.maximum(np.max(np.abs(p_steps), axis=0), 1.0) * np.abs(theta_fo - c)
    in_zone = bool(np.all(reach <= A))
    lo, hi = float(np.min(c) - 1), float(np.max(c) + 1)
    if not in_zone:
        theta_fo = _root(lambda t: float(np.sum(w * _np_gradients(t, a, b, A, alphas)[0])), lo, hi)
    meta_grad = lambda t: float(np.sum(w * _np_gradients(t, a, b, A, alphas)[1]))  # noqa: E731
    theta_star = _root(meta_grad, lo, hi)
    return CounterexamplePoints(
        fom_fixed_point=theta_fo,
        stationary_point=theta_star,
        meta_grad_at_fom=meta_grad(theta_fo),
        fom_in_quadratic_zone=in_zone,
    )
