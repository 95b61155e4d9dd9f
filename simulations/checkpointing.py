"""Binomial checkpointing of UFOM's exact branch (issue 16; not in the paper): what m stored inner states cost,
what q*(m) they imply, and whether UFOM(q*(m), m) still beats the exact gradient at the same memory.

**Cost cells** (``kind="cost"``), one per problem: for every m of the rules (1, 2, 4, ceil(log2 r), ceil(sqrt r),
r; a value given by several rules is measured once and lists them) one row of `exact_ckpt(m)`: its counted grad
and HVP calls (the estimate's own counters) beside the formula 1 + t(r + 1, m) and r
(`theory.checkpointed_calls`), the seconds of the compiled estimate and its XLA temporary bytes
(`frontier.measure_estimates`: one compilation each; every program of the cell timed in turn in each round, the
minimum over rounds of the mean over fixed keys, compilation excluded), q*(m) of (19)-(21) with C_rnd(r, m) and
C1 = C2 = 1 (`theory.optimal_q_checkpointed`), and UFOM(q*(m), m)'s expected calls
(`theory.checkpointing.expected_calls`) and expected seconds (1 - q*) s_fom + q* s_exact_ckpt(m), from the two
branches' measured seconds. Beside them one row each of
fom, exact (Algorithm 2, r stored states) and exact_me (Algorithm 4's recomputation, one) where the scale
measures them (``baselines``). D^2 and V^2:
  synthetic: Figure 1f's setting, Figure 1d's two piecewise tasks (a = (0.5, 1.5), b = (0, 10), A = 400) at
             alpha = 0.01 with r = 10, and the same tasks at r = 100 (where m matters more); D^2, V^2 the max
             over a theta grid in [-50, 50] of the exact expectations over the two tasks, as in fig1f (the
             max sits at the grid's end, theta = -50, so any grid holding it gives fig1f's values);
  mlp:       `simulations.frontier.build("mlp", scale)` (the frontier's MAML-style regression, float32);
  fewshot:   `problems.fewshot` on glyphs' training classes at the few-shot experiment's default size
             (5-way 1-shot, conv4 with 8 filters, r = 10, alpha = 0.4, float32).
  On mlp and fewshot D^2, V^2 are Monte Carlo means at theta0 over ``n_tasks`` drawn tasks (with SEs), G_FO and
  G from the compiled programs of fom and exact_ckpt(r) that the cell measured (`moments_at_theta0`).

**Training cells** (``kind="train"``), one per memory budget m: equal budgets of function calls on the synthetic
problem at Figure 1f's setting (alpha = 0.01, r = 10): UFOM(q*(m), m) (`estimators.ufom(q, checkpoints=m)`)
against the exact gradient with the same memory (m = 1: exact_me's cost; m = r: exact's, Algorithm 2; else
exact_ckpt(m)'s) and FOM, all three as ufom(q, checkpoints=m) at q = 0, q*(m), 1 in one compiled program
(`cell_train`). The one outer loop `train.train`, vmapped over runs: plain SGD from theta_0 ~ U[-50, 50]
with the step annealed on the calls spent (``schedule_on="calls"``): gamma = 10 / (c / (r + 1) + 2) after c
calls, Figure 1f's gamma_k = 10/(k + 1) for FOM (r + 1 calls a step) and the same step size at the same calls
for every estimator. Rows mirror fig1f's: |dM_r/dtheta| on a grid of calls (mean, 10/50/90% quantiles over
runs, mean of its square and that mean's SE), and each run's value at the budget (paired across estimators).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from ufom_bench import estimators, frontier, montecarlo, problems, theory
from ufom_bench.errors import UserError, check_choice
from ufom_bench.simulations import fewshot as fewshot_sim
from ufom_bench.simulations import frontier as frontier_sim
from ufom_bench.simulations import synthetic
from ufom_bench.theory import zoo
from ufom_bench.train import default_max_steps, train

RULES = ("1", "2", "4", "log2(r)", "sqrt(r)", "r")
BASELINES = ("fom", "exact", "exact_me")
FEWSHOT = dict(source="glyphs", ways=5, model="conv4", r=fewshot_sim.SCALES["default"]["r"],
               alpha=fewshot_sim.SCALES["default"]["alpha"])
GAMMA0 = 10.0  # Figure 1's outer step constant: gamma_k = 10 / (k + 1)
THETA_RANGE = (-50.0, 50.0)  # Figure 1e-f's starts and the grid of D^2, V^2's max

# problems: (name, r) of the cost cells; n_theta: grid of the synthetic problem's D^2, V^2; n_tasks: task draws
# of D^2, V^2 at theta0 on mlp and fewshot; repeats, n_keys: timing rounds and calls per round
# (`frontier.measure_estimates`); filters: few-shot conv4 filters; baselines: per problem, which of `BASELINES` are
# measured (default all; fom is needed: UFOM's first-order branch; the default scale leaves exact and exact_me
# out on few-shot, where each compiled program costs seconds, and their counts are exact_ckpt(r)'s and
# exact_ckpt(1)'s); train: runs (theta_0 draws), budget of calls, the
# memory budgets m (ints, or "r") and the calls grid of the curves.
SCALES = {
    "smoke": dict(problems=(("synthetic", 4),), n_theta=101, n_tasks=8, repeats=1, n_keys=2, filters=4,
                  baselines={"synthetic": ("fom",)}, train=dict(runs=8, budget=1_500, ms=(2,), grid=50)),
    "default": dict(problems=(("synthetic", 10), ("synthetic", 100), ("mlp", 10), ("fewshot", 10)), n_theta=1001,
                    n_tasks=32, repeats=5, n_keys=3, filters=8, baselines={"fewshot": ("fom",)},
                    train=dict(runs=1_000, budget=20_000, ms=(1, 4, "r"), grid=200)),
    "paper": dict(problems=(("synthetic", 10), ("synthetic", 100), ("synthetic", 1000), ("mlp", 10), ("fewshot", 10)),
                  n_theta=5001, n_tasks=256, repeats=10, n_keys=10, filters=64, baselines={},
                  train=dict(runs=2_000, budget=100_000, ms=(1, 2, 4, "r"), grid=200)),
}


def check_scale(scale: str) -> dict:
    return SCALES[check_choice("scale", scale, SCALES)]


def checkpoints(rule: str, r: int) -> int:
    """The m a rule gives at r: 1, 2, 4, ceil(log2 r), ceil(sqrt r) or r, at least 1 and at most r."""
    if rule not in RULES:
        raise UserError(f"unknown checkpoint rule {rule!r}; choose one of {', '.join(RULES)}")
    value = {"log2(r)": math.ceil(math.log2(r)) if r > 1 else 1, "sqrt(r)": math.isqrt(r - 1) + 1 if r > 1 else 1,
             "r": r}.get(rule)
    return max(1, min(int(r), int(rule) if value is None else value))


def checkpoint_values(r: int) -> dict[int, list[str]]:
    """{m: the rules giving it} over `RULES` at r, in increasing m."""
    out: dict[int, list[str]] = {}
    for rule in RULES:
        out.setdefault(checkpoints(rule, r), []).append(rule)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------------ problems


def synthetic_problem(r: int):
    """Figure 1f's problem (Figure 1d's tasks at alpha = 0.01) with r inner steps."""
    return synthetic.panel_d_problem(synthetic.ALPHA_F, r)


def fewshot_problem(filters: int):
    """5-way 1-shot conv4 on glyphs' training classes (`FEWSHOT`), float32; images from the few-shot
    experiment's `WORKSPACE` (loaded once a process)."""
    sampler = fewshot_sim.WORKSPACE.source(FEWSHOT["source"]).train
    return problems.fewshot(sampler, m=FEWSHOT["ways"], k=1, k_query=1, r=FEWSHOT["r"], alpha=FEWSHOT["alpha"],
                            model=FEWSHOT["model"], filters=int(filters), dtype=jnp.float32)


