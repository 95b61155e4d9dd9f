"""The public building blocks of every estimator: counted inner GD, outer gradients, HVPs, the backward passes.

New estimators (and the outer loops, Monte Carlo and experiments) are made of these; their counters and
divergence checks then come for free. Re-exported by `ufom_bench.estimators`.

Counting convention (DESIGN.md, the paper's "function calls"): one grad call is one evaluation of dL_in/dphi
or of the L_out gradient (both partials at once); one HVP is one reverse pass of dL_in/dphi giving both
(d2 L_in / dtheta dphi)^T b2 and (d2 L_in / dphi2)^T b2. The counters are carried through the loops as
integers, so they are right under jit and vmap (they count what the traced program computes).

Divergence: the forward inner loop carries a `PathCheck` (the inner gradient norm at phi_0, the largest
inner gradient norm along the path, and whether every inner gradient and phi_r is finite), taken from the
gradient evaluations it does anyway (no extra calls; L_in itself is never evaluated, only its gradient).
An estimate is *diverged* when anything it computed (inner gradients, phi_r, L_out, the estimate) is
non-finite or the inner gradient norm grew by more than `DIVERGENCE_GROWTH` along the path.

Applicability: an estimator that is not defined on every problem carries a rule, ``Estimator.applicability``
= ``(problem, theta, task) -> reason | None``, read from shapes and the traced programs only (static, before
anything runs). `not_applicable` asks it (benchmarks, Monte Carlo); the estimate itself calls `require`,
which raises `NotApplicable` (a `UserError`) with the reason. Reptile needs V(theta, T) = theta; the implicit
estimators need theta in L_out or in dL_in/dphi.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ufom_bench.problem import Problem
from ufom_bench.errors import UserError

PyTree = Any
COUNT = jnp.int32
tmap = jax.tree_util.tree_map

# Inner GD with a stable step never increases a convex quadratic's gradient norm (|1 - alpha lambda| < 1
# on every eigendirection); 1e3 leaves room for the transient growth of non-convex losses, while an
# unstable loop (|1 - alpha lambda| > 1) grows geometrically and passes it within a few steps.
DIVERGENCE_GROWTH = 1e3


class Info(NamedTuple):
    """What an estimate cost and what it is.

    grad_calls, hvp_calls: counted calls (int32). exact: whether the exact branch ran (xi = 1 in Alg. 4).
    finite: the whole computation was finite: every inner gradient along the path, phi_r, L_out and the
    estimate. q: the probability of the exact branch used for this estimate (1 for exact
    estimators, 0 for FOM). diverged: not finite, or the inner gradient norm grew by more than
    `DIVERGENCE_GROWTH` along the path; a diverged estimate must not be applied or averaged.
    """

    grad_calls: jax.Array
    hvp_calls: jax.Array
    exact: jax.Array
    finite: jax.Array
    q: jax.Array
    diverged: jax.Array


class PathCheck(NamedTuple):
    """What the forward inner loop saw: ||dL_in/dphi||^2 at phi_0 (g0), the largest such squared norm along
    the path (peak), and whether every inner gradient, phi_r (and L_out, once added) was finite."""

    g0: jax.Array
    peak: jax.Array
    finite: jax.Array

    def diverged(self) -> jax.Array:
        return ~self.finite | (self.peak > DIVERGENCE_GROWTH**2 * self.g0)


class Estimator(NamedTuple):
    """A hypergradient estimator as a pair of pure functions (optax style).

    init(theta) -> state;  estimate(problem, theta, task, key, state) -> (grad, Info, state).
    applicability: None (defined on every problem), or a rule ``(problem, theta, task) -> reason | None``
    taking shape-only arguments (see `not_applicable`); the reason completes "<name> ...", e.g. "needs
    V(theta, T) = theta, but ...".
    draws_tasks: the estimate draws its own tasks from ``key`` (e.g. `meta_batch`) and ignores ``task``; the
    outer loop then passes ``task=None`` and one key per step instead of a task key and an estimator key.
    """

    init: Callable[[PyTree], PyTree]
    estimate: Callable[..., tuple[PyTree, Info, PyTree]]
    name: str = ""
    applicability: Callable[..., str | None] | None = None
    draws_tasks: bool = False


class NotApplicable(UserError):
    """The estimator is not defined on this problem (Reptile where V(theta, T) != theta; the implicit
    estimators where theta enters only through V); the message names both and says why."""


def abstract(tree: PyTree) -> PyTree:
    """Shape-and-dtype stand-ins (`jax.ShapeDtypeStruct`) of a pytree of arrays, tracers or stand-ins."""
    return tmap(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def not_applicable(estimator: Estimator, problem: Problem, theta: PyTree = None, task: PyTree = None) -> str | None:
    """Why ``estimator`` is not defined on ``problem`` ("<name> needs ..."), or None when it is.

    Static: only shapes and traced programs are read, nothing runs. theta defaults to ``problem.theta0``;
    task to the shapes of ``problem.sample_task(PRNGKey(0))``. Benchmarks and Monte Carlo ask this before
    running; the estimate raises `NotApplicable` with the same reason (`require`).
    """
    if estimator.applicability is None:
        return None
    theta = problem.theta0 if theta is None else theta
    if task is None:
        task = jax.eval_shape(problem.sample_task, jax.random.PRNGKey(0))
    reason = estimator.applicability(problem, abstract(theta), abstract(task))
    return None if reason is None else f"{estimator.name} {reason}"


def require(name: str, rule: Callable[..., str | None], problem: Problem, theta, task) -> None:
    """Raise `NotApplicable` ("<name> <reason>") when ``rule`` gives a reason (called at trace time by estimates)."""
    reason = rule(problem, abstract(theta), abstract(task))
    if reason is not None:
        raise NotApplicable(f"{name} {reason}")


def _sub_jaxpr(eqn):
    """The jaxpr of a call-like equation (jit, custom_jvp/vjp calls) whose inputs and outputs map one to one."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
        if (hasattr(sub, "eqns") and len(sub.invars) == len(eqn.invars)
                and len(sub.outvars) == len(eqn.outvars)):
            return sub
    return None


