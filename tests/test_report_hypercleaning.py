"""report/hypercleaning.py: the Table 1 section builds into a PDF, its claim rows are well formed, and the verdict
follows the stated paired-t criterion, on synthetic tables whose answer is known (the section built from a real
smoke run is tested in test_hypercleaning_experiment.py, which already runs it)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ufom_bench.report import Report, VERDICTS, pdf_text
from ufom_bench.report import hypercleaning as rhc
from ufom_bench.simulations import hypercleaning as hc

CLAIM_COLUMNS = ["claim", "source", "measured", "criterion", "verdict"]


def synthetic(shift=None, noise=0.01, seeds=5, rng=0, scale="default") -> pd.DataFrame:
    """A table shaped like the experiment's (eval and step rows, every column the section reads): test accuracy
    of estimator e and seed s is base[s] + shift[e] + noise N(0, 1), so the paired differences are known."""
    shift = {"exact_me": 0.0, "fom": -0.15, "adaptive_ufom": 0.0, "truncated_k1": 0.0} if shift is None else shift
    gen = np.random.default_rng(rng)
    s = hc.SCALES[scale]
    budgets = [0] + hc.budgets_of(scale)
    base = 0.8 + 0.03 * gen.standard_normal(seeds)
    rows = []
    for est, d in shift.items():
        for seed in range(seeds):
            for b in budgets:
                frac = b / budgets[-1]
                acc = 0.6 + (base[seed] + d - 0.6) * frac + noise * gen.standard_normal()
                g2 = 1e-3 * (1 - 0.9 * frac)
                rows.append({"record": "eval", "estimator": est, "seed": seed, "budget": b, "calls": b + 3,
                             "step": b // 50,
                             "val_loss": 1.5 - 2 * (acc - 0.6), "val_accuracy": acc, "test_accuracy": acc,
                             "test_loss": 1.5 - 2 * (acc - 0.6), "train_clean_accuracy": acc + 0.05,
                             "f1": 0.0 if est == "fom" else 0.7 * frac, "precision": 0.7, "recall": 0.7,
                             "n_flagged": 10, "D2": g2, "V2": g2,
                             **{k: float(v) for k, v in hc.theory_q(g2, g2, s["r"]).items()},
                             "lr": 0.3, "r": s["r"], "n_train": s["n_train"], "hidden": s["hidden"],
                             "total_budget": s["budget"], "scale": scale})
            for k in range(1, 21):
                exact = est == "exact_me" or (est == "adaptive_ufom" and k % 5 == 0)
                q = {"exact_me": 1.0, "adaptive_ufom": 0.05 if k <= 5 else 0.2146}.get(est, 0.0)
                rows.append({"record": "step", "estimator": est, "seed": seed, "step": k, "calls": 300 * k, "q": q,
                             "exact": exact, "diverged": 0, "lr": 0.3, "scale": scale})
    return pd.DataFrame(rows)


def verdict(frame) -> str:
    c = rhc.hypercleaning_claims(frame)
    return c.loc[c["claim"] == rhc.CLAIM, "verdict"].item()


def test_claim_rows_well_formed():
    c = rhc.hypercleaning_claims(synthetic())
    assert list(c.columns[:5]) == CLAIM_COLUMNS and {"value", "se"} <= set(c.columns)
    assert len(c) == 4 and c["claim"].is_unique and rhc.CLAIM in set(c["claim"])
    assert set(c["verdict"]) <= set(VERDICTS)
    for col in CLAIM_COLUMNS:
        assert c[col].map(lambda x: isinstance(x, str) and x.strip() != "").all(), col
    # they concatenate with the direct claims (report.build.all_claims) and render as a claims table
    from ufom_bench.simulations import claims

    assert set(c.columns) == set(pd.DataFrame([claims._row("x", "y", "z", "w", True)]).columns)
    Report("t").claims_table(c[CLAIM_COLUMNS].to_dict("records"))
    q_row = c[c["source"] == "eqs. 14, 16, 20-21"].iloc[0]
    assert q_row["verdict"] == "holds" and q_row["value"] == 0.0


@pytest.mark.parametrize("shift, noise, want", [
    ({"exact_me": 0.0, "fom": -0.15, "adaptive_ufom": 0.05}, 0.005, "holds"),  # better than both, t ~ 15
    ({"exact_me": 0.0, "fom": -0.15, "adaptive_ufom": -0.02}, 0.005, "fails"),  # below exact on the mean
    ({"exact_me": 0.0, "fom": -0.15, "adaptive_ufom": 0.002}, 0.02, "inconclusive"),  # ordered, t ~ 0.2
])
def test_claim_verdict_follows_the_criterion(shift, noise, want):
    assert verdict(synthetic(shift, noise)) == want


def test_one_seed_is_inconclusive():
    assert verdict(synthetic({"exact_me": 0.0, "fom": -0.15, "adaptive_ufom": 0.05}, seeds=1)) == "inconclusive"


def test_paired_t_matches_scipy():
    frame = synthetic({"exact_me": 0.0, "fom": -0.15, "adaptive_ufom": 0.01}, noise=0.01, seeds=6, rng=3)
    final = frame[(frame["record"] == "eval") & (frame["budget"] == frame["budget"].max())]
    a, b = (final[final["estimator"] == e].sort_values("seed")["test_accuracy"].to_numpy()
            for e in ("adaptive_ufom", "exact_me"))
    want = stats.ttest_rel(a, b, alternative="greater")
    got = rhc._paired(final, "test_accuracy", "adaptive_ufom", "exact_me")
    assert got["t"] == pytest.approx(want.statistic, rel=1e-10) and got["p"] == pytest.approx(want.pvalue, rel=1e-10)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=(a - b).mean(), scale=stats.sem(a - b))
    assert got["ci"] == pytest.approx((hi - lo) / 2, rel=1e-10)
    # lower is better for CCE: the t statistic is signed so that positive means "Adaptive UFOM better"
    got_ce = rhc._paired(final, "test_loss", "adaptive_ufom", "exact_me")
    assert math.copysign(1, got_ce["t"]) == math.copysign(1, got["t"])


def test_table1_analog_beside_paper():
    t = rhc.table1_analog(synthetic())
    assert list(t["estimator"]) == [rhc.NAMES[e] for e in rhc.ORDER]
    row = t.set_index("estimator").loc["Adaptive UFOM"]
    assert row["TEST % paper"] == "92.24" and row["TEST CCE paper"] == "0.2811" and "\u00b1" in row["TEST % ours"]
    assert t.set_index("estimator").loc[rhc.NAMES["truncated_k1"], "TEST % paper"] == "\u2013"


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="not a hypercleaning results table"):
        rhc.hypercleaning_claims(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="no 'eval' rows"):
        rhc.table1_analog(synthetic().query("record == 'step'"))


def _section_text(frame, scale, tmp_path) -> str:
    rep = Report("hypercleaning test", "section only")
    rhc.add_hypercleaning_section(rep, frame, scale)
    path = rep.build(tmp_path / "hc.pdf")
    return pdf_text(path)


def test_section_builds_into_pdf(tmp_path):
    text = _section_text(synthetic(), "default", tmp_path)
    for s in [rhc.SECTION_TITLE, "Table 1 analog", "DIFFERENT DATA SCALE", "90.82", "92.24", "0.4795",
              "identically zero", "Truncated K = 1", rhc.CLAIM, "training curves against function calls",
              "Adaptive UFOM's q against q* from D^2 and V^2", "second moment", "paired by seed"]:
        assert s in " ".join(text.split()), s


def test_figures_name_their_axes_and_show_the_crosses():
    import matplotlib.pyplot as plt

    fig = rhc.fig_q(synthetic(), {"q_min": 0.05, "d2_scale": 0.1})
    right = fig.get_axes()[1]
    labels = right.get_legend_handles_labels()[1]
    assert any(s.endswith(": D^2") for s in labels) and any(s.endswith(": V^2") for s in labels)
    assert all("value" not in ax.get_ylabel() for ax in fig.get_axes())
    plt.close(fig)
    fig = rhc.fig_curves(synthetic())
    assert any("t interval" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)


def test_headers_in_words_and_claims_named_by_id(tmp_path):
    comp = rhc.paired_comparisons(synthetic())
    assert {"mean difference", "one-sided p", "seeds"} <= set(comp.columns) and "t (better)" not in comp.columns
    assert set(comp["seeds"]) == {"5"}
    frame = synthetic()
    claims = rhc.hypercleaning_claims(frame)
    ids = {c: f"C{i + 1}" for i, c in enumerate(claims["claim"])}
    rep = Report("hypercleaning in the report", "")
    rhc.add_hypercleaning_section(rep, frame, "default", claim_ids=ids)
    text = " ".join(pdf_text(rep.build(tmp_path / "hc.pdf")).split())
    assert "are C1, C2, C3, C4 of the claims table" in text and f'Claim: "{rhc.CLAIM}"' not in text
