"""Cost and memory of every registered estimator in one place: grads and HVPs as sympy expressions in r and
the estimator's own parameters, and the number of inner states it stores (its memory class in r).

The counts are the derivations of `theory.cost` (Proposition 1: fom, exact_me, ufom), `theory.zeroth_order`
(pzobo, forward_gradient, es) and `theory.implicit` (implicit_cg, neumann), reused, plus the three that have
no derivation elsewhere, counted here from their loops with `summation`:
  exact (Algorithm 2): the forward loop and the outer gradient, r + 1 grads; one HVP per reverse step, r;
  truncated(k): r + 1 grads, one HVP per step of the last k, k;
  reptile: the inner loop only, r grads, 0 HVPs (no outer gradient).
adaptive_ufom draws its coin with its current q_k (eq. 22), so its expected cost given the state is UFOM's at
q = q_k; at its initial state q_k = q_min. ufom with ``checkpoints`` = m runs exact_ckpt(m)'s branch when xi = 1
(`theory.checkpointing`): r + 1 + q (t(r + 1, min(m, r)) - r) grads and q r HVPs (m = 1 is Proposition 1's count).

Memory: the inner states an estimate keeps at once (parameters and O(1) buffers aside): exact r, truncated k,
exact_ckpt(m) and ufom(q, checkpoints=m) min(m, r), every other estimator O(1) (exact_me and UFOM's exact branch
recompute instead of storing; the zeroth-order and forward-mode ones carry one path at a time). `memory_class` turns a count into the budget classes of the
frontier's recommendation: O(1), O(sqrt r), O(r).
"""

from __future__ import annotations

import functools
import math

import sympy as sp

from ufom_bench.theory import checkpointing, cost, implicit, zeroth_order
from ufom_bench.theory._sym import j, q, r, tex

k = sp.Symbol("k", nonnegative=True, integer=True)  # truncated: reverse steps kept
m = sp.Symbol("m", positive=True, integer=True)  # exact_ckpt: stored states
t = sp.Function("t")  # Griewank's minimal forward steps t(l, s) (`checkpointing.forward_steps`)
Q, iters, terms = zeroth_order.Q, implicit.iters, implicit.terms

# name -> {parameter name: its symbol}, the parameters the counts depend on
PARAMETERS = {
    "exact": {}, "exact_me": {}, "fom": {}, "reptile": {},
    "ufom": {"q": q, "checkpoints": m}, "adaptive_ufom": {"q_min": q},
    "truncated": {"k": k},
    "pzobo": {"n_dirs": Q}, "forward_gradient": {"n_dirs": Q}, "es": {"n_dirs": Q},
    "implicit_cg": {"iters": iters}, "neumann": {"terms": terms}, "exact_ckpt": {"checkpoints": m},
}
# the registry's defaults of those parameters (ufom_bench.estimators)
DEFAULTS = {"ufom": {"q": 0.1}, "adaptive_ufom": {"q_min": 0.05}, "truncated": {"k": 1}, "pzobo": {"n_dirs": 1},
            "forward_gradient": {"n_dirs": 1}, "es": {"n_dirs": 1}, "implicit_cg": {"iters": 10},
            "neumann": {"terms": 10}, "exact_ckpt": {"checkpoints": 1}}
MEMORY_CLASSES = ("O(1)", "O(sqrt r)", "O(r)")
# The formula of a variant: ufom with checkpoints = m given (not None) counts exact_ckpt(m)'s branch.
CHECKPOINTED = {"ufom": "ufom_ckpt"}


@functools.lru_cache(maxsize=None)
def derivation() -> dict:
    """{name: (expected grad calls, expected HVP calls)} as sympy expressions in r and `PARAMETERS`."""
    c = cost.derivation()
    zo = zeroth_order.derivation().calls
    im = implicit.derivation()
    path = sp.summation(1, (j, 1, r))
    return {
        "exact": (c.grads_branch[0], c.hvps_branch[1]),
        "exact_me": (c.grads_branch[1], c.hvps_branch[1]),
        "fom": (c.grads_branch[0], sp.Integer(0)),
        "ufom": (c.grads, c.hvps),
        "adaptive_ufom": (c.grads, c.hvps),  # given the state, at q = q_k (q_min initially)
        "reptile": (path, sp.Integer(0)),
        "truncated": (path + 1, sp.summation(1, (j, r - k + 1, r))),
        **{name: tuple(sp.sympify(x) for x in zo[name]) for name in ("pzobo", "forward_gradient", "es")},
        "implicit_cg": (im.grads, im.hvps_cg),
        "neumann": (im.grads, im.hvps_neumann),
        "exact_ckpt": (1 + t(r + 1, sp.Min(m, r)), path),  # the outer gradient is the (r + 1)-th reversed step
        # xi = 0: Algorithm 3's r + 1 grads; xi = 1: exact_ckpt(m)'s 1 + t(r + 1, m) grads and r HVPs
        "ufom_ckpt": (r + 1 + q * (t(r + 1, sp.Min(m, r)) - r), q * path),
    }


