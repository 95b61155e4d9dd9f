"""Optimal q (Section 4.4): the time model (19), condition (20), the quadratic (21), q*, and an alternative.

Both time models are members of one family, T_kappa(q) = S(q)^kappa (C_det + C_rnd q) with
S(q) = (1/q - 1) D^2 + V^2, so one derivation serves both:
- "paper_eq19": kappa = 2 / (1 - 2 eps), eq. (19);
- "released_code_T_sqrtS": kappa = 1/2, what the authors' released toy code minimised ("T(q) sqrt(S(q))",
  there with C_det = r + 1, C_rnd = r, i.e. `costs(r, recompute=False)`; see NOTES.md).

dT/dq = S^(kappa-1) N(q) / q^2 with N(q) = C_rnd (V^2 - D^2) q^2 + (1 - kappa) D^2 C_rnd q - kappa D^2 C_det,
so on (0, 1] dT/dq has the sign of the quadratic N. N(0) = -kappa D^2 C_det <= 0, hence T falls first and
the minimiser over (0, 1] is the smaller positive root of N (where N turns from - to +) or q = 1.
For kappa >= 1 (the paper, kappa >= 2) N has at most one positive root and q* < 1 exactly when
dT/dq(1) > 0, which is condition (20); then q* is the positive root of (21) = N. For kappa < 1 (the
released code's model) N can have two roots in (0, 1) (a local minimum, then a local maximum) while
dT/dq(1) < 0, so the analogue of (20) is sufficient for q* < 1 but not necessary; `optimal_q` compares
T at the root with T(1) there.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import numpy as np
import sympy as sp

from ufom_bench.theory._sym import (
    C_det,
    C_rnd,
    D2,
    V2,
    Check,
    Numeric,
    as_arrays,
    finish,
    solve_linear,
    spot_equal,
    eps,
    equal,
    kappa,
    q,
    tex,
    xp_for,
)

MODELS = ("paper_eq19", "released_code_T_sqrtS")
DEFAULT_MODEL = "paper_eq19"

S = (1 / q - 1) * D2 + V2  # the variance factor of (18); Lemma 1's bound
KAPPA = {"paper_eq19": 2 / (1 - 2 * eps), "released_code_T_sqrtS": sp.Rational(1, 2)}
_A, _B, _C = sp.symbols("a b c", real=True)  # generic quadratic a q^2 + b q + c
_ARGS = (D2, V2, C_det, C_rnd, eps)


class OptimalQDerivation(NamedTuple):
    N: sp.Expr  # derivative numerator for the family (in kappa)
    coeffs: tuple  # (a, b, c) of N in q
    threshold: sp.Expr  # D^2 threshold from dT/dq(1) > 0, in kappa
    root_plus: sp.Expr  # (-b + sqrt(b^2 - 4 a c)) / (2 a) in generic a, b, c
    root_stable: sp.Expr  # -2 c / (b + sqrt(b^2 - 4 a c)): the same root, no cancellation when b > 0
    checks: dict
    latex: dict


def _family_time(k):
    return S**k * (C_det + C_rnd * q)


@functools.lru_cache(maxsize=None)
def derivation() -> OptimalQDerivation:
    """Derive (19) from (18), then dT/dq, (21), (20) and q*, and compare each with the printed form."""
    checks, latex = {}, {}
    kp = KAPPA["paper_eq19"]
    half = sp.Rational(1, 2)

    # (18) -> iterations to reach delta: S H n^(eps - 1/2) = delta, solved for ell = log n (linear).
    H, delta, ell = sp.symbols("H delta ell", positive=True)
    ell_sol = solve_linear(sp.log(S) + sp.log(H) + (eps - half) * ell - sp.log(delta), ell)
    iters = (delta / (H * S)) ** (1 / (eps - half))
    assert equal(sp.expand_log(sp.log(iters), force=True), sp.expand_log(ell_sol, force=True), deep=False)
    iters_printed = (H**-1 * delta * S**-1) ** (-1 / (half + eps))
    log_ratio = sp.expand_log(sp.log(iters) - sp.log(iters_printed), force=True)
    checks["iterations_to_delta"] = Check(
        tex(iters, {H: r"\mathcal{H}(\epsilon)"}),
        tex(iters_printed, {H: r"\mathcal{H}(\epsilon)"}),
        equal(log_ratio, 0, deep=False),
        "from (18), min E||dM||^2 = S H k^(-1/2 + eps) <= delta gives exponent -1/(1/2 - eps); the paper "
        "prints -1/(0.5 + eps) (they agree only at eps = 0). (19) follows from the derived exponent "
        "2/(1 - 2 eps); the printed one would give 2/(1 + 2 eps).",
    )

    # (19): iterations x expected time per iteration (Prop. 1: C_det + q C_rnd), up to a factor free of q.
    time_derived = iters * (C_det + C_rnd * q)
    time_printed = S ** (2 / (1 - 2 * eps)) * (C_det + C_rnd * q)
    dlog = sp.diff(sp.expand_log(sp.log(time_derived) - sp.log(time_printed), force=True), q)
    checks["time_model_eq19"] = Check(
        tex(time_derived, {H: r"\mathcal{H}(\epsilon)"}),
        tex(time_printed),
        equal(dlog, 0, deep=False),
        "equal up to a factor that does not depend on q ((H/delta)^(2/(1-2eps)))",
    )
    latex["time_model_eq19"] = tex(time_printed)

    # dT/dq for the family, with S kept abstract so S^kappa / S^(kappa - 1) = S is exact.
    Sf = sp.Function("S")(q)
    g = sp.powsimp(sp.expand(sp.diff(Sf**kappa * (C_det + C_rnd * q), q) / Sf ** (kappa - 1)), force=True)
    g = g.subs(sp.Derivative(Sf, q), sp.diff(S, q)).subs(Sf, S)
    N = sp.expand(g * q**2)
    at = (q, D2, V2, C_det, C_rnd, kappa)
    assert spot_equal(sp.diff(_family_time(kappa), q), S ** (kappa - 1) * N / q**2, at)
    a, b, c = sp.Poly(N, q).all_coeffs()
    latex["time_derivative_family"] = tex(
        sp.Eq(sp.Symbol(r"\frac{dT_\kappa}{dq}"), S ** (kappa - 1) * sp.collect(N, q) / q**2, evaluate=False)
    )

    # (21): N for the paper's kappa against the printed quadratic.
    N_paper = sp.collect(sp.expand(N.subs(kappa, kp)), q)
    printed21 = (
        C_rnd * (V2 - D2) * q**2
        + (2 * eps + 1) / (2 * eps - 1) * D2 * C_rnd * q
        + 2 / (2 * eps - 1) * D2 * C_det
    )
    checks["quadratic_eq21"] = Check(
        tex(sp.Eq(N_paper, 0)),
        tex(sp.Eq(printed21, 0)),
        equal(N_paper, printed21, deep=False),
        "q^2 dT/dq / S^(kappa-1) with kappa = 2/(1-2eps): equal to the printed left side, factor 1",
    )
    latex["quadratic_eq21"] = checks["quadratic_eq21"].derived

    # (20): dT/dq(1) > 0 <=> N(1) > 0 <=> D^2 < threshold, since N(1) decreases in D^2.
    N1 = sp.expand(N.subs(q, 1))
    assert sp.diff(N1, D2).is_negative
    threshold = solve_linear(N1, D2)
    thr_paper = sp.cancel(threshold.subs(kappa, kp))
    printed20 = C_rnd / ((2 / (1 - 2 * eps)) * (C_det + C_rnd)) * V2
    checks["condition_eq20"] = Check(
        tex(sp.StrictLessThan(D2, sp.factor(thr_paper))),
        tex(sp.StrictLessThan(D2, printed20)),
        equal(thr_paper, printed20, deep=False),
        "derived as dT/dq(q=1) > 0",
    )
    latex["condition_eq20"] = checks["condition_eq20"].derived

    # q* < 1 <=> (20) for kappa >= 1: sign facts sympy must confirm (argument in the module docstring).
    u = sp.Symbol("u", nonnegative=True)  # kappa = 1 + u >= 1
    facts = {
        "N(0) <= 0": c.is_nonpositive,
        "b <= 0 for kappa >= 1": sp.expand(b.subs(kappa, 1 + u)).is_nonpositive,
        "threshold <= V^2 (so (20) implies a > 0)": sp.factor(V2 - threshold.subs(kappa, 1 + u)).is_nonnegative,
    }
    checks["q_star_below_one_iff_eq20"] = Check(
        r"q^* < 1 \iff \frac{dT}{dq}(1) > 0 \quad (\kappa = \tfrac{2}{1-2\epsilon} \ge 1)",
        r"\text{Section 4.4: } q^* < 1 \text{ is equivalent to (20)}",
        all(bool(v) for v in facts.values()),
        "; ".join(f"{k}: {v}" for k, v in facts.items())
        + ". With N(0) <= 0: if (20), a > 0 and N(1) > 0, one root in (0,1); if not, N < 0 on (0,1)"
        " (a > 0: the one positive root is >= 1; a <= 0: N' = 2aq + b <= 0). Tests check it numerically.",
    )

    # The root: the smaller positive root of N (or the only one).
    roots = sp.solve(_A * q**2 + _B * q + _C, q)
    disc = _B**2 - 4 * _A * _C
    root_plus = (-_B + sp.sqrt(disc)) / (2 * _A)
    root_stable = -2 * _C / (_B + sp.sqrt(disc))
    scale = sp.Symbol("s", positive=True)
    assert any(equal(root_plus, x, deep=False) for x in roots) and equal(root_plus, root_stable, deep=False)
    assert equal(root_plus.subs({_A: scale * _A, _B: scale * _B, _C: scale * _C}), root_plus, deep=False)
    # (21) for the paper: its printed coefficients are the derived ones; display the root after scaling
    # the quadratic by (1 - 2 eps) / C_rnd > 0 (same roots).
    printed_coeffs = sp.Poly(printed21, q).all_coeffs()
    paper_coeffs = [sp.expand(x.subs(kappa, kp)) for x in (a, b, c)]
    coeffs_match = all(equal(x, y, deep=False) for x, y in zip(paper_coeffs, printed_coeffs))
    nice = [sp.factor(sp.cancel(x * (1 - 2 * eps) / C_rnd)) for x in paper_coeffs]
    q_paper = root_plus.subs(dict(zip((_A, _B, _C), nice)))
    checks["q_star_root_of_eq21"] = Check(
        tex(sp.Eq(sp.Symbol("q^*"), q_paper)),
        r"q^* \in (0, 1) \text{ a root of (21)}",
        coeffs_match and equal((_A * q**2 + _B * q + _C).subs(q, root_plus), 0, deep=False),
        "the '+' root (-b + sqrt(b^2 - 4ac)) / (2a) of a q^2 + b q + c with (21)'s printed coefficients "
        "(equal to the derived ones); it is the positive one since a > 0 and c <= 0 under (20)",
    )
    latex["q_star_paper"] = checks["q_star_root_of_eq21"].derived
    latex["q_star_stable_form"] = tex(sp.Eq(sp.Symbol("q^*"), root_stable))
    latex["iterations_to_delta"] = checks["iterations_to_delta"].derived

    # The released code's model: kappa = 1/2 (no printed counterpart in the paper).
    kr = KAPPA["released_code_T_sqrtS"]
    latex["time_model_released_code"] = tex(_family_time(kr))
    latex["quadratic_released_code"] = tex(sp.Eq(sp.collect(sp.expand(N.subs(kappa, kr)), q), 0))
    latex["condition_q1_released_code"] = tex(sp.StrictLessThan(D2, sp.simplify(threshold.subs(kappa, kr))))
    q_released = root_stable.subs({_A: a, _B: b, _C: c}).subs(kappa, kr)
    latex["q_star_released_code"] = tex(sp.Eq(sp.Symbol("q^*"), q_released))
    return OptimalQDerivation(N, (a, b, c), threshold, root_plus, root_stable, checks, latex)


@functools.lru_cache(maxsize=None)
def _numeric(model: str) -> dict:
    """Lambdified pieces for one model: T, the coefficients of N, the q = 1 threshold."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    d = derivation()
    k = KAPPA[model]
    return {
        "time": Numeric((q, *_ARGS), _family_time(k)),
        "coeffs": tuple(Numeric(_ARGS, x.subs(kappa, k)) for x in d.coeffs),
        "threshold": Numeric(_ARGS, d.threshold.subs(kappa, k)),
        "root_plus": Numeric((_A, _B, _C), d.root_plus),
        "root_stable": Numeric((_A, _B, _C), d.root_stable),
    }


