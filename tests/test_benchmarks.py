"""The asv suite (benchmarks/): `asv check` passes, and every benchmark body runs once at a tiny size.

asv skips a benchmark whose setup raises NotImplementedError and reports a failing one only in its own
output, so a broken benchmark could go unnoticed; here each one runs (UFOM_BENCH_TINY=1 shrinks problem
sizes and r values) and may raise NotImplementedError only where the suite's documented rule says so.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Every public module of benchmarks/ (asv collects them all); a module with a skip rule of its own defines
# ``skip_reason(class_name, params: dict) -> str | None``.
MODULES = tuple(sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")))
PREFIXES = ("time_", "track_", "mem_", "peakmem_", "timeraw_")


def test_asv_check_passes():
    """`asv check --python=same` from the repository root (asv is a dev dependency: a missing asv fails)."""
    proc = subprocess.run(
        [sys.executable, "-m", "asv", "check", "--python=same"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "No problems found" in output, output


@pytest.fixture(scope="module")
def suite(monkeypatch_module):
    """The benchmark modules imported with UFOM_BENCH_TINY=1 (fresh imports, dropped afterwards)."""
    monkeypatch_module.setenv("UFOM_BENCH_TINY", "1")
    monkeypatch_module.syspath_prepend(str(ROOT))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch_module.delitem(sys.modules, name)
    mods = {name: importlib.import_module(f"benchmarks.{name}") for name in MODULES}
    yield mods
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def benchmark_classes(module):
    """The classes asv would collect from ``module``: public, defined there, with a benchmark method."""
    for name, cls in vars(module).items():
        if inspect.isclass(cls) and not name.startswith("_") and cls.__module__ == module.__name__:
            methods = [m for m in dir(cls) if m.startswith(PREFIXES)]
            if methods:
                yield cls, methods


def expected_skip(module, cls, params) -> str | None:
    """The documented reason a combination does not apply (the modules' not_applicable rules), or None."""
    from benchmarks import _common as C

    names = dict(zip(cls.param_names, params))
    if hasattr(module, "skip_reason"):
        return module.skip_reason(cls.__name__, names)
    if module.__name__.endswith(".autodiff") and "method" in names:
        return module.not_applicable(names["method"], names["r"])
    if module.__name__.endswith(".autodiff"):
        return module.not_applicable(names["baseline"], names["r"])
    if cls.__name__ == "Compiled":
        return C.undefined(names["estimator"], names["problem"])
    if "estimator" in names and cls.__name__ != "CostModel":
        return C.not_applicable(names["estimator"], names["r"], names["problem"])
    return None


def test_suite_covers_every_registered_estimator(suite):
    from benchmarks import _common as C
    from ufom_bench import estimators

    assert list(C.ESTIMATORS) == estimators.names()
    assert {C.parse(label)[0] for label in C.COUNTED} == set(estimators.names())
    timed = {C.parse(label)[0] for label in C.TIMED} | set(C.EXPECTED)
    assert timed == set(estimators.names())


def test_every_benchmark_runs_at_tiny_size(suite):
    ran, skipped, caches = 0, [], {}
    for module in suite.values():
        for cls, methods in benchmark_classes(module):
            cache = None
            if hasattr(cls, "setup_cache"):  # as asv: once per setup_cache function (shared by subclasses)
                if cls.setup_cache not in caches:
                    caches[cls.setup_cache] = cls().setup_cache()
                cache = caches[cls.setup_cache]
            for params in itertools.product(*cls.params):
                bench = cls()
                args = params if cache is None else (cache, *params)
                reason = expected_skip(module, cls, params)
                if reason:
                    with pytest.raises(NotImplementedError):
                        bench.setup(*args)
                    skipped.append((cls.__name__, params))
                    continue
                bench.setup(*args)
                for method in methods:
                    value = getattr(bench, method)(*args)
                    where = f"{cls.__name__}.{method}{params}"
                    if method.startswith("track_"):
                        assert isinstance(value, (int, float)) and math.isfinite(value), (where, value)
                        assert value >= 0, (where, value)
                    ran += 1
    assert ran > 0 and skipped
