"""Evolution strategies: antithetic Gaussian smoothing of the whole objective L_out(theta, U^(r)(theta, T), T)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.errors import check_int
from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator
from ufom_bench.estimators.pzobo import check_mu, direction, paths_info

tmap = jax.tree_util.tree_map


def objective(problem, theta, task, grads):
    """f(theta) = L_out(theta, U^(r)(theta, T), T): r inner grad calls, and the L_out evaluation counted as one
    grad call. Returns (f, grads + r + 1, the path's `PathCheck` with f's finiteness)."""
    phi, grads, check = core.inner_loop(problem, theta, task, grads)
    loss = problem.outer_loss(theta, phi, task)
    return loss, grads + 1, check._replace(finite=check.finite & jnp.isfinite(loss))


def es(mu: float = 0.01, n_dirs: int = 1) -> Estimator:
    """Antithetic Gaussian smoothing (evolution strategies) of f(theta) = L_out(theta, U^(r)(theta, T), T):

        G = (1 / (2 mu Q)) sum_j (f(theta + mu u_j) - f(theta - mu u_j)) u_j,   u_j ~ N(0, I_s), Q = ``n_dirs``,

    zeroth order on the full hypergradient (PZOBO's paper argues its variance makes training unstable; the
    suite measures it). Each f runs the inner loop from V(theta +- mu u_j, T) on the same task; directions
    over the whole flattened theta, the j-th from ``jax.random.fold_in(key, j)`` (`pzobo.direction`).

    What it estimates: E_u G = grad f_mu(theta), f_mu(theta) = E_u f(theta + mu u) (Stein's lemma), so the bias
    grad f_mu - grad f is O(mu^2) for f three times differentiable (the even Taylor terms cancel in the
    antithetic pair, the odd moments of u vanish) and zero where f is quadratic in theta (there each pair
    is exactly u u^T grad f). As mu -> 0 each pair tends to u u^T G (G = the exact ABLO gradient, eq. 6),
    the forward gradient's direction: tr Cov = (s + 1) ||G||^2 / Q given the task (theory.zeroth_order).
    Finite differences lose about eps_machine |f| / mu absolute precision.

    Counting convention: a loss evaluation L_out(theta, phi_r, T) is counted as one grad call (Info has no
    separate field; by the cheap-gradient principle a function and its reverse-mode gradient are within a
    small constant factor of each other, the same cost class). Cost: 2 Q (r + 1) grad calls (2 Q paths of r
    inner gradients, 2 Q loss evaluations), 0 HVPs. Memory: O(1) in r and in Q.

    Args:
      mu: smoothing radius, > 0.
      n_dirs: Q, number of antithetic pairs, an integer >= 1.
    """
    mu = check_mu(mu)
    n_dirs = check_int("n_dirs", n_dirs, 1)

    def estimate(problem, theta, task, key, state):
        core.check_theta(problem, theta)

        def one_pair(j, carry):
            acc, grads, finite, diverged = carry
            u = direction(jax.random.fold_in(key, j), theta, "gaussian")
            f_plus, grads, c_plus = objective(problem, tmap(lambda t, d: t + mu * d, theta, u), task, grads)
            f_minus, grads, c_minus = objective(problem, tmap(lambda t, d: t - mu * d, theta, u), task, grads)
            acc = tmap(lambda a, d: a + ((f_plus - f_minus) * d).astype(a.dtype), acc, u)
            return (acc, grads, finite & c_plus.finite & c_minus.finite,
                    diverged | c_plus.diverged() | c_minus.diverged())

        carry = (tmap(jnp.zeros_like, theta), jnp.zeros((), core.COUNT), jnp.ones((), bool), jnp.zeros((), bool))
        acc, grads, finite, diverged = jax.lax.fori_loop(0, n_dirs, one_pair, carry)
        g = tmap(lambda a: a / (2 * mu * n_dirs), acc)
        return g, paths_info(g, grads, 0, finite, diverged), state

    return Estimator(core.no_state, estimate, f"es(mu={mu:g}, n_dirs={n_dirs})")