def _prepare(xs, backend):
    xp = xp_for(*xs, backend=backend)
    xs = as_arrays(xp, *xs)
    return xp, xs


def time_model(q, D2, V2, C_det, C_rnd, eps=0.0, model=DEFAULT_MODEL, backend: Optional[str] = None):
    """Expected time to reach a precision, up to a factor free of q (eq. 19 or the released code's model).

    paper_eq19:            T(q) = ((1/q - 1) D^2 + V^2)^(2/(1-2eps)) (C_det + C_rnd q)
    released_code_T_sqrtS: T(q) = ((1/q - 1) D^2 + V^2)^(1/2) (C_det + C_rnd q)   (eps unused)

    Args:
      q: probability of the exact branch, in (0, 1]. D2, V2: D^2 (14), V^2 (16).
      C_det, C_rnd: from `costs`. eps: Theorem 1's epsilon, 0 <= eps < 1/2.
      model: one of MODELS. backend: None (from the inputs), 'numpy' or 'jax'.
    """
    xp, xs = _prepare((q, D2, V2, C_det, C_rnd, eps), backend)
    return finish(xp, _numeric(model)["time"].raw(xp)(*xs), *xs)


def condition_eq20(D2, V2, C_det, C_rnd, eps=0.0, backend: Optional[str] = None):
    """Condition (20), D^2 < C_rnd V^2 / ((2/(1-2eps)) (C_det + C_rnd)): q* of (19) is < 1 iff it holds.

    Derived as dT/dq(q = 1) > 0 for T of (19).

    Returns:
      bool array (numpy or jax) broadcast over the inputs.
    """
    return dT_dq_at_1_positive(D2, V2, C_det, C_rnd, eps, DEFAULT_MODEL, backend)


