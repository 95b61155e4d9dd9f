"""Table 2 of the UFOM paper (Section 5.3): few-shot image classification (MAML as ABLO) at equal function calls.

One training cell = (setting, estimator, seed), a setting = (source, m ways), always 1-shot with one query
example per class (the paper's protocol: s = mK, t = m). One Monte Carlo cell per setting measures FOM's bias
D^2, the exact gradient's second moment V^2 and UFOM's variance across alpha, r and q at thetas taken along a
training run (``kind="mc"``).

**Estimators** (``ESTIMATORS``): ``exact_me`` (memory-efficient exact, Proposition 1 with q = 1), ``fom``
(Algorithm 3), ``reptile`` (Nichol et al. 2018) and ``adaptive_ufom`` (Section 4.5; q_min = 0.05, beta = 0.99,
d2_scale = 0.1, as the paper reports for both Sections 5.2 and 5.3). Every estimator is averaged over a
meta-batch of B tasks with `estimators.meta_batch` (vmapped), with one coin xi per meta-step
(``shared_key=True``): under vmap the exact branch then stays a real ``lax.cond`` branch, so wall time follows
the counted calls; Adaptive UFOM's running D^2/V^2 are the meta-batch means of the per-task quantities.

**Equal budgets.** Function calls = grad calls + HVPs (DESIGN.md; the paper's C1 = C2 = 1). The budget is
``exact_steps`` meta-steps of exact_me: exact_steps * B * (r + 1 + r(r-1)/2 + r) calls (the released code
wrote meta_iters * B * (r + 1 + r(r-1)/2), leaving out the r HVPs). A meta-step is taken while the calls spent
are below the budget, so the last one may overshoot by one meta-step (recorded). Per meta-step: exact_me
B (r + 1 + r(r-1)/2 + r) calls, FOM B (r + 1), Reptile B r (no outer gradient), Adaptive UFOM
B (r + 1) + xi B (r(r-1)/2 + r).

**Outer optimizer** (the same for every estimator): Adam (optax ``scale_by_adam``, b1 = 0.9, b2 = 0.999,
eps = 1e-8) with a step size annealed linearly to 0 *over the budget of calls*, lr_k = lr (1 - calls/budget)
(the released code annealed its outer step 0.1 linearly to 0 over meta-iterations; annealing by calls gives
every estimator the same schedule against the x-axis of Figure 2, and Adaptive UFOM's number of meta-steps is
random). No gradient clipping (the released code clipped at 0.1; Adam's update is already bounded by ~lr).
Diverged estimates (a non-finite or runaway inner loop, `Info.diverged`) are refused and counted.

**Reptile's outer step** (convention): Reptile's direction G_Rep = theta - phi_r (``reptile(scale="none")``,
Nichol et al.'s raw difference, not divided by sum(alpha)) is handed to the same Adam as if it were a
gradient, as Nichol et al. (2018, Section 3) suggest ("treat theta - phi as a gradient and plug it into an
optimizer like Adam"). Adam is invariant to a constant rescaling of its input (up to eps), so the
``sum_alpha`` scaling would give the same updates; only lr matters, and it is chosen like the others'.

**Outer step sizes** were chosen on the *validation* classes (`lr_grid`): each estimator trained at the full
default budget, seed 0, 5-way, Adam lr in ``LR_GRID`` (plus 0.001 for Reptile, whose optimum sat at the grid's
lower edge), then evaluated on 300 validation tasks. The measured validation accuracies are
``LR_GRID_RESULTS`` (the printout of ``python -m ufom_bench.simulations.fewshot lr``); the best lr per estimator is ``LR``
(0.03 for exact_me, FOM and Adaptive UFOM; 0.001 for Reptile, nearly flat in lr). The test classes were not
looked at. The same ``LR`` is used at every scale and for 10-way (re-run `lr_grid` at paper scale on a source
with validation classes to re-tune).

**Evaluation.** At ``checkpoints`` equally spaced points of the budget (and at 0 calls) theta is evaluated on
test-split tasks (classes disjoint from training and validation): r inner GD steps at alpha from theta on the
support set (as in training), then accuracy on the query set (one example per class). The same test tasks
(key = seed) are used for every estimator and checkpoint of a seed, so comparisons are paired. Curve points
use ``n_test_curve`` tasks, the final point ``n_test``; 95% CIs are mean +- 1.96 sd / sqrt(n) over test tasks
(the MAML protocol) per seed; `ufom_bench.analysis.table2` combines seeds (see there).

**Monte Carlo** (``kind="mc"``): thetas from the Adaptive UFOM run of seed 0 (fresh, or the training cell's run
kept in the process's `Workspace`) at the fractions ``mc["points"]`` of the budget. For each theta, n tasks
from the *training* classes give per-task pairs (G_FO, G) (`montecarlo.pair`, vmapped, chunked, sharded over
all devices with a 1-D jax.sharding mesh by `ufom_bench.montecarlo`): D^2(theta) = E||G_FO - G||^2 (eq. 14),
V^2(theta) = E||G||^2 (eq. 16), across alpha (``mc["alphas"]`` at the setting's r) and r (``mc["rs"]`` at the setting's alpha); and
UFOM's second moment V^2 + (1/q - 1) D^2 (Lemma 1) and variance (that minus ||dM/dtheta||^2, unbiasedly
estimated) for q in ``mc["qs"]`` from the same pairs. These are per-task quantities (meta-batch 1); a meta-batch
of B tasks with independent coins divides the variance by B.

**Data sources.** ``glyphs`` (the offline default, `ufom_bench.data.glyphs`: 1,321 classes of characters
rendered from matplotlib's fonts, 20 drawers each, 28x28 grey; 925 / 132 / 264 train / val / test classes).
It is Omniglot-*like* but it is **not Omniglot**: accuracies are not comparable with the paper's numbers,
only the ordering of the estimators is. The paper scale reads the real data sets from directories given in
environment variables:
  ``UFOM_OMNIGLOT_DIR``: holds ``images_background.zip`` and ``images_evaluation.zip`` (Lake et al.);
      `data.fewshot.omniglot` (28x28, 1,100 / 100 / 423 characters, training classes rotated x4).
  ``UFOM_CIFAR100_DIR``: holds ``cifar-100-python.tar.gz``; `data.fewshot.cifar_fs` with the paper's
      80/20 class split (``CIFAR_SPLIT``; 32x32x3). It has no validation classes: lr comes from ``LR``.

**Scales** (``SCALES``): settings, conv filters, r, alpha, meta-batch B, budget (exact_me meta-steps),
checkpoints, test tasks (curve / final), seeds; Monte Carlo thetas, tasks per theta, alphas, rs, qs.
  smoke:   glyphs 3-way with a 784-16-3 MLP (a conv net's compilation would dominate), r = 3, B = 2,
           budget 4 exact steps (80 calls), 2 checkpoints, 20/40 test tasks, 1 seed; MC: 2 thetas x 8
           tasks, alphas (0.2, 0.4), r (1, 3).
  default: glyphs 5-way and 10-way, conv4 with 8 filters, r = 10, alpha = 0.4, B = 5, budget 30 exact steps
           (9,900 calls: exact_me 30 meta-steps, FOM 180, Reptile 198, Adaptive UFOM 90-105), 4 checkpoints,
           50 test tasks per curve point and 500 at the end, 6 seeds (48 training cells); MC on 5-way: 3
           thetas x 64 tasks, alphas (0.1, 0.2, 0.4, 0.8), r (1, 5, 10), q (0.05, 0.1, 0.2, 0.5, 1).
  paper:   cifar_fs 20/30-way and omniglot 30/40-way (Table 2's grid); 64 filters, r = 10, alpha = 0.4,
           B = 5, budget 5,000 exact steps (1.65 M calls), 10 checkpoints, 200/600 test tasks, 3 seeds;
           MC on 20- and 30-way: 3 thetas x 256 tasks, 5 alphas, 5 rs, 6 qs. A GPU (the same code; nothing
           device-specific; Monte Carlo samples are sharded over all devices).
Why the default is this size: on a CPU an exact_me meta-step of the paper's network (64 filters, 5-way,
B = 5, r = 10) takes about half a second (`benchmarks/fewshot.py`; the README has the figures), and every
compiled program (one per estimator and setting, one evaluation program per setting, one Monte Carlo program
per r) compiles for seconds; a further seed reuses them. The seed-to-seed spread dominates Table 2's CIs
(3 seeds: t's critical value 4.30), so the default spends its time on 6 seeds of the 8-filter network and
500 final test tasks rather than on wider filters. At this budget the networks are early in training: the
comparison is of estimators at a small budget of calls, where cheap estimators make many more meta-steps.

**Inner step size.** alpha = 0.4 for the mean cross-entropy (MAML's Omniglot value; the released UFOM code
used 0.005 with its own loss scaling, which we could not check).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from ufom_bench import theory
from ufom_bench import estimators, montecarlo
from ufom_bench.data import fewshot as fewshot_data
from ufom_bench.data.glyphs import glyphs
from ufom_bench.estimators import COUNT, Estimator
from ufom_bench.problem import Problem, inner_path
from ufom_bench.problems.fewshot import accuracy, conv4_apply, conv4_init, cross_entropy, fewshot, mlp_apply, mlp_init
from ufom_bench.train import Carry, linear_to_zero, resume, start
from ufom_bench.errors import UserError

PyTree = Any

ESTIMATORS = ("exact_me", "fom", "reptile", "adaptive_ufom")
ADAPTIVE = dict(q_min=0.05, beta=0.99, d2_scale=0.1)  # the paper's settings (Sections 5.2-5.3)
SOURCES = ("glyphs", "omniglot", "cifar_fs")
ENV_DIRS = {"omniglot": "UFOM_OMNIGLOT_DIR", "cifar_fs": "UFOM_CIFAR100_DIR"}
CIFAR_SPLIT = "80/20"  # the paper's CIFAR-100 class split (from its released code)
MC_SOURCE = "adaptive_ufom"  # whose training run supplies the Monte Carlo thetas
EVAL_CHUNK = 20  # test tasks per vmapped evaluation call

_MC_SMALL = dict(points=(0.0, 1.0), n=8, alphas=(0.2, 0.4), rs=(1, 3), qs=(0.05, 0.2, 0.5, 1.0), ways=(3,))
SCALES = {
    "smoke": dict(settings=(("glyphs", 3),), model="mlp", hidden=(16,), filters=4, r=3, alpha=0.4, meta_batch=2,
                  exact_steps=4, checkpoints=2, n_test_curve=20, n_test=40, seeds=(0,), mc=_MC_SMALL),
    "default": dict(settings=(("glyphs", 5), ("glyphs", 10)), model="conv4", filters=8, r=10, alpha=0.4,
                    meta_batch=5, exact_steps=30, checkpoints=4, n_test_curve=50, n_test=500, seeds=(0, 1, 2, 3, 4, 5),
                    mc=dict(points=(0.0, 0.5, 1.0), n=64, alphas=(0.1, 0.2, 0.4, 0.8), rs=(1, 5, 10),
                            qs=(0.05, 0.1, 0.2, 0.5, 1.0), ways=(5,))),
    "paper": dict(settings=(("cifar_fs", 20), ("cifar_fs", 30), ("omniglot", 30), ("omniglot", 40)), model="conv4",
                  filters=64, r=10, alpha=0.4, meta_batch=5, exact_steps=5_000, checkpoints=10, n_test_curve=200,
                  n_test=600, seeds=(0, 1, 2),
                  mc=dict(points=(0.0, 0.5, 1.0), n=256, alphas=(0.05, 0.1, 0.2, 0.4, 0.8), rs=(1, 2, 5, 10, 20),
                          qs=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0), ways=(20, 30))),
}

# Adam's lr per estimator, chosen on validation classes by `lr_grid` (module docstring).
LR_GRID = (0.003, 0.01, 0.03, 0.1)
LR = {"exact_me": 0.03, "fom": 0.03, "reptile": 0.001, "adaptive_ufom": 0.03}
# validation accuracy (300 tasks of the 132 validation classes, SE ~0.013) per (estimator, lr): default scale,
# glyphs 5-way, seed 0, full budget (30 exact steps), as measured by `lr_grid("default")`; Reptile's optimum was
# at the grid's lower edge, so lr = 0.001 was added for it (flat: 0.434, 0.429, 0.421 at 0.001, 0.003, 0.01).
LR_GRID_RESULTS = {
    "exact_me": {0.003: 0.4007, 0.01: 0.4340, 0.03: 0.4927, 0.1: 0.4293},
    "fom": {0.003: 0.4527, 0.01: 0.5267, 0.03: 0.5400, 0.1: 0.2000},
    "reptile": {0.001: 0.4340, 0.003: 0.4293, 0.01: 0.4213, 0.03: 0.4113, 0.1: 0.3080},
    "adaptive_ufom": {0.003: 0.4327, 0.01: 0.4627, 0.03: 0.5053, 0.1: 0.2000},
}


def check_scale(scale: str) -> dict:
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return SCALES[scale]


def check_estimator(name: str) -> str:
    if name not in ESTIMATORS:
        raise UserError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return name


def make_estimator(name: str) -> Estimator:
    """The estimator ``name`` with the paper's settings (for one task; a meta-step averages it with
    `estimators.meta_batch`)."""
    check_estimator(name)
    if name == "adaptive_ufom":
        return estimators.adaptive_ufom(**ADAPTIVE)
    if name == "reptile":
        return estimators.reptile(scale="none")
    return estimators.get(name)


def calls_per_step(name: str, r: int, meta_batch: int, exact: bool = False) -> int:
    """Counted calls of one meta-step (grads + HVPs); for adaptive_ufom the FOM branch unless ``exact``."""
    exact_cost, fom_cost = theory.branch_total(r, 1), theory.branch_total(r, 0)
    per_task = {"exact_me": exact_cost, "fom": fom_cost, "reptile": r,  # Reptile: r grads, no outer gradient
                "adaptive_ufom": exact_cost if exact else fom_cost}[check_estimator(name)]
    return meta_batch * per_task


def budget_of(scale: str) -> int:
    """The common budget: ``exact_steps`` meta-steps of exact_me, in function calls."""
    s = check_scale(scale)
    return s["exact_steps"] * calls_per_step("exact_me", s["r"], s["meta_batch"])


# ------------------------------------------------------------------------------------------------ data


def load_source(source: str) -> fewshot_data.FewShotSplits:
    """The class-disjoint splits of a source (loaded, not cached: `Workspace.source` keeps them); the real
    ones from the directory in their env variable."""
    if source == "glyphs":
        return glyphs()
    if source not in ENV_DIRS:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    path = os.environ.get(ENV_DIRS[source])
    if not path:
        want = ", ".join(fewshot_data.OMNIGLOT_ARCHIVES) if source == "omniglot" else fewshot_data.CIFAR100_ARCHIVE
        raise UserError(f"source {source!r} reads its archives from a local directory: set {ENV_DIRS[source]} "
                         f"to a directory holding {want}")
    if source == "omniglot":
        return fewshot_data.omniglot(path)
    return fewshot_data.cifar_fs(path, split=CIFAR_SPLIT)


class Setting(NamedTuple):
    """The problems of one (scale, source, m): training tasks, test tasks and (if any) validation tasks."""

    train: Problem
    test: Problem
    val: Problem | None
    model: str


class Run(NamedTuple):
    """A finished training run: thetas at the checkpoints (0 calls first), their calls and meta-steps, and
    the per-meta-step records of the whole run (active steps only)."""

    thetas: list
    calls: list
    steps: list
    records: dict
    diverged: int


class Workspace:
    """What the cells of one process share, held in one explicit object (no module-level memos): loaded
    sources, the problems of each setting, the compiled programs (one training program per (scale, source,
    m, estimator), one evaluation program per setting), finished runs (the Monte Carlo cell reuses the
    Adaptive UFOM run of seed 0) and the test scores of theta_0 (the same for every estimator of a seed).
    Every entry is a deterministic function of its key, so a fresh workspace recomputes the same numbers.
    The sweep's cells use `WORKSPACE`; tests and scripts may pass their own."""

    def __init__(self):
        self.sources: dict[str, fewshot_data.FewShotSplits] = {}
        self.settings: dict[tuple, Setting] = {}
        self.programs: dict[tuple, Any] = {}
        self.runs: dict[tuple, Run] = {}
        self.scores0: dict[tuple, tuple] = {}

    def source(self, source: str) -> fewshot_data.FewShotSplits:
        if source not in self.sources:
            self.sources[source] = load_source(source)
        return self.sources[source]

    def setting(self, scale: str, source: str, m: int) -> Setting:
        """Few-shot problems (float32) over the source's train / test / val classes, once per setting."""
        key = (scale, source, int(m))
        if key not in self.settings:
            s = check_scale(scale)
            splits = self.source(source)
            kw = dict(m=int(m), k=1, k_query=1, r=s["r"], alpha=s["alpha"], model=s["model"], filters=s["filters"],
                      hidden=s.get("hidden", (40, 40)), dtype=jnp.float32)
            make = lambda sampler: None if sampler is None else fewshot(sampler, **kw)
            self.settings[key] = Setting(make(splits.train), make(splits.test), make(splits.val), s["model"])
        return self.settings[key]

    def program(self, kind: str, scale: str, source: str, m: int, name: str | None = None):
        """The jitted ``segment_program`` (kind "segment") or ``eval_program`` (kind "eval"), built once."""
        key = (kind, scale, source, int(m), name)
        if key not in self.programs:
            self.programs[key] = (segment_program(self, scale, source, int(m), name) if kind == "segment"
                                  else eval_program(self, scale, source, int(m)))
        return self.programs[key]


