"""Binomial checkpointing for the exact branch (not in the paper): t(l, s), C_rnd(r, m), the time model (19)
with it, q*(m), and UFOM(q*(m), m) against exact (m = r) and exact_me (m = 1) at fixed memory.

t(l, s): the fewest forward steps that reverse a chain of l steps with s checkpoints (Griewank 1992;
Griewank and Walther 2000, revolve), each step reversed once (its reversal not counted in t):

    t(l, s) = rho l - beta(s + 1, rho - 1),   beta(s, t) = C(s + t, s),   beta(s, rho - 1) < l <= beta(s, rho)

(rho, the repetition number, is the most times any step is advanced). Convention: t counts every advance,
the first sweep included; the initial state is one of the s checkpoints; the state being worked on is
not. `ufom_bench.estimators.exact_ckpt` reverses l = r + 1 steps (the r inner steps, then the outer
gradient at phi_r as step r + 1) with s = m checkpoints (phi_0 = V(theta, T) among them), so one estimate
makes 1 + t(r + 1, m) grad calls (the outer gradient and every inner step) and r HVPs:
m = 1 gives t(r + 1, 1) = r(r + 1)/2, `exact_me`'s r + 1 + r(r - 1)/2 grads; m >= r gives t(r + 1, r) = r,
Algorithm 2's r + 1. (With l = r the same closed form would count a reversal that starts at phi_{r-1}:
t(r, r) = r - 1 forward steps, one short of the sweep to phi_r that the outer gradient needs.)

UFOM with the checkpointed exact branch (`ufom(q, checkpoints=m)`) draws xi first: xi = 0 costs Algorithm 3's
r + 1 grads, xi = 1 costs exact_ckpt's, so in the time model (19)
    C_det = C1 (r + 1),   C_rnd(r, m) = C1 (t(r + 1, m) - r) + C2 r,
C_rnd(r, 1) is Section 4.4's (C1 (r - 1)/2 + C2) r and C_rnd(r, r) the stored-states C2 r of `theory.cost`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import sympy as sp

from ufom_bench.theory import choice_of_q
from ufom_bench.theory._sym import C1, C2, C_det, C_rnd, Check, equal, q, r, tex
from ufom_bench.theory import cost as _cost

l, s, k = sp.symbols("l s k", positive=True, integer=True)
m = sp.Symbol("m", positive=True, integer=True)  # checkpoints (stored inner states)
rho = sp.Symbol("rho", positive=True, integer=True)  # repetition number
NAMES = {rho: r"\rho"}

# Ranges of the exhaustive checks against the dynamic programme (l <= L_CHECK steps, s <= S_CHECK checkpoints).
L_CHECK, S_CHECK = 200, 10


def beta_sym(a, b):
    """beta(a, b) = C(a + b, a): the most steps s = a checkpoints reverse with repetition number b."""
    return sp.binomial(a + b, a)


def t_sym(l_, s_, rho_):
    """Griewank's closed form rho l - beta(s + 1, rho - 1), valid for beta(s, rho - 1) < l <= beta(s, rho)."""
    return rho_ * l_ - beta_sym(s_ + 1, rho_ - 1)


class CheckpointingDerivation(NamedTuple):
    t: sp.Expr  # t(l, s) in terms of rho
    grads: sp.Expr  # exact_ckpt's grad calls in (r, m, rho), rho the repetition number of (r + 1, m)
    hvps: sp.Expr
    c_det: sp.Expr
    c_rnd: sp.Expr  # C_rnd(r, m) in (r, m, rho)
    time: sp.Expr  # expected time of one UFOM(q, m) estimate: C_det + q C_rnd(r, m)
    checks: dict
    latex: dict


# ----------------------------------------------------------------------------------------- integer forms

def repetition_number(l_: int, s_: int) -> int:
    """rho with beta(s, rho - 1) < l <= beta(s, rho) (rho = 0 for l <= 1)."""
    l_, s_ = int(l_), int(s_)
    rho_ = 0
    while math.comb(s_ + rho_, s_) < l_:
        rho_ += 1
    return rho_


