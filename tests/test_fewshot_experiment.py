"""The few-shot experiment (simulations/fewshot.py): smoke scale through the resumable sweep, the columns the
report reads, equal budgets, Proposition 1's calls per meta-step, one compilation per config, the Monte Carlo
identity, and clear errors."""

import jax
import numpy as np
import pytest

from ufom_bench.report.document import Report, pdf_text
from ufom_bench.report.fewshot import PAPER_TABLE2, SECTION_TITLE, TABLE_TITLE, add_fewshot_section, fewshot_claims
from ufom_bench.simulations import fewshot as fs
from ufom_bench.simulations import report_settings
from ufom_bench import analysis
from ufom_bench.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

EVAL = {"record", "checkpoint", "calls", "step", "accuracy", "accuracy_se", "loss", "n_tasks", "lr", "budget",
        "source", "m", "estimator", "seed", "r", "alpha", "meta_batch"}
TASK = {"task", "accuracy"}
STEP = {"step", "calls", "q", "exact", "finite"}
MC = {"axis", "alpha", "r", "point", "theta_calls", "d2", "d2_se", "v2", "v2_se", "q", "ufom_m2", "ufom_m2_se",
      "ufom_direct", "ufom_diff_se", "ufom_var", "ufom_var_se", "n", "n_diverged"}
Z = 4.0  # level of the sampled identity check (|z| < 4)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    frame = run_sweep("fewshot", fs.cell_fewshot, fs.configs("smoke"), out_dir=out, progress=False, x64=True)
    return out, frame


def test_smoke_has_the_report_columns(smoke):
    _, df = smoke
    s = fs.SCALES["smoke"]
    assert EVAL | TASK | STEP | MC <= set(df.columns)
    ev = df[df["record"] == "eval"]
    assert set(ev["estimator"]) == set(fs.ESTIMATORS)
    assert len(ev) == len(fs.ESTIMATORS) * len(s["seeds"]) * len(s["settings"]) * (s["checkpoints"] + 1)
    assert np.all((ev["accuracy"] >= 0) & (ev["accuracy"] <= 1)) and np.all(np.isfinite(ev["accuracy_se"]))
    tasks = df[df["record"] == "task"]
    assert tasks.groupby(["estimator", "seed"]).size().eq(s["n_test"]).all()
    mc = df[df["record"] == "mc"]
    assert set(mc["axis"]) == {"alpha", "r", "q"}
    assert set(mc.loc[mc["axis"] == "r", "r"]) == set(s["mc"]["rs"]) | {s["r"]}
    assert np.all(mc["d2"] > 0) and np.all(mc["v2"] > 0)  # FOM is biased on MAML: G_FO != G
    t2 = analysis.table2(df)
    assert set(t2["estimator"]) == set(fs.ESTIMATORS) and np.all(t2["ci95"] >= 0)
    assert len(analysis.paired_differences(df)) == len(fs.ESTIMATORS) - 1


def test_equal_budgets_and_proposition_1_calls(smoke):
    _, df = smoke
    s, budget = fs.SCALES["smoke"], fs.budget_of("smoke")
    ev = df[df["record"] == "eval"]
    final = ev[ev["checkpoint"] == s["checkpoints"]]
    worst = max(fs.calls_per_step(e, s["r"], s["meta_batch"], exact=True) for e in fs.ESTIMATORS)
    # a meta-step is taken while calls < budget: every run ends within one meta-step past the budget
    assert np.all(final["calls"] >= budget) and np.all(final["calls"] < budget + worst)
    steps = df[df["record"] == "step"]
    assert np.all(steps.loc[steps["estimator"] == "exact_me", "q"] == 1)
    assert np.all(steps.loc[steps["estimator"].isin(["fom", "reptile"]), "q"] == 0)
    ada = steps[steps["estimator"] == "adaptive_ufom"]
    assert np.all(ada["q"] >= fs.ADAPTIVE["q_min"] - 1e-6) and np.all(ada["q"] <= 1)
    claims = fewshot_claims(df).set_index("source")
    assert claims.loc["Proposition 1", "verdict"] == "holds"


def _compiled(ws):
    """Compilations per program of a workspace (jit's own cache: a retrace would add an entry)."""
    return {key: fn._cache_size() for key, fn in ws.programs.items()}


