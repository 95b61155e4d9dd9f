"""ufom-bench: hypergradient estimators for approximate bi-level optimization, checked against theory."""

from ufom_bench import estimators
from ufom_bench.problem import Problem, inner_path, meta_gradient, meta_objective

__version__ = "0.1.0"

__all__ = ["Problem", "estimators", "inner_path", "meta_gradient", "meta_objective", "__version__"]