def _dependent_outputs(jaxpr, dependent: list[bool]) -> list[bool]:
    """Which outputs of ``jaxpr`` read an input flagged in ``dependent`` (forward data flow; an equation that
    is not call-like, e.g. a scan or a cond, is taken to make all its outputs depend on any dependent input)."""
    hit = {v for v, d in zip(jaxpr.invars, dependent) if d}
    reads = lambda v: not hasattr(v, "val") and v in hit  # literals (with .val) depend on nothing
    for eqn in jaxpr.eqns:
        flags = [reads(v) for v in eqn.invars]
        if not any(flags):
            continue
        sub = _sub_jaxpr(eqn)
        out = _dependent_outputs(sub, flags) if sub is not None else [True] * len(eqn.outvars)
        hit.update(v for v, d in zip(eqn.outvars, out) if d)
    return [reads(v) for v in jaxpr.outvars]


def depends_on_theta(fn: Callable, theta, *rest) -> bool:
    """Whether the program of ``fn(theta, *rest)`` reads theta on the way to its outputs (static, from
    `jax.make_jaxpr`; conservative: True unless no data path exists, so e.g. ``0 * theta`` counts)."""
    closed = jax.make_jaxpr(fn)(theta, *rest)
    n_theta = len(jax.tree_util.tree_leaves(theta))
    flags = [i < n_theta for i in range(len(closed.jaxpr.invars))]
    return any(_dependent_outputs(closed.jaxpr, flags))


def is_identity_in_theta(fn: Callable, theta, *rest) -> bool:
    """Whether ``fn(theta, *rest)`` returns theta itself: its traced outputs are theta's inputs, in order."""
    closed = jax.make_jaxpr(fn)(theta, *rest)
    n_theta = len(jax.tree_util.tree_leaves(theta))
    outs, ins = closed.jaxpr.outvars, closed.jaxpr.invars[:n_theta]
    return len(outs) == len(ins) and all(a is b for a, b in zip(outs, ins))


def no_state(theta) -> tuple:
    """`init` of the stateless estimators."""
    del theta
    return ()


def check_theta(problem: Problem, theta: PyTree) -> None:
    """Raise UserError when theta's pytree structure, leaf shapes or floating dtype differ from problem.theta0 (static)."""
    want, got = jax.tree_util.tree_structure(problem.theta0), jax.tree_util.tree_structure(theta)
    if want != got:
        raise UserError(f"theta has pytree structure {got}, but problem {problem.name!r} expects {want}")
    for (keypath, a), b in zip(jax.tree_util.tree_flatten_with_path(problem.theta0)[0], jax.tree_util.tree_leaves(theta)):
        if jnp.shape(a) != jnp.shape(b):
            where = "theta" + jax.tree_util.keystr(keypath)
            raise UserError(f"{where} has shape {jnp.shape(b)}, but problem {problem.name!r} expects {jnp.shape(a)}")
        if not jnp.issubdtype(jnp.result_type(b), jnp.floating):
            where = "theta" + jax.tree_util.keystr(keypath)
            raise UserError(f"{where} must be a floating array, got dtype {jnp.result_type(b)}")


