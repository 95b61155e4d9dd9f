"""All derived-vs-printed checks and the LaTeX of every derived formula, gathered from the modules."""

from __future__ import annotations

from ufom_bench.theory import bias, checkpointing, choice_of_q, cost, implicit, moments, zeroth_order
from ufom_bench.theory._sym import Check

_MODULES = (cost, bias, moments, choice_of_q, zeroth_order, implicit, checkpointing)
# Modules whose checks have no printed form in the UFOM paper: each compares a derivation with another form
# (an estimator's documented count, a known closed form, another module's result), named in its note.
DERIVED_ONLY_MODULES = (zeroth_order, implicit, checkpointing)


def all_checks() -> dict[str, Check]:
    """name -> Check(derived_latex, printed_latex, matches, note), in the paper's order."""
    return {name: chk for mod in _MODULES for name, chk in mod.derivation().checks.items()}


def latex() -> dict[str, str]:
    """name -> LaTeX of each derived formula (for the report); see `CHECKS` for the printed comparisons."""
    return {name: s for mod in _MODULES for name, s in mod.derivation().latex.items()}


def mismatches() -> dict[str, Check]:
    """The checks whose derived form differs from the paper's printed one."""
    return {name: chk for name, chk in all_checks().items() if not chk.matches}


def derived_only() -> frozenset[str]:
    """Names of the checks and formulas of `DERIVED_ONLY_MODULES`: derived only, with no printed form in the
    UFOM paper (`theory.zoo`'s calls, stored states and memory classes add no checks; they reuse these)."""
    names = {name for mod in DERIVED_ONLY_MODULES for d in (mod.derivation(),) for name in (*d.checks, *d.latex)}
    return frozenset(names)
