"""The paper's claims, each measured with its uncertainty, a stated criterion and a verdict.

Direct checks (the `claims` experiment, on `problems.quadratic`): UFOM's unbiasedness (eqs. 12-13), the
second-moment identity behind Lemma 1, Proposition 1. Checks read from the Figure 1 experiments
(`figure_claims`): Theorem 2 (FOM stalls), Theorem 1 (UFOM converges), D^2 <= D_bound^2 (eq. 15),
theory q* vs the empirical best q (Figure 1e), and q* beating q = 1 and FOM (Figure 1f).
PZOBO's paper (Sow et al. 2022), on `problems.quadratic`: pzobo against es at equal calls (paired MSE ratio), and
pzobo's variance against the outer dimension s and the number of directions Q beside `theory.pzobo_trace_cov`
(rows built by `analysis.pzobo_vs_es_claim`, `growth_claim`, `variance_formula_claim`).
Statistical criteria are z-scores at |z| < 4 (or > 4 for a separation), over independent draws.
"""

from __future__ import annotations

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ufom_bench import theory
from ufom_bench import estimators, problems
from ufom_bench import analysis
from ufom_bench.analysis import Z
from ufom_bench.analysis import claim_row as _row
from ufom_bench.problem import inner_path, task_at

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


def _flat_sq(x):
    return jnp.sum(jax.flatten_util.ravel_pytree(x)[0] ** 2)


def pzobo_vs_es_errors(n: int, key, pzobo_dirs: int = 7, es_dirs: int | None = None, p: int = 10):
    """Paired squared errors ||G_hat - G_T||^2 of pzobo(Q = ``pzobo_dirs``) and es(Q = ``es_dirs``) against the exact
    gradient G_T of the same task (closed form), over n (task, key) draws on `problems.quadratic(p, r = 10)` at
    `_quadratic`'s theta (p = 10) or a random one; ``es_dirs`` defaults to the fewest directions giving es at least
    pzobo's calls (`theory.zeroth_order_calls`). Returns (err_pzobo, err_es, calls_pzobo, calls_es, es_dirs)."""
    if p == 10:
        problem, theta = _quadratic()
    else:
        problem = problems.quadratic(p=p, n_tasks=8, r=10, seed=0)
        theta = jax.random.normal(jax.random.PRNGKey(11), problem.theta0.shape, problem.theta0.dtype)
    calls_pz = float(sum(theory.zeroth_order_calls("pzobo", problem.r, pzobo_dirs)))
    if es_dirs is None:
        es_dirs = max(1, math.ceil(calls_pz / float(sum(theory.zeroth_order_calls("es", problem.r, 1)))))
    calls_es = float(sum(theory.zeroth_order_calls("es", problem.r, es_dirs)))
    pz, es = estimators.pzobo(0.01, pzobo_dirs), estimators.es(0.01, es_dirs)

    def draw(k):
        k_task, k_pz, k_es = jax.random.split(k, 3)
        task = problem.sample_task(k_task)
        g = problems.quadratic_exact_gradient(problem, theta, task)
        e = lambda est, kk: _flat_sq(est.estimate(problem, theta, task, kk, ())[0] - g)
        return e(pz, k_pz), e(es, k_es)

    a, b = jax.jit(jax.vmap(draw))(jax.random.split(key, n))
    return np.asarray(a), np.asarray(b), calls_pz, calls_es, es_dirs


def check_pzobo_vs_es(n: int, key, pzobo_dirs: int = 7, es_dirs: int | None = None) -> dict:
    """PZOBO's first claim (`analysis.pzobo_vs_es_claim`) on the quadratic (p = 10, r = 10, 8 tasks)."""
    a, b, calls_pz, calls_es, q_es = pzobo_vs_es_errors(n, key, pzobo_dirs, es_dirs)
    return analysis.pzobo_vs_es_claim(a, b, calls_pz, calls_es, f"quadratic p = 10, r = 10, Q = {pzobo_dirs} vs "
                                      f"{q_es}, mu = 0.01")


PZOBO_DIMS = (2, 10, 40)  # s = p of problems.quadratic, at Q = 1
PZOBO_DIRS = (1, 4, 16)  # Q at s = 10


