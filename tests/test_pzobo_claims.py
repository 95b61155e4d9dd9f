"""The claims experiment's rows for PZOBO's paper (simulations/claims.py), measured on problems.quadratic:
pzobo against es at equal calls, and pzobo's variance against s and Q beside theory.zeroth_order. Each holds
as measured and a wrong variant of it fails on the same draws (z-level analysis.Z = 4; sample sizes in each
test)."""

import jax
import pytest

from ufom_bench import analysis, theory
from ufom_bench.simulations import claims

pytestmark = pytest.mark.usefixtures("x64")


def test_pzobo_beats_es_at_equal_calls_and_the_reverse_claim_fails():
    """n = 2000 paired draws; pzobo Q = 7 (81 calls) against es Q = 4 (88 calls) holds; the same draws read
    as 'es beats pzobo' (the arguments swapped) fail."""
    a, b, calls_pz, calls_es, q_es = claims.pzobo_vs_es_errors(2000, jax.random.PRNGKey(4))
    assert (calls_pz, calls_es, q_es) == (81, 88, 4)
    row = analysis.pzobo_vs_es_claim(a, b, calls_pz, calls_es)
    assert row["verdict"] == "holds" and row["value"] > 1.2, row
    assert analysis.pzobo_vs_es_claim(b, a, calls_pz, calls_es)["verdict"] == "fails"


def test_pzobo_variance_grows_with_s_as_the_formula_says_and_the_sphere_formula_fails():
    """n = 2000 draws per cell, s in (2, 10) at Q = 1 and Q in (1, 4) at s = 10 (Gaussian directions): growth
    holds and (s + 1) ||a||^2 / Q holds in every cell; the sphere's (s - 1) ||a||^2 / Q (1 vs 3 at s = 2) fails."""
    t = claims.pzobo_variance_table(2000, jax.random.PRNGKey(5), dims=(2, 10), dirs=(1, 4))
    assert sorted(zip(t["s"], t["Q"])) == [(2, 1), (10, 1), (10, 4)]
    assert analysis.growth_claim(t[t["Q"] == 1], "s", "grows", "PZOBO")["verdict"] == "holds"
    assert analysis.variance_formula_claim(t, "formula", "theory")["verdict"] == "holds"
    sphere = t.assign(formula=[float(theory.pzobo_trace_cov(a2, s, q, "sphere")) for a2, s, q in zip(t["a2"], t["s"], t["Q"])])
    assert analysis.variance_formula_claim(sphere, "formula", "theory")["verdict"] == "fails"
