"""Monte Carlo throughput: hypergradient samples per second through `ufom_bench.montecarlo.gradient_samples`.

One sample is the pair (G_FO, G) for one sampled task (`montecarlo.pair`, vmapped over a chunk of tasks):
everything UFOM's distribution, D^2 and V^2 are computed from. On the paper's synthetic problem (the
Theorem 2 counterexample, scalar) and on the quadratic with p = 1000.
"""

from __future__ import annotations

from . import _common as C

PROBLEMS = ("counterexample", "quadratic")
# Samples per call (one chunk): about 0.1-1 s of work. On the quadratic every sample gathers its task's
# three p x p matrices (12 MB at p = 1000: XLA temp bytes are 3.1 GB for a chunk of 256 at r = 1) and
# stores r states of p floats, so chunks stay small there.
SAMPLES = {
    "counterexample": {r: 4096 for r in C.R_VALUES},
    "quadratic": dict(zip(C.R_VALUES, (64, 32, 16, 4))),
}
if C.TINY:
    SAMPLES = {p: {r: 4 for r in C.R_VALUES} for p in PROBLEMS}


class MonteCarlo:
    """Hypergradient samples per second: n task draws / the fastest of 3 calls (compiled in setup)."""

    params = (list(C.R_VALUES), list(PROBLEMS))
    param_names = ("r", "problem")
    timeout = 600

    def setup(self, r, problem):
        import jax
        import jax.numpy as jnp

        from ufom_bench import montecarlo

        prob, theta, _ = C.build_problem(problem, r)
        self.n = SAMPLES[problem][r]
        key = jax.random.PRNGKey(0)

        def run():
            s = montecarlo.gradient_samples(prob, theta, self.n, key, method="sampled", chunk_size=self.n)
            return s.g_fo, s.g

        self.run = run
        g_fo, g = jax.block_until_ready(run())  # the first call compiles
        if not (bool(jnp.all(jnp.isfinite(g_fo))) and bool(jnp.all(jnp.isfinite(g)))):
            raise RuntimeError(f"non-finite gradient samples on {problem} at r = {r}")

    def track_samples_per_second(self, r, problem):
        return self.n / min(C.seconds(self.run) for _ in range(3))

    track_samples_per_second.unit = "samples/s"
