"""The equal-budget training section (issue 17, item 2): per problem, every applicable estimator's figure of
merit against function calls and against measured seconds, and a table of final values with CIs.

    from ufom_bench.report.equal_budget import add_equal_budget_section
    add_equal_budget_section(rep, results["equal_budget"])

Input: the tidy table of `simulations.equal_budget` (rows per problem, estimator setting, seed and evaluation
point). Statistics come from `ufom_bench.analysis` (`budget_curves`, `budget_final`); nothing here imports
JAX or the experiment.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ufom_bench.analysis import budget_curves, budget_final, format_count
from ufom_bench.report.document import Report

__all__ = ["add_equal_budget_section", "final_table", "figure_of", "SECTION_TITLE", "LEVEL"]

SECTION_TITLE = "Equal-budget training: every estimator at the same function calls"
LEVEL = 0.95
PROBLEM_TITLES = {"counterexample": "the counterexample (Theorem 2)", "quadratic": "the quadratic problem",
                  "mlp": "MLP regression (MAML-style)", "hypercleaning": "MNIST data hypercleaning",
                  "fewshot": "few-shot classification"}
SIZE = (7.0, 3.2)
COL_WIDTHS = (0.24, 0.17, 0.08, 0.08, 0.08, 0.16, 0.08, 0.11)  # fractions of the text width


def _check(table: pd.DataFrame) -> pd.DataFrame:
    need = {"problem", "label", "seed", "budget", "calls", "seconds", "merit", "diverged", "not_applicable"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        have = sorted(table.columns) if isinstance(table, pd.DataFrame) else type(table).__name__
        raise ValueError(f"not an equal_budget results table: need columns {sorted(need)}, got {have}")
    return table


def _order(labels) -> list[str]:
    return sorted(labels, key=str)


def figure_of(curves: pd.DataFrame, problem: str, merit_name: str, log: bool):
    """Two panels for one problem: median figure of merit and 10-90% band over seeds against calls (left) and
    against measured seconds (right); log axes (x always, y where the merit spans decades); every estimator
    in the legend."""
    c = curves[(curves["problem"] == problem) & (curves["calls"] > 0)]
    labels = _order(c["label"].unique())
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=SIZE, sharey=True)
    for i, lab in enumerate(labels):
        g = c[c["label"] == lab].sort_values("calls")
        style = dict(color=cmap(i % 10), ls=("-", "--", ":", "-.")[(i // 10) % 4], lw=1.2, marker=".", ms=3)
        for ax, x in zip(axes, ("calls", "seconds")):
            ok = g[x] > 0
            ax.plot(g.loc[ok, x], g.loc[ok, "median"], label=lab if x == "calls" else None, **style)
            ax.fill_between(g.loc[ok, x], g.loc[ok, "q10"], g.loc[ok, "q90"], color=style["color"], alpha=0.12,
                            lw=0)
    for ax, x in zip(axes, ("function calls (grads + HVPs)", "measured seconds of the compiled run")):
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(x)
    axes[0].set_ylabel(merit_name)
    axes[0].set_title(f"{merit_name} against calls", fontsize=9)
    axes[1].set_title(f"{merit_name} against seconds", fontsize=9)
    fig.legend(loc="lower center", ncol=4, fontsize=6.5, frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.035 *
                                                                                      ((len(labels) + 3) // 4)))
    fig.tight_layout()
    return fig


def _fmt(x) -> str:
    return "–" if not np.isfinite(x) else f"{x:.3g}"


def final_table(final: pd.DataFrame, problem: str, log: bool) -> pd.DataFrame:
    """The final-value table of one problem, in words: mean and 95% CI over seeds, calls, seconds,
    refused steps, the paired comparison against the best and its verdict."""
    f = final[final["problem"] == problem].copy()
    higher = bool(f["higher_is_better"].iloc[0]) if len(f) else False
    f = f.sort_values("score", ascending=not higher, kind="stable", na_position="last")
    if log:
        vs = [("–" if not np.isfinite(d) else f"x {10**d:.3g} [{10**(d - h):.3g}, {10**(d + h):.3g}]")
              for d, h in zip(f["diff"], f["diff_ci"])]
    else:
        vs = [("–" if not np.isfinite(d) else f"{d:+.3g} +- {h:.2g}") for d, h in zip(f["diff"], f["diff_ci"])]
    return pd.DataFrame({
        "estimator": f["label"],
        ("geometric mean [95% CI]" if log else "mean [95% CI]"):
            [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in zip(f["mean"], f["lo"], f["hi"])],
        "calls spent": [format_count(x) for x in f["calls"]],
        "seconds": [f"{x:.2g}" for x in f["seconds"]],
        "refused": [format_count(x) for x in f["diverged"]],
        ("ratio to best [95% CI]" if log else "difference to best"): vs,
        "Holm p": [("–" if not np.isfinite(p) else f"{p:.2g}") for p in f["p_holm"]],
        "verdict": f["verdict"],
    })


def _notes(rows: pd.DataFrame, curves: pd.DataFrame, final: pd.DataFrame, problem: str) -> str:
    """Honest notes computed from the rows: refused steps, non-finite runs, estimators that did not improve on
    theta_0, and the settings not defined on the problem."""
    r = rows[rows["problem"] == problem]
    parts = []
    na = r[r["not_applicable"].fillna("") != ""]
    if not na.empty:
        parts.append("Not defined here: " + "; ".join(f"{lab} ({why})" for lab, why in
                                                     zip(na["label"], na["not_applicable"])) + ".")
    f = final[final["problem"] == problem]
    bad = f[f["diverged"] > 0]
    if not bad.empty:
        parts.append("Refused outer steps (a divergent inner loop or a non-finite update, never applied): "
                     + ", ".join(f"{lab} {int(d)}" for lab, d in zip(bad["label"], bad["diverged"])) + ".")
    nf = f[f["nonfinite"] > 0]
    if not nf.empty:
        parts.append("Runs ending non-finite (left out of the mean): "
                     + ", ".join(f"{lab} {int(n)}" for lab, n in zip(nf["label"], nf["nonfinite"])) + ".")
    c = curves[curves["problem"] == problem]
    higher = bool(r["higher_is_better"].dropna().iloc[0]) if r["higher_is_better"].notna().any() else False
    stalled = []
    for lab, g in c.groupby("label"):
        start, end = g.loc[g["budget"] == 0, "median"], g.loc[g["budget"] == g["budget"].max(), "median"]
        if len(start) and len(end) and not ((end.iloc[0] > start.iloc[0]) if higher else (end.iloc[0] < start.iloc[0])):
            stalled.append(lab)
    if stalled:
        parts.append("No improvement on theta_0 at the full budget (median over seeds): " + ", ".join(stalled) + ".")
    else:
        parts.append("Every estimator improved on theta_0 (median over seeds).")
    return " ".join(parts)


def add_equal_budget_section(rep: Report, table: pd.DataFrame) -> Report:
    """Append the section: a paragraph on the protocol, then per problem a figure (merit against calls and
    seconds) and a table of final values with CIs and paired comparisons against the best."""
    table = _check(table)
    curves = budget_curves(table, LEVEL)
    final = budget_final(table, LEVEL)
    rows = table
    measured = rows[rows["not_applicable"].fillna("") == ""]
    rep.section(SECTION_TITLE, summary="every estimator trained at the same budget of function calls: figure of merit "
                "against calls and seconds, final values with paired tests")
    seeds = int(measured["seed"].nunique()) if not measured.empty else 0
    rep.paragraph(
        "Each estimator trains each problem through the same outer loop, with the same optimizer and step-size "
        "schedule (a function of the calls spent, so every estimator gets the same step at the same point of the "
        "x-axis), under the same budget of function calls (grads + HVPs); no estimator spends more than the "
        "budget at any point: the calls shown are counted, at most the point's budget. Seconds are measured: "
        "the wall time of each run's compiled program (compilation excluded), attributed to its evaluation points "
        f"in proportion to the calls spent. Curves: median and 10-90% band over {seeds} seeds; a seed fixes "
        "theta_0, the task draws and the estimator's randomness, the same for every estimator, so comparisons "
        "are paired. Tables: mean over seeds with its 95% Student-t interval (geometric for quantities spanning "
        "decades), and the one-sided paired t test that the best estimator is better, Holm-adjusted over the "
        "problem's estimators ('worse' at 5%; the best is picked on the same seeds).")
    for problem in [p for p in PROBLEM_TITLES if p in set(rows["problem"])] + sorted(
            set(rows["problem"]) - set(PROBLEM_TITLES)):
        r = measured[measured["problem"] == problem]
        rep.subsection(f"Equal budget on {PROBLEM_TITLES.get(problem, problem)}")
        if r.empty:
            rep.paragraph(_notes(rows, curves, final, problem))
            continue
        merit, log = r["merit_name"].iloc[0], bool(r["log_merit"].iloc[0])
        budget, c_max = int(r["total_budget"].iloc[0]), int(r["c_max"].iloc[0])
        step = r["outer_step"].iloc[0] if "outer_step" in r else "see the experiment"
        rep.figure(figure_of(curves, problem, merit, log), title=f"{merit} at equal function calls: {problem}",
                   caption=(f"Budget {budget:,} calls (r = {int(r['r'].iloc[0])}); {step}. Each point's theta is "
                            f"taken after at most its budget of calls (its threshold is the budget minus the largest "
                            f"estimate, {c_max} calls). Median and 10-90% band over seeds."))
        rep.table(final_table(final, problem, log), title=f"Final {merit} at {budget:,} calls: {problem}",
                  caption=_notes(rows, curves, final, problem), col_widths=COL_WIDTHS, index=False)
    return rep