WORKSPACE = Workspace()  # the one the sweep's cell functions use (a process's cells share it)


def theta_init(ws: Workspace, scale: str, source: str, m: int, seed: int) -> PyTree:
    """The network's parameters drawn with ``seed`` (the problem's theta0 is seed 0)."""
    s = check_scale(scale)
    prob = ws.setting(scale, source, m).train
    if not seed:
        return prob.theta0
    in_shape = ws.source(source).train.image_shape
    if s["model"] == "mlp":
        return mlp_init(int(seed), int(np.prod(in_shape)), int(m), s.get("hidden", (40, 40)), jnp.float32)
    return conv4_init(int(seed), in_shape, int(m), s["filters"], "batch", dtype=jnp.float32)


# ------------------------------------------------------------------------------------------- training


def segment_length(scale: str, name: str) -> int:
    """Scan length of one segment: the most meta-steps a checkpoint interval of calls allows, plus one."""
    s = check_scale(scale)
    interval = budget_of(scale) / s["checkpoints"]
    return int(math.ceil(interval / calls_per_step(name, s["r"], s["meta_batch"]))) + 1


def split_data(ws: Workspace, source: str, split: str = "train") -> tuple[jax.Array, jax.Array]:
    """(images, counts) of a split: passed to the jitted programs as arguments, not baked in as constants
    (a 15 MB constant adds seconds to every XLA compile on a CPU)."""
    sampler = getattr(ws.source(source), split)
    if sampler is None:
        raise UserError(f"source {source!r} has no {split!r} split")
    return sampler.images, sampler.counts


