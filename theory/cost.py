"""Cost of Algorithm 4 (UFOM): Proposition 1 and the constants C_det, C_rnd of the time model (19).

Counts follow the paper's convention: one grad call is one evaluation of dL/dphi (inner or outer; the
outer gradient's theta and phi parts come from one call), one HVP is the pair of Hessian-vector products
in Algorithm 4's reverse loop. Evaluations of V and the final Jacobian-vector product with dV/dtheta are
not counted (neither does the paper).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import sympy as sp

from ufom_bench.theory._sym import C1, C2, C_det, C_rnd, Check, Numeric, equal, j, j1, q, r, tex, xi


class CostDerivation(NamedTuple):
    grads_branch: tuple  # (xi = 0, xi = 1) grad calls
    hvps_branch: tuple  # (xi = 0, xi = 1) HVP calls
    grads: sp.Expr  # expected grad calls
    hvps: sp.Expr  # expected HVP calls
    time: sp.Expr  # expected time C1 grads + C2 hvps
    c_det: sp.Expr
    c_rnd: sp.Expr
    c_rnd_stored: sp.Expr  # C_rnd when the exact branch reads stored states (Algorithm 2), no recompute
    checks: dict
    latex: dict


@functools.lru_cache(maxsize=None)
def derivation() -> CostDerivation:
    """Count Algorithm 4's loops with `summation`, take the expectation over xi ~ Bernoulli(q)."""
    forward = sp.summation(1, (j, 1, r))  # for j = 1..r: one inner grad
    outer = 1  # b1, b2 := dL_out/d(theta, phi) at phi_r
    # Exact branch, for j = r..1: recompute phi_{j-1} from V with j - 1 grads, then one HVP.
    recompute = sp.summation(sp.summation(1, (j1, 1, j - 1)), (j, 1, r))
    hvp_loop = sp.summation(1, (j, 1, r))

    grads_branch = (forward + outer, forward + outer + recompute)
    hvps_branch = (sp.Integer(0), hvp_loop)
    grads = sp.expand((1 - q) * grads_branch[0] + q * grads_branch[1])
    hvps = sp.expand((1 - q) * hvps_branch[0] + q * hvps_branch[1])

    time = sp.expand(C1 * grads + C2 * hvps)
    c_det, c_rnd = time.subs(q, 0), sp.diff(time, q)
    assert equal(time, c_det + q * c_rnd)  # affine in q: expected time = C_det + q C_rnd
    # The same accounting when the exact branch stores the r states (Algorithm 2): no recompute grads.
    c_rnd_stored = sp.expand(C2 * hvp_loop)

    printed = {
        "prop1_grad_calls": r + 1 + q * r * (r - 1) / 2,
        "prop1_hvp_calls": q * r,
        "cost_C_det": C1 * (r + 1),
        "cost_C_rnd": (C1 * (r - 1) / 2 + C2) * r,
    }
    derived = {
        "prop1_grad_calls": grads,
        "prop1_hvp_calls": hvps,
        "cost_C_det": sp.factor(c_det),
        "cost_C_rnd": sp.factor(c_rnd),
    }
    checks = {
        name: Check(tex(derived[name]), tex(printed[name]), equal(derived[name], printed[name]))
        for name in printed
    }
    latex = {
        **{name: tex(e) for name, e in derived.items()},
        "grads_branch_xi0": tex(grads_branch[0]),
        "grads_branch_xi1": tex(sp.factor(grads_branch[1])),
        "hvps_branch_xi1": tex(hvps_branch[1]),
        "expected_time": tex(sp.Eq(sp.Symbol("E[time]"), c_det + q * sp.factor(c_rnd), evaluate=False)),
        "cost_C_rnd_stored_states": tex(c_rnd_stored),
    }
    return CostDerivation(grads_branch, hvps_branch, grads, hvps, time, c_det, c_rnd, c_rnd_stored, checks, latex)


@functools.lru_cache(maxsize=None)
def _numeric() -> dict:
    d = derivation()
    # Branch counts as one expression in xi in {0, 1}: (1 - xi) branch0 + xi branch1.
    branch_grads = (1 - xi) * d.grads_branch[0] + xi * d.grads_branch[1]
    branch_hvps = (1 - xi) * d.hvps_branch[0] + xi * d.hvps_branch[1]
    return {
        "grads": Numeric((r, q), d.grads),
        "hvps": Numeric((r, q), d.hvps),
        "branch_grads": Numeric((r, xi), branch_grads),
        "branch_hvps": Numeric((r, xi), branch_hvps),
        "c_det": Numeric((r, C1, C2), d.c_det),
        "c_rnd": Numeric((r, C1, C2), d.c_rnd),
        "c_rnd_stored": Numeric((r, C1, C2), d.c_rnd_stored),
    }


def expected_calls(r, q):
    """Expected grad and HVP calls of one UFOM estimate (Proposition 1).

    grads = r + 1 + q r (r - 1) / 2,  hvps = q r.

    Args:
      r: number of inner steps (scalar or array).
      q: probability of the exact branch, in [0, 1] (scalar or array; q = 0 is FOM, q = 1 exact_me).
    Returns:
      (grad_calls, hvp_calls), floats broadcast over r and q.
    """
    n = _numeric()
    return n["grads"](r, q), n["hvps"](r, q)


def branch_calls(r, xi):
    """Grad and HVP calls of one run of Algorithm 4 given its coin xi in {0, 1}.

    xi = 0: (r + 1, 0);  xi = 1: (r + 1 + r (r - 1) / 2, r).

    Args:
      r: number of inner steps.
      xi: 0 (FOM branch) or 1 (exact branch, memory-efficient recomputation); bools are fine.
    Returns:
      (grad_calls, hvp_calls) as floats.
    """
    n = _numeric()
    return n["branch_grads"](r, xi), n["branch_hvps"](r, xi)


def branch_total(r: int, xi) -> int:
    """Function calls (grads + HVPs) of one run of Algorithm 4 given xi, as an int (from `branch_calls`):
    r + 1 for xi = 0 (FOM), r + 1 + r (r - 1) / 2 + r for xi = 1 (exact_me)."""
    grads, hvps = branch_calls(int(r), int(bool(xi)))
    return int(round(float(grads) + float(hvps)))


def costs(r, C1=1.0, C2=1.0, recompute=True):
    """C_det and C_rnd of the time model (19): expected time of one estimate is C_det + q C_rnd.

    C_det = C1 (r + 1),  C_rnd = (C1 (r - 1) / 2 + C2) r   (Section 4.4, from Proposition 1).
    With recompute=False the exact branch reads stored states (Algorithm 2: O(r) memory), so
    C_rnd = C2 r; with C1 = C2 = 1 that is (r + 1, r), the constants of the authors' released toy code.

    Args:
      r: number of inner steps.
      C1: time of one gradient evaluation.
      C2: time of one Hessian-vector product (the pair of Algorithm 4).
      recompute: True for Algorithm 4 as printed (phi_{j-1} recomputed from V: O(1) memory).
    Returns:
      (C_det, C_rnd) as floats.
    """
    n = _numeric()
    return n["c_det"](r, C1, C2), n["c_rnd" if recompute else "c_rnd_stored"](r, C1, C2)
