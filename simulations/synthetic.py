"""Figure 1 of the UFOM paper (Section 5.1) on the piecewise-polynomial tasks, plus D^2, V^2, q* against r.

Each experiment is a list of configs (a function of the scale) and a module-level cell function
``config -> pandas.DataFrame``, run through `ufom_bench.sweep`. Settings follow shared/papers/NOTES.md:
  a-c: the Theorem 2 counterexample (r = 10, alpha = 0.1, D = 0.06), FOM vs UFOM (q = 0.1),
       gamma_k = 10/(k+1), theta_0 ~ U[-10, 30];
  d:   a = (0.5, 1.5), b = (0, 10), A = 400, r = 10, D^2 and V^2 as the max over a theta grid in [-50, 50]
       of the exact expectation over the two tasks (eqs. 14, 16 with the sup over the grid);
  e:   q* of (21) (eps = 0, C1 = C2 = 1) vs the empirical best q: per q, the mean cumulative function calls
       for the mean (dM/dtheta)^2 over runs from theta_0 ~ U[-50, 50] to reach a common target, the level
       the smallest q reaches in the step budget;
  f:   alpha = 0.01, q in {0 (FOM), q*, 1 (exact_me)}, |dM/dtheta| against function calls.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ufom_bench import theory
from ufom_bench import estimators, montecarlo, problems
from ufom_bench.estimators import Estimator
from ufom_bench.problem import meta_objective
from ufom_bench.train import default_max_steps, inverse, train, train_many
from ufom_bench.errors import UserError

SCALES = {
    # runs/steps of panels c, e, f; grid sizes of d and e; the r values of the extension
    "smoke": dict(runs_c=8, steps_c=300, n_alpha=3, n_theta=201, runs_e=32, steps_e=100, n_q=4, runs_f=16,
                  budget_f=3_000, r_values=(2, 10)),
    "default": dict(runs_c=100, steps_c=10_000, n_alpha=10, n_theta=5_001, runs_e=1_000, steps_e=100, n_q=20,
                    runs_f=1_000, budget_f=40_000, r_values=(1, 2, 5, 10, 20, 50)),
    "paper": dict(runs_c=100, steps_c=10_000, n_alpha=10, n_theta=10_001, runs_e=2_000, steps_e=100, n_q=20,
                  runs_f=2_000, budget_f=100_000, r_values=(1, 2, 5, 10, 20, 50, 100)),
}
D_GAP, Q_UFOM = 0.06, 0.1
PANEL_D = dict(a=(0.5, 1.5), b=(0.0, 10.0), A=400.0, r=10)
ALPHA_F = 0.01


def check_scale(scale: str) -> dict:
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return SCALES[scale]


def panel_d_problem(alpha: float, r: int = PANEL_D["r"]):
    return problems.piecewise_tasks(PANEL_D["a"], PANEL_D["b"], PANEL_D["A"], alpha, r, name="figure1d")


def alphas(n: int) -> np.ndarray:
    """n log-spaced inner step sizes in [1e-3, 5e-2] (Figure 1d)."""
    return np.geomspace(1e-3, 5e-2, n)


def q_grid(n: int) -> np.ndarray:
    """n values of q in [0.05, 1] (Figure 1e's grid search)."""
    return np.linspace(0.05, 1.0, n)


def sup_moments(problem, n_theta: int, lo: float = -50.0, hi: float = 50.0) -> dict:
    """max over a theta grid of D^2(theta) and V^2(theta), exact over the finite task set (eqs. 14, 16)."""
    thetas = jnp.linspace(lo, hi, n_theta)
    cells = montecarlo.moments_grid(problem, thetas, method="exact")
    d2, v2 = montecarlo.grid_sup(cells, "d2"), montecarlo.grid_sup(cells, "v2")
    return {"D2": d2.value, "V2": v2.value, "theta_D2": float(thetas[d2.index]), "theta_V2": float(thetas[v2.index]),
            "diverged": int(sum(c.n_diverged for c in cells))}


def theory_q(D2: float, V2: float, r: int) -> float:
    """q* of (19)-(21) with C1 = C2 = 1, eps = 0 (the paper's experiments)."""
    c_det, c_rnd = theory.costs(r)
    return float(theory.optimal_q(D2, V2, c_det, c_rnd))


def _runs(problem, est_or_q, starts, key, *, steps=None, budget=None):
    """Outer SGD runs (gamma_k = 10/(k+1)) from ``starts``; est_or_q: an Estimator or a traced-q grid."""
    keys = jax.random.split(key, starts.shape[0])
    cost_max = theory.branch_total(problem.r, 1)
    budget = steps * cost_max if budget is None else budget
    kwargs = dict(budget=budget, max_steps=steps, schedule=inverse(10.0))
    if isinstance(est_or_q, Estimator):
        return train_many(problem, est_or_q, starts, keys, **kwargs)
    run_q = lambda q: jax.vmap(lambda th, k: train(problem, estimators.ufom(q), th, k, **kwargs))(starts, keys)
    return jax.jit(jax.vmap(run_q))(jnp.asarray(est_or_q))


def _curve_on_calls(calls, values, grid):
    """Per run, the value after the last step whose cumulative calls <= each grid point (NaN before)."""
    out = np.full((calls.shape[0], grid.size), np.nan)
    for i in range(calls.shape[0]):
        idx = np.searchsorted(calls[i], grid, side="right") - 1
        ok = idx >= 0
        out[i, ok] = values[i, idx[ok]]
    return out


# ------------------------------------------------------------------------------------------- experiments


def cell_fig1a(config: dict) -> pd.DataFrame:
    """(a) the two task losses f_i(phi) and (b) M_r(theta) of the counterexample, on a grid."""
    problem = problems.counterexample(D=D_GAP)
    grid = jnp.linspace(-10.0, 30.0, 801)
    f = jax.vmap(lambda t: jax.vmap(lambda x: problem.inner_loss(x, x, t))(grid))(problem.tasks)
    m = jax.jit(jax.vmap(lambda th: meta_objective(problem, th)))(grid)
    return pd.DataFrame({"x": np.asarray(grid), "f1": np.asarray(f[0]), "f2": np.asarray(f[1]), "M_r": np.asarray(m)})


def cell_fig1bc(config: dict) -> pd.DataFrame:
    """(b, c) FOM vs UFOM outer SGD on the counterexample: |dM/dtheta_k| quantiles per step, final thetas."""
    s = check_scale(config["scale"])
    problem = problems.counterexample(D=D_GAP)
    key = jax.random.PRNGKey(config["seed"])
    starts = jax.random.uniform(jax.random.fold_in(key, 0), (s["runs_c"],), jnp.float64, -10.0, 30.0)
    est = estimators.fom() if config["estimator"] == "fom" else estimators.ufom(config["q"])
    theta, rec = _runs(problem, est, starts, jax.random.fold_in(key, 1), steps=s["steps_c"])
    g = np.asarray(rec.meta_grad_norm)
    steps = np.arange(1, g.shape[1] + 1)
    keep = np.unique(np.geomspace(1, steps[-1], 400).astype(int)) - 1  # log-spaced steps keep files small
    curve = pd.DataFrame({
        "record": "curve", "step": steps[keep], "grad_mean": g.mean(0)[keep], "grad_sq_mean": (g**2).mean(0)[keep],
        "grad_sq_se": (g**2).std(0, ddof=1)[keep] / math.sqrt(g.shape[0]),
        "grad_q10": np.quantile(g, 0.1, axis=0)[keep], "grad_q50": np.median(g, 0)[keep],
        "grad_q90": np.quantile(g, 0.9, axis=0)[keep], "calls_mean": np.asarray(rec.calls).mean(0)[keep],
    })
    final = pd.DataFrame({"record": "final", "run": np.arange(g.shape[0]), "theta": np.asarray(theta),
                          "grad_final": g[:, -1], "diverged": np.asarray(rec.n_diverged)[:, -1]})
    return pd.concat([curve, final], ignore_index=True)


def cell_fig1d(config: dict) -> pd.DataFrame:
    """(d) sup-over-grid D^2 and V^2 at one alpha, with q* of (21) and D_bound^2 (eq. 15)."""
    s = check_scale(config["scale"])
    problem = panel_d_problem(config["alpha"], config.get("r", PANEL_D["r"]))
    m = sup_moments(problem, s["n_theta"])
    a_max = max(PANEL_D["a"])
    # Assumption 1 constants of this family: |f'| <= a (A + 1/2) = L1, |f''| <= a = L2, V = theta: M1 = 1
    bound = theory.d_bound_const(config["alpha"], problem.r, 1.0, a_max * (PANEL_D["A"] + 0.5), a_max)
    return pd.DataFrame([{**m, "q_theory": theory_q(m["D2"], m["V2"], problem.r), "D_bound2": float(bound) ** 2}])


def cell_fig1e(config: dict) -> pd.DataFrame:
    """(e) at one alpha: per q on the grid, the mean function calls to reach the common target."""
    s = check_scale(config["scale"])
    problem = panel_d_problem(config["alpha"])
    m = sup_moments(problem, s["n_theta"])
    qs = q_grid(s["n_q"])
    key = jax.random.PRNGKey(config["seed"])
    starts = jax.random.uniform(jax.random.fold_in(key, 0), (s["runs_e"],), jnp.float64, -50.0, 50.0)
    _, rec = _runs(problem, qs, starts, jax.random.fold_in(key, 1), steps=s["steps_e"])
    g2 = np.asarray(rec.meta_grad_norm) ** 2  # [q, run, step]
    mean_g2, mean_calls = g2.mean(1), np.asarray(rec.calls, float).mean(1)
    target = mean_g2[0, -1]  # the level the smallest q reaches within the step budget
    reached = mean_g2 <= target
    first = np.where(reached.any(1), reached.argmax(1), -1)
    cost = np.where(first >= 0, mean_calls[np.arange(qs.size), first], np.nan)
    return pd.DataFrame({"q": qs, "calls_to_target": cost, "target": target, "final_grad_sq": mean_g2[:, -1],
                         "diverged": np.asarray(rec.n_diverged)[:, :, -1].sum(1),
                         "q_theory": theory_q(m["D2"], m["V2"], problem.r), "D2": m["D2"], "V2": m["V2"]})


def cell_fig1f(config: dict) -> pd.DataFrame:
    """(f) alpha = 0.01: |dM/dtheta| against function calls for q = 0 (FOM), q*, 1, same budget. Per point of
    the calls grid: quantiles of |dM/dtheta| over runs, mean and sd over runs of |dM/dtheta|^2 (the Figure 1f
    claim's two-sample test), and the runs started."""
    s = check_scale(config["scale"])
    problem = panel_d_problem(ALPHA_F)
    m = sup_moments(problem, s["n_theta"])
    q_star = theory_q(m["D2"], m["V2"], problem.r)
    q = {"fom": 0.0, "q_star": q_star, "exact": 1.0}[config["q_label"]]
    key = jax.random.PRNGKey(config["seed"])
    starts = jax.random.uniform(jax.random.fold_in(key, 0), (s["runs_f"],), jnp.float64, -50.0, 50.0)
    steps = default_max_steps(problem, s["budget_f"])
    _, rec = _runs(problem, np.array([q]), starts, jax.random.fold_in(key, 1), steps=steps, budget=s["budget_f"])
    calls, g = np.asarray(rec.calls[0], float), np.asarray(rec.meta_grad_norm[0])
    grid = np.linspace(0, s["budget_f"], 201)[1:]
    on_grid = _curve_on_calls(calls, g, grid)
    with warnings.catch_warnings():  # grid points before any run's first step are all-NaN: reported as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return pd.DataFrame({
            "q": q, "calls": grid, "grad_mean": np.nanmean(on_grid, 0), "grad_q10": np.nanquantile(on_grid, 0.1, 0),
            "grad_q50": np.nanmedian(on_grid, 0), "grad_q90": np.nanquantile(on_grid, 0.9, 0),
            "grad_sq_mean": np.nanmean(on_grid**2, 0), "grad_sq_sd": np.nanstd(on_grid**2, 0, ddof=1),
            "runs_started": np.sum(~np.isnan(on_grid), 0),
            "diverged": int(np.asarray(rec.n_diverged[0])[:, -1].sum()),
        })


