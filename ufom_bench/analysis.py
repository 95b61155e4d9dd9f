"""Statistics of the result tables: tables in, statistics out (the numbers the report shows).

Imports numpy, pandas and scipy.stats only (never JAX), so the report and the command line stay light; the
checkpointing statistics import `ufom_bench.theory` (sympy, numpy) when called.
Normal and Student-t quantiles come from `scipy.stats`, the one-sided paired test from `scipy.stats.ttest_rel`.

    from ufom_bench import analysis
    analysis.table1(results["hypercleaning"])      # Table 1 analog, mean and t CI over seeds
    analysis.table2(results["fewshot"])            # Table 2 analog, SE = max(test-task SE, seed SE)
    analysis.figure_claims(results, D=0.06)        # Theorems 1-2, eq. 15, Figure 1e-f claim rows
    analysis.pareto_front(results["frontier"], "calls", "rel_mse")          # MSE against cost per problem
    analysis.recommend(results["frontier"], [1.0, 0.1], "calls", "rel_mse")  # cheapest per target and memory
    analysis.frontier_recommendations(results["frontier"], [10, 1, 0.1])    # calls and seconds, per point
    analysis.pzobo_vs_es_claim(err_pzobo, err_es, 81, 88)                   # PZOBO's claims (simulations.claims)
    analysis.checkpointing_claims(results["checkpointing"])                 # UFOM(q*(m), m) vs exact(m)
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ufom_bench.errors import UserError

__all__ = [
    "CLAIM_COLUMNS",
    "MEMORY_CLASSES",
    "RECOMMEND_COLUMNS",
    "TABLE1_COLUMNS",
    "Z",
    "Z95",
    "alpha_trend_z",
    "applicable",
    "budget_curves",
    "budget_final",
    "ci",
    "checkpointing_claims",
    "checkpointing_costs",
    "checkpointing_training",
    "ci_half_width",
    "claim_row",
    "claim_test",
    "combine_seeds",
    "critical_value",
    "curve_ci",
    "curves",
    "fig1f_claim",
    "figure_claims",
    "format_count",
    "format_pm",
    "frontier_recommendations",
    "growth_claim",
    "holm",
    "identity_z",
    "mean_ci",
    "mse_ratio",
    "paired_comparison",
    "paired_differences",
    "pareto_front",
    "pzobo_vs_es_claim",
    "recommend",
    "recommendation_changes",
    "table1",
    "table2",
    "variance_formula_claim",
    "verdict",
    "welch_one_sided",
]

Z95 = float(stats.norm.ppf(0.975))  # two-sided 95% normal quantile (1.959963984540054)
Z = 4.0  # the suite's |z| level for claims checked by sampling (|z| < 4, or > 4 for a separation)
CLAIM_COLUMNS = ("claim", "source", "measured", "criterion", "verdict", "value", "se")
TABLE1_COLUMNS = ("test_accuracy", "test_loss", "train_clean_accuracy", "f1", "val_loss")


# ---------------------------------------------------------------------------------------- intervals


def ci(estimate, se, z: float = Z95):
    """The normal-approximation interval (estimate - z se, estimate + z se)."""
    estimate, se = np.asarray(estimate), np.asarray(se)
    return estimate - z * se, estimate + z * se


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise UserError(f"level must be in (0, 1), got level = {level!r}")
    return level


def ci_half_width(sd, n, level: float = 0.95):
    """Student-t half-width t_{(1+level)/2, n-1} sd / sqrt(n) of a mean over n seeds (NaN where n < 2)."""
    _check_level(level)
    n = np.asarray(n, np.float64)
    t = stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1))
    return np.where(n >= 2, t * np.asarray(sd, np.float64) / np.sqrt(np.maximum(n, 1)), np.nan)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean of the finite ``values``, its Student-t CI half-width at ``level`` (NaN for one value), and n."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    sd = v.std(ddof=1) if v.size > 1 else math.nan
    return float(v.mean()), float(ci_half_width(sd, v.size, level)), int(v.size)


def critical_value(se_task, se_seed, seeds, level: float = 0.95):
    """Two-sided critical value for a mean whose SE is the larger of a test-task SE and a seed SE.

    Test-task SEs rest on hundreds of tasks: normal quantile. A binding seed SE rests on k seeds: Student t
    with k - 1 degrees of freedom (4.30 for k = 3 at 95%), so that a CI or a z against it keeps its level.
    """
    _check_level(level)
    k = np.asarray(seeds, np.float64)
    t = stats.t.ppf((1 + level) / 2, np.maximum(k - 1, 1))
    seed_binds = (np.asarray(se_seed, np.float64) > np.asarray(se_task, np.float64)) & (k >= 2)
    return np.where(seed_binds, t, stats.norm.ppf((1 + level) / 2))


# ------------------------------------------------------------------------------------------- claims


def verdict(ok: bool | None) -> str:
    """'holds', 'fails', or 'inconclusive' (``ok`` None)."""
    return "inconclusive" if ok is None else ("holds" if ok else "fails")


def claim_row(claim, source, measured, criterion, ok, value=np.nan, se=np.nan) -> dict:
    """One row of a claims table (`CLAIM_COLUMNS`)."""
    return {"claim": claim, "source": source, "measured": measured, "criterion": criterion,
            "verdict": verdict(ok), "value": float(value), "se": float(se)}


def figure_claims(results: Mapping[str, pd.DataFrame], D: float = 0.06) -> pd.DataFrame:
    """Claims read from the Figure 1 experiments' tables (fig1bc, fig1d, fig1e, fig1f; absent ones skipped).

    Theorem 2 (FOM stalls: final E|dM/dtheta|^2 above the counterexample's D by z > Z) and Theorem 1 (UFOM
    below D by z < -Z), over independent runs; D^2 <= D_bound^2 (eq. 15, exact expectations); theory q* of
    (21) against the empirical best q within a factor 2 (Figure 1e); q* lowest at the budget (Figure 1f,
    `fig1f_claim`: Welch t tests over runs).
    """
    rows = []
    bc = results.get("fig1bc")
    if bc is not None:
        final = bc[bc["record"] == "final"]
        for est, claim, source, stalls in (("fom", "FOM-SGD stalls: liminf E|dM/dtheta|^2 > D", "Theorem 2", True),
                                           ("ufom", "UFOM-SGD reaches below D (-> 0)", "Theorem 1", False)):
            g2 = final.loc[final["estimator"] == est, "grad_final"].to_numpy() ** 2
            if g2.size < 2:
                continue
            se = g2.std(ddof=1) / math.sqrt(g2.size)
            z = (g2.mean() - D) / se
            ok = z > Z if stalls else z < -Z
            rows.append(claim_row(claim, source,
                                  f"final E|dM/dtheta|^2 = {g2.mean():.3g} +- {se:.2g} (D = {D:g}, z = {z:.1f})",
                                  f"z {'>' if stalls else '<'} {'' if stalls else '-'}{Z:g} against D", ok,
                                  g2.mean(), se))
    d = results.get("fig1d")
    if d is not None:
        ratio = (d["D2"] / d["D_bound2"]).max()
        rows.append(claim_row("D^2 <= D_bound^2", "eq. 15, Lemma 1",
                              f"max D^2 / D_bound^2 = {ratio:.3g} over {len(d)} alphas",
                              "ratio <= 1 (exact expectations)", ratio <= 1, ratio))
    e = results.get("fig1e")
    if e is not None:
        per_alpha = e.groupby("alpha").apply(
            lambda g: pd.Series({"q_emp": g.loc[g["calls_to_target"].idxmin(), "q"], "q_theory": g["q_theory"].iloc[0],
                                 "q_step": g["q"].diff().max()}), include_groups=False)
        # the grid cannot resolve q below its smallest value: compare only where q* lies inside the grid
        inside = per_alpha[per_alpha["q_theory"] >= e["q"].min()]
        ratio = inside["q_emp"] / inside["q_theory"]
        err = np.abs(np.log2(ratio))
        ok = None if inside.empty else bool(err.median() <= 1)
        rows.append(claim_row("theory q* agrees with the empirical best q", "eqs. 19-21, Figure 1e",
                              f"q_emp / q* median {ratio.median():.2f} (range {ratio.min():.2f}-{ratio.max():.2f}) "
                              f"over the {len(inside)} of {len(per_alpha)} alphas with q* >= {e['q'].min():g}",
                              "median ratio within a factor 2 ('roughly agree')", ok,
                              ratio.median() if ok is not None else np.nan))
    f = results.get("fig1f")
    if f is not None and f["q"].nunique() == 3:
        rows.append(fig1f_claim(f))
    return pd.DataFrame(rows)


FIG1F_ALPHA = 0.05  # family-wise level of the Figure 1f claim's two one-sided tests (Bonferroni: 0.025 each)


def welch_one_sided(mean_a, sd_a, n_a, mean_b, sd_b, n_b) -> tuple[float, float]:
    """Welch's two-sample t of 'mean a < mean b' from summary statistics (`scipy.stats.ttest_ind_from_stats`):
    (t, one-sided p); t < 0 when a's mean is lower. NaN where a sample has fewer than 2 values."""
    if min(n_a, n_b) < 2 or not (np.isfinite(sd_a) and np.isfinite(sd_b)):
        return math.nan, math.nan
    res = stats.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=False, alternative="less")
    return float(res.statistic), float(res.pvalue)


