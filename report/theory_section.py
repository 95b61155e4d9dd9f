"""The report's theory section: every formula `theory/` derives with sympy, typeset, against the paper.

What it shows, in order: where the derivation disagrees with the paper's printed form (derived and printed
side by side, with the reason), the table of all derived-vs-printed checks, each derived formula with its
status, and q* of Section 4.4 under the paper's time model (19) and under the rule of the authors'
released code, for a few D^2/V^2 at r = 10.
"""

from __future__ import annotations

from typing import Optional, Sequence
from xml.sax.saxutils import escape

import pandas as pd

from ufom_bench import theory
from ufom_bench.report.document import Report

SECTION_TITLE = "Theory (derived with sympy)"
SECTION_SUMMARY = "every formula derived with sympy, against the paper's printed form where it prints one"
PRINTED = "paper's printed form"
DERIVED_ONLY = "derived only"
Q_TABLE_TITLE = "q* under the paper's time model (19) vs the released code's T*sqrt(S) rule"
DEFAULT_RATIOS = (0.001, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 3.0)


def _check_for(name: str, latex: str, checks: dict, derived_only: frozenset = frozenset()) -> Optional[tuple]:
    """The (check name, Check) that covers a derived formula: same name, else the same derived LaTeX from a
    check of the same kind (a formula compared with the paper is not covered by a derived-only check)."""
    if name in checks:
        return name, checks[name]
    for cname, chk in checks.items():
        if chk.derived == latex and (cname in derived_only) == (name in derived_only):
            return cname, chk
    return None


def _status(chk, via: str, derived_only: bool) -> str:
    """A formula's caption: agrees with / differs from the paper's printed form, or, for a derived-only check,
    with the other form its note names (no note repeated: the checks table holds them)."""
    if derived_only:
        return (f"Derived only (no printed form in the UFOM paper); {'agrees' if chk.matches else 'DIFFERS'} with "
                f"the independent form named in the checks table{via}.")
    return (f"Agrees with the paper's printed form{via}." if chk.matches else
            f"Differs from the paper's printed form{via}: see 'Where the derivation differs from the paper'.")


def _fmt_q(x: float) -> str:
    if x != x:  # NaN
        return "\u2013"
    if x < 1e-12:
        return "\u2192 0"
    return f"{x:.3g}"


def _q_star_values(r: int, ratios: Sequence[float], eps: float) -> list:
    """Numeric rows behind `q_star_table`: ratio, (20), q* of (19), q* of T sqrt(S) with both cost sets."""
    paper, released = "paper_eq19", "released_code_T_sqrtS"
    missing = {paper, released} - set(theory.MODELS)
    if missing:
        raise KeyError(f"ufom_bench.theory.MODELS lacks {sorted(missing)}")
    cd, cr = theory.costs(r)
    cd_code, cr_code = theory.costs(r, recompute=False)
    out = []
    for ratio in ratios:
        D2, V2 = float(ratio), 1.0
        out.append({
            "ratio": float(ratio),
            "eq20": bool(theory.condition_eq20(D2, V2, cd, cr, eps)),
            "paper": float(theory.optimal_q(D2, V2, cd, cr, eps, model=paper)),
            "sqrt_alg4": float(theory.optimal_q(D2, V2, cd, cr, eps, model=released)),
            "sqrt_code": float(theory.optimal_q(D2, V2, cd_code, cr_code, eps, model=released)),
        })
    return out


def q_star_table(r: int = 10, ratios: Sequence[float] = DEFAULT_RATIOS, eps: float = 0.0) -> pd.DataFrame:
    """q* for D^2/V^2 in `ratios` (V^2 = 1) at `r` inner steps, under each model of `theory.MODELS`.

    Columns: the ratio; whether (20) holds; q* of (19) with Algorithm 4's costs (C1 = C2 = 1,
    recompute); q* of the released code's T sqrt(S) with the same costs; and with the released code's
    own constants C_det = r + 1, C_rnd = r (`theory.costs(r, recompute=False)`). Values as text.
    """
    return pd.DataFrame([
        {
            "D²/V²": f"{v['ratio']:g}",
            "(20) holds": "yes" if v["eq20"] else "no",
            "q*, (19), Alg. 4 costs": _fmt_q(v["paper"]),
            "q*, T·√S, Alg. 4 costs": _fmt_q(v["sqrt_alg4"]),
            "q*, T·√S, code's costs": _fmt_q(v["sqrt_code"]),
        }
        for v in _q_star_values(r, ratios, eps)
    ])


def _q_star_findings(values: list) -> str:
    """What the q* table shows, stated from its numbers (so the caption stays true for other inputs)."""
    n = len(values)
    smaller = sum(v["sqrt_alg4"] < v["paper"] for v in values)
    below_where_20_fails = [v["ratio"] for v in values if not v["eq20"] and v["sqrt_alg4"] < 1]
    out = (f"With the same (Algorithm 4) costs the square-root rule gives a smaller q* than (19) in "
           f"{smaller} of {n} rows")
    if below_where_20_fails:
        out += (f", and q* < 1 also at D²/V² = {', '.join(f'{x:g}' for x in below_where_20_fails)}, where "
                f"(20) fails and (19) gives q* = 1")
    larger = sum(v["sqrt_code"] > v["sqrt_alg4"] for v in values)
    return out + (f". With the code's own, smaller C_rnd (stored states, no recomputation) the square-root "
                  f"rule's q* is larger in {larger} of {n} rows.")


