"""The cost model of Proposition 1 on the few-shot meta-step (Section 5.3): does a meta-step cost what its
counted calls cost?

    ratio = t(meta-step) / (g C1 + h C2)                  (1: the estimator adds nothing to its calls)

The meta-step is `benchmarks.fewshot`'s: conv4 with 64 filters and transductive batch norm, 5-way 1-shot,
one query example per class, meta-batch B = 5, r = 10, alpha = 0.4, float32, `estimators.meta_batch` (vmap),
jitted and compiled beforehand. g, h: the grad and HVP calls counted in one meta-step (its ``Info``, checked
against Proposition 1 times B: fom B (r + 1) grads; exact B (r + 1) grads and B r HVPs; exact_me and
ufom[xi=1] B (r + 1 + r(r-1)/2) grads and B r HVPs). C1: one task's gradient dL_in/dphi (L_out's gradient
costs the same: support and query sets have the same shape); C2: one HVP (the reverse pass of the gradient
giving both products, `estimators.core.hvp`). Each is measured four ways (CALLS):

    "top":        its own jitted program, one task;
    "top_batch":  its own jitted program vmapped over B tasks (per-task phi, as in the meta-step), / B;
    "loop":       a ``lax.fori_loop`` of r dependent calls on one task (the estimators' loop length), / r;
    "loop_batch": that loop vmapped over B tasks, / (r B).

The loops are dependent chains: the next gradient is taken at phi - alpha g, the next HVP at a point moved
with its carry, so XLA can neither drop nor hoist a call. "loop_batch" is the unit of work a vmapped
meta-step does: its ratio is the one to read. All times are minima over interleaved repetitions in one
process (`benchmarks._common.interleaved_min`). ``python -m benchmarks.cost_model_fewshot`` prints the
table (add ``--strategies`` to time `estimators.meta_batch`'s strategies "vmap" and "map" as well).
"""

from __future__ import annotations

import functools
import sys

from . import _common as C
from . import fewshot as F

ESTIMATES = ("fom", "exact", "exact_me", "ufom[xi=1]")
CALLS = ("top", "top_batch", "loop", "loop_batch")
STRATEGY_REPEATS = 2 if C.TINY else 7


def skip_reason(class_name: str, params: dict) -> str | None:
    """Every combination applies (V(theta, T) = theta for all four estimates)."""
    del class_name, params
    return None


def counted(estimate: str) -> tuple[int, int]:
    """(grads, HVPs) of one meta-step of ``estimate`` by Proposition 1: B times one task's calls."""
    from ufom_bench import theory
    from ufom_bench.theory import zoo

    name, xi = C.parse(estimate)
    per_task = theory.branch_calls(F.R, xi) if xi is not None else zoo.calls(name, F.R)
    return tuple(F.SIZES["meta_batch"] * int(x) for x in per_task)


def call_programs(problem, theta, tasks) -> dict:
    """{(kind, "grad" | "hvp"): (jitted fn, args, calls per run)} for every kind in CALLS, on the B tasks
    ``tasks`` (stacked on axis 0) at phi = theta for each task."""
    import jax
    import jax.numpy as jnp

    from ufom_bench.estimators import core

    tmap = jax.tree_util.tree_map
    r, b = problem.r, jax.tree_util.tree_leaves(tasks)[0].shape[0]
    alpha = problem.step_sizes[0]
    task = tmap(lambda x: x[0], tasks)
    stacked = tmap(lambda x: jnp.stack([x] * b), theta)

    def grad(phi, t):
        return core.inner_grad(problem, theta, phi, t)

    def hvp(phi, t, b2):
        return core.hvp(problem, theta, phi, t, b2)

    def grads(phi, t):
        def body(_, phi):
            return tmap(lambda p, g: p - alpha * g, phi, grad(phi, t))

        return jax.lax.fori_loop(0, r, body, phi)

    def hvps(phi, t):
        def body(_, carry):
            phi, b1, b2 = carry
            h_theta, h_phi = hvp(phi, t, b2)
            b1 = tmap(lambda u, h: u - alpha * h, b1, h_theta)
            b2 = tmap(lambda u, h: u - alpha * h, b2, h_phi)
            # the linearisation point moves with the carry: the forward part of the HVP is not loop-invariant
            return tmap(lambda p, u: p - alpha * u, phi, b2), b1, b2

        return jax.lax.fori_loop(0, r, body, (phi, tmap(jnp.zeros_like, theta), tmap(jnp.ones_like, phi)))

    return {
        ("top", "grad"): (jax.jit(grad), (theta, task), 1),
        ("top_batch", "grad"): (jax.jit(jax.vmap(grad)), (stacked, tasks), b),
        ("loop", "grad"): (jax.jit(grads), (theta, task), r),
        ("loop_batch", "grad"): (jax.jit(jax.vmap(grads)), (stacked, tasks), r * b),
        ("top", "hvp"): (jax.jit(hvp), (theta, task, theta), 1),
        ("top_batch", "hvp"): (jax.jit(jax.vmap(hvp)), (stacked, tasks, stacked), b),
        ("loop", "hvp"): (jax.jit(hvps), (theta, task), r),
        ("loop_batch", "hvp"): (jax.jit(jax.vmap(hvps)), (stacked, tasks), r * b),
    }


