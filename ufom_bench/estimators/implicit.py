"""The implicit-function hypergradient at phi_r: conjugate gradient (`implicit_cg`) and the Neumann series (`neumann`).

Both evaluate, at the last inner iterate phi_r = U^(r)(theta, T),

    G_IFT(theta, T) = dL_out/dtheta - (d2 L_in / dtheta dphi)^T H^{-1} dL_out/dphi,   H = d2 L_in / dphi2,

the implicit function theorem's gradient of L_out(theta, phi*(theta), T) at a stationary point phi* of L_in
(Pedregosa 2016; Lorraine, Vicol, Duvenaud 2020), with H^{-1} b2 solved approximately. They target the
argmin, not ABLO's phi_r: V's contribution (dV/dtheta)^T b2 and the difference between phi_r and phi* are
dropped, so G_IFT is biased for the ABLO gradient of M_r (eq. 6) even when H^{-1} b2 is solved exactly;
that bias is a property to measure (`montecarlo.estimator_moments`), not a defect. It vanishes as r grows
on a strongly convex L_in whose Jacobian chain (I - alpha H)^r contracts.

Where theta enters only through V (MAML, the counterexample: L_out and dL_in/dphi do not read theta) G_IFT
is identically 0: the estimators are not applicable there (`theta_in_losses`, the rule they carry; see
`core.not_applicable`).

Counting (DESIGN.md): r grads (the inner loop) + 1 (the outer gradient at phi_r); one HVP per matrix-vector
product with H (one reverse pass of dL_in/dphi, whose theta part is unused there) and one for the mixed
product (d2 L_in / dtheta dphi)^T v. Memory: the inner loop stores nothing and the solvers keep a few
vectors of phi's size: O(1) in r.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ufom_bench.errors import check_int
from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator

tmap = jax.tree_util.tree_map


def _dot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _ratio(num, den) -> jax.Array:
    """num / den, and 0 where den = 0 (CG's residual is exactly 0: the solve has converged)."""
    safe = jnp.where(den == 0, 1, den)
    return jnp.where(den == 0, 0, num / safe)


def theta_in_losses(problem, theta, task) -> str | None:
    """The implicit estimators' applicability rule: None when L_out or dL_in/dphi reads theta, else the reason.

    Static, from the traced programs (`core.depends_on_theta`) at phi_0's shapes: where neither reads theta,
    dL_out/dtheta = 0 and (d2 L_in / dtheta dphi) = 0, so G_IFT = 0 whatever the solve.
    """
    phi = jax.eval_shape(problem.init_inner, theta, task)
    grad_in = lambda th, ph, t: core.inner_grad(problem, th, ph, t)
    if core.depends_on_theta(problem.outer_loss, theta, phi, task) or core.depends_on_theta(grad_in, theta, phi, task):
        return None
    return (f"needs theta in L_out or in dL_in/dphi (the implicit gradient is identically 0 where theta enters "
            f"only through V), but problem {problem.name!r} reads theta in neither")


def cg_solve(matvec, b, iters: int):
    """x ~ H^{-1} b by ``iters`` conjugate-gradient iterations from x_0 = 0 (Hestenes and Stiefel 1952).

    A `lax.fori_loop` of exactly ``iters`` iterations, one ``matvec`` each (x_0 = 0 makes the first
    residual b without one), so the count is exact; `jax.scipy.sparse.linalg.cg` is not used because it
    spends a matvec on the initial residual and stops early at its tolerance, so its count is not fixed.
    An exactly zero residual makes the remaining iterations keep x (no 0/0). H must be symmetric positive
    definite for CG's guarantees; otherwise the iterate is whatever the recursion gives.
    Returns (x, matvecs).
    """

    def body(_, carry):
        x, res, p, rs, n = carry
        hp = matvec(p)
        a = _ratio(rs, _dot(p, hp))
        x = tmap(lambda x, p: x + a * p, x, p)
        res = tmap(lambda r, h: r - a * h, res, hp)
        rs_new = _dot(res, res)
        p = tmap(lambda r, p: r + _ratio(rs_new, rs) * p, res, p)
        return x, res, p, rs_new, n + 1

    x0 = tmap(jnp.zeros_like, b)
    x, _, _, _, n = jax.lax.fori_loop(0, iters, body, (x0, b, b, _dot(b, b), jnp.zeros((), core.COUNT)))
    return x, n


def neumann_solve(matvec, b, alpha, terms: int):
    """x = alpha sum_{i=0}^{terms-1} (I - alpha H)^i b ~ H^{-1} b (converges when |1 - alpha lambda| < 1 for
    every eigenvalue lambda of H). ``terms`` - 1 matvecs (the i = 0 term needs none). Returns (x, matvecs)."""

    def body(_, carry):
        p, acc, n = carry
        p = tmap(lambda p, h: p - alpha * h, p, matvec(p))  # (I - alpha H)^i b
        return p, tmap(jnp.add, acc, p), n + 1

    _, acc, n = jax.lax.fori_loop(0, terms - 1, body, (b, b, jnp.zeros((), core.COUNT)))
    return tmap(lambda a: alpha * a, acc), n


def _implicit(name: str, solve):
    """The estimate shared by both: inner loop, outer gradients, v = solve(H, b2), b1 - (d2 L_in/dtheta dphi)^T v."""

    def estimate(problem, theta, task, key, state):
        del key
        core.check_theta(problem, theta)
        core.require(name, theta_in_losses, problem, theta, task)
        phi, grads, check = core.inner_loop(problem, theta, task, jnp.zeros((), core.COUNT))
        b1, b2, grads, check = core.outer_grads(problem, theta, phi, task, grads, check)
        # One linearisation of dL_in/dphi at (theta, phi_r); each call of its VJP is one HVP (`core.hvp`).
        _, vjp = jax.vjp(lambda th, ph: core.inner_grad(problem, th, ph, task), theta, phi)
        v, hvps = solve(problem, lambda p: vjp(p)[1], b2)  # H p (H is symmetric)
        h_theta, _ = vjp(v)  # the mixed product (d2 L_in/dtheta dphi)^T v: one more HVP
        g = tmap(jnp.subtract, b1, h_theta)
        return g, core.info(g, grads, hvps + 1, False, 0.0, check), state

    return Estimator(core.no_state, estimate, name, theta_in_losses)


def implicit_cg(iters: int = 10) -> Estimator:
    """G_IFT at phi_r with H^{-1} dL_out/dphi by ``iters`` >= 1 conjugate-gradient iterations (`cg_solve`).

    Cost: r + 1 grad calls and iters + 1 HVPs (one per CG iteration, one mixed). O(1) memory in r. Biased for
    ABLO (see the module docstring); for a quadratic L_in in phi, iters = dim(phi) solves exactly (in exact
    arithmetic). Not applicable where theta enters only through V (`theta_in_losses`).
    """
    iters = check_int("iters", iters, 1)
    return _implicit(f"implicit_cg(iters={iters})", lambda problem, matvec, b: cg_solve(matvec, b, iters))


def neumann(terms: int = 10) -> Estimator:
    """G_IFT at phi_r with H^{-1} dL_out/dphi ~ alpha_r sum_{i<terms} (I - alpha_r H)^i dL_out/dphi (`neumann_solve`;
    Lorraine et al. 2020), alpha_r the last inner step size, ``terms`` >= 1.

    Cost: r + 1 grad calls and terms HVPs (terms - 1 for the series, one mixed). O(1) memory in r. Biased for
    ABLO and, for finite terms, for G_IFT (the series' tail (I - alpha_r H)^terms H^{-1} b2 is dropped).
    Not applicable where theta enters only through V (`theta_in_losses`).
    """
    terms = check_int("terms", terms, 1)

    def solve(problem, matvec, b):
        alpha = problem.step_sizes[-1]
        return neumann_solve(matvec, b, alpha, terms)

    return _implicit(f"neumann(terms={terms})", solve)
