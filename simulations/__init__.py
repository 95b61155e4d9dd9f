"""Experiment definitions: each is (configs(scale) -> list of dicts, cell(config) -> DataFrame), run as a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from ufom_bench.simulations import checkpointing, claims, equal_budget, fewshot, frontier, hypercleaning, synthetic
from ufom_bench.errors import UserError

SCALES = tuple(synthetic.SCALES)


def _fixed(*configs):
    return lambda scale: [{**c, "scale": scale} for c in configs if synthetic.check_scale(scale)]


EXPERIMENTS: dict[str, tuple[Callable[[str], list[dict]], Callable[[dict], pd.DataFrame], str]] = {
    **{name: ((lambda scale, name=name: synthetic.configs(name, scale)), cell, doc)
       for name, cell, doc in [
           ("fig1a", synthetic.cell_fig1a, "Figure 1a-b: task losses and M_r on the counterexample"),
           ("fig1bc", synthetic.cell_fig1bc, "Figure 1b-c: FOM vs UFOM (q = 0.1) outer SGD on the counterexample"),
           ("fig1d", synthetic.cell_fig1d, "Figure 1d: D^2 and V^2 against alpha, with D_bound^2"),
           ("fig1e", synthetic.cell_fig1e, "Figure 1e: theory q* vs empirical best q against alpha"),
           ("fig1f", synthetic.cell_fig1f, "Figure 1f: q = 0, q*, 1 against function calls at alpha = 0.01"),
           ("ext_r", synthetic.cell_ext_r, "Extension: D^2, V^2 and q* against r"),
       ]},
    "claims": (_fixed({"seed": 0}), claims.cell_claims, "Unbiasedness, Lemma 1's identity, Proposition 1"),
    "hypercleaning": (hypercleaning.configs, hypercleaning.cell_hypercleaning,
                      "Table 1: MNIST data hypercleaning, exact_me / FOM / Adaptive UFOM / truncated K=1 at equal calls"),
    "fewshot": (fewshot.configs, fewshot.cell_fewshot,
                "Table 2: few-shot classification, exact_me / FOM / Reptile / Adaptive UFOM at equal calls; D^2, V^2"),
    "frontier": (frontier.configs, frontier.cell_frontier,
                 "Frontier: bias^2, variance, MSE, calls, seconds and temp bytes of every estimator per problem"),
    "equal_budget": (equal_budget.configs, equal_budget.cell_equal_budget,
                     "Equal-budget training: every estimator's figure of merit against calls and seconds, per problem"),
    "checkpointing": (checkpointing.configs, checkpointing.cell_checkpointing,
                      "Checkpointed exact branch: calls, seconds, temp bytes and q*(m) against m; UFOM(q*(m), m) at equal calls"),
}


# The precision each experiment computes in, applied per cell (`run_sweep(x64=...)`), never process-wide.
# The synthetic figures and the claims are theory checks (float64, STYLE.md). Hypercleaning and few-shot
# compute their networks in float32 (explicit dtypes), but some of their random draws (few-shot's task
# sampling, Adaptive UFOM's coin) and statistics follow JAX's default float; both have always run with x64
# on and keep it, so their random streams and numbers stay as published (x64 off draws other tasks).
# The frontier and equal_budget: their counterexample and quadratic are theory checks (float64); their networks
# (mlp, hypercleaning, few-shot) build float32 arrays.
# Checkpointing: its synthetic problem computes in float64 (Figure 1f's), its mlp and few-shot problems build
# float32 arrays.
X64 = {name: True for name in EXPERIMENTS}

# What `ufom-bench report` runs: every experiment with a report section (the frontier's comes first in the PDF).
IN_REPORT = tuple(EXPERIMENTS)


def check_experiment(name: str) -> str:
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return name


def check_scale(scale: str) -> str:
    synthetic.check_scale(scale)
    return scale


def results_dir(out_dir: str = "results", scale: str = "default") -> Path:
    """Where the experiments at ``scale`` keep their results: ``<out_dir>/<scale>/``, one folder per scale."""
    return Path(out_dir) / check_scale(scale)


def run(name: str, scale: str = "default", out_dir: str = "results", executor=None, progress: bool = True):
    """Run (or resume) experiment ``name`` at ``scale``; returns its tidy table (also
    ``<out_dir>/<scale>/<name>.parquet``)."""
    from ufom_bench.sweep import run_sweep

    configs, cell, _ = EXPERIMENTS[check_experiment(name)]
    folder = results_dir(out_dir, scale)
    return run_sweep(name, cell, configs(scale), out_dir=folder, executor=executor, progress=progress,
                     x64=X64.get(name))


# The experiments that take longest at the default scale, longest first: `run_many` starts them first, so
# that parallel jobs end together.
LONGEST_FIRST = ("fewshot", "frontier", "hypercleaning", "equal_budget", "checkpointing", "claims", "fig1e", "fig1f")


def run_many(names, scale: str = "default", out_dir: str = "results", jobs: int = 1, executor=None,
             log=print) -> dict[str, pd.DataFrame]:
    """Run (or resume) the experiments ``names`` at ``scale``; returns name -> table (`run`).

    With ``jobs`` > 1 and no ``executor``, ``jobs`` experiments run at a time, each in its own spawned process
    (`LONGEST_FIRST` first; each process compiles its own programs; cells are stored as they finish, so an
    interrupted run resumes as usual). ``log`` gets one line per experiment started and finished. Otherwise
    they run here one after the other, their cells on ``executor``.
    """
    names = [check_experiment(n) for n in names]
    if int(jobs) <= 1 or executor is not None or len(names) < 2:
        return {n: run(n, scale, out_dir, executor=executor) for n in names}
    import concurrent.futures
    import multiprocessing
    import time

    order = sorted(names, key=lambda n: LONGEST_FIRST.index(n) if n in LONGEST_FIRST else len(LONGEST_FIRST))
    start, tables = time.perf_counter(), {}
    ctx = multiprocessing.get_context("spawn")  # never fork a process that has started JAX
    with concurrent.futures.ProcessPoolExecutor(int(jobs), mp_context=ctx, initializer=_job_init) as pool:
        futures = {pool.submit(run, n, scale, out_dir, None, False): n for n in order}
        log(f"running {', '.join(order)} at scale {scale}, {int(jobs)} at a time")
        for done in concurrent.futures.as_completed(futures):
            name = futures[done]
            tables[name] = done.result()
            log(f"{name}: {len(tables[name])} rows ({time.perf_counter() - start:.0f} s since the start)")
    return {n: tables[n] for n in names}


def _job_init():
    # Several JAX processes share one accelerator: none may preallocate most of its memory (no-op on a CPU).
    import os

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def report_settings(scale: str = "default") -> dict:
    """What the report prints about the experiments at ``scale`` that their tables do not carry, for
    `report.build.build_report` (the command line passes it, so that the report imports no experiment):
    Figure 1's gap D and the counterexample's FOM fixed point and stationary point
    (`problems.counterexample_points`), the divergence threshold, the hypercleaning and few-shot settings
    (their ``SCALES`` entry, Adaptive UFOM's settings, the few-shot budget), and this process's provenance."""
    import jax

    from ufom_bench import problems
    from ufom_bench.estimators import DIVERGENCE_GROWTH
    from ufom_bench.provenance import provenance

    check_scale(scale)
    with jax.enable_x64(X64["fig1bc"]):  # the points in the precision Figure 1 is computed in
        points = problems.counterexample_points(problems.counterexample(D=synthetic.D_GAP))
    return {
        "D": synthetic.D_GAP,
        "counterexample_points": points,
        "divergence_growth": DIVERGENCE_GROWTH,
        "hypercleaning": {**hypercleaning.SCALES[scale], "adaptive": dict(hypercleaning.ADAPTIVE)},
        "fewshot": {**fewshot.SCALES[scale], "adaptive": dict(fewshot.ADAPTIVE), "budget": fewshot.budget_of(scale)},
        "provenance": provenance(),
    }
