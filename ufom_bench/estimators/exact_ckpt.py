"""The exact ABLO gradient with m stored inner states: binomial checkpointing (Griewank 1992; revolve,
Griewank and Walther 2000) between Algorithm 2 (m >= r: every state stored) and the recomputation of
Algorithm 4 (m = 1: phi_0 only, `exact_me`).

The reversal is that of l = r + 1 steps: the r inner steps (eq. 3) and, as step r + 1, the outer gradient
at phi_r. Reversing step j <= r is one HVP at phi_{j-1} (eqs. 7, 9); "reversing" step r + 1 is the outer
grad call. Every state phi_0..phi_r is reached by counted inner steps from a checkpoint; phi_0 = V(theta, T)
is checkpoint 0 (V is not counted). With s checkpoints for l steps, the recursion

    reverse(x, l, s):  l = 1: reverse step x + 1 from the checkpoint phi_x
                       s = 1: for i = l..1: advance phi_x by i - 1 steps, reverse step x + i
                       else:  advance phi_x by k steps, store phi_{x+k}; reverse(x + k, l - k, s - 1);
                              reverse(x, k, s)

with the split k of `split` advances exactly t(l, s) = rho l - beta(s + 1, rho - 1) steps (beta(s, t) =
C(s + t, s), rho the repetition number: beta(s, rho - 1) < l <= beta(s, rho)), Griewank's minimum; the first
sweep (phi_0 -> phi_r) is among them. So one estimate costs 1 + t(r + 1, m) grad calls and r HVPs:
t(r + 1, 1) = r(r + 1)/2 gives `exact_me`'s r + 1 + r(r - 1)/2, t(r + 1, m >= r) = r gives Algorithm 2's
r + 1 (`theory.checkpointing`).

The schedule is computed on the device from (l, s) with integer arithmetic, not from a table: the
checkpoints form a stack (frame i holds phi_{x_i} and its pending length l_i, with s = m - i checkpoints
at and above it), so the executor is one `lax.while_loop` per reversed step over O(m) carried arrays, and
XLA's temporary memory is m + O(1) inner states, independent of r.

Why not a library: equinox's checkpointed while loop (online treeverse, Stumm and Walther 2010) and
`jax.checkpoint` on nested scans recompute inside JAX's own reverse pass, where neither the recomputed
steps nor the HVPs can be counted in the computation (our `Info` counters), and the online schedule is not
the offline optimum t(l, s) when r is known.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ufom_bench.errors import UserError
from ufom_bench.estimators import core
from ufom_bench.estimators.core import COUNT, Estimator, PathCheck

tmap = jax.tree_util.tree_map
# Products in `split` stay below (r + 1)(m + 1); int32 counters (COUNT) bound the same size anyway.
_INT_LIMIT = 2**31 - 1


def check_checkpoints(m) -> int:
    """m (the number of stored inner states) must be an integer >= 1 (not a bool); else UserError naming it."""
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise UserError(f"checkpoints must be an integer >= 1, got checkpoints = {m!r}")
    return int(m)


def _next_beta(beta, s, rho):
    """beta(s, rho + 1) = beta(s, rho) (s + rho + 1) / (rho + 1), exactly, without the product beta (s + rho + 1)."""
    d, n = rho + 1, s + rho + 1
    return (beta // d) * n + (beta % d) * n // d


def split(l, s):
    """An optimal first checkpoint k (1 <= k < l) for reversing l >= 2 steps with s >= 2 checkpoints.

    With rho the repetition number of (l, s), k = min(beta(s, rho - 1), l - beta(s - 1, rho - 1)): then
    (k, s) has repetition number rho - 1 and (l - k, s - 1) has rho (or each sits on the boundary where the
    two closed forms agree), so k + t(k, s) + t(l - k, s - 1) = t(l, s) by Pascal's rule. Integer jnp
    arithmetic (traceable); plain ints work too.
    """
    def cond(c):
        return c[0] < l

    def body(c):
        beta, _, rho = c
        return _next_beta(beta, s, rho), beta, rho + 1

    # (beta(s, rho), beta(s, rho - 1), rho) from rho = 0, beta(s, -1) = 0
    one = jnp.ones((), COUNT)
    _, prev, rho = jax.lax.while_loop(cond, body, (one, 0 * one, 0 * one))
    prev_s1 = prev * s // (s + rho - 1)  # beta(s - 1, rho - 1) = beta(s, rho - 1) s / (s + rho - 1)
    return jnp.minimum(prev, l - prev_s1)


class Schedule(NamedTuple):
    """The checkpoint stack: slots (each leaf with a leading axis of m: phi_{xs[i]} in slot i), xs (the
    step index of each slot's state), ls (steps still to reverse above it), top (the highest frame in use)."""

    slots: core.PyTree
    xs: jax.Array
    ls: jax.Array
    top: jax.Array


def _start(phi0, m: int, l: int) -> Schedule:
    slots = tmap(lambda x: jnp.zeros((m,) + jnp.shape(x), jnp.result_type(x)).at[0].set(x), phi0)
    zeros = jnp.zeros((m,), COUNT)
    return Schedule(slots, zeros, zeros.at[0].set(l), jnp.zeros((), COUNT))


def _advance(problem, theta, task, phi, x, n, grads, check, track: bool):
    """phi_{x+n} from phi_x by n counted inner steps (alphas x+1..x+n by index); ``check`` sees them if ``track``."""
    alphas = problem.step_sizes

    def body(i, carry):
        phi, g, check = carry
        d = core.inner_grad(problem, theta, phi, task)
        if track:
            size = core.sq_norm(d)
            check = PathCheck(jnp.where(check.g0 < 0, size, check.g0), jnp.maximum(check.peak, size),
                              check.finite & jnp.isfinite(size))
        alpha = alphas[x + i]
        return tmap(lambda p, v: p - alpha * v, phi, d), g + 1, check

    return jax.lax.fori_loop(0, n, body, (phi, grads, check))


def _read(slots, i):
    return tmap(lambda s: jax.lax.dynamic_index_in_dim(s, i, keepdims=False), slots)


def _next_state(problem, theta, task, sched: Schedule, grads, check, m: int, track: bool = False):
    """Advance the schedule to the next step to reverse: (schedule, phi_{j-1}, j, grads, check).

    Pushes checkpoints (split, advance, store) while the top frame has l > 1 and s > 1; then the top frame
    gives phi_{x+l-1} (advancing l - 1 steps from its checkpoint: 0 when l = 1, when the frame is popped).
    """

    def can_split(c):
        sched = c[0]
        return (sched.ls[sched.top] > 1) & (m - sched.top > 1)

    def push(c):
        sched, grads, check = c
        top, x, l = sched.top, sched.xs[sched.top], sched.ls[sched.top]
        k = split(l, m - top)
        phi, grads, check = _advance(problem, theta, task, _read(sched.slots, top), x, k, grads, check, track)
        slots = tmap(lambda s, p: jax.lax.dynamic_update_index_in_dim(s, p, top + 1, 0), sched.slots, phi)
        xs = sched.xs.at[top + 1].set(x + k)
        ls = sched.ls.at[top + 1].set(l - k).at[top].set(k)
        return Schedule(slots, xs, ls, top + 1), grads, check

    sched, grads, check = jax.lax.while_loop(can_split, push, (sched, grads, check))
    top, x, l = sched.top, sched.xs[sched.top], sched.ls[sched.top]
    phi, grads, check = _advance(problem, theta, task, _read(sched.slots, top), x, l - 1, grads, check, track)
    sched = sched._replace(ls=sched.ls.at[top].set(l - 1), top=top - (l == 1).astype(COUNT))
    return sched, phi, x + l, grads, check


def checkpointed_branch(problem, theta, task, m: int):
    """Forward sweep, outer gradients and reverse pass with at most m stored states.

    Returns (b_FO, b_Exact, grad calls, HVP calls, `PathCheck` of the first sweep): 1 + t(r + 1, m') grads
    and r HVPs, m' = min(m, r). b_FO = b1 + (dV/dtheta)^T b2 at phi_r (Algorithm 3's estimate, for UFOM).
    """
    r = problem.r
    m = min(check_checkpoints(m), r)
    if (r + 1) * (m + 1) > _INT_LIMIT:
        raise UserError(f"exact_ckpt counts in int32: r = {r} with checkpoints = {m} is too large")
    phi0 = problem.init_inner(theta, task)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(phi0))
    check = PathCheck(-jnp.ones((), dtype), jnp.zeros((), dtype), jnp.ones((), bool))
    zero = jnp.zeros((), COUNT)

    # First sweep: phi_0 -> phi_r, placing checkpoints; step r + 1 (the outer gradient) is reversed first.
    sched, phi_r, _, grads, check = _next_state(problem, theta, task, _start(phi0, m, r + 1), zero, check, m,
                                                track=True)
    check = check._replace(finite=check.finite & core.all_finite(phi_r))
    b1, b2, grads, check = core.outer_grads(problem, theta, phi_r, task, grads, check)
    b_fo = core.add_v_jvp(problem, theta, task, b1, b2)

    def reverse(carry, _):
        sched, b1, b2, grads, hvps = carry
        sched, phi, j, grads, _ = _next_state(problem, theta, task, sched, grads, check, m)
        b1, b2 = core.hvp_update(problem, theta, phi, task, problem.step_sizes[j - 1], b1, b2)
        return (sched, b1, b2, grads, hvps + 1), None

    (_, b1, b2, grads, hvps), _ = jax.lax.scan(reverse, (sched, b1, b2, grads, zero), None, length=r)
    return b_fo, core.add_v_jvp(problem, theta, task, b1, b2), grads, hvps, check


def exact_ckpt(checkpoints: int = 1) -> Estimator:
    """The exact ABLO gradient with at most m = ``checkpoints`` stored inner states (binomial checkpointing).

    1 + t(r + 1, m) grad calls and r HVPs, t Griewank's minimal number of forward steps (module docstring;
    `theory.checkpointing.forward_steps`): m = 1 is `exact_me`'s r + 1 + r(r - 1)/2, m >= r is Algorithm 2's
    r + 1; for fixed m it grows like r^(1 + 1/m). Memory: m + O(1) inner states, constant in r. Equal to `exact`
    up to rounding. checkpoints must be an integer >= 1 (UserError otherwise).
    """
    m = check_checkpoints(checkpoints)

    def estimate(problem, theta, task, key, state):
        del key
        core.check_theta(problem, theta)
        _, g, grads, hvps, check = checkpointed_branch(problem, theta, task, m)
        return g, core.info(g, grads, hvps, True, 1.0, check), state

    return Estimator(core.no_state, estimate, f"exact_ckpt(m={m})")