def test_one_compilation_per_config(smoke):
    """Every segment of every seed (and another lr) reuses one compiled program per (setting, estimator)."""
    s, ws = fs.SCALES["smoke"], fs.WORKSPACE
    (src, m), = s["settings"]
    for name in fs.ESTIMATORS:
        assert ws.programs[("segment", "smoke", src, m, name)]._cache_size() == 1  # s["checkpoints"] segments ran
    before = _compiled(ws)
    assert set(before.values()) == {1}
    run = fs.train_run(ws, "smoke", src, m, "adaptive_ufom", seed=5, lr=0.02)  # new seed, new lr: no retrace
    fs.evaluate(ws, "smoke", src, m, run.thetas[-1], 2 * fs.EVAL_CHUNK, jax.random.PRNGKey(1))
    assert _compiled(ws) == before
    assert len(run.thetas) == s["checkpoints"] + 1 and run.calls[-1] >= fs.budget_of("smoke")


def test_sweep_resumes_without_recomputing(smoke):
    out, frame = smoke
    ws = fs.WORKSPACE
    before = _compiled(ws)
    ws.runs.clear()  # a recomputed cell would have to train (and run) again
    again = run_sweep("fewshot", fs.cell_fewshot, fs.configs("smoke"), out_dir=out, progress=False, x64=True)
    assert len(again) == len(frame) and _compiled(ws) == before and not ws.runs


def test_fresh_workspace_gives_the_same_cell(smoke):
    """The workspace only saves work: a cell computed in a fresh one equals the sweep's (exactly)."""
    _, frame = smoke
    cfg = next(c for c in fs.configs("smoke") if c["kind"] == "train" and c["estimator"] == "fom")
    fresh = fs.cell_fewshot(dict(cfg), fs.Workspace())
    stored = frame[(frame["estimator"] == "fom") & (frame["record"].isin(["eval", "step"]))]
    fresh = fresh[fresh["record"].isin(["eval", "step"])]
    np.testing.assert_array_equal(fresh["accuracy"].to_numpy(), stored["accuracy"].to_numpy())
    np.testing.assert_array_equal(fresh["calls"].to_numpy(), stored["calls"].to_numpy())


def test_monte_carlo_identity_within_z(smoke):
    """Direct xi draws vs V^2 + (1/q - 1) D^2 from the same pairs (Lemma 1): |z| < 4 per (q, theta)."""
    _, df = smoke
    q = df[(df["record"] == "mc") & (df["axis"] == "q")]
    z = (q["ufom_direct"] - q["ufom_m2"]) / q["ufom_diff_se"]
    assert np.all(np.abs(z[np.isfinite(z)]) < Z)
    at1 = q[q["q"] == 1.0]  # q = 1: UFOM is the exact gradient, its second moment is V^2
    np.testing.assert_allclose(at1["ufom_m2"], at1["v2"], rtol=1e-5)


def test_report_section_from_the_smoke_run(smoke, tmp_path):
    _, df = smoke
    rep = Report("few-shot smoke", "")
    add_fewshot_section(rep, df, "smoke", report_settings("smoke")["fewshot"])
    text = " ".join(pdf_text(rep.build(tmp_path / "fewshot.pdf")).split())  # table cells wrap
    for needle in [SECTION_TITLE, TABLE_TITLE, "NOT Omniglot", "Adaptive UFOM shows the best test accuracy",
                   "Bias, second moment and UFOM's variance on the few-shot workload", "92.0"]:
        assert needle in text, needle


def test_scales_configs_and_errors(monkeypatch):
    paper = fs.configs("paper")
    assert {(c["source"], c["m"]) for c in paper} == set(PAPER_TABLE2)  # Table 2's grid
    assert {c["kind"] for c in fs.configs("default")} == {"train", "mc"}
    assert fs.budget_of("default") == 30 * 5 * (10 + 1 + 45 + 10)
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        fs.configs("huge")
    with pytest.raises(ValueError, match="unknown estimator 'maml'"):
        fs.make_estimator("maml")
    with pytest.raises(ValueError, match="kind 'x'"):
        fs.cell_fewshot({"kind": "x", "scale": "smoke"})
    monkeypatch.delenv("UFOM_OMNIGLOT_DIR", raising=False)
    with pytest.raises(ValueError, match="UFOM_OMNIGLOT_DIR"):
        fs.load_source("omniglot")
    with pytest.raises(ValueError, match="unknown source 'mnist'"):
        fs.load_source("mnist")
