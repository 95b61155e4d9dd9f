"""A p-dimensional quadratic ABLO problem with closed forms for every quantity of Sections 2 and 4.2.

Task T = (A_T, B_T, c_T, y_T, t_T, v_T) with A_T symmetric positive definite; a matrix E and lam >= 0 are
shared by all tasks. theta, phi in R^p (s = p >= 2):

    V(theta, T)             = E theta + v_T
    L_in(theta, phi, T)     = 1/2 phi^T A_T phi - phi^T (B_T theta + c_T)
    L_out(theta, phi, T)    = 1/2 ||phi - y_T||^2 + lam/2 ||theta - t_T||^2

Every term of eqs. (6-9) is then non-zero: dV/dtheta = E, d2L_in/dphi2 = A_T, (d2L_in/dtheta dphi)^T = -B_T^T,
dL_out/dtheta = lam (theta - t_T). Inner GD (eq. 3) is the affine recursion
    phi_j = (I - alpha_j A_T) phi_{j-1} + alpha_j (B_T theta + c_T),
so phi_r = J_r theta + k_r with J_0 = E, J_j = (I - alpha_j A_T) J_{j-1} + alpha_j B_T, k_0 = v_T,
k_j = (I - alpha_j A_T) k_{j-1} + alpha_j c_T, and
    G(theta, T)     = lam (theta - t_T) + J_r^T (phi_r - y_T)          (exact, eqs. 6-9)
    G_FO(theta, T)  = lam (theta - t_T) + E^T (phi_r - y_T)            (eqs. 10-11)
M_r is a quadratic in theta over the finite task set.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ufom_bench.problem import FROM_TASKS, Problem
from ufom_bench.problems.synthetic import (
    BiasVariance,
    check_finite,
    check_int,
    check_positive,
    resolve_dtype,
)
from ufom_bench.errors import UserError

__all__ = [
    "QuadraticTask",
    "QuadraticForm",
    "quadratic",
    "quadratic_inner_path",
    "quadratic_exact_gradient",
    "quadratic_fo_gradient",
    "quadratic_response",
    "quadratic_meta_objective",
    "quadratic_meta_gradient",
    "quadratic_bias_variance",
    "quadratic_meta_form",
    "quadratic_stationary_point",
]


class QuadraticTask(NamedTuple):
    """One task of the quadratic problem (a row of ``Problem.tasks``; leaves stacked on axis 0 there).

    Attributes:
      A: (p, p) symmetric positive definite inner curvature, eigenvalues in [1/cond, 1].
      B: (p, p) coupling: the mixed derivative (d2 L_in / dtheta dphi)^T is -B.
      c: (p,) inner linear term.
      y: (p,) outer target for phi.
      t: (p,) outer target for theta.
      v: (p,) offset of the inner start V(theta, T) = E theta + v.
      E: (p, p) inner-start matrix, the same for every task (copied into each row so that a task is
        self-contained; this costs n_tasks p^2 floats, like A and B).
      lam: () weight of the theta term of L_out, the same for every task.
    """

    A: jax.Array
    B: jax.Array
    c: jax.Array
    y: jax.Array
    t: jax.Array
    v: jax.Array
    E: jax.Array
    lam: jax.Array


class QuadraticForm(NamedTuple):
    """M_r(theta) = 1/2 theta^T hessian theta - linear^T theta + const."""

    hessian: jax.Array
    linear: jax.Array
    const: jax.Array


def _inner_loss(theta, phi, task: QuadraticTask):
    return 0.5 * phi @ (task.A @ phi) - phi @ (task.B @ theta + task.c)


def _outer_loss(theta, phi, task: QuadraticTask):
    return 0.5 * jnp.sum((phi - task.y) ** 2) + 0.5 * task.lam * jnp.sum((theta - task.t) ** 2)


def _init_inner(theta, task: QuadraticTask):
    return task.E @ theta + task.v


def _step_sizes(r, alpha, step_sizes) -> np.ndarray:
    if step_sizes is not None:
        if alpha is not None:
            raise UserError(f"give alpha or step_sizes, not both: got alpha = {alpha!r} and step_sizes")
        s = np.asarray(step_sizes)  # values are validated by Problem (finite, > 0, 1-D, r >= 1)
        if r is not None and s.ndim == 1 and check_int("r", r, 1) != s.shape[0]:
            raise UserError(f"r = {r!r} does not match len(step_sizes) = {s.shape[0]}")
        return s
    r = 10 if r is None else check_int("r", r, 1)
    alpha = 1.0 if alpha is None else check_positive("alpha", alpha)
    return np.full((r,), alpha)


def quadratic(
    p: int = 10,
    n_tasks: int = 8,
    r: int | None = None,
    alpha: float | None = None,
    step_sizes: Sequence[float] | None = None,
    seed: int = 0,
    cond: float = 10.0,
    lam: float = 0.1,
    dtype=None,
) -> Problem:
    """A random, well-conditioned quadratic ABLO problem with s = p (see the module docstring).

    Per task: A_T = Q diag(lambda) Q^T with Q Haar-orthogonal and lambda log-uniform in [1/cond, 1] (both
    ends included, so cond(A_T) = cond and L = 1); B_T, and E = I + G / (2 sqrt(p)), from Gaussians
    G / sqrt(p) (operator norms O(1) for every p); c_T, y_T, t_T, v_T with N(0, 1/p) entries (norms near 1).
    The default inner step alpha_j = 1/L = 1 is stable (|1 - alpha lambda| < 1). Built in float64 numpy from
    ``seed`` (the same tasks for every dtype and JAX setting), then cast. Memory: 3 n_tasks p^2 floats
    (A, B, E).

    Args:
      p: dimension of theta and phi, >= 2.
      n_tasks: number of equally likely tasks, >= 1.
      r: inner steps, >= 1 (default 10; the length of ``step_sizes`` when those are given).
      alpha: constant inner step size, > 0 (default 1 = 1/L). Exclusive with ``step_sizes``.
      step_sizes: explicit (alpha_1, ..., alpha_r), each > 0 (may vary with j).
      seed: seed of the numpy generator.
      cond: condition number of every A_T, >= 1.
      lam: weight of lam/2 ||theta - t_T||^2 in L_out, >= 0 (> 0 makes M_r strongly convex).
      dtype: float dtype of every array; None means JAX's default float.

    Returns:
      A `Problem` named "quadratic" whose ``tasks`` is a stacked `QuadraticTask`; theta0 = 0.

    Raises:
      ValueError: naming the bad value (p < 2, n_tasks < 1, r < 1, alpha <= 0, a step size <= 0, cond < 1,
        lam < 0, alpha and step_sizes both given).
    """
    dt = resolve_dtype(dtype)
    p = check_int("p", p, 2)
    n = check_int("n_tasks", n_tasks, 1)
    alphas = _step_sizes(r, alpha, step_sizes)
    cond = check_finite("cond", cond)
    if cond < 1:
        raise UserError(f"cond must be >= 1, got cond = {cond!r}")
    lam = check_finite("lam", lam)
    if lam < 0:
        raise UserError(f"lam must be >= 0, got lam = {lam!r}")
    seed = check_int("seed", seed, 0)

    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(p)
    A = np.empty((n, p, p))
    for i in range(n):
        q, rr = np.linalg.qr(rng.standard_normal((p, p)))
        q *= np.sign(np.diag(rr))  # Haar measure
        eig = np.exp(rng.uniform(np.log(1.0 / cond), 0.0, size=p))
        eig[:2] = (1.0 / cond, 1.0)
        a = (q * eig) @ q.T
        A[i] = 0.5 * (a + a.T)
    B = rng.standard_normal((n, p, p)) * scale
    c, y, t, v = (rng.standard_normal((n, p)) * scale for _ in range(4))
    E = np.eye(p) + 0.5 * scale * rng.standard_normal((p, p))

    def arr(x):
        return jnp.asarray(x, dtype=dt)

    tasks = QuadraticTask(
        A=arr(A), B=arr(B), c=arr(c), y=arr(y), t=arr(t), v=arr(v),
        E=arr(np.broadcast_to(E, (n, p, p))), lam=arr(np.full((n,), lam)),
    )
    probs = arr(np.full((n,), 1.0 / n))
    return Problem(
        inner_loss=_inner_loss,
        outer_loss=_outer_loss,
        init_inner=_init_inner,
        sample_task=FROM_TASKS,
        step_sizes=arr(alphas),
        theta0=jnp.zeros((p,), dt),
        tasks=tasks,
        task_probs=probs,
        name="quadratic",
    )


# ---------------------------------------------------------------------------------------------------------
# Closed forms (matrix algebra only, no autodiff).


def quadratic_inner_path(problem: Problem, theta: jax.Array, task: QuadraticTask) -> jax.Array:
    """phi_r by the explicit recursion phi_j = phi_{j-1} - alpha_j (A phi_{j-1} - B theta - c), phi_0 = E theta + v.

    Args:
      problem: a problem built by `quadratic` (its ``step_sizes`` are used).
      theta: (p,) outer parameters.
      task: one `QuadraticTask` row.

    Returns:
      (p,) phi_r.
    """
    h = task.B @ theta + task.c

    def step(phi, alpha):
        return phi - alpha * (task.A @ phi - h), None

    phi, _ = jax.lax.scan(step, task.E @ theta + task.v, problem.step_sizes)
    return phi


def quadratic_exact_gradient(problem: Problem, theta: jax.Array, task: QuadraticTask) -> jax.Array:
    """grad_theta L_out(theta, U^(r)(theta, T), T) = lam (theta - t) + J_r^T (phi_r - y), in O(r p^2).

    J_r^T b is accumulated backwards as in Algorithm 2 (the iterates are not needed, L_in being quadratic):
    b_r = phi_r - y; for j = r..1: g += alpha_j B^T b_j (eq. 7 with d2L_in/dtheta dphi = -B^T),
    b_{j-1} = (I - alpha_j A)^T b_j (eq. 9); finally g += E^T b_0. Equal to the forward form
    J_r^T (phi_r - y) with `quadratic_response`'s J_r.

    Args:
      problem: a problem built by `quadratic`.
      theta: (p,) outer parameters.
      task: one `QuadraticTask` row.

    Returns:
      (p,) the exact ABLO gradient.
    """
    b_r = quadratic_inner_path(problem, theta, task) - task.y

    def back(carry, alpha):
        g, b = carry
        return (g + alpha * (task.B.T @ b), b - alpha * (task.A.T @ b)), None

    g0 = task.lam * (theta - task.t)
    (g, b0), _ = jax.lax.scan(back, (g0, b_r), problem.step_sizes, reverse=True)
    return g + task.E.T @ b0


def quadratic_fo_gradient(problem: Problem, theta: jax.Array, task: QuadraticTask) -> jax.Array:
    """G_FO(theta, T) = lam (theta - t) + E^T (phi_r - y) (eqs. 10-11).

    Args:
      problem: a problem built by `quadratic`.
      theta: (p,) outer parameters.
      task: one `QuadraticTask` row.

    Returns:
      (p,) the FOM gradient.
    """
    phi = quadratic_inner_path(problem, theta, task)
    return task.lam * (theta - task.t) + task.E.T @ (phi - task.y)


def quadratic_response(problem: Problem, task: QuadraticTask) -> tuple[jax.Array, jax.Array]:
    """(J_r, k_r) with phi_r = J_r theta + k_r, by the forward recursion (O(r p^3)).

    J_0 = E, J_j = (I - alpha_j A) J_{j-1} + alpha_j B; k_0 = v, k_j = (I - alpha_j A) k_{j-1} + alpha_j c.

    Args:
      problem: a problem built by `quadratic`.
      task: one `QuadraticTask` row.

    Returns:
      (J_r of shape (p, p), k_r of shape (p,)).
    """

    def step(carry, alpha):
        J, k = carry
        return (J - alpha * (task.A @ J) + alpha * task.B, k - alpha * (task.A @ k) + alpha * task.c), None

    (J, k), _ = jax.lax.scan(step, (task.E, task.v), problem.step_sizes)
    return J, k


def _tasks(problem: Problem) -> QuadraticTask:
    if problem.tasks is None or not isinstance(problem.tasks, QuadraticTask):
        raise UserError(f"problem {problem.name!r} is not a quadratic problem (tasks must be a QuadraticTask)")
    return problem.tasks


def quadratic_meta_objective(problem: Problem, theta: jax.Array) -> jax.Array:
    """M_r(theta) = sum_T pi_T [1/2 ||phi_r - y_T||^2 + lam/2 ||theta - t_T||^2] (eq. 4), no autodiff.

    Args:
      problem: a problem built by `quadratic`.
      theta: (p,) outer parameters.

    Returns:
      The scalar M_r(theta).
    """
    tasks = _tasks(problem)

    def one(task):
        return _outer_loss(theta, quadratic_inner_path(problem, theta, task), task)

    return jnp.sum(problem.task_probs * jax.vmap(one)(tasks))


def quadratic_meta_gradient(problem: Problem, theta: jax.Array) -> jax.Array:
    """dM_r/dtheta = sum_T pi_T G(theta, T) (Assumption 2), from `quadratic_exact_gradient`.

    Args:
      problem: a problem built by `quadratic`.
      theta: (p,) outer parameters.

    Returns:
      (p,) the meta-gradient.
    """
    tasks = _tasks(problem)
    g = jax.vmap(lambda task: quadratic_exact_gradient(problem, theta, task))(tasks)
    return problem.task_probs @ g


def quadratic_bias_variance(problem: Problem, theta: jax.Array) -> BiasVariance:
    """D^2(theta) = E_T ||G_FO - G||^2 and V^2(theta) = E_T ||G||^2 (eqs. 14, 16 before the sup), exactly.

    Args:
      problem: a problem built by `quadratic`.
      theta: (p,) outer parameters.

    Returns:
      `BiasVariance(d2, v2)`.
    """
    tasks = _tasks(problem)
    ex = jax.vmap(lambda task: quadratic_exact_gradient(problem, theta, task))(tasks)
    fo = jax.vmap(lambda task: quadratic_fo_gradient(problem, theta, task))(tasks)
    w = problem.task_probs
    return BiasVariance(d2=w @ jnp.sum((fo - ex) ** 2, axis=1), v2=w @ jnp.sum(ex**2, axis=1))


def quadratic_meta_form(problem: Problem) -> QuadraticForm:
    """M_r as an explicit quadratic: hessian = sum pi (J^T J + lam I), linear = -sum pi (J^T (k - y) - lam t).

    From phi_r = J_r theta + k_r (`quadratic_response`), const = sum pi (||k - y||^2 + lam ||t||^2) / 2.
    Costs O(n_tasks r p^3).

    Args:
      problem: a problem built by `quadratic`.

    Returns:
      `QuadraticForm(hessian, linear, const)`.
    """
    tasks = _tasks(problem)
    p = tasks.A.shape[-1]

    def one(task):
        J, k = quadratic_response(problem, task)
        e = k - task.y
        H = J.T @ J + task.lam * jnp.eye(p, dtype=J.dtype)
        g = -(J.T @ e - task.lam * task.t)
        return H, g, 0.5 * (e @ e + task.lam * task.t @ task.t)

    H, g, c = jax.vmap(one)(tasks)
    w = problem.task_probs
    return QuadraticForm(hessian=jnp.tensordot(w, H, 1), linear=w @ g, const=w @ c)


def quadratic_stationary_point(problem: Problem) -> jax.Array:
    """theta* = hessian^{-1} linear, the stationary point (the minimiser when lam > 0) of M_r.

    Args:
      problem: a problem built by `quadratic`.

    Returns:
      (p,) theta*.
    """
    form = quadratic_meta_form(problem)
    return jnp.linalg.solve(form.hessian, form.linear)