def all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def inner_grad(problem: Problem, theta, phi, task):
    """dL_in/dphi(theta, phi, T): one grad call."""
    return jax.grad(problem.inner_loss, argnums=1)(theta, phi, task)


def inner_step(problem: Problem, theta, phi, task, alpha, calls):
    """One step of eq. (3): phi - alpha dL_in/dphi, and calls + 1."""
    g = inner_grad(problem, theta, phi, task)
    return tmap(lambda p, d: p - alpha * d, phi, g), calls + 1


def sq_norm(tree) -> jax.Array:
    """||tree||_2^2 over all leaves."""
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def norm(tree) -> jax.Array:
    """||tree||_2 over all leaves, scaled by the largest entry so that it overflows only if the norm does."""
    leaves = jax.tree_util.tree_leaves(tree)
    big = jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0.0) for x in leaves]))
    scale = jnp.where((big > 0) & jnp.isfinite(big), big, 1.0)
    return scale * jnp.sqrt(sum(jnp.sum(jnp.square(x / scale)) for x in leaves))


def _checked_loop(problem: Problem, theta, task, calls, steps, store: bool, start=None):
    """Inner GD with a `PathCheck` over all r steps, or over ``steps`` = (first, count): steps first + 1 ..
    first + count, their alphas read by index (a slice of step_sizes would be an O(r) buffer). From V(theta, T)
    or from ``start`` = (phi, check) of a loop over the steps before; the stacked states when ``store``."""
    if start is None:
        phi0 = problem.init_inner(theta, task)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(phi0))
        # g0 = -1 marks "no gradient seen yet" (a norm is >= 0), so no array of length r is built.
        check0 = PathCheck(-jnp.ones((), dtype), jnp.zeros((), dtype), jnp.ones((), bool))
    else:
        phi0, check0 = start

    def body(carry, alpha):
        phi, n, check = carry
        if alpha is None:  # steps given: the calls made so far index the step
            alpha = problem.step_sizes[steps[0] + n - calls0]
        g = inner_grad(problem, theta, phi, task)
        size = sq_norm(g)  # squared: an overflow reads as inf, i.e. diverged
        check = PathCheck(jnp.where(check.g0 < 0, size, check.g0), jnp.maximum(check.peak, size),
                          check.finite & jnp.isfinite(size))
        new = tmap(lambda p, d: p - alpha * d, phi, g)
        return (new, n + 1, check), (phi if store else None)

    calls0 = calls
    xs, length = (problem.step_sizes, None) if steps is None else (None, steps[1])
    (phi, calls, check), states = jax.lax.scan(body, (phi0, calls, check0), xs, length=length)
    return phi, states, calls, check._replace(finite=check.finite & all_finite(phi))


def inner_loop(problem: Problem, theta, task, calls, steps=None, start=None):
    """phi_r from phi_0 = V(theta, T) by r counted steps (the forward loop of Algorithms 3-4).

    Returns (phi_r, calls, `PathCheck`). ``steps`` = (first, count) runs only steps first + 1 .. first +
    count, from ``start`` = (phi, check) returned for the steps before (default: from V(theta, T)).
    """
    phi, _, calls, check = _checked_loop(problem, theta, task, calls, steps, store=False, start=start)
    return phi, calls, check


def inner_loop_stored(problem: Problem, theta, task, calls, steps=None, start=None):
    """The forward loop of Algorithm 2: phi_r, Arr = (phi_0, ..., phi_{r-1}) stacked on axis 0, calls, check.

    ``steps`` and ``start`` as in `inner_loop` (then Arr holds the states those steps start from).
    """
    return _checked_loop(problem, theta, task, calls, steps, store=True, start=start)


def outer_grads(problem: Problem, theta, phi, task, calls, check: PathCheck):
    """b1 = dL_out/dtheta, b2 = dL_out/dphi at (theta, phi_r): one grad call; ``check`` gains L_out's finiteness."""
    loss, (b1, b2) = jax.value_and_grad(problem.outer_loss, argnums=(0, 1))(theta, phi, task)
    return b1, b2, calls + 1, check._replace(finite=check.finite & jnp.isfinite(loss))


