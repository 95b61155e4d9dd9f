"""Equal-budget training (issue 17, item 2): every applicable estimator trains the same problem through the one
outer loop (`ufom_bench.train`) under the same budget of function calls, the problem's figure of merit recorded
against calls and against seconds, over several seeds.

One cell = (problem, estimator setting): one compiled training program (`train` with ``schedule_on="calls"``
and ``snapshots``), run once per seed. Rows: one per (seed, evaluation point), the point 0 being theta_0.

**At most the budget.** `train` takes a step while the calls spent are below its stop, so its last step may
overshoot by one estimate. Here the stop is B - c_max + 1 and each evaluation point b is snapshot at
b - c_max + 1, where c_max is the most one estimate of *any* estimator of the problem can cost
(`max_cost`: exact_me's, UFOM's exact branch's, r + 1 + r(r - 1)/2 + r, times the meta-batch): the theta
recorded at point b is the one at the top of the first step that finds at least b - c_max + 1 calls spent,
so the calls it cost lie in [b - c_max + 1, b] (column ``calls``, counted, exact). Every estimator gets the
same c_max, so the same b - c_max + 1 threshold.

**Seconds** (measured): each run's compiled program (AOT-compiled once per cell, compilation excluded) is
timed with ``time.perf_counter`` around the call and ``block_until_ready`` (``run_seconds``; the whole scan,
its skipped steps after the budget included). A point's ``seconds`` = run_seconds x calls / run calls: the
run's time attributed in proportion to the calls spent (one scan gives no time stamps inside it).

**Problems, figure of merit, outer step** (the same optimizer and the same schedule, a function of the calls
spent, for every estimator of a problem; a schedule in calls gives every estimator the same step size at the
same point of the x-axis):
  counterexample: Theorem 2's two tasks (D = 0.06, r = 10, alpha = 0.1); merit |dM/dtheta| (exact over the
    two tasks); theta_0 ~ U[-10, 30] per seed (fig. 1b-c); plain SGD, gamma(x) = c / (1 + x / (per (r + 1)))
    (`inverse_calls`) with (c, per) = (10, 1): the paper's 10/(k + 1) with k counted in FOM estimates' calls.
  quadratic: `problems.quadratic(r=10)` (p = 10, 8 tasks); merit |dM/dtheta| (exact over the tasks);
    theta_0 = N(0, I) per seed; plain SGD, `inverse_calls` with (c, per) = (0.01, 30): M_r's Hessian has
    eigenvalues 6.6-29.8, so c L = 0.3. FOM's mean direction E G_FO has a Jacobian with eigenvalues of negative
    real part (-1.31, -0.51 +- 1.27i, -0.44 +- 0.27i at this problem), so FOM-SGD drifts away from the
    stationary point at any step size; the decaying schedule bounds how far (exp(1.31 sum gamma)).
  mlp: `problems.mlp_regression` as `simulations.frontier` builds it (r = 10, alpha = 0.1; d_in = 16,
    hidden = 64 at default); merit: the mean query loss L_out(theta, phi_r) over ``n_eval`` held-out tasks
    (the same tasks for every estimator and seed, drawn from a key training never uses); theta_0 the
    network drawn with the seed; Adam direction (`optax.scale_by_adam`) scaled by `linear_to_zero(lr,
    budget)` on the calls (lr = ``MLP_LR``), as the few-shot experiment trains.
  hypercleaning (paper scale): `simulations.hypercleaning`'s problem, data and scale of the same name; merit
    test accuracy (`hypercleaning_metrics`); Adam at its ``LR`` (0.3), constant.
  fewshot (paper scale): `simulations.fewshot`'s first setting of the scale; every estimator averaged over its
    meta-batch (`estimators.meta_batch`); Adam direction with `linear_to_zero(FEWSHOT_LR, budget)`; merit
    test accuracy (`fewshot.evaluate`, the same test tasks per seed).
Step sizes (``SGD_SCHEDULE``, ``MLP_LR``) were chosen once, by hand, on 3 seeds at the default budget, among
a few values ((0.03, 1), (0.03, 30), (0.02, 10), (0.01, 30) on the quadratic; lr 0.003, 0.01 on the mlp), as
the one under which no estimator's run blew up while most made progress (at (0.03, 30) FOM, forward_gradient,
pzobo and es ran off to |dM/dtheta| of 1e2-1e5); they are not tuned per estimator: an estimator that needs a
smaller step shows it as refused steps, non-finite runs or a stalled curve, which the report says.

**Estimators** (``SETTINGS``): fom, exact_me, ufom(q = 0.1), adaptive_ufom (the paper's q_min = 0.05,
beta = 0.99, d2_scale = 0.1), truncated(k = 1), reptile (scale "sum_alpha"), pzobo(mu = 0.01, Q = 1),
forward_gradient(Q = 1), es(mu = 0.01, Q = 1), implicit_cg(10 iterations), neumann(10 terms),
exact_ckpt(m = ceil(sqrt r)). A setting not defined on a problem (`estimators.not_applicable`) gives one row
with the reason. Divergent inner loops are refused by train's guarded step, never applied, and counted
(``diverged``: refused steps up to the point).

The experiment runs with x64 on (simulations.X64): the counterexample and the quadratic compute in float64;
the networks (mlp, hypercleaning, few-shot) in float32 (their arrays are float32).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from ufom_bench import estimators, problems, theory
from ufom_bench.errors import UserError, check_choice
from ufom_bench.frontier import label
from ufom_bench.problem import inner_path, meta_gradient
from ufom_bench.problems.regression import regression_mlp_init
from ufom_bench.simulations import fewshot as fewshot_sim
from ufom_bench.simulations import frontier as frontier_sim
from ufom_bench.simulations import hypercleaning as hc_sim
from ufom_bench.theory import zoo
from ufom_bench.train import linear_to_zero, train

PROBLEMS = ("counterexample", "quadratic", "mlp", "hypercleaning", "fewshot")
# merit name, whether higher is better, whether it spans decades (log axes and geometric comparisons)
MERITS = {
    "counterexample": ("|dM/dtheta|", False, True),
    "quadratic": ("|dM/dtheta|", False, True),
    "mlp": ("held-out query loss", False, False),
    "hypercleaning": ("test accuracy", True, False),
    "fewshot": ("test accuracy", True, False),
}
# plain SGD step gamma(x) = c / (1 + x / (per (r + 1))) on the calls x spent: (c, per) per problem
SGD_SCHEDULE = {"counterexample": (10.0, 1.0), "quadratic": (0.01, 30.0)}
MLP_LR = 0.01
FEWSHOT_LR = 0.03  # fewshot.LR of exact_me, FOM and Adaptive UFOM, for every estimator
SCALES = {
    "smoke": dict(problems=("counterexample",), seeds=(0, 1, 2), budget=1_500,
                  points=(1 / 4, 1 / 2, 1.0), estimators=("fom", "ufom", "implicit_cg"),
                  mlp=dict(d_in=2, hidden=4, points=8), n_eval=4),
    "default": dict(problems=("counterexample", "quadratic", "mlp"), seeds=(0, 1, 2, 3, 4), budget=20_000,
                    points=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0), estimators=None,
                    mlp=dict(d_in=16, hidden=64, points=128), n_eval=64,
                    budgets={"mlp": 6_000}),
    "paper": dict(problems=PROBLEMS, seeds=tuple(range(10)), budget=100_000,
                  points=(1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0), estimators=None,
                  mlp=dict(d_in=16, hidden=64, points=1024), n_eval=256),
}
R = frontier_sim.R
ADAPTIVE = dict(hc_sim.ADAPTIVE)


def settings(r: int) -> list[tuple[str, dict]]:
    """The estimator settings at inner length r (module docstring)."""
    return [("fom", {}), ("exact_me", {}), ("ufom", {"q": 0.1}), ("adaptive_ufom", dict(ADAPTIVE)),
            ("truncated", {"k": 1}), ("reptile", {"scale": "sum_alpha"}),
            ("pzobo", {"mu": 0.01, "n_dirs": 1}), ("forward_gradient", {"n_dirs": 1}),
            ("es", {"mu": 0.01, "n_dirs": 1}), ("implicit_cg", {"iters": 10}), ("neumann", {"terms": 10}),
            ("exact_ckpt", {"checkpoints": int(math.ceil(math.sqrt(r)))})]


def check_scale(scale: str) -> dict:
    return SCALES[check_choice("scale", scale, SCALES)]


def check_problem(problem: str) -> str:
    return check_choice("equal-budget problem", problem, PROBLEMS)


def inverse_calls(c: float, per: float) -> Callable:
    """gamma(x) = c / (1 + x / per) of the calls x spent before the step (with ``per`` = r + 1, FOM's cost,
    the paper's c / (k + 1) with k counted in FOM estimates)."""
    if not (c > 0 and per > 0):
        raise UserError(f"inverse_calls needs c > 0 and per > 0, got c = {c!r}, per = {per!r}")
    return lambda x: c / (1.0 + jnp.asarray(x, jnp.result_type(float)) / per)


def r_of(problem: str, scale: str) -> int:
    """The inner length r of ``problem`` at ``scale``."""
    if check_problem(problem) == "hypercleaning":
        return int(hc_sim.check_scale(scale)["r"])
    if problem == "fewshot":
        return int(fewshot_sim.check_scale(scale)["r"])
    return R


def meta_batch_of(problem: str, scale: str) -> int:
    return int(fewshot_sim.check_scale(scale)["meta_batch"]) if problem == "fewshot" else 1


def max_cost(r: int, batch: int = 1) -> int:
    """c_max: the most calls one estimate of any setting of `settings` can cost at r: exact_me's (= UFOM's exact
    branch, Proposition 1), checked against every deterministic setting's count (`theory.zoo`)."""
    worst = theory.branch_total(r, 1)
    for name, params in settings(r):
        if name not in ("ufom", "adaptive_ufom"):
            worst = max(worst, int(round(sum(zoo.calls(name, r, **params)))))
    return batch * int(worst)


def min_cost(name: str, params: dict, r: int, batch: int = 1) -> int:
    """The fewest calls one estimate of ``name`` can cost (FOM's r + 1 for the UFOM family's FOM branch)."""
    if name in ("ufom", "adaptive_ufom"):
        return batch * theory.branch_total(r, 0)
    return batch * int(round(sum(zoo.calls(name, r, **params))))


def budget_of(problem: str, scale: str) -> int:
    """The common budget of ``problem`` at ``scale`` (calls): the scale's, or the hypercleaning / few-shot
    experiments' own."""
    s = check_scale(scale)
    if problem == "hypercleaning":
        return int(hc_sim.check_scale(scale)["budget"])
    if problem == "fewshot":
        return int(fewshot_sim.budget_of(scale))
    return int(s.get("budgets", {}).get(problem, s["budget"]))


def points_of(problem: str, scale: str) -> list[int]:
    """The evaluation budgets b (calls), each at least c_max (so that its threshold b - c_max + 1 >= 1)."""
    s, budget = check_scale(scale), budget_of(problem, scale)
    c = max_cost(r_of(problem, scale), meta_batch_of(problem, scale))
    if budget < 2 * c:
        raise UserError(f"budget {budget} of {problem!r} is below two of its largest estimates ({2 * c} calls)")
    return sorted({max(c, int(round(p * budget))) for p in s["points"]})


class Spec(NamedTuple):
    """What a cell needs of a problem: the Problem (``None`` when it depends on the seed), per-seed inputs,
    how training steps (optimizer, schedule), how a theta is scored, and extra traced arguments."""

    problem: Any
    start: Callable  # seed -> (problem, theta0, extra args of the run)
    optimizer: Any
    schedule: Callable | None
    merit: Callable  # (problem, thetas stacked, seed) -> per-theta merit (numpy)
    wrap: Callable  # estimator -> estimator (the few-shot meta-batch)
    with_data: Callable | None  # (problem, data) -> problem on traced data (few-shot)


def outer_step(problem: str, scale: str) -> str:
    """The outer optimizer and step-size schedule of ``problem`` as text (a column of the rows)."""
    if check_problem(problem) in SGD_SCHEDULE:
        c, per = SGD_SCHEDULE[problem]
        return f"SGD, gamma = {c:g} / (1 + calls / {per * (R + 1):g})"
    if problem == "mlp":
        return f"Adam direction, lr = {MLP_LR:g} (1 - calls / {budget_of(problem, scale):,}), annealed to 0"
    if problem == "hypercleaning":
        return f"Adam, lr = {hc_sim.LR['exact_me']:g} constant"
    return f"Adam direction, lr = {FEWSHOT_LR:g} (1 - calls / {budget_of(problem, scale):,}), annealed to 0"


def spec(problem: str, scale: str) -> Spec:
    """The `Spec` of ``problem`` at ``scale`` (module docstring)."""
    s, budget = check_scale(scale), budget_of(problem, scale)
    same = lambda e: e  # noqa: E731
    if check_problem(problem) in ("counterexample", "quadratic"):
        prob = frontier_sim.build(problem, "default")
        c, per = SGD_SCHEDULE[problem]

        def start(seed):
            k = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
            if problem == "counterexample":
                return prob, jax.random.uniform(k, (), prob.theta0.dtype, -10.0, 30.0), ()
            return prob, prob.theta0 + jax.random.normal(k, prob.theta0.shape, prob.theta0.dtype), ()

        grad_norm = jax.jit(jax.vmap(lambda th: jnp.sqrt(jnp.sum(jnp.square(meta_gradient(prob, th))))))
        merit = lambda p, thetas, seed: np.asarray(grad_norm(thetas), np.float64)  # noqa: E731
        return Spec(prob, start, None, inverse_calls(c, per * (prob.r + 1)), merit, same, None)
    if problem == "mlp":
        prob = problems.mlp_regression(R, **s["mlp"])
        eval_tasks = jax.vmap(prob.sample_task)(jax.random.split(jax.random.PRNGKey(10**6), s["n_eval"]))

        def start(seed):
            theta0 = regression_mlp_init(jax.random.fold_in(jax.random.PRNGKey(seed), 0),
                                                  s["mlp"]["d_in"], s["mlp"]["hidden"])
            return prob, theta0, ()

        one = lambda th, t: prob.outer_loss(th, inner_path(prob, th, t), t)  # noqa: E731
        query_loss = jax.jit(jax.vmap(lambda th: jnp.mean(jax.vmap(lambda t: one(th, t))(eval_tasks))))
        merit = lambda p, thetas, seed: np.asarray(query_loss(thetas), np.float64)  # noqa: E731

        return Spec(prob, start, optax.scale_by_adam(), linear_to_zero(MLP_LR, budget), merit, same, None)
    if problem == "hypercleaning":
        from ufom_bench.problems.hypercleaning import hypercleaning_metrics

        cache = {}

        def start(seed):
            prob, split, corrupted = hc_sim.load_data(scale, seed)
            cache[seed] = (split, corrupted)
            return prob, prob.theta0, ()

        def merit(p, thetas, seed):
            split, corrupted = cache[seed]
            fn = lambda th: hypercleaning_metrics(p, th, split.X_test, split.y_test, corrupted).test_accuracy  # noqa: E731
            return np.asarray(jax.jit(jax.vmap(fn))(thetas), np.float64)

        return Spec(None, start, optax.adam(hc_sim.LR["exact_me"]), None, merit, same, None)
    # few-shot: the first setting of its scale, tasks on traced data (fewshot.split_data)
    ws, f = fewshot_sim.WORKSPACE, fewshot_sim.check_scale(scale)
    source, m = f["settings"][0]
    base = ws.setting(scale, source, m).train

    def start(seed):
        return base, fewshot_sim.theta_init(ws, scale, source, m, seed), (fewshot_sim.split_data(ws, source),)

    def merit(p, thetas, seed):
        key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), 2)
        n = len(jax.tree_util.tree_leaves(thetas)[0])
        return np.array([fewshot_sim.evaluate(ws, scale, source, m, jax.tree_util.tree_map(lambda x: x[i], thetas),
                                              f["n_test"], key)[0].mean() for i in range(n)])

    return Spec(base, start, optax.scale_by_adam(), linear_to_zero(FEWSHOT_LR, budget), merit,
                lambda e: estimators.meta_batch(e, f["meta_batch"]),
                lambda p, data: fewshot_sim._on(p, data, m))


