"""FOM's bias D^2 (eq. 14), the exact gradient's second moment V^2 (eq. 16) and UFOM's second moment (Lemma 1),
measured at a theta or over a grid of thetas, exactly over a finite task set or by sampling tasks.

Per task T we compute the pair (G_FO, G) with `pair` (one shared forward pass), and keep the
per-sample gradients as two matrices [n, s] (flattened with `ravel_pytree`), so every statistic below comes
from one computation (as in mc_gradients):

    D^2(theta) = E_T ||G_FO - G||^2          (the expectation in eq. 14; D^2 = its sup over theta)
    V^2(theta) = E_T ||G||^2                 (the expectation in eq. 16; V^2 = its sup over theta)
    bias(theta) = E_T [G_FO - G]             (FOM's bias; ||bias||^2 <= D^2(theta) by Jensen)
    dM/dtheta = E_T [G]                      (Assumption 2)
    E ||G_UFO||^2 = V^2(theta) + (1/q - 1) D^2(theta)   (the identity behind Lemma 1)

Two modes (the ``method`` field of every result):
  "exact":   the problem exposes a finite task set (``problem.tasks``): expectations are sums over all tasks
             weighted by ``task_probs``; standard errors are 0. The default whenever it is possible.
  "sampled": n tasks drawn i.i.d. from ``problem.sample_task``; standard errors are sd / sqrt(n_eff)
             (ddof = 1); a confidence interval is estimate +- z * SE (normal approximation; z = 1.96 for 95%).
Diverged pairs (`Info.diverged`: a non-finite or runaway inner loop; set to NaN when computed) are counted
per theta in ``n_diverged`` and excluded: means are over the finite samples only (in exact mode the
remaining task probabilities are renormalised), so every estimate is conditional on finiteness and the count
says how much was excluded; when nothing is finite the estimates are NaN.

The sample axis is computed in chunks of ``chunk_size`` (a `lax.map` over vmapped chunks: memory is bounded
by one chunk of inner-loop states), and each chunk is sharded across ``jax.devices()`` with a 1-D mesh
(a no-op with one device). Results do not depend on ``chunk_size`` or on the number of devices.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ufom_bench import estimators
from ufom_bench.analysis import Z95, ci  # re-exported: the statistics live in analysis
from ufom_bench.estimators import core
from ufom_bench.estimators.core import check_theta
from ufom_bench.estimators.ufom import check_q
from ufom_bench.problem import Problem, task_at
from ufom_bench.errors import UserError

PyTree = Any

__all__ = [
    "Z95",
    "Samples",
    "Moments",
    "UfomMoments",
    "Sup",
    "ci",
    "pair",
    "gradient_samples",
    "moments",
    "moments_grid",
    "moments_of",
    "ufom_moments",
    "ufom_moments_of",
    "ufom_variance",
    "grid_sup",
    "to_frame",
]

METHODS = ("auto", "exact", "sampled")
AXIS = "samples"  # the mesh axis the sample dimension is sharded over


# ---------------------------------------------------------------------------------------------- results


class Samples(NamedTuple):
    """Per-sample gradients of one or several thetas (rows: tasks; columns: ravel_pytree(theta) order).

    g_fo, g: [cells, m, s] (or [m, s] for one theta): G_FO and the exact G per sample.
    weight: [m] the probability of each row (exact: task_probs; sampled: 1/n).
    finite: [cells, m] (or [m]) whether both gradients of the row are finite (a diverged row is NaN).
    method: "exact" (rows are all tasks) or "sampled" (rows are i.i.d. draws).
    """

    g_fo: jax.Array
    g: jax.Array
    weight: jax.Array
    finite: jax.Array
    method: str


class Moments(NamedTuple):
    """Bias and variance statistics of FOM and the exact gradient at one theta (eqs. 14, 16).

    d2, d2_se: E_T ||G_FO - G||^2 and its standard error (0 in exact mode).
    v2, v2_se: E_T ||G||^2 and its standard error.
    bias, bias_se: E_T [G_FO - G] (vector, ravel_pytree(theta) order) and per-coordinate SEs.
    meta_grad, meta_grad_se: E_T [G] = dM_r/dtheta (vector) and per-coordinate SEs.
    n: tasks (exact) or draws (sampled). n_diverged: rows excluded (diverged or non-finite).
    method: "exact" or "sampled".
    """

    d2: float
    d2_se: float
    v2: float
    v2_se: float
    bias: np.ndarray
    meta_grad: np.ndarray
    n: int
    n_diverged: int
    method: str
    bias_se: np.ndarray
    meta_grad_se: np.ndarray

    def ci(self, field: str = "d2", z: float = Z95):
        """(lo, hi) = estimate -+ z * SE for ``field`` in {d2, v2, bias, meta_grad}."""
        return ci(getattr(self, field), getattr(self, field + "_se"), z)


class UfomMoments(NamedTuple):
    """UFOM's second moment E_T E_xi ||G_UFO||^2 at one theta, two ways (Lemma 1).

    second_moment, second_moment_se: from the pairs by the identity V^2 + (1/q - 1) D^2, per sample.
    direct, direct_se: by drawing xi ~ Bernoulli(q) and forming G_FO + (xi/q)(G - G_FO) (eqs. 12-13).
    diff_se: SE of (direct - second_moment), which shares the tasks (the check is |diff| < z * diff_se).
    q: the probabilities (scalar, or an array: then every field above has its shape).
    n: tasks (exact) or task draws (sampled). n_xi: xi draws per task (exact) or 1 (sampled).
    n_diverged, method: as in `Moments`; moments: the `Moments` of the same pairs.
    """

    q: Any
    second_moment: Any
    second_moment_se: Any
    direct: Any
    direct_se: Any
    diff_se: Any
    n: int
    n_xi: int
    n_diverged: int
    method: str
    moments: Moments


class Sup(NamedTuple):
    """A sup over a grid of thetas (eqs. 14, 16 with the sup restricted to the grid).

    value, se: the estimate at the argmax cell and that cell's own SE. In sampled mode the max of noisy
    estimates is biased upward (E max_c x_hat_c >= max_c x_c), and se ignores the selection; in exact mode
    both issues vanish (se = 0). index: the argmax cell (-1 when no cell is defined). n_undefined: cells
    whose estimate is NaN (nothing finite), left out of the max.
    """

    value: float
    se: float
    index: int
    field: str
    n_cells: int
    n_undefined: int
    method: str


# ---------------------------------------------------------------------------------------------- sampling


def _resolve_method(problem: Problem, method: str) -> str:
    if method not in METHODS:
        raise UserError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "exact" if problem.tasks is not None else "sampled"
    if method == "exact" and problem.tasks is None:
        raise UserError(f"method='exact' needs a finite task set, and problem {problem.name!r} has none")
    return method


def _check_n(n, what: str, minimum: int = 1) -> int:
    if n is None or int(n) != n or n < minimum:
        raise UserError(f"{what} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _as_grid(problem: Problem, thetas: PyTree, grid: bool) -> tuple[PyTree, int]:
    """thetas with a leading cell axis, validated against theta0, and the number of cells."""
    want, got = jax.tree_util.tree_structure(problem.theta0), jax.tree_util.tree_structure(thetas)
    if want != got:
        raise UserError(f"theta has pytree structure {got}, but problem {problem.name!r} expects {want}")
    thetas = jax.tree_util.tree_map(jnp.asarray, thetas)
    if not grid:
        check_theta(problem, thetas)
        return jax.tree_util.tree_map(lambda x: x[None], thetas), 1
    sizes = set()
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(problem.theta0)[0], jax.tree_util.tree_leaves(thetas)):
        if b.ndim != a.ndim + 1 or b.shape[1:] != a.shape:
            where = "thetas" + jax.tree_util.keystr(path)
            raise UserError(f"{where} must have shape (cells,) + {a.shape}, got {b.shape}")
        sizes.add(b.shape[0])
    if len(sizes) != 1 or 0 in sizes:
        raise UserError(f"every leaf of thetas must share a non-empty leading grid axis, got sizes {sizes}")
    return thetas, sizes.pop()


def _specs(problem: Problem, cells: int, n, key, method: str):
    """Per row: the grid cell and what defines the task (a task index, or a PRNG key to sample one).

    Sampled mode: cell c draws its tasks with keys split(fold_in(k_tasks, c), n), k_tasks = split(key)[0],
    so one theta equals cell 0 of a grid under the same key, and `moments` and `ufom_moments` see the same
    tasks (the xi draws use split(key)[1]).
    """
    if method == "exact":
        m = problem.num_tasks
        spec = np.tile(np.arange(m, dtype=np.int32), cells)
    else:
        m = _check_n(n, "n (task draws)")
        if key is None:
            raise UserError("sampled mode needs a PRNG key")
        k_tasks = jax.random.split(key)[0]
        spec = jax.vmap(lambda c: jax.random.split(jax.random.fold_in(k_tasks, c), m))(jnp.arange(cells))
        spec = spec.reshape((cells * m,) + spec.shape[2:])
    return np.repeat(np.arange(cells, dtype=np.int32), m), spec, m


def pair(problem: Problem, theta: PyTree, task: PyTree):
    """(G_FO, G, Info) for one task, with G by Algorithm 2 sharing the forward loop with G_FO (eqs. 10-11).

    Every UFOM draw is a function of this pair and xi (eqs. 12-13), so the moments D^2, V^2 and UFOM's
    need no cond (which would run both branches under vmap anyway). Not an `Estimator`: it returns both.
    """
    check_theta(problem, theta)
    zero = jnp.zeros((), core.COUNT)
    phi, states, grads, check = core.inner_loop_stored(problem, theta, task, zero)
    b1, b2, grads, check = core.outer_grads(problem, theta, phi, task, grads, check)
    g_fo = core.add_v_jvp(problem, theta, task, b1, b2)
    b1, b2, hvps = core.backward_stored(problem, theta, task, states, b1, b2, zero)
    g = core.add_v_jvp(problem, theta, task, b1, b2)
    return g_fo, g, core.info(g, grads, hvps, True, 1.0, check._replace(finite=check.finite & core.all_finite(g_fo)))


@functools.partial(jax.jit, static_argnums=(4,))
def _pairs_chunked(problem: Problem, thetas, cells, specs, sampled: bool):
    """(G_FO, G) flattened, for rows laid out as [chunks, chunk]: a scan over chunks of vmapped pairs."""

    def one(cell, spec):
        theta = jax.tree_util.tree_map(lambda t: t[cell], thetas)
        task = problem.sample_task(spec) if sampled else task_at(problem, spec)
        g_fo, g, info = pair(problem, theta, task)
        bad = lambda x: jnp.where(info.diverged, jnp.nan, ravel_pytree(x)[0])  # a diverged pair is excluded
        return bad(g_fo), bad(g)

    return jax.lax.map(lambda xs: jax.vmap(one)(*xs), (cells, specs))


def _pairs(problem: Problem, thetas, cells, specs, sampled: bool, chunk_size: int):
    """Rows padded to whole chunks, each chunk sharded over a 1-D mesh of all devices; returns [rows, s] x 2."""
    devices = jax.devices()
    rows = cells.shape[0]
    chunk = -(-min(chunk_size, rows) // len(devices)) * len(devices)  # a multiple of the device count
    n_chunks = -(-rows // chunk)
    # Padding repeats the last row (a valid input); the padded rows are dropped below.
    idx = np.minimum(np.arange(n_chunks * chunk), rows - 1)
    shape = lambda x: x[idx].reshape((n_chunks, chunk) + x.shape[1:])
    sharding = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(None, AXIS))
    cells, specs = jax.device_put((shape(jnp.asarray(cells)), shape(jnp.asarray(specs))), sharding)
    g_fo, g = _pairs_chunked(problem, thetas, cells, specs, sampled)
    flat = lambda x: x.reshape((n_chunks * chunk,) + x.shape[2:])[:rows]
    return flat(g_fo), flat(g)


def gradient_samples(problem: Problem, theta: PyTree, n: int | None = None, key=None, *, method: str = "auto",
                     chunk_size: int = 256, grid: bool = False) -> Samples:
    """Per-task (G_FO, G) matrices at theta (or at every cell of a grid, ``grid=True``).

    Args:
      problem: the ABLO problem.
      theta: a theta pytree shaped like ``problem.theta0``; with ``grid=True`` every leaf has an extra
        leading axis of grid cells.
      n: task draws per theta (sampled mode; unused in exact mode).
      key: PRNG key (sampled mode).
      method: "auto" (exact when the problem has a finite task set), "exact" or "sampled".
      chunk_size: rows computed at once (rounded up to a multiple of the device count).
      grid: whether theta carries a leading grid axis.
    Returns:
      `Samples`; without ``grid`` the cell axis is dropped.
    """
    method = _resolve_method(problem, method)
    chunk_size = _check_n(chunk_size, "chunk_size")
    thetas, cells = _as_grid(problem, theta, grid)
    cell_idx, specs, m = _specs(problem, cells, n, key, method)
    g_fo, g = _pairs(problem, thetas, cell_idx, specs, method == "sampled", chunk_size)
    g_fo, g = g_fo.reshape(cells, m, -1), g.reshape(cells, m, -1)
    finite = jnp.all(jnp.isfinite(g_fo), -1) & jnp.all(jnp.isfinite(g), -1)
    if method == "exact":
        weight = jnp.asarray(problem.task_probs, g.dtype)
    else:
        weight = jnp.full((m,), 1.0 / m, g.dtype)
    if not grid:
        g_fo, g, finite = g_fo[0], g[0], finite[0]
    return Samples(g_fo, g, weight, finite, method)


# ---------------------------------------------------------------------------------------------- reductions


def _weights(weight, finite):
    """Row weights renormalised over the finite rows (NaN everywhere when no row is finite)."""
    w = jnp.where(finite, weight, 0.0)
    return w / jnp.sum(w)


def _stat(x, w, finite, sampled: bool):
    """Weighted mean over rows (axis 0) of the finite rows, and its SE (sampled: sd/sqrt(n_eff), ddof = 1)."""
    mask = finite.reshape(finite.shape + (1,) * (x.ndim - 1))
    x = jnp.where(mask, x, 0.0)  # a non-finite row never touches the arithmetic
    mean = jnp.tensordot(w, x, 1)
    if sampled:
        # w = 1/n_eff on finite rows, so sum w (x - mean)^2 / (n_eff - 1) = var_ddof1 / n_eff.
        n_eff = jnp.sum(finite)
        se = jnp.sqrt(jnp.tensordot(w, (x - mean) ** 2, 1) / (n_eff - 1))
    else:
        se = jnp.where(jnp.isnan(mean), jnp.nan, jnp.zeros_like(mean))
    return mean, se


@functools.partial(jax.jit, static_argnums=(4,))
def _moments_cells(g_fo, g, weight, finite, sampled: bool):
    def cell(g_fo, g, finite):
        w = _weights(weight, finite)
        diff = g_fo - g
        stats = {
            "d2": _stat(jnp.sum(diff**2, -1), w, finite, sampled),
            "v2": _stat(jnp.sum(g**2, -1), w, finite, sampled),
            "bias": _stat(diff, w, finite, sampled),
            "meta_grad": _stat(g, w, finite, sampled),
        }
        return stats, jnp.sum(~finite)

    return jax.vmap(cell)(g_fo, g, finite)


@functools.partial(jax.jit, static_argnums=(6,))
def _ufom_cells(g_fo, g, weight, finite, q, u, sampled: bool):
    """Identity and direct estimates of E||G_UFO||^2 per cell and q. u: [cells, m, n_xi] uniforms."""

    def one(g_fo, g, finite, u, q):
        w = _weights(weight, finite)
        d = jnp.sum((g_fo - g) ** 2, -1)
        ident = jnp.sum(g**2, -1) + (1.0 / q - 1.0) * d  # ||G||^2 + (1/q - 1)||G_FO - G||^2 (Lemma 1)
        # ||G_FO + (xi/q)(G - G_FO)||^2 for xi = 0 and xi = 1; selecting by xi is the same arithmetic as
        # forming each draw's vector, without an [m, n_xi, s] array.
        ufo0 = jnp.sum(g_fo**2, -1)
        ufo1 = jnp.sum((g_fo + (g - g_fo) / q) ** 2, -1)
        draws = jnp.where(u < q, ufo1[:, None], ufo0[:, None])  # xi = 1{u < q} ~ Bernoulli(q)
        identity = _stat(ident, w, finite, sampled)
        if sampled:  # one xi per task draw: a paired comparison with the identity
            direct = _stat(draws[:, 0], w, finite, sampled)
            diff_se = _stat(ident - draws[:, 0], w, finite, sampled)[1]
        else:  # every task with n_xi draws: stratified by task, the only noise is xi's
            draws = jnp.where(finite[:, None], draws, 0.0)
            mean = jnp.tensordot(w, jnp.mean(draws, 1), 1)
            se = jnp.sqrt(jnp.tensordot(w**2, jnp.var(draws, 1, ddof=1), 1) / draws.shape[1])
            direct, diff_se = (mean, se), se
        return identity, direct, diff_se

    over_q = jax.vmap(one, in_axes=(None, None, None, None, 0))
    return jax.vmap(over_q, in_axes=(0, 0, 0, 0, None))(g_fo, g, finite, u, q)


def _host_moments(stats, n_diverged, n: int, method: str, i: int) -> Moments:
    get = lambda k, j: np.asarray(stats[k][j][i])
    return Moments(
        d2=float(get("d2", 0)),
        d2_se=float(get("d2", 1)),
        v2=float(get("v2", 0)),
        v2_se=float(get("v2", 1)),
        bias=get("bias", 0),
        meta_grad=get("meta_grad", 0),
        n=n,
        n_diverged=int(n_diverged[i]),
        method=method,
        bias_se=get("bias", 1),
        meta_grad_se=get("meta_grad", 1),
    )


def _moments_of(samples: Samples) -> list[Moments]:
    stats, bad = _moments_cells(samples.g_fo, samples.g, samples.weight, samples.finite,
                                samples.method == "sampled")
    stats, bad = jax.device_get((stats, bad))
    n = samples.weight.shape[0]
    return [_host_moments(stats, bad, n, samples.method, i) for i in range(bad.shape[0])]


def moments_of(samples: Samples) -> list[Moments]:
    """`Moments` of per-task pairs already computed: one per cell of a grid (a list of one for one theta).

    No new gradients: lets one `gradient_samples` serve D^2, V^2 and (with `ufom_moments_of`) every q.
    """
    if samples.g.ndim == 2:
        samples = samples._replace(g_fo=samples.g_fo[None], g=samples.g[None], finite=samples.finite[None])
    return _moments_of(samples)


def moments(problem: Problem, theta: PyTree, n: int | None = None, key=None, *, method: str = "auto",
            chunk_size: int = 256) -> Moments:
    """D^2(theta), V^2(theta), FOM's bias and dM/dtheta at one theta (the expectations in eqs. 14 and 16).

    Exact over ``problem.tasks`` when there is a finite task set (``method="auto"``, SE = 0), else from n
    sampled tasks (``method="sampled"`` forces this) with SE = sd / sqrt(n_eff). Non-finite pairs are
    counted in ``n_diverged`` and excluded.

    Args:
      problem: the ABLO problem. theta: a pytree shaped like ``problem.theta0``.
      n: task draws (sampled mode). key: PRNG key (sampled mode).
      method: "auto", "exact" or "sampled". chunk_size: rows computed at once (bounds memory).
    Returns:
      `Moments`.
    """
    thetas, _ = _as_grid(problem, theta, grid=False)  # one theta is cell 0 of a one-cell grid
    return moments_grid(problem, thetas, n, key, method=method, chunk_size=chunk_size)[0]


def moments_grid(problem: Problem, thetas: PyTree, n: int | None = None, key=None, *, method: str = "auto",
                 chunk_size: int = 256) -> list[Moments]:
    """`moments` at every cell of a grid of thetas (leading axis on every leaf), as one computation.

    In sampled mode each cell draws its own n tasks (independent across cells). The sup over the grid
    (eqs. 14, 16 restricted to the grid) is `grid_sup(cells, "d2")` / `grid_sup(cells, "v2")`; a tidy table
    is `to_frame(cells, thetas)`.
    """
    return _moments_of(gradient_samples(problem, thetas, n, key, method=method, chunk_size=chunk_size, grid=True))


def ufom_moments(problem: Problem, theta: PyTree, q, n: int | None = None, key=None, *, method: str = "auto",
                 chunk_size: int = 256) -> UfomMoments:
    """UFOM's second moment E_T E_xi ||G_UFO(theta, T, xi)||^2, from the identity and by sampling xi.

    Per task, E_xi ||G_FO + (xi/q)(G - G_FO)||^2 = ||G||^2 + (1/q - 1) ||G_FO - G||^2 (eqs. 12-13), so
    over tasks it equals V^2(theta) + (1/q - 1) D^2(theta), whose sup over theta is bounded by Lemma 1's
    (1/q - 1) D^2 + V^2. The same pairs give a direct estimate: draw xi ~ Bernoulli(q) and form G_UFO.

    Exact mode (finite task set): the identity is exact (SE 0); the direct estimate draws n xi per task
    (SE from xi alone, stratified by task, n >= 2). Sampled mode: n task draws, each with one xi; SEs are
    sd / sqrt(n_eff), and diff_se is the SE of the paired difference direct - identity.

    Args:
      problem, theta: as in `moments`. q: probability of the exact branch in (0, 1], or a 1-D array of
        them (the xi of every q come from the same uniforms: common random numbers).
      n: task draws (sampled) or xi draws per task (exact). key: PRNG key (tasks and xi).
      method, chunk_size: as in `moments`.
    Returns:
      `UfomMoments` (fields shaped like q).
    """
    _check_qs(q)
    if key is None:
        raise UserError("ufom_moments needs a PRNG key (xi is always sampled)")
    resolved = _resolve_method(problem, method)
    n_xi = _check_n(n, "n (xi draws per task)", 2) if resolved == "exact" else 1
    samples = gradient_samples(problem, theta, n, key, method=resolved,
                               chunk_size=chunk_size)
    return ufom_moments_of(samples, q, key, n_xi=n_xi)


def _check_qs(q) -> np.ndarray:
    """q as a float array, after checking that it is a number or a non-empty 1-D array of numbers in (0, 1]."""
    q_arr = np.asarray(q, dtype=float)
    if q_arr.ndim > 1 or q_arr.size == 0:
        raise UserError(f"q must be a number or a non-empty 1-D array of numbers in (0, 1], got {q!r}")
    for value in q_arr.ravel():
        check_q(value)
    return q_arr


def ufom_moments_of(samples: Samples, q, key, *, n_xi: int | None = None) -> UfomMoments:
    """`ufom_moments` from per-task pairs already computed (one theta: ``Samples`` without a cell axis).

    No new gradients: the identity V^2 + (1/q - 1) D^2 (Lemma 1) and the direct estimate (xi drawn from
    ``split(key)[1]``) come from the pairs, so one `gradient_samples` serves D^2, V^2 and every q.

    Args:
      samples: `gradient_samples` of one theta (``grid=False``), or one cell of a grid.
      q: a number in (0, 1] or a 1-D array of them. key: PRNG key of the xi draws.
      n_xi: xi draws per task in exact mode (>= 2; default 2); sampled mode always uses 1 per task draw.
    Returns:
      `UfomMoments` (fields shaped like q).
    """
    q_arr = _check_qs(q)
    if key is None:
        raise UserError("ufom_moments_of needs a PRNG key (xi is always sampled)")
    if samples.g.ndim != 2:
        raise UserError(f"samples must hold one theta ([m, s] gradients), got shape {samples.g.shape}")
    resolved = samples.method
    n_xi = (_check_n(2 if n_xi is None else n_xi, "n_xi (xi draws per task)", 2) if resolved == "exact" else 1)
    g_fo, g, finite = samples.g_fo[None], samples.g[None], samples.finite[None]
    m = samples.weight.shape[0]
    u = jax.random.uniform(jax.random.split(key)[1], (1, m, n_xi), g.dtype)
    qs = jnp.asarray(np.atleast_1d(q_arr), g.dtype)
    identity, direct, diff_se = jax.device_get(
        _ufom_cells(g_fo, g, samples.weight, finite, qs, u, resolved == "sampled"))
    shape = lambda x: float(x[0, 0]) if q_arr.ndim == 0 else np.asarray(x[0])
    mom = _moments_of(samples._replace(g_fo=g_fo, g=g, finite=finite))[0]
    return UfomMoments(
        q=float(q_arr) if q_arr.ndim == 0 else q_arr,
        second_moment=shape(identity[0]),
        second_moment_se=shape(identity[1]),
        direct=shape(direct[0]),
        direct_se=shape(direct[1]),
        diff_se=shape(diff_se),
        n=m,
        n_xi=n_xi,
        n_diverged=mom.n_diverged,
        method=resolved,
        moments=mom,
    )


def ufom_variance(um: UfomMoments):
    """UFOM's variance E||G_UFO - dM/dtheta||^2 = E||G_UFO||^2 - ||dM/dtheta||^2, per q, with its SE.

    ||dM/dtheta||^2 is estimated without bias from the sample mean G_bar as ||G_bar||^2 - sum_i SE_i^2 (the
    squared norm of a mean overestimates by the trace of its covariance; exact mode: SE = 0). The SE is that
    of the second moment (the norm term's own noise is of smaller order when n is large).

    Returns:
      (variance, se), shaped like ``um.q``.
    """
    mg, mg_se = np.asarray(um.moments.meta_grad, float), np.asarray(um.moments.meta_grad_se, float)
    norm2 = float(np.sum(mg**2) - np.sum(mg_se**2))
    return np.asarray(um.second_moment) - norm2, np.asarray(um.second_moment_se)


# ---------------------------------------------------------------------------------------------- grids


def grid_sup(cells: Sequence[Moments], field: str = "d2") -> Sup:
    """sup over the grid of ``field`` ("d2" for eq. 14, "v2" for eq. 16): the argmax cell's estimate and SE.

    In sampled mode the max of noisy estimates is biased upward, and the argmax cell's SE does not
    account for the selection: read it as a lower bound on the uncertainty. Cells with a NaN estimate
    (nothing finite) are left out and counted in ``n_undefined``.
    """
    if field not in ("d2", "v2"):
        raise UserError(f"field must be 'd2' or 'v2', got {field!r}")
    cells = list(cells)
    if not cells:
        raise UserError("grid_sup needs at least one cell")
    values = np.array([getattr(c, field) for c in cells], dtype=float)
    defined = ~np.isnan(values)
    methods = {c.method for c in cells}
    method = methods.pop() if len(methods) == 1 else "mixed"
    if not defined.any():
        return Sup(math.nan, math.nan, -1, field, len(cells), len(cells), method)
    i = int(np.nanargmax(values))
    return Sup(float(values[i]), float(getattr(cells[i], field + "_se")), i, field, len(cells),
               int((~defined).sum()), method)


def to_frame(cells: Moments | Sequence[Moments], thetas: PyTree | None = None, **columns):
    """A tidy pandas frame, one row per theta, scalar columns only.

    Columns: cell, theta (s = 1) or theta_0..theta_{s-1} (when ``thetas``, a grid with a leading axis, is
    given), d2, d2_se, v2, v2_se, bias_norm = ||E[G_FO - G]||, meta_grad_norm = ||E[G]||, n, n_diverged,
    method, then ``columns`` (constants, e.g. alpha=0.01).
    """
    import pandas as pd

    cells = [cells] if isinstance(cells, Moments) else list(cells)
    frame = pd.DataFrame({"cell": np.arange(len(cells))})
    if thetas is not None:
        flat = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(thetas))
        if flat.shape[0] != len(cells):
            raise UserError(f"thetas has {flat.shape[0]} cells, but {len(cells)} results were given")
        if flat.shape[1] == 1:
            frame["theta"] = flat[:, 0]
        else:
            for j in range(flat.shape[1]):
                frame[f"theta_{j}"] = flat[:, j]
    for name in ("d2", "d2_se", "v2", "v2_se"):
        frame[name] = [getattr(c, name) for c in cells]
    frame["bias_norm"] = [float(np.linalg.norm(c.bias)) for c in cells]
    frame["meta_grad_norm"] = [float(np.linalg.norm(c.meta_grad)) for c in cells]
    frame["n"] = [c.n for c in cells]
    frame["n_diverged"] = [c.n_diverged for c in cells]
    frame["method"] = [c.method for c in cells]
    for name, value in columns.items():
        frame[name] = value
    return frame


# ---------------------------------------------------------------------------------------------- any estimator
#
# The generic path (DESIGN.md, "Monte Carlo for any estimator"): per task, n_keys draws of the estimator
# beside the exact G of the same task (Algorithm 2), so that bias, the two parts of the variance, the MSE
# and the mean cost come from one [tasks, keys, s] array. Everything above this line is about the pair
# (G_FO, G); nothing here changes it.


class EstimatorSamples(NamedTuple):
    """Per (task, key) estimates of one estimator at one theta, beside the exact G of each task.

    g: [m, s] the exact G per task (Algorithm 2; ravel_pytree(theta) order). est: [m, K, s] the estimates.
    grad_calls, hvp_calls: [m, K] counted calls (`Info`). weight: [m] the probability of each task row
    (exact: task_probs; sampled: 1/m). finite: [m] whether G and all K estimates of the row are finite and
    not diverged (other rows are excluded). method: "exact" or "sampled". name: the estimator's name.
    """

    g: jax.Array
    est: jax.Array
    grad_calls: jax.Array
    hvp_calls: jax.Array
    weight: jax.Array
    finite: jax.Array
    method: str
    name: str


class EstimatorMoments(NamedTuple):
    """Bias, variance split, MSE and mean cost of an estimator against the exact G, at one theta.

    With m_T = E_key[G_hat | T] (the estimator's mean given the task) and G the exact gradient of task T:
    bias, bias_se: E_T E_key [G_hat - G] (vector, ravel_pytree(theta) order) and per-coordinate SEs.
    bias2, bias2_se: ||bias||^2, unbiased (||b_hat||^2 - tr Cov(b_hat)), and its SE (normal approximation,
      sqrt(4 b^T Cov b + 2 ||Cov||_F^2)).
    var_task, var_task_se: tr Cov_T(m_T), the part of the variance due to the task (corrected for the
      noise of m_T's estimate from K keys).
    var_est, var_est_se: E_T tr Cov_key(G_hat | T), the estimator's own randomness (0 for deterministic ones).
      var_task + var_est = tr Cov(G_hat) over (T, key) (the law of total variance): `var`.
    mse, mse_se: E_T E_key ||G_hat - G||^2 = E_T ||m_T - G||^2 + var_est.
    grad_calls, grad_calls_se, hvp_calls, hvp_calls_se: mean counted calls per estimate and their SEs.
    meta_grad: E_T [G] = dM_r/dtheta (vector). n: tasks (exact) or task draws (sampled). n_keys: K.
    n_diverged: task rows excluded (their G or one of their estimates diverged or is not finite).
    method: "exact" (SEs from the keys alone) or "sampled" (SEs over i.i.d. tasks). name: the estimator.
    """

    bias: np.ndarray
    bias_se: np.ndarray
    bias2: float
    bias2_se: float
    var_task: float
    var_task_se: float
    var_est: float
    var_est_se: float
    mse: float
    mse_se: float
    grad_calls: float
    grad_calls_se: float
    hvp_calls: float
    hvp_calls_se: float
    meta_grad: np.ndarray
    n: int
    n_keys: int
    n_diverged: int
    method: str
    name: str

    @property
    def var(self) -> float:
        """tr Cov(G_hat) over tasks and keys: var_task + var_est."""
        return self.var_task + self.var_est

    def ci(self, field: str = "bias2", z: float = Z95):
        """(lo, hi) = estimate -+ z * SE for a field with a ``<field>_se``."""
        return ci(getattr(self, field), getattr(self, field + "_se"), z)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _estimates_chunked(estimator, problem: Problem, theta, state, specs, keys, sampled: bool):
    """(G, estimates, grad calls, HVP calls, bad) for rows laid out as [chunks, chunk] (keys: [.., .., K])."""
    reference = estimators.exact()

    def one(spec, row_keys):
        task = problem.sample_task(spec) if sampled else task_at(problem, spec)
        g, info_g, _ = reference.estimate(problem, theta, task, None, ())

        def draw(key):
            est, info, _ = estimator.estimate(problem, theta, task, key, state)
            return ravel_pytree(est)[0], info.grad_calls, info.hvp_calls, info.diverged | ~info.finite

        est, grads, hvps, bad = jax.vmap(draw)(row_keys)
        return ravel_pytree(g)[0], est, grads, hvps, info_g.diverged | jnp.any(bad)

    return jax.lax.map(lambda xs: jax.vmap(one)(*xs), (specs, keys))


def estimator_samples(problem: Problem, estimator, theta: PyTree | None = None, n_tasks: int | None = None,
                      n_keys: int = 2, key=None, *, state=None, method: str = "auto",
                      chunk_size: int = 256) -> EstimatorSamples:
    """n_keys estimates per task of any estimator at theta, beside the exact G of the same task.

    Args:
      problem: the ABLO problem. estimator: an `Estimator` or a registered name (built with its defaults).
      theta: shaped like ``problem.theta0`` (default theta0).
      n_tasks: task draws (sampled mode; unused in exact mode, where every task of ``problem.tasks`` is a row).
      n_keys: estimator keys per task, K >= 2 (two make the within-task variance estimable).
      key: PRNG key: k_tasks, k_est = split(key); task draws split(k_tasks, n_tasks), row i's estimator keys
        split(fold_in(k_est, i), K).
      state: the estimator's state given to every estimate (default ``estimator.init(theta)``; not advanced).
      method: "auto" (exact when the problem has a finite task set), "exact" or "sampled".
      chunk_size: estimates computed at once, about (task rows per chunk) x K; rows are vmapped within a
        chunk, chunks run in sequence, and each chunk is sharded across ``jax.devices()``.
    Raises:
      `estimators.NotApplicable` (a UserError) when the estimator is not defined on the problem; UserError
      for a bad n_tasks, n_keys, chunk_size, method or missing key.
    """
    est = estimators.get(estimator) if isinstance(estimator, str) else estimator
    theta = problem.theta0 if theta is None else jax.tree_util.tree_map(jnp.asarray, theta)
    check_theta(problem, theta)
    reason = estimators.not_applicable(est, problem, theta)
    if reason is not None:
        raise estimators.NotApplicable(reason)
    method = _resolve_method(problem, method)
    n_keys = _check_n(n_keys, "n_keys (estimator keys per task)", 2)
    chunk_size = _check_n(chunk_size, "chunk_size")
    if key is None:
        raise UserError("estimator_samples needs a PRNG key (the estimator's keys, and tasks when sampled)")
    state = est.init(theta) if state is None else state
    k_tasks, k_est = jax.random.split(key)
    if method == "exact":
        rows = problem.num_tasks
        specs = jnp.arange(rows, dtype=jnp.int32)
        weight = np.asarray(problem.task_probs, np.float64)
    else:
        rows = _check_n(n_tasks, "n_tasks (task draws)")
        specs = jax.random.split(k_tasks, rows)
        weight = np.full((rows,), 1.0 / rows)
    keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(k_est, i), n_keys))(jnp.arange(rows))

    devices = jax.devices()
    per_chunk = max(1, min(chunk_size // n_keys, rows))
    chunk = -(-per_chunk // len(devices)) * len(devices)  # task rows per chunk, a multiple of the devices
    n_chunks = -(-rows // chunk)
    idx = np.minimum(np.arange(n_chunks * chunk), rows - 1)  # padding repeats the last row; dropped below
    shape = lambda x: x[idx].reshape((n_chunks, chunk) + x.shape[1:])
    sharding = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(None, AXIS))
    specs, keys = jax.device_put((shape(specs), shape(keys)), sharding)
    out = _estimates_chunked(est, problem, theta, state, specs, keys, method == "sampled")
    g, est_g, grads, hvps, bad = (x.reshape((n_chunks * chunk,) + x.shape[2:])[:rows] for x in out)
    finite = ~bad & jnp.all(jnp.isfinite(g), -1) & jnp.all(jnp.isfinite(est_g), (-2, -1))
    return EstimatorSamples(g, est_g, grads, hvps, weight, finite, method, est.name)


def _frob2_gram(z: np.ndarray) -> float:
    """||Z^T Z||_F^2 = ||Z Z^T||_F^2, from the smaller Gram matrix."""
    gram = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z
    return float(np.sum(gram**2))


def estimator_moments_of(samples: EstimatorSamples) -> EstimatorMoments:
    """`EstimatorMoments` of samples already computed (host arithmetic in float64).

    Exact mode: tasks are weighted by their probabilities and the only noise is the keys', so SEs come from
    the within-task spread over K keys (sum_i w_i^2 Var_k(.) / K). Sampled mode: tasks are i.i.d., SEs are
    sd over tasks of per-task means / sqrt(n_eff). Rows not finite are excluded and the weights renormalised.
    SEs of the variance parts use first-order (delta-method) approximations; they are good when K and the
    number of tasks are large.
    """
    ok = np.asarray(samples.finite, bool)
    if not ok.any():
        raise UserError(f"{samples.name}: every task row diverged or is not finite; nothing to estimate")
    g = np.asarray(samples.g, np.float64)[ok]
    est = np.asarray(samples.est, np.float64)[ok]
    calls = [np.asarray(c, np.float64)[ok] for c in (samples.grad_calls, samples.hvp_calls)]
    w = np.asarray(samples.weight, np.float64)[ok]
    w = w / w.sum()
    n, k = est.shape[0], est.shape[1]
    sampled = samples.method == "sampled"
    if sampled and n < 2:
        raise UserError(f"{samples.name}: sampled mode needs at least 2 finite task draws, got {n}")

    def mean_se(x):
        """x: [n, K, ...] per (task, key): the weighted mean over tasks of the key means, and its SE."""
        xbar = x.mean(1)
        mean = np.tensordot(w, xbar, 1)
        if sampled:
            se = np.sqrt(np.tensordot(w, (xbar - mean) ** 2, 1) / (n - 1))
        else:
            se = np.sqrt(np.tensordot(w**2, x.var(1, ddof=1), 1) / k)
        return mean, se

    err = est - g[:, None, :]  # G_hat - G
    bias, bias_se = mean_se(err)
    # Cov(b_hat) = Z^T Z: over tasks (sampled) or over keys within tasks (exact).
    if sampled:
        z = (err.mean(1) - bias) * np.sqrt(w / (n - 1))[:, None]
    else:
        z = ((err - err.mean(1, keepdims=True)) * np.sqrt(w**2 / (k * (k - 1)))[:, None, None]).reshape(n * k, -1)
    tr_cov = float(np.sum(z**2))
    bias2 = float(bias @ bias) - tr_cov
    bias2_se = math.sqrt(max(4 * float(np.sum((z @ bias) ** 2)) + 2 * _frob2_gram(z), 0.0))
    mse, mse_se = mean_se(np.sum(err**2, -1))

    m_hat = est.mean(1)  # m_T estimated from K keys
    dev = est - m_hat[:, None, :]
    d = np.sum(dev**2, -1) * k / (k - 1)  # mean over keys: the unbiased tr Cov_key(G_hat | T)
    var_est, var_est_se = mean_se(d)
    y = d.mean(1)
    m_bar = w @ m_hat
    spread = np.sum((m_hat - m_bar) ** 2, -1)
    if sampled:  # E[(n/(n-1)) sum_i w_i ||m_hat_i - m_bar||^2] = var_task + E[y]/K
        u = n / (n - 1) * spread - y / k
        var_task = float(np.mean(u))
        var_task_se = float(np.std(u, ddof=1) / math.sqrt(n))
    else:  # E[sum_i w_i ||m_hat_i - m_bar||^2] = var_task + sum_i w_i (1 - w_i) y_i / K
        var_task = float(w @ spread - w @ ((1 - w) * y) / k)
        proj = np.einsum("nks,ns->nk", est, m_hat - m_bar)  # delta method: d/dm_hat_i = 2 w_i (m_hat_i - m_bar)
        var_task_se = float(np.sqrt(np.sum(4 * w**2 * proj.var(1, ddof=1) / k)))
    (grads, grads_se), (hvps, hvps_se) = (mean_se(c) for c in calls)
    return EstimatorMoments(
        bias=bias, bias_se=bias_se, bias2=bias2, bias2_se=bias2_se,
        var_task=var_task, var_task_se=var_task_se, var_est=float(var_est), var_est_se=float(var_est_se),
        mse=float(mse), mse_se=float(mse_se),
        grad_calls=float(grads), grad_calls_se=float(grads_se), hvp_calls=float(hvps), hvp_calls_se=float(hvps_se),
        meta_grad=w @ g, n=int(n), n_keys=int(k), n_diverged=int((~ok).sum()), method=samples.method,
        name=samples.name,
    )


def estimator_moments(problem: Problem, estimator, theta: PyTree | None = None, n_tasks: int | None = None,
                      n_keys: int = 2, key=None, *, state=None, method: str = "auto",
                      chunk_size: int = 256) -> EstimatorMoments:
    """Bias (vector and squared norm), variance (task part and the estimator's own), MSE and mean counted
    calls of any registered estimator against the exact G of the same task, at one theta.

    ``estimator_moments_of(estimator_samples(...))``; the arguments are `estimator_samples`'. Exact over a
    finite task set (``method="auto"``): every task, K keys each, SEs from the keys alone (0 for a
    deterministic estimator). Example::

        m = montecarlo.estimator_moments(problem, "ufom", theta, n_keys=1000, key=jax.random.PRNGKey(0))
        m.var_est   # ~ (1/q - 1) D^2(theta) for UFOM (Lemma 1's per-task identity)
    """
    return estimator_moments_of(estimator_samples(problem, estimator, theta, n_tasks, n_keys, key, state=state,
                                                  method=method, chunk_size=chunk_size))


__all__ += ["EstimatorSamples", "EstimatorMoments", "estimator_samples", "estimator_moments", "estimator_moments_of"]
