"""The report's checkpointing section (issue 16, beyond the paper): UFOM with a checkpointed exact branch.

    from ufom_bench.report.checkpointing import add_checkpointing_section, checkpointing_claims
    add_checkpointing_section(rep, results["checkpointing"], scale)

Reads the tidy table of the ``checkpointing`` experiment (simulations/checkpointing.py): cost rows (``kind``
"cost": counted calls, seconds and XLA temp bytes of exact_ckpt(m) for each m, with fom / exact / exact_me, and
q*(m)) and training rows (``kind`` "train": FOM, UFOM(q*(m), m) and the exact gradient with m stored states at
an equal budget of calls). Statistics come from `ufom_bench.analysis` (checkpointing_costs, checkpointing_training,
checkpointing_claims); this module draws and writes.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter
import pandas as pd

from ufom_bench.analysis import checkpointing_claims, checkpointing_costs, checkpointing_training
from ufom_bench.report.document import Report

__all__ = ["add_checkpointing_section", "checkpointing_claims", "counts_table", "training_table", "fig_costs",
           "fig_bytes", "fig_training", "SECTION_TITLE"]

SECTION_TITLE = "Checkpointed exact branch (beyond the paper)"
SIZE = (6.4, 3.2)
STATE_BYTES_MIN = 1024  # the growth panel shows problems whose inner state has at least this many bytes
PLAIN = FuncFormatter(lambda x, _: f"{x:g}")
ESTIMATOR_NAMES = {"fom": "FOM", "ufom": "UFOM(q*(m), m)", "exact": "exact, m states"}


def _cost(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["kind"] == "cost"] if "kind" in frame else frame.iloc[:0]


def _train(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["kind"] == "train"] if "kind" in frame else frame.iloc[:0]


def _problem_label(problem: str, r: int) -> str:
    return f"{problem}, r = {int(r)}"


# ------------------------------------------------------------------------------------------------ tables


def counts_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, r, m): t(r + 1, m) counted and by the formula, HVPs, temp bytes, seconds, q*(m), UFOM(q*(m),
    m)'s expected calls and seconds, and the modelled time ratio against exact_ckpt(m)."""
    ck = checkpointing_costs(frame)
    if ck.empty:
        return ck
    out = pd.DataFrame({
        "problem": [_problem_label(p, r) for p, r in zip(ck["problem"], ck["r"])],
        "m": ck["m"].astype(int), "rules": ck["m_rules"],
        "t counted": ck["t_counted"].astype(int), "t formula": ck["t_formula"].astype(int),
        "HVPs": ck["hvp_calls"].astype(int), "temp bytes": ck["temp_bytes"].astype(int),
        "ms / estimate": 1e3 * ck["seconds"], "q*(m)": ck["q_star"],
        "UFOM calls": ck["ufom_calls"], "UFOM ms": 1e3 * ck["ufom_seconds"],
        "T ratio (calls)": ck["ratio_same_memory"], "T ratio (s)": ck["ratio_seconds"],
    })
    return out


def baselines_table(frame: pd.DataFrame) -> pd.DataFrame:
    """fom, exact and exact_me per problem: counted calls (and the formula's), temp bytes, seconds."""
    c = _cost(frame)
    b = c[c["estimator"].isin(["fom", "exact", "exact_me"])]
    return pd.DataFrame({
        "problem": [_problem_label(p, r) for p, r in zip(b["problem"], b["r"])], "estimator": b["estimator"],
        "stored states": b["stored_states"].astype(int), "grads": b["grad_calls"].astype(int),
        "HVPs": b["hvp_calls"].astype(int),
        "formula": [f"{int(g)} + {int(h)}" for g, h in zip(b["formula_grad_calls"], b["formula_hvp_calls"])],
        "temp bytes": b["temp_bytes"].astype(int), "ms / estimate": 1e3 * b["seconds"]}).reset_index(drop=True)


