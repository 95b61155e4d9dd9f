"""MAML-style regression with a 2-layer tanh MLP: the neural-network ABLO problem of the benchmarks (asv) and
of the frontier experiment (`mlp_regression`).

Every array is float32 (workloads default to float32), also when a caller has enabled x64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.problem import Problem

__all__ = ["mlp_regression", "regression_mlp_apply", "regression_mlp_init"]


def regression_mlp_init(key, d_in: int, hidden: int):
    """A 2-layer MLP {"w1": (d_in, hidden), "b1", "w2": (hidden, 1), "b2"}: LeCun-normal weights, zero biases."""
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (d_in, hidden), jnp.float32) / jnp.sqrt(jnp.float32(d_in)),
        "b1": jnp.zeros((hidden,), jnp.float32),
        "w2": jax.random.normal(k2, (hidden, 1), jnp.float32) / jnp.sqrt(jnp.float32(hidden)),
        "b2": jnp.zeros((1,), jnp.float32),
    }


def regression_mlp_apply(params, x):
    """f(x) = tanh(x w1 + b1) w2 + b2, one output per row of x."""
    return (jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"])[:, 0]


def _mse(params, x, y):
    return jnp.mean(jnp.square(regression_mlp_apply(params, x) - y))


def _inner_loss(theta, phi, task):
    """L_in: MSE of the network phi on the support set (MAML: theta enters only through V)."""
    del theta
    return _mse(phi, task["x_support"], task["y_support"])


def _outer_loss(theta, phi, task):
    """L_out: MSE of the adapted network phi on the query set."""
    del theta
    return _mse(phi, task["x_query"], task["y_query"])


def _init_inner(theta, task):
    """V(theta, T) = theta (MAML)."""
    del task
    return theta


class _TaskSampler:
    """``key -> task``: a random teacher MLP of the student's shape labels Gaussian inputs, plus noise 0.1.

    A class with value equality (not a closure), so that two problems of the same sizes hash equal as
    static pytree data and a jitted function is not recompiled for each.
    """

    def __init__(self, d_in: int, hidden: int, points: int):
        self.sizes = (d_in, hidden, points)

    def __call__(self, key):
        d_in, hidden, points = self.sizes
        k_teacher, k_xs, k_xq, k_ns, k_nq = jax.random.split(key, 5)
        teacher = regression_mlp_init(k_teacher, d_in, hidden)
        teacher["b2"] = teacher["b2"] + 0.5
        xs = jax.random.normal(k_xs, (points, d_in), jnp.float32)
        xq = jax.random.normal(k_xq, (points, d_in), jnp.float32)
        return {
            "x_support": xs,
            "y_support": regression_mlp_apply(teacher, xs) + 0.1 * jax.random.normal(k_ns, (points,), jnp.float32),
            "x_query": xq,
            "y_query": regression_mlp_apply(teacher, xq) + 0.1 * jax.random.normal(k_nq, (points,), jnp.float32),
        }

    def __eq__(self, other):
        return isinstance(other, _TaskSampler) and self.sizes == other.sizes

    def __hash__(self):
        return hash(("mlp_regression_tasks", self.sizes))


def mlp_regression(r: int, d_in: int = 16, hidden: int = 64, points: int = 1024, alpha: float = 0.1):
    """A MAML-style ABLO problem on a 2-layer tanh MLP (d_in -> hidden -> 1).

    theta = phi = the MLP's parameters (s = p = (d_in + 2) hidden + 1: 1153 at the defaults);
    V(theta, T) = theta; L_in and L_out are the mean squared errors on the task's support and query sets
    (``points`` each); r inner GD steps of size ``alpha`` (0.1 is stable for r = 1000 here). Tasks come from
    ``sample_task(key)``; the benchmarks use the one drawn with ``PRNGKey(0)``.
    """
    return Problem(
        inner_loss=_inner_loss,
        outer_loss=_outer_loss,
        init_inner=_init_inner,
        sample_task=_TaskSampler(d_in, hidden, points),
        step_sizes=jnp.full((r,), alpha, jnp.float32),
        theta0=regression_mlp_init(jax.random.PRNGKey(42), d_in, hidden),
        name="mlp",
    )
