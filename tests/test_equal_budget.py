"""The equal_budget experiment (simulations/equal_budget.py), its statistics (analysis.budget_curves,
budget_final, holm) and its report section (report/equal_budget.py)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from ufom_bench import analysis
from ufom_bench.errors import UserError
from ufom_bench.simulations import EXPERIMENTS, IN_REPORT, X64
from ufom_bench.simulations import equal_budget as eb
from ufom_bench.theory import zoo

pytestmark = pytest.mark.usefixtures("x64")  # the experiment runs with x64 on (simulations.X64)


def _config(problem, name, params=None, scale="smoke"):
    return {"scale": scale, "problem": problem, "estimator": name, "params": json.dumps(params or {}, sort_keys=True)}


@pytest.fixture(scope="module")
def smoke_table():
    """The smoke scale's cells, as the sweep would combine them (config columns added)."""
    parts = [eb.cell_equal_budget(c).assign(**c) for c in eb.configs("smoke")]
    return pd.concat(parts, ignore_index=True)


def test_registered_in_report_with_x64():
    assert "equal_budget" in EXPERIMENTS and "equal_budget" in IN_REPORT and X64["equal_budget"]
    for scale in ("smoke", "default", "paper"):
        assert eb.configs(scale)


def test_smoke_cell_rows(smoke_table):
    rows = smoke_table[smoke_table["not_applicable"] == ""]
    assert set(rows["estimator"]) == {"fom", "ufom"}
    points = eb.points_of("counterexample", "smoke")
    for _, g in rows.groupby(["estimator", "seed"]):
        assert g["budget"].tolist() == [0] + points
        assert np.all(np.isfinite(g["merit"])) and np.all(g["seconds"] >= 0)
        assert g["calls"].iloc[0] == 0 and np.all(np.diff(g["calls"]) > 0)
    # implicit_cg is not defined on the counterexample: one row with the reason and no measurement
    na = smoke_table[smoke_table["estimator"] == "implicit_cg"]
    assert len(na) == 1 and "needs theta" in na["not_applicable"].iloc[0] and math.isnan(na["merit"].iloc[0])


def _check_budget(frame, problem, name, params, scale="smoke"):
    """Every point's calls lie in [b - c_max + 1, b] (at most the budget); a deterministic estimator's are
    exactly cost x ceil((b - c_max + 1) / cost), its zoo count per estimate."""
    r, batch = eb.r_of(problem, scale), eb.meta_batch_of(problem, scale)
    c_max = eb.max_cost(r, batch)
    exact_me = batch * (r + 1 + r * (r - 1) // 2 + r)  # Proposition 1; UFOM's exact branch costs the same
    assert c_max >= exact_me and all(c_max >= batch * sum(zoo.calls(n, r, **p)) for n, p in eb.settings(r))
    assert r != 10 or c_max == exact_me == 66  # exact_me is the largest at r = 10 (not at r = 3: implicit_cg)
    rows = frame[frame["point"] > 0]
    assert np.all(rows["calls"] <= rows["budget"]), name
    assert np.all(rows["calls"] >= rows["budget"] - c_max + 1), name
    assert np.all(frame["run_calls"] <= eb.budget_of(problem, scale)), name
    if name not in ("ufom", "adaptive_ufom"):
        cost = batch * int(round(sum(zoo.calls(name, r, **params))))
        want = cost * np.ceil((rows["budget"] - c_max + 1) / cost)
        np.testing.assert_array_equal(rows["calls"].to_numpy(), want.to_numpy().astype(int), err_msg=name)


def test_smoke_spends_at_most_the_budget(smoke_table):
    rows = smoke_table[smoke_table["not_applicable"] == ""]
    for name, g in rows.groupby("estimator"):
        _check_budget(g, "counterexample", name, json.loads(g["params"].iloc[0]))


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["counterexample", "quadratic"])
def test_every_estimator_spends_at_most_the_budget(problem):
    for name, params in eb.settings(eb.R):
        frame = eb.cell_equal_budget(_config(problem, name, params))
        if frame["not_applicable"].iloc[0]:
            continue
        _check_budget(frame, problem, name, params)
        assert np.all(np.isfinite(frame["merit"])), name


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["hypercleaning", "fewshot"])
def test_paper_problems_at_smoke_sizes(problem):
    """The paper scale's problems run (here at their experiments' smoke sizes) within the budget; the merit is
    a test accuracy in [0, 1]."""
    for name, params in [("ufom", {"q": 0.1}), ("exact_me", {})]:
        frame = eb.cell_equal_budget(_config(problem, name, params))
        _check_budget(frame, problem, name, params)
        assert np.all((frame["merit"] >= 0) & (frame["merit"] <= 1))


def test_bad_input():
    with pytest.raises(UserError, match="problem"):
        eb.cell_equal_budget(_config("nope", "fom"))
    with pytest.raises(UserError, match="scale"):
        eb.configs("huge")
    with pytest.raises(UserError, match="c = -1"):
        eb.inverse_calls(-1.0, 11.0)


# ------------------------------------------------------------------------------------------ statistics


