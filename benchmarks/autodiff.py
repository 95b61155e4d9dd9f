"""Algorithm 2 (`exact`, ours) against JAX's own reverse mode through the unrolled inner loop.

Methods, each ``(problem, theta, task) -> grad_theta L_out(theta, U^(r)(theta, T), T)``, jitted:
  exact              ufom_bench's Algorithm 2: a forward scan storing phi_0..phi_{r-1}, a reverse scan of
                     r HVPs (each recomputes the inner gradient at its phi_j, then its transpose).
  jax_grad_scan      jax.grad of L_out(theta, inner_path(theta)): ufom_bench.problem.inner_path is a
                     lax.scan, so reverse mode stores the scan's residuals (every step's activations).
  jax_grad_unrolled  jax.grad through a Python loop of r steps (one HLO per step: long compiles, so only
                     up to r = R_UNROLLED_MAX).
Goal of the issue: exact no slower than 1.1 x jax.grad, and no more temp bytes.
"""

from __future__ import annotations

import functools

from . import _common as C

METHODS = ("exact", "jax_grad_scan", "jax_grad_unrolled")
BASELINES = ("jax_grad_scan", "jax_grad_unrolled")
PROBLEMS = ("quadratic", "mlp")


@functools.lru_cache(maxsize=None)
def hypergradient_fn(method: str):
    """The jittable ``(problem, theta, task) -> grad`` of ``method`` (one function per process, as
    `_common.estimate_fn`: its first compile per (problem, r) is the one whose time is measured)."""
    import jax

    from ufom_bench.problem import inner_path

    if method == "exact":
        est = C.make_estimator("exact")
        return lambda problem, theta, task: est.estimate(problem, theta, task, None, ())[0]

    def unrolled_path(problem, theta, task):
        phi = problem.init_inner(theta, task)
        for j in range(problem.r):
            g = jax.grad(problem.inner_loss, argnums=1)(theta, phi, task)
            phi = jax.tree_util.tree_map(lambda p, d: p - problem.step_sizes[j] * d, phi, g)
        return phi

    path = {"jax_grad_scan": inner_path, "jax_grad_unrolled": unrolled_path}[method]

    def through_loop(problem, theta, task):
        return jax.grad(lambda th: problem.outer_loss(th, path(problem, th, task), task))(theta)

    return through_loop


def not_applicable(method: str, r: int) -> str | None:
    """A Python-unrolled loop of r > R_UNROLLED_MAX steps is not compiled (~20 s at r = 100 on the mlp, and
    growing faster than r)."""
    if method == "jax_grad_unrolled" and r > C.R_UNROLLED_MAX:
        return f"jax_grad_unrolled at r = {r}: compiling {r} unrolled steps takes minutes (r <= {C.R_UNROLLED_MAX})"
    return None


class AutodiffTime:
    """Wall time of one hypergradient by each method (compiled in setup)."""

    params = (list(METHODS), list(C.R_AUTODIFF), list(PROBLEMS))
    param_names = ("method", "r", "problem")
    timeout = 600

    def setup(self, method, r, problem):
        reason = not_applicable(method, r)
        if reason:
            raise NotImplementedError(reason)
        import jax

        self.fn = jax.jit(hypergradient_fn(method))
        self.args = C.build_problem(problem, r)
        self.block = jax.block_until_ready
        self.block(self.fn(*self.args))

    def time_hypergradient(self, method, r, problem):
        self.block(self.fn(*self.args))


class _AutodiffCache:
    def setup_cache(self):
        """Per (method, r, problem): temp bytes and compile seconds (one ``ufom_bench.memory.memory_stats``
        call, the dict behind ``memory.temp_bytes``), and the minimum wall time over interleaved repetitions
        of the methods; checks that the methods agree (relative difference < 1e-2)."""
        import jax
        import numpy as np
        from jax.flatten_util import ravel_pytree

        from ufom_bench import memory

        C.warm_up_compiler()
        out = {"temp_bytes": {}, "compile_s": {}, "wall": {}, "rel_diff": {}}
        for problem in PROBLEMS:
            for r in C.R_AUTODIFF:
                args = C.build_problem(problem, r)
                calls, grads = {}, {}
                for method in METHODS:
                    if not_applicable(method, r):
                        continue
                    fn = hypergradient_fn(method)  # first compile of (fn, problem, r) in this process
                    t = C.clock()
                    stats = memory.memory_stats(fn, *args)  # trace, lower, compile; temp_bytes reads the same
                    out["compile_s"][method, r, problem] = C.clock() - t
                    out["temp_bytes"][method, r, problem] = stats["temp_bytes"]
                    jitted = jax.jit(fn)  # the same function: reuses most of that compilation
                    calls[method] = (jitted, args)
                    grads[method] = np.asarray(ravel_pytree(jitted(*args))[0], np.float64)
                for method, seconds in C.interleaved_min(calls).items():
                    out["wall"][method, r, problem] = seconds
                ref = grads["exact"]
                for method in BASELINES:
                    if method in grads:
                        diff = np.linalg.norm(grads[method] - ref) / max(np.linalg.norm(ref), 1e-30)
                        out["rel_diff"][method, r, problem] = float(diff)
                        if not diff < 1e-2:
                            raise RuntimeError(f"{method} and exact disagree at r = {r} on {problem}: {diff:.2e}")
        return out

    setup_cache.timeout = 1800


class Autodiff(_AutodiffCache):
    """Temp bytes and compile time of each method's program, side by side."""

    params = (list(METHODS), list(C.R_AUTODIFF), list(PROBLEMS))
    param_names = ("method", "r", "problem")
    timeout = 120

    def setup(self, cache, method, r, problem):
        reason = not_applicable(method, r)
        if reason:
            raise NotImplementedError(reason)
        self.where = (method, r, problem)

    def track_temp_bytes(self, cache, method, r, problem):
        return cache["temp_bytes"][self.where]

    track_temp_bytes.unit = "bytes"

    def track_compile_time(self, cache, method, r, problem):
        return cache["compile_s"][self.where]

    track_compile_time.unit = "seconds"


class AutodiffRatio(_AutodiffCache):
    """exact over a jax.grad baseline: wall time (goal <= 1.1) and temp bytes (goal <= 1)."""

    params = (list(BASELINES), list(C.R_AUTODIFF), list(PROBLEMS))
    param_names = ("baseline", "r", "problem")
    timeout = 120

    def setup(self, cache, baseline, r, problem):
        reason = not_applicable(baseline, r)
        if reason:
            raise NotImplementedError(reason)
        self.exact, self.base = ("exact", r, problem), (baseline, r, problem)

    def track_time_ratio(self, cache, baseline, r, problem):
        return cache["wall"][self.exact] / cache["wall"][self.base]

    track_time_ratio.unit = "ratio"

    def track_temp_bytes_ratio(self, cache, baseline, r, problem):
        return cache["temp_bytes"][self.exact] / max(cache["temp_bytes"][self.base], 1)

    track_temp_bytes_ratio.unit = "ratio"