def pzobo_variance_table(n: int, key, dims=PZOBO_DIMS, dirs=PZOBO_DIRS, directions: str = "gaussian",
                         formula_directions: str = "gaussian") -> pd.DataFrame:
    """tr Cov of pzobo(mu = 0.01, Q, directions) over n draws of its directions, given task 0 of
    `problems.quadratic(p = s, r = 10)` at a random theta, for s in ``dims`` (Q = 1) and Q in ``dirs`` (s = 10),
    beside `theory.pzobo_trace_cov` (``formula_directions``) with ||a||^2 = ||J^T b2||^2 = ||G_T - dL_out/dtheta||^2.
    The quadratic's inner path is affine in theta, so the finite difference is exact for every mu.
    Columns s, Q, trace, trace_se (the mean of ||x_i - xbar||^2 n / (n - 1) and its SE), a2, formula."""
    rows = []
    for i, (p, q) in enumerate([(p, 1) for p in dims] + [(10, q) for q in dirs if q != 1 or 10 not in dims]):
        problem = problems.quadratic(p=p, n_tasks=8, r=10, seed=0)
        theta = jax.random.normal(jax.random.PRNGKey(11), problem.theta0.shape, problem.theta0.dtype)
        task = task_at(problem, 0)
        g = problems.quadratic_exact_gradient(problem, theta, task)
        b1 = jax.grad(problem.outer_loss)(theta, inner_path(problem, theta, task), task)
        est = estimators.pzobo(0.01, q, directions)
        x = np.asarray(jax.jit(jax.vmap(lambda k: est.estimate(problem, theta, task, k, ())[0]))(
            jax.random.split(jax.random.fold_in(key, i), n)), np.float64)
        d = np.sum((x - x.mean(0)) ** 2, axis=1) * n / (n - 1)
        a2 = float(_flat_sq(g - b1))
        rows.append({"s": p, "Q": q, "trace": d.mean(), "trace_se": d.std(ddof=1) / math.sqrt(n), "a2": a2,
                     "formula": float(theory.pzobo_trace_cov(a2, p, q, formula_directions))})
    return pd.DataFrame(rows)


def check_pzobo_variance(n: int, key, directions: str = "gaussian", formula_directions: str = "gaussian",
                         dims=PZOBO_DIMS, dirs=PZOBO_DIRS) -> list[dict]:
    """PZOBO's second claim (its variance grows with the outer dimension s; `analysis.growth_claim`) and
    tr Cov = (s + 1) ||J^T b2||^2 / Q against s and against Q (`analysis.variance_formula_claim`)."""
    t = pzobo_variance_table(n, key, dims, dirs, directions, formula_directions)
    by_s, by_q = t[t["Q"] == 1], t[t["s"] == 10]
    where = f"quadratic, r = 10, task 0, {directions} directions, n = {n:,} draws per cell"
    formula = {"gaussian": "(s + 1)", "sphere": "(s - 1)"}[formula_directions]
    return [
        analysis.growth_claim(by_s, "s", f"PZOBO's variance grows with the outer dimension s (Q = 1; {where})",
                              "PZOBO (Sow et al. 2022)"),
        analysis.variance_formula_claim(by_s, f"tr Cov G_PZOBO = {formula} ||J^T b2||^2 / Q against s = "
                                        f"{', '.join(map(str, dims))} (Q = 1)", "theory.zeroth_order"),
        analysis.variance_formula_claim(by_q, f"tr Cov G_PZOBO = {formula} ||J^T b2||^2 / Q against Q = "
                                        f"{', '.join(map(str, dirs))} (s = 10)", "theory.zeroth_order"),
    ]


def cell_claims(config: dict) -> pd.DataFrame:
    n = N_DRAWS[config["scale"]]
    key = jax.random.PRNGKey(config["seed"])
    rows = [check_unbiased(n, q, jax.random.fold_in(key, i)) for i, q in enumerate((0.1, 0.5))]
    rows += [check_second_moment(n, 0.1, jax.random.fold_in(key, 2))]
    rows += check_proposition_1(min(n, 20_000), 0.3, jax.random.fold_in(key, 3))
    rows += [check_pzobo_vs_es(min(n, 20_000), jax.random.fold_in(key, 4))]
    grid = dict(dims=(2, 10), dirs=(1, 4)) if config["scale"] == "smoke" else {}  # smoke: 3 cells to compile, not 5
    rows += check_pzobo_variance(min(n, 20_000), jax.random.fold_in(key, 5), **grid)
    return pd.DataFrame(rows)
