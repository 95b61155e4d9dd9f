"""Every experiment at smoke scale through the sweep, the columns the report reads, and the PDF itself."""

import numpy as np
import pytest

from ufom_bench import simulations
from ufom_bench.report.document import pdf_text
from ufom_bench.cli import main

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

NEEDED = {
    "fig1a": {"x", "f1", "f2", "M_r"},
    "fig1bc": {"estimator", "record", "step", "grad_q10", "grad_q50", "grad_q90", "theta", "grad_final", "diverged"},
    "fig1d": {"alpha", "D2", "V2", "D_bound2", "q_theory", "diverged"},
    "fig1e": {"alpha", "q", "calls_to_target", "q_theory", "target", "diverged"},
    "fig1f": {"q", "calls", "grad_q10", "grad_q50", "grad_q90", "grad_sq_mean", "grad_sq_sd", "runs_started", "diverged"},
    "ext_r": {"r", "D2", "V2", "q_theory"},
    "claims": {"claim", "source", "measured", "criterion", "verdict"},
    "hypercleaning": {"estimator", "seed", "record", "calls", "step", "q", "diverged", "D2", "V2", "q_star",
                      "test_accuracy", "test_loss", "train_clean_accuracy", "f1", "val_loss"},
    "fewshot": {"source", "m", "estimator", "seed", "record", "checkpoint", "calls", "accuracy", "accuracy_se", "q",
                "axis", "alpha", "r", "d2", "v2", "ufom_var"},
    "checkpointing": {"kind", "problem", "r", "m", "estimator", "label", "grad_calls", "hvp_calls",
                      "formula_grad_calls", "formula_hvp_calls", "temp_bytes", "seconds", "q_star", "ufom_calls",
                      "ufom_seconds", "record", "calls", "grad_q10", "grad_q50", "grad_q90", "grad_final", "diverged"},
    "frontier": {"problem", "point", "label", "memory_class", "bias2", "bias2_se", "var_task", "var_est", "mse",
                 "mse_se", "calls", "seconds", "temp_bytes", "not_applicable"},
    "equal_budget": {"problem", "estimator", "label", "seed", "budget", "calls", "seconds", "merit", "merit_name",
                     "higher_is_better", "log_merit", "diverged", "total_budget", "c_max", "outer_step", "r",
                     "not_applicable"},
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    pdf = out / "report.pdf"
    assert main(["report", "--scale", "smoke", "--out", str(out), "--pdf", str(pdf)]) == 0
    return out, pdf


@pytest.mark.parametrize("name", list(simulations.EXPERIMENTS))
def test_experiment_has_the_report_columns(smoke, name):
    out, _ = smoke
    table = simulations.run(name, "smoke", str(out), progress=False)  # resumes: nothing recomputed
    assert NEEDED[name] <= set(table.columns)
    assert len(table) > 0 and (table["scale"] == "smoke").all()
    assert any(c.startswith("prov_") for c in table.columns)


def test_report_pdf_holds_the_claims_and_every_figure(smoke):
    _, pdf = smoke
    text = pdf_text(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    for needle in ["Claims and verdicts", "Proposition 1", "Theorem 2", "Theorem 1", "Lemma 1",
                   "Theory (derived with sympy)"]:
        assert needle in text, needle
    for panel in ["1a", "1b", "1c", "1d", "1e", "1f"]:
        assert f"Paper's Figure {panel}:" in text, panel
    assert "D^2, V^2 and q* against r" in text
    # section 1 is the frontier's, before the claims table; PZOBO's claim rows are in that table (the last
    # occurrence of a section title is its heading: the first page's summary lists them too)
    assert text.rindex("1 Which estimator to trust") < text.index("Which estimator on counterexample") < text.rindex(
        "2 Claims and verdicts") < text.index("MSE es / pzobo =")
    assert "Equal-budget training" in text and "at equal function calls: counterexample" in text


def test_exact_claims_hold_even_at_smoke_scale(smoke):
    """Proposition 1 and D^2 <= D_bound^2 are exact statements: they must hold at any scale."""
    out, _ = smoke
    claims = simulations.run("claims", "smoke", str(out), progress=False)
    prop1 = claims[claims["source"] == "Proposition 1"]
    assert len(prop1) == 4 and (prop1["verdict"] == "holds").all()
    d = simulations.run("fig1d", "smoke", str(out), progress=False)
    assert np.all(d["D2"] <= d["D_bound2"])


def test_unknown_experiment_and_scale_are_named(capsys):
    assert main(["run", "fig9z", "--scale", "smoke"]) == 2
    assert "fig9z" in capsys.readouterr().err
    assert main(["report", "--scale", "huge"]) == 2
    assert "huge" in capsys.readouterr().err


def test_report_pdf_polish(smoke):
    """Issue 17 item 7 on the smoke PDF: the first page names every section, each figure of the paper is claimed
    once, claims are C1.. with the kind of test named, no file outside the repository is cited, V^2 is a second
    moment, precision is stated once in words, and the provenance names CPU and host."""
    import re

    from pypdf import PdfReader

    _, pdf = smoke
    text = " ".join(pdf_text(pdf).split())
    page1 = text.split("Contents")[0]
    for entry in PdfReader(pdf).outline:
        if not isinstance(entry, list):  # top level: the sections
            assert entry.title in page1, entry.title
    for panel in ["1a", "1b", "1c", "1d", "1e", "1f"]:
        assert text.count(f"Paper's Figure {panel}:") == 1, panel
    assert not re.search(r"\b(Figure|Table) \d+\. ", text)
    assert "z-tests: C1" in text and "paired t-tests: C" in text and "'inconclusive': the data do not decide" in text
    for outside in ("shared/", "/work", "NOTES.md", "DESIGN.md"):
        assert outside not in text, outside
    assert "second moment" in text and "exact variance" not in text
    assert text.count("Precision, from the provenance") == 1 and "jax_x64" not in text
    assert " CPU " in text and " host " in text
