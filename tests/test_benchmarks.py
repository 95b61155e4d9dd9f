"""The asv suite (benchmarks/): `asv check` passes, every benchmark body runs once at a tiny size, and the
cost model's arithmetic is right.

asv skips a benchmark whose setup raises NotImplementedError and reports a failing one only in its own
output, so a broken benchmark could go unnoticed; here each one runs (UFOM_BENCH_TINY=1 shrinks problem
sizes and r values) and may raise NotImplementedError only where the suite's documented rule says so.
No test here reads a real clock: the suite measures through ``benchmarks._common.clock``, replaced by a fake
one, so the outcome does not depend on the machine's load; timing itself belongs to `asv run`.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
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
    """`asv check --python=same` from the repository root (asv is a dev dependency: a missing asv fails).
    It imports the modules and runs nothing, in about a second; the timeout only stops a hung asv."""
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


class TickClock:
    """A fake clock: each reading is TICK seconds after the one before (dyadic, so differences are exact)."""

    TICK = 2.0**-10

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += self.TICK
        return self.now


class FakeClock:
    """A fake clock that moves only by ``advance``."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


# Under TickClock every interval the suite measures is one tick: the exact values of some measured tracks.
UNDER_TICK = {"track_compile_time": TickClock.TICK, "track_time_ratio": 1.0}


def test_every_benchmark_runs_at_tiny_size(suite, monkeypatch):
    """Every combination runs setup and every benchmark method (or skips by the documented rule), and each
    track_ returns a number, under TickClock. There every chain of the cost model takes as long as its double,
    a marginal time of 0, so CostModel reports NaN (the suite's documented outcome of a time difference lost
    in noise); every other track is finite and >= 0, and compile times and time ratios are exactly UNDER_TICK."""
    from benchmarks import _common as C

    monkeypatch.setattr(C, "clock", TickClock())
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
                        assert isinstance(value, (int, float)), (where, value)
                        if cls.__name__ == "CostModel":
                            assert math.isnan(value), (where, value)
                        else:
                            assert math.isfinite(value) and value >= 0, (where, value)
                            assert value == UNDER_TICK.get(method, value), (where, value)
                    ran += 1
    assert ran > 0 and skipped


# The fake cost model: seconds per gradient / HVP call (times the problem's index + 1), seconds a dispatch
# adds to every call, and each estimate's marginal time over the cost of its counted calls.
FAKE_C1, FAKE_C2, FAKE_OVERHEAD = 2.0**-16, 3 * 2.0**-17, 2.0**-10
SLOWDOWN = {"fom": 1.0, "exact_me": 1.25, "ufom[xi=1]": 0.75}


class FakeCall:
    """A call that takes ``seconds`` of a FakeClock: 1 s more the first time (the untimed warm-up of
    `interleaved_min`), 2^-8 s more the second (noise that the minimum over repeats drops)."""

    def __init__(self, clock, seconds):
        self.clock, self.seconds, self.calls = clock, seconds, 0

    def __call__(self):
        self.clock.advance(self.seconds + (1.0 if self.calls == 0 else 2.0**-8 if self.calls == 1 else 0.0))
        self.calls += 1


def fake_workloads(cost_model, clock, slowdown):
    """A stand-in for ``cost_model.workloads``: its calls and counts, with FakeCalls of known times."""
    from ufom_bench import theory

    C = cost_model.C

    def workloads(problem):
        scale = 1 + cost_model.PROBLEMS.index(problem)
        c1, c2 = scale * FAKE_C1, scale * FAKE_C2
        calls, counts = {}, {}
        for r in C.R_COST_MODEL:
            for what in ("fom",) + cost_model.TARGETS:
                g, h = counts[what, r] = tuple(int(x) for x in theory.branch_calls(r, 0 if what == "fom" else 1))
                cost = slowdown[what] * (c1 * g + c2 * h)
                calls["single", what, r] = (FakeCall(clock, FAKE_OVERHEAD + cost), ())
                for m in (8, 16):
                    calls["chain", what, r, m] = (FakeCall(clock, FAKE_OVERHEAD + m * cost), ())
        for m in (C.CHAIN, 2 * C.CHAIN):
            calls["grads", m] = (FakeCall(clock, FAKE_OVERHEAD + m * c1), ())
            calls["hvps", m] = (FakeCall(clock, FAKE_OVERHEAD + m * c2), ())
        return calls, counts

    return workloads


def fake_cost_model(suite, monkeypatch, slowdown):
    """CostModel's setup_cache under a FakeClock with `fake_workloads`."""
    cm = suite["cost_model"]
    clock = FakeClock()
    monkeypatch.setattr(cm.C, "clock", clock)
    monkeypatch.setattr(cm, "workloads", fake_workloads(cm, clock, slowdown))
    return cm, cm.CostModel().setup_cache()


def test_cost_model_arithmetic_with_a_fake_clock(suite, monkeypatch):
    """With known times, CostModel reports C1, C2 and the marginal times exactly, and measured / predicted =
    the estimate's slowdown over FOM's; the dispatched ratios from single calls (overhead included)."""
    from ufom_bench import theory

    cm, cache = fake_cost_model(suite, monkeypatch, SLOWDOWN)
    for scale, problem in enumerate(cm.PROBLEMS, start=1):
        c1, c2 = scale * FAKE_C1, scale * FAKE_C2
        assert (cache[problem]["C1"], cache[problem]["C2"]) == (c1, c2)
        for r in cm.C.R_COST_MODEL:
            g_fom, h_fom = (int(x) for x in theory.branch_calls(r, 0))
            fom = c1 * g_fom + c2 * h_fom
            assert cache[problem]["marginal"]["fom", r] == fom
            for target in cm.TARGETS:
                g, h = (int(x) for x in theory.branch_calls(r, 1))
                cost = SLOWDOWN[target] * (c1 * g + c2 * h)
                assert cache[problem]["marginal"][target, r] == cost
                predicted = (c1 * g + c2 * h) / fom
                dispatched = (FAKE_OVERHEAD + cost) / (FAKE_OVERHEAD + fom)
                bench = cm.CostModel()
                bench.setup(cache, target, r, problem)
                got = {m: getattr(bench, f"track_{m}")(cache, target, r, problem) for m in
                       ("cost_model_ratio", "cost_model_ratio_dispatched", "measured_time_ratio",
                        "predicted_time_ratio")}
                assert got == pytest.approx({
                    "cost_model_ratio": SLOWDOWN[target], "cost_model_ratio_dispatched": dispatched / predicted,
                    "measured_time_ratio": cost / fom, "predicted_time_ratio": predicted}, rel=1e-12), \
                    (target, r, problem)


def test_cost_model_reports_nan_for_a_time_lost_in_noise(suite, monkeypatch, capsys):
    """FOM's chains of n and 2n estimates taking the same time (a marginal time of 0): the ratios that need it
    are NaN, with the reason on stderr; the prediction from C1 and C2 and the dispatched ratio still stand."""
    cm, cache = fake_cost_model(suite, monkeypatch, {**SLOWDOWN, "fom": 0.0})
    r, problem = cm.C.R_COST_MODEL[0], cm.PROBLEMS[0]
    v = cm.ratios(cache, "exact_me", r, problem)
    assert math.isnan(v["measured"]) and math.isnan(v["ratio"])
    assert math.isfinite(v["predicted"]) and math.isfinite(v["ratio_dispatched"])
    assert f"t(fom) = 0 s on {problem} at r = {r}" in capsys.readouterr().err
