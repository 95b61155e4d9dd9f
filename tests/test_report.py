"""report/: the PDF builder and the theory section, checked through the PDF's own text (report.pdf_text)."""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
from reportlab.platypus import Flowable  # noqa: E402

from ufom_bench import theory  # noqa: E402
from ufom_bench.report import Report, add_theory_section, pdf_page_count, pdf_text, q_star_table, sanitize  # noqa: E402
from ufom_bench.report.theory_section import Q_TABLE_TITLE, SECTION_TITLE  # noqa: E402

CLAIMS = [
    {"claim": "UFOM is unbiased", "source": "Lemma 1", "measured": "|z| = 0.8 (n = 4000)",
     "criterion": "|z| < 4", "verdict": "holds"},
    {"claim": "E||G_UFO||^2 <= D^2 (1/q - 1) + V^2", "source": "Lemma 1", "measured": "1.31 ± 0.05",
     "criterion": "<= bound + 4 s.e.", "verdict": "fails", "note": "bound from estimated D^2, V^2"},
    {"claim": "q* < 1 iff (20)", "source": "Section 4.4", "measured": "6/8 configs",
     "criterion": "all configs", "verdict": "inconclusive"},
]


def _seaborn_figure(title: str):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"q": np.repeat([0.1, 0.3, 1.0], 10), "estimator": np.tile(["ufom", "fom"], 15)})
    df["variance"] = 1 / df.q * (1 + 0.1 * rng.standard_normal(len(df)))
    fig, ax = plt.subplots(figsize=(5, 3))
    sns.lineplot(df, x="q", y="variance", hue="estimator", ax=ax)
    ax.set(xlabel="q", ylabel="variance")
    ax.set_title(title)
    return fig


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    rep = Report("ufom-bench test report", "UFOM against its theory", author="tests")
    rep.section("Estimators")
    rep.paragraph("UFOM is unbiased for every q; its variance grows like 1/q (Lemma 1). θ, ξ and D² < V².")
    rep.figure(_seaborn_figure("Variance against q"), caption="Variance follows 1/q.")
    grid = sns.relplot(pd.DataFrame({"x": [1, 2, 3], "y": [3, 1, 2], "k": ["a", "b", "a"]}),
                       x="x", y="y", col="k", height=2)
    rep.figure(grid, caption="A FacetGrid.", title="Per-seed values by group")
    rep.table(pd.DataFrame({"estimator": ["fom", "ufom"], "variance": [1.23456, np.nan], "exact": [False, True]}),
              caption="Summary.", title="Variance summary")
    rep.claims_table(CLAIMS)
    add_theory_section(rep)
    rep.section("Provenance")
    rep.provenance({"git": {"commit": "0123456789abcdef" * 2 + "01234567"}, "versions": {"jax": "0.4.30"}})
    path = rep.build(tmp_path_factory.mktemp("rep") / "sub" / "report.pdf")
    return rep, path


def test_report_builds_with_expected_text(full_report):
    rep, path = full_report
    with open(path, "rb") as f:
        assert f.read(5) == b"%PDF-"
    text = pdf_text(path)
    for s in ["ufom-bench test report", "UFOM against its theory", "Variance against q",
              "Per-seed values by group", "Variance summary", "Claims and verdicts", "holds", "fails",
              "inconclusive", "1 holds, 1 fails, 1 inconclusive", SECTION_TITLE, "prop1_grad_calls",
              "iterations_to_delta", Q_TABLE_TITLE, "Provenance", "0123456789abcdef", "θ, ξ and D² < V²"]:
        assert s in text, s
    assert pdf_page_count(path) >= 2
    assert f"Page 1 of {pdf_page_count(path)}" in text


def test_theory_formulas_all_typeset(full_report):
    rep, _ = full_report
    assert rep.formula_fallbacks == []  # every theory.latex() / CHECKS formula goes through mathtext


def test_theory_section_reports_mismatches(full_report):
    _, path = full_report
    text = pdf_text(path)
    assert "Where the derivation differs from the paper" in text
    for name, chk in theory.CHECKS.items():
        assert name in text, name
    # the mismatch's note, in the checks table (wrapped lines are joined by newlines in pdf_text)
    assert "NO" in text.split()


def test_q_star_table_against_theory():
    df = q_star_table(r=10, ratios=(0.01, 0.5))
    cd, cr = theory.costs(10)
    assert df.iloc[0, 1] == "yes" and df.iloc[1, 1] == "no"  # (20) at D^2/V^2 = 0.01 and 0.5, r = 10
    assert float(df.iloc[0, 2]) == pytest.approx(float(theory.optimal_q(0.01, 1.0, cd, cr)), rel=1e-2)
    assert df.iloc[1, 2] == "1"


