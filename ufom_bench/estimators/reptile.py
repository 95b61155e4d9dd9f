"""Reptile (Nichol, Achiam, Schulman 2018), the first-order baseline of the paper's Table 2."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator
from ufom_bench.errors import UserError

SCALES = ("none", "sum_alpha")


def v_is_theta(problem, theta, task) -> str | None:
    """Reptile's applicability rule (`core.not_applicable`): None when V(theta, T) = theta, else the reason.

    Reptile's direction theta - phi_r only makes sense when the inner variable starts at theta, as with
    MAML's V(theta, T) = theta. Static, on shape-only arguments: phi_0 must have theta's pytree structure,
    shapes and dtypes, and V's traced program must return theta itself (so V(theta, T) = E theta + v, whose
    phi lives in theta's space, is refused too).
    """
    phi0 = jax.eval_shape(problem.init_inner, theta, task)
    want, got = jax.tree_util.tree_structure(theta), jax.tree_util.tree_structure(phi0)
    if want != got:
        return (f"needs V(theta, T) = theta (phi in theta's space), but problem {problem.name!r} has "
                f"phi with pytree structure {got} and theta with {want}")
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(theta)[0], jax.tree_util.tree_leaves(phi0)):
        if a.shape != b.shape or a.dtype != b.dtype:
            where = jax.tree_util.keystr(path)
            return (f"needs V(theta, T) = theta, but in problem {problem.name!r} phi{where} is "
                    f"{b.dtype}{list(b.shape)} and theta{where} is {a.dtype}{list(a.shape)}")
    if not core.is_identity_in_theta(problem.init_inner, theta, task):
        return (f"needs V(theta, T) = theta, but problem {problem.name!r} starts the inner loop elsewhere "
                f"(its V(theta, T) does not return theta itself)")
    return None


def check_structure(problem, theta, task) -> None:
    """Raise `core.NotApplicable` (a UserError) unless V(theta, T) = theta (`v_is_theta`), after `core.check_theta`."""
    core.check_theta(problem, theta)
    core.require("reptile", v_is_theta, problem, theta, task)


def reptile(scale: str = "none") -> Estimator:
    """Reptile's direction G_Rep(theta, T) = theta - phi_r, phi_r = U^(r)(theta, T) (Nichol et al. 2018).

    Convention (``scale="none"``, default, Nichol et al.'s): the raw difference, so that an outer SGD step
    with step size eps, theta <- theta - eps G_Rep, is Reptile's update theta + eps (phi_r - theta).
    ``scale="sum_alpha"`` divides by sum_j alpha_j = r mean(alpha): theta - phi_r = sum_j alpha_j
    dL_in/dphi(phi_{j-1}), so the scaled direction is the alpha-weighted mean inner gradient along the path,
    of the size of a gradient (for r = 1 it is dL_in/dphi at phi_0 = theta), comparable with the other
    estimators under the same outer step size.

    Not an estimate of the ABLO gradient (it uses L_in only, never L_out: it is biased for M_r). Requires
    V(theta, T) = theta (`v_is_theta`): elsewhere it is not applicable (`core.NotApplicable`, a UserError).

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

    return Estimator(core.no_state, estimate, "reptile" if scale == "none" else f"reptile(scale={scale})", v_is_theta)