def _on(problem: Problem, data, m: int) -> Problem:
    """``problem`` with tasks drawn from ``data = (images, counts)`` (traced arguments)."""
    images, counts = data
    return problem.replace(sample_task=lambda key: fewshot_data.sample_task(images, counts, key, m, 1, 1))


def segment_program(ws: Workspace, scale: str, source: str, m: int, name: str):
    """``(carry, data, stop, budget, lr) -> (carry, Record)``: `train.resume` for one checkpoint interval,
    meta-steps while calls < stop (``data`` = `split_data` of the training split). Jitted; ``stop``,
    ``budget`` and ``lr`` are traced, so every segment of every seed (and every lr of `lr_grid`) runs the
    same compiled program.

    One meta-step: G = `estimators.meta_batch` of the estimator (B tasks, one coin), Adam direction u
    (``optax.scale_by_adam``), theta <- theta - lr (1 - calls/budget) u (`train.linear_to_zero` on the calls
    spent before the step).
    """
    s = check_scale(scale)
    base = ws.setting(scale, source, m).train
    est = estimators.meta_batch(make_estimator(name), s["meta_batch"])
    n_steps = segment_length(scale, name)

    def run(carry: Carry, data, stop, budget, lr):
        return resume(_on(base, data, m), est, carry, stop=stop, max_steps=n_steps,
                      schedule=linear_to_zero(lr, budget), schedule_on="calls", optimizer=optax.scale_by_adam(),
                      track_loss=False)

    return jax.jit(run)


