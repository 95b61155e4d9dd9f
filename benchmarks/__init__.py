"""The asv benchmark suite of ufom-bench (asv.conf.json at the repository root; README.md, "Benchmarks").

Modules: estimate (time, compile time, counted calls and temp bytes per estimator x r x problem),
cost_model (wall time against Proposition 1), autodiff (Algorithm 2 against jax.grad through the loop),
throughput (Monte Carlo hypergradient samples per second). Shared sizes and helpers: _common, _problems.
Not collected by asv: zoo (``python -m benchmarks.zoo``, issue 15's table of every estimator's cost formula,
temp bytes against r, bias^2 and variance on the quadratic and the mlp).
"""