def forward_steps(l_: int, s_: int) -> int:
    """t(l, s) = rho l - beta(s + 1, rho - 1): the fewest forward steps reversing l steps with s checkpoints.

    Counts every advance, the first sweep included (module docstring). t(1, s) = 0, t(l, 1) = l(l - 1)/2,
    t(l, s >= l - 1) = l - 1. Exact python integers.
    """
    l_, s_ = int(l_), int(s_)
    if l_ < 1 or s_ < 1:
        raise ValueError(f"t(l, s) needs l >= 1 and s >= 1, got l = {l_}, s = {s_}")
    rho_ = repetition_number(l_, s_)
    return rho_ * l_ - (math.comb(s_ + rho_, s_ + 1) if rho_ >= 1 else 0)


def forward_steps_dp(l_max: int, s_max: int) -> np.ndarray:
    """t[l, s] for 1 <= l <= l_max, 1 <= s <= s_max by the dynamic programme over the first checkpoint:
    t(1, s) = 0, t(l, 1) = l(l - 1)/2, t(l, s) = min_{1 <= k < l} k + t(k, s) + t(l - k, s - 1)."""
    t = np.zeros((l_max + 1, s_max + 1), dtype=np.int64)
    ls = np.arange(l_max + 1)
    t[:, 1] = ls * (ls - 1) // 2
    for s_ in range(2, s_max + 1):
        for l_ in range(2, l_max + 1):
            ks = np.arange(1, l_)
            t[l_, s_] = np.min(ks + t[ks, s_] + t[l_ - ks, s_ - 1])
    return t


def split(l_: int, s_: int) -> int:
    """The first checkpoint k of exact_ckpt's schedule (the same rule as `ufom_bench.estimators.exact_ckpt.split`):
    k = min(beta(s, rho - 1), l - beta(s - 1, rho - 1)), for l >= 2, s >= 2."""
    rho_ = repetition_number(l_, s_)
    return min(math.comb(s_ + rho_ - 1, s_), l_ - math.comb(s_ + rho_ - 2, s_ - 1))


@functools.lru_cache(maxsize=None)
def schedule_steps(l_: int, s_: int) -> int:
    """Forward steps of the recursion exact_ckpt executes (with `split`), counted by recursion: equal to
    `forward_steps` (checked in `derivation`)."""
    if l_ == 1:
        return 0
    if s_ == 1:
        return l_ * (l_ - 1) // 2
    k_ = split(l_, s_)
    return k_ + schedule_steps(l_ - k_, s_ - 1) + schedule_steps(k_, s_)


def checkpointed_calls(r_: int, m_: int) -> tuple[int, int]:
    """(grad calls, HVP calls) of one `exact_ckpt(m)` estimate, and of `ufom(q, checkpoints=m)` when xi = 1:
    (1 + t(r + 1, min(m, r)), r)."""
    r_, m_ = int(r_), int(m_)
    return 1 + forward_steps(r_ + 1, min(m_, r_)), r_


def branch_calls(r_: int, m_: int, xi) -> tuple[int, int]:
    """(grads, HVPs) of one `ufom(q, checkpoints=m)` estimate given xi: (r + 1, 0) or `checkpointed_calls`."""
    return checkpointed_calls(r_, m_) if bool(xi) else (int(r_) + 1, 0)


def _elementwise(fn, *xs):
    out = np.vectorize(fn, otypes=[np.float64])(*xs)
    return out[()] if np.ndim(out) == 0 else out


def expected_calls(r_, q_, m_):
    """Expected (grads, HVPs) of one `ufom(q, checkpoints=m)` estimate: (r + 1 + q (t(r + 1, m) - r), q r).
    Broadcast over numpy inputs (r and m integers)."""
    extra = _elementwise(lambda a, b: checkpointed_calls(a, b)[0] - a - 1, r_, m_)
    return np.asarray(r_) + 1 + np.asarray(q_) * extra, np.asarray(q_) * np.asarray(r_, dtype=np.float64)


