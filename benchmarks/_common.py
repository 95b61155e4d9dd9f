"""What the benchmark modules share: sizes, parameter grids, the rule for skipped combinations, helpers.

No JAX at module import: asv imports every benchmark module to discover it, and its worker processes are
forked from that importer, so JAX (and its thread pools) is imported only inside ``setup``/``setup_cache``.

``UFOM_BENCH_TINY=1`` in the environment shrinks every size (problem dimensions, r values, repeats) so that
tests/test_benchmarks.py can run every benchmark body in seconds; the parameter names and the estimator
labels stay the same, and the skip rule keeps its shape (it applies to the largest tiny r).
"""

from __future__ import annotations

import functools
import os
import time

TINY = os.environ.get("UFOM_BENCH_TINY", "") not in ("", "0")

# ------------------------------------------------------------------------------------------- sizes

QUADRATIC_P = 8 if TINY else 1000  # dimension of theta and phi of the quadratic problem
QUADRATIC_TASKS = 2  # its task set (3 n p^2 floats of task matrices: 24 MB at p = 1000)
MLP_SIZES = dict(d_in=2, hidden=4, points=8) if TINY else dict(d_in=16, hidden=64, points=1024)

R_VALUES = (1, 2) if TINY else (1, 10, 100, 1000)  # inner steps r
R_RECOMPUTE_MAX = 1 if TINY else 100  # largest r at which O(r^2) recomputation runs on quadratic and mlp
R_COST_MODEL = (1, 2) if TINY else (10, 100)
R_AUTODIFF = (1, 2) if TINY else (10, 100, 1000)
R_UNROLLED_MAX = 1 if TINY else 100  # a Python-unrolled loop of r steps compiles in ~20 s at r = 100 (mlp)

REPEATS = 2 if TINY else 15  # timed repetitions in the setup_cache measurements (the minimum is kept)
# Calls per chain when measuring the marginal cost of one grad / one HVP (tiny problems need long chains for
# the difference of two chains' times to rise above timer noise).
CHAIN = 1000 if TINY else 100

# ------------------------------------------------------------------------------------------- grids

PROBLEMS = ("quadratic", "counterexample", "mlp")
# Every registered estimator (tests/test_benchmarks.py checks this against ufom_bench.estimators.names()).
ESTIMATORS = ("exact", "exact_me", "fom", "ufom", "adaptive_ufom", "reptile", "truncated", "pzobo", "forward_gradient",
              "es", "implicit_cg", "neumann", "exact_ckpt")
# The estimators' parameters in every benchmark: ufom's default q, adaptive_ufom's defaults (q_min = 0.05),
# truncated back-propagation through the last inner step (k = 1); pzobo as its authors run it (one direction,
# mu = 0.01), forward_gradient and es with one direction (es: mu = 0.01); 10 CG iterations, 10 Neumann terms;
# binomial checkpointing with 4 stored states (1 + t(r + 1, 4) grads: 8,009 at r = 1000, against exact_me's 500,501).
ESTIMATOR_PARAMS = {"exact_ckpt": {"checkpoints": 4}, "ufom": {"q": 0.1}, "truncated": {"k": 1}, "pzobo": {"mu": 0.01, "n_dirs": 1},
                    "forward_gradient": {"n_dirs": 1}, "es": {"mu": 0.01, "n_dirs": 1}, "implicit_cg": {"iters": 10},
                    "neumann": {"terms": 10}}
# Timed labels: UFOM and adaptive UFOM with the coin fixed by the PRNG key, xi = 0 (FOM branch) or
# xi = 1 (exact branch); "ufom" and "adaptive_ufom" alone mean "over the coin" (benchmarks.estimate
# .EstimateExpected times them at their expectation; counts are averaged over a cycle of keys).
TIMED = ("exact", "exact_me", "fom", "ufom[xi=0]", "ufom[xi=1]", "adaptive_ufom[xi=0]", "adaptive_ufom[xi=1]",
         "reptile", "truncated", "pzobo", "forward_gradient", "es", "implicit_cg", "neumann", "exact_ckpt")
EXPECTED = ("ufom", "adaptive_ufom")
COUNTED = ("exact", "exact_me", "fom", "ufom[xi=0]", "ufom[xi=1]", "ufom",
           "adaptive_ufom[xi=0]", "adaptive_ufom[xi=1]", "adaptive_ufom", "reptile", "truncated", "pzobo",
           "forward_gradient", "es", "implicit_cg", "neumann", "exact_ckpt")
# Keys per expectation cycle: q N is an integer for ufom (q = 0.1: 2 exact draws in 20) and for
# adaptive_ufom at its initial state (q = q_min = 0.05: 1 in 20), so the mean over one cycle of
# consecutive estimates is the expectation over xi, exactly.
CYCLE = 20


