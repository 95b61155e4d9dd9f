"""The ABLO problem (eqs. 2-4 of Likhosherstov et al., ICML 2021).

A `Problem` bundles the inner loss L_in, the outer loss L_out, the inner start V(theta, T), a task sampler
p(T), the inner step sizes alpha_1..alpha_r and a default theta_0. It is a pytree: the functions are static,
the arrays (step sizes, theta0, and the finite task set when there is one) are leaves, so a `Problem` passes
through `jit`, `vmap` and `grad` like any other argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ufom_bench.errors import UserError

PyTree = Any

__all__ = ["Problem", "FROM_TASKS", "FromTasks", "inner_path", "meta_objective", "meta_gradient", "task_at"]


class FromTasks:
    """``sample_task`` of a problem with a finite task set: row i of ``problem.tasks`` with probability
    ``problem.task_probs[i]`` (`jax.random.choice`, then indexing every leaf; pure JAX).

    Pass the unbound `FROM_TASKS` as ``Problem(sample_task=FROM_TASKS, tasks=..., ...)``: the problem binds
    it to itself, so the task arrays are held once, as leaves of the problem (traced under jit like any
    leaf), and `Problem.replace(tasks=...)` draws from the new tasks. A copy without an exposed task set
    (``replace(tasks=None)``) keeps drawing from the tasks of the problem it came from. As static pytree
    data every bound-to-itself sampler flattens to the unbound marker, so jitted functions taking a
    `Problem` are not recompiled per problem.
    """

    def __init__(self, problem: "Problem | None" = None):
        self.problem = problem

    def __call__(self, key: jax.Array) -> PyTree:
        if self.problem is None:
            raise UserError("FROM_TASKS draws from a problem's tasks: pass it as Problem(sample_task=...)")
        p = self.problem
        i = jax.random.choice(key, _num_tasks(p.tasks), p=p.task_probs)
        return jax.tree_util.tree_map(lambda x: x[i], p.tasks)

    def __eq__(self, other) -> bool:
        return isinstance(other, FromTasks) and self.problem is other.problem

    def __hash__(self) -> int:
        return hash((FromTasks, id(self.problem)))

    def __repr__(self) -> str:
        return "FROM_TASKS" if self.problem is None else f"FromTasks({self.problem.name!r})"


FROM_TASKS = FromTasks()


@dataclasses.dataclass(frozen=True)
class Problem:
    """An approximate bi-level optimization problem (eqs. 2-4).

    Attributes:
      inner_loss: ``(theta, phi, task) -> scalar``, L_in.
      outer_loss: ``(theta, phi, task) -> scalar``, L_out.
      init_inner: ``(theta, task) -> phi``, the inner start V(theta, T).
      sample_task: ``key -> task``, a draw T ~ p(T).
      step_sizes: 1-D array (alpha_1, ..., alpha_r); ``r`` is its length.
      theta0: the default starting theta (a pytree of floating arrays).
      tasks: optional finite task set, every leaf stacked along axis 0 (|Omega_T| rows). When present,
        expectations over p(T) can be computed exactly (`meta_objective`, `meta_gradient`).
      task_probs: optional probabilities of the rows of ``tasks`` (uniform when ``tasks`` is given alone).
      name: a short label used in results tables.
    """

    inner_loss: Callable[..., jax.Array]
    outer_loss: Callable[..., jax.Array]
    init_inner: Callable[..., PyTree]
    sample_task: Callable[[jax.Array], PyTree]
    step_sizes: jax.Array
    theta0: PyTree
    tasks: PyTree | None = None
    task_probs: jax.Array | None = None
    name: str = "problem"

    def __post_init__(self):
        for field in ("inner_loss", "outer_loss", "init_inner", "sample_task"):
            if not callable(getattr(self, field)):
                raise TypeError(f"Problem.{field} must be callable, got {getattr(self, field)!r}")
        alpha = _validated_step_sizes(self.step_sizes)
        object.__setattr__(self, "step_sizes", alpha)
        object.__setattr__(self, "theta0", _validated_theta0(self.theta0))
        if self.task_probs is not None and self.tasks is None:
            raise UserError("Problem.task_probs given without Problem.tasks")
        if self.tasks is not None:
            n = _num_tasks(self.tasks)
            probs = jnp.full((n,), 1.0 / n) if self.task_probs is None else jnp.asarray(self.task_probs)
            p = np.asarray(probs, dtype=np.float64)
            if p.shape != (n,) or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > 1e-6:
                raise UserError(
                    f"Problem.task_probs must be {n} non-negative finite numbers summing to 1, got {p!r}"
                )
            object.__setattr__(self, "task_probs", probs)
        if isinstance(self.sample_task, FromTasks):
            if self.tasks is not None:
                object.__setattr__(self, "sample_task", FromTasks(self))
            elif self.sample_task.problem is None:
                raise UserError("sample_task=FROM_TASKS needs Problem.tasks")

    @property
    def r(self) -> int:
        """Number of inner GD steps (static: the length of ``step_sizes``)."""
        return self.step_sizes.shape[0]

    @property
    def num_tasks(self) -> int | None:
        """|Omega_T| when the task set is finite and exposed, else None."""
        return None if self.tasks is None else _num_tasks(self.tasks)

    def replace(self, **changes) -> "Problem":
        """A copy with some fields changed (validated again), e.g. ``problem.replace(step_sizes=...)``."""
        return dataclasses.replace(self, **changes)


_STATIC = ("inner_loss", "outer_loss", "init_inner", "sample_task", "name")
_LEAVES = ("step_sizes", "theta0", "tasks", "task_probs")


def _flatten(p: Problem):
    static = tuple(getattr(p, f) for f in _STATIC)
    if isinstance(p.sample_task, FromTasks) and p.sample_task.problem is p:
        static = tuple(FROM_TASKS if f == "sample_task" else v for f, v in zip(_STATIC, static))
    return tuple(getattr(p, f) for f in _LEAVES), static


def _unflatten(aux, children) -> Problem:
    # Rebuilt inside transformations with tracers (or sentinels) as leaves: no validation here.
    p = object.__new__(Problem)
    for f, v in zip(_STATIC, aux):
        object.__setattr__(p, f, v)
    for f, v in zip(_LEAVES, children):
        object.__setattr__(p, f, v)
    if p.sample_task is FROM_TASKS:
        object.__setattr__(p, "sample_task", FromTasks(p))
    return p


jax.tree_util.register_pytree_node(Problem, _flatten, _unflatten)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _validated_step_sizes(step_sizes) -> jax.Array:
    if not _is_concrete(step_sizes):
        return step_sizes
    a = np.asarray(step_sizes)
    if a.ndim != 1:
        raise UserError(f"step_sizes must be a 1-D array (alpha_1..alpha_r), got shape {a.shape}")
    if a.shape[0] < 1:
        raise UserError(f"step_sizes must hold r >= 1 inner step sizes, got r = {a.shape[0]}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(jnp.result_type(float))
    bad = ~(np.isfinite(a) & (a > 0))
    if bad.any():
        j = int(np.argmax(bad))
        raise UserError(
            f"step sizes must be finite and > 0, got alpha_{j + 1} = {float(a[j])!r} (step_sizes[{j}])"
        )
    return jnp.asarray(a)


def _validated_theta0(theta0) -> PyTree:
    leaves, _ = jax.tree_util.tree_flatten_with_path(theta0)
    if not leaves:
        raise UserError("theta0 must be a non-empty pytree of floating arrays")
    for path, leaf in leaves:
        if not _is_concrete(leaf):
            continue
        where = "theta0" + jax.tree_util.keystr(path)
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating):
            raise UserError(f"{where} must be a floating array, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise UserError(f"{where} must be finite, got non-finite values: {arr.ravel()[:5]!r}")
    return jax.tree_util.tree_map(jnp.asarray, theta0)


def _num_tasks(tasks) -> int:
    leaves = jax.tree_util.tree_leaves(tasks)
    if not leaves:
        raise UserError("Problem.tasks must be a non-empty pytree of arrays stacked along axis 0")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise UserError(f"every leaf of Problem.tasks must share its leading axis, got sizes {sizes}")
    return sizes.pop()


def task_at(problem: Problem, i) -> PyTree:
    """Row ``i`` of a finite task set."""
    if problem.tasks is None:
        raise UserError(f"problem {problem.name!r} exposes no finite task set")
    return jax.tree_util.tree_map(lambda x: x[i], problem.tasks)


def inner_path(problem: Problem, theta: PyTree, task: PyTree) -> PyTree:
    """phi_r = U^(r)(theta, T) by r steps of inner GD (eqs. 2-3), differentiable (unrolled by scan)."""

    def step(phi, alpha):
        g = jax.grad(problem.inner_loss, argnums=1)(theta, phi, task)
        return jax.tree_util.tree_map(lambda p, d: p - alpha * d, phi, g), None

    phi, _ = jax.lax.scan(step, problem.init_inner(theta, task), problem.step_sizes)
    return phi


def meta_objective(problem: Problem, theta: PyTree) -> jax.Array:
    """M_r(theta) = E_T L_out(theta, U^(r)(theta, T), T) (eq. 4), exactly over a finite task set."""
    if problem.tasks is None:
        raise UserError(f"problem {problem.name!r} exposes no finite task set: M_r can only be sampled")

    def one(task):
        return problem.outer_loss(theta, inner_path(problem, theta, task), task)

    return jnp.sum(problem.task_probs * jax.vmap(one)(problem.tasks))


def meta_gradient(problem: Problem, theta: PyTree) -> PyTree:
    """dM_r/dtheta (Assumption 2: the expectation of the exact ABLO gradient), exact over a finite task set."""
    return jax.grad(meta_objective, argnums=1)(problem, theta)
