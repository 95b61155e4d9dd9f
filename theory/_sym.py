"""Shared pieces of the derivations: the paper's symbols, the derived-vs-printed record, numpy/jax lambdify.

Each derivation module builds its formulas from their definitions with sympy, compares them with the
paper's printed forms (a typo in either shows up as `matches=False`), and lambdifies the derived forms.
Numeric entry points pick the backend from their inputs: jax arrays (tracers included) go to the jax
lambdification, so the functions stay traceable under `jax.jit`; everything else goes to numpy float64.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import sympy as sp

# --- symbols (the paper's names; assumptions let sympy decide signs and simplify powers) ---------------
r = sp.Symbol("r", positive=True, integer=True)  # number of inner steps
j, j1, jp, m = sp.symbols("j j_1 j' m", positive=True, integer=True)  # loop indices
q = sp.Symbol("q", positive=True)  # P(xi = 1)
xi = sp.Symbol("xi", nonnegative=True, integer=True)
C1, C2 = sp.symbols("C_1 C_2", positive=True)  # time of one grad, of one HVP
C_det, C_rnd = sp.symbols("C_det C_rnd", positive=True)
D2 = sp.Symbol("D2", nonnegative=True)  # bias constant (14), squared
V2 = sp.Symbol("V2", nonnegative=True)  # variance constant (16), squared
eps = sp.Symbol("epsilon", real=True)  # the epsilon of Theorem 1 (18); 0 <= eps < 1/2
kappa = sp.Symbol("kappa", positive=True)  # exponent of S(q) in a time model T(q) S(q)^kappa
alpha, M1, L1, L2 = sp.symbols("alpha M_1 L_1 L_2", positive=True)

LATEX_NAMES = {
    D2: r"\mathbb{D}^2",
    V2: r"\mathbb{V}^2",
    C_det: r"C_{det}",
    C_rnd: r"C_{rnd}",
    eps: r"\epsilon",
    kappa: r"\kappa",
    xi: r"\xi",
}


def tex(expr, names: Optional[dict] = None, **kw) -> str:
    """LaTeX of a sympy expression with the paper's symbol names (plus `names`, symbol -> LaTeX)."""
    return sp.latex(expr, symbol_names={**LATEX_NAMES, **(names or {})}, **kw)


class Check(NamedTuple):
    """One derived formula against the paper's printed one (a 3-tuple plus an optional note)."""

    derived: str  # LaTeX of what sympy derived from the definitions
    printed: str  # LaTeX of the paper's printed form (transcribed as printed)
    matches: bool
    note: str = ""


def equal(a, b, deep: bool = True) -> bool:
    """Symbolic equality: some normal form of a - b is 0 (cheap forms first, `simplify` last if deep)."""
    d = sp.sympify(a - b)
    normals = (sp.expand, lambda e: sp.cancel(sp.together(e))) + ((sp.simplify,) if deep else ())
    return any(normal(d) == 0 for normal in normals)


def solve_linear(expr, x):
    """The root of expr, affine in x (cheaper than `solve`); raises if expr is not affine in x."""
    expr = sp.expand(expr)
    slope = expr.coeff(x)
    if slope == 0 or sp.diff(expr, x, 2) != 0:
        raise ValueError(f"{expr} is not affine in {x}")
    return sp.cancel(-expr.subs(x, 0) / slope)


def spot_equal(a, b, symbols, points: int = 3, digits: int = 40, seed: int = 0) -> bool:
    """a == b at a few random rational points of `symbols` (values in (0, 1)), to `digits` digits."""
    rng = np.random.default_rng(seed)
    for _ in range(points):
        at = {s: sp.Rational(int(rng.integers(1, 99)), 100) for s in symbols}
        x, y = sp.N(a.subs(at), digits), sp.N(b.subs(at), digits)
        if abs(x - y) > sp.Float(10) ** (5 - digits) * (1 + abs(x)):
            return False
    return True


# --- numeric backends -------------------------------------------------------------------------------------
def is_jax(*xs) -> bool:
    """Whether any input is a jax array or tracer (checked without importing jax)."""
    jax = sys.modules.get("jax")
    return jax is not None and any(isinstance(x, jax.Array) for x in xs)


def xp_for(*xs, backend: Optional[str] = None):
    """The array module for these inputs: jax.numpy for jax inputs (or backend='jax'), else numpy."""
    if backend not in (None, "numpy", "jax"):
        raise ValueError(f"backend must be None, 'numpy' or 'jax', got {backend!r}")
    if backend == "jax" or (backend is None and is_jax(*xs)):
        import jax.numpy as jnp

        return jnp
    return np


def as_arrays(xp, *xs):
    """Inputs as arrays of the backend: float64 for numpy; jax keeps dtypes (python scalars stay weak)."""
    if xp is np:
        return tuple(np.asarray(x, dtype=np.float64) for x in xs)
    return tuple(x if isinstance(x, (int, float)) else xp.asarray(x) for x in xs)


def finish(xp, out, *xs):
    """Broadcast a result to the inputs' broadcast shape; numpy 0-d results become numpy scalars."""
    shape = xp.broadcast_shapes(*(xp.shape(x) for x in xs))
    if xp is np:
        return np.array(np.broadcast_to(out, shape), dtype=np.float64)[()]
    return xp.broadcast_to(xp.asarray(out), shape)


class Numeric:
    """A sympy expression lambdified for numpy (at once) and for jax (on first use)."""

    def __init__(self, args: Sequence[sp.Symbol], expr):
        self.args, self.expr = tuple(args), sp.sympify(expr)
        self._np: Callable = sp.lambdify(self.args, self.expr, modules="numpy")

    @functools.cached_property
    def _jax(self) -> Callable:
        return sp.lambdify(self.args, self.expr, modules="jax")

    def raw(self, xp) -> Callable:
        """The lambdified function for array module `xp` (no conversion, no broadcasting)."""
        return self._np if xp is np else self._jax

    def __call__(self, *xs, backend: Optional[str] = None):
        xp = xp_for(*xs, backend=backend)
        xs = as_arrays(xp, *xs)
        return finish(xp, self.raw(xp)(*xs), *xs)
