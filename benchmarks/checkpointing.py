"""Binomial checkpointing (`exact_ckpt`): counted grad calls against Griewank's t(r + 1, m), and XLA temporary
bytes against the number m of stored inner states, across r.

m is a rule of r ("1", "2", "4", "log2(r)", "sqrt(r)", "r", rounded, at least 1). The counts do not depend on
the problem, so they are measured on the scalar counterexample (m = 1 at r = 1000 is 500,501 gradient calls);
the temp bytes are read from the compiled programs of every problem (nothing runs). Expected: grad calls
1 + t(r + 1, m) and r HVPs (`theory.checkpointed_calls`; ``track_grad_calls_over_formula`` is 0), temp bytes
constant in r at fixed m and growing by about one inner state per checkpoint.
"""

from __future__ import annotations

import math

from . import _common as C

M_RULES = ("1", "2", "4", "log2(r)", "sqrt(r)", "r")


def checkpoints(rule: str, r: int) -> int:
    """The number of checkpoints a rule gives at r (rounded, at least 1)."""
    value = {"log2(r)": math.log2(r) if r > 1 else 1, "sqrt(r)": math.sqrt(r), "r": r}.get(rule)
    return max(1, round(float(rule) if value is None else value))


class _Cache:
    def setup_cache(self):
        """{"grad_calls", "hvp_calls", "formula"}: per (rule, r); {"temp_bytes"}: per (rule, r, problem)."""
        import jax

        from ufom_bench import theory
        from ufom_bench import estimators, memory

        out = {"grad_calls": {}, "hvp_calls": {}, "formula": {}, "temp_bytes": {}}
        for r in C.R_VALUES:
            for rule in M_RULES:
                m = checkpoints(rule, r)
                fn = estimators.exact_ckpt(m).estimate
                for problem in C.PROBLEMS:
                    prob, theta, task = C.build_problem(problem, r)
                    out["temp_bytes"][rule, r, problem] = memory.temp_bytes(fn, prob, theta, task, jax.random.PRNGKey(0), ())
                prob, theta, task = C.build_problem("counterexample", r)
                _, info, _ = jax.jit(fn)(prob, theta, task, jax.random.PRNGKey(0), ())
                out["grad_calls"][rule, r] = int(info.grad_calls)
                out["hvp_calls"][rule, r] = int(info.hvp_calls)
                out["formula"][rule, r] = theory.checkpointed_calls(r, m)
        return out

    setup_cache.timeout = 1800


class ScheduleCounts(_Cache):
    """Counted calls of one exact_ckpt(m) estimate (counterexample) and their distance to the formula."""

    params = (list(M_RULES), list(C.R_VALUES))
    param_names = ("checkpoints", "r")
    timeout = 120

    def setup(self, cache, checkpoints, r):
        self.where = (checkpoints, r)

    def track_grad_calls(self, cache, checkpoints, r):
        return cache["grad_calls"][self.where]

    track_grad_calls.unit = "calls"

    def track_hvp_calls(self, cache, checkpoints, r):
        return cache["hvp_calls"][self.where]

    track_hvp_calls.unit = "calls"

    def track_grad_calls_over_formula(self, cache, checkpoints, r):
        """|counted - (1 + t(r + 1, m))| + |HVPs - r|: 0 when the schedule is Griewank's optimum."""
        want_g, want_h = cache["formula"][self.where]
        return abs(cache["grad_calls"][self.where] - want_g) + abs(cache["hvp_calls"][self.where] - want_h)

    track_grad_calls_over_formula.unit = "calls"


class ScheduleMemory(_Cache):
    """XLA temporary bytes of one exact_ckpt(m) estimate's program."""

    params = (list(M_RULES), list(C.R_VALUES), list(C.PROBLEMS))
    param_names = ("checkpoints", "r", "problem")
    timeout = 120

    def setup(self, cache, checkpoints, r, problem):
        self.where = (checkpoints, r, problem)

    def track_temp_bytes(self, cache, checkpoints, r, problem):
        return cache["temp_bytes"][self.where]

    track_temp_bytes.unit = "bytes"