def fig1f_claim(f: pd.DataFrame, level: float = FIG1F_ALPHA) -> dict:
    """Figure 1f's claim, 'q* converges fastest at equal function calls', as a test at the common budget.

    Per q (0 = FOM, q*, 1 = exact), the mean over runs of |dM/dtheta|^2 at the last point of the calls grid,
    with its 95% Student-t CI (columns grad_sq_mean, grad_sq_sd, runs_started); then two one-sided Welch t
    tests, q* lower than q = 1 and q* lower than FOM, each at ``level``/2 (Bonferroni). The runs of the three
    q share their starts, so the unpaired test is conservative. Holds if both reject; fails if q*'s mean is
    significantly higher than either (the opposite one-sided test at ``level``/2); inconclusive otherwise, or
    when the table has no per-run spread (grad_sq_sd, added after some results were cached: rerun fig1f).
    """
    last = f.sort_values("calls").groupby("q").tail(1).set_index("q")
    qs = sorted(last.index)
    names = {qs[0]: "FOM (q = 0)", qs[1]: f"q* = {qs[1]:.3f}", qs[2]: "exact (q = 1)"}
    claim, source = "q* converges fastest at equal function calls", "Figure 1f"
    each = level / 2
    criterion = (f"one-sided Welch two-sample t over runs at the budget, q* vs q = 1 and q* vs FOM, each at "
                 f"p < {each:g} (family-wise {level:g}, Bonferroni); fails if q* is significantly higher than "
                 f"either")
    budget = float(last["calls"].max())
    if "grad_sq_sd" not in last or "runs_started" not in last:
        means = ", ".join(f"{names[q]} {last.loc[q, 'grad_sq_mean']:.3g}" for q in qs)
        return claim_row(claim, source, f"final mean |dM/dtheta|^2 {means}; no per-run spread in this table "
                         "(cached before grad_sq_sd was added: rerun fig1f)", criterion, None)
    m, sd, n = (last[c].astype(float) for c in ("grad_sq_mean", "grad_sq_sd", "runs_started"))
    half = {q: float(ci_half_width(sd[q], n[q])) for q in qs}
    tests = {other: welch_one_sided(m[qs[1]], sd[qs[1]], n[qs[1]], m[other], sd[other], n[other])
             for other in (qs[2], qs[0])}
    opposite = {other: welch_one_sided(m[other], sd[other], n[other], m[qs[1]], sd[qs[1]], n[qs[1]])[1]
                for other in tests}
    finite = all(np.isfinite(p) for _, p in tests.values())
    if finite and all(p < each for _, p in tests.values()):
        ok = True
    elif any(np.isfinite(p) and p < each for p in opposite.values()):
        ok = False
    else:
        ok = None
    per_q = "; ".join(f"{names[q]} {m[q]:.3g} +- {half[q]:.2g}" for q in qs)
    versus = "; ".join(f"q* vs {names[o]}: t = {t:.2f}, p = {p:.2g}" for o, (t, p) in tests.items())
    return claim_row(claim, source,
                     f"mean |dM/dtheta|^2 at {budget:,.0f} calls (95% t CI over {int(n.min())} runs): {per_q}. "
                     f"{versus}", criterion, ok, m[qs[1]], sd[qs[1]] / math.sqrt(n[qs[1]]))


def claim_test(criterion: str) -> str:
    """The kind of test a claim row's criterion states: "paired t-test" (a paired t over seeds),
    "two-sample t-test" (Welch's), "z-test" (a z-score against a level or a critical value), else
    "check without a test statistic" (an equality, count or inequality computed exactly, or a threshold on a
    ratio)."""
    c = criterion.lower()
    if "paired t" in c:
        return "paired t-test"
    if "welch" in c or "two-sample t" in c:
        return "two-sample t-test"
    if re.search(r"(^|[^a-z_])z([^a-z_]|$)", c):
        return "z-test"
    return "check without a test statistic"


