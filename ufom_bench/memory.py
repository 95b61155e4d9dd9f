"""Memory of a compiled program from XLA's memory analysis (deterministic; nothing is allocated).

The resident memory of a JAX process is dominated by the runtime, so it measures no estimator; the
compiled program's temporary buffers do: O(r) for Algorithm 2, O(1) in r for FOM, UFOM and `exact_me`.
"""

from __future__ import annotations

import jax

__all__ = ["temp_bytes", "memory_stats", "compiled_stats"]


def compiled_stats(fn, *args, **kwargs):
    """(the compiled ``jax.jit(fn)`` for these arguments, `memory_stats`' dict): one compilation for both, so a
    caller can time the very program it measured."""
    compiled = jax.jit(fn).lower(*args, **kwargs).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise RuntimeError(f"XLA gives no memory analysis on backend {jax.default_backend()!r}")
    return compiled, {
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "generated_code_bytes": int(analysis.generated_code_size_in_bytes),
    }


def memory_stats(fn, *args, **kwargs) -> dict[str, int]:
    """Sizes in bytes of the compiled ``jax.jit(fn)(*args, **kwargs)``: arguments, outputs, temporaries, code."""
    return compiled_stats(fn, *args, **kwargs)[1]


def temp_bytes(fn, *args, **kwargs) -> int:
    """Temporary buffer bytes XLA allocates for ``jax.jit(fn)(*args, **kwargs)``."""
    return memory_stats(fn, *args, **kwargs)["temp_bytes"]