def training_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per memory budget m and estimator: steps, final mean |dM/dtheta|^2 +- SE, paired z against exact(m)."""
    tr = checkpointing_training(frame)
    if tr.empty:
        return tr
    fmt = lambda v, se: f"{v:.3g} \u00b1 {se:.2g}" if np.isfinite(se) else f"{v:.3g}"
    return pd.DataFrame({
        "m": tr["m"], "estimator": tr["label"], "q": tr["q"], "mean steps": tr["steps_mean"],
        "final E|dM/dtheta|^2": [fmt(v, se) for v, se in zip(tr["final_g2"], tr["final_g2_se"])],
        "z vs exact(m)": tr.get("z_vs_exact", pd.Series(np.nan, index=tr.index)),
        "calls to exact's final": tr.get("calls_to_exact_final", pd.Series(np.nan, index=tr.index)),
        "refused steps": tr["diverged"]})


# ------------------------------------------------------------------------------------------------ figures


def fig_costs(frame: pd.DataFrame):
    """Calls (left) and seconds (right) of one estimate against m, relative to FOM's, per problem: exact_ckpt(m)
    (counted, measured; solid) and UFOM(q*(m), m) (expected; dashed)."""
    ck = checkpointing_costs(frame)
    c = _cost(frame)
    fom = c[c["estimator"] == "fom"].set_index(["problem", "r"])
    fig, axes = plt.subplots(1, 2, figsize=SIZE)
    for i, ((p, r), g) in enumerate(ck.groupby(["problem", "r"])):
        f = fom.loc[(p, r)]
        lab = _problem_label(p, r)
        for ax, col, ucol, base in ((axes[0], "calls", "ufom_calls", f["calls"]),
                                    (axes[1], "seconds", "ufom_seconds", f["seconds"])):
            ax.plot(g["m"], g[col] / base, c=f"C{i}", marker="o", ms=3, label=f"{lab}: exact_ckpt(m)")
            ax.plot(g["m"], g[ucol] / base, c=f"C{i}", marker="x", ms=4, ls="--", label=f"{lab}: UFOM(q*(m), m)")
    axes[0].set(xscale="log", yscale="log", xlabel="stored inner states m", ylabel="calls per estimate / FOM's",
                title="function calls (grads + HVPs)")
    axes[1].set(xscale="log", yscale="log", xlabel="stored inner states m", ylabel="seconds per estimate / FOM's",
                title="seconds (compiled, min over rounds)")
    for ax in axes:
        ax.axhline(1.0, c="grey", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(PLAIN)
        ax.tick_params(which="both", labelsize=6)
    axes[0].legend(fontsize=5.5)
    fig.tight_layout()
    return fig


def fig_bytes(frame: pd.DataFrame):
    """XLA temp bytes of exact_ckpt(m) against m (left, with exact and exact_me as markers), and the growth over
    m = 1 in units of one inner state (right, with the line m - 1)."""
    ck = checkpointing_costs(frame)
    c = _cost(frame)
    fig, axes = plt.subplots(1, 2, figsize=SIZE)
    for i, ((p, r), g) in enumerate(ck.groupby(["problem", "r"])):
        lab = _problem_label(p, r)
        axes[0].plot(g["m"], g["temp_bytes"], c=f"C{i}", marker="o", ms=3, label=lab)
        base = c[(c["problem"] == p) & (c["r"] == r)].set_index("estimator")
        for name, marker, m in (("exact", "s", r), ("exact_me", "^", 1)):
            if name in base.index:
                axes[0].scatter([m], [base.loc[name, "temp_bytes"]], marker=marker, facecolors="none",
                                edgecolors=f"C{i}", s=30, zorder=3)
        state = float(g["state_bytes"].iloc[0])
        if state < STATE_BYTES_MIN:  # fixed buffers dominate a tiny state: growth in states means nothing
            continue
        axes[1].plot(g["m"], (g["temp_bytes"] - g["temp_bytes"].iloc[0]) / state, c=f"C{i}", marker="o", ms=3,
                     label=f"{lab} ({int(state):,} B a state)")
    ms = np.unique(ck.loc[ck["state_bytes"] >= STATE_BYTES_MIN, "m"].to_numpy(float))
    if ms.size:
        axes[1].plot(ms, ms - 1, c="k", lw=0.8, ls="--", label="m - 1")
    axes[0].scatter([], [], marker="s", facecolors="none", edgecolors="grey", label="exact (m = r)")
    axes[0].scatter([], [], marker="^", facecolors="none", edgecolors="grey", label="exact_me (m = 1)")
    axes[0].set(xscale="log", yscale="log", xlabel="stored inner states m", ylabel="XLA temp bytes",
                title="temporary memory of one estimate")
    axes[1].set(xscale="log", xlabel="stored inner states m", ylabel="(bytes - bytes at m = 1) / one state",
                title="growth in inner states")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(PLAIN)
        ax.tick_params(which="both", labelsize=6)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=5.5)
    if not ms.size:
        axes[1].text(0.5, 0.5, f"no problem with a state of {STATE_BYTES_MIN:,} B or more", ha="center",
                     va="center", transform=axes[1].transAxes, fontsize=7)
    fig.tight_layout()
    return fig


def fig_training(frame: pd.DataFrame):
    """|dM/dtheta| against function calls per memory budget m: FOM, UFOM(q*(m), m) and exact with m states,
    median and 10-90% band over runs (Figure 1f's panel, one per m)."""
    tr = _train(frame)
    cur = tr[tr["record"] == "curve"]
    ms = sorted(cur["m"].unique())
    fig, axes = plt.subplots(1, len(ms), figsize=(SIZE[0], SIZE[1]), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], ms):
        g = cur[cur["m"] == m]
        for i, name in enumerate(("fom", "ufom", "exact")):
            h = g[g["estimator"] == name].sort_values("calls")
            if h.empty:
                continue
            ax.plot(h["calls"], h["grad_q50"], c=f"C{i}", lw=1, label=h["label"].iloc[0])
            ax.fill_between(h["calls"], h["grad_q10"], h["grad_q90"], color=f"C{i}", alpha=0.15)
        ax.set(yscale="log", xlabel="function calls", title=f"m = {int(m)} stored states")
        ax.legend(fontsize=5.5)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("|dM_r/dtheta|")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ section


