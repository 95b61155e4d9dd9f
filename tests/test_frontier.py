"""The frontier: its smoke run through the sweep, the shared-pair derivation of the UFOM family, theory.zoo's cost
formulas against the counters, and analysis.pareto_front / analysis.recommend on hand-made tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ufom_bench import simulations
from ufom_bench.simulations import frontier as frontier_sim
from ufom_bench import theory
from ufom_bench.theory import zoo
from ufom_bench import analysis, estimators, frontier, montecarlo, problems
from ufom_bench.errors import UserError

pytestmark = pytest.mark.usefixtures("x64")  # the pair derivation is compared exactly, in float64

COLUMNS = {"problem", "point", "point_calls", "problem_name", "estimator", "setting", "label", "bias2", "bias2_se", "var_task", "var_task_se",
           "var_est", "var_est_se", "mse", "mse_se", "rel_mse", "sgd_error", "grad_calls", "hvp_calls", "calls",
           "theory_grad_calls", "theory_hvp_calls", "calls_formula", "memory_class", "temp_bytes", "seconds",
           "not_applicable", "r", "dim_theta", "n", "n_keys", "method"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return simulations.run("frontier", "smoke", str(tmp_path_factory.mktemp("results")), progress=False)


def test_smoke_through_the_sweep(smoke, tmp_path_factory):
    assert COLUMNS <= set(smoke.columns)
    s = frontier_sim.SCALES["smoke"]
    n_settings = len(frontier_sim.settings("smoke", "counterexample", 10))
    assert len(smoke) == n_settings * len(s["problems"]) * len(s["points"])
    # one row per setting at every point; the training points are later in the run than theta0
    assert sorted(smoke["point"].unique()) == sorted(s["points"]) == ["theta0", "train_1"]
    calls = smoke.groupby("point")["point_calls"].agg(["min", "max"])
    assert calls.loc["theta0", "max"] == 0 and calls.loc["train_1", "min"] > 0
    ok = smoke[smoke["not_applicable"] == ""]
    # counted calls equal the formula's (exact mode, deterministic counts; ufom's are averaged over its coins)
    det = ok[ok["estimator"] != "ufom"]
    np.testing.assert_array_equal(det["grad_calls"], det["theory_grad_calls"])
    np.testing.assert_array_equal(det["hvp_calls"], det["theory_hvp_calls"])
    at0 = ok[ok["point"] == "theta0"]
    assert (at0["temp_bytes"] > 0).all() and (at0["seconds"] > 0).all()
    assert ok[ok["point"] != "theta0"]["seconds"].isna().all()  # the cost is measured at theta0 only
    fom = ok[ok["estimator"] == "fom"].iloc[0]
    assert fom["var_est"] < 1e-20 and fom["bias2"] > 0 and fom["memory_class"] == "O(1)"  # 0 up to rounding
    na = smoke[smoke["estimator"] == "neumann"].iloc[0]  # theta enters the counterexample only through V
    assert "needs theta" in na["not_applicable"] and np.isnan(na["mse"])
    # the checkpointed exact branch: O(sqrt r) memory (m = 2 <= ceil(sqrt 10)), exact_ckpt's exact count
    ck = ok[ok["label"] == "exact_ckpt(checkpoints=2)"]
    assert (ck["memory_class"] == "O(sqrt r)").all() and (ck["grad_calls"] == 1 + theory.forward_steps(11, 2)).all()
    assert (ok[ok["label"] == "ufom(checkpoints=2, q=0.1)"]["memory_class"] == "O(sqrt r)").all()


def test_frontier_points_and_problems_are_checked():
    with pytest.raises(UserError, match="'train_9'"):
        frontier_sim.cell_frontier({"scale": "smoke", "problem": "quadratic", "point": "train_9", "seed": 0},
                                   frontier_sim.Workspace())
    with pytest.raises(UserError, match="'cifar'"):
        frontier_sim.build("cifar", "smoke")
    # every scale's settings give all three memory budgets on r = 10 (the recommendation's O(1), O(sqrt r), O(r))
    for scale in ("default", "paper"):
        for name in frontier_sim.PROBLEMS:
            classes = {zoo.memory_class(zoo.stored_states(n, 10, **p), 10)
                       for n, p in frontier_sim.settings(scale, name, 10)}
            assert classes == set(zoo.MEMORY_CLASSES), (scale, name)


@pytest.mark.parametrize("name", ["hypercleaning", "fewshot", "fewshot_head"])
def test_new_problems_build(name):
    """The new frontier problems at the smoke scale: hypercleaning (one task, theta = example weights), few-shot
    (MAML: V = theta) and few-shot with the head-only inner loop (V = theta's head, phi smaller than theta)."""
    prob = frontier_sim.build(name, "smoke")
    theta_dim = sum(x.size for x in jax.tree_util.tree_leaves(prob.theta0))
    task = prob.sample_task(jax.random.PRNGKey(0))
    phi_dim = sum(x.size for x in jax.tree_util.tree_leaves(prob.init_inner(prob.theta0, task)))
    if name == "hypercleaning":
        assert prob.num_tasks == 1 and theta_dim == frontier_sim.SCALES["smoke"]["hypercleaning"]["n_train"]
    elif name == "fewshot":
        assert prob.tasks is None and phi_dim == theta_dim
    else:
        assert prob.tasks is None and phi_dim == 16 * 3 + 3 < theta_dim and prob.name.endswith("mlp-head/3w1s")
    assert prob.r == frontier_sim.SCALES["smoke"][name.split("_")[0]]["r"]


@pytest.mark.slow  # compiles every setting on a few-shot network; test_head_only_inner_loop[mlp] checks the problem
def test_smoke_cell_on_fewshot_head():
    """One smoke cell on the head-only few-shot problem, at a training point: reptile is not defined there
    (V != theta) and keeps its row; the estimators' counts are the formulas' (pzobo exactly; the pair family's
    exact counts from the coins); the training point moved theta."""
    ws = frontier_sim.Workspace()
    cfg = {"scale": "smoke", "problem": "fewshot_head", "point": "train_1", "seed": 0}
    rows = frontier_sim.cell_frontier(cfg, ws)
    assert list(rows["label"]) == [frontier.label(n, p) for n, p in frontier_sim.settings("smoke", "fewshot_head", 3)]
    assert (rows["point_calls"] > 0).all() and (rows["r"] == 3).all()
    ok = rows[rows["not_applicable"] == ""]
    assert len(ok) == len(rows)  # neumann is defined here: theta enters dL_in/dphi
    det = ok[~ok["estimator"].isin(["ufom"])]
    np.testing.assert_array_equal(det["grad_calls"], det["theory_grad_calls"])
    np.testing.assert_array_equal(det["hvp_calls"], det["theory_hvp_calls"])
    theta, _ = ws.point("fewshot_head", "smoke", "train_1")
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), theta, ws.entry("fewshot_head", "smoke")["problem"].theta0)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    assert np.isfinite(ok["rel_mse"]).all() and ok["seconds"].isna().all()  # timed at theta0 only


