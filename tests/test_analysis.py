"""ufom_bench.analysis: the statistics of the result tables (t and normal quantiles, the paired t test, the
Table 1 / Table 2 analogs, the Figure 1 claims), and the light imports it makes possible (no JAX in
`import report` or `ufom-bench --help`)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ufom_bench import analysis
from ufom_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["ufom_bench.report", "ufom_bench.report.build", "ufom_bench", "ufom_bench.analysis",
                                    "ufom_bench.cli", "ufom_bench.theory"])
def test_light_modules_do_not_import_jax(module):
    """The report (its builder included), the package and the command line import neither JAX nor an experiment."""
    out = _python("-c", f"import sys, {module}; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
                        "('jax', 'jaxlib', 'optax') or m.startswith('ufom_bench.simulations')); assert not heavy, heavy[:5]")
    assert out.returncode == 0, out.stderr


def test_cli_help_does_not_import_jax():
    out = _python("-X", "importtime", "-m", "ufom_bench.cli", "--help")
    assert out.returncode == 0 and "usage: ufom-bench" in out.stdout, out.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert "argparse" in imported  # the check reads what was imported
    assert not [m for m in imported if m.split(".")[0] in ("jax", "jaxlib", "optax") or m.startswith("ufom_bench.simulations")]


def test_lazy_package_attributes():
    import ufom_bench

    assert ufom_bench.Problem.__name__ == "Problem" and callable(ufom_bench.estimators.ufom)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ufom_bench.nope  # noqa: B018


def test_quantiles_come_from_scipy():
    assert analysis.Z95 == 1.959963984540054 == stats.norm.ppf(0.975)
    lo, hi = analysis.ci([1.0, 2.0], [0.5, 0.0])
    np.testing.assert_allclose(lo, [1 - analysis.Z95 * 0.5, 2.0])
    np.testing.assert_allclose(hi, [1 + analysis.Z95 * 0.5, 2.0])
    from ufom_bench import montecarlo  # re-exported there

    assert montecarlo.ci is analysis.ci and montecarlo.Z95 == analysis.Z95


def test_ci_half_width_and_mean_ci():
    # t_{0.975, 2} = 4.3027: three values 0, 1, 2 have sd 1
    assert analysis.ci_half_width(1.0, 3) == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert np.isnan(analysis.ci_half_width(1.0, 1))
    m, h, n = analysis.mean_ci([0.0, 1.0, 2.0, np.nan])  # non-finite values are dropped
    assert (m, n) == (1.0, 3) and h == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert analysis.mean_ci([])[2] == 0 and np.isnan(analysis.mean_ci([5.0])[1])
    with pytest.raises(UserError, match="level must be in"):
        analysis.ci_half_width(1.0, 3, level=95)


def test_table1_ci_is_student_t():
    rows = [{"record": "eval", "estimator": "fom", "seed": s, "budget": 10,
             **{c: float(s) for c in analysis.TABLE1_COLUMNS}} for s in range(3)]
    t = analysis.table1(pd.DataFrame(rows))
    assert t.loc["fom", "test_accuracy"] == 1.0 and t.loc["fom", "seeds"] == 3
    assert t.loc["fom", "test_accuracy_ci"] == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3))
    one = analysis.table1(pd.DataFrame(rows[:1]))
    assert np.isnan(one.loc["fom", "test_accuracy_ci"])
    with pytest.raises(UserError, match="no 'eval' rows"):
        analysis.table1(pd.DataFrame({"record": ["step"]}))


def _final(a, b, metric="test_accuracy"):
    return pd.DataFrame([{"estimator": e, "seed": s, metric: v} for e, vals in (("ad", a), ("other", b))
                         for s, v in enumerate(vals)])


def test_paired_comparison_is_the_one_sided_paired_t_test():
    a, b = [0.90, 0.85, 0.88, 0.91], [0.80, 0.84, 0.86, 0.83]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    r = analysis.paired_comparison(_final(a, b), "test_accuracy", "ad", "other", higher=True)
    assert r["n"] == 4 and r["mean"] == pytest.approx(d.mean())
    assert r["t"] == pytest.approx(t, rel=1e-12) and r["p"] == pytest.approx(stats.t.sf(t, 3), rel=1e-12)
    assert r["ci"] == pytest.approx(stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2)
    two_sided = stats.ttest_rel(a, b).pvalue  # a wrong variant (two-sided) would double p
    assert r["p"] == pytest.approx(two_sided / 2) and r["p"] < two_sided
    # lower is better (a loss): 'a better' means a - b < 0, so t changes sign and p = P(T > -t)
    low = analysis.paired_comparison(_final(a, b, "test_loss"), "test_loss", "ad", "other", higher=False)
    assert low["t"] == pytest.approx(-t) and low["p"] == pytest.approx(stats.t.sf(-t, 3))


def test_paired_comparison_edge_cases():
    same = analysis.paired_comparison(_final([1.0, 2.0], [0.5, 1.5]), "test_accuracy", "ad", "other")
    assert same["t"] == math.inf and same["p"] == 0.0  # sd = 0, a better at every seed
    zero = analysis.paired_comparison(_final([1.0, 2.0], [1.0, 2.0]), "test_accuracy", "ad", "other")
    assert zero["t"] == 0.0 and zero["p"] == 1.0
    one = analysis.paired_comparison(_final([1.0], [0.0]), "test_accuracy", "ad", "other")
    assert one["n"] == 1 and np.isnan(one["p"])
    assert analysis.paired_comparison(_final([1.0], [0.0]), "test_accuracy", "ad", "missing")["n"] == 0


def test_critical_value_is_student_t_when_the_seed_se_binds():
    """Three seeds: a seed-SE-bound z needs |z| > t_{0.975, 2} = 4.30, a task-SE-bound one |z| > 1.96."""
    c = analysis.critical_value(se_task=[0.01, 0.02, 0.01], se_seed=[0.02, 0.01, 0.02], seeds=[3, 3, 1])
    np.testing.assert_allclose(c, [4.302653, 1.959964, 1.959964], rtol=1e-6)


def _fewshot(acc: dict, seeds=(0, 1), n_tasks=50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        for e, p in acc.items():
            hits = (rng.uniform(size=n_tasks) < p).astype(float)
            for c, a in ((0, 0.2), (1, hits.mean())):
                rows.append({"record": "eval", "source": "glyphs", "m": 5, "estimator": e, "seed": s, "checkpoint": c,
                             "calls": 100 * c, "accuracy": a, "accuracy_se": 0.05, "n_tasks": n_tasks})
            rows += [{"record": "task", "source": "glyphs", "m": 5, "estimator": e, "seed": s, "task": t,
                      "accuracy": h} for t, h in enumerate(hits)]
    return pd.DataFrame(rows)


def test_table2_curves_and_paired_differences():
    frame = _fewshot({"adaptive_ufom": 0.9, "fom": 0.5, "reptile": 0.4})
    t2 = analysis.table2(frame).set_index("estimator")
    final = frame[(frame["record"] == "eval") & (frame["checkpoint"] == 1)]
    for e, g in final.groupby("estimator"):
        assert t2.loc[e, "accuracy"] == pytest.approx(g["accuracy"].mean())
        assert t2.loc[e, "se_task"] == pytest.approx(math.sqrt(2 * 0.05**2) / 2)
        assert t2.loc[e, "ci95"] == pytest.approx(float(analysis.critical_value(
            t2.loc[e, "se_task"], t2.loc[e, "se_seed"], 2)) * t2.loc[e, "se"])
    assert len(analysis.curves(frame)) == 3 * 2  # per estimator and checkpoint
    diffs = analysis.paired_differences(frame)
    assert list(diffs["other"]) == ["fom", "reptile"]  # default: the others, sorted
    assert list(analysis.paired_differences(frame, others=("reptile", "fom", "exact_me"))["other"]) == ["reptile", "fom"]
    row = diffs.set_index("other").loc["fom"]
    wide = frame[frame["record"] == "task"].pivot_table(index=["seed", "task"], columns="estimator", values="accuracy")
    assert row["diff"] == pytest.approx((wide["adaptive_ufom"] - wide["fom"]).mean())  # equal tasks per seed
    assert row["z"] > row["crit"]  # 0.9 against 0.5 over 100 paired tasks


def test_figure_claims_verdicts():
    """Theorem 2 holds when FOM's final |dM/dtheta|^2 sits above D by z > 4; Theorem 1 when UFOM's is below."""
    rng = np.random.default_rng(1)
    D, n = 0.06, 50
    g_fom = np.sqrt(2 * D + 0.01 * rng.standard_normal(n) ** 2)  # |dM/dtheta|^2 ~ 2D > D
    g_ufom = 0.01 * rng.standard_normal(n)
    bc = pd.DataFrame({"record": "final", "estimator": ["fom"] * n + ["ufom"] * n,
                       "grad_final": np.concatenate([g_fom, g_ufom])})
    d = pd.DataFrame({"D2": [0.1, 0.2], "D_bound2": [1.0, 0.3]})
    out = analysis.figure_claims({"fig1bc": bc, "fig1d": d}, D).set_index("source")
    assert tuple(out.columns) == analysis.CLAIM_COLUMNS[:1] + analysis.CLAIM_COLUMNS[2:]
    assert out.loc["Theorem 2", "verdict"] == "holds" and out.loc["Theorem 1", "verdict"] == "holds"
    assert out.loc["eq. 15, Lemma 1", "verdict"] == "holds"
    # wrong variants: FOM ending at D (no separation) and a bound below D^2 fail
    bc_flat = bc.assign(grad_final=np.where(bc["estimator"] == "fom", math.sqrt(D), bc["grad_final"]) +
                        0.001 * rng.standard_normal(2 * n))
    bad = analysis.figure_claims({"fig1bc": bc_flat, "fig1d": d.assign(D_bound2=[0.05, 0.3])}, D).set_index("source")
    assert bad.loc["Theorem 2", "verdict"] == "fails" and bad.loc["eq. 15, Lemma 1", "verdict"] == "fails"
    assert analysis.figure_claims({}, D).empty


def test_verdict_and_claim_row():
    assert [analysis.verdict(x) for x in (True, False, None)] == ["holds", "fails", "inconclusive"]
    assert tuple(analysis.claim_row("c", "s", "m", "k", None)) == analysis.CLAIM_COLUMNS


def test_curve_ci_per_estimator_and_budget():
    ev = pd.DataFrame({"estimator": ["a"] * 4, "budget": [1, 1, 2, 2], "calls": [10, 12, 20, 20],
                       "v": [1.0, 3.0, 10.0, 1000.0]})
    out = analysis.curve_ci(ev, "v").set_index("budget")
    assert out.loc[1, "calls"] == 11 and out.loc[1, "mean"] == 2.0
    assert out.loc[1, "half"] == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))
    assert analysis.curve_ci(ev, "v", log=True).set_index("budget").loc[2, "mean"] == pytest.approx(2.0)  # log10


def test_report_settings_carry_what_the_tables_do_not():
    """The command line hands the report these (the report imports no experiment); a bad scale is named."""
    from ufom_bench import simulations
    from ufom_bench.simulations import fewshot, hypercleaning, synthetic

    s = simulations.report_settings("smoke")
    assert s["D"] == synthetic.D_GAP and s["divergence_growth"] > 1
    assert s["hypercleaning"]["n_test"] == hypercleaning.SCALES["smoke"]["n_test"]
    assert s["fewshot"]["budget"] == fewshot.budget_of("smoke") and s["fewshot"]["adaptive"] == fewshot.ADAPTIVE
    assert s["counterexample_points"].stationary_point < s["counterexample_points"].fom_fixed_point
    with pytest.raises(UserError, match="unknown scale 'huge'"):
        simulations.report_settings("huge")


def test_few_shot_monte_carlo_z():
    mc = pd.DataFrame({"point": [0, 0, 0, 1, 1, 1], "alpha": [0.4, 0.1, 0.2] * 2, "d2": [5.0, 1.0, 3.0, 1.0, 1.0, 1.0],
                       "d2_se": [3.0, 0.0, 1.0, 0.0, 0.0, 0.0]})
    z = analysis.alpha_trend_z(mc)
    assert z[0] == pytest.approx(4.0 / 3.0) and np.isnan(z[1])  # (5 - 1) / hypot(3, 0); zero SEs: undefined
    q = pd.DataFrame({"ufom_direct": [2.0, 1.0], "ufom_m2": [1.0, 1.0], "ufom_diff_se": [0.5, 0.1]})
    np.testing.assert_array_equal(analysis.identity_z(q), [2.0, 0.0])


# ------------------------------------------------------------------------- the Figure 1f claim, test kinds


def _fig1f(means: dict, sd: float = 0.1, n: int = 40, with_sd: bool = True) -> pd.DataFrame:
    """A fig1f-like table: per q, a few points of the calls grid, the last one at the budget with ``means[q]``."""
    rows = []
    for q, m in means.items():
        for calls in (100.0, 200.0, 300.0):
            rows.append({"q": q, "calls": calls, "grad_q10": 0.5, "grad_q50": 1.0, "grad_q90": 2.0,
                         "grad_sq_mean": m if calls == 300.0 else 5.0, "runs_started": n, "diverged": 0,
                         **({"grad_sq_sd": sd} if with_sd else {})})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("means, want", [
    ({0.0: 0.20, 0.1: 0.10, 1.0: 0.30}, "holds"),  # q* lowest by 0.1 = 4.5 SEs of the difference (sd 0.1, n 40)
    ({0.0: 0.10, 0.1: 0.20, 1.0: 0.30}, "fails"),  # FOM significantly lower than q*
    ({0.0: 0.105, 0.1: 0.10, 1.0: 0.30}, "inconclusive"),  # q* below FOM by 0.2 SE: not significant
])
def test_fig1f_claim_is_a_welch_test_at_the_stated_level(means, want):
    row = analysis.fig1f_claim(_fig1f(means))
    assert row["verdict"] == want, row["measured"]
    assert "Welch" in row["criterion"] and "p < 0.025" in row["criterion"] and "+-" in row["measured"]
    assert analysis.claim_test(row["criterion"]) == "two-sample t-test"
    # the statistic printed is scipy's Welch t of q* against q = 1
    t = stats.ttest_ind_from_stats(means[0.1], 0.1, 40, means[1.0], 0.1, 40, equal_var=False).statistic
    assert f"t = {t:.2f}" in row["measured"]
    # the value is q*'s mean and the se its standard error
    assert row["value"] == means[0.1] and row["se"] == pytest.approx(0.1 / math.sqrt(40))


def test_fig1f_claim_without_the_per_run_spread_is_inconclusive():
    row = analysis.fig1f_claim(_fig1f({0.0: 0.2, 0.1: 0.1, 1.0: 0.3}, with_sd=False))
    assert row["verdict"] == "inconclusive" and "rerun fig1f" in row["measured"]


@pytest.mark.parametrize("criterion, kind", [
    ("max |z| < 4 (Bonferroni-free; p = 10 coords)", "z-test"),
    ("z < -4 against D", "z-test"),
    ("paired z = (acc AD.UFOM - acc other) / SE ...", "z-test"),
    ("one-sided paired t over seeds vs each of 2, each at p < 0.025", "paired t-test"),
    ("one-sided Welch two-sample t over runs", "two-sample t-test"),
    ("ratio <= 1 (exact expectations)", "check without a test statistic"),
    ("exact equality, every meta-step", "check without a test statistic"),
    ("q* = 1 at every evaluated theta (float32 gradients, exact expectations)", "check without a test statistic"),
])
def test_claim_test_names_the_kind_of_test(criterion, kind):
    assert analysis.claim_test(criterion) == kind
