"""Cost of the implicit-function estimators (`implicit_cg`, `neumann`) in grads and HVPs, counted with sympy.

The convention of `theory.cost`: one grad call is one evaluation of dL_in/dphi or of the outer gradient (both
partials at once); one HVP is one reverse pass of dL_in/dphi, giving (d2 L_in/dtheta dphi)^T b and
(d2 L_in/dphi2)^T b. Neither estimator is random, so its expected cost is its cost.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import sympy as sp

from ufom_bench.theory._sym import Check, Numeric, equal, j, r, tex

iters = sp.Symbol("m", positive=True, integer=True)  # CG iterations
terms = sp.Symbol("K", positive=True, integer=True)  # Neumann terms
i = sp.Symbol("i", nonnegative=True, integer=True)


class ImplicitCostDerivation(NamedTuple):
    grads: sp.Expr  # both estimators
    hvps_cg: sp.Expr
    hvps_neumann: sp.Expr
    checks: dict
    latex: dict


@functools.lru_cache(maxsize=None)
def derivation() -> ImplicitCostDerivation:
    """Count the loops of `ufom_bench.estimators.implicit` with `summation`."""
    grads = sp.summation(1, (j, 1, r)) + 1  # r inner steps, then the outer gradient at phi_r
    mixed = 1  # (d2 L_in/dtheta dphi)^T v
    # CG from x_0 = 0: the first residual is b (no product); one H p per iteration k = 1..m.
    hvps_cg = sp.summation(1, (j, 1, iters)) + mixed
    # Neumann: the term i = 0 is b itself; each term i = 1..K-1 is (I - alpha H) applied to term i - 1.
    hvps_neumann = sp.summation(1, (i, 1, terms - 1)) + mixed

    documented = {  # as the estimators' docstrings state them
        "implicit_grad_calls": r + 1,
        "implicit_cg_hvp_calls": iters + 1,
        "neumann_hvp_calls": terms,
    }
    derived = {"implicit_grad_calls": grads, "implicit_cg_hvp_calls": hvps_cg, "neumann_hvp_calls": hvps_neumann}
    checks = {
        name: Check(tex(derived[name]), tex(documented[name]), equal(derived[name], documented[name]),
                    "not in the papers: the estimators' documented counts")
        for name in derived
    }
    latex = {name: tex(e) for name, e in derived.items()}
    return ImplicitCostDerivation(grads, hvps_cg, hvps_neumann, checks, latex)


@functools.lru_cache(maxsize=None)
def _numeric() -> dict:
    d = derivation()
    return {
        "grads": Numeric((r,), d.grads),
        "cg": Numeric((iters,), d.hvps_cg),
        "neumann": Numeric((terms,), d.hvps_neumann),
    }


def implicit_cg_calls(r, iters):
    """Grad and HVP calls of one `implicit_cg(iters)` estimate: (r + 1, iters + 1).

    Args:
      r: inner steps. iters: CG iterations (scalars or arrays).
    Returns:
      (grad_calls, hvp_calls), floats broadcast over r and iters.
    """
    n = _numeric()
    return n["grads"](r) + 0 * n["cg"](iters), n["cg"](iters) + 0 * n["grads"](r)


def neumann_calls(r, terms):
    """Grad and HVP calls of one `neumann(terms)` estimate: (r + 1, terms).

    Args:
      r: inner steps. terms: Neumann terms (scalars or arrays).
    Returns:
      (grad_calls, hvp_calls), floats broadcast over r and terms.
    """
    n = _numeric()
    return n["grads"](r) + 0 * n["neumann"](terms), n["neumann"](terms) + 0 * n["grads"](r)