def test_failed_build_leaves_target_untouched(tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"old report")

    class Boom(Flowable):  # raises while the document is being laid out and drawn
        def wrap(self, aw, ah):
            return aw, 10

        def draw(self):
            raise RuntimeError("boom mid-build")

    rep = Report("atomic")
    rep.section("Before")
    rep.paragraph("Text that is laid out before the failure. " * 200)
    rep.add(Boom())
    with pytest.raises(RuntimeError, match="boom mid-build"):
        rep.build(target)
    assert target.read_bytes() == b"old report"
    assert sorted(os.listdir(tmp_path)) == ["report.pdf"]  # no temporary file left behind


def test_figure_that_fails_to_save_does_not_touch_target(tmp_path):
    target = tmp_path / "report.pdf"
    fig = _seaborn_figure("Broken")

    def broken_savefig(*args, **kwargs):
        raise OSError("disk full while saving the figure")

    fig.savefig = broken_savefig
    rep = Report("atomic")
    with pytest.raises(OSError, match="disk full"):
        rep.figure(fig)  # figures are rendered when added: the error points at the call that added it
        rep.build(target)
    assert not target.exists() and os.listdir(tmp_path) == []
    rep.paragraph("The report is still usable after the failed figure.")
    rep.build(target)
    assert "still usable" in pdf_text(target)


def test_formula_sanitize_and_fallback(tmp_path):
    rep = Report("formulas")
    assert rep.formula(r"\|x\|^2 \le y \iff \tfrac{1}{2} \ge \lVert z \rVert", "(1)")
    assert not rep.formula(r"\begin{aligned} a &= b \end{aligned}", "aligned")
    assert [fb.label for fb in rep.formula_fallbacks] == ["aligned"]
    path = rep.build(tmp_path / "f.pdf")
    text = pdf_text(path)
    assert r"\begin{aligned}" in text and "(1)" in text
    assert sanitize(r"$\frac{a}{b^{\frac{1}{2}}} \le \left(x\right)$") == r"\dfrac{a}{b^{\frac{1}{2}}} \leq \left(x\right)"


def test_claims_table_validates_rows():
    rep = Report("claims")
    with pytest.raises(ValueError, match="verdict"):
        rep.claims_table([{"claim": "x", "verdict": "maybe"}])
    with pytest.raises(ValueError, match="unknown keys"):
        rep.claims_table([{"claim": "x", "verdict": "holds", "verdcit": "holds"}])


def test_text_escapes_and_invariant_builds(tmp_path):
    def build(name, compress):
        rep = Report("escapes (a) \\ b", date="")
        rep.section("Markup-looking text")
        rep.paragraph("if D^2 < V^2 & q > 0 then (f(x)) \\ done; ε ≤ 1")
        return rep.build(tmp_path / name, invariant=True, compress=compress)

    a, b, c = build("a.pdf", True), build("b.pdf", True), build("c.pdf", False)
    assert a.read_bytes() == b.read_bytes()  # invariant builds are reproducible
    for p in (a, c):
        text = pdf_text(p)
        assert "escapes (a) \\ b" in text
        assert "if D^2 < V^2 & q > 0 then (f(x)) \\ done; ε ≤ 1" in text


def test_long_table_starts_under_its_heading(tmp_path):
    """A table longer than a page starts on the page of its section heading and repeats its header."""
    rep = Report("layout")
    rep.section("Short")
    rep.paragraph("Some text.")
    rep.section("Long table")
    rep.table(pd.DataFrame({"seed": range(120), "value": np.linspace(0, 1, 120)}), title="Long", max_rows=None)
    text = pdf_text(rep.build(tmp_path / "long.pdf"))
    page1 = text.split("Page 2 of")[0]
    assert "2 Long table" in page1 and "Table 1. Long" in page1 and "\n0\n" in page1
    assert text.count("seed") >= 2  # header repeated on the next page


