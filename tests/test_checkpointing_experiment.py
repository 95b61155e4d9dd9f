"""The checkpointing experiment (simulations/checkpointing.py) at smoke scale through the resumable sweep: counted
calls equal 1 + t(r + 1, m) and r HVPs exactly, training steps follow the counts, q*(m) is theory's at Figure 1f's
setting; its report section builds; its claim rows can fail."""

import numpy as np
import pandas as pd
import pytest

from ufom_bench import analysis, theory
from ufom_bench.errors import UserError
from ufom_bench.report.checkpointing import SECTION_TITLE, add_checkpointing_section, counts_table
from ufom_bench.report.document import Report, pdf_text
from ufom_bench.simulations import checkpointing as ck
from ufom_bench.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

# Griewank's t(r + 1, m) + 1 at r = 4 by hand: m = 1: r + 1 + r(r - 1)/2 = 11; m = 2: rho = 2, 2 * 5 - C(4, 3) = 6,
# so 7; m >= r: Algorithm 2's r + 1 = 5.
SMOKE_GRADS = {1: 11, 2: 7, 4: 5}
FIG1F_Q_STAR = 0.1119  # q* of fig1f (alpha = 0.01, r = 10, D^2 = 53.21, V^2 = 2229.3): m = 1, Algorithm 4's cost


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return run_sweep("checkpointing", ck.cell_checkpointing, ck.configs("smoke"), out_dir=out, progress=False,
                     x64=True)


def test_counts_equal_the_formula_exactly(smoke):
    cost = smoke[smoke["kind"] == "cost"]
    rows = cost[cost["estimator"] == "exact_ckpt"]
    assert {int(m): int(g) for m, g in zip(rows["m"], rows["grad_calls"])} == SMOKE_GRADS
    assert (rows["hvp_calls"] == rows["r"]).all()
    assert (cost["grad_calls"] == cost["formula_grad_calls"]).all()
    assert (cost["hvp_calls"] == cost["formula_hvp_calls"]).all()
    table = analysis.checkpointing_costs(smoke)
    assert table["counts_match"].all() and len(table) == len(SMOKE_GRADS)
    assert (table["t_counted"] == [theory.forward_steps(5, m) for m in table["m"]]).all()
    assert np.all(cost["temp_bytes"] > 0) and np.all(cost["seconds"] > 0)


def test_q_star_is_theory_at_the_figure_1f_setting(smoke):
    cost = smoke[(smoke["kind"] == "cost") & (smoke["estimator"] == "exact_ckpt")]
    want = theory.optimal_q_checkpointed(cost["D2"].to_numpy(), cost["V2"].to_numpy(), 4, cost["m"].to_numpy(int))
    np.testing.assert_allclose(cost["q_star"], want, rtol=1e-12)
    ug, uh = theory.checkpointing.expected_calls(4, cost["q_star"].to_numpy(), cost["m"].to_numpy(int))
    np.testing.assert_allclose(cost["ufom_calls"], ug + uh, rtol=1e-12)
    tr = smoke[smoke["kind"] == "train"]
    np.testing.assert_allclose(tr["D2"], 53.21, rtol=1e-3)  # fig1f's max over the theta grid, at theta = -50
    np.testing.assert_allclose(tr["V2"], 2229.3, rtol=1e-3)
    assert theory.optimal_q_checkpointed(tr["D2"].iloc[0], tr["V2"].iloc[0], 10, 1) == pytest.approx(
        FIG1F_Q_STAR, abs=1e-4)
    m = int(tr["m"].iloc[0])
    assert tr["q_star"].iloc[0] == pytest.approx(
        float(theory.optimal_q_checkpointed(tr["D2"].iloc[0], tr["V2"].iloc[0], 10, m)), rel=1e-12)