def eval_program(ws: Workspace, scale: str, source: str, m: int):
    """``(theta, data, keys[EVAL_CHUNK]) -> (accuracy, query loss)`` per task after r inner steps at alpha on the
    support set; ``data`` = `split_data` of the test (or validation) split. Jitted."""
    st = ws.setting(scale, source, m)

    def chunk(theta, data, keys):
        problem = _on(st.test, data, m)

        def one(key):
            task = problem.sample_task(key)
            phi = inner_path(problem, theta, task)
            logits = conv4_apply(phi, task.query_x, "batch") if st.model == "conv4" else mlp_apply(phi, task.query_x)
            return accuracy(logits, task.query_y), cross_entropy(logits, task.query_y)

        return jax.vmap(one)(keys)

    return jax.jit(chunk)


def evaluate(ws: Workspace, scale: str, source: str, m: int, theta, n: int, key, split: str = "test"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-task (accuracy, query cross-entropy) on ``n`` tasks of ``split`` (the first n of ``key``'s stream:
    a smaller n is a prefix of a larger one)."""
    fn = ws.program("eval", scale, source, m)
    data = split_data(ws, source, split)
    n_chunks = -(-int(n) // EVAL_CHUNK)
    keys = jax.random.split(key, n_chunks * EVAL_CHUNK).reshape(n_chunks, EVAL_CHUNK, -1)
    out = [fn(theta, data, keys[i]) for i in range(n_chunks)]
    acc = np.concatenate([np.asarray(a) for a, _ in out])[:n]
    loss = np.concatenate([np.asarray(b) for _, b in out])[:n]
    return acc.astype(np.float64), loss.astype(np.float64)


def train_run(ws: Workspace, scale: str, source: str, m: int, name: str, seed: int, lr: float | None = None
              ) -> Run:
    """Train ``name`` at the full budget in ``checkpoints`` segments (one compiled program, `train.resume`
    from the carried state), keeping theta at each checkpoint. Deterministic given its arguments (kept in
    ``ws.runs``)."""
    s = check_scale(scale)
    lr = float(LR[name] if lr is None else lr)
    memo = (scale, source, int(m), name, int(seed), lr)
    if memo in ws.runs:
        return ws.runs[memo]
    budget = budget_of(scale)
    fn = ws.program("segment", scale, source, int(m), name)
    theta = theta_init(ws, scale, source, int(m), seed)
    carry = start(make_estimator(name), theta, jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1),
                  optax.scale_by_adam())
    data = split_data(ws, source, "train")
    thetas, calls, steps, recs = [carry.theta], [0], [0], []
    for i in range(1, s["checkpoints"] + 1):
        stop = budget * i // s["checkpoints"]
        carry, rec = fn(carry, data, jnp.asarray(stop, COUNT), jnp.float32(budget), jnp.float32(lr))
        thetas.append(carry.theta)
        calls.append(int(carry.grads + carry.hvps))
        steps.append(int(carry.steps))
        recs.append(jax.device_get(rec))
    fields = ("active", "calls", "q", "exact", "finite", "diverged")
    records = {f: np.concatenate([getattr(r, f) for r in recs]) for f in fields}
    active = records.pop("active")
    records = {f: v[active] for f, v in records.items()}
    run = Run(thetas, calls, steps, records, int(carry.n_diverged))
    ws.runs[memo] = run
    return run


def cell_train(config: dict, ws: Workspace = WORKSPACE) -> pd.DataFrame:
    """One (setting, estimator, seed): test accuracy at the checkpoints (record "eval"), per test task at the
    full budget (record "task") and per meta-step calls and q (record "step")."""
    s = check_scale(config["scale"])
    scale, source, m = config["scale"], config["source"], int(config["m"])
    name, seed = config["estimator"], int(config["seed"])
    lr = float(config.get("lr", LR[check_estimator(name)]))
    run = train_run(ws, scale, source, m, name, seed, lr)
    key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), 2)  # the same test tasks for every estimator
    rows = []
    last = len(run.thetas) - 1
    for i, theta in enumerate(run.thetas):
        n = s["n_test"] if i == last else s["n_test_curve"]
        memo = (scale, source, m, seed, n)  # theta_0 is the same for every estimator of a seed
        if i == 0 and memo in ws.scores0:
            acc, loss = ws.scores0[memo]
        else:
            acc, loss = evaluate(ws, scale, source, m, theta, n, key)
            if i == 0:
                ws.scores0[memo] = (acc, loss)
        rows.append({"record": "eval", "checkpoint": i, "calls": run.calls[i], "step": run.steps[i],
                     "accuracy": acc.mean(), "accuracy_se": acc.std(ddof=1) / math.sqrt(n), "loss": loss.mean(),
                     "n_tasks": n})
        if i == last:
            final = pd.DataFrame({"record": "task", "checkpoint": i, "calls": run.calls[i], "task": np.arange(n),
                                  "accuracy": acc, "loss": loss})
    rec = run.records
    per_step = pd.DataFrame({"record": "step", "step": np.arange(1, len(rec["calls"]) + 1), "calls": rec["calls"],
                             "q": rec["q"].astype(np.float64), "exact": rec["exact"], "finite": rec["finite"]})
    out = pd.concat([pd.DataFrame(rows), final, per_step], ignore_index=True)
    out["lr"], out["budget"], out["diverged"] = lr, budget_of(scale), run.diverged
    out["r"], out["alpha"], out["filters"], out["meta_batch"], out["k"] = (s["r"], s["alpha"], s["filters"],
                                                                         s["meta_batch"], 1)
    return out


# ---------------------------------------------------------------------------------------- Monte Carlo


def mc_thetas(ws: Workspace, scale: str, source: str, m: int) -> tuple[list, list]:
    """(thetas, calls) at the fractions ``mc["points"]`` of the budget along the Adaptive UFOM run of seed 0."""
    s = check_scale(scale)
    run = train_run(ws, scale, source, m, MC_SOURCE, 0)
    idx = sorted({int(round(p * s["checkpoints"])) for p in s["mc"]["points"]})
    return [run.thetas[i] for i in idx], [run.calls[i] for i in idx]


def _with(problem: Problem, alpha: float, r: int) -> Problem:
    return problem.replace(step_sizes=jnp.full((int(r),), float(alpha), problem.step_sizes.dtype))


def mc_rows(problem: Problem, thetas: list, n: int, key, qs=()) -> list[dict]:
    """D^2, V^2 (eqs. 14, 16) per theta from n sampled tasks, and UFOM's second moment and variance per q."""
    grid = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *thetas)
    samples = montecarlo.gradient_samples(problem, grid, n, key, method="sampled", chunk_size=n, grid=True)
    cells = montecarlo.moments_of(samples)
    rows = []
    for c, mom in enumerate(cells):
        base = {"point": c, "d2": mom.d2, "d2_se": mom.d2_se, "v2": mom.v2, "v2_se": mom.v2_se,
                "bias_norm": float(np.linalg.norm(mom.bias)), "meta_grad_norm": float(np.linalg.norm(mom.meta_grad)),
                "n": mom.n, "n_diverged": mom.n_diverged}
        if not len(qs):
            rows.append(base)
            continue
        one = montecarlo.Samples(samples.g_fo[c], samples.g[c], samples.weight, samples.finite[c], samples.method)
        um = montecarlo.ufom_moments_of(one, np.asarray(qs, float), jax.random.fold_in(key, 7919 + c))
        var, var_se = montecarlo.ufom_variance(um)
        for j, q in enumerate(qs):
            rows.append({**base, "q": float(q), "ufom_m2": float(um.second_moment[j]),
                         "ufom_m2_se": float(um.second_moment_se[j]), "ufom_direct": float(um.direct[j]),
                         "ufom_direct_se": float(um.direct_se[j]),
                         "ufom_diff_se": float(um.diff_se[j]), "ufom_var": float(var[j]),
                         "ufom_var_se": float(var_se[j])})
    return rows


