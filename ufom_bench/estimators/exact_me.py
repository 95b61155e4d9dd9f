"""The memory-efficient exact gradient (Section 3; Algorithm 4's correction branch with q = 1)."""

from __future__ import annotations

import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator


def exact_branch(problem, theta, task, b1, b2, grads):
    """b_Exact from the outer gradients at phi_r by recomputing each phi_{j-1} (O(1) memory, O(r^2) time).

    Returns (b_Exact, grad calls, HVP calls) with r(r-1)/2 grads and r HVPs added to ``grads``.
    """
    b1, b2, grads, hvps = core.backward_recompute(
        problem, theta, task, b1, b2, grads, jnp.zeros((), core.COUNT)
    )
    return core.add_v_jvp(problem, theta, task, b1, b2), grads, hvps


def exact_me() -> Estimator:
    """The exact ABLO gradient in O(1) memory: r + 1 + r(r-1)/2 grad calls and r HVPs (Proposition 1, q = 1).

    The forward loop runs once to reach phi_r (as FOM does); the backward loop rebuilds phi_{j-1} from
    V(theta, T) at each j = r..1 instead of reading it from a stored array.
    """

    def estimate(problem, theta, task, key, state):
        del key
        _, b1, b2, grads, check = core.first_order(problem, theta, task)
        g, grads, hvps = exact_branch(problem, theta, task, b1, b2, grads)
        return g, core.info(g, grads, hvps, True, 1.0, check), state

    return Estimator(core.no_state, estimate, "exact_me")
