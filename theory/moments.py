"""Moments of the UFOM estimate (12-13) over its coin xi, FOM's bias, and Lemma 1's second-moment bound.

Write G = exact gradient, F = G_FO (per task), G_UFO = F + (xi / q)(G - F), xi ~ Bernoulli(q).
The derivation works with inner products only (gg = <G, G>, ff = <F, F>, fg = <F, G>), so it holds in any
dimension; a 3-dimensional component computation is checked too.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import sympy as sp

from ufom_bench.theory._sym import D2, V2, Check, Numeric, equal, q, tex

gg, ff, fg = sp.symbols("gg ff fg", real=True)  # <G,G>, <F,F>, <F,G>
G2 = sp.Symbol("G2", nonnegative=True)  # ||G||^2 (one task) or E_T ||G||^2
Dt2 = sp.Symbol("Dt2", nonnegative=True)  # ||G_FO - G||^2 (one task) or E_T of it
_NAMES = {
    gg: r"\langle\mathcal{G},\mathcal{G}\rangle",
    ff: r"\langle\mathcal{G}_{FO},\mathcal{G}_{FO}\rangle",
    fg: r"\langle\mathcal{G}_{FO},\mathcal{G}\rangle",
    G2: r"\|\mathcal{G}\|^2",
    Dt2: r"\|\mathcal{G}_{FO} - \mathcal{G}\|^2",
}


def _norm2(u, v):
    """||u F + v G||^2 by bilinearity."""
    return u**2 * ff + 2 * u * v * fg + v**2 * gg


def _ufo(x):
    """Coefficients of G_UFO on (F, G) for coin value x: F + (x/q)(G - F)."""
    return (1 - x / q, x / q)


class MomentDerivation(NamedTuple):
    second_moment: sp.Expr  # E_xi ||G_UFO||^2 in gg, ff, fg
    checks: dict
    latex: dict


@functools.lru_cache(maxsize=None)
def derivation() -> MomentDerivation:
    """E_xi G_UFO, E_xi ||G_UFO||^2, Var_xi, and Lemma 1's bound, from (12-13) with P(xi = 1) = q."""
    E = lambda f: (1 - q) * f(0) + q * f(1)  # expectation over xi ~ Bernoulli(q)

    mean = tuple(sp.simplify(E(lambda x, i=i: _ufo(x)[i])) for i in range(2))  # coefficients on (F, G)
    second = sp.expand(E(lambda x: _norm2(*_ufo(x))))
    bias2 = ff - 2 * fg + gg  # ||F - G||^2
    target = gg + (1 / q - 1) * bias2  # ||G||^2 + (1/q - 1) ||G_FO - G||^2
    # Centred: E_xi ||G_UFO - G||^2 (coefficients (1 - x/q, x/q - 1) on (F, G)).
    var = sp.expand(E(lambda x: _norm2(_ufo(x)[0], _ufo(x)[1] - 1)))

    # The same in 3 dimensions with explicit components.
    g = sp.Matrix(sp.symbols("g1:4", real=True))
    f = sp.Matrix(sp.symbols("f1:4", real=True))
    ufo = lambda x: f + (x / q) * (g - f)
    second_3d = E(lambda x: ufo(x).dot(ufo(x)))
    target_3d = g.dot(g) + (1 / q - 1) * (f - g).dot(f - g)

    # Lemma 1: take E_T of the identity (linear), then E_T||G||^2 <= V^2 and E_T||G_FO - G||^2 <= D^2
    # (V^2, D^2 are sups over theta of these, (14), (16)); 1/q - 1 >= 0 for q in (0, 1].
    s1, s2, t = sp.symbols("s1 s2 t", nonnegative=True)  # V2 = E||G||^2 + s1, D2 = E||F-G||^2 + s2, t = 1/q - 1
    lhs = G2 + (1 / q - 1) * Dt2  # E_T E_xi ||G_UFO||^2
    bound = (1 / q - 1) * D2 + V2
    slack = sp.expand((bound - lhs).subs({V2: G2 + s1, D2: Dt2 + s2}).subs(q, 1 / (1 + t)))
    lemma1_ok = bool(slack.is_nonnegative)
    printed_bound = (sp.Integer(1) / q - 1) * D2 + V2

    F_, G_ = sp.symbols("G_FO G", commutative=False)
    names = {**_NAMES, F_: r"\mathcal{G}_{FO}", G_: r"\mathcal{G}"}
    tex_ = lambda e: tex(e, names)
    mean_expr = mean[0] * F_ + mean[1] * G_
    checks = {
        "ufom_unbiased": Check(
            tex_(sp.Eq(sp.Symbol(r"\mathbb{E}_\xi[\mathcal{G}_{UFO}]"), mean_expr)),
            tex_(sp.Eq(sp.Symbol(r"\mathbb{E}_\xi[\mathcal{G}_{UFO}]"), G_)),
            mean == (0, 1),
        ),
        "ufom_second_moment": Check(
            tex_(sp.factor(second - gg) + gg),
            r"\|\mathcal{G}\|^2 + (1/q - 1)\|\mathcal{G}_{FO} - \mathcal{G}\|^2",
            equal(second, target) and equal(second_3d, target_3d),
            "identity used in Lemma 1's proof (the main text prints only the bound); "
            "gg = <G,G>, ff = <G_FO,G_FO>, fg = <G_FO,G>; also checked with 3-d components",
        ),
        "ufom_xi_variance": Check(
            tex_(sp.factor(var)),
            r"(1/q - 1)\|\mathcal{G}_{FO} - \mathcal{G}\|^2",
            equal(var, (1 / q - 1) * bias2),
            "E_xi ||G_UFO - G||^2 (not printed; the part of the bound that D^2 controls)",
        ),
        "lemma1_bound": Check(
            tex_(bound),
            tex_(printed_bound),
            lemma1_ok and equal(bound, printed_bound),
            f"bound - E_T E_xi ||G_UFO||^2 = {slack} >= 0 with s1, s2, t = 1/q - 1 >= 0",
        ),
    }
    latex = {
        "ufom_mean": checks["ufom_unbiased"].derived,
        "ufom_second_moment": tex_(second),
        "ufom_second_moment_factored": tex_(sp.Eq(sp.Symbol(r"\mathbb{E}_\xi\|\mathcal{G}_{UFO}\|^2"),
                                                 G2 + (1 / q - 1) * Dt2)),
        "ufom_xi_variance": checks["ufom_xi_variance"].derived,
        "fom_bias": r"\mathbb{E}_T[\mathcal{G}_{FO}] - \mathbb{E}_T[\mathcal{G}] = \mathbb{E}_T[\mathcal{G}_{FO}"
        r" - \mathcal{G}],\quad \|\cdot\|^2 \le \mathbb{E}_T\|\mathcal{G}_{FO} - \mathcal{G}\|^2 \le \mathbb{D}^2",
        "lemma1_bound": tex_(bound),
    }
    return MomentDerivation(second, checks, latex)


