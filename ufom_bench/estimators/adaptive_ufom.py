"""Adaptive UFOM (Section 4.5, eqs. 22-24): q chosen each step by q* of (19)-(21) from running estimates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator
from ufom_bench.estimators.exact_ckpt import check_checkpoints
from ufom_bench.estimators.ufom import check_q, ufom_step
from ufom_bench.errors import UserError


class AdaptiveState(NamedTuple):
    """Exponentially smoothed ||b_FO - b_Exact||^2 and ||b_Exact||^2, and the number of updates k_upd."""

    d2_sm: jax.Array
    v2_sm: jax.Array
    k_upd: jax.Array


def adaptive_q(state: AdaptiveState, r: int, *, q_min, beta, C1, C2, eps, d2_scale, model="paper_eq19",
               checkpoints=None):
    """q_k = max(q*(D2_bar, V2_bar), q_min), with the bias-corrected estimates of eq. (22).

    D2_bar = d2_scale D2_sm / (1 - beta^k_upd), V2_bar = V2_sm / (1 - beta^k_upd). Before any update
    (k_upd = 0) the estimates are undefined (0/0) and q_k = q_min, as in the authors' experiments.
    C_det, C_rnd: Section 4.4's (`theory.costs`), or with ``checkpoints`` = m those of the checkpointed
    exact branch (`theory.checkpointing.costs`).
    """
    from ufom_bench import theory

    if checkpoints is None:
        c_det, c_rnd = theory.costs(r, C1, C2)
    else:
        c_det, c_rnd = theory.checkpointed_costs(r, checkpoints, C1, C2)
    debias = 1.0 - beta ** state.k_upd.astype(state.d2_sm.dtype)
    safe = jnp.where(state.k_upd > 0, debias, 1.0)
    d2_bar, v2_bar = d2_scale * state.d2_sm / safe, state.v2_sm / safe
    q_star = theory.optimal_q_jax(d2_bar, v2_bar, float(c_det), float(c_rnd), eps, model)
    return jnp.where(state.k_upd > 0, jnp.maximum(q_star, q_min), q_min)


def adaptive_ufom(
    q_min: float = 0.05,
    beta: float = 0.99,
    C1: float = 1.0,
    C2: float = 1.0,
    eps: float = 0.0,
    d2_scale: float = 1.0,
    checkpoints: int | None = None,
) -> Estimator:
    """UFOM whose q follows the wall-clock-optimal q* (eqs. 19-21) of running estimates of D^2, V^2.

    Each step: q_k = max(q*(D2_bar_k, V2_bar_k), q_min) (eq. 22), computed before xi ~ Bernoulli(q_k) is
    drawn, so each estimate is unbiased given the state. Only when xi = 1 are the smoothed estimates updated
    (eqs. 23-24) with the bias ||b_FO - b_Exact||^2 itself (measured before any mixing) and ||b_Exact||^2.
    The state starts at zero with k_upd = 0, where (22) is 0/0: the first steps use q = q_min.

    Args:
      q_min: lower bound on q, so that updates keep happening (paper: 0.05).
      beta: smoothing constant in (0, 1) (paper: 0.99).
      C1, C2: time of one gradient and of one HVP in the time model (19) (paper: 1, 1 = function calls).
      eps: the epsilon of (19)-(21), in [0, 0.5) (paper: 0).
      d2_scale: factor on D2_bar; the paper's experiments used 0.1 ("dividing initial D2_bar by 10").
      checkpoints: None (Algorithm 4's recomputation), or m >= 1 stored inner states for the exact branch
        (`ufom(q, checkpoints=m)`); q* then uses C_rnd(r, m) of `theory.checkpointing.costs`.
    """
    q_min = check_q(q_min)
    if not 0.0 < beta < 1.0:
        raise UserError(f"beta must be in (0, 1), got beta = {beta!r}")
    for name, value in (("C1", C1), ("C2", C2), ("d2_scale", d2_scale)):
        if not value > 0:
            raise UserError(f"{name} must be > 0, got {name} = {value!r}")
    if not 0.0 <= eps < 0.5:
        raise UserError(f"eps must be in [0, 0.5), got eps = {eps!r}")
    m = None if checkpoints is None else check_checkpoints(checkpoints)
    params = dict(q_min=q_min, beta=beta, C1=C1, C2=C2, eps=eps, d2_scale=d2_scale, checkpoints=m)

    def init(theta) -> AdaptiveState:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(theta))
        return AdaptiveState(jnp.zeros((), dtype), jnp.zeros((), dtype), jnp.zeros((), core.COUNT))

    def estimate(problem, theta, task, key, state):
        q = adaptive_q(state, problem.r, **params)
        g, b_fo, b_ex, xi, grads, hvps, check = ufom_step(problem, theta, task, key, q.astype(state.d2_sm.dtype), m)
        d2 = core.sq_norm(jax.tree_util.tree_map(jnp.subtract, b_fo, b_ex))
        v2 = core.sq_norm(b_ex)
        updated = AdaptiveState(
            beta * state.d2_sm + (1 - beta) * d2, beta * state.v2_sm + (1 - beta) * v2, state.k_upd + 1
        )
        new_state = jax.tree_util.tree_map(lambda u, s: jnp.where(xi, u, s), updated, state)
        return g, core.info(g, grads, hvps, xi, q, check), new_state

    return Estimator(init, estimate, "adaptive_ufom" if m is None else f"adaptive_ufom(m={m})")
