"""Issue 15's closing table: every registered estimator at its benchmark parameters (`_common.ESTIMATOR_PARAMS`)
x (cost formula and its value at r = 10, XLA temp bytes of one jitted estimate on the mlp problem at
r = 10, 100, 1000, bias^2 and the two parts of the variance with SEs on the quadratic and on the mlp at theta0).

    python -m benchmarks.zoo                 # markdown on stdout (a few minutes on a 2-core CPU)
    python -m benchmarks.zoo --tasks 8 --keys 4 --quadratic-keys 16 --memory-r 10 100    # quicker

The measurements are the library's (`ufom_bench.frontier.measure`, `frontier.temp_bytes`); this module picks
the problems, runs them and prints. Quadratic: `problems.quadratic()` (p = 10, 8 equally likely tasks, r = 10)
in float64, exact over its task set (SEs from the estimator's keys alone). mlp: `_common.build_problem("mlp", r)`
(float32, the benchmarks' sizes), tasks sampled (SEs over tasks). Temp bytes need compilation only, so even
r = 1000 with exact_me's O(r^2) recomputation costs nothing to measure. Not asv-discovered (no ``time_`` or
``track_`` names); JAX is imported inside functions, like the other benchmark modules.
"""

from __future__ import annotations

import argparse
import sys

from . import _common as C

R_TABLE = 10  # the r of the Monte Carlo columns and of the formula's value


def settings() -> list[tuple[str, dict]]:
    """(name, parameters) of every registered estimator, at the benchmarks' parameters."""
    from ufom_bench import estimators

    return [(name, dict(C.ESTIMATOR_PARAMS.get(name, {}))) for name in estimators.names()]


def memory_rows(r_values=(10, 100, 1000)) -> dict:
    """{(name, r): temp bytes or the reason it is not defined} on the mlp problem."""
    from ufom_bench import estimators, frontier

    out = {}
    for r in r_values:
        prob, theta, task = C.build_problem("mlp", r)
        for name, params in settings():
            est = estimators.get(name, **params)
            reason = estimators.not_applicable(est, prob, theta, task)
            out[name, r] = f"n/a: {reason}" if reason else frontier.temp_bytes(prob, est, theta, task)
    return out


def moment_rows(n_tasks: int, n_keys: int, quadratic_keys: int, seed: int = 0) -> dict:
    """{problem label: frontier.measure rows} on the quadratic (float64, exact over tasks) and the mlp."""
    import jax

    from ufom_bench import frontier, problems

    key = jax.random.PRNGKey(seed)
    with jax.enable_x64(True):
        quad = frontier.measure(problems.quadratic(r=R_TABLE), settings(), n_keys=quadratic_keys, key=key,
                                timing=False)
    prob, theta, _ = C.build_problem("mlp", R_TABLE)
    mlp = frontier.measure(prob, settings(), theta, n_tasks=n_tasks, n_keys=n_keys, key=key, timing=False)
    return {"quadratic": quad, "mlp": mlp}


def table(moments: dict, mem: dict, r_values) -> "pandas.DataFrame":
    """One row per estimator: formula, its value at r = 10, temp bytes per r, and the moments per problem."""
    import pandas as pd

    from ufom_bench.theory import zoo
    from ufom_bench import analysis, frontier

    rows = []
    for i, (name, params) in enumerate(settings()):
        grads, hvps = zoo.calls(name, R_TABLE, **params)
        row = {"estimator": frontier.label(name, params), "calls (grads + HVPs)": zoo.calls_text(name),
               f"calls at r = {R_TABLE}": analysis.format_count(grads + hvps)}
        for r in r_values:
            b = mem[name, r]
            row[f"temp bytes r = {r}"] = "n/a" if isinstance(b, str) else f"{b:,}"
        for prob, prob_rows in moments.items():
            m = prob_rows[i]
            if m.get("not_applicable"):
                row[f"{prob}: bias^2"] = row[f"{prob}: var task"] = row[f"{prob}: var own"] = "n/a"
                continue
            row[f"{prob}: bias^2"] = analysis.format_pm(m["bias2"], m["bias2_se"])
            row[f"{prob}: var task"] = analysis.format_pm(m["var_task"], m["var_task_se"])
            row[f"{prob}: var own"] = analysis.format_pm(m["var_est"], m["var_est_se"])
        rows.append(row)
    return pd.DataFrame(rows)


def notes(moments: dict, mem: dict) -> list[str]:
    """The reasons behind every "n/a", once each, and the Monte Carlo sizes."""
    reasons = {v for v in mem.values() if isinstance(v, str)}
    reasons |= {f"n/a: {m['not_applicable']}" for rows in moments.values() for m in rows if m.get("not_applicable")}
    sizes = []
    for prob, rows in moments.items():
        m = next(m for m in rows if not m.get("not_applicable"))
        sizes.append(f"{prob}: {m['method']} over {m['n']} tasks x {m['n_keys']} keys")
    return sorted(reasons) + ["Monte Carlo: " + "; ".join(sizes) + " (value +- SE)."]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64, help="task draws on the mlp (default 64)")
    parser.add_argument("--keys", type=int, default=8, help="estimator keys per mlp task (default 8)")
    parser.add_argument("--quadratic-keys", type=int, default=512,
                        help="estimator keys per quadratic task (exact over its 8 tasks; default 512)")
    parser.add_argument("--memory-r", type=int, nargs="+", default=[10, 100, 1000], help="r of the temp bytes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    moments = moment_rows(args.tasks, args.keys, args.quadratic_keys, args.seed)
    mem = memory_rows(tuple(args.memory_r))
    out = table(moments, mem, tuple(args.memory_r))
    print(out.to_markdown(index=False, disable_numparse=True))
    print()
    for line in notes(moments, mem):
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
