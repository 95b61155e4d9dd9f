"""G_FO and the exact G for one task from one forward pass: what Monte Carlo code needs per sample."""

from __future__ import annotations

import jax.numpy as jnp

from ufom_bench.estimators import core


def pair(problem, theta, task):
    """(G_FO, G, Info) with G by Algorithm 2 sharing the forward loop with G_FO.

    Every UFOM draw is a function of this pair and xi (eqs. 12-13), so estimates of D^2, V^2 and UFOM's
    moments need no cond (which would run both branches under vmap anyway).
    """
    core.check_theta(problem, theta)
    zero = jnp.zeros((), core.COUNT)
    phi, states, grads, check = core.inner_loop_stored(problem, theta, task, zero)
    b1, b2, grads, check = core.outer_grads(problem, theta, phi, task, grads, check)
    g_fo = core.add_v_jvp(problem, theta, task, b1, b2)
    b1, b2, hvps = core.backward_stored(problem, theta, task, states, b1, b2, zero)
    g = core.add_v_jvp(problem, theta, task, b1, b2)
    return g_fo, g, core.info(g, grads, hvps, True, 1.0, check._replace(finite=check.finite & core.all_finite(g_fo)))
