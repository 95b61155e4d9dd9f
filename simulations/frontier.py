"""The frontier (issue 17): bias^2, variance (task and own parts), MSE against the exact gradient, counted calls,
seconds and XLA temp bytes of every applicable estimator at a few settings, per problem, at theta0.

One cell is one (problem, point): every setting of the scale on that problem, measured by
`ufom_bench.frontier.measure` (the UFOM family from one set of pairs (G_FO, G) per task; every other estimator on
the same task draws). Rows are tidy (one per setting); `ufom_bench.analysis.pareto_front` and
`analysis.recommend` read them. Problems:
  counterexample: the Theorem 2 construction (D = 0.06, r = 10, alpha = 0.1), two tasks (exact over tasks);
  quadratic: `problems.quadratic()` (p = 10, 8 tasks, r = 10; exact over tasks);
  mlp: `problems.mlp_regression(10, ...)` (the benchmarks' MAML-style regression, s = 1153; tasks sampled;
       float32), with 128 points per support and query set at the default scale (the benchmarks' 1024 at paper).
The experiment runs with x64 on (simulations.X64): the counterexample and the quadratic compute in float64,
the mlp in float32 (its arrays are float32). Not yet: hypercleaning, few-shot, points along a training run.
"""

from __future__ import annotations

import jax
import pandas as pd

from ufom_bench import frontier, problems
from ufom_bench.errors import UserError

PROBLEMS = ("counterexample", "quadratic", "mlp")
R = 10
# Monte Carlo sizes: task draws and keys per task on the sampled mlp; keys per task on the problems with a finite
# task set (exact over their tasks: more keys cost little there); timing repeats; the problems run; the mlp's
# sizes (s = 1153 at d_in = 16, hidden = 64 as in the benchmarks; the default scale uses 128 support and query
# points instead of the benchmarks' 1024, for time).
SCALES = {
    "smoke": dict(n_tasks=8, n_keys=4, n_keys_exact=64, repeats=1, problems=("counterexample",),
                  mlp=dict(d_in=2, hidden=4, points=8)),
    "default": dict(n_tasks=32, n_keys=4, n_keys_exact=256, repeats=3, problems=PROBLEMS,
                    mlp=dict(d_in=16, hidden=64, points=128)),
    "paper": dict(n_tasks=256, n_keys=16, n_keys_exact=1024, repeats=10, problems=PROBLEMS,
                  mlp=dict(d_in=16, hidden=64, points=1024)),
}
# The settings per scale: (registered name, parameters). Reptile and the implicit estimators are skipped (with
# their reason in the row) where not defined.
_SMOKE = [("fom", {}), ("ufom", {"q": 0.1}), ("pzobo", {"mu": 0.01, "n_dirs": 1}), ("neumann", {"terms": 5})]
_DEFAULT = [
    ("exact", {}), ("exact_me", {}), ("fom", {}),
    ("ufom", {"q": 0.1}), ("ufom", {"q": 0.3}), ("adaptive_ufom", {}),
    ("reptile", {}), ("truncated", {"k": 1}), ("truncated", {"k": 3}),
    ("pzobo", {"mu": 0.01, "n_dirs": 1}), ("pzobo", {"mu": 0.01, "n_dirs": 8}),
    ("forward_gradient", {"n_dirs": 1}), ("forward_gradient", {"n_dirs": 8}),
    ("es", {"mu": 0.01, "n_dirs": 1}),  # es(Q) = forward_gradient(Q) where M is quadratic in theta: one Q here
    ("implicit_cg", {"iters": 10}), ("neumann", {"terms": 3}), ("neumann", {"terms": 10}),
]
SETTINGS = {"smoke": _SMOKE, "default": _DEFAULT, "paper": _DEFAULT}


def check_scale(scale: str) -> dict:
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return SCALES[scale]


def build(problem: str, scale: str):
    """The Problem labelled ``problem`` at ``scale`` (module docstring)."""
    s = check_scale(scale)
    if problem == "counterexample":
        return problems.counterexample(D=0.06, r=R, alpha=0.1)
    if problem == "quadratic":
        return problems.quadratic(r=R)
    if problem == "mlp":
        return problems.mlp_regression(R, **s["mlp"])
    raise UserError(f"unknown frontier problem {problem!r}; choose one of {', '.join(PROBLEMS)}")


def configs(scale: str) -> list[dict]:
    s = check_scale(scale)
    return [{"scale": scale, "problem": p, "point": "theta0", "seed": 0} for p in s["problems"]]


def cell_frontier(config: dict) -> pd.DataFrame:
    """Every setting of the scale on one problem at one point: `frontier.measure` rows, plus r and dim theta."""
    s = check_scale(config["scale"])
    if config.get("point", "theta0") != "theta0":
        raise UserError(f"unknown frontier point {config['point']!r}; only 'theta0' so far")
    prob = build(config["problem"], config["scale"])
    n_keys = s["n_keys"] if prob.tasks is None else s["n_keys_exact"]
    rows = frontier.measure(prob, SETTINGS[config["scale"]], n_tasks=s["n_tasks"], n_keys=n_keys,
                            key=jax.random.PRNGKey(config["seed"]), repeats=s["repeats"])
    dim = sum(x.size for x in jax.tree_util.tree_leaves(prob.theta0))
    return pd.DataFrame(rows).assign(r=prob.r, dim_theta=dim)