@functools.lru_cache(maxsize=None)
def meta_step(estimate: str, strategy: str = "vmap"):
    """(compiled ``(theta, key) -> (grad, info)``, key) of one meta-step of ``estimate``; the key takes the
    branch the label fixes (ufom[xi=1]: the exact branch), checked with the step's own ``info.exact``."""
    import jax

    from ufom_bench.estimators import meta_batch

    name, xi = C.parse(estimate)
    problem = F.build()
    est = meta_batch(C.make_estimator(name), F.SIZES["meta_batch"], strategy=strategy)
    state = est.init(problem.theta0)

    def step(theta, key):
        grad, info, _ = est.estimate(problem, theta, None, key, state)
        return grad, info

    fn = jax.jit(step).lower(problem.theta0, jax.random.PRNGKey(0)).compile()
    key = jax.random.PRNGKey(0)
    if xi is not None:
        base = jax.random.PRNGKey(2021)
        key = next(k for k in (jax.random.fold_in(base, i) for i in range(1000))
                   if bool(fn(problem.theta0, k)[1].exact) == bool(xi))
    return fn, key


def measure(strategies: bool = False) -> dict:
    """{"t": {estimate: s per meta-step}, "C": {(kind, "grad" | "hvp"): s per call}, "counts": {estimate:
    (grads, HVPs)}} and, with ``strategies``, {"strategy": {(estimate, strategy): s}}: every program timed
    interleaved in this process. Raises RuntimeError if a meta-step's counted calls differ from Proposition 1
    or it is not finite."""
    import jax

    problem = F.build()
    theta = problem.theta0
    tasks = jax.vmap(problem.sample_task)(jax.random.split(jax.random.PRNGKey(0), F.SIZES["meta_batch"]))
    programs = call_programs(problem, theta, tasks)
    calls = {("C",) + k: (fn, args) for k, (fn, args, _) in programs.items()}
    counts = {}
    for what in ESTIMATES:
        for strategy in ("vmap", "map") if strategies else ("vmap",):
            fn, key = meta_step(what, strategy)
            _, info = jax.block_until_ready(fn(theta, key))
            got, want = (int(info.grad_calls), int(info.hvp_calls)), counted(what)
            if got != want or not bool(info.finite):
                raise RuntimeError(f"{what} ({strategy}): counted {got}, Proposition 1 says {want}; "
                                   f"finite: {bool(info.finite)}")
            counts[what] = got
            calls["t", what, strategy] = (fn, (theta, key))
    t = C.interleaved_min(calls, STRATEGY_REPEATS if strategies else C.REPEATS)
    return {"t": {k[1]: s for k, s in t.items() if k[0] == "t" and k[2] == "vmap"},
            "strategy": {k[1:]: s for k, s in t.items() if k[0] == "t"},
            "C": {k[1:]: s / programs[k[1:]][2] for k, s in t.items() if k[0] == "C"},
            "counts": counts}


def ratio(m: dict, estimate: str, kind: str) -> tuple[float, float]:
    """(model seconds g C1 + h C2 with C1, C2 measured as ``kind``, measured / model) of one estimate."""
    g, h = m["counts"][estimate]
    model = g * m["C"][kind, "grad"] + h * m["C"][kind, "hvp"]
    return model, m["t"][estimate] / model


class FewshotCostModel:
    """t(meta-step) / (g C1 + h C2) on the conv4 few-shot meta-step, with C1 and C2 measured each way of CALLS
    (goal: within [0.9, 1.1] for "loop_batch"), and the seconds per meta-step."""

    params = (list(ESTIMATES), list(CALLS))
    param_names = ("estimator", "calls")
    timeout = 300

    def setup_cache(self):
        C.warm_up_compiler()
        return measure()

    setup_cache.timeout = 1800

    def setup(self, cache, estimator, calls):
        self.model, self.ratio = ratio(cache, estimator, calls)

    def track_cost_model_ratio(self, cache, estimator, calls):
        return self.ratio

    track_cost_model_ratio.unit = "ratio"

    def track_model_seconds(self, cache, estimator, calls):
        return self.model

    track_model_seconds.unit = "seconds"


def main(argv: list[str]) -> None:
    strategies = "--strategies" in argv
    C.warm_up_compiler()
    m = measure(strategies)
    print(f"conv4 few-shot meta-step: B = {F.SIZES['meta_batch']}, r = {F.R}, {F.SIZES['filters']} filters, float32; "
          f"minimum of {STRATEGY_REPEATS if strategies else C.REPEATS} interleaved calls")
    print("C1 (grad), C2 (HVP) in ms per call: " + "; ".join(
        f"{kind} {1e3 * m['C'][kind, 'grad']:.2f}, {1e3 * m['C'][kind, 'hvp']:.2f}" for kind in CALLS))
    print("| estimator | grads | HVPs | s/meta-step | " + " | ".join(f"model s ({k}) | ratio ({k})" for k in CALLS) + " |")
    print("|---" * (4 + 2 * len(CALLS)) + "|")
    for what in ESTIMATES:
        g, h = m["counts"][what]
        cells = " | ".join(f"{model:.3f} | {r:.2f}" for model, r in (ratio(m, what, k) for k in CALLS))
        print(f"| {what} | {g} | {h} | {m['t'][what]:.3f} | {cells} |")
    if strategies:
        print("| estimator | s/meta-step vmap | s/meta-step map | map / vmap |\n|---|---|---|---|")
        for what in ESTIMATES:
            v, p = m["strategy"][what, "vmap"], m["strategy"][what, "map"]
            print(f"| {what} | {v:.3f} | {p:.3f} | {p / v:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