# ----------------------------------------------------------------------------- hypercleaning (Table 1)


def table1(frame: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Table 1 analog: per estimator, the mean over seeds of the metrics at the full budget, and the
    Student-t CI half-width at ``level`` (columns ``<metric>_ci``; NaN with one seed), and ``seeds``."""
    final = frame[frame["record"] == "eval"]
    if final.empty:
        raise UserError("frame has no 'eval' rows: is it the output of the hypercleaning experiment?")
    final = final[final["budget"] == final["budget"].max()]
    cols = list(TABLE1_COLUMNS)
    g = final.groupby("estimator")[cols]
    mean, sd, n = g.mean(), g.std(ddof=1), g.count()
    half = pd.DataFrame(ci_half_width(sd, n, level), index=mean.index, columns=cols)
    return mean.join(half.add_suffix("_ci")).assign(seeds=n[cols[0]])


def curve_ci(evals: pd.DataFrame, metric: str, log: bool = False, level: float = 0.95) -> pd.DataFrame:
    """Per (estimator, budget) of the evaluation rows: mean calls, and the mean and Student-t CI half-width at
    ``level`` of ``metric`` over seeds (of its log10 when ``log``: a geometric mean, for quantities spanning
    decades). Columns estimator, budget, calls, mean, half; sorted by estimator and budget."""
    out = []
    for (est, b), g in evals.groupby(["estimator", "budget"]):
        v = np.log10(g[metric].clip(lower=1e-30)) if log else g[metric]
        m, h, _ = mean_ci(v, level)
        out.append({"estimator": est, "budget": b, "calls": g["calls"].mean(), "mean": m, "half": h})
    return pd.DataFrame(out).sort_values(["estimator", "budget"])


def paired_comparison(final: pd.DataFrame, metric: str, a: str, b: str, higher: bool = True,
                      level: float = 0.95) -> dict:
    """``a`` minus ``b`` on ``metric``, paired by seed: mean, t CI half-width at ``level``, and the one-sided
    paired t test of 'a is better' (higher ``metric`` if ``higher``, else lower) by `scipy.stats.ttest_rel`.

    Returns {mean, ci, t, p, n}; ``t`` is signed so that positive means 'a better'. With n < 2 t and p are
    NaN; when every paired difference is the same (sd = 0), t = +-inf (0 if all are 0) and p = 0 if a is
    better, else 1 (scipy returns NaN for 0/0).
    """
    wide = final[final["estimator"].isin([a, b])].pivot_table(index="seed", columns="estimator", values=metric)
    if a not in wide or b not in wide:
        return {"mean": math.nan, "ci": math.nan, "t": math.nan, "p": math.nan, "n": 0}
    pair = wide[[a, b]].dropna().to_numpy(np.float64)
    d = pair[:, 0] - pair[:, 1]
    n = d.size
    mean, half, _ = mean_ci(d, level)
    if n < 2:
        return {"mean": mean, "ci": math.nan, "t": math.nan, "p": math.nan, "n": n}
    better = d if higher else -d
    if d.std(ddof=1) == 0:
        t = math.inf * np.sign(better.mean()) if better.mean() != 0 else 0.0
        p = 0.0 if better.mean() > 0 else 1.0
    else:
        better_first = pair if higher else pair[:, ::-1]  # H1: the better one's mean is larger
        res = stats.ttest_rel(better_first[:, 0], better_first[:, 1], alternative="greater")
        t, p = float(res.statistic), float(res.pvalue)
    return {"mean": mean, "ci": half, "t": t, "p": p, "n": n}


# ---------------------------------------------------------------------------------- few-shot (Table 2)


def combine_seeds(per_seed: pd.DataFrame) -> pd.Series:
    """Mean over seeds of per-seed mean accuracies; SE = max(test-task SE, seed SE) (the conservative one)."""
    k = len(per_seed)
    mean = per_seed["accuracy"].mean()
    se_task = math.sqrt((per_seed["accuracy_se"] ** 2).sum()) / k
    se_seed = per_seed["accuracy"].std(ddof=1) / math.sqrt(k) if k > 1 else 0.0
    return pd.Series({"accuracy": mean, "se_task": se_task, "se_seed": se_seed, "se": max(se_task, se_seed),
                      "seeds": k, "n_tasks": int(per_seed["n_tasks"].sum())})


def table2(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2 analog: final test accuracy per (source, m, estimator), mean over seeds with its SEs.

    ``se_task``: the test-task SE of the seed mean (sqrt(sum SE_s^2)/k, the MAML protocol's CI source);
    ``se_seed``: sd of the seed means / sqrt(k) (training randomness); ``se`` the larger one; ``ci95`` =
    `critical_value` x se (1.96 when the test-task SE binds, t_{0.975, k-1} when the seed SE does), in
    accuracy units (0..1). Columns also: seeds, n_tasks (summed over seeds), calls (mean spent).
    """
    ev = frame[(frame["record"] == "eval")]
    final = ev[ev["checkpoint"] == ev.groupby(["source", "m", "estimator", "seed"])["checkpoint"].transform("max")]
    out = final.groupby(["source", "m", "estimator"]).apply(combine_seeds, include_groups=False).reset_index()
    calls = final.groupby(["source", "m", "estimator"])["calls"].mean().reset_index(drop=True)
    out["calls"] = calls.to_numpy()
    out["ci95"] = critical_value(out["se_task"], out["se_seed"], out["seeds"]) * out["se"]
    return out


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against function calls: per (source, m, estimator, checkpoint), mean over seeds and SE."""
    ev = frame[frame["record"] == "eval"]
    g = ev.groupby(["source", "m", "estimator", "checkpoint"])
    out = g.apply(combine_seeds, include_groups=False).reset_index()
    out["calls"] = g["calls"].mean().to_numpy()
    return out


def paired_differences(frame: pd.DataFrame, a: str = "adaptive_ufom",
                       others: Sequence[str] | None = None) -> pd.DataFrame:
    """Final accuracy of ``a`` minus each of ``others`` (default: every other estimator of the table, sorted),
    paired over the same test tasks (records "task") and seeds.

    Per (source, m, other): diff = mean over seeds of the per-seed mean paired difference; se_task = sd of the
    per-task differences within seeds combined over seeds; se_seed = sd of the per-seed differences / sqrt(k);
    se = the larger; z = diff / se; crit = its two-sided 95% `critical_value` (normal or Student t).
    """
    tasks = frame[frame["record"] == "task"]
    rows = []
    for (src, m), g in tasks.groupby(["source", "m"]):
        wide = g.pivot_table(index=["seed", "task"], columns="estimator", values="accuracy")
        if a not in wide:
            continue
        names = sorted(e for e in wide.columns if e != a) if others is None else others
        for other in [e for e in names if e != a and e in wide]:
            d = (wide[a] - wide[other]).dropna()
            by_seed = d.groupby(level="seed")
            means, ses = by_seed.mean(), by_seed.std(ddof=1) / np.sqrt(by_seed.count())
            k = len(means)
            diff = means.mean()
            se_task = math.sqrt(float((ses**2).sum())) / k
            se_seed = means.std(ddof=1) / math.sqrt(k) if k > 1 else 0.0
            se = max(se_task, se_seed)
            rows.append({"source": src, "m": int(m), "other": other, "diff": diff, "se_task": se_task,
                         "se_seed": se_seed, "se": se, "z": diff / se if se > 0 else np.nan, "seeds": k,
                         "crit": float(critical_value(se_task, se_seed, k))})
    return pd.DataFrame(rows)


def alpha_trend_z(mc: pd.DataFrame) -> np.ndarray:
    """Per theta (column ``point``) of the few-shot Monte Carlo rows on the alpha axis: the z of D^2 at the
    largest alpha minus D^2 at the smallest, their SEs combined in quadrature (independent task draws per
    alpha); NaN where both SEs are 0."""
    zs = []
    for _, g in mc.groupby("point"):
        g = g.sort_values("alpha")
        lo, hi = g.iloc[0], g.iloc[-1]
        se = math.hypot(lo["d2_se"], hi["d2_se"])
        zs.append((hi["d2"] - lo["d2"]) / se if se > 0 else np.nan)
    return np.asarray(zs, float)


def identity_z(mc: pd.DataFrame) -> np.ndarray:
    """Per (q, theta) row: (E||G_UFO||^2 from direct draws of xi - V^2 - (1/q - 1) D^2) / the SE of that paired
    difference (Lemma 1's identity; columns ufom_direct, ufom_m2, ufom_diff_se)."""
    return ((mc["ufom_direct"] - mc["ufom_m2"]) / mc["ufom_diff_se"]).to_numpy(float)


# ---------------------------------------------------------------------------------------- PZOBO's claims
#
# Sow, Ji, Liang (2022): "estimating only the response Jacobian is far more effective than zeroth-order
# estimation of the full hypergradient" (pzobo against es at equal calls) and "its variance grows with the outer
# dimension" (tr Cov against s and Q, beside theory.zeroth_order's (s + 1) ||J^T b2||^2 / Q). The claims
# experiment (simulations/claims.py) measures; these functions turn the measurements into claim rows.


def mse_ratio(err_a, err_b) -> dict:
    """Paired draws of two squared errors (same task per draw): ratio = mean(err_b) / mean(err_a), the SE of
    its log by the delta method with the pairing's covariance, and z = log(ratio) / SE (> 0: ``a`` better).

    Var log(mean_b / mean_a) = (var_a / m_a^2 + var_b / m_b^2 - 2 cov_ab / (m_a m_b)) / n.
    """
    a, b = np.asarray(err_a, np.float64), np.asarray(err_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise UserError(f"mse_ratio needs two paired 1-d samples of >= 2 draws, got shapes {a.shape} and {b.shape}")
    n, ma, mb = a.size, a.mean(), b.mean()
    c = np.cov(a, b, ddof=1)
    var_log = (c[0, 0] / ma**2 + c[1, 1] / mb**2 - 2 * c[0, 1] / (ma * mb)) / n
    se = math.sqrt(max(var_log, 0.0))
    ratio = mb / ma
    return {"ratio": ratio, "log_se": se, "z": math.log(ratio) / se if se > 0 else math.inf * np.sign(math.log(ratio)),
            "mse_a": ma, "mse_a_se": a.std(ddof=1) / math.sqrt(n), "mse_b": mb, "mse_b_se": b.std(ddof=1) / math.sqrt(n),
            "n": n}


def pzobo_vs_es_claim(err_pzobo, err_es, calls_pzobo: float, calls_es: float, setting: str = "",
                      z: float = Z) -> dict:
    """PZOBO's claim that estimating only the response Jacobian beats zeroth-order estimation of the whole
    hypergradient, at equal calls: the MSE ratio es / pzobo (`mse_ratio`, paired draws). holds: log ratio > 0 at
    z > ``z``; fails: z < -``z`` (pzobo significantly worse); inconclusive in between. The comparison is at equal
    calls only if es gets at least pzobo's calls (``calls_es`` >= ``calls_pzobo``); otherwise the row is
    inconclusive whatever the data."""
    m = mse_ratio(err_pzobo, err_es)
    lo, hi = (m["ratio"] * math.exp(s * Z95 * m["log_se"]) for s in (-1, 1))
    fair = calls_es >= calls_pzobo
    ok = (True if m["z"] > z else False if m["z"] < -z else None) if fair else None
    measured = (f"MSE es / pzobo = {m['ratio']:.3g} (95%: {lo:.3g}-{hi:.3g}; z = {m['z']:.1f}); pzobo "
                f"{m['mse_a']:.3g} +- {m['mse_a_se']:.2g} at {calls_pzobo:g} calls, es {m['mse_b']:.3g} +- "
                f"{m['mse_b_se']:.2g} at {calls_es:g} calls; n = {m['n']:,}" + (f"; {setting}" if setting else ""))
    criterion = (f"z-test on the log MSE ratio: holds if z > {z:g}, fails if z < -{z:g}, else inconclusive; es "
                 "gets at least pzobo's calls" + ("" if fair else " (NOT MET here: inconclusive)"))
    return claim_row("Estimating only the response Jacobian (pzobo) beats zeroth-order estimation of the full "
                     "hypergradient (es) at equal calls", "PZOBO (Sow et al. 2022)", measured, criterion, ok,
                     m["ratio"], m["log_se"])


def variance_formula_claim(table: pd.DataFrame, claim: str, source: str, z: float = Z) -> dict:
    """Measured tr Cov against its formula, cell by cell: ``table`` has columns ``trace``, ``trace_se`` (from
    independent draws) and ``formula``; holds when max |z| < ``z`` over the cells (no multiplicity correction:
    |z| < 4 has a false-failure chance below 1e-4 per cell)."""
    zs = ((table["trace"] - table["formula"]) / table["trace_se"]).to_numpy(float)
    worst = int(np.argmax(np.abs(zs)))
    zmax = float(np.abs(zs[worst]))
    w = table.iloc[worst]
    where = ", ".join(f"{c} = {w[c]:g}" for c in ("s", "Q") if c in table)
    measured = (f"max |z| = {zmax:.2f} over {len(zs)} cells (worst at {where}: {w['trace']:.4g} +- "
                f"{w['trace_se']:.2g} vs {w['formula']:.4g})")
    return claim_row(claim, source, measured, f"max |z| < {z:g} (z-test per cell)", zmax < z, zmax)


def growth_claim(table: pd.DataFrame, x: str, claim: str, source: str, z: float = Z) -> dict:
    """The normalised variance v = trace Q / ||a||^2 (columns ``trace``, ``trace_se``, ``Q``, ``a2``) grows with
    column ``x``: the weighted least-squares slope of v against x and its SE; holds at z > ``z``, fails at
    z < -``z``, else inconclusive. The formula (s + 1) ||a||^2 / Q predicts slope 1 in s."""
    scale = table["Q"].to_numpy(float) / table["a2"].to_numpy(float)
    v, se, xs = table["trace"].to_numpy(float) * scale, table["trace_se"].to_numpy(float) * scale, table[x].to_numpy(float)
    w = 1 / se**2
    xbar = np.sum(w * xs) / np.sum(w)
    sxx = np.sum(w * (xs - xbar) ** 2)
    slope = float(np.sum(w * (xs - xbar) * v) / sxx)
    slope_se = float(1 / math.sqrt(sxx))
    zz = slope / slope_se
    lo, hi = int(np.argmin(xs)), int(np.argmax(xs))
    measured = (f"tr Cov Q / ||a||^2 = {v[lo]:.3g} +- {se[lo]:.2g} at {x} = {xs[lo]:g}, {v[hi]:.3g} +- {se[hi]:.2g} "
                f"at {x} = {xs[hi]:g}; slope {slope:.3g} +- {slope_se:.2g} (z = {zz:.1f})")
    return claim_row(claim, source, measured, f"z-test on the weighted LS slope: holds if z > {z:g}, fails if "
                     f"z < -{z:g}, else inconclusive", True if zz > z else False if zz < -z else None, slope, slope_se)


# ---------------------------------------------------------------------------------------- the frontier
#
# Rows of the frontier experiment (`ufom_bench.frontier.measure`, simulations/frontier.py): one per
# (problem, estimator setting, theta), with an error column (``mse``: E_T E ||G_hat - G_T||^2 against the exact
# gradient of the same task, or ``rel_mse`` = mse / ||dM/dtheta||^2) and its ``_se``, a cost column (``calls``,
# ``seconds``) and ``memory_class`` in MEMORY_CLASSES.

MEMORY_CLASSES = ("O(1)", "O(sqrt r)", "O(r)")  # nested budgets: a class fits every budget at or above it
RECOMMEND_COLUMNS = ("problem", "target", "memory_budget", "cost_kind", "estimator", "cost", "cost_se", "error",
                     "error_se", "runner_up", "runner_up_cost", "runner_up_cost_se", "significant", "verdict")


def format_pm(value, se, digits: int = 3) -> str:
    """``"1.23e+02 +- 4.5e+00"``; a zero SE prints as ``"+- 0"``; NaN as ``"nan"``."""
    if not np.isfinite(value):
        return "nan"
    sd = "0" if se == 0 else f"{se:.2g}"
    return f"{value:.{digits}g} +- {sd}"


def format_count(x) -> str:
    """A count as an integer when it is one (``21``), else with two decimals (``14.50``)."""
    return f"{int(round(x)):,}" if abs(x - round(x)) < 1e-9 else f"{x:,.2f}"


def _se_of(frame: pd.DataFrame, column: str) -> pd.Series:
    se = f"{column}_se"
    return frame[se].fillna(0.0) if se in frame else pd.Series(0.0, index=frame.index)


def pareto_front(frame: pd.DataFrame, cost: str = "calls", error: str = "mse", by: str | None = "problem") -> pd.DataFrame:
    """``frame`` (rows with finite cost and error) sorted by cost within each ``by`` group, with a boolean
    column ``pareto``: no other row of the group is at most as costly and at most as wrong, one of them
    strictly (point estimates; ties in both keep both rows on the front)."""
    if cost not in frame or error not in frame:
        raise UserError(f"pareto_front needs columns {cost!r} and {error!r}; got {', '.join(map(str, frame.columns))}")
    rows = frame[np.isfinite(frame[cost].astype(float)) & np.isfinite(frame[error].astype(float))].copy()
    groups = [rows] if by is None else [g for _, g in rows.groupby(by, sort=False)]
    out = []
    for g in groups:
        c, e = g[cost].to_numpy(float), g[error].to_numpy(float)
        dominated = ((c[None, :] <= c[:, None]) & (e[None, :] <= e[:, None])
                     & ((c[None, :] < c[:, None]) | (e[None, :] < e[:, None]))).any(1)
        out.append(g.assign(pareto=~dominated).sort_values([cost, error], kind="stable"))
    return pd.concat(out) if out else rows.assign(pareto=pd.Series(dtype=bool))


def recommend(frame: pd.DataFrame, targets: Sequence[float], cost: str = "calls", error: str = "mse",
              by: str | Sequence[str] = "problem", name: str = "label", z: float = Z95) -> pd.DataFrame:
    """For each group, target accuracy and memory budget: the cheapest estimator that meets the target, the
    runner-up, and whether the winner is significantly cheaper.

    A row meets ``target`` when its error's upper bound error + z SE is at most the target (so an estimate whose
    interval reaches past the target does not count), and fits a budget when its ``memory_class`` is at or
    below it (MEMORY_CLASSES are nested). Among the rows that meet and fit, the cheapest by ``cost`` (ties: the
    smaller error) wins; the runner-up is the next. ``significant``: the cost intervals cost +- z SE (SE from a
    ``<cost>_se`` column, 0 where it is NaN) do not overlap; otherwise the verdict is "no significant
    difference". Without a ``<cost>_se`` column (a single timing) significance is not assessed: ``significant``
    is None and the verdict "cheaper (cost has no SE)". A budget with no row meeting the target gets verdict
    "none meets the target".

    ``by``: a column or several (e.g. ("problem", "point")); the output starts with them.
    """
    keys = [by] if isinstance(by, str) else list(by)
    for column in (cost, error, name, "memory_class", *keys):
        if column not in frame:
            raise UserError(f"recommend needs column {column!r}; got {', '.join(map(str, frame.columns))}")
    bad = set(frame["memory_class"].dropna()) - set(MEMORY_CLASSES)
    if bad:
        raise UserError(f"unknown memory_class {sorted(bad)!r}; expected one of {MEMORY_CLASSES}")
    has_se = f"{cost}_se" in frame
    rows = frame[np.isfinite(frame[cost].astype(float)) & np.isfinite(frame[error].astype(float))].copy()
    rows["_cost_se"], rows["_err_se"] = _se_of(rows, cost), _se_of(rows, error)
    rows["_class"] = rows["memory_class"].map(MEMORY_CLASSES.index)
    out = []
    for group, g in rows.groupby(keys if len(keys) > 1 else keys[0], sort=False):
        head = dict(zip(keys, group if len(keys) > 1 else (group,)))
        for target in targets:
            meets = g[g[error] + z * g["_err_se"] <= target]
            for budget, level in zip(MEMORY_CLASSES, range(len(MEMORY_CLASSES))):
                fit = meets[meets["_class"] <= level].sort_values([cost, error], kind="stable")
                row = {**head, "target": float(target), "memory_budget": budget, "cost_kind": cost}
                if fit.empty:
                    out.append({**row, "verdict": "none meets the target"})
                    continue
                best = fit.iloc[0]
                row.update(estimator=best[name], cost=float(best[cost]), cost_se=float(best["_cost_se"]),
                           error=float(best[error]), error_se=float(best["_err_se"]))
                if len(fit) == 1:
                    out.append({**row, "verdict": "only one meets the target"})
                    continue
                second = fit.iloc[1]
                row.update(runner_up=second[name], runner_up_cost=float(second[cost]),
                           runner_up_cost_se=float(second["_cost_se"]))
                if not has_se:
                    out.append({**row, "significant": None, "verdict": "cheaper (cost has no SE)"})
                    continue
                apart = (second[cost] - z * second["_cost_se"]) > (best[cost] + z * best["_cost_se"])
                row.update(significant=bool(apart), verdict="cheapest" if apart else "no significant difference")
                out.append(row)
    return pd.DataFrame(out, columns=keys + list(RECOMMEND_COLUMNS[1:]))


def applicable(frame: pd.DataFrame) -> pd.DataFrame:
    """The frontier rows that were measured: ``not_applicable`` empty (or absent) and a finite error."""
    ok = frame["not_applicable"].fillna("") == "" if "not_applicable" in frame else pd.Series(True, frame.index)
    return frame[ok]


def frontier_recommendations(frame: pd.DataFrame, targets: Sequence[float], costs: Sequence[str] = ("calls", "seconds"),
                             error: str = "rel_mse", z: float = Z95) -> pd.DataFrame:
    """`recommend` on the measured frontier rows for each cost in ``costs`` (those measured), per problem and point
    (``point`` "theta0" where the table has no point column): one tidy table, ``cost_kind`` telling them apart."""
    rows = applicable(frame)
    rows = rows if "point" in rows else rows.assign(point="theta0")
    measured = [c for c in costs if c in rows and np.isfinite(rows[c].astype(float)).any()]  # seconds may be off
    parts = [recommend(rows, targets, cost, error, by=("problem", "point"), z=z) for cost in measured]
    if not parts:
        raise UserError(f"frontier_recommendations needs one of the cost columns {tuple(costs)}")
    return pd.concat(parts, ignore_index=True)


def recommendation_changes(rec: pd.DataFrame, base: str = "theta0") -> pd.DataFrame:
    """Where the recommendation at another point differs from the one at ``base`` (same problem, target, budget
    and cost kind): one row per difference, with both estimators (NaN where none meets the target) and both
    verdicts. Empty when every point agrees with ``base`` or there is only one point."""
    keys = ["problem", "target", "memory_budget", "cost_kind"]
    at_base = rec[rec["point"] == base].set_index(keys)[["estimator", "verdict"]].add_suffix(f"_at_{base}")
    others = rec[rec["point"] != base]
    if others.empty or at_base.empty:
        return pd.DataFrame(columns=["point", *keys, f"estimator_at_{base}", "estimator", "verdict"])
    merged = others.join(at_base, on=keys)
    a, b = merged["estimator"].fillna(""), merged[f"estimator_at_{base}"].fillna("")
    return merged.loc[a != b, ["point", *keys, f"estimator_at_{base}", "estimator", f"verdict_at_{base}",
                               "verdict"]].reset_index(drop=True)


# ----------------------------------------------------------------------------------- equal-budget training
#
# Rows of the equal_budget experiment (simulations/equal_budget.py): one per (problem, estimator setting
# ``label``, seed, evaluation point), with ``budget`` (the nominal calls of the point), ``calls`` (spent, at most
# the budget), ``seconds`` (measured), ``merit`` (the problem's figure of merit), ``higher_is_better``,
# ``log_merit`` (it spans decades) and ``diverged`` (refused steps so far); settings not defined on a problem
# carry a ``not_applicable`` reason and no measurements.


def _budget_rows(frame: pd.DataFrame) -> pd.DataFrame:
    need = {"problem", "label", "seed", "budget", "calls", "seconds", "merit", "diverged"}
    if not need <= set(frame.columns):
        raise UserError(f"not an equal_budget table: need columns {sorted(need)}, got {sorted(frame.columns)}")
    rows = frame if "not_applicable" not in frame else frame[frame["not_applicable"].fillna("") == ""]
    return rows[rows["budget"].notna()]


def budget_curves(frame: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """The figure of merit against calls, per (problem, label, budget point) over seeds: median, 10% and 90%
    quantiles, mean and its Student-t CI half-width at ``level`` (of log10 merit where ``log_merit``: a geometric
    mean, ``mean`` then given back in merit units with the interval [mean_lo, mean_hi]), mean calls and mean
    seconds, seeds, and diverged (refused steps so far, summed over seeds). Non-finite merits (a run that blew
    up without being refused) are left out of the mean and counted in ``nonfinite``."""
    _check_level(level)
    out = []
    for (problem, lab, b), g in _budget_rows(frame).groupby(["problem", "label", "budget"], sort=False):
        v = g["merit"].to_numpy(np.float64)
        log = bool(g["log_merit"].iloc[0]) if "log_merit" in g else False
        ok = v[np.isfinite(v)]
        m, h, n = mean_ci(np.log10(np.clip(ok, 1e-300, None)) if log else ok, level)
        lo, hi = (m - h, m + h) if np.isfinite(h) else (np.nan, np.nan)
        if log:
            m, lo, hi = 10.0**m, 10.0**lo, 10.0**hi
        q10, q50, q90 = (np.quantile(ok, q) if ok.size else np.nan for q in (0.1, 0.5, 0.9))
        out.append({"problem": problem, "label": lab, "budget": int(b), "calls": g["calls"].mean(),
                    "seconds": g["seconds"].mean(), "median": q50, "q10": q10, "q90": q90, "mean": m,
                    "mean_lo": lo, "mean_hi": hi, "seeds": n, "nonfinite": int(v.size - ok.size),
                    "diverged": int(g["diverged"].sum())})
    return pd.DataFrame(out).sort_values(["problem", "label", "budget"], kind="stable").reset_index(drop=True)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the comparisons; NaN kept)."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (order.size - i) * p[j]))
        out[j] = running
    return out


def budget_final(frame: pd.DataFrame, level: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """Per (problem, label): the figure of merit at the full budget, mean with Student-t CI over seeds (geometric
    where ``log_merit``: the interval [lo, hi] in merit units), median, mean calls and seconds spent, refused steps
    and non-finite runs; then a paired comparison against the best estimator of the problem (best mean; of
    log10 merit where ``log_merit``): the mean paired difference label - best (in log10 units where log, so a
    ratio 10^diff), its CI, the one-sided paired t test that the best is better (`paired_comparison`), its
    Holm-adjusted p over the problem's comparisons (``p_holm``) and the verdict: "best", "worse" (p_holm <
    ``alpha``) or "no significant difference". The best is picked on the same seeds, so the test is of "is this
    one worse than the observed best", not a pre-registered comparison.
    """
    _check_level(level)
    rows = _budget_rows(frame)
    final = rows[rows["budget"] == rows.groupby("problem")["budget"].transform("max")].copy()
    log = final["log_merit"].astype(bool) if "log_merit" in final else pd.Series(False, index=final.index)
    final["score"] = np.where(log, np.log10(final["merit"].clip(lower=1e-300)), final["merit"])
    final.loc[~np.isfinite(final["merit"]), "score"] = np.nan
    out = []
    for problem, g in final.groupby("problem", sort=False):
        higher = bool(g["higher_is_better"].iloc[0]) if "higher_is_better" in g else False
        is_log = bool(log.loc[g.index].iloc[0])
        stats_ = {}
        for lab, h in g.groupby("label", sort=False):
            m, half, n = mean_ci(h["score"], level)
            lo, hi = (m - half, m + half) if np.isfinite(half) else (np.nan, np.nan)
            value = (10.0**m, 10.0**lo, 10.0**hi) if is_log else (m, lo, hi)
            stats_[lab] = {"problem": problem, "label": lab, "estimator": h["estimator"].iloc[0] if "estimator" in h
                           else lab, "merit_name": h["merit_name"].iloc[0] if "merit_name" in h else "merit",
                           "mean": value[0], "lo": value[1], "hi": value[2], "median": h["merit"].median(),
                           "score": m, "seeds": n, "nonfinite": int((~np.isfinite(h["merit"])).sum()),
                           "calls": h["calls"].mean(), "seconds": h["seconds"].mean(),
                           "diverged": int(h["diverged"].sum()), "budget": int(h["budget"].iloc[0]),
                           "higher_is_better": higher}
        scored = {k: v for k, v in stats_.items() if np.isfinite(v["score"])}
        best = (max if higher else min)(scored, key=lambda k: scored[k]["score"]) if scored else None
        for lab, row in stats_.items():
            row["best"] = best
            if best is None or lab == best:
                row.update(diff=np.nan, diff_ci=np.nan, t=np.nan, p=np.nan, n_pairs=0)
                continue
            c = paired_comparison(g.assign(estimator=g["label"]), "score", best, lab, higher=higher, level=level)
            row.update(diff=-c["mean"], diff_ci=c["ci"], t=c["t"], p=c["p"], n_pairs=c["n"])
        labs = [k for k in stats_ if k != best]
        adj = holm([stats_[k]["p"] for k in labs])
        for k, pa in zip(labs, adj):
            stats_[k]["p_holm"] = pa
            stats_[k]["verdict"] = ("worse" if np.isfinite(pa) and pa < alpha else
                                    "no significant difference" if np.isfinite(pa) else "untested")
        if best is not None:
            stats_[best].update(p_holm=np.nan, verdict="best")
        out.extend(stats_.values())
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------- checkpointing (issue 16)
#
# Rows of the checkpointing experiment (simulations/checkpointing.py): ``kind`` "cost" (one row per problem, r
# and estimator: exact_ckpt(m) for each m, and fom / exact / exact_me) and ``kind`` "train" (records "curve" and
# "final" of FOM, UFOM(q*(m), m) and the exact gradient with m stored states at an equal budget of calls).


def checkpointing_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, r, m) of the exact_ckpt cost rows: t(r + 1, m) counted (grad calls - 1) and by the formula,
    whether the counts equal the formula, and the time model (19) at fixed memory.

    Calls model (C1 = C2 = 1, `theory.at_fixed_memory`): ``ratio_same_memory`` = T(q*(m), m) / T(1, m), UFOM(q*(m),
    m) against exact_ckpt(m), the exact gradient with the same memory; ``ratio_exact`` against exact (m = r,
    Algorithm 2) and ``ratio_exact_me`` against exact_me (m = 1). Seconds model: C_det = the measured seconds of
    fom, C_rnd = those of exact_ckpt(m) minus them; ``q_star_seconds`` its q* and ``ratio_seconds`` =
    T(q*, m) / T(1, m). Below 1: UFOM(q*(m), m) is modelled to reach a precision sooner than exact_ckpt(m).
    """
    from ufom_bench import theory

    cost = frame[frame["kind"] == "cost"] if "kind" in frame else frame.iloc[:0]
    ck = cost[cost["estimator"] == "exact_ckpt"].copy()
    if ck.empty:
        return ck
    r, m = ck["r"].to_numpy(int), ck["m"].to_numpy(int)
    d2, v2 = ck["D2"].to_numpy(float), ck["V2"].to_numpy(float)
    ck["t_counted"] = ck["grad_calls"].to_numpy(int) - 1
    ck["t_formula"] = [theory.forward_steps(a + 1, min(b, a)) for a, b in zip(r, m)]
    ck["counts_match"] = ((ck["grad_calls"] == ck["formula_grad_calls"]) & (ck["hvp_calls"] == ck["formula_hvp_calls"])
                          & (ck["t_counted"] == ck["t_formula"]))
    fixed = theory.at_fixed_memory(d2, v2, r, m)
    ck["ratio_same_memory"] = fixed.time_ufom / fixed.time_exact_ckpt
    ck["ratio_exact"] = fixed.time_ufom / fixed.time_exact
    ck["ratio_exact_me"] = fixed.time_ufom / fixed.time_exact_me
    fom = cost[cost["estimator"] == "fom"].set_index(["problem", "r"])["seconds"]
    s_fom = np.array([fom.get((p, rr), np.nan) for p, rr in zip(ck["problem"], r)], float)
    c_rnd = np.maximum(ck["seconds"].to_numpy(float) - s_fom, 1e-12)  # a timing below fom's: noise
    q_sec = np.asarray(theory.optimal_q(d2, v2, s_fom, c_rnd, backend="numpy"), float)
    time = lambda q: np.asarray(theory.time_model(q, d2, v2, s_fom, c_rnd, backend="numpy"), float)
    ck["q_star_seconds"], ck["ratio_seconds"] = q_sec, time(q_sec) / time(np.ones_like(q_sec))
    return ck.sort_values(["problem", "r", "m"]).reset_index(drop=True)


def checkpointing_training(frame: pd.DataFrame) -> pd.DataFrame:
    """Per memory budget m of the training cells: for fom, ufom and exact, the label, mean steps, the final mean
    |dM/dtheta|^2 over runs and its SE; for ufom and fom the paired z of (exact's final |dM/dtheta|^2 - theirs)
    over runs (the same starts, tasks and keys: positive = better than the exact gradient with m states), and
    ``calls_to_exact_final``: the first calls of the grid at which their mean |dM/dtheta|^2 is at or below what
    exact reaches at the budget (NaN if never)."""
    tr = frame[frame["kind"] == "train"] if "kind" in frame else frame.iloc[:0]
    rows = []
    for m, g in tr.groupby("m"):
        fin = g[g["record"] == "final"]
        cur = g[g["record"] == "curve"]
        exact = fin[fin["estimator"] == "exact"].set_index("run")["grad_final"] ** 2
        target = exact.mean()
        for name in ("fom", "ufom", "exact"):
            f = fin[fin["estimator"] == name]
            if f.empty:
                continue
            g2 = f.set_index("run")["grad_final"] ** 2
            row = {"m": int(m), "estimator": name, "label": f["label"].iloc[0], "q": float(f["q"].iloc[0]),
                   "steps_mean": float(f["steps"].mean()), "final_g2": float(g2.mean()),
                   "final_g2_se": float(g2.std(ddof=1) / math.sqrt(len(g2))) if len(g2) > 1 else np.nan,
                   "runs": int(len(g2)), "budget": int(f["calls"].iloc[0]), "diverged": int(f["diverged"].iloc[0])}
            if name != "exact" and not exact.empty:
                d = (exact - g2).dropna()
                se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else np.nan
                row["z_vs_exact"] = float(d.mean() / se) if se and se > 0 else np.nan
                c = cur[cur["estimator"] == name].sort_values("calls")
                hit = c[c["grad_sq_mean"] <= target]
                row["calls_to_exact_final"] = float(hit["calls"].iloc[0]) if len(hit) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def checkpointing_claims(frame: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Claim rows of the checkpointing experiment: (1) does checkpointing change the paper's conclusion that q* < 1
    pays off, and where; (2) exact_ckpt's counted calls equal 1 + t(r + 1, m) grads and r HVPs.

    (1): per memory budget m of the training cells, the paired z of exact(m)'s final |dM/dtheta|^2 minus
    UFOM(q*(m), m)'s over runs, against the two-sided ``level`` normal critical value Bonferroni-corrected over
    the k budgets, c = Phi^-1(1 - (1 - level) / (2k)): holds (the conclusion survives checkpointing) if z > c at
    every m, fails if z < -c at some m (there the exact gradient with the same memory is better), else
    inconclusive. The measured text adds the model's answer on every problem: q*(m) and T(q*(m), m) / T(1, m).
    """
    rows = []
    tr = checkpointing_training(frame)
    raw = frame[frame["kind"] == "train"] if "kind" in frame else frame.iloc[:0]
    ck = checkpointing_costs(frame)
    model = []
    for (p, r), g in ck.groupby(["problem", "r"]) if not ck.empty else []:
        parts = ", ".join(f"m={int(m)}: q* {q:.3g}, T ratio {x:.2f}" for m, q, x in
                          zip(g["m"], g["q_star"], g["ratio_same_memory"]))
        model.append(f"{p} r={int(r)}: {parts}")
    model_text = ("; model (19) with C1 = C2 = 1, UFOM(q*(m), m) / exact(m): " + "; ".join(model)) if model else ""
    claim = ("Checkpointing does not change the paper's conclusion that q* < 1 pays off (UFOM(q*(m), m) vs the "
             "exact gradient with the same m stored states, equal calls)")
    source = "beyond the paper (issue 16); Section 4.4, Figure 1f"
    u = tr[tr["estimator"] == "ufom"] if not tr.empty else tr
    if u.empty or "z_vs_exact" not in u or not np.isfinite(u["z_vs_exact"]).any():
        rows.append(claim_row(claim, source, "no training cells" + model_text, "paired z over runs", None))
    else:
        k = len(u)
        c = float(stats.norm.ppf(1 - (1 - _check_level(level)) / (2 * k)))
        ex = tr[tr["estimator"] == "exact"].set_index("m")
        parts = []
        for _, row in u.iterrows():
            e = ex.loc[row["m"]]
            reach = row["calls_to_exact_final"]
            reach = (f", reaches exact's final level at {reach / row['budget']:.0%} of the budget"
                     if np.isfinite(reach) else "")
            parts.append(f"m={row['m']} ({e['label']}): q* {row['q']:.3f}, final E|dM/dtheta|^2 UFOM "
                         f"{row['final_g2']:.3g} vs {e['final_g2']:.3g}, z {row['z_vs_exact']:+.1f}{reach}")
        z = u["z_vs_exact"].to_numpy(float)
        ok = True if np.all(z > c) else (False if np.any(z < -c) else None)
        rows.append(claim_row(
            claim, source,
            f"synthetic (Figure 1f, alpha = {raw['alpha'].iloc[0]:g}, r = {int(raw['r'].iloc[0])}), "
            f"{int(u['runs'].max())} runs, budget {int(u['budget'].max()):,} calls: " + "; ".join(parts) + model_text,
            f"paired z (same starts, tasks, keys) of exact(m) minus UFOM(q*(m), m) final |dM/dtheta|^2; two-sided "
            f"{level:.0%} Bonferroni over {k} budgets, c = {c:.2f}: holds if z > c at every m, fails if z < -c at "
            "some m, else inconclusive", ok, float(np.nanmin(z))))
    if not ck.empty:
        bad = ck[~ck["counts_match"]]
        rows.append(claim_row(
            "exact_ckpt(m) makes 1 + t(r + 1, m) grad calls and r HVPs (Griewank's minimum, counted)",
            "theory.checkpointing (revolve's closed form)",
            f"{len(ck)} (problem, r, m) cells, counted by the estimate's counters; mismatches: "
            + (", ".join(f"{p} r={int(r)} m={int(m)}" for p, r, m in zip(bad["problem"], bad["r"], bad["m"]))
               or "none"),
            "exact equality", bad.empty))
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