def _frame(values: dict, budgets=(0, 100), log=False, higher=False, diverged=0):
    """Rows {label: (seeds x len(budgets)) merit array}."""
    rows = []
    for lab, v in values.items():
        v = np.asarray(v, float).reshape(-1, len(budgets))
        for s in range(v.shape[0]):
            for j, b in enumerate(budgets):
                rows.append({"problem": "p", "label": lab, "estimator": lab, "seed": s, "budget": b, "calls": b,
                             "seconds": b / 1000, "merit": v[s, j], "diverged": diverged, "log_merit": log,
                             "higher_is_better": higher, "merit_name": "m", "not_applicable": ""})
    return pd.DataFrame(rows)


def test_budget_curves_quantiles_and_geometric_ci():
    rng = np.random.default_rng(0)
    v = 10 ** rng.normal(size=(20, 2))
    c = analysis.budget_curves(_frame({"a": v}, log=True))
    last = c[c["budget"] == 100].iloc[0]
    x = v[:, 1]
    assert last["median"] == pytest.approx(np.median(x)) and last["q10"] == pytest.approx(np.quantile(x, 0.1))
    lg = np.log10(x)
    half = 2.093024054408263 * lg.std(ddof=1) / math.sqrt(20)  # t_{0.975, 19}
    assert last["mean"] == pytest.approx(10 ** lg.mean())
    assert last["mean_lo"] == pytest.approx(10 ** (lg.mean() - half))
    assert last["mean_hi"] == pytest.approx(10 ** (lg.mean() + half))
    assert last["seeds"] == 20 and last["nonfinite"] == 0


def test_budget_curves_count_nonfinite():
    c = analysis.budget_curves(_frame({"a": [[1, 2], [1, np.inf], [1, 3]]}))
    last = c[c["budget"] == 100].iloc[0]
    assert last["nonfinite"] == 1 and last["seeds"] == 2 and last["mean"] == pytest.approx(2.5)


def test_holm_against_hand_computation():
    p = [0.01, 0.04, 0.03, np.nan]
    np.testing.assert_allclose(analysis.holm(p), [0.03, 0.06, 0.06, np.nan])


def test_budget_final_is_paired():
    """A consistent small paired difference under a large seed effect: 'worse' by the paired test (an unpaired
    comparison, spread 10 against a difference of 0.1, would not separate them)."""
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(scale=10.0, size=8)
    a = np.stack([seed_effect + 20, seed_effect], 1)
    b = np.stack([seed_effect + 20, seed_effect + 0.1 + rng.normal(scale=0.01, size=8)], 1)
    f = analysis.budget_final(_frame({"a": a, "b": b})).set_index("label")
    assert f.loc["a", "verdict"] == "best" and f.loc["b", "best"] == "a"
    assert f.loc["b", "verdict"] == "worse" and f.loc["b", "diff"] == pytest.approx(0.1, abs=0.01)
    assert f.loc["b", "p_holm"] < 1e-6


def test_budget_final_no_difference_and_direction():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(2, 6))
    acc = {"a": np.stack([np.zeros(6), 0.5 + noise[0]], 1), "b": np.stack([np.zeros(6), 0.5 + noise[1]], 1)}
    f = analysis.budget_final(_frame(acc, higher=True)).set_index("label")
    best = f.loc["a", "best"]
    assert best == ("a" if acc["a"][:, 1].mean() > acc["b"][:, 1].mean() else "b")  # higher is better
    other = "b" if best == "a" else "a"
    assert f.loc[other, "verdict"] == "no significant difference" and f.loc[other, "diff"] < 0


def test_budget_final_log_ratio():
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 4.0]])
    ratio = np.array([10.0, 11.0, 9.0])
    f = analysis.budget_final(_frame({"a": a, "b": a * np.stack([np.ones(3), ratio], 1)}, log=True)).set_index("label")
    assert f.loc["a", "mean"] == pytest.approx(2.0)  # geometric mean of 1, 2, 4
    assert f.loc["b", "diff"] == pytest.approx(np.log10(ratio).mean())  # mean log10 ratio, paired by seed
    assert f.loc["b", "verdict"] == "worse"


def test_statistics_reject_other_tables():
    with pytest.raises(UserError, match="equal_budget"):
        analysis.budget_final(pd.DataFrame({"x": [1]}))


# ------------------------------------------------------------------------------------------ the section


def test_section_builds_from_smoke_table(smoke_table, tmp_path):
    from ufom_bench.report import figures
    from ufom_bench.report.document import Report
    from ufom_bench.report.equal_budget import SECTION_TITLE, add_equal_budget_section
    from ufom_bench.report.pdftext import pdf_text

    figures.style()
    rep = Report("t", "equal budget")
    add_equal_budget_section(rep, smoke_table)
    path = tmp_path / "eb.pdf"
    rep.build(path)
    text = " ".join(pdf_text(path).split())
    assert SECTION_TITLE.split(":")[0] in text
    assert "Final |dM/dtheta| at 1,500 calls" in text
    assert "fom" in text and "ufom(q=0.1)" in text and "Not defined here: implicit_cg" in text