def build(problem: str, r: int, scale: str):
    """The Problem of a cost cell (module docstring)."""
    s = check_scale(scale)
    if problem == "synthetic":
        return synthetic_problem(r)
    if problem == "mlp":
        return frontier_sim.build("mlp", scale)
    if problem == "fewshot":
        return fewshot_problem(s["filters"])
    raise UserError(f"unknown checkpointing problem {problem!r}; choose one of synthetic, mlp, fewshot")


def moments_at_theta0(prob, fom_program, exact_program, n: int, key) -> montecarlo.Moments:
    """D^2, V^2 at theta0 over n tasks drawn with ``key``, from the compiled programs of fom (G_FO) and of an
    exact estimator (G) that the cell has measured already (no further compilation; a few-shot sampler closes
    over its images, so tasks are drawn outside the programs)."""
    state, k0 = (), jax.random.PRNGKey(0)
    g_fo, g = [], []
    def flat(program, task):  # a diverged estimate (`Info.diverged`) is NaN: counted and excluded by moments_of
        grad, info = program(prob, prob.theta0, task, k0, state)
        return jnp.where(info.diverged, jnp.nan, ravel_pytree(grad)[0])

    for k in jax.random.split(key, n):
        task = prob.sample_task(k)
        g_fo.append(flat(fom_program, task))
        g.append(flat(exact_program, task))
    g_fo, g = jnp.stack(g_fo), jnp.stack(g)
    finite = jnp.all(jnp.isfinite(g_fo), -1) & jnp.all(jnp.isfinite(g), -1)
    samples = montecarlo.Samples(g_fo, g, jnp.full((n,), 1.0 / n, g.dtype), finite, "sampled")
    return montecarlo.moments_of(samples)[0]