def costs(r_, m_, C1_=1.0, C2_=1.0):
    """(C_det, C_rnd) of the time model (19) for `ufom(q, checkpoints=m)`:
    C_det = C1 (r + 1),  C_rnd(r, m) = C1 (t(r + 1, m) - r) + C2 r.  Broadcast over numpy inputs."""
    extra = _elementwise(lambda a, b: checkpointed_calls(a, b)[0] - a - 1, r_, m_)
    r_ = np.asarray(r_, dtype=np.float64)
    return C1_ * (r_ + 1), C1_ * extra + C2_ * r_


def optimal_q(D2, V2, r_, m_, C1_=1.0, C2_=1.0, eps=0.0, model=choice_of_q.DEFAULT_MODEL):
    """q*(m): `theory.optimal_q` of (19)-(21) with C_det, C_rnd(r, m) of `costs` (numpy)."""
    c_det, c_rnd = costs(r_, m_, C1_, C2_)
    return choice_of_q.optimal_q(D2, V2, c_det, c_rnd, eps, model, backend="numpy")


class AtFixedMemory(NamedTuple):
    """UFOM(q*(m), m) against the exact estimators, from (19) (times up to one common factor free of q)."""

    q_star: np.ndarray  # q*(m)
    calls: np.ndarray  # expected grads + HVPs of one UFOM(q*(m), m) estimate (C1 = C2 = 1: its function calls)
    time_ufom: np.ndarray  # T(q*(m)) with C(r, m)
    time_exact_ckpt: np.ndarray  # T(1) with C(r, m): exact_ckpt(m), the same memory
    time_exact: np.ndarray  # T(1) with C(r, r): Algorithm 2, r stored states
    time_exact_me: np.ndarray  # T(1) with C(r, 1): exact_me, one stored state


def at_fixed_memory(D2, V2, r_, m_, C1_=1.0, C2_=1.0, eps=0.0, model=choice_of_q.DEFAULT_MODEL) -> AtFixedMemory:
    """q*(m), the expected cost per estimate and the time model (19) of UFOM(q*(m), m), beside exact_ckpt(m),
    exact (m = r) and exact_me (m = 1), elementwise over numpy inputs (r, m integers).

    T(q) = S(q)^kappa (C_det + C_rnd q), S(q) = (1/q - 1) D^2 + V^2: at q = 1 it is the time of the exact
    estimator with that memory (S(1) = V^2). Ratios T_ufom / T_exact_* are what the comparison reads.
    """
    r_, m_ = np.asarray(r_), np.asarray(m_)
    q_star = optimal_q(D2, V2, r_, m_, C1_, C2_, eps, model)
    grads, hvps = expected_calls(r_, q_star, m_)

    def time(qq, mm):
        c_det, c_rnd = costs(r_, mm, C1_, C2_)
        return choice_of_q.time_model(qq, D2, V2, c_det, c_rnd, eps, model, backend="numpy")

    return AtFixedMemory(q_star, grads + hvps, time(q_star, m_), time(1.0, m_), time(1.0, r_), time(1.0, 1))


# ----------------------------------------------------------------------------------------- derivation

