"""ufom-bench: hypergradient estimators for approximate bi-level optimization, checked against theory.

The JAX-backed names (`estimators`, `Problem`, ...) are imported on first use (PEP 562), so that importing
a light submodule (`ufom_bench.analysis`, `ufom_bench.errors`, the command line's --help) does not import JAX.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (None: the name is that submodule itself)
_LAZY = {
    "estimators": None,
    "Problem": "ufom_bench.problem",
    "inner_path": "ufom_bench.problem",
    "meta_gradient": "ufom_bench.problem",
    "meta_objective": "ufom_bench.problem",
}

__all__ = ["Problem", "estimators", "inner_path", "meta_gradient", "meta_objective", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ufom_bench' has no attribute {name!r}")
    where = _LAZY[name]
    value = importlib.import_module(f"ufom_bench.{name}") if where is None else getattr(
        importlib.import_module(where), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