# ------------------------------------------------------------------------------------------------ cells


def configs(scale: str) -> list[dict]:
    s = check_scale(scale)
    cost = [{"scale": scale, "kind": "cost", "problem": p, "r": int(r), "seed": 0} for p, r in s["problems"]]
    r = synthetic.PANEL_D["r"]
    ms = [r if m == "r" else int(m) for m in s["train"]["ms"]]
    return cost + [{"scale": scale, "kind": "train", "problem": "synthetic", "r": r, "m": m, "seed": 0} for m in ms]


def cell_checkpointing(config: dict) -> pd.DataFrame:
    kind = config.get("kind")
    if kind == "cost":
        return cell_cost(config)
    if kind == "train":
        return cell_train(config)
    raise UserError(f"unknown checkpointing cell kind {kind!r}; choose cost or train")


def cell_cost(config: dict) -> pd.DataFrame:
    """One problem: exact_ckpt(m) for every m of the rules, and the scale's baselines (module docstring)."""
    s = check_scale(config["scale"])
    key = jax.random.PRNGKey(config["seed"])
    problem = config["problem"]
    prob = build(problem, config["r"], config["scale"])
    r = prob.r
    leaves = jax.tree_util.tree_leaves(prob.theta0)

    names = list(s["baselines"].get(problem, BASELINES))
    ms = checkpoint_values(r)
    ests = [estimators.get(name) for name in names] + [estimators.exact_ckpt(m) for m in ms]
    costs = frontier.measure_estimates(prob, ests, repeats=s["repeats"], n_keys=s["n_keys"],
                                       key=jax.random.fold_in(key, 1))
    programs = dict(zip(names + list(ms), (c.compiled for c in costs)))
    rows = []
    for what, c in zip(names + list(ms), costs):
        ckpt = what in ms
        g, h = theory.checkpointed_calls(r, what) if ckpt else zoo.calls(what, r)
        rows.append({"label": f"exact_ckpt(m={what})" if ckpt else what, "m": what if ckpt else np.nan,
                     "m_rules": ", ".join(ms[what]) if ckpt else "",
                     "stored_states": what if ckpt else zoo.stored_states(what, r),
                     "grad_calls": c.grad_calls, "hvp_calls": c.hvp_calls, "calls": c.grad_calls + c.hvp_calls,
                     "temp_bytes": c.temp_bytes, "seconds": c.seconds, "formula_grad_calls": int(g),
                     "formula_hvp_calls": int(h)})
    if problem == "synthetic":
        sup = synthetic.sup_moments(prob, s["n_theta"], *THETA_RANGE)
        mom = {"D2": sup["D2"], "V2": sup["V2"], "D2_se": 0.0, "V2_se": 0.0, "n_diverged": sup["diverged"],
               "moments": f"max over {s['n_theta']} thetas in [-50, 50], exact over the 2 tasks"}
    else:
        mc = moments_at_theta0(prob, programs["fom"], programs[r], s["n_tasks"], jax.random.fold_in(key, 0))
        mom = {"D2": mc.d2, "V2": mc.v2, "D2_se": mc.d2_se, "V2_se": mc.v2_se, "n_diverged": mc.n_diverged,
               "moments": f"theta0, {mc.n} sampled tasks"}
    frame = pd.DataFrame(rows).assign(**mom, state_bytes=int(sum(x.nbytes for x in leaves)),
                                      dim_theta=int(sum(x.size for x in leaves)))
    frame["estimator"] = frame["label"].str.split("(").str[0]
    # q*(m) of (19)-(21) with C_rnd(r, m), C1 = C2 = 1, and UFOM(q*(m), m)'s expected calls and seconds
    ckpt = frame["estimator"] == "exact_ckpt"
    m_values = frame.loc[ckpt, "m"].astype(int).to_numpy()
    q = np.asarray(theory.optimal_q_checkpointed(mom["D2"], mom["V2"], r, m_values), float)
    ug, uh = theory.checkpointing.expected_calls(r, q, m_values)
    s_fom = float(frame.loc[frame["estimator"] == "fom", "seconds"].iloc[0])
    frame.loc[ckpt, "q_star"] = q
    frame.loc[ckpt, "ufom_grad_calls"], frame.loc[ckpt, "ufom_hvp_calls"] = ug, uh
    frame.loc[ckpt, "ufom_calls"] = ug + uh
    frame.loc[ckpt, "ufom_seconds"] = (1 - q) * s_fom + q * frame.loc[ckpt, "seconds"].to_numpy()
    return frame


