"""Small problems for tests: nonlinear, pytree-valued theta and phi, V depending on theta."""

import jax
import jax.numpy as jnp

from ufom_bench import Problem


def pytree_problem(r: int = 6, n_tasks: int = 4, seed: int = 0, alphas=None) -> Problem:
    """theta = {'w': (3,), 'b': (2, 2)}, phi = {'u': (3,), 'm': (2,)}: every Alg. 2 term is non-zero.

    L_in has a phi-dependent Hessian and a non-zero mixed derivative; L_out depends on theta directly;
    V(theta, T) is nonlinear in theta; step sizes are not constant.
    """
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    tasks = {
        "v": 0.3 * jax.random.normal(k1, (n_tasks, 3)),
        "y": jax.random.normal(k2, (n_tasks, 2)),
        "c": 0.5 + jax.random.uniform(k3, (n_tasks,)),
    }

    def init_inner(theta, task):
        return {"u": 2.0 * jnp.tanh(theta["w"]) + task["v"], "m": theta["b"] @ jnp.ones(2) * task["c"]}

    def inner_loss(theta, phi, task):
        return (
            jnp.sum(jnp.log1p(phi["u"] ** 2))
            + 0.5 * task["c"] * jnp.sum(phi["m"] ** 2)
            + jnp.sum(jnp.sin(theta["w"]) * phi["u"])
            + jnp.sum(theta["b"] @ phi["m"]) * 0.2
            + 0.05 * jnp.sum(phi["u"] ** 4)
        )

    def outer_loss(theta, phi, task):
        return jnp.sum((phi["u"] - 1.0) ** 2) + jnp.sum(jnp.cos(phi["m"] - task["y"])) + 0.3 * jnp.sum(theta["w"] ** 2)

    def sample_task(key):
        i = jax.random.randint(key, (), 0, n_tasks)
        return jax.tree_util.tree_map(lambda x: x[i], tasks)

    theta0 = {"w": jnp.array([0.3, -0.2, 0.5]), "b": jnp.array([[0.1, 0.2], [0.3, -0.4]])}
    alphas = jnp.linspace(0.05, 0.15, r) if alphas is None else alphas
    return Problem(inner_loss, outer_loss, init_inner, sample_task, alphas, theta0, tasks=tasks, name="pytree")


def flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