def test_divergence_summary_counts_each_experiment_by_its_own_rule():
    from ufom_bench.report.build import divergence_summary
    from ufom_bench.estimators import DIVERGENCE_GROWTH

    results = {
        # fig1bc: per-run totals on the "final" rows; curve rows carry no count
        "fig1bc": pd.DataFrame({"record": ["curve", "final", "final", "final"], "diverged": [None, 0, 2, 3]}),
        # hypercleaning: cumulative counts per step: the last (max) of each cell
        "hypercleaning": pd.DataFrame({"cell_id": ["a", "a", "a", "b", "b"], "diverged": [0, 1, 4, 0, 0]}),
        # fewshot: a run-level count repeated on every row of a cell, and Monte Carlo exclusions
        "fewshot": pd.DataFrame({"cell_id": ["a", "a", "m"], "diverged": [1, 1, None], "n_diverged": [None, None, 7]}),
    }
    text = divergence_summary(results, DIVERGENCE_GROWTH)
    assert "fig1bc: 5 refused outer steps" in text
    assert "hypercleaning: 4 refused outer steps" in text
    assert "fewshot: 1 refused meta-steps" in text and "fewshot: 7 excluded Monte Carlo tasks" in text
    assert "1000-fold" in text


# --------------------------------------------------------------- the whole report, on hand-made results tables


def _results() -> dict:
    """Small tables shaped like the experiments' (the columns build_report reads), each with provenance columns;
    fig1d ran with x64 off, the others on."""
    from ufom_bench.analysis import claim_row

    prov = lambda x64: {"prov_jax_x64": str(x64), "prov_cpu": "Test CPU (2 logical cores)", "prov_host": "testhost",
                        "prov_git_commit": "abc1234"}
    claims = pd.DataFrame([claim_row("UFOM is unbiased (q = 0.1)", "eqs. 12-13", "max |z| = 0.8", "max |z| < 4", True),
                           claim_row("Proposition 1 calls, r = 1", "Proposition 1", "equal", "exact per branch; |z| < 4",
                                     True)]).assign(**prov(True))
    alphas = np.geomspace(1e-3, 5e-2, 3)
    fig1d = pd.DataFrame({"alpha": alphas, "D2": alphas**2, "V2": 1 + alphas, "D_bound2": 10 * alphas**2 + 1,
                          "diverged": 0, **prov(False)})
    rows = []
    for q, m in ((0.0, 0.2), (0.112, 0.1), (1.0, 0.3)):
        for calls in (100.0, 200.0, 300.0):
            rows.append({"q": q, "calls": calls, "grad_q10": 0.5 * m, "grad_q50": m, "grad_q90": 2 * m, "grad_mean": m,
                         "grad_sq_mean": m, "grad_sq_sd": 0.1, "runs_started": 40, "diverged": 0, "cell_id": str(q)})
    fig1f = pd.DataFrame(rows).assign(**prov(True))
    ext_r = pd.DataFrame({"r": [2, 10], "D2": [0.01, 0.1], "V2": [1.0, 1.1], "q_theory": [0.1, 0.3], "diverged": 0,
                          **prov(True)})
    return {"claims": claims, "fig1d": fig1d, "fig1f": fig1f, "ext_r": ext_r}


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    """build_report on `_results`, with the Report it built (captured from its build call)."""
    from ufom_bench.report import build

    captured = []
    original = Report.build

    def capture(self, path, **kw):
        captured.append(self)
        return original(self, path, **kw)

    Report.build = capture
    try:
        path = tmp_path_factory.mktemp("full") / "report.pdf"
        settings = {"D": 0.06, "divergence_growth": 1000.0, "provenance": {"python": "3.x", "cpu": "ignored"}}
        build.build_report(_results(), "smoke", str(path), settings)
    finally:
        Report.build = original
    return captured[0], path


def test_first_page_summary_names_every_section(built_report):
    from pypdf import PdfReader

    rep, path = built_report
    page1 = " ".join(pdf_text(path).split("Page 2 of")[0].split("Contents")[0].split())
    outline = [o.title for o in PdfReader(path).outline if not isinstance(o, list)]  # top level: the sections
    assert len(outline) == len(rep.sections) >= 5
    for (num, title, _), heading in zip(rep.sections, outline):
        assert heading == f"{num} {title}"
        assert f"{num} {title}" in page1, title  # named on the first page, whatever sections were added


def test_one_numbering_scheme_and_unique_claim_ids(built_report):
    import re

    rep, path = built_report
    text = " ".join(pdf_text(path).split())
    # our own figures and tables carry no numbers: "Figure n" / "Table n" is always the paper's
    assert not re.search(r"\b(Figure|Table) \d+\. ", text)
    assert "Paper's Figure 1d" in text and "Paper's Figure 1f" in text
    from ufom_bench.report.build import all_claims

    claims = all_claims(_results(), 0.06)
    assert list(claims["id"]) == [f"C{i}" for i in range(1, len(claims) + 1)] and claims["claim"].is_unique
    with pytest.raises(ValueError, match="ids repeat"):
        Report("x").claims_table([{"id": "C1", "claim": "a", "verdict": "holds"},
                                  {"id": "C1", "claim": "b", "verdict": "holds"}])