def dT_dq_at_1_positive(D2, V2, C_det, C_rnd, eps=0.0, model=DEFAULT_MODEL, backend: Optional[str] = None):
    """Whether the time model rises at q = 1, i.e. D^2 < C_rnd V^2 / (kappa (C_det + C_rnd)).

    For paper_eq19 (kappa = 2/(1-2eps)) this is (20) and is equivalent to q* < 1; for
    released_code_T_sqrtS (kappa = 1/2) it is sufficient for q* < 1, not necessary.
    """
    xp, xs = _prepare((D2, V2, C_det, C_rnd, eps), backend)
    D2, V2, C_det, C_rnd, eps = xs
    thr = _numeric(model)["threshold"].raw(xp)(*xs)
    return xp.broadcast_to(xp.asarray(D2 < thr), xp.broadcast_shapes(*(xp.shape(x) for x in xs)))


def optimal_q(D2, V2, C_det, C_rnd, eps=0.0, model=DEFAULT_MODEL, backend: Optional[str] = None):
    """q* in (0, 1] minimising the time model over q (Section 4.4), elementwise, numpy or jax.

    paper_eq19 (default): q* = 1 unless (20) holds; then q* is the positive root of (21),
      C_rnd (V^2 - D^2) q^2 + (2eps+1)/(2eps-1) D^2 C_rnd q + 2/(2eps-1) D^2 C_det = 0,
      q* = (-b + sqrt(b^2 - 4ac)) / (2a)  (a > 0, b <= 0, c <= 0 there: no cancellation).
    released_code_T_sqrtS: minimiser of sqrt(S(q)) (C_det + C_rnd q) (eps unused): the smaller positive
      root of its derivative's quadratic if it lies in (0, 1) and beats q = 1, else 1.

    Edge cases (inputs are assumed D2, V2 >= 0, C_det, C_rnd > 0, 0 <= eps < 1/2):
      D2 = 0 < V2: T increases in q and q* -> 0 (FOM is unbiased); the exact limit 0 is clipped into
        (0, 1], i.e. the smallest positive normal number of the dtype (an estimator's q_min takes over).
      D2 = V2 = 0: T is constant 0 and 1 is returned. NaN inputs give NaN.
      Where the root is returned it is clipped below 1, so (20) holds exactly when q* < 1.

    Branch-free (`where`), so it traces under jax.jit with jnp scalars or arrays (model is static).

    Args:
      D2, V2: D^2 (14) and V^2 (16) (or running estimates, Section 4.5). C_det, C_rnd: from `costs`.
      eps: Theorem 1's epsilon. model: one of MODELS. backend: None (from the inputs), 'numpy' or 'jax'.
    Returns:
      q*, broadcast over the inputs (numpy float64, or a jax array of the inputs' dtype).
    """
    xp, xs = _prepare((D2, V2, C_det, C_rnd, eps), backend)
    D2, V2, C_det, C_rnd, eps = xs
    n = _numeric(model)
    shape = xp.broadcast_shapes(*(xp.shape(x) for x in xs))
    dtype = xp.result_type(D2, V2, C_det, C_rnd, eps) if xp is not np else np.float64
    fi = xp.finfo(dtype)
    tiny, below_one = fi.tiny, 1.0 - fi.epsneg
    a, b, c = (xp.broadcast_to(xp.asarray(f.raw(xp)(*xs), dtype=dtype), shape) for f in n["coeffs"])
    one = xp.ones(shape, dtype)

    if model == "paper_eq19":
        cond = D2 < n["threshold"].raw(xp)(*xs)
        # Where (20) fails, feed a harmless quadratic (q^2 - 1) so no NaN or warning is produced.
        root = n["root_plus"].raw(xp)(xp.where(cond, a, 1.0), xp.where(cond, b, 0.0), xp.where(cond, c, -1.0))
        q_star = xp.where(cond, xp.clip(root, tiny, below_one), one)
    else:
        disc = b * b - 4 * a * c
        real = disc >= 0
        stable = b > 0  # then -2c / (b + sqrt(disc)) has no cancellation
        # Safe inputs: each form only sees (a, b, c) with a nonnegative discriminant and a nonzero denominator.
        r_stable = n["root_stable"].raw(xp)(xp.where(stable & real, a, 0.0), xp.where(stable, b, 1.0), c)
        r_plus = n["root_plus"].raw(xp)(
            xp.where(~stable & real & (a != 0), a, 1.0), xp.where(stable, 0.0, b), c
        )
        root = xp.where(stable, r_stable, r_plus)
        ok = real & (root > 0) & (root < 1)
        root = xp.clip(xp.where(ok, root, 1.0), tiny, below_one)
        t = n["time"].raw(xp)
        q_star = xp.where(ok & (t(root, *xs) < t(1.0, *xs)), root, one)

    q_star = xp.where((D2 == 0) & (V2 > 0), tiny, q_star)  # limit q* -> 0, clipped into (0, 1]
    nan = xp.isnan(D2) | xp.isnan(V2) | xp.isnan(C_det) | xp.isnan(C_rnd) | xp.isnan(eps)
    q_star = xp.where(nan, xp.nan, q_star)
    return q_star[()] if xp is np else q_star


def optimal_q_jax(D2, V2, C_det, C_rnd, eps=0.0, model=DEFAULT_MODEL):
    """`optimal_q` on the jax backend (jit-traceable; python scalars become jax arrays)."""
    return optimal_q(D2, V2, C_det, C_rnd, eps, model, backend="jax")


def optimal_q_time_sqrt_variance(D2, V2, C_det, C_rnd, backend: Optional[str] = None):
    """q* minimising T(q) sqrt(S(q)) = (C_det + C_rnd q) sqrt((1/q - 1) D^2 + V^2), the released toy code's rule.

    The released code used C_det = r + 1, C_rnd = r (`costs(r, recompute=False)`). Same as
    `optimal_q(..., model="released_code_T_sqrtS")`.
    """
    return optimal_q(D2, V2, C_det, C_rnd, 0.0, "released_code_T_sqrtS", backend)