def add_theory_section(report: Report, *, r: int = 10, ratios: Sequence[float] = DEFAULT_RATIOS) -> Report:
    """Add the section "Theory (derived with sympy)" to `report` (see the module docstring).

    Args:
      report: the document.
      r: inner steps for the q* table.
      ratios: the D^2/V^2 values of the q* table.
    Returns:
      the report.
    """
    formulas = theory.latex()
    checks = dict(theory.CHECKS)
    only = theory.derived_only()
    mismatched = {k: c for k, c in checks.items() if not c.matches}
    paper = {k: c for k, c in checks.items() if k not in only}
    other = {k: c for k, c in checks.items() if k in only}
    fallbacks_before = len(report.formula_fallbacks)

    def tally(group: dict) -> str:
        bad = sum(not c.matches for c in group.values())
        return f"{len(group) - bad} agree and {bad} {'differs' if bad == 1 else 'differ'}"

    report.section(SECTION_TITLE, summary=SECTION_SUMMARY)
    report.paragraph(
        f"The theory/ package derives each formula below with sympy from its definition (loops of "
        f"Algorithm 4 counted with summation, expectations over the coin xi taken symbolically, the time "
        f"model differentiated) and compares it, where the paper prints a closed form, with that printed "
        f"form by symbolic equality. {len(formulas)} derived formulas; {len(paper)} comparisons with the "
        f"paper's printed forms, of which {tally(paper)}; and {len(other)} checks of derivations the UFOM paper "
        f"does not print (the zeroth-order, implicit and checkpointing estimators), each against an independent "
        f"form named in its note (an estimator's documented count, a known closed form, or another derivation), "
        f"of which {tally(other)}. Formulas are typeset from sympy's LaTeX with matplotlib's mathtext."
    )

    if mismatched:
        report.subsection("Where the derivation differs from the paper")
        for name, chk in mismatched.items():
            report.paragraph(f"{name}: derived (top) and as printed in the paper (bottom).", style="small")
            report.formula(chk.derived, "derived", align="left")
            report.formula(chk.printed, "printed", align="left", caption=chk.note)

    report.subsection("Checks against the paper's printed forms and derived-only checks")
    report.table(
        pd.DataFrame([
            {"check": name, "compared with": DERIVED_ONLY if name in only else PRINTED,
             "agrees": "yes" if chk.matches else "NO",
             "note": chk.note if chk.matches else "see 'Where the derivation differs from the paper'"}
            for name, chk in checks.items()
        ]),
        caption="One row per comparison of a derived formula with another form (symbolic equality of the two "
                "expressions, or of the facts named in the note): the paper's printed form, or, for derivations "
                "the UFOM paper does not print ('derived only'), the independent form named in the note.",
        title="Derived vs printed",
        col_widths=(0.27, 0.17, 0.08, 0.48),
        mono_columns=("check",),
        max_rows=None,
    )

    report.subsection("Derived formulas")
    for name, latex in formulas.items():
        hit = _check_for(name, latex, checks, only)
        if hit is None:
            status = ("Derived only (no printed form in the UFOM paper); not compared with another form."
                      if name in only else "Not compared with a printed form (no check in theory.CHECKS).")
        else:
            cname, chk = hit
            status = _status(chk, "" if cname == name else f" (check {cname})", cname in only)
        report.formula(latex, name, align="left", caption=status)
    covered = {hit[0] for n, s in formulas.items() if (hit := _check_for(n, s, checks, only))}
    for cname, chk in checks.items():  # checks whose derived statement is not among the formulas
        if cname not in covered:
            report.formula(chk.derived, cname, align="left", caption=_status(chk, "", cname in only))

    report.subsection("Choice of q (Section 4.4)")
    cd, cr = theory.costs(r)
    cd_code, cr_code = theory.costs(r, recompute=False)
    m_released = escape(theory.MODELS[1])
    report.paragraph(
        f"The paper's time model (19), T(q) = S(q)<super>2/(1\u22122\u03b5)</super> "
        f"(C<sub>det</sub> + C<sub>rnd</sub> q) with S(q) = (1/q \u2212 1) D\u00b2 + V\u00b2, is minimised "
        f"at q* &lt; 1 exactly when condition (20) holds. The authors' released toy code minimised "
        f"T(q) \u221aS(q) instead (model <font name=\"Courier\">{m_released}</font>), with its own constants "
        f"C<sub>det</sub> = r + 1, C<sub>rnd</sub> = r. At r = {r}, \u03b5 = 0 and C<sub>1</sub> = "
        f"C<sub>2</sub> = 1, Algorithm 4 (recomputing states, O(1) memory) gives C<sub>det</sub> = {cd:g}, "
        f"C<sub>rnd</sub> = {cr:g}; the released code's constants are C<sub>det</sub> = {cd_code:g}, "
        f"C<sub>rnd</sub> = {cr_code:g}.",
        markup=True,
    )
    report.table(
        q_star_table(r, ratios),
        caption=f"r = {r}, V² = 1, eps = 0. Columns 3-5: theory.optimal_q with model "
                f"'{theory.MODELS[0]}' (paper) or '{theory.MODELS[1]}' (released code), and the costs named "
                f"in the header. " + _q_star_findings(_q_star_values(r, ratios, 0.0)),
        title=Q_TABLE_TITLE,
        max_rows=None,
    )

    n_fb = len(report.formula_fallbacks) - fallbacks_before
    if n_fb:
        names = ", ".join(fb.label for fb in report.formula_fallbacks[fallbacks_before:])
        report.paragraph(f"{n_fb} formula(s) could not be typeset by mathtext and are shown as LaTeX "
                         f"source: {names}.", style="small")
    return report