def add_checkpointing_section(rep: Report, frame: pd.DataFrame, scale: str | None = None) -> Report:
    """Append the checkpointing section to ``rep`` from the ``checkpointing`` experiment's table."""
    rep.section(SECTION_TITLE, summary="beyond the paper: the exact branch with m stored states, its calls, seconds, "
                "memory and q*(m), and UFOM(q*(m), m) trained against exact at the same memory")
    rep.paragraph(
        "UFOM's premise is that the exact gradient costs either O(r) memory (Algorithm 2, every inner state stored) "
        "or O(r^2) time (recomputation from V, the exact branch of Algorithm 4). Binomial checkpointing (Griewank "
        "1992; revolve, Griewank and Walther 2000) sits between them: exact_ckpt(m) keeps at most m inner states "
        "and reverses the r + 1 steps (the inner steps, then the outer gradient) with Griewank's minimum "
        "t(r + 1, m) = rho (r + 1) - beta(m + 1, rho - 1) forward steps (rho the repetition number), so one "
        "estimate costs 1 + t(r + 1, m) grads and r HVPs: exact_me's count at m = 1, Algorithm 2's at m = r. "
        "UFOM's exact branch can use it (ufom(q, checkpoints=m)); then C_rnd(r, m) = C1 (t(r + 1, m) - r) + C2 r in "
        "the time model (19) and q*(m) follows from (21). Below: the counted calls against the formula, the "
        "seconds and XLA temporary bytes against m, q*(m) from each problem's D^2 and V^2, and training at an equal "
        "budget of calls under memory budgets.")
    if scale == "smoke":
        rep.paragraph("Smoke scale: the training runs are far too short for the comparison; its verdict checks "
                      "that the pipeline runs.")
    counts = counts_table(frame)
    if not counts.empty:
        rep.table(counts, title="exact_ckpt(m): counted forward steps against t(r + 1, m), memory, seconds, q*(m)",
                  float_format="{:.3g}", caption=(
                      "t counted = grad calls - 1 (the estimate's own counters); t formula = Griewank's closed form "
                      "(theory.checkpointing). Temp bytes: XLA's temporary buffers of the compiled estimate. ms: "
                      "compiled, minimum over rounds of the mean over fixed keys (compilation excluded; a busy "
                      "machine inflates them). q*(m): (19)-(21) with C_rnd(r, m), C1 = C2 = 1, from the problem's "
                      "D^2 and V^2 (synthetic: max over a theta grid, Figure 1f's values at r = 10; mlp, few-shot: "
                      "Monte Carlo at theta0). UFOM calls and ms: expected per estimate, (1 - q*) FOM + q* "
                      "exact_ckpt(m). T ratio: the time model T(q*(m), m) / T(1, m), UFOM(q*(m), m) against the "
                      "exact gradient with the same memory, with C1 = C2 = 1 (calls) or with the measured seconds of "
                      "the two branches (s); 1 means q* = 1."))
        rep.table(baselines_table(frame), title="FOM, exact and exact_me on the same problems", float_format="{:.3g}",
                  caption="Counted grads and HVPs against the formula of theory.zoo (grads + HVPs); temp bytes and "
                          "milliseconds as above.")
        rep.figure(fig_costs(frame), title="Calls and seconds of one estimate against m", caption=(
            "Relative to FOM's estimate on the same problem. Solid: exact_ckpt(m), counted and measured; dashed: "
            "UFOM(q*(m), m), expected. What to see: the exact branch's cost falls steeply from m = 1 to a few "
            "checkpoints (about r log r forward steps at m ~ log r), and UFOM's expected cost is below it only where "
            "q*(m) < 1."))
        rep.figure(fig_bytes(frame), title="XLA temporary memory against m", caption=(
            "Left: temp bytes of exact_ckpt(m); hollow markers: exact (Algorithm 2, at m = r) and exact_me (at "
            "m = 1). Right: the growth over m = 1 in units of one inner state (the size of theta), for the problems "
            f"whose state has at least {STATE_BYTES_MIN:,} bytes: about one state per checkpoint where the states "
            "dominate the buffers (on the scalar synthetic problem fixed buffers dominate)."))
    tr = _train(frame)
    if not tr.empty:
        first = tr.iloc[0]
        rep.figure(fig_training(frame), title="Equal budgets of calls under memory budgets", caption=(
            f"Synthetic problem at Figure 1f's setting (alpha = {first['alpha']:g}, r = {int(first['r'])}), "
            f"{int(tr.loc[tr['record'] == 'final', 'run'].max()) + 1} runs from theta_0 ~ U[-50, 50], "
            f"{int(first['budget']):,} calls each; SGD with gamma = 10 / (c/(r + 1) + 2) after c calls (Figure "
            "1f's 10/(k + 1) for FOM, the same step size at the same calls for every estimator). Median and "
            "10-90% band over runs. Per panel the memory budget m: UFOM(q*(m), m) against the exact gradient with "
            "m stored states (exact_me at m = 1, exact at m = r) and FOM."))
        rep.table(training_table(frame), title="Equal-budget training: the end of the runs", float_format="{:.3g}",
                  caption=(
                      "Final |dM/dtheta|^2 over runs (mean +- SE); z: paired over runs (the same starts, tasks and "
                      "keys) of exact(m)'s final value minus this estimator's, positive = below exact(m); calls to "
                      "exact's final: the first calls at which this estimator's mean reaches what exact(m) reaches "
                      "at the budget."))
    claims = checkpointing_claims(frame)[["claim", "source", "measured", "criterion", "verdict"]]
    rep.claims_table(claims.to_dict("records"), title="Checkpointing claims and verdicts",
                     caption="A verdict is what this scale measured; 'fails' in the first row would mean that, with "
                             "m stored states, the exact gradient beats UFOM(q*(m), m) at equal calls.")
    return rep
