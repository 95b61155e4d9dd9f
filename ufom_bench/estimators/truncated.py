"""Truncated reverse accumulation: exact through the last k inner steps, identity Jacobians before them."""

from __future__ import annotations

import jax.numpy as jnp

from ufom_bench.errors import UserError, check_int
from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator


def truncated(k: int = 1) -> Estimator:
    """Algorithm 2's backward loop over the last k inner steps only, identity Jacobians for the first r - k.

    G = b1 - sum_{j > r - k} alpha_j (d2 L_in / dtheta dphi)^T b2_j with b2 carried back through those k
    steps (eqs. 7, 9), then the V term of eq. (6) with the b2 reached: k = 0 is FOM (Algorithm 3, eqs.
    10-11), k = r is `exact` (Algorithm 2). Where V does not depend on theta it is K-step truncated
    back-propagation (Shaban et al., 2018). Biased for 0 < k < r. Cost: r + 1 grads and k HVPs; memory:
    k stored inner states (O(k), constant in r). k > r raises UserError when the problem is seen.
    """
    k = check_int("k", k, 0)

    def estimate(problem, theta, task, key, state):
        del key
        core.check_theta(problem, theta)
        r = problem.r
        if k > r:
            raise UserError(f"truncated needs k <= r, got k = {k} on problem {problem.name!r} with r = {r}")
        zero = jnp.zeros((), core.COUNT)
        phi, grads, check = core.inner_loop(problem, theta, task, zero, steps=(0, r - k))
        phi, states, grads, check = core.inner_loop_stored(problem, theta, task, grads, steps=(r - k, k),
                                                           start=(phi, check))
        b1, b2, grads, check = core.outer_grads(problem, theta, phi, task, grads, check)
        b1, b2, hvps = core.backward_stored(problem, theta, task, states, b1, b2, zero, last=k)
        g = core.add_v_jvp(problem, theta, task, b1, b2)
        exact = k == r
        return g, core.info(g, grads, hvps, exact, float(exact), check), state

    return Estimator(core.no_state, estimate, f"truncated(k={k})")
