"""The paper's claims, each measured with its uncertainty, a stated criterion and a verdict.

Direct checks (the `claims` experiment, on `problems.quadratic`): UFOM's unbiasedness (eqs. 12-13), the
second-moment identity behind Lemma 1, Proposition 1. Checks read from the Figure 1 experiments
(`figure_claims`): Theorem 2 (FOM stalls), Theorem 1 (UFOM converges), D^2 <= D_bound^2 (eq. 15),
theory q* vs the empirical best q (Figure 1e), and q* beating q = 1 and FOM (Figure 1f).
Statistical criteria are z-scores at |z| < 4 (or > 4 for a separation), over independent draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ufom_bench import theory
from ufom_bench import estimators, problems
from ufom_bench.analysis import Z
from ufom_bench.analysis import claim_row as _row
from ufom_bench.problem import task_at

N_DRAWS = {"smoke": 4_000, "default": 100_000, "paper": 1_000_000}


def _quadratic():
    problem = problems.quadratic(p=10, n_tasks=8, r=10, seed=0)
    theta = jax.random.normal(jax.random.PRNGKey(11), problem.theta0.shape, problem.theta0.dtype)
    return problem, theta


def check_unbiased(n: int, q: float, key) -> dict:
    """Each coordinate of mean G_UFO over n (task, xi) draws against dM/dtheta in closed form: max |z|."""
    problem, theta = _quadratic()
    est = estimators.ufom(q)

    def draw(k):
        k_task, k_est = jax.random.split(k)
        return est.estimate(problem, theta, problem.sample_task(k_task), k_est, ())[0]

    g = np.asarray(jax.jit(jax.vmap(draw))(jax.random.split(key, n)))
    exact = np.asarray(problems.quadratic_meta_gradient(problem, theta))
    z = (g.mean(0) - exact) / (g.std(0, ddof=1) / math.sqrt(n))
    zmax = float(np.max(np.abs(z)))
    return _row(f"UFOM is unbiased (q = {q:g})", "eqs. 12-13", f"max |z| = {zmax:.2f} over {z.size} coords, n = {n}",
                f"max |z| < {Z:g} (Bonferroni-free; p = 10 coords)", zmax < Z, zmax)


def check_second_moment(n: int, q: float, key) -> dict:
    """Mean ||G_UFO||^2 over n draws against V^2 + (1/q - 1) D^2 in closed form (the identity of Lemma 1)."""
    problem, theta = _quadratic()
    est = estimators.ufom(q)

    def draw(k):
        k_task, k_est = jax.random.split(k)
        g = est.estimate(problem, theta, problem.sample_task(k_task), k_est, ())[0]
        return jnp.sum(g**2)

    s = np.asarray(jax.jit(jax.vmap(draw))(jax.random.split(key, n)))
    bv = problems.quadratic_bias_variance(problem, theta)
    predicted = float(theory.ufom_second_moment(float(bv.v2), float(bv.d2), q))
    se = s.std(ddof=1) / math.sqrt(n)
    z = (s.mean() - predicted) / se
    return _row(f"E||G_UFO||^2 = V^2 + (1/q - 1) D^2 (q = {q:g})", "Lemma 1",
                f"{s.mean():.4g} +- {se:.2g} vs {predicted:.4g} (z = {z:.2f})", f"|z| < {Z:g}", abs(z) < Z, z, se)


def check_proposition_1(n: int, q: float, key) -> list[dict]:
    """Counted calls per branch equal sympy's Proposition 1 exactly; mean calls over n draws within |z| < 4."""
    rows = []
    for r in (1, 5, 10, 20):
        problem = problems.quadratic(p=4, n_tasks=2, r=r, seed=1)
        est = estimators.ufom(q)
        info = jax.jit(jax.vmap(lambda k: est.estimate(problem, problem.theta0, task_at(problem, 0), k, ())[1]))(
            jax.random.split(jax.random.fold_in(key, r), n))
        xi = np.asarray(info.exact).astype(int)
        per_branch = [tuple(int(v) for v in theory.branch_calls(r, x)) for x in (0, 1)]
        counted = np.stack([np.asarray(info.grad_calls), np.asarray(info.hvp_calls)], 1)
        exact_match = all(tuple(c) == per_branch[x] for c, x in zip(counted, xi))
        want = float(theory.expected_calls(r, q)[0])
        se = (r * (r - 1) / 2) * math.sqrt(q * (1 - q) / n)
        z = (counted[:, 0].mean() - want) / se if se > 0 else 0.0
        rows.append(_row(f"Proposition 1 calls, r = {r}", "Proposition 1",
                         f"per branch {'equal' if exact_match else 'DIFFERENT'}; mean grads {counted[:, 0].mean():.3f} "
                         f"vs {want:.3f} (z = {z:.2f})", f"exact per branch; |z| < {Z:g}",
                         exact_match and abs(z) < Z, z))
    return rows


def cell_claims(config: dict) -> pd.DataFrame:
    n = N_DRAWS[config["scale"]]
    key = jax.random.PRNGKey(config["seed"])
    rows = [check_unbiased(n, q, jax.random.fold_in(key, i)) for i, q in enumerate((0.1, 0.5))]
    rows += [check_second_moment(n, 0.1, jax.random.fold_in(key, 2))]
    rows += check_proposition_1(min(n, 20_000), 0.3, jax.random.fold_in(key, 3))
    return pd.DataFrame(rows)
