"""Reptile (Nichol, Achiam, Schulman 2018), the first-order baseline of the paper's Table 2."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator
from ufom_bench.errors import UserError

SCALES = ("none", "sum_alpha")


def check_structure(problem, theta, task) -> None:
    """Raise ValueError unless V(theta, T) has theta's pytree structure, shapes and dtypes (static check).

    Reptile's direction theta - phi_r only makes sense when the inner variable lives in theta's space,
    as with MAML's V(theta, T) = theta. (Values cannot be compared under jit: a V with theta's structure
    but other values, e.g. theta + c, passes this check and gets theta - phi_r all the same.)
    """
    core.check_theta(problem, theta)
    phi0 = jax.eval_shape(problem.init_inner, theta, task)
    want, got = jax.tree_util.tree_structure(theta), jax.tree_util.tree_structure(phi0)
    if want != got:
        raise UserError(
            f"reptile needs V(theta, T) = theta (phi in theta's space), but problem {problem.name!r} has "
            f"phi with pytree structure {got} and theta with {want}"
        )
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(theta)[0], jax.tree_util.tree_leaves(phi0)):
        if jnp.shape(a) != b.shape or jnp.result_type(a) != b.dtype:
            where = jax.tree_util.keystr(path)
            raise UserError(
                f"reptile needs V(theta, T) = theta, but in problem {problem.name!r} phi{where} is "
                f"{b.dtype}{list(b.shape)} and theta{where} is {jnp.result_type(a)}{list(jnp.shape(a))}"
            )


def reptile(scale: str = "none") -> Estimator:
    """Reptile's direction G_Rep(theta, T) = theta - phi_r, phi_r = U^(r)(theta, T) (Nichol et al. 2018).

    Convention (``scale="none"``, default, Nichol et al.'s): the raw difference, so that an outer SGD step
    with step size eps, theta <- theta - eps G_Rep, is Reptile's update theta + eps (phi_r - theta).
    ``scale="sum_alpha"`` divides by sum_j alpha_j = r mean(alpha): theta - phi_r = sum_j alpha_j
    dL_in/dphi(phi_{j-1}), so the scaled direction is the alpha-weighted mean inner gradient along the path,
    of the size of a gradient (for r = 1 it is dL_in/dphi at phi_0 = theta), comparable with the other
    estimators under the same outer step size.

    Not an estimate of the ABLO gradient (it uses L_in only, never L_out: it is biased for M_r). Requires
    V(theta, T) = theta (phi and theta with the same pytree structure): ValueError otherwise.

    Cost: r grad calls (the inner loop) and 0 HVPs. No outer gradient is evaluated, so none is counted
    (FOM costs r + 1).
    """
    if scale not in SCALES:
        raise UserError(f"scale must be one of {SCALES}, got scale = {scale!r}")

    def estimate(problem, theta, task, key, state):
        del key
        check_structure(problem, theta, task)
        phi, calls, check = core.inner_loop(problem, theta, task, jnp.zeros((), core.COUNT))
        g = jax.tree_util.tree_map(jnp.subtract, theta, phi)
        if scale == "sum_alpha":
            total = jnp.sum(problem.step_sizes)
            g = jax.tree_util.tree_map(lambda x: x / total.astype(x.dtype), g)
        return g, core.info(g, calls, 0, False, 0.0, check), state

    return Estimator(core.no_state, estimate, "reptile" if scale == "none" else f"reptile(scale={scale})")
