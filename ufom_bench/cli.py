"""The `ufom-bench` command line."""

from __future__ import annotations

import argparse
import sys


def _info(args) -> int:
    import platform

    import jax
    import numpy
    import sympy

    import ufom_bench

    rows = {
        "ufom-bench": ufom_bench.__version__,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _dist_version("jaxlib"),
        "numpy": numpy.__version__,
        "sympy": sympy.__version__,
        "backend": jax.default_backend(),
        "devices": ", ".join(f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()),
        "x64": str(bool(jax.config.jax_enable_x64)),
    }
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")
    return 0


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _demo(args) -> int:
    """FOM stalls and UFOM converges on the paper's counterexample (Theorem 2, Figure 1c)."""
    from ufom_bench.demo import counterexample_demo

    counterexample_demo(steps=args.steps, runs=args.runs, q=args.q, seed=args.seed)
    return 0


def _list(args) -> int:
    import simulations

    for name, (_, _, doc) in simulations.EXPERIMENTS.items():
        print(f"{name:<8} {doc}")
    print(f"scales: {', '.join(simulations.SCALES)}")
    return 0


def _executor(args):
    from ufom_bench.sweep import make_executor

    return make_executor(args.scheduler)


def _run(args) -> int:
    import simulations

    simulations.check_experiment(args.experiment)
    with _executor(args) as executor:
        table = simulations.run(args.experiment, args.scale, args.out, executor=executor)
    print(f"{args.experiment}: {len(table)} rows -> {args.out}/{args.experiment}.parquet")
    return 0


def _report(args) -> int:
    import time

    import simulations
    from report.build import build_report

    simulations.synthetic.check_scale(args.scale)
    start = time.perf_counter()
    results = {}
    with _executor(args) as executor:
        for name in simulations.EXPERIMENTS:
            results[name] = simulations.run(name, args.scale, args.out, executor=executor)
    pdf = args.pdf or f"{args.out}/report.pdf"
    pages = build_report(results, args.scale, pdf)
    print(f"report: {pdf} ({pages} pages, {time.perf_counter() - start:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufom-bench",
        description="Hypergradient estimators for approximate bi-level optimization, checked against theory.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, JAX backend and devices, x64 flag").set_defaults(func=_info)
    demo = sub.add_parser("demo", help="FOM stalls, UFOM converges on the Theorem 2 counterexample")
    demo.add_argument("--steps", type=int, default=10_000, help="outer SGD steps (default 10000)")
    demo.add_argument("--runs", type=int, default=100, help="independent runs (default 100)")
    demo.add_argument("--q", type=float, default=0.1, help="UFOM's q (default 0.1)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    sub.add_parser("list", help="the experiments and scales").set_defaults(func=_list)
    for name, func, help_ in (("run", _run, "run (or resume) one experiment"),
                              ("report", _report, "run what is missing, then build the PDF report")):
        cmd = sub.add_parser(name, help=help_)
        if name == "run":
            cmd.add_argument("experiment", help="an experiment name (see `ufom-bench list`)")
        cmd.add_argument("--scale", default="default", help="smoke, default or paper (default: default)")
        cmd.add_argument("--out", default="results", help="results folder (default: results)")
        cmd.add_argument("--scheduler", default=None,
                         help="dask.distributed scheduler address (tcp://host:port), or 'local' for a local cluster")
        if name == "report":
            cmd.add_argument("--pdf", default=None, help="output PDF (default: OUT/report.pdf)")
        cmd.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad user input: one clear line, no traceback
        print(f"ufom-bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
