"""UFOM, the unbiased first-order method (Algorithm 4; eqs. 12-13; Proposition 1)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator
from ufom_bench.estimators.exact_me import exact_branch
from ufom_bench.errors import UserError


def check_q(q) -> float:
    """q must be a real number in (0, 1] (Algorithm 4's input); strings and booleans are refused."""
    try:
        if isinstance(q, (bool, str, bytes)):  # float() would take True and "0.5"
            raise TypeError
        value = float(q)
    except (TypeError, ValueError):
        raise UserError(f"q must be a number in (0, 1], got q = {q!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise UserError(f"q must be in (0, 1], got q = {q!r}")
    return value


def ufom_step(problem, theta, task, key, q):
    """One draw of G_UFO = G_FO + (xi / q) (G - G_FO), xi ~ Bernoulli(q) (eqs. 12-13).

    ``lax.cond`` runs the O(r^2) exact branch only when xi = 1 (under ``vmap`` both branches run and
    are selected: Monte Carlo code should use `pair` instead). ``q`` may be traced (Adaptive UFOM).
    Returns (G_UFO, b_FO, b_Exact or b_FO when xi = 0, xi, grad calls, HVP calls, `PathCheck`).
    """
    b_fo, b1, b2, grads, check = core.first_order(problem, theta, task)
    xi = jax.random.bernoulli(key, q)

    def corrected(_):
        b_ex, g, h = exact_branch(problem, theta, task, b1, b2, grads)
        est = jax.tree_util.tree_map(lambda f, e: f + (e - f) / q, b_fo, b_ex)
        return est, b_ex, g, h

    def first_order_only(_):
        return b_fo, b_fo, grads, jnp.zeros((), core.COUNT)

    est, b_ex, grads, hvps = jax.lax.cond(xi, corrected, first_order_only, None)
    return est, b_fo, b_ex, xi, grads, hvps, check


def ufom(q: float = 0.1) -> Estimator:
    """UFOM with exact-branch probability q in (0, 1]: unbiased, O(1) memory.

    Expected cost r + 1 + q r(r-1)/2 grad calls and q r HVPs (Proposition 1); q = 1 is `exact_me`.
    q may be traced (a grid of q compiled once, vmapped): it is then not validated, and q = 0 gives FOM's
    estimate (xi is never 1).
    """
    traced = isinstance(q, jax.core.Tracer)
    q = q if traced else check_q(q)

    def estimate(problem, theta, task, key, state):
        g, _, _, xi, grads, hvps, check = ufom_step(problem, theta, task, key, q)
        return g, core.info(g, grads, hvps, xi, q, check), state

    return Estimator(core.no_state, estimate, "ufom(q traced)" if traced else f"ufom(q={q:g})")
