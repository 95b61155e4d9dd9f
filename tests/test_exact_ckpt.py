"""exact_ckpt (binomial checkpointing, m stored states) and ufom/adaptive_ufom with checkpoints=m: equal to
`exact`, counts equal to t(r + 1, m) of theory.checkpointing per branch, memory constant in r, bad m named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import theory
from helpers import flat, pytree_problem
from test_estimators import _nonlinear_problem
from ufom_bench import estimators as E
from ufom_bench import problems
from ufom_bench.errors import UserError
from ufom_bench.estimators.exact_ckpt import split
from ufom_bench.memory import temp_bytes
from ufom_bench.problem import task_at

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64

KEY = jax.random.PRNGKey(0)


def _close(a, b, rel=1e-10):
    a, b = flat(a), flat(b)
    assert float(jnp.max(jnp.abs(a - b))) <= rel * float(jnp.max(jnp.abs(b))), (a, b)


def _run(est, problem, task, key=KEY, state=()):
    g, info, _ = jax.jit(est.estimate)(problem, problem.theta0, task, key, state)
    return g, info


def _key_with_xi(q, xi):
    """A PRNG key whose Bernoulli(q) coin is xi (the coin of ufom_step)."""
    for i in range(1000):
        key = jax.random.PRNGKey(i)
        if bool(jax.random.bernoulli(key, q)) == bool(xi):
            return key
    raise AssertionError("no key")


R = 7


@pytest.mark.parametrize("m", [1, 2, 3, R - 1, R, R + 2])
def test_equals_exact_on_pytree_problem(m):
    """Pytree theta and phi, V nonlinear in theta, varying step sizes."""
    problem = pytree_problem(r=R)
    task = task_at(problem, 2)
    g, info = _run(E.exact_ckpt(m), problem, task)
    want, want_info = _run(E.exact(), problem, task)
    _close(g, want)
    assert bool(info.exact) and float(info.q) == 1.0
    assert bool(info.finite) and not bool(info.diverged)
    assert bool(info.diverged) == bool(want_info.diverged)


@pytest.mark.parametrize("m", [1, 2, 3, 5, 11, 12, 20])
def test_equals_exact_on_quadratic(m):
    """V(theta, T) = E theta + v depends on theta; r = 12."""
    problem = problems.quadratic(p=5, n_tasks=2, r=12, alpha=0.5)
    task = task_at(problem, 1)
    _close(_run(E.exact_ckpt(m), problem, task)[0], _run(E.exact(), problem, task)[0])


# (r, m) grid: m = 1, 2, 3, log2 r, sqrt r, r - 1, r, > r, and r = 1.
COUNT_GRID = [(1, 1), (1, 3), (2, 1), (2, 2), (5, 2), (10, 1), (10, 2), (10, 3), (10, 9), (10, 10), (10, 15),
              (40, 2), (40, 5), (40, 6), (64, 3), (64, 8)]


@pytest.mark.parametrize("r, m", COUNT_GRID)
def test_counts_equal_theory(r, m):
    """grads = 1 + t(r + 1, m) (Griewank's closed form), HVPs = r, exactly."""
    problem = problems.counterexample(r=r, alpha=0.05)
    task = problem.sample_task(KEY)
    _, info = _run(E.exact_ckpt(m), problem, task)
    assert (int(info.grad_calls), int(info.hvp_calls)) == theory.checkpointed_calls(r, m)
    # the closed form at l = r (the reversal from phi_{r-1}, no outer step) undercounts by rho >= 1: the
    # comparison can fail
    assert int(info.grad_calls) != 1 + theory.forward_steps(r, min(m, r))


@pytest.mark.parametrize("r", [1, 6, 13])
def test_ends_are_exact_me_and_algorithm_2(r):
    """m = 1 counts as exact_me, m >= r as exact (Algorithm 2)."""
    problem = problems.counterexample(r=r, alpha=0.05)
    task = problem.sample_task(KEY)
    calls = lambda est: tuple(int(x) for x in _run(est, problem, task)[1][:2])
    assert calls(E.exact_ckpt(1)) == calls(E.exact_me()) == (r + 1 + r * (r - 1) // 2, r)
    assert calls(E.exact_ckpt(r)) == calls(E.exact_ckpt(r + 5)) == calls(E.exact()) == (r + 1, r)


@pytest.mark.parametrize("m", [1, 3, 8])
def test_ufom_with_checkpoints_per_branch(m):
    """ufom(q, checkpoints=m): xi = 0 is FOM (r + 1 grads); xi = 1 costs exact_ckpt's calls and gives
    b_FO + (b_Exact - b_FO) / q with exact's b_Exact."""
    problem, q = pytree_problem(r=R), 0.25
    task = task_at(problem, 1)
    est = E.ufom(q, checkpoints=m)
    g0, i0 = _run(est, problem, task, _key_with_xi(q, 0))
    g1, i1 = _run(est, problem, task, _key_with_xi(q, 1))
    fo, exact = _run(E.fom(), problem, task)[0], _run(E.exact(), problem, task)[0]
    assert (int(i0.grad_calls), int(i0.hvp_calls), bool(i0.exact)) == (*theory.checkpointing.branch_calls(R, m, 0), False)
    assert (int(i1.grad_calls), int(i1.hvp_calls), bool(i1.exact)) == (*theory.checkpointing.branch_calls(R, m, 1), True)
    _close(g0, fo)
    _close(g1, jax.tree_util.tree_map(lambda f, e: f + (e - f) / q, fo, exact))


def test_ufom_without_checkpoints_unchanged():
    """checkpoints=None is Algorithm 4 as before: the same program as ufom(q) (bit-identical), exact_me's counts."""
    problem, q = pytree_problem(r=R), 0.25
    task = task_at(problem, 3)
    for xi in (0, 1):
        key = _key_with_xi(q, xi)
        (g, info), (h, jnfo) = _run(E.ufom(q), problem, task, key), _run(E.ufom(q, checkpoints=None), problem, task, key)
        assert np.array_equal(flat(g), flat(h)) and all(np.array_equal(a, b) for a, b in zip(info, jnfo))
        assert (int(info.grad_calls), int(info.hvp_calls)) == tuple(int(x) for x in theory.branch_calls(R, xi))
    assert E.ufom(q).name == "ufom(q=0.25)" and E.ufom(q, checkpoints=2).name == "ufom(q=0.25, m=2)"


@pytest.mark.parametrize("m", [1, 4])
def test_adaptive_ufom_with_checkpoints(m):
    """The exact branch's counts are exact_ckpt's; q* uses C_rnd(r, m); the state updates as without."""
    problem = pytree_problem(r=R)
    task = task_at(problem, 0)
    est = E.adaptive_ufom(q_min=0.5, checkpoints=m)
    key = _key_with_xi(0.5, 1)
    g, info, state = jax.jit(est.estimate)(problem, problem.theta0, task, key, est.init(problem.theta0))
    assert (int(info.grad_calls), int(info.hvp_calls)) == theory.checkpointed_calls(R, m)
    assert int(state.k_upd) == 1
    ref = E.adaptive_ufom(q_min=0.5)
    g_ref, _, state_ref = jax.jit(ref.estimate)(problem, problem.theta0, task, key, ref.init(problem.theta0))
    _close(g, g_ref)
    _close(state.d2_sm, state_ref.d2_sm)


def test_vmap_over_tasks():
    """Under vmap (batched theta and tasks; the schedule's integers stay unbatched) each row is its own estimate."""
    problem = pytree_problem(r=5)
    est = E.exact_ckpt(2)
    tasks = problem.tasks
    g, info, _ = jax.jit(jax.vmap(lambda t: est.estimate(problem, problem.theta0, t, KEY, ())))(tasks)
    for i in range(problem.num_tasks):
        _close(jax.tree_util.tree_map(lambda x: x[i], g), _run(E.exact(), problem, task_at(problem, i))[0])
    assert np.all(np.asarray(info.grad_calls) == theory.checkpointed_calls(5, 2)[0])


def test_divergence_flag_as_exact():
    """The first sweep's PathCheck: an unstable inner loop (|1 - alpha lambda| > 1) is flagged as by exact."""
    problem = problems.quadratic(p=4, n_tasks=1, r=30, alpha=2.5)
    task = task_at(problem, 0)
    (_, a), (_, b) = _run(E.exact_ckpt(3), problem, task), _run(E.exact(), problem, task)
    assert bool(a.diverged) and bool(b.diverged) and bool(a.finite) == bool(b.finite)


def test_split_on_device_matches_python():
    """The jnp split rule (traced, vmapped) equals theory.checkpointing.split for l <= 80, s <= 6."""
    ls, ss = np.meshgrid(np.arange(2, 81), np.arange(2, 7), indexing="ij")
    got = jax.jit(jax.vmap(split))(jnp.asarray(ls.ravel(), jnp.int32), jnp.asarray(ss.ravel(), jnp.int32))
    want = [theory.checkpointing.split(int(a), int(b)) for a, b in zip(ls.ravel(), ss.ravel())]
    assert np.array_equal(np.asarray(got), want)


def _temp(m, r):
    problem, task = _nonlinear_problem(r)
    return temp_bytes(E.exact_ckpt(m).estimate, problem, problem.theta0, task, KEY, ())


def test_memory_constant_in_r_and_grows_with_m():
    """XLA temp bytes at r = 100 and 1000 within 1% for fixed m; at least one stored phi (p = 64 floats) per
    extra checkpoint."""
    temps = {}
    for m in (1, 2, 8):
        temps[m] = small, large = _temp(m, 100), _temp(m, 1000)
        assert abs(large - small) <= 0.01 * small, (m, small, large)
    itemsize = jnp.dtype(jnp.result_type(float)).itemsize
    assert temps[2][0] - temps[1][0] >= 64 * itemsize
    assert temps[8][0] - temps[2][0] >= 6 * 64 * itemsize


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_bad_checkpoints_named(bad):
    with pytest.raises(UserError, match=f"checkpoints = {bad!r}"):
        E.exact_ckpt(bad)
    if bad is not None:  # None is ufom's default (no checkpointing)
        with pytest.raises(UserError, match=f"checkpoints = {bad!r}"):
            E.ufom(0.5, checkpoints=bad)
        with pytest.raises(UserError, match=f"checkpoints = {bad!r}"):
            E.adaptive_ufom(checkpoints=bad)


def test_registered():
    est = E.get("exact_ckpt", checkpoints=3)
    assert est.name == "exact_ckpt(m=3)" and "exact_ckpt" in E.names()
