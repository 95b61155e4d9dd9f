"""The few-shot meta-step with XLA's convolution against strided slices and one dot (`problems.fewshot(conv=...)`),
per estimator, interleaved in one process: ``python -m benchmarks.fewshot_conv`` prints a markdown table.

The paper's network and meta-step (conv4, 64 filters, transductive batch norm, 5-way 1-shot, one query per
class, meta-batch 5, r = 10, alpha = 0.4, float32) on random images, compiled beforehand, minimum of
``REPEATS`` interleaved calls; then Monte Carlo (G_FO, G) pairs per second for each convolution. Not an asv
benchmark (no ``time_``/``track_`` names): `benchmarks/fewshot.py` tracks the default path over commits.
"""

from __future__ import annotations

import time

REPEATS = 5
MC_TASKS = 16


def main() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ufom_bench import estimators, montecarlo
    from ufom_bench.data.fewshot import TaskSampler
    from ufom_bench.problems.fewshot import CONVS, fewshot

    images = np.random.default_rng(0).integers(0, 256, (20, 20, 28, 28), dtype=np.uint8)
    sampler = TaskSampler.from_numpy(images, name="random")
    problems = {c: fewshot(sampler, m=5, k=1, k_query=1, r=10, alpha=0.4, filters=64, conv=c, dtype=jnp.float32)
                for c in CONVS}
    ests = {"fom": estimators.fom(), "exact": estimators.exact(), "exact_me": estimators.exact_me(),
            "ufom[xi=1]": estimators.ufom(1.0)}
    compiled, times = {}, {}
    for conv, problem in problems.items():
        for name, est in ests.items():
            batch = estimators.meta_batch(est, 5)
            step = jax.jit(lambda theta, key, b=batch, p=problem: b.estimate(p, theta, None, key, ())[:2])
            fn = step.lower(problem.theta0, jax.random.PRNGKey(0)).compile()
            _, info = jax.block_until_ready(fn(problem.theta0, jax.random.PRNGKey(0)))
            compiled[conv, name] = (fn, int(info.grad_calls), int(info.hvp_calls),
                                    fn.memory_analysis().temp_size_in_bytes)
            times[conv, name] = []
    for rep in range(REPEATS):
        for (conv, name), (fn, *_) in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(problems[conv].theta0, jax.random.PRNGKey(rep + 1)))
            times[conv, name].append(time.perf_counter() - start)
    print("| estimator | grads, HVPs | s/meta-step xla | s/meta-step slices | speed-up | temp MB xla / slices |")
    print("|---|---|---|---|---|---|")
    for name in ests:
        a, b = min(times["xla", name]), min(times["slices", name])
        _, grads, hvps, temp_a = compiled["xla", name]
        temp_b = compiled["slices", name][3]
        print(f"| {name} | {grads}, {hvps} | {a:.3f} | {b:.3f} | {a / b:.1f}x | {temp_a / 1e6:.1f} / {temp_b / 1e6:.1f} |")
    for conv, problem in problems.items():
        def pairs(key, p=problem):
            return jax.block_until_ready(montecarlo.gradient_samples(p, p.theta0, MC_TASKS, key, method="sampled",
                                                                     chunk_size=MC_TASKS).g)

        pairs(jax.random.PRNGKey(0))  # compiles
        best = []
        for i in range(3):
            start = time.perf_counter()
            pairs(jax.random.PRNGKey(1 + i))
            best.append(time.perf_counter() - start)
        print(f"Monte Carlo (G_FO, G) pairs, conv={conv}: {MC_TASKS / min(best):.2f} tasks/s")


if __name__ == "__main__":
    main()
