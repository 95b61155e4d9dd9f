"""UFOM, the unbiased first-order method (Algorithm 4; eqs. 12-13; Proposition 1)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator
from ufom_bench.estimators.exact_ckpt import check_checkpoints, checkpointed_branch
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


def ufom_step(problem, theta, task, key, q, checkpoints=None):
    """One draw of G_UFO = G_FO + (xi / q) (G - G_FO), xi ~ Bernoulli(q) (eqs. 12-13).

    ``lax.cond`` runs the O(r^2) exact branch only when xi = 1 (under ``vmap`` both branches run and
    are selected: Monte Carlo code should use `pair` instead). ``q`` may be traced (Adaptive UFOM).
    ``checkpoints`` = m: the exact branch is `exact_ckpt`'s (xi is drawn first, from the same key; see
    `ufom_step_checkpointed`); None: Algorithm 4 as printed.
    Returns (G_UFO, b_FO, b_Exact or b_FO when xi = 0, xi, grad calls, HVP calls, `PathCheck`).
    """
    if checkpoints is not None:
        return ufom_step_checkpointed(problem, theta, task, key, q, checkpoints)
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


def ufom_step_checkpointed(problem, theta, task, key, q, m: int):
    """`ufom_step` whose exact branch stores at most m inner states (binomial checkpointing, `exact_ckpt`).

    xi ~ Bernoulli(q) is drawn first (the same draw as `ufom_step`'s). xi = 0: Algorithm 3 (r + 1 grads).
    xi = 1: `exact_ckpt`'s forward sweep places the checkpoints on its way to phi_r, and b_FO comes from the
    same outer gradients, so the branch costs what `exact_ckpt` costs, 1 + t(r + 1, m) grads and r HVPs
    (m = 1: Algorithm 4's r + 1 + r(r - 1)/2; m >= r: Algorithm 2's r + 1), rather than a first-order sweep
    plus a checkpointed reversal of r steps (r + 1 + t(r, m) grads, 2r at m = r).
    """
    core.check_theta(problem, theta)
    xi = jax.random.bernoulli(key, q)

    def corrected(_):
        b_fo, b_ex, g, h, check = checkpointed_branch(problem, theta, task, m)
        est = jax.tree_util.tree_map(lambda f, e: f + (e - f) / q, b_fo, b_ex)
        return est, b_fo, b_ex, g, h, check

    def first_order_only(_):
        b_fo, _, _, grads, check = core.first_order(problem, theta, task)
        return b_fo, b_fo, b_fo, grads, jnp.zeros((), core.COUNT), check

    est, b_fo, b_ex, grads, hvps, check = jax.lax.cond(xi, corrected, first_order_only, None)
    return est, b_fo, b_ex, xi, grads, hvps, check


def ufom(q: float = 0.1, checkpoints: int | None = None) -> Estimator:
    """UFOM with exact-branch probability q in (0, 1]: unbiased, O(1) memory.

    Expected cost r + 1 + q r(r-1)/2 grad calls and q r HVPs (Proposition 1); q = 1 is `exact_me`.
    q may be traced (a grid of q compiled once, vmapped): it is then not validated, and q = 0 gives FOM's
    estimate (xi is never 1).
    checkpoints = m (an integer >= 1): the exact branch is `exact_ckpt(m)`'s, m stored inner states and
    1 + t(r + 1, m) grads (`ufom_step_checkpointed`; expected cost `theory.checkpointing.costs`). None
    (default): Algorithm 4's recomputation from V, as printed.
    """
    traced = isinstance(q, jax.core.Tracer)
    q = q if traced else check_q(q)
    m = None if checkpoints is None else check_checkpoints(checkpoints)

    def estimate(problem, theta, task, key, state):
        g, _, _, xi, grads, hvps, check = ufom_step(problem, theta, task, key, q, m)
        return g, core.info(g, grads, hvps, xi, q, check), state

    name = "ufom(q traced" if traced else f"ufom(q={q:g}"
    return Estimator(core.no_state, estimate, name + ("" if m is None else f", m={m}") + ")")
