"""The benchmarks' neural-network ABLO problem: `ufom_bench.problems.mlp_regression` (MAML-style regression with
a 2-layer tanh MLP), re-exported here under its old names.

Nothing here imports JAX at module import (asv's worker processes must start clean); the library is imported
when a builder is called from a benchmark's ``setup``.
"""

from __future__ import annotations


def mlp_init(key, d_in: int, hidden: int):
    """`ufom_bench.problems.regression.regression_mlp_init`."""
    from ufom_bench.problems.regression import regression_mlp_init

    return regression_mlp_init(key, d_in, hidden)


def mlp_apply(params, x):
    """`ufom_bench.problems.regression.regression_mlp_apply`."""
    from ufom_bench.problems.regression import regression_mlp_apply

    return regression_mlp_apply(params, x)


def mlp_regression(r: int, d_in: int = 16, hidden: int = 64, points: int = 1024, alpha: float = 0.1):
    """`ufom_bench.problems.mlp_regression` (see there)."""
    from ufom_bench.problems import mlp_regression as build

    return build(r, d_in, hidden, points, alpha)
