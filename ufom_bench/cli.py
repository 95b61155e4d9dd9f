"""The `ufom-bench` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path

from ufom_bench.errors import UserError


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
    if args.steps < 1:
        raise UserError(f"--steps must be a positive number of outer steps, got --steps {args.steps}")
    if args.runs < 2:
        raise UserError(f"--runs must be at least 2 (the 95% CI needs two runs), got --runs {args.runs}")
    if not 0 < args.q <= 1:
        raise UserError(f"--q must be in (0, 1], got --q {args.q:g}")
    from ufom_bench.demo import counterexample_demo

    counterexample_demo(steps=args.steps, runs=args.runs, q=args.q, seed=args.seed)
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into one line naming the value)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _list(args) -> int:
    from ufom_bench import simulations

    width = max(map(len, simulations.EXPERIMENTS))
    for name, (_, _, doc) in simulations.EXPERIMENTS.items():
        print(f"{name:<{width}}  {doc}")
    print(f"scales: {', '.join(simulations.SCALES)}")
    return 0


@contextlib.contextmanager
def _session(args, folder: Path):
    """The results folder locked for this command, then the executor for its cells (arguments checked first)."""
    from ufom_bench.sweep import check_scheduler, make_executor, results_lock

    check_scheduler(args.scheduler)
    with results_lock(folder), make_executor(args.scheduler) as executor:
        yield executor


def _run(args) -> int:
    from ufom_bench import simulations

    simulations.check_experiment(args.experiment)
    folder = simulations.results_dir(args.out, args.scale)
    with _session(args, folder) as executor:
        table = simulations.run(args.experiment, args.scale, args.out, executor=executor)
    print(f"{args.experiment}: {len(table)} rows -> {folder / args.experiment}.parquet")
    return 0


def _report(args) -> int:
    import time

    from ufom_bench import simulations
    from ufom_bench.report.build import build_report

    folder = simulations.results_dir(args.out, args.scale)
    pdf = args.pdf or str(folder / "report.pdf")
    start = time.perf_counter()
    with _session(args, folder) as executor:
        results = simulations.run_many(simulations.IN_REPORT, args.scale, args.out, jobs=args.jobs,
                                       executor=executor if args.scheduler else None)
        try:
            pages = build_report(results, args.scale, pdf, simulations.report_settings(args.scale))
        except OSError as exc:
            if exc.errno and exc.filename is None:  # e.g. a full disk names no file
                raise OSError(exc.errno, exc.strerror or str(exc), pdf) from exc
            raise
    print(f"report: {pdf} ({pages} pages, {time.perf_counter() - start:.0f} s); tables in {folder}/")
    return 0


def load_problem(spec: str):
    """The `Problem` returned by the factory ``spec`` = "package.module:function" (called without arguments),
    imported with the current folder on the path. A bad spec raises a one-line `UserError` naming it."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"--problem must be package.module:function, got --problem {spec!r}")
    if os.getcwd() not in sys.path:  # `ufom-bench` (a console script) does not put the current folder on the path
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise UserError(f"--problem {spec}: no module named {module_name!r}") from None
        raise UserError(f"--problem {spec}: importing {module_name!r} failed: {err}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UserError(f"--problem {spec}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UserError(f"--problem {spec}: {attr!r} is not callable")
    from ufom_bench.problem import Problem

    problem = factory()
    if not isinstance(problem, Problem):
        raise UserError(f"--problem {spec}: {attr}() returned {type(problem).__name__}, not a ufom_bench.Problem")
    return problem


def parse_estimator(text: str) -> tuple[str, dict]:
    """``"ufom"`` -> ("ufom", {}); ``"pzobo:n_dirs=4,mu=0.01"`` -> ("pzobo", {"n_dirs": 4, "mu": 0.01})."""
    import ast

    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--estimators entries are name or name:key=value,...; got {text!r}")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return name.strip(), params


def _frontier(args) -> int:
    """`frontier.compare` on a user's problem: rows (parquet, csv), recommendation (csv), figure, short PDF."""
    if args.n_tasks < 2 or args.n_keys < 2:
        raise UserError(f"--n-tasks and --n-keys must be at least 2, got --n-tasks {args.n_tasks} --n-keys {args.n_keys}")
    settings = [parse_estimator(e) for e in args.estimators] if args.estimators else None
    targets = tuple(args.targets)
    if not targets or min(targets) <= 0:
        raise UserError(f"--targets must be positive relative MSEs, got --targets {' '.join(map(str, targets))}")
    problem = load_problem(args.problem)
    if settings is not None:
        from ufom_bench import estimators

        for name, params in settings:
            estimators.get(name, **params)  # a bad name or parameter fails before any measurement
    import jax
    import matplotlib.pyplot as plt

    from ufom_bench import frontier
    from ufom_bench.provenance import provenance
    from ufom_bench.report import figures
    from ufom_bench.report.document import Report, pdf_page_count
    from ufom_bench.report.frontier import add_frontier_section, fig_frontier, summary_sentences

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmp = frontier.compare(problem, settings, targets=targets, n_tasks=args.n_tasks, n_keys=args.n_keys,
                           key=jax.random.PRNGKey(args.seed), timing=not args.no_timing)
    rows = cmp.rows.assign(point="theta0", seed=args.seed, **{f"prov_{k}": v for k, v in provenance().items()})
    rows.to_parquet(out / "frontier.parquet")
    rows.to_csv(out / "frontier.csv", index=False)
    cmp.recommendation.to_csv(out / "recommendation.csv", index=False)
    figures.style()
    fig = fig_frontier(rows, problem.name)
    fig.savefig(out / "frontier.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    rep = Report(f"ufom-bench frontier: {problem.name}",
                 f"--problem {args.problem}; {args.n_tasks} task draws x {args.n_keys} keys; seed {args.seed}")
    add_frontier_section(rep, rows, targets=targets)
    rep.provenance(provenance(), caption="Versions and backend of this run.")
    rep.build(out / "frontier.pdf")
    from ufom_bench.analysis import frontier_recommendations

    for line in summary_sentences(frontier_recommendations(rows, targets)):
        print(line)
    print(f"frontier: {len(rows)} rows -> {out}/frontier.parquet (.csv), recommendation.csv, frontier.png, "
          f"frontier.pdf ({pdf_page_count(out / 'frontier.pdf')} pages)")
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
        cmd.add_argument("--out", default="results",
                         help="results folder; each scale in its own OUT/SCALE/ (default: results)")
        cmd.add_argument("--scheduler", default=None,
                         help="dask.distributed scheduler address (tcp://host:port), or 'local' for a local cluster")
        if name == "report":
            cmd.add_argument("--pdf", default=None, help="output PDF (default: OUT/SCALE/report.pdf)")
            cmd.add_argument("--jobs", type=_positive_int, default=min(4, os.cpu_count() or 1),
                             help="experiments run at a time, each in its own process (default: the CPU cores, "
                                  "at most 4; ignored with --scheduler)")
        cmd.set_defaults(func=func)
    fr = sub.add_parser("frontier", help="measure every estimator on your own Problem: rows, figure, recommendation, PDF")
    fr.add_argument("--problem", required=True, help="package.module:function returning a ufom_bench.Problem")
    fr.add_argument("--out", default="frontier", help="output folder (default: frontier)")
    fr.add_argument("--n-tasks", type=int, default=64, help="task draws on a sampled problem (default 64)")
    fr.add_argument("--n-keys", type=int, default=8, help="estimator keys per task (default 8)")
    fr.add_argument("--estimators", nargs="+", default=None, metavar="NAME[:K=V,...]",
                    help="settings to measure, e.g. fom ufom:q=0.1 pzobo:n_dirs=4 (default: every registered "
                         "estimator with its defaults)")
    fr.add_argument("--targets", type=float, nargs="+", default=[10.0, 1.0, 0.1],
                    help="relative-MSE targets of the recommendation (default 10 1 0.1)")
    fr.add_argument("--seed", type=int, default=0)
    fr.add_argument("--no-timing", action="store_true", help="skip seconds and XLA temp bytes")
    fr.set_defaults(func=_frontier)
    return parser


def _user_message(err: Exception, args) -> str | None:
    """The one-line message of an error the user can fix: a `UserError` (also as a failed cell's cause), or
    an OSError on the results folder or the PDF (a folder on the way to them included). None for a bug."""
    from ufom_bench.sweep import CellError

    if isinstance(err, CellError) and isinstance(err.__cause__, UserError):
        err = err.__cause__
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError) and err.filename:
        path = Path(os.path.abspath(err.filename))
        for target in filter(None, (getattr(args, "out", None), getattr(args, "pdf", None))):
            target = Path(os.path.abspath(target))
            if path == target or target in path.parents or path in target.parents:
                return f"cannot write {err.filename}: {err.strerror}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as err:  # Ctrl-C: what was kept (`sweep.Interrupted` says) and how to resume
        kept = f": {err}" if str(err) else ""
        resume = f"; resume with: ufom-bench {shlex.join(argv)}" if args.command in ("run", "report") else ""
        print(f"ufom-bench: interrupted{kept}{resume}", file=sys.stderr)
        return 130
    except Exception as err:
        message = _user_message(err, args)
        if message is None:  # a bug: keep the traceback
            raise
        print(f"ufom-bench: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
