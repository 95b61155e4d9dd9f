"""A meta-batch of tasks as one estimator: G_B(theta) = (1/B) sum_b G(theta, T_b), T_1..T_B ~ p(T)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.errors import UserError, check_int
from ufom_bench.estimators.core import COUNT, Estimator, Info


STRATEGIES = ("vmap", "map")


def meta_batch(estimator: Estimator, size: int, *, shared_key: bool = True, strategy: str = "vmap") -> Estimator:
    """``estimator`` averaged over a meta-batch of ``size`` tasks; itself an `Estimator`.

    The estimate draws its own tasks (``draws_tasks=True``; the ``task`` argument is ignored): ``key`` is
    split into (k_tasks, k_est), and T_b = ``problem.sample_task`` of the b-th of ``size`` subkeys of
    k_tasks. The wrapped estimator's key is one of two kinds:

    - ``shared_key=True`` (default): k_est for every task. For UFOM (and Adaptive UFOM) that is one coin xi
      per meta-step: the estimate is still unbiased (E[xi]/q = 1 for the batch mean as for each task), and
      because the coin is not batched, ``lax.cond`` stays a real branch under ``vmap``: a meta-step with
      xi = 0 computes FOM only, so wall time follows the counted calls. The price is variance: the
      (1/q - 1) correction applies to the batch mean of (G - G_FO) at once instead of averaging B
      independent coins (up to B times larger in that term).
    - ``shared_key=False``: ``size`` subkeys of k_est, so an independent xi per task (lower variance). Under
      ``vmap`` the coin is batched and ``lax.cond`` becomes a select that computes *both* branches for every
      task: the counted calls still reflect the branch each task took, but the wall time is that of the
      exact branch. Use it for statistics, not timing (`montecarlo.pair` gives FOM and exact per task).

    ``strategy``: how the B per-task estimates are evaluated, ``"vmap"`` (default: one batched program) or
    ``"map"`` (`lax.map`: one task at a time, memory of one task, and with ``shared_key=False`` each coin is a
    real branch). The same numbers up to float rounding; which is faster is a property of the backend and
    the network (the README gives the measurements), so it is an option, not a device branch.

    Info: grad and HVP calls summed over the meta-batch; ``exact`` true if any task took the exact branch;
    ``finite`` true if every task's estimate is finite; ``q`` the mean q; ``diverged`` true if any task's
    inner loop diverged (the meta-step is then refused as a whole). State: the wrapped estimator's state is
    given to every task (unbatched) and the B updated states are reduced to one by the mean (floating
    leaves) or the maximum (integer leaves). For Adaptive UFOM with a shared key the B updates share xi and
    k_upd, so the mean state is the moving average (eqs. 23-24) of the per-task ||b_FO - b_Exact||^2 and
    ||b_Exact||^2.
    """
    size = check_int("size", size, 1)
    if not isinstance(estimator, Estimator):
        raise UserError(f"meta_batch wraps an Estimator, got {type(estimator).__name__}")
    if strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {STRATEGIES}, got strategy = {strategy!r}")
    if estimator.draws_tasks:
        raise UserError(f"estimator {estimator.name!r} already draws its own tasks: meta_batch cannot wrap it")

    def estimate(problem, theta, task, key, state):
        del task
        k_tasks, k_est = jax.random.split(key)
        tasks = jax.vmap(problem.sample_task)(jax.random.split(k_tasks, size))
        if shared_key:
            est_keys, key_axis = k_est, None
        else:
            est_keys, key_axis = jax.random.split(k_est, size), 0

        def one(t, k):
            return estimator.estimate(problem, theta, t, k, state)

        if strategy == "vmap":
            grads, infos, states = jax.vmap(one, in_axes=(0, key_axis))(tasks, est_keys)
        elif shared_key:
            grads, infos, states = jax.lax.map(lambda t: one(t, est_keys), tasks)
        else:
            grads, infos, states = jax.lax.map(lambda tk: one(*tk), (tasks, est_keys))
        grad = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads)
        info = Info(
            grad_calls=jnp.sum(infos.grad_calls).astype(COUNT),
            hvp_calls=jnp.sum(infos.hvp_calls).astype(COUNT),
            exact=jnp.any(infos.exact),
            finite=jnp.all(infos.finite),
            q=jnp.mean(infos.q),
            diverged=jnp.any(infos.diverged),
        )
        return grad, info, jax.tree_util.tree_map(_reduce, states)

    label = "" if strategy == "vmap" else f", strategy={strategy}"
    return Estimator(estimator.init, estimate, f"meta_batch({estimator.name or 'estimator'}, {size}{label})",
                     applicability=estimator.applicability, draws_tasks=True)


def _reduce(s):
    return jnp.mean(s, axis=0).astype(s.dtype) if jnp.issubdtype(s.dtype, jnp.floating) else jnp.max(s, axis=0)
