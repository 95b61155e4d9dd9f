"""Efficiency against the cost model of Proposition 1: does an estimate cost what its counted calls predict?

For a target T in {exact_me, ufom with xi = 1} at r inner steps:

    measured  = t(T) / t(fom)
    predicted = (C1 g_T + C2 h_T) / (C1 g_fom + C2 h_fom),   g, h: grad and HVP calls (Proposition 1)
              = (C1 (r + 1 + r(r-1)/2) + C2 r) / (C1 (r + 1))
    track_cost_model_ratio = measured / predicted          (1: the estimator adds nothing to its calls)

Every time is a *marginal* cost, measured the same way for the calls and for the estimates: a jitted chain
of n dependent repetitions and one of 2n, (t(2n) - t(n)) / n. Each repetition depends on the one before
(the next gradient is taken at the new phi, the next HVP at a moved point, the next estimate at
theta - 1e-12 G), so XLA can neither drop nor hoist one, and what a single call also pays once (Python
dispatch, argument handling, waking XLA's threads: about 0.1 ms here) cancels. C1 is then the cost of
one gradient dL_in/dphi, C2 of one HVP (the reverse pass of Algorithm 4 giving both products).

`track_cost_model_ratio_dispatched` uses single dispatched estimates instead (what `Estimate.time_estimate`
times): at small r the fixed cost of a call is a visible share of FOM's time, and this ratio falls below 1.

All times are minima over interleaved repetitions in one process (benchmarks._common.interleaved_min).
``python -m benchmarks.cost_model`` prints the table without asv.
"""

from __future__ import annotations

import sys

from . import _common as C

TARGETS = ("exact_me", "ufom[xi=1]")
PROBLEMS = ("quadratic", "mlp")
CHAIN_SECONDS = 0.02 if C.TINY else 0.025  # an estimate chain repeats an estimate for about this long


def _call_chains(problem, theta, task, n: int):
    """Jitted chains of n dependent gradient calls and of n dependent HVPs at the problem's first step size."""
    import jax

    tmap = jax.tree_util.tree_map
    alpha = problem.step_sizes[0]

    def grad_phi(th, ph):
        return jax.grad(problem.inner_loss, argnums=1)(th, ph, task)

    def grads(theta):
        def body(_, phi):
            return tmap(lambda p, g: p - alpha * g, phi, grad_phi(theta, phi))

        return jax.lax.fori_loop(0, n, body, problem.init_inner(theta, task))

    def hvps(theta):
        def body(_, carry):
            phi, b1, b2 = carry
            _, vjp = jax.vjp(grad_phi, theta, phi)
            h_theta, h_phi = vjp(b2)
            b1 = tmap(lambda b, h: b - alpha * h, b1, h_theta)
            b2 = tmap(lambda b, h: b - alpha * h, b2, h_phi)
            # Move the linearisation point with the carry, so that the forward part of the HVP is not
            # loop-invariant (XLA would hoist it out of the loop and the chain would undercount C2).
            phi = tmap(lambda p, b: p - alpha * b, phi, b2)
            return phi, b1, b2

        phi0 = problem.init_inner(theta, task)
        b2 = tmap(lambda p: p * 0 + 1, phi0)
        return jax.lax.fori_loop(0, n, body, (phi0, tmap(lambda t: t * 0, theta), b2))

    return jax.jit(grads), jax.jit(hvps)


def _estimate_chain(fn, n: int):
    """Jitted chain of n dependent estimates: theta <- theta - 1e-12 G (numerically theta in float32, but
    XLA cannot know), with the counters and the finiteness flag of every ``info`` kept live."""
    import jax
    import jax.numpy as jnp

    def chain(problem, theta, task, key, state):
        def body(_, carry):
            th, acc = carry
            g, info = fn(problem, th, task, key, state)
            th = jax.tree_util.tree_map(lambda t, d: t - 1e-12 * d, th, g)
            return th, acc + info.grad_calls + info.hvp_calls + info.finite.astype(acc.dtype)

        return jax.lax.fori_loop(0, n, body, (theta, jnp.zeros((), jnp.int32)))

    return jax.jit(chain)


def workloads(problem: str) -> tuple[dict, dict]:
    """(calls, counts) of one problem, for every r in R_COST_MODEL and every estimate in ("fom",) + TARGETS.

    ``calls``, for `C.interleaved_min`: ("single", what, r) one dispatched estimate; ("chain", what, r, m)
    a chain of m estimates, for m = n and 2 n; ("grads", m) and ("hvps", m) chains of m calls, for m = CHAIN
    and 2 CHAIN. ``counts[what, r]``: the (grad, HVP) calls counted in one estimate, checked against
    Proposition 1. Building them compiles and runs every program once.
    """
    import jax

    from ufom_bench import theory

    calls, counts, built_at = {}, {}, {}
    for r in C.R_COST_MODEL:
        built = built_at[r] = C.build_problem(problem, r)
        for what in ("fom",) + TARGETS:
            name, xi = C.parse(what)
            work = C.Workload(name, r, problem, built)
            key = jax.random.PRNGKey(0) if xi is None else work.keys_with_xi([xi])[0]
            _, info = work.call(key)
            got = (int(info.grad_calls), int(info.hvp_calls))
            want = tuple(int(x) for x in theory.branch_calls(r, 0 if what == "fom" else 1))
            if got != want:
                raise RuntimeError(f"{what} at r = {r}: counted {got}, Proposition 1 says {want}")
            counts[what, r] = got
            args = work.args(key)
            single = min(C.seconds(work.jitted, *args) for _ in range(3))
            n = max(1, min(1000, round(CHAIN_SECONDS / single))) if single > 0 else 1000
            calls["single", what, r] = (work.jitted, args)
            calls["chain", what, r, n] = (_estimate_chain(work.fn, n), args)
            calls["chain", what, r, 2 * n] = (_estimate_chain(work.fn, 2 * n), args)
    prob, theta, task = built_at[C.R_COST_MODEL[0]]
    for n in (C.CHAIN, 2 * C.CHAIN):
        grads, hvps = _call_chains(prob, theta, task, n)
        calls["grads", n] = (grads, (theta,))
        calls["hvps", n] = (hvps, (theta,))
    return calls, counts


