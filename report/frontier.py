"""Section 1 of the report, "Which estimator to trust": the frontier of every estimator per problem (relative MSE
against calls and seconds, marker area = memory, Pareto front drawn) and the recommendation computed from the
rows (`analysis.frontier_recommendations`: the cheapest estimator meeting each target under each memory budget,
its uncertainty, the runner-up, "no significant difference" where the cost intervals overlap).

    from ufom_bench.report.frontier import add_frontier_section
    add_frontier_section(rep, results["frontier"])

Input: the rows of `ufom_bench.frontier.measure` (the `frontier` experiment, or `frontier.compare` on a user's
problem via `ufom-bench frontier`), with a ``problem`` column and optionally ``point`` (theta0 and points along
a training run; the main table and figures use ``point``; the other points are summarised by what changes).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from ufom_bench import analysis
from ufom_bench.analysis import Z95, format_count
from ufom_bench.errors import UserError
from ufom_bench.report.document import Report

__all__ = ["COSTS", "SECTION_TITLE", "TARGETS", "add_frontier_section", "fig_frontier", "recommendation_table",
           "summary_sentences"]

SECTION_TITLE = "Which estimator to trust"
# Targets on the relative MSE E_T E||G_hat - G_T||^2 / ||dM/dtheta||^2: the noise of one estimate against the
# signal, from ten times the signal (many averaged steps) to a tenth of it (almost the exact gradient).
TARGETS = (10.0, 1.0, 0.1)
COSTS = {"calls": "function calls per estimate (grads + HVPs)", "seconds": "seconds per estimate (compiled)"}
ERROR = "rel_mse"
NEED = ("problem", "label", "estimator", ERROR, f"{ERROR}_se", "calls", "memory_class")
_MARKERS = "osD^<>pPXh*8d"  # "v" marks a zero error


def _check(table: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame) or not set(NEED) <= set(table.columns):
        have = ", ".join(map(str, getattr(table, "columns", [])))
        raise UserError(f"the frontier section needs columns {', '.join(NEED)}; got {have}")
    return table if "point" in table else table.assign(point="theta0")


def _at(table: pd.DataFrame, point: str) -> pd.DataFrame:
    rows = table[table["point"] == point]
    return rows if not rows.empty else table[table["point"] == table["point"].iloc[0]]


def _memory(rows: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Per row, the memory the marker area shows: XLA temp bytes where measured, else stored states."""
    if "temp_bytes" in rows and np.isfinite(rows["temp_bytes"].astype(float)).all():
        return rows["temp_bytes"].to_numpy(float), "XLA temp bytes"
    return rows["stored_states"].to_numpy(float), "stored inner states"


