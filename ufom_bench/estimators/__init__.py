"""Hypergradient estimators, each an `Estimator(init, estimate)` pair, registered by name.

    est = ufom_bench.estimators.get("ufom", q=0.1)   # or estimators.ufom(q=0.1)
    state = est.init(theta)
    grad, info, state = est.estimate(problem, theta, task, key, state)

`meta_batch(estimator, size)` wraps any of them into the mean over a meta-batch of tasks (an `Estimator`
too; not registered, since it takes an estimator rather than numbers).
"""

from __future__ import annotations

from typing import Callable

from ufom_bench.estimators import core
from ufom_bench.estimators.core import COUNT, DIVERGENCE_GROWTH, Estimator, Info, NotApplicable, PathCheck
from ufom_bench.estimators.adaptive_ufom import AdaptiveState, adaptive_ufom
from ufom_bench.estimators.exact import exact
from ufom_bench.estimators.exact_ckpt import exact_ckpt
from ufom_bench.estimators.exact_me import exact_me
from ufom_bench.estimators.es import es
from ufom_bench.estimators.fom import fom
from ufom_bench.estimators.forward_gradient import forward_gradient
from ufom_bench.estimators.implicit import implicit_cg, neumann
from ufom_bench.estimators.meta_batch import meta_batch
from ufom_bench.estimators.pzobo import pzobo
from ufom_bench.estimators.reptile import reptile
from ufom_bench.estimators.truncated import truncated
from ufom_bench.estimators.ufom import ufom
from ufom_bench.errors import UserError

__all__ = ["COUNT", "DIVERGENCE_GROWTH", "PathCheck", "core", "AdaptiveState", "Estimator", "Info", "NotApplicable",
           "adaptive_ufom", "exact", "exact_me", "fom", "ufom", "meta_batch", "reptile", "truncated", "pzobo",
           "forward_gradient", "es", "implicit_cg", "neumann", "exact_ckpt", "get", "names", "not_applicable",
           "register"]

_REGISTRY: dict[str, Callable[..., Estimator]] = {}


def register(name: str, factory: Callable[..., Estimator]) -> None:
    """Make ``factory`` available as ``get(name, **params)``."""
    if name in _REGISTRY:
        raise UserError(f"estimator {name!r} is already registered")
    _REGISTRY[name] = factory


def get(name: str, **params) -> Estimator:
    """The estimator registered as ``name``, built with ``params`` (e.g. ``get("ufom", q=0.1)``)."""
    if name not in _REGISTRY:
        raise UserError(f"unknown estimator {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name](**params)


def names() -> list[str]:
    """Registered estimator names, in registration order."""
    return list(_REGISTRY)


def not_applicable(estimator: Estimator | str, problem, theta=None, task=None) -> str | None:
    """Why ``estimator`` (an `Estimator`, or a registered name with its defaults) is not defined on
    ``problem``, or None: `core.not_applicable` (static; the estimate raises `NotApplicable` with it)."""
    est = get(estimator) if isinstance(estimator, str) else estimator
    return core.not_applicable(est, problem, theta, task)


for _name, _factory in [("exact", exact), ("exact_me", exact_me), ("fom", fom), ("ufom", ufom), ("adaptive_ufom", adaptive_ufom),
                       ("reptile", reptile), ("truncated", truncated), ("pzobo", pzobo), ("forward_gradient", forward_gradient),
                       ("es", es), ("implicit_cg", implicit_cg), ("neumann", neumann), ("exact_ckpt", exact_ckpt)]:
    register(_name, _factory)