def cell_mc(config: dict, ws: Workspace = WORKSPACE) -> pd.DataFrame:
    """D^2, V^2 and UFOM's variance on this workload across alpha, r and q, at thetas along training."""
    s = check_scale(config["scale"])
    scale, source, m = config["scale"], config["source"], int(config["m"])
    mc = s["mc"]
    thetas, calls = mc_thetas(ws, scale, source, m)
    base = ws.setting(scale, source, m).train
    key = jax.random.PRNGKey(int(config.get("seed", 0)) + 100)
    out = []
    for a in sorted(set(mc["alphas"]) | {s["alpha"]}):  # alpha axis at the setting's r (+ q at its alpha)
        qs = mc["qs"] if a == s["alpha"] else ()
        for row in mc_rows(_with(base, a, s["r"]), thetas, mc["n"], jax.random.fold_in(key, int(a * 1e6)), qs):
            out.append({"axis": "alpha" if not qs else "q", "alpha": a, "r": s["r"], **row})
            if qs and row["q"] == mc["qs"][0]:
                out.append({"axis": "alpha", "alpha": a, "r": s["r"],
                            **{k: v for k, v in row.items() if not k.startswith("ufom") and k != "q"}})
    for r in sorted(set(mc["rs"]) - {s["r"]}):  # r axis at the setting's alpha (r = s["r"] is on the alpha axis)
        for row in mc_rows(_with(base, s["alpha"], r), thetas, mc["n"], jax.random.fold_in(key, 10_000 + r)):
            out.append({"axis": "r", "alpha": s["alpha"], "r": r, **row})
    frame = pd.DataFrame(out)
    # the setting's (alpha, r) row also belongs to the r axis
    here = frame[(frame["axis"] == "alpha") & (frame["alpha"] == s["alpha"])].assign(axis="r")
    frame = pd.concat([frame, here], ignore_index=True)
    frame["record"] = "mc"
    frame["theta_calls"] = frame["point"].map(dict(enumerate(calls)))
    frame["mc_source"] = MC_SOURCE
    return frame