def marginals(t: dict) -> dict:
    """{"C1", "C2": seconds, "marginal", "single": {(what, r): seconds}} from the times ``t`` of `workloads`'
    calls: a chain's marginal cost per element is (t(2m) - t(m)) / m."""
    out = {"C1": (t["grads", 2 * C.CHAIN] - t["grads", C.CHAIN]) / C.CHAIN,
           "C2": (t["hvps", 2 * C.CHAIN] - t["hvps", C.CHAIN]) / C.CHAIN, "marginal": {}, "single": {}}
    for k, seconds in t.items():
        if k[0] == "single":
            out["single"][k[1:]] = seconds
        elif k[0] == "chain" and ("chain", k[1], k[2], 2 * k[3]) in t:
            out["marginal"][k[1:3]] = (t["chain", k[1], k[2], 2 * k[3]] - seconds) / k[3]
    return out


class _CostCache:
    def setup_cache(self):
        """{problem: {"C1", "C2", "marginal", "single", "counts"}} (`marginals` and `workloads`' counts), all
        calls of a problem timed interleaved in this process."""
        C.warm_up_compiler()
        out = {}
        for problem in PROBLEMS:
            calls, counts = workloads(problem)
            out[problem] = {**marginals(C.interleaved_min(calls)), "counts": counts}
        return out

    setup_cache.timeout = 1800


def ratios(cache: dict, target: str, r: int, problem: str) -> dict:
    """Measured and predicted time ratios over FOM, from the setup_cache result, for one combination.

    Returns measured / predicted ("ratio"), its factors, and the same with single dispatched estimates
    ("ratio_dispatched"). A marginal time that is not positive is no measurement of a cost (the chains'
    times differ by less than the machine's noise): the ratios that need it are NaN, which asv records as it
    records a skipped combination (n/a), and the reason goes to stderr. A number would pass noise off as a
    result; an exception would report a broken benchmark (and end ``python -m benchmarks.cost_model``) where
    only the measurement failed.
    """
    m = cache[problem]
    c1, c2 = m["C1"], m["C2"]
    t, t_fom = m["marginal"][target, r], m["marginal"]["fom", r]
    bad = [f"{what} = {s:.3g} s" for what, s in (("C1", c1), ("C2", c2), (f"t({target})", t), ("t(fom)", t_fom))
           if not s > 0]
    if bad:
        print(f"cost_model: marginal time {', '.join(bad)} on {problem} at r = {r}: the chains are too short for "
              "their time difference to rise above timer noise; ratios that need it are NaN", file=sys.stderr)
    nan = float("nan")
    g, h = m["counts"][target, r]
    g_fom, h_fom = m["counts"]["fom", r]
    predicted = (c1 * g + c2 * h) / (c1 * g_fom + c2 * h_fom) if c1 > 0 and c2 > 0 else nan
    measured = t / t_fom if t > 0 and t_fom > 0 else nan
    dispatched = m["single"][target, r] / m["single"]["fom", r]
    return {"measured": measured, "predicted": predicted, "ratio": measured / predicted,
            "measured_dispatched": dispatched, "ratio_dispatched": dispatched / predicted, "C1": c1, "C2": c2}


class CostModel(_CostCache):
    """measured / predicted time ratio over FOM (goal: within [0.9, 1.1]), and its factors."""

    params = (list(TARGETS), list(C.R_COST_MODEL), list(PROBLEMS))
    param_names = ("estimator", "r", "problem")
    timeout = 120

    def setup(self, cache, estimator, r, problem):
        self.values = ratios(cache, estimator, r, problem)

    def track_cost_model_ratio(self, cache, estimator, r, problem):
        return self.values["ratio"]

    track_cost_model_ratio.unit = "ratio"

    def track_cost_model_ratio_dispatched(self, cache, estimator, r, problem):
        return self.values["ratio_dispatched"]

    track_cost_model_ratio_dispatched.unit = "ratio"

    def track_measured_time_ratio(self, cache, estimator, r, problem):
        return self.values["measured"]

    track_measured_time_ratio.unit = "ratio"

    def track_predicted_time_ratio(self, cache, estimator, r, problem):
        return self.values["predicted"]

    track_predicted_time_ratio.unit = "ratio"


if __name__ == "__main__":  # python -m benchmarks.cost_model: the table of ratios, without asv
    cache = CostModel().setup_cache()
    print(f"{'problem':<10} {'r':>4} {'estimator':<11} {'measured':>9} {'predicted':>9} {'ratio':>6} {'dispatched':>10}")
    for problem in PROBLEMS:
        for r in C.R_COST_MODEL:
            for target in TARGETS:
                v = ratios(cache, target, r, problem)
                print(f"{problem:<10} {r:>4} {target:<11} {v['measured']:9.3f} {v['predicted']:9.3f} "
                      f"{v['ratio']:6.3f} {v['ratio_dispatched']:10.3f}")
    for problem in PROBLEMS:
        print(f"{problem}: C1 = {1e6 * cache[problem]['C1']:.0f} us, C2 = {1e6 * cache[problem]['C2']:.0f} us")