def _area(mem: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Marker area in points^2, log-scaled from 25 (the least memory) to 250 (the most)."""
    if hi <= lo:
        return np.full_like(mem, 80.0)
    return 25 + 225 * (np.log(mem) - np.log(lo)) / (np.log(hi) - np.log(lo))


def _readable_log_ticks(axis, values: np.ndarray) -> None:
    """Within less than a decade a log axis labels its minor ticks on top of each other: label the data's own
    values (at most six) instead."""
    values = np.unique(values[values > 0])
    if values.size and values.max() / values.min() < 10:
        picks = [values[0]]  # the smallest, then each value at least 30% above the last pick
        for v in values[1:]:
            if v >= 1.3 * picks[-1]:
                picks.append(v)
        axis.set_major_locator(mticker.FixedLocator(picks))
        axis.set_major_formatter(mticker.FixedFormatter([f"{v:.3g}" for v in picks]))
        axis.set_minor_formatter(mticker.NullFormatter())


def fig_frontier(table: pd.DataFrame, problem: str, point: str = "theta0", z: float = Z95):
    """The frontier on one problem at one point: relative MSE against calls (left) and seconds (right) per
    estimate, one colour and marker per estimator setting (legend below), marker area = memory, error bars
    +- z SE clipped to positive values on the log axes (a zero error, the exact estimators', is drawn at the
    axis floor as a downward triangle), the Pareto front (`analysis.pareto_front`) as a dashed step line."""
    rows = analysis.applicable(_at(_check(table), point))
    rows = rows[(rows["problem"] == problem) & np.isfinite(rows[ERROR].astype(float))]
    costs = [c for c in COSTS if c in rows and np.isfinite(rows[c].astype(float)).any()]
    if rows.empty or not costs:
        raise UserError(f"no measured frontier rows for problem {problem!r} at point {point!r}")
    err = rows[ERROR].to_numpy(float)
    se = rows[f"{ERROR}_se"].fillna(0).to_numpy(float)
    positive = err[err > 0]
    floor = positive.min() / 10 if positive.size else 1e-3
    y = np.where(err > 0, err, floor)
    lo = np.where(err - z * se > floor, err - z * se, floor)
    hi = np.where(err > 0, err + z * se, floor)
    mem, mem_name = _memory(rows)
    ok = np.isfinite(mem) & (mem > 0)
    mlo, mhi = (mem[ok].min(), mem[ok].max()) if ok.any() else (1.0, 1.0)
    area = np.where(ok, _area(np.where(ok, mem, mlo), mlo, mhi), 25.0)
    labels = list(rows["label"])
    families = list(dict.fromkeys(rows["estimator"]))
    tab20 = plt.get_cmap("tab20").colors
    colours = list(tab20[0::2]) + list(tab20[1::2])  # the ten strong colours first, then their light partners

    fig, axes = plt.subplots(1, len(costs), figsize=(3.3 * len(costs) + 0.2, 3.6), sharey=True, squeeze=False)
    handles = {}
    for ax, cost in zip(axes[0], costs):
        x = rows[cost].to_numpy(float)
        xse = rows[f"{cost}_se"].fillna(0).to_numpy(float) if f"{cost}_se" in rows else np.zeros_like(x)
        for i, lab in enumerate(labels):
            if not np.isfinite(x[i]):
                continue
            colour = colours[i % 20]
            marker = "v" if err[i] <= 0 else _MARKERS[families.index(rows["estimator"].iloc[i]) % len(_MARKERS)]
            ax.errorbar(x[i], y[i], yerr=[[y[i] - lo[i]], [hi[i] - y[i]]],
                        xerr=[[min(z * xse[i], x[i] * 0.9)], [z * xse[i]]], fmt="none", ecolor=colour, lw=0.8,
                        capsize=2, zorder=2)
            ax.scatter(x[i], y[i], s=area[i], c=[colour], marker=marker, edgecolors="k", linewidths=0.4,
                       alpha=0.85, zorder=3)
            handles.setdefault(lab, plt.Line2D([], [], ls="none", marker=marker, markersize=6, markerfacecolor=colour,
                                               markeredgecolor="k", markeredgewidth=0.4,
                                               label=lab + (" (error 0)" if err[i] <= 0 else "")))
        front = analysis.pareto_front(rows.assign(_y=y), cost, ERROR, by=None)
        front = front[front["pareto"]].sort_values(cost)
        if not front.empty:
            ax.step(front[cost], front["_y"], where="post", ls="--", c="k", lw=0.9, zorder=1)
        fx = x[np.isfinite(x) & (x > 0)]
        ax.set(xscale="log", yscale="log", xlabel=COSTS[cost], xlim=(fx.min() / 1.3, fx.max() * 1.3))
        _readable_log_ticks(ax.xaxis, fx)
        ax.grid(True, which="both", lw=0.3)
    axes[0][0].set_ylim(floor / 1.5, max(hi.max(), y.max()) * 1.5)
    axes[0][0].set_ylabel("relative MSE  E||G_hat - G_T||^2 / ||dM/dtheta||^2")
    front_handle = plt.Line2D([], [], ls="--", c="k", lw=0.9, label="Pareto front (point estimates)")
    sizes = [plt.Line2D([], [], ls="none", marker="o", markersize=float(np.sqrt(_area(np.array([m]), mlo, mhi)[0])),
                        markerfacecolor="w", markeredgecolor="k", markeredgewidth=0.6,
                        label=f"{mem_name}: {format_count(m)}") for m in sorted({mlo, mhi})]
    fig.legend(handles=list(handles.values()) + [front_handle] + sizes, loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=6.5, frameon=False)
    fig.suptitle(f"{problem} at {point}: error against cost (bars: 95% intervals; marker area: memory)",
                 fontsize=8.5)
    fig.tight_layout()
    return fig


def _cell(r: pd.Series, cost: str) -> str:
    unit = "calls" if cost == "calls" else "s"
    value = format_count(r["cost"]) if cost == "calls" else f"{r['cost']:.3g}"
    se = f" +- {r['cost_se']:.2g}" if r["cost_se"] > 0 else ""
    return f"{r['estimator']}: {value}{se} {unit}; rel. MSE {analysis.format_pm(r['error'], r['error_se'])}"


def _runner(r: pd.Series, cost: str) -> str:
    if not isinstance(r.get("runner_up"), str):
        return r["verdict"]
    unit = "calls" if cost == "calls" else "s"
    value = format_count(r["runner_up_cost"]) if cost == "calls" else f"{r['runner_up_cost']:.3g}"
    se = f" +- {r['runner_up_cost_se']:.2g}" if r["runner_up_cost_se"] > 0 else ""
    return f"{r['runner_up']}: {value}{se} {unit}. Verdict: {r['verdict']}"


def recommendation_table(rec: pd.DataFrame, problem: str, point: str = "theta0") -> pd.DataFrame:
    """The recommendation of one problem at one point for the report: per target and memory budget, the
    cheapest estimator in each cost kind (cost +- SE, its relative MSE +- SE) and the runner-up with the verdict."""
    rows = rec[(rec["problem"] == problem) & (rec["point"] == point)]
    out = []
    for (target, budget), g in rows.groupby(["target", "memory_budget"], sort=False):
        line = {"target": f"<= {target:g}", "memory": budget}
        for cost, r in g.set_index("cost_kind").iterrows():
            best = _cell(r, cost) if isinstance(r.get("estimator"), str) else "none meets the target"
            line[f"cheapest in {cost}"] = best
            line[f"runner-up in {cost}"] = _runner(r, cost) if isinstance(r.get("estimator"), str) else ""
        out.append(line)
    return pd.DataFrame(out)


def _widths(columns) -> list[float]:
    cheap = sum(c.startswith("cheapest") for c in columns)
    w = {"target": 0.08, "memory": 0.1}
    return [w.get(c, (0.5 if c.startswith("cheapest") else 0.32) / max(cheap, 1)) for c in columns]


def summary_sentences(rec: pd.DataFrame, point: str = "theta0", target: float | None = None,
                      budget: str = "O(1)") -> list[str]:
    """One sentence per problem: under ``budget``, the cheapest estimator in calls at the tightest target some
    estimator meets (or at ``target``), with the runner-up and the verdict."""
    out = []
    calls = rec[(rec["point"] == point) & (rec["cost_kind"] == "calls")]
    for problem, g in calls.groupby("problem", sort=False):
        met = g[g["estimator"].notna() & (g["memory_budget"] == budget)]
        if target is not None:
            met = met[met["target"] == target]
        if met.empty:
            out.append(f"{problem}: no estimator meets any target under a {budget} memory budget.")
            continue
        r = met.sort_values("target").iloc[0]  # the tightest target met
        tail = (f"; runner-up {r['runner_up']} ({r['verdict']})" if isinstance(r.get("runner_up"), str)
                else f" ({r['verdict']})")
        out.append(f"{problem}: for relative MSE <= {r['target']:g} with {budget} memory, {r['estimator']} at "
                   f"{format_count(r['cost'])} calls per estimate{tail}.")
    return out


def _not_applicable(rows: pd.DataFrame) -> str:
    if "not_applicable" not in rows:
        return ""
    na = rows[rows["not_applicable"].fillna("") != ""]
    return "; ".join(f"{r['label']} ({r['not_applicable']})" for _, r in na.iterrows())


def add_frontier_section(rep: Report, table: pd.DataFrame, *, targets: Sequence[float] = TARGETS,
                         point: str = "theta0", title: str = SECTION_TITLE, scale: str | None = None) -> Report:
    """Section "Which estimator to trust": how to read it, per problem the frontier figure and the
    recommendation table at ``point``, what changes at the other points, and the estimators not defined on a
    problem. Every number comes from ``table`` (frontier rows) through `analysis`."""
    table = _check(table)
    rec = analysis.frontier_recommendations(table, targets, costs=tuple(COSTS))
    main = _at(table, point)
    point = str(main["point"].iloc[0])
    rep.section(title, summary="per problem, the cheapest estimator meeting each accuracy target under each memory "
                "budget, from measured bias, variance, calls and seconds")
    rep.paragraph("In short, at " + point + ": " + " ".join(summary_sentences(rec, point)))
    rep.paragraph(
        "How to read this section. For each problem, every estimator (at a few settings) is measured at the same theta against the exact "
        "gradient of the same task: the relative MSE E_T E||G_hat - G_T||^2 / ||dM/dtheta||^2 (bias^2 plus the "
        "estimator's own variance, in units of the signal) with its standard error over Monte Carlo draws, the "
        "counted function calls per estimate (gradients + HVPs; SE where the count is random), the seconds of one "
        "compiled estimate, and the memory: XLA temporary bytes and the stored inner states, classed as O(1), "
        "O(sqrt r) or O(r) in r. The recommendation table below is computed from these rows, never typed: for "
        f"each target ({', '.join(f'{t:g}' for t in targets)}) and memory budget, the cheapest estimator whose "
        "relative MSE meets the target with its 95% upper bound (error + 1.96 SE), and the runner-up. 'no "
        "significant difference': the two cost intervals (+- 1.96 SE) overlap; seconds are single timings "
        "(minimum over rounds) without an SE, so their ranking is marked 'cheaper (cost has no SE)'. Budgets "
        "are nested: an O(1) estimator also fits O(sqrt r) and O(r)."
        + (" At smoke scale these are tiny samples: a check that the pipeline runs." if scale == "smoke" else ""))
    for problem in dict.fromkeys(main["problem"]):
        rows = main[main["problem"] == problem]
        rep.subsection(f"{problem}")
        meta = []
        for col, name in (("r", "r"), ("dim_theta", "dim theta")):
            if col in rows and rows[col].notna().any():
                meta.append(f"{name} = {format_count(float(rows[col].dropna().iloc[0]))}")
        if "n" in rows and rows["n"].notna().any():
            meta.append(f"{format_count(float(rows['n'].dropna().max()))} task draws")
        if analysis.applicable(rows)[ERROR].notna().any():
            rep.figure(fig_frontier(table, problem, point), title=f"Frontier on {problem} at {point}", caption=(
                "Each mark is one estimator setting (legend under the plot). Down and to the left is better; the "
                "dashed step line joins the settings no other setting beats in both cost and error. "
                + (f"({', '.join(meta)}.)" if meta else "")))
        shown = recommendation_table(rec, problem, point)
        rep.table(shown, title=f"Which estimator on {problem} ({point})", col_widths=_widths(shown.columns),
                  caption="Cheapest estimator whose relative MSE meets each target (upper 95% bound) under each "
                          "memory budget, with its cost and relative MSE (+- SE), and the runner-up with the "
                          "verdict on the cost difference.")
        na = _not_applicable(rows)
        if na:
            rep.paragraph(f"Not defined on {problem}: {na}.", style="small")
    others = [p for p in dict.fromkeys(table["point"]) if p != point]
    if others:
        changes = analysis.recommendation_changes(rec, point)
        n_cells = len(rec[rec["point"] != point])
        if changes.empty:
            rep.paragraph(f"At the other points ({', '.join(map(str, others))}) the recommendation is the same as at "
                          f"{point} in every one of the {n_cells} (problem, target, budget, cost) cells.")
        else:
            rep.paragraph(f"At the other points ({', '.join(map(str, others))}) the recommendation differs from "
                          f"{point}'s in {len(changes)} of {n_cells} (problem, target, budget, cost) cells:")
            shown = changes.rename(columns={f"estimator_at_{point}": f"at {point}", "estimator": "at the point",
                                            f"verdict_at_{point}": f"verdict at {point}",
                                            "verdict": "verdict at the point", "cost_kind": "cost",
                                            "memory_budget": "memory"})
            rep.table(shown, title="Where the recommendation changes along training",
                      caption="Cells whose cheapest estimator differs from the one at " + point + " (blank: none "
                              "meets the target).", max_rows=60)
    return rep