def test_claims_header_names_the_tests_and_defines_inconclusive(built_report):
    _, path = built_report
    text = " ".join(pdf_text(path).split())
    assert "z-tests: C1-C2" in text  # the claims experiment's rows
    assert "two-sample t-tests: C4" in text  # Figure 1f (C3 is D^2 <= D_bound^2, a check without a statistic)
    assert "checks without a test statistic: C3" in text
    assert "'inconclusive': the data do not decide at the stated level" in text
    assert "q* converges fastest at equal function calls" in text and "Welch" in text


def test_report_text_is_clean(built_report):
    """No file outside the repository, V^2 a second moment, no paragraph twice, the precision said once in words,
    CPU and host named."""
    rep, path = built_report
    text = pdf_text(path)
    flat = " ".join(text.split())
    for outside in ("shared/", "/work", "NOTES.md", "DESIGN.md", "issue 15"):
        assert outside not in flat, outside
    assert "second moment" in flat and "exact variance" not in flat and "than the variance" not in flat
    repeated = {t for t in rep.texts if rep.texts.count(t) > 1}
    assert not repeated, repeated
    assert flat.count("Precision, from the provenance") == 1 and "jax_x64" not in flat
    sentence = flat.split("Precision, from the provenance")[1].split(". ")[0]
    assert flat.count("x64") == sentence.count("x64") == 2  # said once, in words: the on and the off list
    assert ("computed with JAX's x64 flag on" in flat and "claims, fig1f, ext_r" in flat
            and "with the x64 flag off, in float32: fig1d" in flat)
    assert "CPU Test CPU (2 logical cores)" in flat and "host testhost" in flat


def test_theory_section_counts_derived_only_checks_apart(full_report):
    _, path = full_report
    text = " ".join(pdf_text(path).split())
    only = theory.derived_only()
    paper = [n for n in theory.CHECKS if n not in only]
    other = [n for n in theory.CHECKS if n in only]
    assert other and paper
    assert f"{len(paper)} comparisons with the paper's printed forms" in text
    assert f"{len(other)} checks of derivations the UFOM paper does not print" in text
    assert "Derived only (no printed form in the UFOM paper)" in text
    for name in ("implicit_grad_calls", "ckpt_closed_form", "pzobo_calls"):  # no 'printed form' of the paper
        assert name in only


def _figure_1_tables():
    r = _results()
    x = np.linspace(-10, 30, 50)
    a = pd.DataFrame({"x": x, "f1": (x - 1) ** 2, "f2": (x - 5) ** 2, "M_r": 0.1 * (x - 3) ** 2 + 1})
    bc = pd.DataFrame({"record": ["final"] * 4 + ["curve"] * 4, "estimator": ["fom", "fom", "ufom", "ufom"] * 2,
                       "theta": [5.7, 5.8, 2.8, 2.9] * 2, "step": [1, 1, 1, 1, 1, 2, 1, 2],
                       "grad_q10": 0.1, "grad_q50": 0.3, "grad_q90": 0.5})
    return r, a, bc


def test_figures_name_their_axes_and_legends_show_every_mark():
    from types import SimpleNamespace

    from ufom_bench.report import figures

    figures.style()
    r, a, bc = _figure_1_tables()
    pts = SimpleNamespace(fom_fixed_point=5.76, stationary_point=2.84)
    e = pd.DataFrame({"alpha": [0.01, 0.01, 0.02, 0.02], "q": [0.1, 0.5] * 2, "calls_to_target": [10.0, 20.0, 30.0, 5.0],
                      "q_theory": [0.2, 0.2, 0.4, 0.4]})
    figs = [figures.fig_a(a), figures.fig_b(a, bc, pts), figures.fig_c(bc, 0.06), figures.fig_d(r["fig1d"]),
            figures.fig_e(e), figures.fig_f(r["fig1f"]), figures.fig_r(r["ext_r"])]
    for fig in figs:
        for ax in fig.get_axes():
            assert ax.get_ylabel().strip() not in ("", "value"), ax.get_title()
            assert ax.get_xlabel().strip() not in ("", "value"), ax.get_title()
        plt.close(fig)
    fig = figures.fig_f(r["fig1f"])  # every band is in the legend
    labels = fig.get_axes()[0].get_legend_handles_labels()[1]
    assert sum("10-90% of runs" in s for s in labels) == 3
    plt.close(fig)
