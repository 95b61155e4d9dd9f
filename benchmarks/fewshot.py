"""One meta-step per estimator on the few-shot workload (Section 5.3, Table 2): MAML's conv4 network, a
meta-batch of tasks, r = 10; and the Monte Carlo bias/variance throughput in tasks per second.

The problem: `problems.fewshot` on 5-way 1-shot tasks (one query example per class) of 28x28 grey images,
conv4 with 64 filters and transductive batch norm (the paper's network), alpha = 0.4, float32, meta-batch
B = 5 (the paper's). The images are random uint8 (a 20-class sampler built here: the cost of a meta-step does
not depend on pixel values, and the benchmark needs no data set on disk).

`MetaStep` times one jitted meta-step, `estimators.meta_batch` (the estimator vmapped over B tasks, one coin per
meta-step: UFOM's exact branch is a real ``lax.cond`` branch), blocking until ready; the program is compiled
in setup (excluded) and its XLA temporary bytes are reported by ``track_temp_bytes`` (the same compiled
program). Labels as in benchmarks._common: "ufom[xi=0]" / "adaptive_ufom[xi=1]" fix the coin through the PRNG
key (the FOM branch / the exact branch with its r(r-1)/2 recomputation). `MonteCarlo` reports tasks per second
of `ufom_bench.montecarlo.gradient_samples` (the (G_FO, G) pair per task, vmapped and sharded over devices).

UFOM_BENCH_TINY=1 shrinks everything (2 filters, 8x8 images, 2-way, B = 2, r = 2). Every registered estimator
is defined here (V(theta, T) = theta) except implicit_cg and neumann: theta enters only through V, so their
estimate is identically 0 (`skip_reason`, the estimators' own rule `ufom_bench.estimators.not_applicable`).
"""

from __future__ import annotations

import functools

from . import _common as C

R = 2 if C.TINY else 10
SIZES = (dict(filters=2, size=8, m=2, meta_batch=2, classes=6) if C.TINY
         else dict(filters=64, size=28, m=5, meta_batch=5, classes=20))
MC_TASKS = 4 if C.TINY else 64  # tasks per Monte Carlo call
TIMED = tuple(C.TIMED)


def skip_reason(class_name: str, params: dict) -> str | None:
    """Why a combination does not apply, or None (the estimator's own rule, `benchmarks._common.undefined`)."""
    del class_name
    if "estimator" not in params:
        return None
    problem = build()  # task None: the rule reads the shapes of sample_task's draws
    return C.undefined(params["estimator"], "fewshot", built=(problem, problem.theta0, None))


@functools.lru_cache(maxsize=None)
def build(r: int = R):
    """The few-shot Problem (float32) over a random 20-class sampler; cached per process."""
    import jax.numpy as jnp
    import numpy as np

    from ufom_bench.data.fewshot import TaskSampler
    from ufom_bench.problems.fewshot import fewshot

    rng = np.random.default_rng(0)
    s = SIZES
    images = rng.integers(0, 256, (s["classes"], 20, s["size"], s["size"]), dtype=np.uint8)
    sampler = TaskSampler.from_numpy(images, name="random")
    return fewshot(sampler, m=s["m"], k=1, k_query=1, r=r, alpha=0.4, filters=s["filters"], dtype=jnp.float32)


@functools.lru_cache(maxsize=None)
def compiled_step(name: str, r: int = R):
    """(estimator, compiled ``(theta, key, state) -> (grad, info)``, temp bytes) of one meta-step of ``name``.
    One compilation per estimator: both coins of UFOM share it."""
    import jax

    from ufom_bench.estimators import meta_batch

    problem = build(r)
    est = meta_batch(C.make_estimator(name), SIZES["meta_batch"])

    def step(theta, key, state):
        grad, info, _ = est.estimate(problem, theta, None, key, state)
        return grad, info

    state = est.init(problem.theta0)
    compiled = jax.jit(step).lower(problem.theta0, jax.random.PRNGKey(0), state).compile()
    analysis = compiled.memory_analysis()
    temp = int(analysis.temp_size_in_bytes) if analysis is not None else -1
    return est, compiled, temp


def key_with_xi(compiled, theta, state, xi: int):
    """A PRNG key whose meta-step takes branch ``xi``: screened with the coin of `estimators.meta_batch` (one
    Bernoulli(q) draw from the second half of the split key), then confirmed by running it (compiled, warm)."""
    import jax

    _, info = compiled(theta, jax.random.PRNGKey(0), state)
    q = float(info.q)
    base = jax.random.PRNGKey(2021)
    for i in range(10_000):
        key = jax.random.fold_in(base, i)
        if bool(jax.random.bernoulli(jax.random.split(key)[1], q)) != bool(xi):
            continue
        _, info = jax.block_until_ready(compiled(theta, key, state))
        if bool(info.exact) == bool(xi):
            return key
    raise RuntimeError(f"no key found with xi = {xi} (q = {q})")


class MetaStep:
    """Wall time of one jitted meta-step (B tasks, r = 10, conv4), and its XLA temporary bytes."""

    params = (list(TIMED),)
    param_names = ("estimator",)
    number = 1
    repeat = (1, 5, 60.0)
    timeout = 900

    def setup(self, estimator):
        reason = skip_reason("MetaStep", {"estimator": estimator})
        if reason:
            raise NotImplementedError(reason)
        import jax

        name, xi = C.parse(estimator)
        problem = build()
        est, self.fn, self.temp = compiled_step(name)
        state = est.init(problem.theta0)
        key = jax.random.PRNGKey(0) if xi is None else key_with_xi(self.fn, problem.theta0, state, xi)
        grad, info = jax.block_until_ready(self.fn(problem.theta0, key, state))
        if not bool(info.finite):
            raise RuntimeError(f"{estimator}: the few-shot meta-step is not finite")
        self.args, self.block = (problem.theta0, key, state), jax.block_until_ready

    def time_meta_step(self, estimator):
        self.block(self.fn(*self.args))

    def track_temp_bytes(self, estimator):
        return self.temp

    track_temp_bytes.unit = "bytes"


class MonteCarlo:
    """Monte Carlo bias/variance throughput: tasks per second of the per-task (G_FO, G) pairs behind D^2, V^2
    and UFOM's moments (`montecarlo.gradient_samples`, one chunk of MC_TASKS tasks; compiled in setup)."""

    params = ([R],)
    param_names = ("r",)
    timeout = 900

    def setup(self, r):
        import jax
        import jax.numpy as jnp

        from ufom_bench import montecarlo

        problem = build(r)
        key = jax.random.PRNGKey(0)

        def run():
            s = montecarlo.gradient_samples(problem, problem.theta0, MC_TASKS, key, method="sampled",
                                            chunk_size=MC_TASKS)
            return s.g_fo, s.g

        self.run = run
        g_fo, g = jax.block_until_ready(run())  # the first call compiles
        if not (bool(jnp.all(jnp.isfinite(g_fo))) and bool(jnp.all(jnp.isfinite(g)))):
            raise RuntimeError("non-finite gradient samples on the few-shot problem")

    def track_tasks_per_second(self, r):
        return MC_TASKS / min(C.seconds(self.run) for _ in range(3))

    track_tasks_per_second.unit = "tasks/s"
