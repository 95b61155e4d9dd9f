"""Figure 1 (a)-(f) and the r extension, drawn with seaborn from the experiments' tidy tables."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

SIZE = (6.4, 3.4)
LABELS = {"fom": "FOM", "ufom": "UFOM (q = 0.1)"}


def style() -> None:
    """The report's plotting setup, applied by the builder (not at import): the Agg backend, which needs no
    display, and seaborn's paper theme."""
    matplotlib.use("Agg")
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)


def fig_a(a: pd.DataFrame):
    """(a) the two task losses."""
    fig, ax = plt.subplots(figsize=SIZE)
    long = a.melt(id_vars="x", value_vars=["f1", "f2"], var_name="task", value_name="loss")
    long["task"] = long["task"].map({"f1": "task 1: f_1", "f2": "task 2: f_2"})
    sns.lineplot(long, x="x", y="loss", hue="task", ax=ax)
    ax.set(xlabel="phi", ylabel="task loss f_i(phi)", title="(a) task losses")
    fig.tight_layout()
    return fig


def fig_b(a: pd.DataFrame, bc: pd.DataFrame, points):
    """(b) M_r(theta) over the whole range (left) and near its minimum (right) with where the FOM and UFOM runs
    end and the two special points."""
    fig, (full, ax) = plt.subplots(1, 2, figsize=SIZE, gridspec_kw={"width_ratios": [1, 1.6]})
    full.plot(a["x"], a["M_r"], c="k")
    full.set(xlabel="theta", ylabel="M_r(theta)", title="(b) ABLO objective, r = 10")
    sns.lineplot(a, x="x", y="M_r", ax=ax, color="k", label="M_r(theta)")
    final = bc[bc["record"] == "final"]
    m_of = lambda th: np.interp(th, a["x"], a["M_r"])
    for est, marker in (("fom", "o"), ("ufom", "x")):
        th = final.loc[final["estimator"] == est, "theta"].to_numpy()
        ax.scatter(th, m_of(th), marker=marker, s=30, label=f"{LABELS[est]} end points", zorder=3)
    ax.axvline(points.fom_fixed_point, ls="--", c="C0", lw=0.8, label="FOM fixed point")
    ax.axvline(points.stationary_point, ls=":", c="C1", lw=0.8, label="stationary point")
    lo, hi = points.stationary_point - 8, points.fom_fixed_point + 8
    ax.set(xlim=(lo, hi), ylim=(m_of(points.stationary_point) - 0.5, m_of(lo) + 0.5),
           xlabel="theta", ylabel="M_r(theta)", title="(b) near the minimum: where outer SGD ends")
    full.axvspan(lo, hi, color="grey", alpha=0.15, lw=0, label="range on the right")
    full.legend(fontsize=6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_c(bc: pd.DataFrame, D: float):
    """(c) |dM/dtheta_k| over outer steps, median and 10-90% band over runs."""
    fig, ax = plt.subplots(figsize=SIZE)
    curve = bc[bc["record"] == "curve"]
    for i, (est, g) in enumerate(curve.groupby("estimator")):
        ax.plot(g["step"], g["grad_q50"], c=f"C{i}", label=f"{LABELS.get(est, est)} median")
        ax.fill_between(g["step"], g["grad_q10"], g["grad_q90"], color=f"C{i}", alpha=0.2,
                        label=f"{LABELS.get(est, est)} 10-90% of runs")
    ax.axhline(np.sqrt(2 * D), ls="--", c="k", lw=0.8, label="sqrt(2D) (FOM's fixed point)")
    ax.set(xscale="log", yscale="log", xlabel="outer SGD step k", ylabel="|dM_r/dtheta(theta_k)|",
           title="(c) convergence: band = 10-90% of runs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_d(d: pd.DataFrame):
    """(d) sup-over-grid D^2 and V^2 against alpha (with D_bound^2)."""
    fig, ax = plt.subplots(figsize=SIZE)
    long = d.melt(id_vars="alpha", value_vars=["D2", "V2", "D_bound2"], var_name="quantity", value_name="sup")
    long["quantity"] = long["quantity"].map({"D2": "D^2 (eq. 14)", "V2": "V^2 (eq. 16)", "D_bound2": "D_bound^2 (eq. 15)"})
    sns.lineplot(long, x="alpha", y="sup", hue="quantity", style="quantity", markers=True, ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="inner step size alpha", ylabel="sup D^2, sup V^2, D_bound^2",
           title="(d) FOM bias D^2 and exact second moment V^2 against alpha")
    fig.tight_layout()
    return fig


def fig_e(e: pd.DataFrame):
    """(e) q* of (21) against the empirical best q of the grid search."""
    best = e.loc[e.groupby("alpha")["calls_to_target"].idxmin(), ["alpha", "q"]].rename(columns={"q": "experiment"})
    theory_q = e.groupby("alpha")["q_theory"].first().rename("theory (21)").reset_index()
    long = best.merge(theory_q, on="alpha").melt(id_vars="alpha", var_name="q*", value_name="q")
    fig, ax = plt.subplots(figsize=SIZE)
    sns.lineplot(long, x="alpha", y="q", hue="q*", style="q*", markers=True, ax=ax)
    ax.axhline(e["q"].min(), c="grey", lw=0.6, ls=":", label="smallest q on the grid")
    ax.set(xscale="log", xlabel="inner step size alpha", ylabel="optimal q", title="(e) optimal q: theory vs experiment")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_f(f: pd.DataFrame):
    """(f) |dM/dtheta| against function calls for q = 0, q*, 1 at alpha = 0.01."""
    fig, ax = plt.subplots(figsize=SIZE)
    for i, (q, g) in enumerate(f.groupby("q")):
        label = "q = 0 (FOM)" if q == 0 else ("q = 1 (exact_me)" if q == 1 else f"q = q* = {q:.3f}")
        ax.plot(g["calls"], g["grad_q50"], c=f"C{i}", label=f"{label}, median")
        ax.fill_between(g["calls"], g["grad_q10"], g["grad_q90"], color=f"C{i}", alpha=0.15,
                        label=f"{label}, 10-90% of runs")
    ax.set(yscale="log", xlabel="function calls (grads + HVPs)", ylabel="|dM_r/dtheta|",
           title="(f) convergence per function call, alpha = 0.01 (band: 10-90%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_r(ext: pd.DataFrame):
    """Extension: D^2, V^2 and q* against r."""
    fig, axes = plt.subplots(1, 2, figsize=SIZE)
    long = ext.melt(id_vars="r", value_vars=["D2", "V2"], var_name="quantity", value_name="sup")
    long["quantity"] = long["quantity"].map({"D2": "D^2 (eq. 14)", "V2": "V^2 (eq. 16)"})
    sns.lineplot(long, x="r", y="sup", hue="quantity", markers=True, style="quantity", ax=axes[0])
    axes[0].set(xscale="log", yscale="log", xlabel="inner steps r", ylabel="D^2, V^2 (sup over theta)",
                title="D^2, V^2 against r")
    sns.lineplot(ext, x="r", y="q_theory", marker="o", ax=axes[1])
    axes[1].set(xscale="log", xlabel="inner steps r", ylabel="q* (21)", title="q* against r (alpha = 0.01)")
    rs = sorted(ext["r"].unique())
    for ax in axes:  # the r values as plain ticks (log axis)
        ax.set_xticks(rs, [f"{r:g}" for r in rs], minor=False)
        ax.set_xticks([], minor=True)
    fig.tight_layout()
    return fig