def cell_ext_r(config: dict) -> pd.DataFrame:
    """Extension: sup D^2, V^2 and q* against r at alpha = 0.01 (panel d's tasks)."""
    s = check_scale(config["scale"])
    problem = panel_d_problem(ALPHA_F, config["r"])
    m = sup_moments(problem, s["n_theta"])
    return pd.DataFrame([{**m, "q_theory": theory_q(m["D2"], m["V2"], config["r"])}])


def configs(experiment: str, scale: str) -> list[dict]:
    s = check_scale(scale)
    base = {"scale": scale}
    if experiment == "fig1a":
        return [base]
    if experiment == "fig1bc":
        return [{**base, "estimator": "fom", "q": 0.0, "seed": 0}, {**base, "estimator": "ufom", "q": Q_UFOM, "seed": 0}]
    if experiment == "fig1d":
        return [{**base, "alpha": float(a)} for a in alphas(s["n_alpha"])]
    if experiment == "fig1e":
        return [{**base, "alpha": float(a), "seed": 0} for a in alphas(s["n_alpha"])]
    if experiment == "fig1f":
        return [{**base, "q_label": label, "seed": 0} for label in ("fom", "q_star", "exact")]
    if experiment == "ext_r":
        return [{**base, "r": int(r)} for r in s["r_values"]]
    raise UserError(f"unknown synthetic experiment {experiment!r}")


CELLS = {"fig1a": cell_fig1a, "fig1bc": cell_fig1bc, "fig1d": cell_fig1d, "fig1e": cell_fig1e,
         "fig1f": cell_fig1f, "ext_r": cell_ext_r}
