"""Report section 1, "Which estimator to trust", from a small synthetic frontier table: the recommendation is
computed from the rows (change a row, the table changes), the section comes first in the PDF, the changes at
other points are computed; and PZOBO's claim rows (analysis) can fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ufom_bench import analysis
from ufom_bench.report import figures
from ufom_bench.report.build import build_report
from ufom_bench.report.document import Report
from ufom_bench.report.frontier import add_frontier_section, fig_frontier, recommendation_table
from ufom_bench.report.pdftext import pdf_text


def _rows(problem, point, shift=1.0):
    # label, estimator, rel_mse, rel_mse_se, calls, calls_se, seconds, temp_bytes, stored_states, memory_class
    spec = [
        ("fom", "fom", 3.0, 0.1, 11, 0, 1e-4, 700, 1, "O(1)"),
        ("ufom(q=0.1)", "ufom", 0.5 * shift, 0.05, 15.5, 0.6, 1.5e-4, 900, 1, "O(1)"),
        ("pzobo(mu=0.01, n_dirs=1)", "pzobo", 0.55, 0.05, 16.0, 0, 1.2e-4, 950, 1, "O(1)"),
        ("truncated(k=3)", "truncated", 0.05, 0.005, 17.0, 0, 1.6e-4, 2000, 3, "O(sqrt r)"),
        ("exact", "exact", 0.0, 0.0, 21.0, 0, 2e-4, 5000, 10, "O(r)"),
    ]
    t = pd.DataFrame(spec, columns=["label", "estimator", "rel_mse", "rel_mse_se", "calls", "calls_se", "seconds",
                                    "temp_bytes", "stored_states", "memory_class"])
    t = t.assign(problem=problem, point=point, not_applicable="", r=10, dim_theta=4, n=64)
    na = {"label": "neumann(terms=3)", "estimator": "neumann", "problem": problem, "point": point,
          "not_applicable": "neumann(terms=3) needs theta in L_out"}
    return pd.concat([t, pd.DataFrame([na])], ignore_index=True)


def table():
    """Two problems; 'quad' also at a later point where ufom gets worse than pzobo (shift 4: 2.0 vs 0.55)."""
    return pd.concat([_rows("quad", "theta0"), _rows("mlp", "theta0"), _rows("quad", "step 100", shift=4.0)],
                     ignore_index=True)


def test_recommendation_is_computed_from_the_rows():
    rec = analysis.frontier_recommendations(table(), targets=[1.0, 0.1])
    assert set(rec["cost_kind"]) == {"calls", "seconds"} and "neumann(terms=3)" not in set(rec["estimator"])
    get = lambda point, target, budget, cost: rec[(rec["problem"] == "quad") & (rec["point"] == point)
                                                  & (rec["target"] == target) & (rec["memory_budget"] == budget)
                                                  & (rec["cost_kind"] == cost)].iloc[0]
    # calls, target 1, O(1): ufom 15.5 +- 1.2 against pzobo 16 (exact count): intervals overlap
    r = get("theta0", 1.0, "O(1)", "calls")
    assert (r["estimator"], r["runner_up"], r["verdict"]) == ("ufom(q=0.1)", "pzobo(mu=0.01, n_dirs=1)",
                                                              "no significant difference")
    # seconds carry no SE: the winner (pzobo, 1.2e-4 s) is only "cheaper"
    r = get("theta0", 1.0, "O(1)", "seconds")
    assert (r["estimator"], r["verdict"]) == ("pzobo(mu=0.01, n_dirs=1)", "cheaper (cost has no SE)")
    assert pd.isna(r["significant"])
    # target 0.1: truncated (0.05 + 1.96 * 0.005 < 0.1) in O(sqrt r), significantly cheaper than exact
    assert get("theta0", 0.1, "O(1)", "calls")["verdict"] == "none meets the target"
    r = get("theta0", 0.1, "O(sqrt r)", "calls")
    assert (r["estimator"], r["verdict"]) == ("truncated(k=3)", "only one meets the target") and pd.isna(r["runner_up"])
    r = get("theta0", 0.1, "O(r)", "calls")
    assert (r["estimator"], r["runner_up"], r["verdict"]) == ("truncated(k=3)", "exact", "cheapest")
    # at step 100 ufom's error (2.0 + ...) misses target 1: pzobo is recommended there instead
    assert get("step 100", 1.0, "O(1)", "calls")["estimator"] == "pzobo(mu=0.01, n_dirs=1)"
    changes = analysis.recommendation_changes(rec)
    assert set(changes["point"]) == {"step 100"} and set(changes["estimator_at_theta0"]) == {"ufom(q=0.1)"}
    # a wrong variant: the same rows without the SE of the calls would call ufom significantly cheaper
    r = analysis.recommend(table().drop(columns="calls_se").query("point == 'theta0'"), [1.0], "calls", "rel_mse",
                           by=("problem", "point"))
    assert r.iloc[0]["verdict"] == "cheaper (cost has no SE)"


def test_section_table_follows_the_data(tmp_path):
    figures.style()
    rec = analysis.frontier_recommendations(table(), targets=[1.0])
    shown = recommendation_table(rec, "quad")
    assert shown.loc[shown["memory"] == "O(1)", "cheapest in calls"].iloc[0].startswith("ufom(q=0.1): 15.50 +- 0.6 calls")
    # make pzobo cheaper in calls and the table says so (nothing typed)
    t = table()
    t.loc[t["estimator"] == "pzobo", "calls"] = 12.0
    shown = recommendation_table(analysis.frontier_recommendations(t, targets=[1.0]), "quad")
    assert shown.loc[shown["memory"] == "O(1)", "cheapest in calls"].iloc[0].startswith("pzobo(mu=0.01, n_dirs=1): 12 calls")
    fig = fig_frontier(t, "quad")
    labels = {h.get_label() for h in fig.legends[0].legend_handles}
    assert {"fom", "ufom(q=0.1)", "pzobo(mu=0.01, n_dirs=1)", "truncated(k=3)", "exact (error 0)",
            "Pareto front (point estimates)"} <= labels
    for ax in fig.axes:
        assert ax.get_yscale() == "log" and ax.get_ylim()[0] > 0
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_section_is_first_in_the_report_and_says_what_changes(tmp_path):
    figures.style()
    claims = pd.DataFrame([analysis.claim_row("a claim", "somewhere", "x", "y", True)])
    pdf = tmp_path / "r.pdf"
    build_report({"frontier": table(), "claims": claims}, "smoke", str(pdf), {"D": 0.06, "divergence_growth": 1e3})
    text = pdf_text(pdf)
    # the last occurrence of each title is its heading (the first page's summary lists them too)
    first, claims_at = text.rindex("1 Which estimator to trust"), text.rindex("2 Claims and verdicts")
    assert first < claims_at
    assert text.index("Which estimator on quad (theta0)") < claims_at
    assert "Which estimator on mlp (theta0)" in text and "Frontier on quad at theta0" in text
    assert "differs from theta0's in" in text and "Not defined on quad: neumann(terms=3)" in text
    # the section alone, on a table without a point column
    rep = Report("t", "s")
    add_frontier_section(rep, table().query("point == 'theta0'").drop(columns="point"))
    rep.build(tmp_path / "s.pdf")
    assert "differs from" not in pdf_text(tmp_path / "s.pdf")


# ----------------------------------------------------------------------------------- PZOBO's claim rows

RNG = np.random.default_rng(0)


def test_pzobo_vs_es_claim_holds_fails_and_needs_equal_calls():
    """n = 4000 paired draws, z-level analysis.Z = 4: es's errors 1.7x pzobo's hold, 0.5x fail, equal ones are
    inconclusive, and es given fewer calls is inconclusive whatever the data."""
    n = 4000
    task = RNG.exponential(1.0, n)  # a shared task effect makes the pairing matter
    pz = task * RNG.exponential(1.0, n)
    es = lambda k: k * task * RNG.exponential(1.0, n)
    assert analysis.pzobo_vs_es_claim(pz, es(1.7), 81, 88)["verdict"] == "holds"
    assert analysis.pzobo_vs_es_claim(pz, es(0.5), 81, 88)["verdict"] == "fails"
    assert analysis.pzobo_vs_es_claim(pz, es(1.0), 81, 88)["verdict"] == "inconclusive"
    row = analysis.pzobo_vs_es_claim(pz, es(1.7), 81, 66)
    assert row["verdict"] == "inconclusive" and "NOT MET" in row["criterion"]
    m = analysis.mse_ratio(pz, 2 * pz)  # perfectly paired: ratio 2 exactly, SE 0
    assert m["ratio"] == pytest.approx(2.0) and m["log_se"] == pytest.approx(0.0, abs=1e-9)


def _variance_table(formula_plus=1.0, grow=True):
    s = np.array([2, 10, 40, 10, 10])
    q = np.array([1, 1, 1, 4, 16])
    a2 = np.array([3.0, 5.0, 2.0, 5.0, 5.0])
    true = (s + 1) * a2 / q if grow else 3 * a2 / q
    se = 0.02 * true
    return pd.DataFrame({"s": s, "Q": q, "a2": a2, "trace": true + RNG.normal(0, 1, 5) * se, "trace_se": se,
                         "formula": (s + formula_plus) * a2 / q})


def test_variance_claims_hold_and_wrong_variants_fail():
    t = _variance_table()
    assert analysis.variance_formula_claim(t, "c", "s")["verdict"] == "holds"
    assert analysis.variance_formula_claim(_variance_table(formula_plus=-1.0), "c", "s")["verdict"] == "fails"  # sphere's
    by_s = t[t["Q"] == 1]
    row = analysis.growth_claim(by_s, "s", "grows", "PZOBO")
    assert row["verdict"] == "holds" and row["value"] == pytest.approx(1.0, abs=0.1)  # slope 1: (s + 1)
    flat = _variance_table(grow=False)
    assert analysis.growth_claim(flat[flat["Q"] == 1], "s", "grows", "PZOBO")["verdict"] == "inconclusive"
    shrink = by_s.assign(trace=(50 - by_s["s"]) * by_s["a2"] / by_s["Q"])
    assert analysis.growth_claim(shrink, "s", "grows", "PZOBO")["verdict"] == "fails"
