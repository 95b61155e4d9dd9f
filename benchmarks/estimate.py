"""One estimate per estimator x r x problem: wall time, compile time, counted calls and XLA temp bytes.

Labels (benchmarks._common): the registered estimators, with UFOM and adaptive UFOM timed with the coin
fixed by the PRNG key ("ufom[xi=0]": the FOM branch; "ufom[xi=1]": the exact branch, Algorithm 4's O(r^2)
recomputation) and at the expectation over the coin (`EstimateExpected`). Compile time is excluded from
every time_ benchmark (the program is compiled and run in setup) and reported by `Compiled`.
"""

from __future__ import annotations

from . import _common as C


class Estimate:
    """Wall time of one jitted estimate ``(grad, info)``, blocking until ready (compiled in setup)."""

    params = (list(C.TIMED), list(C.R_VALUES), list(C.PROBLEMS))
    param_names = ("estimator", "r", "problem")
    timeout = 600

    def setup(self, estimator, r, problem):
        reason = C.not_applicable(estimator, r, problem)
        if reason:
            raise NotImplementedError(reason)
        import jax

        name, xi = C.parse(estimator)
        work = C.Workload(name, r, problem)
        key = jax.random.PRNGKey(0) if xi is None else work.keys_with_xi([xi])[0]
        _, info = work.call(key)  # compiles (excluded from the timing) and checks the estimate
        if not bool(info.finite):
            raise RuntimeError(f"{estimator} on {problem} at r = {r}: the estimate is not finite")
        self.fn, self.args, self.block = work.jitted, work.args(key), jax.block_until_ready

    def time_estimate(self, estimator, r, problem):
        self.block(self.fn(*self.args))


class EstimateExpected:
    """Mean wall time of an estimate over UFOM's coin: each sample is CYCLE consecutive estimates whose keys
    give exactly q CYCLE exact-branch draws, so the reported time is q t(xi=1) + (1 - q) t(xi=0) as measured.

    ufom: q = 0.1; adaptive_ufom at its initial state, where q = q_min = 0.05 (its state is not advanced).
    With ``asv run --quick`` (one call per benchmark) a sample is a single estimate, not the expectation.
    """

    params = (list(C.EXPECTED), list(C.R_VALUES), list(C.PROBLEMS))
    param_names = ("estimator", "r", "problem")
    number = C.CYCLE  # one sample = one cycle of keys
    repeat = (1, 5, 20.0)
    timeout = 600

    def setup(self, estimator, r, problem):
        reason = C.not_applicable(estimator, r, problem)
        if reason:
            raise NotImplementedError(reason)
        import jax

        work = C.Workload(estimator, r, problem)
        keys, _ = work.expectation_cycle()  # runs every key once: compiled and warm
        self.fn, self.block = work.jitted, jax.block_until_ready
        self.arg_cycle = [work.args(k) for k in keys]
        self.i = 0

    def time_estimate(self, estimator, r, problem):
        args = self.arg_cycle[self.i % C.CYCLE]
        self.i += 1
        self.block(self.fn(*args))


class _StaticCache:
    """Compile times, temp bytes and counted calls of every combination, measured once in one process."""

    def setup_cache(self):
        """{"compile_s", "temp_bytes"}: per (estimator, r, problem); {"grad_calls", "hvp_calls"}: per (label, ...).

        Compile time is the wall time of ``ufom_bench.memory.memory_stats(fn, *args)`` (the dict behind
        ``memory.temp_bytes``): trace, lower and XLA compile, the first of this (estimator, problem, r) in
        the process (the memory analysis itself is free), after a warm-up compile so that one-time backend
        start-up is not charged to the first estimator; ``theory`` (imported by adaptive_ufom at trace
        time) is imported first for the same reason. The counting runs reuse that compilation.
        """
        import jax

        from ufom_bench import theory  # noqa: F401  (sympy at import: not a compile cost)
        from ufom_bench import memory

        C.warm_up_compiler()
        out = {"compile_s": {}, "temp_bytes": {}, "grad_calls": {}, "hvp_calls": {}}
        for problem in C.PROBLEMS:
            for r in C.R_VALUES:
                built = C.build_problem(problem, r)
                for name in (n for n in C.ESTIMATORS if not C.undefined(n, problem)):
                    est, fn = C.estimate_fn(name)
                    args = built + (jax.random.PRNGKey(0), est.init(built[1]))
                    t = C.clock()
                    stats = memory.memory_stats(fn, *args)
                    out["compile_s"][name, r, problem] = C.clock() - t
                    out["temp_bytes"][name, r, problem] = stats["temp_bytes"]
                    labels = [lab for lab in C.COUNTED if C.parse(lab)[0] == name]
                    labels = [lab for lab in labels if not C.not_applicable(lab, r, problem)]
                    if labels:
                        _count(out, C.Workload(name, r, problem, built, (est, fn)), labels)
        return out

    setup_cache.timeout = 1800


def _count(out: dict, work: C.Workload, labels: list[str]) -> None:
    """Counted grad and HVP calls (``info``) of each label of one estimator: one estimate, or for UFOM's
    expectation the mean over one cycle of keys (= Proposition 1's expectation, exactly)."""
    import jax
    import numpy as np

    for label in labels:
        _, xi = C.parse(label)
        if label in C.EXPECTED:
            keys, _ = work.expectation_cycle()
        elif xi is not None:
            keys = work.keys_with_xi([xi])
        else:
            keys = [jax.random.PRNGKey(0)]
        infos = [work.call(k)[1] for k in keys]
        where = (label, work.r, work.problem_label)
        out["grad_calls"][where] = float(np.mean([int(i.grad_calls) for i in infos]))
        out["hvp_calls"][where] = float(np.mean([int(i.hvp_calls) for i in infos]))


class Compiled(_StaticCache):
    """Compile time and XLA temporary bytes of one estimate's program (every combination: nothing runs).

    UFOM's program is one for both branches (a ``lax.cond``), so it is listed once per estimator. Skipped
    only where the estimator is not defined (``_common.undefined``).
    """

    params = (list(C.ESTIMATORS), list(C.R_VALUES), list(C.PROBLEMS))
    param_names = ("estimator", "r", "problem")
    timeout = 120

    def setup(self, cache, estimator, r, problem):
        reason = C.undefined(estimator, problem)
        if reason:
            raise NotImplementedError(reason)
        self.where = (estimator, r, problem)

    def track_compile_time(self, cache, estimator, r, problem):
        return cache["compile_s"][self.where]

    track_compile_time.unit = "seconds"

    def track_temp_bytes(self, cache, estimator, r, problem):
        return cache["temp_bytes"][self.where]

    track_temp_bytes.unit = "bytes"


class Counts(_StaticCache):
    """Grad and HVP calls counted inside one estimate (``info``); for "ufom" and "adaptive_ufom" the mean over
    a cycle of keys with exactly q CYCLE exact draws: r + 1 + q r(r-1)/2 and q r (Proposition 1)."""

    params = (list(C.COUNTED), list(C.R_VALUES), list(C.PROBLEMS))
    param_names = ("estimator", "r", "problem")
    timeout = 120

    def setup(self, cache, estimator, r, problem):
        reason = C.not_applicable(estimator, r, problem)
        if reason:
            raise NotImplementedError(reason)
        self.where = (estimator, r, problem)

    def track_grad_calls(self, cache, estimator, r, problem):
        return cache["grad_calls"][self.where]

    track_grad_calls.unit = "calls"

    def track_hvp_calls(self, cache, estimator, r, problem):
        return cache["hvp_calls"][self.where]

    track_hvp_calls.unit = "calls"