def configs(scale: str) -> list[dict]:
    s = check_scale(scale)
    out = []
    for problem in s["problems"]:
        for name, params in settings(r_of(problem, scale)):
            if s["estimators"] is None or name in s["estimators"]:
                out.append({"scale": scale, "problem": problem, "estimator": name,
                            "params": json.dumps(params, sort_keys=True)})
    return out


def _steps_at(rec_calls: np.ndarray, active: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """Steps taken by the time ``calls`` were spent (a step's calls are cumulative after it)."""
    taken = rec_calls[active]
    return np.searchsorted(taken, calls, side="right")


def cell_equal_budget(config: dict) -> pd.DataFrame:
    """One (problem, estimator setting) over the scale's seeds: rows per (seed, point) (module docstring)."""
    s = check_scale(config["scale"])
    scale, problem, name = config["scale"], check_problem(config["problem"]), config["estimator"]
    params = json.loads(config.get("params", "{}"))
    r, batch = r_of(problem, scale), meta_batch_of(problem, scale)
    budget, points = budget_of(problem, scale), points_of(problem, scale)
    c_max = max_cost(r, batch)
    merit_name, higher, log = MERITS[problem]
    const = {"label": label(name, params), "merit_name": merit_name, "higher_is_better": higher, "log_merit": log,
             "r": r, "total_budget": budget, "c_max": c_max, "outer_step": outer_step(problem, scale)}
    sp = spec(problem, scale)
    est = sp.wrap(estimators.get(name, **params))
    stop = budget - c_max + 1
    thresholds = tuple(b - c_max + 1 for b in points)
    max_steps = (stop - 1) // min_cost(name, params, r, batch) + 2
    rows = []
    program = None
    for seed in s["seeds"]:
        prob, theta0, extra = sp.start(int(seed))
        if seed == s["seeds"][0]:
            reason = estimators.not_applicable(est, prob)
            if reason is not None:
                return pd.DataFrame([{**const, "not_applicable": reason}])

        def run(theta0, key, *extra, prob=prob):
            p = sp.with_data(prob, extra[0]) if sp.with_data is not None else prob
            _, rec, snaps = train(p, est, theta0, key, budget=stop, schedule=sp.schedule, schedule_on="calls",
                                  optimizer=sp.optimizer, max_steps=max_steps, track_meta=False, track_loss=False,
                                  snapshots=thresholds)
            return rec.active, rec.calls, rec.n_diverged, snaps

        key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1)
        if program is None or sp.problem is None:  # one compiled program per cell (per seed where the problem is)
            program = jax.jit(run).lower(theta0, key, *extra).compile()
        t0 = time.perf_counter()
        out = jax.block_until_ready(program(theta0, key, *extra))
        run_seconds = time.perf_counter() - t0
        active, rec_calls, n_div, snaps = jax.device_get(out)
        run_calls = int(rec_calls[active][-1]) if active.any() else 0
        thetas = jax.tree_util.tree_map(lambda t0, t: jnp.concatenate([jnp.asarray(t0)[None], t]), theta0,
                                        snaps.theta)
        merit = sp.merit(prob, thetas, int(seed))
        calls = np.concatenate([[0], np.asarray(snaps.calls, np.int64)])
        steps = _steps_at(rec_calls, active, calls)
        taken_div = n_div[active]
        div = taken_div[np.maximum(steps - 1, 0)] * (steps > 0) if taken_div.size else np.zeros_like(steps)
        for i, b in enumerate([0] + points):
            rows.append({**const, "seed": int(seed), "point": i, "budget": int(b), "calls": int(calls[i]),
                         "steps": int(steps[i]), "seconds": run_seconds * calls[i] / max(run_calls, 1),
                         "run_seconds": run_seconds, "run_calls": run_calls, "merit": float(merit[i]),
                         "diverged": int(div[i]), "not_applicable": ""})
    return pd.DataFrame(rows)


CELLS = {"equal_budget": cell_equal_budget}
