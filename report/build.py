"""The PDF report: a first-page summary naming every section, which estimator to trust (the frontier and
its recommendation, first), the claims table (C1, C2, ...), the theory section, the paper's Figure 1 (a)-(f),
the r extension, equal-budget training of every estimator, the hypercleaning (Table 1 analog) and few-shot
(Table 2 analog) sections, the checkpointed exact branch (beyond the paper), notes, and provenance with the
precision of each experiment.

One numbering scheme: "Figure 1b", "Table 1" and "Section 5.2" always mean the paper's; claims are C1, C2, ...;
our own figures and tables are named by their titles, not numbered; our sections are numbered 1, 2, ...

The report reads tables: the experiments' results, the statistics of `ufom_bench.analysis`, and the few
settings the tables do not carry (``settings``, from `simulations.report_settings`, passed by the command
line). It imports neither the experiments nor JAX.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from ufom_bench.report import figures
from ufom_bench.report.checkpointing import add_checkpointing_section, checkpointing_claims
from ufom_bench.report.document import Report, pdf_page_count
from ufom_bench.report.equal_budget import add_equal_budget_section
from ufom_bench.report.fewshot import add_fewshot_section, fewshot_claims
from ufom_bench.report.frontier import add_frontier_section
from ufom_bench.report.hypercleaning import add_hypercleaning_section, hypercleaning_claims
from ufom_bench.report.theory_section import add_theory_section
from ufom_bench.analysis import claim_test, figure_claims

# Provenance keys (`ufom_bench.provenance`) as the report names them; the x64 flag is stated in words instead.
PROVENANCE_LABELS = {
    "ufom_bench": "ufom-bench version", "jax": "JAX version", "jaxlib": "jaxlib version", "numpy": "NumPy version",
    "pandas": "pandas version", "sympy": "SymPy version", "python": "Python version", "platform": "operating system",
    "cpu": "CPU", "host": "host", "jax_backend": "JAX backend", "jax_devices": "JAX devices",
    "git_commit": "git commit",
}
# `analysis.claim_test`'s kinds, and how the claims header names each group.
TEST_KINDS = {"z-test": "z-tests", "paired t-test": "paired t-tests", "two-sample t-test": "two-sample t-tests",
              "check without a test statistic": "checks without a test statistic"}


def provenance_of(results: dict[str, pd.DataFrame], default: Mapping[str, str] | None = None) -> dict[str, str]:
    """The provenance columns of the results (distinct values joined); keys no table records (none at all, or
    ones added after the results were computed, e.g. cpu and host) are taken from ``default``."""
    info = {}
    for table in results.values():
        for col in (c for c in table.columns if c.startswith("prov_")):
            info.setdefault(col[5:], set()).update(map(str, table[col].unique()))
    out = {k: ", ".join(sorted(v)) for k, v in info.items()}
    return {**{k: str(v) for k, v in (default or {}).items() if k not in out}, **out}


def precision_sentence(results: dict[str, pd.DataFrame]) -> str:
    """The one statement of precision: which experiments ran with JAX's x64 flag on (float64 unless an array's
    dtype is set explicitly) and which with it off (float32), read from each table's ``prov_jax_x64`` column."""
    on, off, mixed, unknown = [], [], [], []
    for name, table in results.items():
        flags = set(map(str, table["prov_jax_x64"].unique())) if "prov_jax_x64" in table else set()
        (on if flags == {"True"} else off if flags == {"False"} else mixed if flags else unknown).append(name)
    parts = []
    if on:
        parts.append(f"with JAX's x64 flag on, so in float64 wherever an array's type is not set explicitly "
                     f"(the hypercleaning and few-shot networks set float32): {', '.join(on)}")
    if off:
        parts.append(f"with the x64 flag off, in float32: {', '.join(off)}")
    if mixed:
        parts.append(f"partly with x64 on and partly off (cells differ): {', '.join(mixed)}")
    if unknown:
        parts.append(f"precision not recorded: {', '.join(unknown)}")
    return ("Precision, from the provenance recorded with every row: computed " + "; computed ".join(parts) + "."
            if parts else "Precision: no experiment's table records it.")


def _id_ranges(ids: list[str]) -> str:
    """'C1-C3, C7' from ['C1', 'C2', 'C3', 'C7']."""
    nums = sorted(int(i[1:]) for i in ids)
    spans, start = [], None
    for k, n in enumerate(nums):
        start = n if start is None else start
        if k + 1 == len(nums) or nums[k + 1] != n + 1:
            spans.append(f"C{start}" if start == n else f"C{start}-C{n}")
            start = None
    return ", ".join(spans)


