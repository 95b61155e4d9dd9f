"""Shared pieces of the synthetic problems: dtype resolution and argument checks (a finite task set is
sampled by `ufom_bench.problem.FROM_TASKS`, which draws from the problem's own ``tasks``).

The problems themselves live in `ufom_bench.problems.piecewise` (the Theorem 2 / Figure 1 counterexample)
and `ufom_bench.problems.quadratic` (a p-dimensional problem with closed forms); both are re-exported from
`ufom_bench.problems`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufom_bench.errors import UserError, check_int, check_positive  # noqa: F401  (re-exported)

PyTree = Any

__all__ = ["BiasVariance", "resolve_dtype"]


class BiasVariance(NamedTuple):
    """The two moments of Section 4.2 at one theta, exact over a finite task set.

    Attributes:
      d2: E_T ||G_FO(theta, T) - grad_theta L_out(theta, U^(r)(theta, T), T)||^2 (the integrand of eq. 14).
      v2: E_T ||grad_theta L_out(theta, U^(r)(theta, T), T)||^2 (the integrand of eq. 16).
    """

    d2: jax.Array
    v2: jax.Array


def resolve_dtype(dtype) -> np.dtype:
    """``dtype`` as a floating numpy dtype; None means JAX's default float (float64 under x64, else float32)."""
    dt = jnp.result_type(float) if dtype is None else np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise UserError(f"dtype must be a floating dtype, got dtype = {dtype!r}")
    return dt


# ---------------------------------------------------------------------------------------------------------
# Argument checks (ValueError naming the bad value).


def check_finite(name: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a finite number, got {name} = {value!r}") from None
    if not np.isfinite(x):
        raise UserError(f"{name} must be a finite number, got {name} = {value!r}")
    return x


def check_vector(name: str, value, n: int | None = None) -> np.ndarray:
    """A 1-D float64 numpy array of finite numbers (of length n when given)."""
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a 1-D sequence of numbers, got {name} = {value!r}") from None
    if x.ndim != 1 or x.shape[0] < 1:
        raise UserError(f"{name} must be a non-empty 1-D sequence of numbers, got {name} = {value!r}")
    if n is not None and x.shape[0] != n:
        raise UserError(f"{name} must have length {n} (one per task), got {x.shape[0]}: {name} = {value!r}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{name} must be finite, got {name} = {value!r}")
    return x


def check_probs(probs, n: int) -> np.ndarray:
    """Task probabilities: uniform when None, else n non-negative numbers summing to 1."""
    if probs is None:
        return np.full((n,), 1.0 / n)
    p = check_vector("probs", probs, n)
    if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-6:
        raise UserError(f"probs must be non-negative and sum to 1, got probs = {probs!r}")
    return p