@functools.lru_cache(maxsize=None)
def _numeric() -> dict:
    return {
        "second": Numeric((G2, Dt2, q), G2 + (1 / q - 1) * Dt2),
        "var": Numeric((Dt2, q), (1 / q - 1) * Dt2),
        "bound": Numeric((D2, V2, q), (1 / q - 1) * D2 + V2),
    }


def ufom_second_moment(G2, D2, q):
    """E_xi ||G_UFO||^2 = ||G||^2 + (1/q - 1) ||G_FO - G||^2 (from (12-13); Lemma 1).

    Holds per task, and, by linearity, for the expectations over tasks E_T ||G||^2, E_T ||G_FO - G||^2.

    Args:
      G2: ||G||^2, the squared norm of the exact gradient (or its mean over tasks).
      D2: ||G_FO - G||^2, FOM's squared error (or its mean over tasks).
      q: probability of the exact branch, in (0, 1].
    Returns:
      The second moment over xi.
    """
    return _numeric()["second"](G2, D2, q)


def ufom_xi_variance(D2, q):
    """Variance of UFOM over its coin: E_xi ||G_UFO - G||^2 = (1/q - 1) ||G_FO - G||^2.

    Args:
      D2: ||G_FO - G||^2 for the task (or its mean over tasks); q: probability of the exact branch.
    """
    return _numeric()["var"](D2, q)


def lemma1_bound(D2, V2, q):
    """Lemma 1's bound sup_theta E_T ||G_UFO||^2 <= (1/q - 1) D^2 + V^2 (Section 4.2).

    Args:
      D2: D^2 of (14); V2: V^2 of (16); q: probability of the exact branch, in (0, 1].
    """
    return _numeric()["bound"](D2, V2, q)


def fom_bias(G_FO, G, axis=0):
    """FOM's bias E_T[G_FO] - E_T[G] from per-task gradients stacked along `axis` (numpy or jax).

    Its squared norm is at most E_T ||G_FO - G||^2 <= D^2 (Jensen), while UFOM's bias is 0.
    """
    return (G_FO - G).mean(axis=axis)
