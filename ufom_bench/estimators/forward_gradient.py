"""Forward-mode gradient unrolling, (FG)^2U (Shen et al. 2024): unbiased, one JVP pass per direction."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.errors import check_int
from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator, PathCheck
from ufom_bench.estimators.pzobo import direction, paths_info

tmap = jax.tree_util.tree_map


def directional_derivative(problem, theta, task, v, hvps):
    """dM_T/dtheta . v for M_T(theta) = L_out(theta, U^(r)(theta, T), T), by forward mode through the inner loop.

    phi_0 and its tangent come from a JVP of V(theta, T); each step pushes (phi, dphi) through one JVP of
    dL_in/dphi with tangents (v, dphi) (counted as one HVP; its primal is the inner gradient of eq. 3),
    dphi_j = dphi_{j-1} - alpha_j (d2 L_in/dphi dtheta v + d2 L_in/dphi2 dphi_{j-1}); L_out's JVP closes it.
    Returns (dM_T/dtheta . v, hvps + r, the path's `PathCheck`).
    """
    phi0, dphi0 = jax.jvp(lambda th: problem.init_inner(th, task), (theta,), (v,))
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(phi0))
    check0 = PathCheck(-jnp.ones((), dtype), jnp.zeros((), dtype), jnp.ones((), bool))

    def step(carry, alpha):
        phi, dphi, n, check = carry
        g, dg = jax.jvp(lambda th, ph: core.inner_grad(problem, th, ph, task), (theta, phi), (v, dphi))
        size = core.sq_norm(g)  # the divergence check of core's forward loop, on the same primal path
        check = PathCheck(jnp.where(check.g0 < 0, size, check.g0), jnp.maximum(check.peak, size),
                          check.finite & jnp.isfinite(size))
        phi = tmap(lambda p, d: p - alpha * d, phi, g)
        dphi = tmap(lambda p, d: p - alpha * d, dphi, dg)
        return (phi, dphi, n + 1, check), None

    (phi, dphi, hvps, check), _ = jax.lax.scan(step, (phi0, dphi0, hvps, check0), problem.step_sizes)
    loss, dloss = jax.jvp(lambda th, ph: problem.outer_loss(th, ph, task), (theta, phi), (v, dphi))
    finite = check.finite & core.all_finite(phi) & jnp.isfinite(loss) & jnp.isfinite(dloss)
    return dloss, hvps, check._replace(finite=finite)


def forward_gradient(n_dirs: int = 1) -> Estimator:
    """(FG)^2U (Shen et al. 2024): G = (1/Q) sum_j (dM_T/dtheta . v_j) v_j, v_j ~ N(0, I_s), Q = ``n_dirs``.

    M_T(theta) = L_out(theta, U^(r)(theta, T), T), the function whose gradient is eq. (6); each directional
    derivative is one forward-mode pass through V, the r inner steps and L_out (`directional_derivative`),
    so no reverse pass and nothing stored. Directions over the whole flattened theta (s entries), the j-th
    from ``jax.random.fold_in(key, j)`` (`pzobo.direction`).

    Unbiased: E[v v^T] = I gives E G = dM_T/dtheta, the exact ABLO gradient. Its covariance over the
    directions, given the task, has trace (s + 1) ||G||^2 / Q (theory.zeroth_order), G the exact gradient.

    Cost per direction: r HVPs (one JVP of dL_in/dphi per inner step, counted as one HVP: the same cost
    class, and its primal output is the step's inner gradient, which is not counted again) and one grad
    call (the JVP of L_out, a forward-mode derivative of the outer loss). In all Q grad calls and Q r HVPs.
    Memory: O(1) in r and in Q.

    Args:
      n_dirs: Q, number of directions, an integer >= 1.
    """
    n_dirs = check_int("n_dirs", n_dirs, 1)

    def estimate(problem, theta, task, key, state):
        core.check_theta(problem, theta)

        def one_direction(j, carry):
            acc, grads, hvps, finite, diverged = carry
            v = direction(jax.random.fold_in(key, j), theta, "gaussian")
            d, hvps, check = directional_derivative(problem, theta, task, v, hvps)
            acc = tmap(lambda a, x: a + (d * x).astype(a.dtype), acc, v)
            return acc, grads + 1, hvps, finite & check.finite, diverged | check.diverged()

        zero = jnp.zeros((), core.COUNT)
        carry = (tmap(jnp.zeros_like, theta), zero, zero, jnp.ones((), bool), jnp.zeros((), bool))
        acc, grads, hvps, finite, diverged = jax.lax.fori_loop(0, n_dirs, one_direction, carry)
        g = tmap(lambda a: a / n_dirs, acc)
        return g, paths_info(g, grads, hvps, finite, diverged), state

    return Estimator(core.no_state, estimate, f"forward_gradient(n_dirs={n_dirs})")
