"""The bound D_bound on FOM's bias constant D (eq. 15), for any step sizes and in closed form for constant ones."""

from __future__ import annotations

import functools
from typing import NamedTuple

import sympy as sp

from ufom_bench.theory._sym import L1, L2, M1, Check, Numeric, alpha, as_arrays, equal, j, jp, m, r, tex, xp_for


def printed_sum(alphas, M1_, L1_, L2_):
    """Eq. (15) as printed, term by term (sympy or plain numbers).

    (1 + M1) L1 L2 sum_j alpha_j prod_{j' >= j} (1 + alpha_j' L2)
    """
    total = 0
    for i in range(len(alphas)):
        prod = 1
        for a in alphas[i:]:
            prod *= 1 + a * L2_
        total += alphas[i] * prod
    return (1 + M1_) * L1_ * L2_ * total


class BiasDerivation(NamedTuple):
    const: sp.Expr  # closed form for alpha_j = alpha
    checks: dict
    latex: dict


@functools.lru_cache(maxsize=None)
def derivation() -> BiasDerivation:
    """Closed form of (15) for constant alpha from the geometric sum, checked against (15) for all r.

    With x = 1 + alpha L2, prod_{j'=j}^r x = x^{r-j+1}, so (15) is (1+M1) L1 L2 alpha sum_{m=1}^r x^m
    = (1+M1) L1 (1 + alpha L2)((1 + alpha L2)^r - 1).
    """
    x = 1 + alpha * L2
    c = (1 + M1) * L1 * L2
    # The printed (15) with alpha_j = alpha: product over j' first, then the sum over j (m = r - j + 1).
    prod = sp.product(x, (jp, j, r))
    assert equal(prod, x ** (r - j + 1))
    geometric = sp.summation(x**m, (m, 1, r))
    const = sp.factor(sp.simplify(c * alpha * geometric))
    # For every r: (15) with constant alpha satisfies P(0) = 0 and P(r) = x P(r-1) + c alpha x (peel off
    # the factor j' = r of every product and the new term j = r); the closed form satisfies the same.
    recursion = equal(const.subs(r, 0), 0) and equal(const - (x * const.subs(r, r - 1) + c * alpha * x), 0)
    printed = c * sp.Sum(alpha * sp.Product(1 + alpha * L2, (jp, j, r)), (j, 1, r))
    checks = {
        "d_bound_const_alpha": Check(
            tex(const),
            tex(printed),
            bool(recursion),
            "closed form vs (15) with alpha_j = alpha, shown for every r by the recursion "
            "P(0) = 0, P(r) = (1 + alpha L2)(P(r-1) + (1+M1) L1 L2 alpha); tests also compare r = 1..30 exactly",
        )
    }
    alphas = sp.IndexedBase("alpha")
    latex = {
        "d_bound_eq15": tex(
            (1 + M1) * L1 * L2 * sp.Sum(alphas[j] * sp.Product(1 + alphas[jp] * L2, (jp, j, r)), (j, 1, r))
        ),
        "d_bound_const_alpha": tex(const),
    }
    return BiasDerivation(const, checks, latex)


@functools.lru_cache(maxsize=None)
def _const_numeric() -> Numeric:
    return Numeric((alpha, r, M1, L1, L2), derivation().const)


def d_bound(alphas, M1, L1, L2):
    """D_bound of eq. (15) for any step sizes alpha_1..alpha_r (a bound on D, not on D^2).

    D_bound = (1 + M1) L1 L2 sum_{j=1}^r alpha_j prod_{j'=j}^r (1 + alpha_{j'} L2).

    Args:
      alphas: step sizes along the last axis (leading axes are batch axes); numpy or jax.
      M1, L1, L2: the constants of Assumption 1 (broadcast against the batch axes).
    Returns:
      D_bound, with the batch shape.
    """
    xp = xp_for(alphas, M1, L1, L2)
    alphas, M1, L1, L2 = as_arrays(xp, alphas, M1, L1, L2)
    L2b = xp.asarray(L2)[..., None]
    tail = xp.flip(xp.cumprod(xp.flip(1 + alphas * L2b, -1), axis=-1), -1)  # prod_{j'=j}^r
    out = (1 + M1) * L1 * L2 * xp.sum(alphas * tail, axis=-1)
    return out


def d_bound_const(alpha, r, M1, L1, L2):
    """D_bound of eq. (15) for constant step size alpha, in closed form (derived with sympy).

    D_bound = (1 + M1) L1 (1 + alpha L2) ((1 + alpha L2)^r - 1).

    Args:
      alpha: the step size; r: number of inner steps; M1, L1, L2: Assumption 1's constants.
    Returns:
      D_bound, broadcast over the inputs.
    """
    return _const_numeric()(alpha, r, M1, L1, L2)