def claims_header(claims: pd.DataFrame) -> str:
    """The claims table's caption: which claims are z-tests, paired t-tests, two-sample t-tests or checks without
    a test statistic (by id, from `analysis.claim_test` of each criterion), and what each verdict means."""
    kinds = [f"{plural}: {_id_ranges(list(claims.loc[claims['test'] == kind, 'id']))}"
             for kind, plural in TEST_KINDS.items() if (claims["test"] == kind).any()]
    return ("Each row states its criterion. By kind of test, " + "; ".join(kinds) + ". z-tests compare a mean "
            "with its standard error over independent draws, runs or test tasks (level |z| = 4 for the "
            "suite's identities and separations unless the row states another); paired t-tests compare "
            "estimators over the same seeds; the two-sample t-test compares independent groups of runs. "
            "'holds': the criterion is met at this scale. 'fails': it is not met, or (for rows with three "
            "outcomes) the effect is significant in the opposite direction. 'inconclusive': the data do not "
            "decide at the stated level: the difference has the claimed sign but is not significant, nothing "
            "significant points the other way, or there are too few seeds or runs for the test (one seed "
            "gives no t-test). Sources name the paper's equations, sections, tables and figures.")


# Per experiment: what its "diverged" column counts, and how a table's rows reduce to one number.
_DIVERGED = {
    "fig1bc": ("refused outer steps", lambda t: t.loc[t["record"] == "final", "diverged"].sum()),
    "fig1d": ("excluded Monte Carlo tasks", lambda t: t["diverged"].sum()),
    "fig1e": ("refused outer steps", lambda t: t["diverged"].sum()),
    "fig1f": ("refused outer steps", lambda t: t.groupby("cell_id")["diverged"].first().sum()),
    "ext_r": ("excluded Monte Carlo tasks", lambda t: t["diverged"].sum()),
    "hypercleaning": ("refused outer steps", lambda t: t.groupby("cell_id")["diverged"].max().sum()),
    "fewshot": ("refused meta-steps", lambda t: t.groupby("cell_id")["diverged"].max().sum()),
    "equal_budget": ("refused outer steps", lambda t: t.groupby(["cell_id", "seed"])["diverged"].max().sum()),
    "checkpointing": ("refused outer steps", lambda t: t[t["record"] == "final"].groupby(["cell_id", "estimator"])
                      ["diverged"].first().sum() if "record" in t else 0),
}


def divergence_summary(results: dict[str, pd.DataFrame], growth: float) -> str:
    """One sentence: per experiment, the outer steps refused and Monte Carlo samples excluded because an
    inner loop diverged (`Info.diverged`: non-finite, or the inner gradient norm grown more than ``growth``-fold,
    `ufom_bench.estimators.DIVERGENCE_GROWTH`); nothing diverged is ever applied or averaged."""
    parts = []
    for name, (what, count) in _DIVERGED.items():
        table = results.get(name)
        if table is not None and "diverged" in table.columns:
            parts.append(f"{name}: {int(count(table)):,} {what}")
    fewshot = results.get("fewshot")
    if fewshot is not None and "n_diverged" in fewshot.columns:
        parts.append(f"fewshot: {int(fewshot['n_diverged'].sum()):,} excluded Monte Carlo tasks")
    return (f"Diverged inner loops (a non-finite value, or the inner gradient norm grown more than "
            f"{growth:g}-fold along the path) are refused by the outer loop and excluded from Monte "
            "Carlo averages, never applied or averaged. Counts in this report: " + "; ".join(parts) + ".")


def all_claims(results: dict[str, pd.DataFrame], D: float) -> pd.DataFrame:
    """Every claim row: the ``claims`` experiment's, those read from Figure 1's tables (counterexample gap
    ``D``), and the hypercleaning and few-shot ones; each once (a repeated claim text is dropped), numbered
    ``id`` C1, C2, ... in this order, with ``test`` the kind of test its criterion states (`analysis.claim_test`)
    and ``part`` the experiment it comes from."""
    parts = [results.get("claims", pd.DataFrame()).assign(part="claims"), figure_claims(results, D).assign(part="figure1")]
    if "hypercleaning" in results:
        parts.append(hypercleaning_claims(results["hypercleaning"]).assign(part="hypercleaning"))
    if "fewshot" in results:
        parts.append(fewshot_claims(results["fewshot"]).assign(part="fewshot"))
    if "checkpointing" in results:
        parts.append(checkpointing_claims(results["checkpointing"]).assign(part="checkpointing"))
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)
    out = out.drop_duplicates(subset=["claim", "source", "measured"], ignore_index=True)
    out["id"] = [f"C{i}" for i in range(1, len(out) + 1)]
    out["test"] = out["criterion"].map(claim_test)
    return out