def test_pair_derivation_equals_the_estimators():
    """fom and exact from the shared pairs equal their own estimates, exactly (float64, both tasks)."""
    prob = problems.counterexample(r=5)
    pair = montecarlo.gradient_samples(prob, prob.theta0)
    key = jax.random.PRNGKey(0)
    for name in ("fom", "exact"):
        derived = frontier.pair_estimator_samples(pair, name, {}, prob.r, 2, key)
        own = montecarlo.estimator_samples(prob, name, n_keys=2, key=key)
        np.testing.assert_allclose(derived.est, np.asarray(own.est), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(derived.grad_calls, np.asarray(own.grad_calls))
        np.testing.assert_array_equal(derived.hvp_calls, np.asarray(own.hvp_calls))


def test_pair_derived_checkpointed_counts_are_exact():
    """exact_ckpt(m) and ufom(q, checkpoints=m) from the shared pairs: G itself (equal to exact_ckpt's own estimate
    up to rounding, float64) with exact_ckpt's counts 1 + t(r + 1, m) grads and r HVPs; ufom's count per coin is
    r + 1 grads (xi = 0) or exact_ckpt's (xi = 1), exactly what the estimator's own counters give per coin, and its
    estimate is G_FO + (xi / q)(G - G_FO) with xi read from the counts."""
    prob = problems.counterexample(r=6)
    r, key = prob.r, jax.random.PRNGKey(0)
    pair = montecarlo.gradient_samples(prob, prob.theta0)
    for m in (2, 3):
        want = (1 + theory.forward_steps(r + 1, m), r)
        derived = frontier.pair_estimator_samples(pair, "exact_ckpt", {"checkpoints": m}, r, 2, key)
        own = montecarlo.estimator_samples(prob, estimators.exact_ckpt(m), n_keys=2, key=key)
        np.testing.assert_allclose(derived.est, np.asarray(own.est), rtol=1e-12, atol=1e-14)
        assert (derived.grad_calls == want[0]).all() and (derived.hvp_calls == want[1]).all()
        assert (np.asarray(own.grad_calls) == want[0]).all() and (np.asarray(own.hvp_calls) == want[1]).all()
        assert zoo.calls("exact_ckpt", r, checkpoints=m) == want
        q = 0.4
        d = frontier.pair_estimator_samples(pair, "ufom", {"q": q, "checkpoints": m}, r, 64, key)
        xi = d.hvp_calls == r
        assert 0 < xi.mean() < 1 and ((d.hvp_calls == 0) | xi).all()
        np.testing.assert_array_equal(d.grad_calls, np.where(xi, want[0], r + 1))
        g_fo, g = np.asarray(pair.g_fo)[:, None, :], np.asarray(pair.g)[:, None, :]
        np.testing.assert_allclose(d.est, g_fo + (xi / q)[..., None] * (g - g_fo), rtol=1e-12, atol=1e-14)
        # the estimator's own counters, per coin, are the same branch counts
        est = jax.jit(estimators.ufom(q=q, checkpoints=m).estimate)
        task = prob.sample_task(key)
        seen = set()
        for i in range(12):
            _, info, _ = est(prob, prob.theta0, task, jax.random.PRNGKey(i), ())
            branch = theory.checkpointing.branch_calls(r, m, bool(info.exact))
            assert (int(info.grad_calls), int(info.hvp_calls)) == branch
            seen.add(bool(info.exact))
        assert seen == {True, False}
        # the expected count is Proposition 1's form with exact_ckpt's branch, and the memory class O(sqrt r) at m = 2
        assert zoo.calls("ufom", r, q=q, checkpoints=m) == pytest.approx(
            ((1 - q) * (r + 1) + q * want[0], q * r), rel=1e-15)
    assert zoo.memory_class(zoo.stored_states("ufom", 10, q=0.1, checkpoints=4), 10) == "O(sqrt r)"
    assert zoo.memory_class(zoo.stored_states("ufom", 10, q=0.1, checkpoints=5), 10) == "O(r)"
    assert zoo.stored_states("ufom", 10, q=0.1) == 1 and zoo.calls("ufom", 10, q=0.1, checkpoints=1) == zoo.calls(
        "ufom", 10, q=0.1)  # m = 1 is Algorithm 4's recomputation
    assert zoo.calls_text("ufom", checkpoints=2) == "r + 1 + q (-r + t(r + 1, Min(m, r))) grads + q r HVPs"


def test_pair_derived_ufom_variance_is_lemma_1():
    """ufom(q) derived from the pairs: E_T tr Cov_xi = (1/q - 1) E_T ||G_FO - G||^2 (Lemma 1's identity), |z| < 4
    with 4000 coins per task on the counterexample's two tasks; the same samples against the formula at 2q (the
    wrong scale) give |z| > 4."""
    prob = problems.counterexample()
    theta = jnp.asarray(5.0)
    pair = montecarlo.gradient_samples(prob, theta)
    d2 = float(montecarlo.moments(prob, theta).d2)
    q = 0.3
    m = montecarlo.estimator_moments_of(
        frontier.pair_estimator_samples(pair, "ufom", {"q": q}, prob.r, 4000, jax.random.PRNGKey(1)))
    assert abs(m.var_est - (1 / q - 1) * d2) / m.var_est_se < 4
    assert abs(m.var_est - (1 / (2 * q) - 1) * d2) / m.var_est_se > 4
    assert abs(m.bias2) / m.bias2_se < 4  # unbiased


@pytest.mark.parametrize("name", estimators.names())
def test_zoo_costs_equal_the_counters(name):
    """One estimate's counted calls equal theory.zoo's formula (per coin for ufom and adaptive_ufom), exactly."""
    prob = problems.quadratic(p=3, n_tasks=2, r=4)
    theta, task = prob.theta0, prob.sample_task(jax.random.PRNGKey(0))
    params = {"ufom": {"q": 0.5}, "truncated": {"k": 2}, "pzobo": {"n_dirs": 3}, "forward_gradient": {"n_dirs": 2},
              "es": {"n_dirs": 2}, "implicit_cg": {"iters": 4}, "neumann": {"terms": 3}}.get(name, {})
    est = estimators.get(name, **params)
    if estimators.not_applicable(est, prob, theta, task):
        prob = problems.counterexample(r=4)
        theta, task = prob.theta0, prob.sample_task(jax.random.PRNGKey(0))
    for i in range(4):
        _, info, _ = est.estimate(prob, theta, task, jax.random.PRNGKey(i), est.init(theta))
        if name in ("ufom", "adaptive_ufom"):
            want = zoo.calls("exact_me" if bool(info.exact) else "fom", prob.r)
        else:
            want = zoo.calls(name, prob.r, **params)
        assert (int(info.grad_calls), int(info.hvp_calls)) == want


def test_zoo_expected_ufom_cost_is_proposition_1():
    assert zoo.calls("ufom", 10, q=0.1) == (11 + 0.1 * 45, 1.0)
    assert zoo.calls("adaptive_ufom", 10) == (11 + 0.05 * 45, 0.5)  # q_min at the initial state
    assert zoo.calls("truncated", 10, k=10) == zoo.calls("exact", 10)
    assert zoo.calls_text("ufom") == "r + 1 + q r*(r - 1)/2 grads + q r HVPs"
    with pytest.raises(ValueError, match="nope"):
        zoo.calls("nope", 10)


def test_memory_class():
    assert [zoo.memory_class(zoo.stored_states(n, 100, **p), 100) for n, p in
            [("fom", {}), ("truncated", {"k": 10}), ("truncated", {"k": 11}), ("exact", {})]] == [
        "O(1)", "O(sqrt r)", "O(r)", "O(r)"]
    assert zoo.MEMORY_CLASSES == analysis.MEMORY_CLASSES


def test_pareto_front_hand_made():
    t = pd.DataFrame({"problem": ["a"] * 5 + ["b"] * 2, "label": ["p", "q", "r", "s", "t", "u", "v"],
                      "calls": [10, 20, 20, 30, 5, 1, 2], "mse": [5.0, 1.0, 2.0, 1.0, 9.0, 1.0, 1.0]})
    front = analysis.pareto_front(t)
    on = dict(zip(front["label"], front["pareto"]))
    # a: t (cheapest), p, q are on the front; r (dominated by q), s (by q) are not. b: v is dominated by u.
    assert on == {"t": True, "p": True, "q": True, "r": False, "s": False, "u": True, "v": False}
    assert list(front[front["problem"] == "a"]["calls"]) == sorted(t[t["problem"] == "a"]["calls"])
    with pytest.raises(UserError, match="seconds"):
        analysis.pareto_front(t, cost="seconds")


def _table():
    # problem "a": fom cheap but too wrong; ufom meets with a noisy cost; exact is O(r); trunc meets in O(sqrt r)
    return pd.DataFrame({
        "problem": "a",
        "label": ["fom", "ufom", "ufom2", "trunc", "exact"],
        "memory_class": ["O(1)", "O(1)", "O(1)", "O(sqrt r)", "O(r)"],
        "calls": [11.0, 15.5, 16.0, 14.0, 21.0],
        "calls_se": [0.0, 0.4, 0.0, 0.0, 0.0],
        "mse": [3.0, 0.5, 0.5, 0.2, 0.0],
        "mse_se": [0.0, 0.1, 0.1, 0.01, 0.0],
    })


def test_recommend_hand_made():
    rec = analysis.recommend(_table(), targets=[1.0, 0.1, 0.6])
    assert list(rec.columns) == list(analysis.RECOMMEND_COLUMNS)
    get = lambda target, budget: rec[(rec["target"] == target) & (rec["memory_budget"] == budget)].iloc[0]
    # target 1: in O(1), ufom (15.5 +- 0.78) and ufom2 (16) overlap: no significant difference
    r = get(1.0, "O(1)")
    assert (r["estimator"], r["runner_up"], r["verdict"], r["significant"]) == (
        "ufom", "ufom2", "no significant difference", False)
    # in O(sqrt r), trunc (14, exact count) is cheaper than ufom, and their intervals do not overlap
    r = get(1.0, "O(sqrt r)")
    assert (r["estimator"], r["runner_up"], r["verdict"]) == ("trunc", "ufom", "cheapest")
    # target 0.1: only exact meets it (0.2 + 1.96 * 0.01 > 0.1), available only with an O(r) budget
    assert get(0.1, "O(1)")["verdict"] == get(0.1, "O(sqrt r)")["verdict"] == "none meets the target"
    assert (get(0.1, "O(r)")["estimator"], get(0.1, "O(r)")["verdict"]) == ("exact", "only one meets the target")
    # target 0.6: ufom's upper bound 0.5 + 1.96 * 0.1 = 0.696 > 0.6 does not count as meeting it
    assert get(0.6, "O(1)")["verdict"] == "none meets the target"


def test_recommend_checks_its_input():
    with pytest.raises(UserError, match="memory_class"):
        analysis.recommend(_table().drop(columns="memory_class"), [1.0])
    with pytest.raises(UserError, match="O\\(r\\^2\\)"):
        analysis.recommend(_table().assign(memory_class="O(r^2)"), [1.0])


def test_zoo_table_layout():
    """benchmarks.zoo's table from hand-made measurements: one row per registered estimator, formulas from
    theory.zoo, "n/a" where a setting is not defined, value +- SE elsewhere (nothing is measured here)."""
    from benchmarks import zoo as zoo_bench

    names = [name for name, _ in zoo_bench.settings()]
    assert names == estimators.names()
    row = {"bias2": 1.0, "bias2_se": 0.5, "var_task": 2.0, "var_task_se": 0.0, "var_est": 3.0, "var_est_se": 0.1,
           "method": "exact", "n": 8, "n_keys": 4}
    moments = {"quadratic": [{**row, "not_applicable": "reptile needs V" if n == "reptile" else ""} for n in names]}
    mem = {(n, r): ("n/a: why" if n == "neumann" else 1000) for n in names for r in (10, 100)}
    t = zoo_bench.table(moments, mem, (10, 100))
    assert len(t) == len(names)
    by = t.set_index("estimator")
    assert by.loc["fom", "calls (grads + HVPs)"] == "r + 1 grads" and by.loc["fom", "calls at r = 10"] == "11"
    assert by.loc["ufom(q=0.1)", "calls at r = 10"] == "16.50"
    assert by.loc["reptile", "quadratic: bias^2"] == "n/a" and by.loc["fom", "quadratic: bias^2"] == "1 +- 0.5"
    assert by.loc["neumann(terms=10)", "temp bytes r = 100"] == "n/a" and by.loc["fom", "temp bytes r = 10"] == "1,000"
    assert any("n/a: why" in line for line in zoo_bench.notes(moments, mem))


def test_compare_on_a_problem():
    """frontier.compare: rows for every setting (reptile's reason kept), a front and a recommendation; on the
    counterexample exact is the only one with zero error, so it alone meets a tiny target."""
    prob = problems.counterexample(r=4)
    out = frontier.compare(prob, [("fom", {}), ("exact", {}), ("ufom", {"q": 0.5}), ("implicit_cg", {})],
                           targets=[1e-9], n_keys=64, key=jax.random.PRNGKey(0), timing=False)
    assert list(out.rows["label"]) == ["fom", "exact", "ufom(q=0.5)", "implicit_cg"]
    assert "needs theta" in out.rows["not_applicable"].iloc[3]
    assert set(out.front["label"]) == {"fom", "exact", "ufom(q=0.5)"} and out.front["pareto"].any()
    rec = out.recommendation.set_index("memory_budget")
    assert rec.loc["O(1)", "verdict"] == "none meets the target"
    assert (rec.loc["O(r)", "estimator"], rec.loc["O(r)", "verdict"]) == ("exact", "only one meets the target")