def parse(label: str) -> tuple[str, int | None]:
    """``"ufom[xi=1]"`` -> ``("ufom", 1)``; ``"fom"`` -> ``("fom", None)``."""
    if label.endswith("]"):
        name, _, arg = label[:-1].partition("[xi=")
        return name, int(arg)
    return label, None


def recomputes(label: str) -> bool:
    """Whether the estimates of ``label`` run the O(r^2) recomputation of Algorithm 4 (at least sometimes)."""
    name, xi = parse(label)
    return name == "exact_me" or (name in EXPECTED and xi != 0)


def undefined(label: str, problem: str, r: int | None = None, built=None) -> str | None:
    """Why ``label`` is not defined on ``problem`` (skipped by every benchmark, compile-only ones too), or None.

    The estimator's own rule, `ufom_bench.estimators.not_applicable` (the one the estimate raises
    `NotApplicable` with): Reptile needs V(theta, T) = theta (so it runs on counterexample and mlp only), the
    implicit estimators need theta in L_out or dL_in/dphi (so not on counterexample and mlp, MAML-type).
    Asked of ``built`` = (Problem, theta, task), default `build_problem(problem, r)` (cached; r defaults to
    the first of R_VALUES: the rules read shapes and traced programs, not r). Imports JAX: call it from
    setup only, never at module import.
    """
    from ufom_bench import estimators

    name, _ = parse(label)
    prob, theta, task = build_problem(problem, R_VALUES[0] if r is None else r) if built is None else built
    return estimators.not_applicable(make_estimator(name), prob, theta, task)


def not_applicable(label: str, r: int, problem: str) -> str | None:
    """Why (label, r, problem) is skipped when its estimates must run, or None. Two rules: ``undefined``, and

    the exact branch of Algorithm 4 (exact_me, ufom and adaptive_ufom with xi = 1, and their expectation)
    makes r + 1 + r(r-1)/2 gradient calls: at r = 1000 that is 500,501 calls, about 8 s per estimate on the
    mlp (15 us per gradient at 256 points, more at 1024) and 65 s on the quadratic with p = 1000 as counted.
    These combinations are skipped on the quadratic and the mlp (r > R_RECOMPUTE_MAX) and kept on the
    scalar counterexample. Compile-only benchmarks (compile time, temp bytes) skip only undefined combinations.
    """
    reason = undefined(label, problem, r)
    if reason:
        return reason
    if recomputes(label) and r > R_RECOMPUTE_MAX and problem != "counterexample":
        return (f"{label} at r = {r} on {problem}: r(r-1)/2 = {r * (r - 1) // 2} recomputation gradient calls per "
                f"estimate is too slow to time (skipped for r > {R_RECOMPUTE_MAX} except on the counterexample)")
    return None


# ------------------------------------------------------------------------------------------- building

@functools.lru_cache(maxsize=None)
def build_problem(problem: str, r: int):
    """(Problem, theta, task) for a problem label and r, float32. The task is the one drawn with PRNGKey(0).
    Cached per process (`undefined` and the workloads share one build)."""
    import jax
    import jax.numpy as jnp

    from ufom_bench import problems

    from ._problems import mlp_regression

    if problem == "quadratic":
        prob = problems.quadratic(p=QUADRATIC_P, n_tasks=QUADRATIC_TASKS, r=r, dtype=jnp.float32)
    elif problem == "counterexample":
        # alpha r = 1 for r >= 10 (the paper's alpha = 0.1 at r = 10): the same contraction at every r, and
        # b_2 stays finite in float32 (alpha = 0.1 at r = 1000 makes b_2 ~ 1/(0.95^1000)^2 overflow).
        prob = problems.counterexample(r=r, alpha=min(0.1, 1.0 / r), dtype=jnp.float32, theta0=1.0)
    elif problem == "mlp":
        prob = mlp_regression(r, **MLP_SIZES)
    else:
        raise ValueError(f"unknown problem {problem!r}; known: {', '.join(PROBLEMS)}")
    task = prob.sample_task(jax.random.PRNGKey(0))
    return prob, prob.theta0, task


def make_estimator(name: str):
    """The registered estimator ``name`` with the suite's parameters (ESTIMATOR_PARAMS)."""
    from ufom_bench import estimators

    return estimators.get(name, **ESTIMATOR_PARAMS.get(name, {}))