def exact_label(m: int, r: int) -> str:
    """The exact estimator with m stored states: exact_me (m = 1), exact (Algorithm 2, m = r), exact_ckpt(m)."""
    return "exact_me" if m == 1 else ("exact" if m >= r else f"exact_ckpt(m={m})")


def cell_train(config: dict) -> pd.DataFrame:
    """FOM, UFOM(q*(m), m) and the exact gradient with m stored states, outer SGD at an equal budget of calls.

    The three are `estimators.ufom(q, checkpoints=m)` at q = 0, q*(m), 1, with q traced and vmapped (one
    compiled program, as fig1f): q = 0 never draws xi = 1 (FOM's estimate and r + 1 calls a step); q = 1
    always does (exact_ckpt(m)'s gradient and its 1 + t(r + 1, m) grads and r HVPs: exact_me's counts at
    m = 1, Algorithm 2's at m = r). Every q sees the same starts and the same task and coin keys, so finals
    are paired by run. Rows: record "curve" (statistics over runs on a grid of calls) and record "final"
    (each run's |dM_r/dtheta| at the budget: the value after its last step within the budget).
    """
    s = check_scale(config["scale"])
    t = s["train"]
    m = int(config["m"])
    prob = synthetic_problem(int(config["r"]))
    r = prob.r
    if not 1 <= m <= r:
        raise UserError(f"a training cell's m must be in [1, r = {r}], got m = {m}")
    mom = synthetic.sup_moments(prob, s["n_theta"], *THETA_RANGE)
    q_star = float(theory.optimal_q_checkpointed(mom["D2"], mom["V2"], r, m))
    qs = {"fom": 0.0, "ufom": q_star, "exact": 1.0}
    labels = {"fom": "fom", "ufom": f"ufom(q={q_star:.3f}, m={m})", "exact": exact_label(m, r)}
    budget = int(t["budget"])
    key = jax.random.PRNGKey(config["seed"])
    starts = jax.random.uniform(jax.random.fold_in(key, 0), (t["runs"],), jnp.float64, *THETA_RANGE)
    keys = jax.random.split(jax.random.fold_in(key, 1), t["runs"])
    schedule = lambda calls: GAMMA0 / (calls / (r + 1) + 2.0)

    def runs(q):
        est = estimators.ufom(q, checkpoints=m)
        one = lambda th, k: train(prob, est, th, k, budget=budget, max_steps=default_max_steps(prob, budget),
                                  schedule=schedule, schedule_on="calls")
        return jax.vmap(one)(starts, keys)

    _, rec = jax.jit(jax.vmap(runs))(jnp.asarray(list(qs.values())))
    grid = np.linspace(0, budget, t["grid"] + 1)[1:]
    common = {"q_star": q_star, "budget": budget, "alpha": synthetic.ALPHA_F, "D2": mom["D2"],
              "V2": mom["V2"]}
    frames = []
    for i, name in enumerate(qs):
        calls, g = np.asarray(rec.calls[i], float), np.asarray(rec.meta_grad_norm[i])
        on_grid = synthetic._curve_on_calls(calls, g, grid)
        started = np.sum(~np.isnan(on_grid), 0)
        active = np.asarray(rec.active[i])
        diverged = int(np.asarray(rec.n_diverged[i])[:, -1].sum())
        with warnings.catch_warnings():  # grid points before any run's first step are all-NaN: reported as NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            sq = on_grid**2
            frames.append(pd.DataFrame({
                "record": "curve", "estimator": name, "label": labels[name], "q": qs[name], "calls": grid,
                "grad_mean": np.nanmean(on_grid, 0), "grad_q10": np.nanquantile(on_grid, 0.1, 0),
                "grad_q50": np.nanmedian(on_grid, 0), "grad_q90": np.nanquantile(on_grid, 0.9, 0),
                "grad_sq_mean": np.nanmean(sq, 0),
                "grad_sq_se": np.nanstd(sq, 0, ddof=1) / np.sqrt(np.maximum(started, 1)),
                "runs_started": started, "steps_mean": float(active.sum(1).mean()), "diverged": diverged, **common}))
        frames.append(pd.DataFrame({
            "record": "final", "estimator": name, "label": labels[name], "q": qs[name], "run": np.arange(g.shape[0]),
            "calls": budget, "grad_final": on_grid[:, -1], "steps": active.sum(1), "diverged": diverged, **common}))
    return pd.concat(frames, ignore_index=True)
