"""Theory of UFOM (Likhosherstov et al., ICML 2021) derived with sympy, with numpy/jax numeric forms.

Each formula is derived from its definition and compared with the paper's printed form:
`CHECKS[name] = Check(derived_latex, printed_latex, matches, note)`; `latex()` gives every derived formula.
Numeric functions take numpy or jax inputs (jax ones stay traceable under `jax.jit`).

Modules: cost (Proposition 1, C_det, C_rnd), bias (D_bound, eq. 15), moments (UFOM's moments over xi,
Lemma 1), choice_of_q (time model (19), condition (20), quadratic (21), q*, the released code's variant),
zeroth_order (costs and tr Cov of pzobo, forward_gradient, es beside UFOM's), implicit (grad and HVP calls of
implicit_cg and neumann), checkpointing (binomial checkpointing of the exact branch: t(l, s), C_rnd(r, m),
q*(m), UFOM(q*(m), m) against exact and exact_me at fixed memory).
"""

from ufom_bench.theory._sym import Check
from ufom_bench.theory import checkpointing
from ufom_bench.theory.bias import d_bound, d_bound_const
from ufom_bench.theory.checkpointing import (at_fixed_memory, checkpointed_calls, forward_steps, repetition_number)
from ufom_bench.theory.checkpointing import costs as checkpointed_costs
from ufom_bench.theory.checkpointing import optimal_q as optimal_q_checkpointed
from ufom_bench.theory.checks import all_checks, derived_only, latex, mismatches
from ufom_bench.theory.cost import branch_calls, branch_total, costs, expected_calls
from ufom_bench.theory.implicit import implicit_cg_calls, neumann_calls
from ufom_bench.theory.moments import fom_bias, lemma1_bound, ufom_second_moment, ufom_xi_variance
from ufom_bench.theory.zeroth_order import (direction_trace_cov, es_trace_cov, forward_gradient_trace_cov, pzobo_trace_cov,
                                 zeroth_order_calls)
from ufom_bench.theory.choice_of_q import (
    DEFAULT_MODEL,
    MODELS,
    condition_eq20,
    dT_dq_at_1_positive,
    optimal_q,
    optimal_q_jax,
    optimal_q_time_sqrt_variance,
    time_model,
)



def __getattr__(name: str):
    """``CHECKS``, derived on first use (sympy takes about half a second) and kept (PEP 562)."""
    if name == "CHECKS":
        globals()["CHECKS"] = checks = all_checks()
        return checks
    raise AttributeError(f"module 'theory' has no attribute {name!r}")


__all__ = [
    "CHECKS",
    "Check",
    "DEFAULT_MODEL",
    "MODELS",
    "all_checks",
    "at_fixed_memory",
    "checkpointed_calls",
    "checkpointed_costs",
    "checkpointing",
    "branch_calls",
    "branch_total",
    "condition_eq20",
    "costs",
    "d_bound",
    "derived_only",
    "d_bound_const",
    "dT_dq_at_1_positive",
    "expected_calls",
    "fom_bias",
    "forward_steps",
    "implicit_cg_calls",
    "latex",
    "lemma1_bound",
    "mismatches",
    "repetition_number",
    "neumann_calls",
    "optimal_q",
    "optimal_q_checkpointed",
    "optimal_q_jax",
    "optimal_q_time_sqrt_variance",
    "time_model",
    "ufom_second_moment",
    "ufom_xi_variance",
    "direction_trace_cov",
    "es_trace_cov",
    "forward_gradient_trace_cov",
    "pzobo_trace_cov",
    "zeroth_order_calls",
]