def test_training_steps_follow_the_counts(smoke):
    """A step is taken while calls < budget: a deterministic estimator of c calls a step takes ceil(budget / c)."""
    tr = smoke[(smoke["kind"] == "train") & (smoke["record"] == "final")]
    budget, r = int(tr["budget"].iloc[0]), int(tr["r"].iloc[0])
    m = int(tr["m"].iloc[0])
    for name, per_step in (("fom", r + 1), ("exact", sum(theory.checkpointed_calls(r, m)))):
        steps = tr.loc[tr["estimator"] == name, "steps"]
        assert (steps == -(-budget // per_step)).all(), name
    u = tr[tr["estimator"] == "ufom"]["steps"]
    assert (u < -(-budget // (r + 1))).all() and (u > -(-budget // sum(theory.checkpointed_calls(r, m)))).all()
    assert (tr["diverged"] == 0).all() and np.isfinite(tr["grad_final"]).all()
    curve = smoke[(smoke["kind"] == "train") & (smoke["record"] == "curve")]
    assert set(curve["estimator"]) == {"fom", "ufom", "exact"} and curve["calls"].max() == budget


def _with_finals(frame: pd.DataFrame, exact: float, ufom: float) -> pd.DataFrame:
    """``frame`` with every run's final |dM/dtheta| set to exact (exact(m)) and ufom (UFOM(q*(m), m)), plus a
    small spread over runs."""
    out = frame.copy()
    fin = out["record"] == "final"
    spread = 1 + 0.01 * np.sin(np.arange(len(out)))
    for name, value in (("exact", exact), ("ufom", ufom)):
        sel = fin & (out["estimator"] == name)
        out.loc[sel, "grad_final"] = value * spread[sel.to_numpy()]
    return out


def test_the_claim_follows_the_runs_and_can_fail(smoke):
    holds = analysis.checkpointing_claims(_with_finals(smoke, exact=1.0, ufom=0.1)).iloc[0]
    fails = analysis.checkpointing_claims(_with_finals(smoke, exact=0.1, ufom=1.0)).iloc[0]
    tie = analysis.checkpointing_claims(_with_finals(smoke, exact=0.5, ufom=0.5)).iloc[0]
    assert "q* < 1 pays off" in holds["claim"]
    assert (holds["verdict"], fails["verdict"], tie["verdict"]) == ("holds", "fails", "inconclusive")
    assert "m=2 (exact_ckpt(m=2))" in holds["measured"] and "model (19)" in holds["measured"]


def test_the_count_claim_fails_on_a_wrong_count(smoke):
    rows = analysis.checkpointing_claims(smoke)
    assert rows.iloc[1]["verdict"] == "holds"
    bad = smoke.copy()
    i = bad.index[(bad["kind"] == "cost") & (bad["m"] == 2)][0]
    bad.loc[i, "grad_calls"] += 1
    rows = analysis.checkpointing_claims(bad)
    assert rows.iloc[1]["verdict"] == "fails" and "m=2" in rows.iloc[1]["measured"]


def test_report_section_builds_from_the_smoke_table(smoke, tmp_path):
    rep = Report("checkpointing", "smoke")
    add_checkpointing_section(rep, smoke, "smoke")
    path = tmp_path / "ckpt.pdf"
    rep.build(path)
    text = pdf_text(path)
    for needle in (SECTION_TITLE, "counted forward steps against t(r + 1, m)", "XLA temporary memory against m",
                   "Equal budgets of calls under memory budgets", "Checkpointing claims and verdicts"):
        assert needle in text, needle
    assert list(counts_table(smoke)["t counted"]) == [g - 1 for g in SMOKE_GRADS.values()]


def test_checkpoint_rules_and_bad_input():
    assert ck.checkpoint_values(10) == {1: ["1"], 2: ["2"], 4: ["4", "log2(r)", "sqrt(r)"], 10: ["r"]}
    assert list(ck.checkpoint_values(100)) == [1, 2, 4, 7, 10, 100]
    assert list(ck.checkpoint_values(3)) == [1, 2, 3]  # no rule exceeds r
    with pytest.raises(UserError, match="'cube'"):
        ck.checkpoints("cube", 10)
    with pytest.raises(UserError, match="'huge'"):
        ck.configs("huge")
    with pytest.raises(UserError, match="'sideways'"):
        ck.cell_checkpointing({"scale": "smoke", "kind": "sideways"})
    with pytest.raises(UserError, match="m = 11"):
        ck.cell_train({"scale": "smoke", "kind": "train", "problem": "synthetic", "r": 10, "m": 11, "seed": 0})