def cell_fewshot(config: dict, ws: Workspace = WORKSPACE) -> pd.DataFrame:
    """The sweep's cell: a training cell (``kind="train"``) or a Monte Carlo cell (``kind="mc"``), sharing
    the workspace ``ws`` (default: the process's `WORKSPACE`) with the other cells."""
    kind = config.get("kind")
    if kind == "train":
        return cell_train(config, ws)
    if kind == "mc":
        return cell_mc(config, ws)
    raise UserError(f"unknown few-shot cell kind {kind!r}; expected 'train' or 'mc'")


def configs(scale: str) -> list[dict]:
    """Training cells per (source, m, estimator, seed), then the Monte Carlo cells (which reuse a run)."""
    s = check_scale(scale)
    train = [{"scale": scale, "kind": "train", "source": src, "m": int(m), "estimator": e, "seed": int(seed)}
             for src, m in s["settings"] for seed in s["seeds"] for e in ESTIMATORS]
    mc = [{"scale": scale, "kind": "mc", "source": src, "m": int(m), "estimator": MC_SOURCE, "seed": 0}
          for src, m in s["settings"] if m in s["mc"]["ways"]]
    return train + mc


# -------------------------------------------------------------------------------- step-size selection


def lr_grid(scale: str = "default", source: str = "glyphs", m: int | None = None, grid=LR_GRID, seed: int = 0,
            n_val: int = 300, ws: Workspace | None = None) -> pd.DataFrame:
    """The offline step-size selection: validation accuracy per (estimator, Adam lr) at the full budget."""
    s = check_scale(scale)
    m = s["settings"][0][1] if m is None else int(m)
    ws = Workspace() if ws is None else ws
    rows = []
    key = jax.random.PRNGKey(10_000 + seed)
    for name in ESTIMATORS:
        for lr in grid:
            run = train_run(ws, scale, source, m, name, seed, lr)
            acc, _ = evaluate(ws, scale, source, m, run.thetas[-1], n_val, key, split="val")
            rows.append({"estimator": name, "lr": lr, "val_accuracy": acc.mean(),
                         "val_se": acc.std(ddof=1) / math.sqrt(n_val), "diverged": run.diverged})
    return pd.DataFrame(rows)


CELLS = {"fewshot": cell_fewshot}


if __name__ == "__main__":  # python -m ufom_bench.simulations.fewshot lr [scale]: the step-size selection table
    if len(sys.argv) > 1 and sys.argv[1] == "lr":
        with jax.enable_x64(True):  # the experiment's precision (simulations.X64)
            table = lr_grid(sys.argv[2] if len(sys.argv) > 2 else "default")
        print(table.to_string(index=False))
        best = table.loc[table.groupby("estimator")["val_accuracy"].idxmax(), ["estimator", "lr"]]
        print("best:", dict(zip(best["estimator"], best["lr"])))
