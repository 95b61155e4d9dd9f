"""Measure hypergradient estimators against the exact gradient: one tidy row per (estimator setting, theta).

Each row holds the Monte Carlo moments of `montecarlo.estimator_moments` (bias^2, the task and own parts of
the variance, MSE, all with SEs; mean counted calls), the cost formula's counts (`theory.zoo`), the XLA
temporary bytes of one jitted estimate and the seconds of that compiled program (mean over fixed keys, minimum
over rounds, compilation excluded), both from one compilation (`cost_of_estimate`).

Sharing (the issue's "reuse per-task samples where the mathematics allows"): the UFOM family is measured from
one set of pairs (G_FO, G) per task (`montecarlo.gradient_samples`): fom's estimate is G_FO, exact's, exact_me's
and exact_ckpt(m)'s is G, and ufom(q)'s and ufom(q, checkpoints=m)'s given its coin xi ~ Bernoulli(q) is
G_FO + (xi / q)(G - G_FO) (Algorithm 4), so every q and m costs host arithmetic only; only the counts differ
(m changes how the exact branch reaches G, not G: exact_me and exact_ckpt equal Algorithm 2 up to rounding).
Every other estimator draws its own (task, key) samples beside the exact G (`montecarlo.estimator_samples`),
all of them on the same task draws (the same key). A ``cache`` dict passed to `measure` at every theta of one
problem keeps the estimators and the compiled timing programs, so a second theta compiles nothing.

    from ufom_bench import frontier, problems
    rows = frontier.measure(problems.quadratic(), [("fom", {}), ("ufom", {"q": 0.1}), ("pzobo", {"n_dirs": 4})],
                            n_tasks=64, n_keys=8, key=jax.random.PRNGKey(0))
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import pandas as pd

from ufom_bench import theory
from ufom_bench.theory import zoo
from ufom_bench import analysis, estimators, memory, montecarlo
from ufom_bench.errors import UserError

__all__ = ["PAIR_FAMILY", "Comparison", "EstimateCost", "compare", "label", "measure", "measure_estimate",
           "measure_estimates", "pair_estimator_samples", "temp_bytes", "estimate_fn", "cost_of_estimate"]

# Estimators whose samples follow from the pair (G_FO, G) of each task (Algorithm 4's branches).
PAIR_FAMILY = ("exact", "exact_me", "exact_ckpt", "fom", "ufom")


def label(name: str, params: dict) -> str:
    """``"ufom(q=0.1)"``; the name alone without parameters."""
    inner = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{name}({inner})" if inner else name


def estimate_fn(estimator):
    """``(problem, theta, task, key, state) -> (grad, info)``: one estimate, to jit."""

    def fn(problem, theta, task, key, state):
        grad, info, _ = estimator.estimate(problem, theta, task, key, state)
        return grad, info

    return fn


def _args(problem, estimator, theta, task, key):
    theta = problem.theta0 if theta is None else theta
    task = problem.sample_task(jax.random.PRNGKey(0)) if task is None else task
    key = jax.random.PRNGKey(1) if key is None else key
    return problem, theta, task, key, estimator.init(theta)


def temp_bytes(problem, estimator, theta=None, task=None) -> int:
    """XLA temporary bytes of one jitted estimate (`memory.temp_bytes`; compiled, never run). The task defaults to
    the one drawn with PRNGKey(0)."""
    return memory.temp_bytes(estimate_fn(estimator), *_args(problem, estimator, theta, task, None))


class EstimateCost(NamedTuple):
    """What `measure_estimate` returns: XLA temp bytes and seconds of one jitted estimate, the counted grad and
    HVP calls of its first call (key fold_in(key, 0); the estimate's own `Info` counters), and the compiled
    program ``(problem, theta, task, key, state) -> (grad, info)``, to call again without compiling."""

    temp_bytes: int
    seconds: float
    grad_calls: int
    hvp_calls: int
    compiled: Any


def measure_estimate(problem, estimator, theta=None, task=None, repeats: int = 3, key=None,
                     n_keys: int = 10, program: EstimateCost | None = None) -> EstimateCost:
    """`cost_of_estimate` plus the counted calls, from the same single compilation (`EstimateCost`); with
    ``program`` (an earlier `EstimateCost` of this estimate on arguments of the same shapes, e.g. at another
    theta) its compiled program is timed again instead of compiling."""
    return measure_estimates(problem, [estimator], theta, task, repeats, key, n_keys, [program])[0]


def measure_estimates(problem, estimators_, theta=None, task=None, repeats: int = 3, key=None,
                      n_keys: int = 10, programs: Sequence[EstimateCost | None] | None = None) -> list[EstimateCost]:
    """`measure_estimate` of several estimators on the same (theta, task, keys), timed interleaved: each round
    times every compiled program once (the mean over the ``n_keys`` keys) in turn, and each program's seconds
    are its minimum over ``repeats`` rounds, so that a change in the machine's load between programs does not
    bias their ratios. One compilation per estimator (none where ``programs`` gives an earlier one); one
    untimed round first."""
    if int(repeats) < 1 or int(n_keys) < 1:
        raise UserError(f"repeats and n_keys must be >= 1, got repeats = {repeats!r}, n_keys = {n_keys!r}")
    runs = []
    for estimator, earlier in zip(estimators_, programs or [None] * len(estimators_)):
        problem_, theta_, task_, key_, state = _args(problem, estimator, theta, task, key)
        keys = [jax.random.fold_in(key_, i) for i in range(int(n_keys))]
        if earlier is None:
            compiled, stats = memory.compiled_stats(estimate_fn(estimator), problem_, theta_, task_, keys[0], state)
            temp = stats["temp_bytes"]
        else:
            compiled, temp = earlier.compiled, earlier.temp_bytes
        call = lambda c=compiled, a=(problem_, theta_, task_), s=state, ks=keys: [
            jax.block_until_ready(c(*a, k, s)) for k in ks]
        _, info = call()[0]
        runs.append((call, temp, info, compiled))
    best = [float("inf")] * len(runs)
    for _ in range(int(repeats)):
        for i, (call, *_) in enumerate(runs):
            t = time.perf_counter()
            call()
            best[i] = min(best[i], (time.perf_counter() - t) / int(n_keys))
    return [EstimateCost(temp, b, int(info.grad_calls), int(info.hvp_calls), compiled)
            for b, (_, temp, info, compiled) in zip(best, runs)]


def cost_of_estimate(problem, estimator, theta=None, task=None, repeats: int = 3, key=None,
                     n_keys: int = 10) -> tuple[int, float]:
    """(XLA temp bytes, wall seconds) of one jitted estimate from a single compilation (`memory.compiled_stats`).

    Seconds: one round calls the compiled program once for each of ``n_keys`` fixed keys (fold_in(key, i)) and
    takes the mean, so a random estimator's own coin (UFOM's xi, Adaptive UFOM's) is averaged over as far as
    those keys sample it; the result is the minimum over ``repeats`` rounds, after one untimed round
    (compilation excluded). The task defaults to the one drawn with PRNGKey(0). `measure_estimate` also
    returns the counted calls.
    """
    cost = measure_estimate(problem, estimator, theta, task, repeats, key, n_keys)
    return cost.temp_bytes, cost.seconds


def pair_estimator_samples(pair: montecarlo.Samples, name: str, params: dict, r: int, n_keys: int,
                           key) -> montecarlo.EstimatorSamples:
    """`EstimatorSamples` of fom, exact, exact_me, exact_ckpt(m), ufom(q) or ufom(q, checkpoints=m) derived from
    the pairs (G_FO, G) of each task.

    ufom(q): est = G_FO + (xi / q)(G - G_FO), xi ~ Bernoulli(q) per (task, key) from ``key``; its calls are
    Algorithm 4's branch counts given xi (`theory.branch_calls`, Proposition 1, checked against the counters
    by the estimator tests); with ``checkpoints`` = m the exact branch is exact_ckpt(m)'s
    (`theory.checkpointing.branch_calls`: r + 1 grads when xi = 0, 1 + t(r + 1, m) grads and r HVPs when xi = 1).
    fom, exact, exact_me, exact_ckpt(m): deterministic, their counts from `theory.zoo`.
    """
    g_fo, g = np.asarray(pair.g_fo, np.float64), np.asarray(pair.g, np.float64)
    m = g.shape[0]
    if name == "ufom":
        q = float(params.get("q", zoo.DEFAULTS["ufom"]["q"]))
        xi = np.asarray(jax.random.bernoulli(key, q, (m, n_keys)), np.float64)
        est = g_fo[:, None, :] + (xi / q)[..., None] * (g - g_fo)[:, None, :]
        if params.get("checkpoints") is None:
            grads, hvps = (np.asarray(c, np.float64) for c in theory.branch_calls(r, xi))
        else:
            branch = lambda x: theory.checkpointing.branch_calls(r, params["checkpoints"], x)
            grads, hvps = (np.vectorize(lambda x, i=i: branch(x)[i], otypes=[np.float64])(xi) for i in (0, 1))
    elif name in ("exact", "exact_me", "exact_ckpt", "fom"):
        est = np.repeat((g_fo if name == "fom" else g)[:, None, :], n_keys, 1)
        grads, hvps = (np.full((m, n_keys), c) for c in zoo.calls(name, r, **params))
    else:
        raise UserError(f"{name!r} is not derived from the pair; choose one of {', '.join(PAIR_FAMILY)}")
    return montecarlo.EstimatorSamples(g, est, grads, hvps, np.asarray(pair.weight), np.asarray(pair.finite),
                                       pair.method, label(name, params))


def _row(name, params, r, m: montecarlo.EstimatorMoments) -> dict:
    """The row of one setting. mse: E_T E ||G_hat - G_T||^2 against the exact gradient of the same task; rel_mse:
    mse / ||dM/dtheta||^2 (its SE ignores the noise of the denominator, exact in exact mode); sgd_error:
    E ||G_hat - dM/dtheta||^2 = bias2 + var, the error an outer SGD step sees (SE in quadrature)."""
    theory_grads, theory_hvps = zoo.calls(name, r, **params)
    g2 = float(m.meta_grad @ m.meta_grad)
    return {
        "estimator": name, "setting": json.dumps(params, sort_keys=True), "label": label(name, params),
        "bias2": m.bias2, "bias2_se": m.bias2_se, "var_task": m.var_task, "var_task_se": m.var_task_se,
        "var_est": m.var_est, "var_est_se": m.var_est_se, "var": m.var,
        "var_se": float(np.hypot(m.var_task_se, m.var_est_se)), "mse": m.mse, "mse_se": m.mse_se,
        "rel_mse": m.mse / g2 if g2 > 0 else np.nan, "rel_mse_se": m.mse_se / g2 if g2 > 0 else np.nan,
        "sgd_error": m.bias2 + m.var, "sgd_error_se": float(np.sqrt(m.bias2_se**2 + m.var_task_se**2 + m.var_est_se**2)),
        "meta_grad_sq": g2,
        "grad_calls": m.grad_calls, "hvp_calls": m.hvp_calls, "calls": m.grad_calls + m.hvp_calls,
        "calls_se": float(np.hypot(m.grad_calls_se, m.hvp_calls_se)),
        "theory_grad_calls": theory_grads, "theory_hvp_calls": theory_hvps, "calls_formula": zoo.calls_text(name, **params),
        "stored_states": zoo.stored_states(name, r, **params),
        "memory_class": zoo.memory_class(zoo.stored_states(name, r, **params), r),
        "n": m.n, "n_keys": m.n_keys, "n_diverged": m.n_diverged, "method": m.method, "not_applicable": "",
    }


def measure(problem, settings: Iterable[tuple[str, dict]], theta=None, *, n_tasks: int | None = None,
            n_keys: int = 4, key=None, method: str = "auto", timing: bool = True, repeats: int = 3, chunk_size: int = 256,
            cache: dict | None = None, pair_keys: int | None = None) -> list[dict]:
    """One row per (name, params) of ``settings``: Monte Carlo moments against the exact G at ``theta``
    (default theta0), counted and formula calls, memory class, and optionally seconds per estimate and XLA
    temp bytes. A setting not defined on the problem gives a row with ``not_applicable`` = the reason and NaN
    measurements. The UFOM family shares one set of pairs (module docstring).

    Args:
      problem: the ABLO problem. settings: (registered name, parameters) pairs.
      n_tasks: task draws (sampled mode); n_keys: estimator keys per task (>= 2).
      key: PRNG key; every estimator outside the pair family sees the same task draws.
      method, chunk_size: as in `montecarlo.estimator_samples`.
      timing: measure ``temp_bytes`` and ``seconds`` (`cost_of_estimate`, ``repeats`` rounds).
      cache: a dict to pass again at every theta of the same problem (same shapes): it keeps each setting's
        estimator and compiled timing program, so the Monte Carlo and timing programs compile once per setting
        (jit's cache sees the same estimator) rather than once per theta.
      pair_keys: coins per task for the pair family (default ``n_keys``): host arithmetic on the shared pairs, so
        many cost nothing but memory (tasks x pair_keys x dim theta floats); with few tasks, ufom(q) needs
        well over 1/q of them to see its exact branch.
    """
    if key is None:
        raise UserError("frontier.measure needs a PRNG key")
    settings = [(name, dict(params)) for name, params in settings]
    theta = problem.theta0 if theta is None else jax.tree_util.tree_map(jnp.asarray, theta)
    k_mc, k_xi = jax.random.split(key)
    pair = None
    rows = []
    cache = {} if cache is None else cache
    for i, (name, params) in enumerate(settings):
        lab = label(name, params)
        if ("estimator", lab) not in cache:
            cache["estimator", lab] = estimators.get(name, **params)
        est = cache["estimator", lab]
        reason = estimators.not_applicable(est, problem, theta)
        if reason is not None:
            rows.append({"estimator": name, "setting": json.dumps(params, sort_keys=True),
                         "label": label(name, params), "calls_formula": zoo.calls_text(name, **params),
                         "not_applicable": reason})
            continue
        if name in PAIR_FAMILY:
            if pair is None:
                pair = montecarlo.gradient_samples(problem, theta, n_tasks, k_mc, method=method,
                                                   chunk_size=chunk_size)
            samples = pair_estimator_samples(pair, name, params, problem.r, n_keys if pair_keys is None else pair_keys,
                                             jax.random.fold_in(k_xi, i))
        else:
            samples = montecarlo.estimator_samples(problem, est, theta, n_tasks, n_keys, k_mc, method=method,
                                                   chunk_size=chunk_size)
        row = _row(name, params, problem.r, montecarlo.estimator_moments_of(samples))
        if timing:
            cost = measure_estimate(problem, est, theta, repeats=repeats, program=cache.get(("program", lab)))
            row["temp_bytes"], row["seconds"], cache["program", lab] = cost.temp_bytes, cost.seconds, cost
        rows.append(row)
    return rows


class Comparison(NamedTuple):
    """What `compare` returns: the rows, the Pareto front (``analysis.pareto_front``: rows sorted by cost with a
    ``pareto`` flag) and the recommendation (``analysis.recommend``)."""

    rows: pd.DataFrame
    front: pd.DataFrame
    recommendation: pd.DataFrame


def compare(problem, settings: Iterable[tuple[str, dict]] | None = None, theta=None, *,
            targets: Sequence[float] = (1.0, 0.1, 0.01), cost: str = "calls", error: str = "rel_mse",
            n_tasks: int | None = 64, n_keys: int = 8, key=None, timing: bool = True) -> Comparison:
    """The frontier on any `Problem`: `measure` every setting (default: every registered estimator with its
    defaults), then the Pareto front of ``error`` against ``cost`` and the cheapest estimator meeting each
    target under each memory budget (``analysis.recommend``; ``rel_mse`` targets are fractions of
    ||dM/dtheta||^2). Settings not defined on the problem keep their row, with the reason, and are left out of
    the front and the recommendation.

        cmp = frontier.compare(my_problem, key=jax.random.PRNGKey(0))
        cmp.recommendation[["target", "memory_budget", "estimator", "runner_up", "verdict"]]
    """
    settings = [(name, {}) for name in estimators.names()] if settings is None else list(settings)
    rows = pd.DataFrame(measure(problem, settings, theta, n_tasks=n_tasks, n_keys=n_keys, key=key,
                                timing=timing)).assign(problem=problem.name)
    ok = rows[rows["not_applicable"] == ""]
    return Comparison(rows, analysis.pareto_front(ok, cost, error),
                      analysis.recommend(ok, targets, cost, error))