@functools.lru_cache(maxsize=None)
def estimate_fn(name: str):
    """(estimator, ``(problem, theta, task, key, state) -> (grad, info)``) of ``name``: one estimate, to jit.

    One function per name and process, so JAX compiles each (estimator, problem, r) once per process and
    later jits of it reuse that compilation; a compile-time measurement is the first compile of its
    (function, problem, r) in its process, and asv gives each benchmark (and each setup_cache) its own.
    """
    est = make_estimator(name)

    def fn(problem, theta, task, key, state):
        grad, info, _ = est.estimate(problem, theta, task, key, state)
        return grad, info

    return est, fn


class Workload:
    """One estimator on one problem at one r, jitted and compiled, with its arguments.

    ``args(key)`` is the argument tuple for a given PRNG key; ``call(key)`` runs one estimate and blocks.
    ``built`` is a (problem, theta, task) from `build_problem` to reuse (building the quadratic takes a while);
    ``est_fn`` an (estimator, fn) from `estimate_fn` to reuse (JAX then reuses that function's compilation).
    """

    def __init__(self, name: str, r: int, problem: str, built=None, est_fn=None):
        import jax

        self.name, self.r, self.problem_label = name, r, problem
        self.problem, self.theta, self.task = build_problem(problem, r) if built is None else built
        self.est, self.fn = estimate_fn(name) if est_fn is None else est_fn
        self.state = self.est.init(self.theta)
        self.jitted = jax.jit(self.fn)

    def args(self, key):
        return (self.problem, self.theta, self.task, key, self.state)

    def call(self, key):
        import jax

        return jax.block_until_ready(self.jitted(*self.args(key)))

    def keys_with_xi(self, want: list[int]) -> list:
        """PRNG keys whose estimate takes branch ``want[i]`` (xi = 0 or 1), checked by running each one.

        Candidates are screened with ``jax.random.bernoulli(key, q)`` at the estimator's q (info.q of a
        first run), then every key is confirmed by its own ``info.exact``, so the choice does not depend
        on how the estimator draws its coin. The runs also compile and warm the program.
        """
        import jax

        base = jax.random.PRNGKey(2021)
        _, info = self.call(jax.random.fold_in(base, 10**6))
        q = float(info.q)
        out, i = [], 0
        for xi in want:
            while True:
                if i > 10_000:
                    raise RuntimeError(f"{self.name}: no key found with xi = {xi} (q = {q})")
                key = jax.random.fold_in(base, i)
                i += 1
                if bool(jax.random.bernoulli(key, q)) != bool(xi):
                    continue
                _, info = self.call(key)
                if bool(info.exact) == bool(xi):
                    out.append(key)
                    break
        return out

    def expectation_cycle(self) -> tuple[list, float]:
        """CYCLE keys with exactly q CYCLE exact draws (evenly spread), and q. The mean of any CYCLE consecutive
        estimates over the cycle is the expectation over xi."""
        import jax

        _, info = self.call(jax.random.PRNGKey(0))
        q = float(info.q)
        n_exact = round(q * CYCLE)
        if abs(q * CYCLE - n_exact) > 1e-4:
            raise ValueError(f"{self.name}: q = {q} is not a multiple of 1/{CYCLE}: no exact expectation cycle")
        exact_at = {round(k * CYCLE / n_exact) for k in range(n_exact)} if n_exact else set()
        return self.keys_with_xi([int(j in exact_at) for j in range(CYCLE)]), q


# ------------------------------------------------------------------------------------------- timing

# The clock of every time the suite measures itself (setup_cache timings, compile times, throughput; asv times
# the time_ benchmarks with its own). A module attribute, read at each call, so that a test can replace it with
# a deterministic fake (tests/test_benchmarks.py).
clock = time.perf_counter


def seconds(fn, *args) -> float:
    """Wall time of one blocking call ``fn(*args)``, by `clock`."""
    import jax

    t = clock()
    jax.block_until_ready(fn(*args))
    return clock() - t


def interleaved_min(calls: dict, repeats: int = REPEATS) -> dict:
    """{name: min wall seconds} over ``repeats`` rounds in which every ``calls[name] = (fn, args)`` runs once.

    Interleaving puts slow drifts of the machine (other processes, frequency) on every entry alike; the
    minimum is the least disturbed run. Each callable runs once first, untimed (compilation, warm caches).
    """
    for fn, args in calls.values():
        seconds(fn, *args)
    best = {k: float("inf") for k in calls}
    for _ in range(repeats):
        for k, (fn, args) in calls.items():
            best[k] = min(best[k], seconds(fn, *args))
    return best


def warm_up_compiler() -> None:
    """Compile and run a trivial program, so that one-time backend start-up is not charged to a compile time."""
    import jax
    import jax.numpy as jnp

    jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((4, 4))))