def hvp(problem: Problem, theta, phi, task, b2):
    """One HVP: ((d2 L_in/dtheta dphi)^T b2, (d2 L_in/dphi2)^T b2) by one reverse pass (Christianson 1992)."""
    _, vjp = jax.vjp(lambda th, ph: inner_grad(problem, th, ph, task), theta, phi)
    return vjp(b2)


def hvp_update(problem: Problem, theta, phi, task, alpha, b1, b2):
    """The body of the backward loops (Alg. 2/4): b1 -= alpha H_theta^T b2, b2 -= alpha H_phi^T b2 (eqs. 7, 9)."""
    h_theta, h_phi = hvp(problem, theta, phi, task, b2)
    b1 = tmap(lambda b, h: b - alpha * h, b1, h_theta)
    b2 = tmap(lambda b, h: b - alpha * h, b2, h_phi)
    return b1, b2


def add_v_jvp(problem: Problem, theta, task, b1, b2):
    """b1 + (dV/dtheta)^T b2: the last line of Algorithms 2-4 (the V term of eq. 6)."""
    _, vjp = jax.vjp(lambda th: problem.init_inner(th, task), theta)
    (jv,) = vjp(b2)
    return tmap(jnp.add, b1, jv)


def backward_stored(problem: Problem, theta, task, states, b1, b2, hvps, last=None):
    """The backward loop of Algorithm 2 over stored states: r HVPs, O(r) memory (or over the ``last`` steps
    only, whose start states ``states`` holds: ``last`` HVPs)."""

    def body(carry, xs):
        b1, b2, n = carry
        phi, alpha = xs
        b1, b2 = hvp_update(problem, theta, phi, task, alpha, b1, b2)
        return (b1, b2, n + 1), None

    if last is None:
        (b1, b2, hvps), _ = jax.lax.scan(body, (b1, b2, hvps), (states, problem.step_sizes), reverse=True)
        return b1, b2, hvps
    # the alphas of the last steps by index, as in `inner_loop` (no slice of step_sizes)
    hvps0 = hvps

    def indexed(carry, phi):
        done = carry[2] - hvps0  # HVPs so far: phi starts step r - done (0-based alpha index r - 1 - done)
        return body(carry, (phi, problem.step_sizes[problem.r - 1 - done]))

    (b1, b2, hvps), _ = jax.lax.scan(indexed, (b1, b2, hvps), states, reverse=True)
    return b1, b2, hvps


def backward_recompute(problem: Problem, theta, task, b1, b2, grads, hvps):
    """The correction loop of Algorithm 4: each phi_{j-1} recomputed from V(theta, T), O(1) memory in r.

    For j = r..1: j - 1 grad calls to rebuild phi_{j-1}, then one HVP; r(r-1)/2 grads and r HVPs in all.
    """
    alphas = problem.step_sizes
    phi0 = problem.init_inner(theta, task)

    def rebuild(i, carry):
        phi, n = carry
        return inner_step(problem, theta, phi, task, alphas[i], n)

    def body(carry, _):
        j, b1, b2, g, h = carry
        phi, g = jax.lax.fori_loop(0, j - 1, rebuild, (phi0, g))
        b1, b2 = hvp_update(problem, theta, phi, task, alphas[j - 1], b1, b2)
        return (j - 1, b1, b2, g, h + 1), None

    # j is carried (not scanned over an array of indices) so that nothing of size r is materialised.
    j = jnp.asarray(problem.r, COUNT)
    (_, b1, b2, grads, hvps), _ = jax.lax.scan(body, (j, b1, b2, grads, hvps), None, length=problem.r)
    return b1, b2, grads, hvps


def first_order(problem: Problem, theta, task):
    """Algorithm 3's computation, keeping what Algorithm 4 reuses: (b_FO, b1, b2, grad calls, `PathCheck`)."""
    check_theta(problem, theta)
    phi, calls, check = inner_loop(problem, theta, task, jnp.zeros((), COUNT))
    b1, b2, calls, check = outer_grads(problem, theta, phi, task, calls, check)
    return add_v_jvp(problem, theta, task, b1, b2), b1, b2, calls, check


def info(grad, grad_calls, hvp_calls, exact, q, check: PathCheck) -> Info:
    """The `Info` of an estimate ``grad`` whose forward inner loop reported ``check``."""
    check = check._replace(finite=check.finite & all_finite(grad))
    return Info(
        grad_calls=jnp.asarray(grad_calls, COUNT),
        hvp_calls=jnp.asarray(hvp_calls, COUNT),
        exact=jnp.asarray(exact, bool),
        finite=check.finite,
        q=jnp.asarray(q, jnp.result_type(float)),
        diverged=check.diverged(),
    )
