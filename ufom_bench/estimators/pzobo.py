"""PZOBO (Sow, Ji, Liang 2022): the response Jacobian from the difference of two inner paths, Hessian-free.

Also the pieces the other randomised estimators (`forward_gradient`, `es`) share: the parameter checks,
the random directions over the whole theta pytree, and the `Info` of an estimate made of several paths.
"""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp

from ufom_bench.errors import UserError, check_int, check_positive
from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator, PathCheck

DIRECTIONS = ("gaussian", "sphere")
tmap = jax.tree_util.tree_map


def check_mu(mu) -> float:
    """mu must be a finite real number > 0 (a smoothing radius)."""
    return check_positive("mu", mu)


def check_directions(directions) -> str:
    if directions not in DIRECTIONS:
        raise UserError(f"directions must be one of {DIRECTIONS}, got directions = {directions!r}")
    return directions


def direction(key, theta, directions: str = "gaussian"):
    """One random direction u with theta's pytree structure and E[u u^T] = I over the flattened theta (s entries).

    "gaussian": u ~ N(0, I_s). "sphere": u = sqrt(s) z / ||z||, z ~ N(0, I_s): uniform on the sphere of
    radius sqrt(s) of the whole flattened theta (one norm over all leaves).
    The j-th direction of an estimate (j = 0..Q-1) is ``direction(jax.random.fold_in(key, j), theta, ...)``.
    """
    flat, unravel = jax.flatten_util.ravel_pytree(theta)
    z = jax.random.normal(key, flat.shape, flat.dtype)
    if directions == "sphere":
        z = z * (jnp.sqrt(jnp.asarray(flat.size, flat.dtype)) / jnp.linalg.norm(z))
    return unravel(z)


def vdot(a, b) -> jax.Array:
    """<a, b> summed over the leaves of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def paths_info(grad, grad_calls, hvp_calls, finite, diverged) -> core.Info:
    """The `Info` of an estimate made of several inner paths: ``finite`` is the AND of their finiteness
    (inner gradients, phi_r, losses), ``diverged`` the OR of their `PathCheck.diverged`; the estimate's own
    finiteness is added, and a non-finite estimate is diverged."""
    zero = jnp.zeros((), jnp.result_type(float))
    info = core.info(grad, grad_calls, hvp_calls, False, 0.0, PathCheck(zero, zero, jnp.asarray(finite, bool)))
    return info._replace(diverged=info.diverged | diverged)


def pzobo(mu: float = 0.01, n_dirs: int = 1, directions: str = "gaussian") -> Estimator:
    """PZOBO's hypergradient (Sow, Ji, Liang 2022): eq. (6) with the response Jacobian from Q perturbed paths.

        G = dL_out/dtheta(theta, phi_r) + (1/Q) sum_j <(phi_r(theta + mu u_j) - phi_r(theta)) / mu, b2> u_j,

    b2 = dL_out/dphi(theta, phi_r), phi_r(theta) = U^(r)(theta, T) (eq. 2), Q = ``n_dirs``. Every perturbed
    path starts from V(theta + mu u_j, T) and runs r inner steps of L_in(theta + mu u_j, ., T) on the same task
    with the same step sizes: theta is perturbed everywhere it enters the inner loop, so the difference
    captures the whole Jacobian J = dphi_r/dtheta of eq. (6), the V term (dV/dtheta) included.

    Directions (over the whole flattened theta, s entries; `direction`): "gaussian", u ~ N(0, I_s) (PZOBO's
    paper, benchopt); "sphere", uniform on the sphere of radius sqrt(s), so that E[u u^T] = I as for the
    Gaussian. (The PZOBO authors' code normalises u to unit norm per parameter tensor, without the sqrt(s)
    factor: its estimate of the Jacobian term is scaled by about 1/s.)

    What it estimates: by Stein's lemma E_u[(phi_r(theta + mu u) - phi_r(theta)) u^T / mu] = J_mu, the
    Jacobian of the smoothed path E_u phi_r(theta + mu u) (Gaussian u), so E_u G = dL_out/dtheta +
    J_mu^T b2. Bias: J_mu - J is O(mu) for a Lipschitz Jacobian, O(mu^2) for a path three times
    differentiable (u's odd moments vanish); zero where phi_r is affine in theta (e.g. problems.quadratic).
    As mu -> 0 it is unbiased for the ABLO gradient, and its covariance over the directions, given the task,
    has trace (s + 1) ||J^T b2||^2 / Q (sphere: (s - 1) ||J^T b2||^2 / Q), the exact dL_out/dtheta term not
    included (theory.zeroth_order). Finite differences lose about eps_machine / mu relative precision.

    Cost: (Q + 1) r + 1 grad calls (the path, the outer gradient, Q perturbed paths), 0 HVPs; the V term
    needs no VJP. Memory: O(1) in r and in Q (the paths and directions run one at a time).

    Args:
      mu: finite difference step, > 0 (benchopt's default 0.1; the authors use 0.01 to 0.1).
      n_dirs: Q, number of directions, an integer >= 1.
      directions: "gaussian" or "sphere".
    """
    mu = check_mu(mu)
    n_dirs = check_int("n_dirs", n_dirs, 1)
    directions = check_directions(directions)

    def estimate(problem, theta, task, key, state):
        core.check_theta(problem, theta)
        phi, grads, check = core.inner_loop(problem, theta, task, jnp.zeros((), core.COUNT))
        b1, b2, grads, check = core.outer_grads(problem, theta, phi, task, grads, check)

        def one_direction(j, carry):
            acc, grads, finite, diverged = carry
            u = direction(jax.random.fold_in(key, j), theta, directions)
            phi_u, grads, check_u = core.inner_loop(problem, tmap(lambda t, d: t + mu * d, theta, u), task, grads)
            c = vdot(tmap(lambda a, b: (a - b) / mu, phi_u, phi), b2)  # <delta_j, b2>
            acc = tmap(lambda a, d: a + (c * d).astype(a.dtype), acc, u)
            return acc, grads, finite & check_u.finite, diverged | check_u.diverged()

        carry = (tmap(jnp.zeros_like, theta), grads, check.finite, check.diverged())
        acc, grads, finite, diverged = jax.lax.fori_loop(0, n_dirs, one_direction, carry)
        g = tmap(lambda b, a: b + a / n_dirs, b1, acc)
        return g, paths_info(g, grads, 0, finite, diverged), state

    return Estimator(core.no_state, estimate, f"pzobo(mu={mu:g}, n_dirs={n_dirs}, directions={directions})")
