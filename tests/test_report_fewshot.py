"""report/fewshot.py: the Table 2 analog beside the paper's numbers, the claim verdicts (holds / fails /
inconclusive by the stated z criterion), and the section built into a PDF, on hand-made tables (fast)."""

import numpy as np
import pandas as pd
import pytest

from ufom_bench.report.document import Report, pdf_text
from ufom_bench.report.fewshot import (
    SECTION_TITLE,
    TABLE_TITLE,
    add_fewshot_section,
    fewshot_claims,
    ordering_claim,
    table2_display,
)
from ufom_bench.simulations import fewshot as fs

R, B = 3, 2


def _frame(acc: dict, seeds=(0, 1, 2), n_tasks=200, m=5, seed=0) -> pd.DataFrame:
    """A fewshot-like table: per estimator a true accuracy ``acc[e]``; per-task 0/1 outcomes, a short
    accuracy-vs-calls curve, per-step calls following Proposition 1, and Monte Carlo rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        for e, p in acc.items():
            hits = (rng.uniform(size=n_tasks) < p).astype(float)
            for c, frac in enumerate((0.0, 0.5, 1.0)):
                a = hits.mean() if c == 2 else 1 / m + frac * (p - 1 / m)
                rows.append({"record": "eval", "checkpoint": c, "calls": int(600 * frac), "step": c, "accuracy": a,
                             "accuracy_se": 0.03, "loss": 1.0, "n_tasks": n_tasks})
                rows[-1].update(source="glyphs", m=m, estimator=e, seed=s, r=R, meta_batch=B)
            for t, h in enumerate(hits):
                rows.append({"record": "task", "checkpoint": 2, "task": t, "accuracy": h, "source": "glyphs", "m": m,
                             "estimator": e, "seed": s, "r": R, "meta_batch": B})
            calls, xi = 0, 0
            for k in range(1, 6):
                xi = int(e == "exact_me" or (e == "adaptive_ufom" and k % 3 == 0))
                calls += fs.calls_per_step(e, R, B, exact=bool(xi))
                q = {"exact_me": 1.0, "adaptive_ufom": 0.05 + 0.01 * k}.get(e, 0.0)
                rows.append({"record": "step", "step": k, "calls": calls, "q": q, "exact": bool(xi), "finite": True,
                             "source": "glyphs", "m": m, "estimator": e, "seed": s, "r": R, "meta_batch": B})
    for p, th_calls in enumerate((0, 600)):
        for axis, values in (("alpha", (0.1, 0.2, 0.4)), ("r", (1, 2, 3))):
            for v in values:
                alpha, r = (v, R) if axis == "alpha" else (0.4, v)
                d2 = 10.0 * alpha * r
                rows.append({"record": "mc", "axis": axis, "alpha": alpha, "r": r, "point": p, "theta_calls": th_calls,
                             "d2": d2, "d2_se": 0.1 * d2, "v2": 2 * d2, "v2_se": 0.2 * d2, "bias_norm": 1.0,
                             "meta_grad_norm": 1.0, "n": 64, "n_diverged": 0, "source": "glyphs", "m": m,
                             "estimator": "adaptive_ufom", "seed": 0})
        for q in (0.1, 0.5, 1.0):
            m2 = 2 * 4.8 + (1 / q - 1) * 4.8
            rows.append({"record": "mc", "axis": "q", "alpha": 0.4, "r": R, "point": p, "theta_calls": th_calls, "q": q,
                         "d2": 4.8, "d2_se": 0.5, "v2": 9.6, "v2_se": 1.0, "ufom_m2": m2, "ufom_m2_se": 0.1 * m2,
                         "ufom_direct": m2 * 1.01, "ufom_direct_se": 0.1 * m2, "ufom_diff_se": 0.05 * m2,
                         "ufom_var": m2 - 1, "ufom_var_se": 0.1 * m2, "bias_norm": 1.0, "meta_grad_norm": 1.0,
                         "n": 64, "n_diverged": 0, "source": "glyphs", "m": m, "estimator": "adaptive_ufom",
                         "seed": 0})
    return pd.DataFrame(rows)


WINS = {"exact_me": 0.50, "reptile": 0.45, "fom": 0.52, "adaptive_ufom": 0.75}


def test_table2_display_puts_ours_beside_the_paper():
    t = table2_display(_frame(WINS))
    assert list(t.columns[-4:]) == ["EXACT", "REPTILE", "FOM", "AD.UFOM"]
    ours, paper = t[t["numbers"] == "ours"], t[t["numbers"] == "paper (printed)"]
    assert len(ours) == 1 and "not Omniglot" in ours["data"].iloc[0]
    assert len(paper) == 4 and set(paper["data"]) == {"Omniglot", "CIFAR-100"}
    assert paper.set_index(["data", "ways m"]).loc[("Omniglot", 30), "AD.UFOM"] == "92.0"
    assert paper.set_index(["data", "ways m"]).loc[("Omniglot", 40), "FOM"] == "84.88"
    assert "\u00b1" in ours["AD.UFOM"].iloc[0]


@pytest.mark.parametrize("acc, verdict", [
    (WINS, "holds"),  # AD.UFOM far better than each baseline: every z > 2
    ({**WINS, "fom": 0.95}, "fails"),  # a baseline far better: some z < -2
    ({e: 0.5 for e in WINS}, "inconclusive"),  # equal: |z| small
])
def test_ordering_claim_verdicts(acc, verdict):
    row = ordering_claim(_frame(acc, seed=1))
    assert row["verdict"] == verdict, row["measured"]
    assert "z > c" in row["criterion"] and "Student t" in row["criterion"] and "Table 2" in row["source"]


def test_claims_table_columns_and_rows():
    claims = fewshot_claims(_frame(WINS))
    assert list(claims.columns) == ["claim", "source", "measured", "criterion", "verdict"]
    by = claims.set_index("source")["verdict"]
    assert by["Proposition 1"] == "holds"  # the hand-made calls follow Proposition 1
    assert by["eq. 14, Figure 1d"] == "holds" and by["Lemma 1, eqs. 12-13"] == "holds"
    broken = _frame(WINS)
    broken.loc[broken["record"] == "step", "calls"] += 1
    assert fewshot_claims(broken).set_index("source").loc["Proposition 1", "verdict"] == "fails"


def test_section_builds_into_a_pdf(tmp_path):
    rep = Report("few-shot test", "")
    add_fewshot_section(rep, _frame(WINS), "default")
    path = rep.build(tmp_path / "fs.pdf")
    text = " ".join(pdf_text(path).split())  # table cells wrap
    for needle in [SECTION_TITLE, TABLE_TITLE, "NOT Omniglot", "Test accuracy against function calls",
                   "Adaptive UFOM's q along training", "Bias, second moment and UFOM's variance on the few-shot workload",
                   "D^2 and V^2 on the few-shot workload", "Few-shot claims and verdicts", "89.1"]:
        assert needle in text, needle


def test_figures_show_every_mark_and_clip_log_error_bars():
    import matplotlib.pyplot as plt

    from ufom_bench.report import fewshot as rfs

    frame = _frame(WINS)
    fig = rfs.fig_curves(frame)
    labels = fig.get_axes()[0].get_legend().get_texts()
    assert any("chance" in t.get_text() for t in labels) and any("95% CI" in t.get_text() for t in labels)
    plt.close(fig)
    fig = rfs.fig_mc(frame)
    for ax in fig.get_axes():
        assert ax.get_ylabel() not in ("", "value", "per-task value")
    assert {"D^2 (left, middle)", "V^2 (left, middle)"} <= {t.get_text() for t in fig.get_axes()[2].get_legend().get_texts()}
    plt.close(fig)
    # an interval reaching below 0 is cut at a positive lower end on the log axis; the upper end is kept
    y, half = np.array([1.0, 5.0]), np.array([3.0, 1.0])
    lower, upper = rfs._log_bars(y, half)
    assert np.all(y - lower > 0) and lower[1] == 1.0 and np.array_equal(upper, half)


def test_monte_carlo_table_headers_in_words_counts_as_integers():
    from ufom_bench.report.fewshot import _mc_table

    t = _mc_table(_frame(WINS))
    assert not {"d2", "d2_se", "v2", "v2_se", "n", "n_diverged", "theta_calls"} & set(t.columns)
    assert {"FOM's bias D^2", "second moment V^2", "tasks drawn"} <= set(t.columns)
    assert set(t["tasks drawn"]) == {"64"} and set(t["inner steps r"]) == {"3"}


def test_section_in_the_report_names_its_claims_instead_of_repeating_them(tmp_path):
    frame = _frame(WINS)
    claims = fewshot_claims(frame)
    ids = {c: f"C{i + 10}" for i, c in enumerate(claims["claim"])}
    rep = Report("few-shot in the report", "")
    add_fewshot_section(rep, frame, "default", claim_ids=ids)
    text = " ".join(pdf_text(rep.build(tmp_path / "fs.pdf")).split())
    assert "Few-shot claims and verdicts" not in text and claims["claim"].iloc[0] not in text
    assert f"This section's claims are {', '.join(ids.values())} of the claims table" in text
