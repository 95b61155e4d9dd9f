"""The exact ABLO gradient by reverse accumulation over stored states (Algorithm 2; eqs. 6-9)."""

from __future__ import annotations

import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator


def exact() -> Estimator:
    """grad_theta L_out(theta, U^(r)(theta, T), T) by Algorithm 2: O(r) memory, r + 1 grads and r HVPs.

    A forward scan stores phi_0..phi_{r-1}; a reverse scan applies eqs. (7) and (9) with one HVP per step;
    the V term of eq. (6) closes it.
    """

    def estimate(problem, theta, task, key, state):
        del key
        core.check_theta(problem, theta)
        zero = jnp.zeros((), core.COUNT)
        phi, states, grads, check = core.inner_loop_stored(problem, theta, task, zero)
        b1, b2, grads, check = core.outer_grads(problem, theta, phi, task, grads, check)
        b1, b2, hvps = core.backward_stored(problem, theta, task, states, b1, b2, zero)
        g = core.add_v_jvp(problem, theta, task, b1, b2)
        return g, core.info(g, grads, hvps, True, 1.0, check), state

    return Estimator(core.no_state, estimate, "exact")