def report_summary(rep: Report, scale: str) -> str:
    """The first page's paragraph: what the report is, the numbering scheme, and every section of ``rep``
    by number and title (with its summary), read from `Report.sections` at build time."""
    listed = "; ".join(f"{num} {title}" + (f" ({what})" if what else "") for num, title, what in rep.sections)
    return (f"This report measures which hypergradient estimator to trust on the suite's problems, and checks "
            f"the claims of the UFOM paper (Likhosherstov et al., ICML 2021) and of PZOBO (Sow et al., 2022) "
            f"against measurements, at the {scale} scale, with their uncertainty and a stated test for each. "
            f"Its {len(rep.sections)} sections: {listed}. "
            "Numbering: 'Figure 1b', 'Table 1', 'Section 5.2' and equation numbers always refer to the paper; "
            "claims are numbered C1, C2, ...; this report's own figures and tables are named by their titles. "
            "Function calls count gradient evaluations and Hessian-vector products, one unit each (the "
            "paper's cost constants C_1 = C_2 = 1)."
            + (" At smoke scale the runs are far too short for the convergence claims: read those verdicts as "
               "a check that the pipeline runs, not as evidence." if scale == "smoke" else ""))


def build_report(results: dict[str, pd.DataFrame], scale: str, path: str, settings: Mapping) -> int:
    """Write the report for ``results`` (experiment name -> tidy table) to ``path``; returns the page count.

    ``settings``: `simulations.report_settings(scale)` (Figure 1's D and the counterexample's special points,
    the divergence threshold, the hypercleaning and few-shot settings, this process's provenance).
    """
    figures.style()
    D = settings["D"]
    claims = all_claims(results, D)
    ids = dict(zip(claims["claim"], claims["id"]))
    rep = Report(
        "ufom-bench report",
        f"Hypergradient estimators for bi-level optimization: which to trust, and the UFOM and PZOBO papers' "
        f"claims checked against measurements. Scale: {scale}.",
        number_floats=False,
    )
    rep.summary(lambda r: report_summary(r, scale))
    if results.get("frontier") is not None:  # section 1: the answer a reader comes for, before the audit
        add_frontier_section(rep, results["frontier"], scale=scale)
    rep.section("Claims and verdicts", summary=f"every claim tested, {claims['id'].iloc[0]}-{claims['id'].iloc[-1]}, "
                "with its measured value, uncertainty, test and verdict" if len(claims) else "")
    rep.claims_table(claims[["id", "claim", "source", "measured", "criterion", "verdict"]].to_dict("records"),
                     caption=claims_header(claims), title="Every claim, its test and its verdict")
    rep.paragraph(divergence_summary(results, settings["divergence_growth"]))

    add_theory_section(rep)

    rep.section("The synthetic problem (the paper's Section 5.1, Figure 1)",
                summary="Figure 1a-f reproduced, and D^2, V^2, q* against r")
    a, bc = results.get("fig1a"), results.get("fig1bc")
    if a is not None:
        rep.figure(figures.fig_a(a), title="Paper's Figure 1a: the two task losses", caption=(
            "Two equally likely convex piecewise-polynomial tasks (Theorem 2's construction, D = 0.06, r = 10, "
            "alpha = 0.1)."))
    if a is not None and bc is not None:
        pts = settings["counterexample_points"]
        final = bc[bc["record"] == "final"]
        ends = {e: final.loc[final["estimator"] == e, "theta"].median() for e in ("fom", "ufom")}
        rep.figure(figures.fig_b(a, bc, pts), title="Paper's Figure 1b: M_r and where FOM and UFOM end", caption=(
            f"Left: the ABLO objective M_r(theta) over the whole range; right: near its minimum, with the end "
            f"points of outer SGD from theta_0 ~ U[-10, 30]. FOM's runs gather at its fixed point "
            f"theta_FO = {pts.fom_fixed_point:.3f} (median end {ends['fom']:.3f}), where |dM/dtheta| = "
            f"{abs(pts.meta_grad_at_fom):.4f} = sqrt(2D); UFOM's gather at the stationary point "
            f"theta* = {pts.stationary_point:.3f} (median end {ends['ufom']:.3f})."))
        rep.figure(figures.fig_c(bc, D), title="Paper's Figure 1c: convergence of |dM/dtheta|", caption=(
            "What to see: FOM's median flattens at sqrt(2D) (Theorem 2) while UFOM's keeps falling (Theorem 1). "
            "Schedule gamma_k = 10/(k+1)."))
    d = results.get("fig1d")
    if d is not None:
        rep.figure(figures.fig_d(d), title="Paper's Figure 1d: D^2 and V^2 against alpha", caption=(
            "Max over a theta grid in [-50, 50] of the exact expectations over the two tasks: FOM's bias D^2 "
            "(eq. 14) and the exact gradient's second moment V^2 = sup E||G||^2 (eq. 16, which the paper calls "
            "a variance; it is not centred); a = (0.5, 1.5), b = (0, 10), A = 400, r = 10. D_bound^2 (eq. 15) "
            "with M1 = 1, L1 = a(A + 1/2), L2 = a bounds D^2 from above, loosely (max ratio "
            f"{(d['D2'] / d['D_bound2']).max():.2g}). The bias grows with alpha much faster than the second "
            "moment."))
    e = results.get("fig1e")
    if e is not None:
        c_e = ids.get("theory q* agrees with the empirical best q")
        rep.figure(figures.fig_e(e), title="Paper's Figure 1e: theory q* vs the empirical best q", caption=(
            "Theory: q* of (21) from the D^2, V^2 of Figure 1d (eps = 0). Experiment: per alpha, the q of the "
            "grid whose mean (dM/dtheta)^2 over runs reaches the common target (the level the smallest q "
            "reaches in 100 steps) with the fewest mean function calls. The grid cannot go below its smallest q. "
            f"Claim {c_e or 'in the claims table'} compares the two where q* lies inside the grid."))
    f = results.get("fig1f")
    if f is not None:
        q_star = sorted(f["q"].unique())[1] if f["q"].nunique() == 3 else float("nan")
        c_f = ids.get("q* converges fastest at equal function calls")
        rep.figure(figures.fig_f(f), title="Paper's Figure 1f: q = 0, q*, 1 against function calls", caption=(
            f"alpha = 0.01, the same budget of function calls for each; q* = {q_star:.3f} from (21) with our "
            "D^2, V^2 (the paper reports q* of about 0.08). Median and 10-90% band over runs from theta_0 ~ "
            "U[-50, 50]. What to see: whether q* reaches a low gradient norm with fewer calls than q = 1; "
            f"claim {c_f or 'in the claims table'} tests it at the budget."))
    ext = results.get("ext_r")
    if ext is not None:
        rep.figure(figures.fig_r(ext), title="Extension: D^2, V^2 and q* against r", caption=(
            "Figure 1d's tasks at alpha = 0.01 for several inner-loop lengths r: the longer the inner loop, the "
            "larger FOM's bias relative to the second moment V^2, and the larger the optimal q."))

    if results.get("equal_budget") is not None:
        add_equal_budget_section(rep, results["equal_budget"])
    if results.get("hypercleaning") is not None:
        add_hypercleaning_section(rep, results["hypercleaning"], scale, settings.get("hypercleaning"), claim_ids=ids)
    if results.get("fewshot") is not None:
        add_fewshot_section(rep, results["fewshot"], scale, settings.get("fewshot"), claim_ids=ids)
    if results.get("checkpointing") is not None:
        add_checkpointing_section(rep, results["checkpointing"], scale)

    rep.section("Notes and discrepancies", summary="where the paper's printed forms and its released code differ "
                "from the derivations")
    rep.bullets([
        "FOM's fixed point on the counterexample (Theorem 2's construction) is the root of "
        "sum_i a_i p_i (theta - b_i/a_i) = 0 with p_i = (1 - alpha a_i)^r, the zero of the expected FOM gradient "
        "in the quadratic zone; there |dM/dtheta| = sqrt(2D) to 1e-15. The similar-looking equation "
        "sum_i a_i p_i (p_i theta - b_i/a_i) = 0 does not give a fixed point (expected FOM gradient 2.59 at its "
        "root).",
        "The iteration count printed above eq. (19) has exponent -1/(0.5 + eps) where the derivation gives "
        "-1/(0.5 - eps); (19)-(21) themselves are consistent with the derivation (theory section).",
        "The authors' released toy code chose its 'theory' q* by minimising T(q) sqrt(S(q)) with C_rnd = r; the "
        "paper's (19) is T(q) S(q)^2 with C_rnd = r(r+1)/2. The theory section's q* table shows how far apart "
        "they land.",
    ])
    rep.section("Provenance and precision", summary="versions, CPU, host and commit of the runs, and which "
                "experiments computed in float64")
    rep.paragraph(precision_sentence(results))
    info = provenance_of(results, settings.get("provenance"))
    rep.provenance({PROVENANCE_LABELS.get(k, k): v for k, v in info.items() if k != "jax_x64"},
                   caption="Versions, machine and commit of the runs behind this report.", title="Provenance")
    rep.build(path)
    return pdf_page_count(path)