def _check_name(name: str) -> str:
    if name not in PARAMETERS:
        raise ValueError(f"no cost formula for estimator {name!r}; known: {', '.join(PARAMETERS)}")
    return name


def _formula(name: str, params: dict) -> str:
    """The key of ``derivation()`` for ``name`` with ``params``: a `CHECKPOINTED` variant when checkpoints is given."""
    _check_name(name)
    return CHECKPOINTED[name] if name in CHECKPOINTED and params.get("checkpoints") is not None else name


def calls_expr(name: str, **params) -> tuple:
    """(grads, hvps) of one estimate of ``name`` (expected over its own randomness, given its state) as sympy
    expressions in r and the estimator's parameters (`PARAMETERS`); ``params`` only selects a variant
    (``ufom`` with ``checkpoints`` given counts the checkpointed branch, t(l, s) = `checkpointing.forward_steps`)."""
    return derivation()[_formula(name, params)]


def _subs(name: str, params: dict) -> dict:
    values = {**DEFAULTS.get(name, {}),
              **{p: v for p, v in params.items() if p in PARAMETERS[name] and v is not None}}
    return {PARAMETERS[name][p]: sp.nsimplify(v) for p, v in values.items()}


def calls(name: str, r_value, **params) -> tuple[float, float]:
    """(grads, hvps) of one estimate of ``name`` at r = ``r_value`` with ``params`` (registry defaults for the
    parameters not given; parameters the counts do not depend on, e.g. pzobo's mu, are ignored)."""
    at = {r: sp.Integer(int(r_value)), **_subs(name, params)}
    steps = lambda l_, s_: sp.Integer(checkpointing.forward_steps(int(l_), int(s_)))
    return tuple(float(e.subs(at).replace(t, steps)) for e in calls_expr(name, **params))


def _readable(e, render) -> str:
    """UFOM's counts as base + q * slope (Proposition 1's form); others in their shorter factored form."""
    if e.has(q):
        d = sp.factor(sp.diff(e, q))
        base, slope = e.subs(q, 0), f"q ({render(d)})" if isinstance(d, sp.Add) else f"q {render(d)}"
        return slope if base == 0 else f"{render(base)} + {slope}"
    f = sp.factor(e)
    return render(f if len(str(f)) < len(str(e)) else e)


def calls_text(name: str, latex: bool = False, **params) -> str:
    """The cost formula as text, e.g. ``"r + 1 grads + r HVPs"`` (``latex=True``: LaTeX of each part); ``params``
    select a variant as in `calls_expr`."""
    render = tex if latex else (lambda e: str(e).replace("**", "^"))
    grads, hvps = calls_expr(name, **params)
    out = f"{_readable(grads, render)} grads"
    return out if hvps == 0 else f"{out} + {_readable(hvps, render)} HVPs"


def stored_states(name: str, r_value: int, **params) -> int:
    """Inner states one estimate of ``name`` keeps at once: r for exact, k for truncated(k), min(m, r) for
    exact_ckpt(m) and ufom(q, checkpoints=m), else 1."""
    _check_name(name)
    if name == "exact":
        return int(r_value)
    if name == "truncated":
        return int(params.get("k", DEFAULTS["truncated"]["k"]))
    if name == "exact_ckpt":
        return min(int(params.get("checkpoints", DEFAULTS["exact_ckpt"]["checkpoints"])), int(r_value))
    if name == "ufom" and params.get("checkpoints") is not None:
        return min(int(params["checkpoints"]), int(r_value))
    return 1


def memory_class(states: int, r_value: int) -> str:
    """The budget class of ``states`` stored inner states at r: "O(1)" for at most one, "O(sqrt r)" for at
    most ceil(sqrt r), "O(r)" beyond."""
    if states <= 1:
        return MEMORY_CLASSES[0]
    return MEMORY_CLASSES[1] if states <= math.ceil(math.sqrt(r_value)) else MEMORY_CLASSES[2]
