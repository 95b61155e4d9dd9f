"""Cost and moments of the randomised estimators beside UFOM: pzobo, forward_gradient and es (issue 15).

Each of them averages Q = n_dirs i.i.d. draws of X = u u^T a over a random direction u with E[u u^T] = I
(given the task; mu -> 0 for the finite-difference ones):
  pzobo:             G = dL_out/dtheta + (1/Q) sum_j u_j u_j^T a,  a = J^T dL_out/dphi (J = dphi_r/dtheta),
  forward_gradient:  G = (1/Q) sum_j v_j v_j^T a,                  a = G, the exact ABLO gradient (eq. 6),
  es:                G = (1/Q) sum_j u_j u_j^T a + O(mu^2),        a = G (exact for every mu where the
                     objective is quadratic in theta: the antithetic pair cancels the even Taylor terms).
So E G = the exact gradient, and tr Cov G = c(s) ||a||^2 / Q with s = dim theta; the derivation gives
c(s) = s + 1 for Gaussian u, s - 1 for u uniform on the sphere of radius sqrt(s). The exact term
dL_out/dtheta of pzobo is deterministic and adds nothing to its covariance. UFOM's counterpart is its
coin variance (1/q - 1) ||G_FO - G||^2 (theory.moments, Lemma 1), which does not grow with s.

Counts in the suite's convention (theory.cost): one grad call = one evaluation of dL_in/dphi or of the L_out
gradient; a JVP of dL_in/dphi counts as one HVP; es counts each L_out evaluation as one grad call.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import sympy as sp

from ufom_bench.theory._sym import Check, Numeric, equal, j, j1, m, r, tex

s = sp.Symbol("s", positive=True, integer=True)  # dimension of theta
Q = sp.Symbol("Q", positive=True, integer=True)  # number of directions (n_dirs)
A2 = sp.Symbol("A2", nonnegative=True)  # ||a||^2
mu = sp.Symbol("mu", positive=True)
JB2, G2 = sp.symbols("JB2 G2", nonnegative=True)  # ||J^T b2||^2, ||G||^2
_NAMES = {A2: r"\|a\|^2", mu: r"\mu", JB2: r"\|J^T b_2\|^2", G2: r"\|\mathcal{G}\|^2"}


def gaussian_expectation(poly, us) -> sp.Expr:
    """E[poly(u)] for independent u_i ~ N(0, 1): each monomial prod u_i^k_i -> prod E[u^k] (0 for odd k,
    (k - 1)!! for even k)."""
    moment = lambda k: 0 if k % 2 else sp.factorial2(k - 1)
    out = sp.Integer(0)
    for exps, coeff in sp.Poly(sp.expand(poly), *us).terms():
        out += coeff * sp.prod([moment(k) for k in exps])
    return sp.expand(out)


def _direction_moments_components(n: int):
    """E[u u^T a] and tr Cov(u u^T a) for u ~ N(0, I_n), component by component (a symbolic)."""
    us = sp.symbols(f"u1:{n + 1}", real=True)
    a = sp.Matrix(sp.symbols(f"a1:{n + 1}", real=True))
    u = sp.Matrix(us)
    x = u * (u.T * a)[0]
    mean = sp.Matrix([gaussian_expectation(xi, us) for xi in x])
    second = gaussian_expectation(x.dot(x), us)
    return mean, sp.expand(second - mean.dot(mean)), a


def _sphere_moments_circle():
    """E[u u^T a] and tr Cov for u uniform on the circle of radius sqrt(2), by integrating over the angle."""
    t = sp.Symbol("t", real=True)
    a = sp.Matrix(sp.symbols("a1:3", real=True))
    u = sp.sqrt(2) * sp.Matrix([sp.cos(t), sp.sin(t)])
    x = u * (u.T * a)[0]
    avg = lambda e: sp.integrate(sp.expand(e), (t, 0, 2 * sp.pi)) / (2 * sp.pi)
    mean = sp.Matrix([sp.simplify(avg(xi)) for xi in x])
    return mean, sp.expand(sp.simplify(avg(x.dot(x))) - mean.dot(mean)), a


class ZerothOrderDerivation(NamedTuple):
    calls: dict  # estimator -> (grad calls, HVP calls) in r, Q
    trace_cov_const: dict  # directions -> c(s): tr Cov(u u^T a) = c(s) ||a||^2 (one direction)
    checks: dict
    latex: dict


@functools.lru_cache(maxsize=None)
def derivation() -> ZerothOrderDerivation:
    """Count each estimator's loops with `summation`; derive E[u u^T a] and tr Cov(u u^T a) from the fourth
    moments of u (Gaussian, sphere); the antithetic difference of a quadratic; the smoothing bias of a cubic."""
    # --- costs ---------------------------------------------------------------------------------------------
    path = sp.summation(1, (j, 1, r))  # r inner gradients along one path
    pzobo = (path + 1 + sp.summation(sp.summation(1, (j1, 1, r)), (m, 1, Q)), sp.Integer(0))
    fg = (sp.summation(1, (m, 1, Q)), sp.summation(sp.summation(1, (j1, 1, r)), (m, 1, Q)))  # L_out JVP; r JVPs
    es = (sp.summation(2 * (path + 1), (m, 1, Q)), sp.Integer(0))  # per pair: two paths and two L_out values
    calls = {"pzobo": pzobo, "forward_gradient": fg, "es": es}
    printed_calls = {"pzobo": (Q + 1) * r + 1, "forward_gradient": (Q, Q * r), "es": 2 * Q * (r + 1)}

    # --- Gaussian directions -------------------------------------------------------------------------------
    # Components for n = 1..4: E[u u^T a] = a and tr Cov = (n + 1) ||a||^2 from E[u_i u_j u_k u_l].
    comp_ok = True
    for n in range(1, 5):
        mean, tr, a = _direction_moments_components(n)
        comp_ok &= mean == a and equal(tr, (n + 1) * a.dot(a))
    # Any s: tr Cov depends on a only through ||a|| (u is rotation invariant), so take a = ||a|| e_1:
    # E||u u_1||^2 = E[u_1^4] + (s - 1) E[u_1^2] E[u_2^2], minus ||E[u u_1]||^2 = ||e_1||^2 = 1.
    u1, u2 = sp.symbols("u_1 u_2", real=True)
    gauss_const = sp.expand(gaussian_expectation(u1**4, [u1]) + (s - 1) * gaussian_expectation(u1**2 * u2**2, [u1, u2]) - 1)

    # --- sphere of radius sqrt(s): u = sqrt(s) z / ||z||, z ~ N(0, I), ||z|| independent of z / ||z|| ----------
    # E[z_1^4] = E||z||^4 E[w_1^4], E[z_1^2 z_2^2] = E||z||^4 E[w_1^2 w_2^2] with w = z / ||z||, and
    # E||z||^4 = E[(sum_i z_i^2)^2] = s E[z_1^4] + s (s - 1) E[z_1^2 z_2^2].
    z4, z22 = gaussian_expectation(u1**4, [u1]), gaussian_expectation(u1**2 * u2**2, [u1, u2])
    norm4 = s * z4 + s * (s - 1) * z22
    e_u4, e_u22 = s**2 * z4 / norm4, s**2 * z22 / norm4  # E[u_1^4], E[u_1^2 u_2^2]
    e_u2 = sp.Integer(1)  # E[u_1^2] = E||u||^2 / s = 1, so E[u u^T] = I
    sphere_const = sp.simplify(e_u4 + (s - 1) * e_u22 - e_u2**2)
    # Independent check at s = 2 by integrating over the circle.
    mean_c, tr_c, a_c = _sphere_moments_circle()
    circle_ok = mean_c == a_c and equal(tr_c, sphere_const.subs(s, 2) * a_c.dot(a_c))

    # --- es: the antithetic difference of a quadratic is exact; the smoothing bias of a cubic ---------------
    n = 3
    us = sp.symbols(f"u1:{n + 1}", real=True)
    th = sp.symbols(f"theta1:{n + 1}", real=True)
    H = sp.Matrix(n, n, lambda i, k: sp.Symbol(f"h{min(i, k) + 1}{max(i, k) + 1}", real=True))
    g = sp.Matrix(sp.symbols(f"g1:{n + 1}", real=True))
    x = sp.Matrix(th)
    f = lambda y: sp.Symbol("c") + (g.T * y)[0] + (y.T * H * y)[0] / 2
    grad_f = sp.Matrix([sp.diff(f(x), t) for t in th])
    u = sp.Matrix(us)
    pair = sp.expand((f(x + mu * u) - f(x - mu * u)) / (2 * mu))
    es_quadratic_ok = equal(pair, (u.T * grad_f)[0])
    # A cubic phi in 2 dimensions: E[(phi(theta + mu u) - phi(theta)) / mu u] (pzobo's forward difference) and
    # E[(phi(theta + mu u) - phi(theta - mu u)) / (2 mu) u] (es) both equal grad phi + (mu^2 / 2) grad(Laplacian phi).
    t1, t2 = sp.symbols("theta1 theta2", real=True)
    c = sp.symbols("k0:10", real=True)
    monos = [sp.Integer(1), t1, t2, t1**2, t1 * t2, t2**2, t1**3, t1**2 * t2, t1 * t2**2, t2**3]
    phi = lambda y1, y2: sum(ci * mo.subs({t1: y1, t2: y2}, simultaneous=True) for ci, mo in zip(c, monos))
    v1, v2 = us[0], us[1]
    fwd = (phi(t1 + mu * v1, t2 + mu * v2) - phi(t1, t2)) / mu
    anti = (phi(t1 + mu * v1, t2 + mu * v2) - phi(t1 - mu * v1, t2 - mu * v2)) / (2 * mu)
    lap = sp.diff(phi(t1, t2), t1, 2) + sp.diff(phi(t1, t2), t2, 2)
    smoothed = [sp.diff(phi(t1, t2), t) + mu**2 / 2 * sp.diff(lap, t) for t in (t1, t2)]
    bias_ok = all(
        equal(gaussian_expectation(est * ui, [v1, v2]), target)
        for est in (fwd, anti) for ui, target in zip((v1, v2), smoothed)
    )

    per_q = lambda const: const * A2 / Q  # the mean of Q i.i.d. draws: Cov / Q
    trace_cov_const = {"gaussian": gauss_const, "sphere": sphere_const}
    tex_ = lambda e: tex(e, _NAMES)
    checks = {
        **{
            f"{name}_calls": Check(
                tex_(sp.Tuple(*[sp.factor(x) for x in calls[name]])) if name == "forward_gradient"
                else tex_(sp.factor(calls[name][0])),
                tex_(sp.Tuple(*printed_calls[name])) if name == "forward_gradient" else tex_(printed_calls[name]),
                all(equal(a, b) for a, b in zip(
                    calls[name], printed_calls[name] if name == "forward_gradient" else (printed_calls[name], 0))),
                note,
            )
            for name, note in [
                ("pzobo", "grad calls (0 HVPs): path, outer gradient, Q perturbed paths; the count the estimator documents"),
                ("forward_gradient", "(grad calls, HVPs): per direction r JVPs of dL_in/dphi and one JVP of L_out"),
                ("es", "grad calls (0 HVPs), each L_out evaluation counted as one grad call"),
            ]
        },
        "gaussian_direction_trace_cov": Check(
            tex_(per_q(gauss_const)),
            tex_((s + 1) * A2 / Q),
            comp_ok and equal(gauss_const, s + 1),
            "E[u u^T a] = a and tr Cov = (s + 1)||a||^2 / Q for u ~ N(0, I) (the Gaussian-smoothing estimators' "
            "known form); from the "
            "Gaussian fourth moments, componentwise for s = 1..4 and for any s by rotation invariance",
        ),
        "sphere_direction_trace_cov": Check(
            tex_(per_q(sphere_const)),
            tex_((s - 1) * A2 / Q),
            circle_ok and equal(sphere_const, s - 1),
            "u uniform on the sphere of radius sqrt(s) (E[u u^T] = I): moments of z / ||z|| from the Gaussian "
            "ones; checked by integration over the circle at s = 2",
        ),
        "es_quadratic_exact": Check(
            tex_(sp.Symbol(r"\frac{f(\theta + \mu u) - f(\theta - \mu u)}{2\mu}")),
            r"u^T \nabla f(\theta)",
            es_quadratic_ok,
            "for a general quadratic f in 3 dimensions: es is then u u^T G exactly (unbiased for every mu, "
            "the forward gradient's covariance)",
        ),
        "smoothing_bias_cubic": Check(
            tex_(sp.Symbol(r"\nabla\phi + \frac{\mu^2}{2}\nabla\Delta\phi")),
            r"\nabla \mathbb{E}_u \phi(\theta + \mu u)",
            bias_ok,
            "the Gaussian expectation of pzobo's forward difference and of es's antithetic difference, times u, "
            "for a general cubic phi in 2 dimensions: bias O(mu^2), the gradient of the smoothed function",
        ),
    }
    latex = {
        "pzobo_trace_cov": tex_(sp.Eq(sp.Symbol(r"\mathrm{tr\,Cov}\,\mathcal{G}_{PZOBO}"),
                                      per_q(gauss_const).subs(A2, JB2), evaluate=False)),
        "forward_gradient_trace_cov": tex_(sp.Eq(sp.Symbol(r"\mathrm{tr\,Cov}\,\mathcal{G}_{FG}"),
                                                 per_q(gauss_const).subs(A2, G2), evaluate=False)),
        "ufom_xi_variance_beside": r"\mathrm{tr\,Cov}_\xi\,\mathcal{G}_{UFO} = (1/q - 1)\|\mathcal{G}_{FO} - \mathcal{G}\|^2",
    }
    return ZerothOrderDerivation(calls, trace_cov_const, checks, latex)


@functools.lru_cache(maxsize=None)
def _numeric() -> dict:
    d = derivation()
    out = {f"{name}_{kind}": Numeric((r, Q), sp.sympify(c[i]))
           for name, c in d.calls.items() for i, kind in enumerate(("grads", "hvps"))}
    for directions, const in d.trace_cov_const.items():
        out[f"trace_{directions}"] = Numeric((A2, s, Q), const * A2 / Q)
    return out


def zeroth_order_calls(estimator: str, r, n_dirs):
    """Grad and HVP calls of one estimate of ``estimator`` in {"pzobo", "forward_gradient", "es"}.

    pzobo: ((Q + 1) r + 1, 0);  forward_gradient: (Q, Q r);  es: (2 Q (r + 1), 0),  Q = n_dirs.
    """
    if estimator not in derivation().calls:
        raise ValueError(f"estimator must be one of {tuple(derivation().calls)}, got {estimator!r}")
    n = _numeric()
    return n[f"{estimator}_grads"](r, n_dirs), n[f"{estimator}_hvps"](r, n_dirs)


def direction_trace_cov(a2, s, n_dirs, directions: str = "gaussian"):
    """tr Cov of (1/Q) sum_j u_j u_j^T a over Q i.i.d. directions with E[u u^T] = I:

    (s + 1) ||a||^2 / Q for u ~ N(0, I_s), (s - 1) ||a||^2 / Q for u uniform on the sphere of radius sqrt(s).

    Args:
      a2: ||a||^2; s: dimension of theta; n_dirs: Q; directions: "gaussian" or "sphere".
    """
    if directions not in ("gaussian", "sphere"):
        raise ValueError(f"directions must be 'gaussian' or 'sphere', got {directions!r}")
    return _numeric()[f"trace_{directions}"](a2, s, n_dirs)


def pzobo_trace_cov(a2, s, n_dirs, directions: str = "gaussian"):
    """tr Cov of PZOBO's estimate over its directions, given the task, as mu -> 0: `direction_trace_cov` with
    a = J^T dL_out/dphi (the Jacobian term of eq. 6; the exact dL_out/dtheta term adds nothing)."""
    return direction_trace_cov(a2, s, n_dirs, directions)


def forward_gradient_trace_cov(G2, s, n_dirs):
    """tr Cov of the forward gradient over its directions, given the task: (s + 1) ||G||^2 / Q (G exact)."""
    return direction_trace_cov(G2, s, n_dirs, "gaussian")


def es_trace_cov(G2, s, n_dirs):
    """tr Cov of es over its directions, given the task, as mu -> 0 (for every mu where L_out(theta, U_r(theta))
    is quadratic in theta): (s + 1) ||G||^2 / Q, the forward gradient's."""
    return direction_trace_cov(G2, s, n_dirs, "gaussian")
