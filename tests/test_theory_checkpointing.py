"""ufom_bench.theory.checkpointing: Griewank's t(l, s) against the dynamic programme, the split rule, the two ends against
theory.cost, C_rnd(r, m), q*(m) and UFOM(q*(m), m) at fixed memory (the counters are compared with these
formulas in tests/test_exact_ckpt.py)."""

import math

import numpy as np
import pytest
import sympy as sp

from ufom_bench import theory
from ufom_bench.theory import checkpointing as ck

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

NAMES = ("ckpt_closed_form", "ckpt_split_rule", "ckpt_m1_is_exact_me",
         "ckpt_m_r_is_algorithm2")


def test_checks_present_and_matching():
    for name in NAMES:
        assert theory.CHECKS[name].matches, name
    tex = theory.latex()
    for name in ("ckpt_forward_steps", "ckpt_C_rnd", "ckpt_expected_time"):
        assert tex[name]


def test_closed_form_is_the_dynamic_programme():
    dp = ck.forward_steps_dp(120, 7)
    for l in range(1, 121):
        for s in range(1, 8):
            assert ck.forward_steps(l, s) == dp[l, s] == ck.schedule_steps(l, s), (l, s)


def test_a_wrong_closed_form_is_caught():
    """beta(s, rho - 1) in place of beta(s + 1, rho - 1) disagrees with the programme (the check has power)."""
    dp = ck.forward_steps_dp(60, 4)

    def wrong(l, s):
        rho = ck.repetition_number(l, s)
        return rho * l - math.comb(s + rho - 1, s)

    assert any(wrong(l, s) != dp[l, s] for l in range(2, 61) for s in range(2, 5))


def test_special_values():
    for l in range(1, 50):
        assert ck.forward_steps(l, 1) == l * (l - 1) // 2
        assert ck.forward_steps(1, 3) == 0
        for s in range(max(l - 1, 1), l + 3):
            assert ck.forward_steps(l, s) == l - 1
    # repetition number: beta(s, rho - 1) < l <= beta(s, rho)
    for l, s in [(2, 1), (10, 2), (1001, 4), (1000, 10)]:
        rho = ck.repetition_number(l, s)
        assert math.comb(s + rho - 1, s) < l <= math.comb(s + rho, s)
    assert ck.forward_steps(1001, 4) == 8008
    with pytest.raises(ValueError):
        ck.forward_steps(0, 2)


def test_symbolic_ends():
    """t(r + 1, 1) - r = r(r - 1)/2 (exact_me's recomputation) and t(r + 1, r) - r = 0 (Algorithm 2)."""
    d = ck.derivation()
    r = sp.Symbol("r", positive=True, integer=True)
    at_1 = sp.expand_func(d.grads.subs({ck.m: 1, ck.rho: r}))
    assert sp.simplify(at_1 - (r + 1 + r * (r - 1) / 2)) == 0
    assert sp.simplify(sp.expand_func(d.grads.subs({ck.m: r, ck.rho: 1})) - (r + 1)) == 0


def test_costs_at_the_ends_equal_theory_cost():
    rs = np.array([1, 2, 10, 37, 100])
    c_det, c_rnd = ck.costs(rs, 1, 1.0, 2.5)
    want = theory.costs(rs, 1.0, 2.5)
    assert np.allclose(c_det, want[0], rtol=0) and np.allclose(c_rnd, want[1], rtol=0)
    c_det, c_rnd = ck.costs(rs, rs, 1.0, 2.5)
    want = theory.costs(rs, 1.0, 2.5, recompute=False)
    assert np.allclose(c_det, want[0], rtol=0) and np.allclose(c_rnd, want[1], rtol=0)
    # m > r is m = r
    assert ck.costs(10, 50) == ck.costs(10, 10)


def test_expected_and_branch_calls():
    for r, m in [(10, 1), (10, 3), (100, 7), (1000, 10)]:
        g1, h1 = ck.checkpointed_calls(r, m)
        assert ck.branch_calls(r, m, 0) == (r + 1, 0) and ck.branch_calls(r, m, 1) == (g1, h1)
        grads, hvps = ck.expected_calls(r, 0.25, m)
        assert grads == pytest.approx(0.75 * (r + 1) + 0.25 * g1, rel=1e-15)
        assert hvps == pytest.approx(0.25 * r, rel=1e-15)
    assert ck.expected_calls(10, 0.5, 1)[0] == theory.expected_calls(10, 0.5)[0]


def test_optimal_q_grows_with_m_and_minimises_the_time_model():
    """Fewer recomputation steps make the exact branch cheaper, so q*(m) is non-decreasing in m; q*(m)
    minimises T(q) of (19) on a grid of q (checked to 1e-3 relative in T)."""
    D2, V2, r = 0.05, 1.0, 100
    ms = np.array([1, 2, 4, 7, 10, 100])
    qs = ck.optimal_q(D2, V2, r, ms)
    assert np.all(np.diff(qs) >= 0) and qs[0] < qs[-1]
    assert qs[0] == pytest.approx(theory.optimal_q(D2, V2, *theory.costs(r)), rel=1e-14)
    grid = np.linspace(1e-3, 1.0, 20001)
    for m, q_star in zip(ms, qs):
        c_det, c_rnd = ck.costs(r, m)
        t = theory.time_model(grid, D2, V2, c_det, c_rnd)
        assert theory.time_model(q_star, D2, V2, c_det, c_rnd) <= t.min() * (1 + 1e-3)


def test_at_fixed_memory_ends():
    D2, V2 = 0.02, 1.0
    rs = np.array([10, 100, 1000])
    out = ck.at_fixed_memory(D2, V2, rs, rs)  # m = r: exact_ckpt is exact
    assert np.allclose(out.time_exact_ckpt, out.time_exact, rtol=1e-14)
    out1 = ck.at_fixed_memory(D2, V2, rs, 1)  # m = 1: exact_ckpt is exact_me
    assert np.allclose(out1.time_exact_ckpt, out1.time_exact_me, rtol=1e-14)
    for o in (out, out1):
        assert np.all(o.time_ufom <= o.time_exact_ckpt * (1 + 1e-12))
        assert np.all((o.q_star > 0) & (o.q_star <= 1))