@functools.lru_cache(maxsize=None)
def derivation() -> CheckpointingDerivation:
    """The closed form against the dynamic programme, the split rule's optimality (Pascal's rule), the two
    ends (m = 1: exact_me, m >= r: Algorithm 2) against `theory.cost`, and C_rnd(r, m)."""
    checks, latex = {}, {}
    t = t_sym(l, s, rho)

    # The closed form is the minimum of the dynamic programme (exhaustive over a range).
    dp = forward_steps_dp(L_CHECK, S_CHECK)
    closed_ok = all(dp[a, b] == forward_steps(a, b) for a in range(1, L_CHECK + 1) for b in range(1, S_CHECK + 1))
    checks["ckpt_closed_form"] = Check(
        r"t(l, s) = \min_{1 \leq k < l} k + t(k, s) + t(l - k, s - 1),\ t(1, s) = 0,\ t(l, 1) = \frac{l(l-1)}{2}",
        tex(sp.Eq(sp.Symbol("t(l, s)"), t), NAMES) + r",\ \beta(s, \rho - 1) < l \leq \beta(s, \rho)",
        closed_ok,
        f"Griewank and Walther (2000) closed form; equal to the dynamic programme for all l <= {L_CHECK}, "
        f"s <= {S_CHECK}",
    )

    # The split rule attains it: k + t_{rho-1}(k, s) + t_rho(l - k, s - 1) = t_rho(l, s) (Pascal's rule),
    # and the executed recursion's count equals the closed form over the same range.
    identity = sp.gammasimp(k + t_sym(k, s, rho - 1) + t_sym(l - k, s - 1, rho) - t) == 0
    rule_ok = all(schedule_steps(a, b) == forward_steps(a, b)
                  for a in range(1, L_CHECK + 1) for b in range(1, S_CHECK + 1))
    checks["ckpt_split_rule"] = Check(
        tex(sp.Eq(k + t_sym(k, s, rho - 1) + t_sym(l - k, s - 1, rho), t), NAMES),
        r"k = \min(\beta(s, \rho - 1),\ l - \beta(s - 1, \rho - 1)) \text{ is optimal}",
        bool(identity) and rule_ok,
        "the split puts (k, s) at repetition number rho - 1 and (l - k, s - 1) at rho; the identity is "
        f"Pascal's rule (sympy gammasimp); the recursion's count equals t for l <= {L_CHECK}, s <= {S_CHECK}",
    )

    # exact_ckpt: l = r + 1 (outer gradient last), s = m.
    grads = 1 + t_sym(r + 1, m, rho)
    hvps = r
    c_det = C1 * (r + 1)
    c_rnd = sp.expand(C1 * (grads - (r + 1)) + C2 * hvps)
    d = _cost.derivation()
    # m = 1: rho = r (beta(1, r - 1) = r < r + 1 <= r + 1); m = r: rho = 1.
    at_1 = sp.expand_func(c_rnd.subs({m: 1, rho: r}))
    at_r = sp.expand_func(c_rnd.subs({m: r, rho: 1}))
    checks["ckpt_m1_is_exact_me"] = Check(
        tex(sp.factor(at_1)), tex(sp.factor(d.c_rnd)), equal(at_1, d.c_rnd),
        "C_rnd(r, 1) (rho = r) against Section 4.4's C_rnd (theory.cost): exact_me's recomputation",
    )
    checks["ckpt_m_r_is_algorithm2"] = Check(
        tex(at_r), tex(d.c_rnd_stored), equal(at_r, d.c_rnd_stored),
        "C_rnd(r, r) (rho = 1) against the stored-states C_rnd (Algorithm 2) of theory.cost",
    )
    time = c_det + q * c_rnd
    latex["ckpt_forward_steps"] = tex(sp.Eq(sp.Symbol("t(l, s)"), t), NAMES)
    latex["ckpt_grad_calls"] = tex(sp.Eq(sp.Symbol("grads"), grads), NAMES)
    latex["ckpt_C_rnd"] = tex(sp.Eq(C_rnd, c_rnd), NAMES)
    latex["ckpt_expected_time"] = tex(sp.Eq(sp.Symbol("E[time]"), time), NAMES)
    latex["ckpt_time_model_eq19"] = tex(
        choice_of_q.S ** (2 / (1 - 2 * choice_of_q.eps)) * (C_det + C_rnd * q)) + r",\ C_{rnd} = C_{rnd}(r, m)"
    return CheckpointingDerivation(t, grads, hvps, c_det, c_rnd, time, checks, latex)
