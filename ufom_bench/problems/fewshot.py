"""Few-shot meta-learning as ABLO (Section 5.3; MAML, Finn et al. 2017): the workload of the paper's Table 2.

theta = the network's parameters (a pytree dict of arrays); a task T is a `data.fewshot.Task` (support and
query sets); phi = the task-adapted parameters, with the same structure as theta:

    V(theta, T)          = theta                                         (MAML: adaptation starts at theta)
    L_in(theta, phi, T)  = mean loss of the network phi on T's support set
    L_out(theta, phi, T) = mean loss of the network phi on T's query set

The loss is the cross-entropy for m-way classification and the squared error for sinusoid regression.
L_in and L_out do not depend on theta directly, so in eq. (6) b1 = 0 and the whole gradient flows through
V: FOM is MAML's first-order approximation (the query gradient at phi_r), the exact gradient is MAML's.

``inner="head"`` (ANIL, Raghu et al. 2020; the meta-learning setting of PZOBO, Sow et al. 2022): phi is only
the linear head h = (w, b), theta the whole network (feature extractor f_theta and the head's start):

    V(theta, T)          = theta's head
    L_in(theta, phi, T)  = mean loss of the head phi on the features f_theta(support set)
    L_out(theta, phi, T) = mean loss of the head phi on the features f_theta(query set)

theta enters L_in and L_out directly, so in eq. (6) b1 = dL_out/dtheta != 0 and the mixed derivative
d2 L_in / dtheta dphi carries the features' part of the gradient; the inner problem is a convex logistic
regression in phi.

Models (pure functions of a parameter dict):
- ``"conv4"``: MAML's Omniglot network. Four blocks of [3x3 convolution, stride 2, ``filters`` channels,
  SAME padding, no bias] -> normalisation with a learned per-channel scale and offset -> ReLU; then a dense
  head with m outputs on the flattened features (28x28 -> 14 -> 7 -> 4 -> 2, so 2*2*filters features).
  The convolution bias is left out because the normalisation's offset makes it redundant (with batch
  statistics a per-channel bias is subtracted out exactly). The convolutions are computed as strided
  slices and one dot by default (`conv_s2_same`; ``conv="xla"`` for XLA's convolution).
- ``"mlp"``: a ReLU MLP (default 40-40, MAML's sinusoid network); image inputs are flattened.

Normalisation (``norm``), which must work per task (there is no state outside theta: running averages
would make L_in, L_out depend on the history of other tasks, and the ABLO functions would no longer be
functions of (theta, phi, T)):
- ``"batch"`` (default): batch normalisation with the statistics of the batch being evaluated, per
  channel over (examples, height, width): the support set inside L_in, the query set inside L_out. This is
  transductive batch norm as in MAML's and Reptile's (and so the UFOM authors') code, chosen as the default
  so that accuracies are comparable with the paper's Table 2. Caveat (Nichol et al. 2018): a query
  example's prediction depends on the other query examples of its task; with one query example per class
  that is the standard, slightly optimistic, MAML protocol.
- ``"layer"``: per-example normalisation over (height, width, channels) (group norm with one group): no
  transduction at all, each prediction depends on its own input only. Use it to remove the caveat.
- ``"none"``: no normalisation (a conv bias is then added).
Both normalisations are smooth (eps = 1e-5 inside the square root), so HVPs and the exact gradient exist.

A meta-batch of tasks is an estimator's business, not the problem's: `ufom_bench.estimators.meta_batch`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ufom_bench.data.fewshot import TaskSampler
from ufom_bench.data.fewshot import sinusoid as sinusoid_task
from ufom_bench.problem import Problem
from ufom_bench.problems.synthetic import check_int, check_positive, resolve_dtype
from ufom_bench.errors import UserError

__all__ = [
    "fewshot",
    "sinusoid",
    "conv4_init",
    "conv4_apply",
    "conv4_features",
    "conv_s2_same",
    "mlp_init",
    "mlp_apply",
    "mlp_features",
    "cross_entropy",
    "accuracy",
    "NORMS",
    "INNERS",
]

NORMS = ("batch", "layer", "none")
CONVS = ("slices", "xla")
INNERS = ("all", "head")
_EPS = 1e-5


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def conv4_init(seed: int, in_shape: Sequence[int], n_out: int, filters: int = 64, norm: str = "batch",
               n_blocks: int = 4, dtype=jnp.float32) -> dict:
    """Parameters of the 4-conv network, from a float64 numpy generator then cast (same draw for every dtype).

    Convolutions: He-normal (std sqrt(2 / fan_in)); scale 1, offset 0; dense head: Glorot-uniform
    weights, zero bias. ``in_shape`` is (H, W, channels).

    Returns:
      {"block0": {"w" (3, 3, c_in, filters), "scale" (filters,), "offset" (filters,)}, ..., "head": {"w"
      (features, n_out), "b" (n_out,)}} (``"b"`` instead of scale/offset in the blocks when norm="none").
    """
    _check_norm(norm)
    rng = np.random.default_rng(seed)
    h, w, c = (int(s) for s in in_shape)
    params = {}
    for i in range(n_blocks):
        block = {"w": rng.normal(0.0, np.sqrt(2.0 / (9 * c)), (3, 3, c, filters))}
        if norm == "none":
            block["b"] = np.zeros(filters)
        else:
            block["scale"], block["offset"] = np.ones(filters), np.zeros(filters)
        params[f"block{i}"] = block
        h, w, c = -(-h // 2), -(-w // 2), filters  # SAME padding, stride 2
    features = h * w * c
    lim = np.sqrt(6.0 / (features + n_out))
    params["head"] = {"w": rng.uniform(-lim, lim, (features, n_out)), "b": np.zeros(n_out)}
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)


def _normalise(x, block, norm):
    if norm == "none":
        return x + block["b"]
    axes = (0, 1, 2) if norm == "batch" else (1, 2, 3)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + _EPS) * block["scale"] + block["offset"]


def conv_s2_same(x: jax.Array, w: jax.Array, conv: str = "slices") -> jax.Array:
    """conv4's 3x3 convolution, stride 2, SAME padding, no bias (x NHWC, w HWIO).

    ``conv="slices"``: pad as SAME pads, take the kh*kw strided windows with `lax.slice`, concatenate them
    on the channel axis in (i, j, c) order (as ``w.reshape(kh*kw*c, f)`` reads them) and contract with one
    dot. Every derivative of it, to any order, is slices, pads and dots. ``conv="xla"``: XLA's convolution
    (`lax.conv_general_dilated`); on the CPU its derivatives inside loops and branches (every gradient and
    HVP of the inner loop) run without the layout canonicalisation XLA applies at the top level. The two
    are the same function; they differ by float rounding.
    """
    if conv == "xla":
        return jax.lax.conv_general_dilated(x, w, window_strides=(2, 2), padding="SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if conv != "slices":
        raise UserError(f"conv must be one of {CONVS}, got conv = {conv!r}")
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = -(-h // 2), -(-wd // 2)
    pad_h, pad_w = max(2 * (ho - 1) + kh - h, 0), max(2 * (wo - 1) + kw - wd, 0)
    xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    windows = [jax.lax.slice(xp, (0, i, j, 0), (n, i + 2 * (ho - 1) + 1, j + 2 * (wo - 1) + 1, c), (1, 2, 2, 1))
               for i in range(kh) for j in range(kw)]
    return jnp.einsum("nhwk,kf->nhwf", jnp.concatenate(windows, axis=-1), w.reshape(kh * kw * c, f))


def conv4_features(params: dict, x: jax.Array, norm: str = "batch", conv: str = "slices") -> jax.Array:
    """The flattened features [n, features] of conv4's blocks (everything but the head) on x [n, H, W, channels]."""
    n_blocks = len(params) - 1
    x = x.astype(params["head"]["w"].dtype)
    for i in range(n_blocks):
        block = params[f"block{i}"]
        x = jax.nn.relu(_normalise(conv_s2_same(x, block["w"], conv), block, norm))
    return x.reshape((x.shape[0], -1))


def conv4_apply(params: dict, x: jax.Array, norm: str = "batch", conv: str = "slices") -> jax.Array:
    """Logits [n, n_out] of a batch x [n, H, W, channels] (NHWC). With norm="batch" the statistics are the
    batch's own (so call it on one task's support set or query set, not on both at once). ``conv``: how the
    convolutions are computed (`conv_s2_same`)."""
    return _linear(params["head"], conv4_features(params, x, norm, conv))


def _linear(layer: dict, x: jax.Array) -> jax.Array:
    return x @ layer["w"] + layer["b"]


def mlp_init(seed: int, n_in: int, n_out: int, hidden: Sequence[int] = (40, 40), dtype=jnp.float32) -> dict:
    """Parameters {"dense0": {"w", "b"}, ..., "out": {"w", "b"}} of a ReLU MLP (Glorot-uniform, zero bias)."""
    rng = np.random.default_rng(seed)
    sizes = [int(n_in), *(int(h) for h in hidden), int(n_out)]
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lim = np.sqrt(6.0 / (a + b))
        name = "out" if i == len(sizes) - 2 else f"dense{i}"
        params[name] = {"w": rng.uniform(-lim, lim, (a, b)), "b": np.zeros(b)}
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)


def mlp_features(params: dict, x: jax.Array) -> jax.Array:
    """The last hidden layer [n, width] of the ReLU MLP (everything but the "out" layer) on x [n, ...]."""
    x = x.reshape((x.shape[0], -1))
    n_hidden = len(params) - 1
    for i in range(n_hidden):
        x = jax.nn.relu(x @ params[f"dense{i}"]["w"] + params[f"dense{i}"]["b"])
    return x


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
    """Outputs [n, n_out] of the ReLU MLP on x [n, ...] (flattened to [n, features])."""
    return _linear(params["out"], mlp_features(params, x))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean categorical cross-entropy of integer labels."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1))


def _mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(pred - target.reshape(pred.shape)))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to the labels."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def _check_norm(norm):
    if norm not in NORMS:
        raise UserError(f"norm must be one of {NORMS}, got norm = {norm!r}")


# --------------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------------


def _step_sizes(alpha, r, dt) -> jax.Array:
    """alpha as a scalar (constant steps) or r positive numbers."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 0:
        check_positive("alpha", float(a))
        a = np.full((r,), float(a))
    elif a.shape != (r,):
        raise UserError(f"alpha must be a number or {r} step sizes (one per inner step), got shape {a.shape}")
    return jnp.asarray(a, dt)


def _make_problem(apply, loss, sample_task, theta0, step_sizes, dt, name) -> Problem:
    def net_loss(phi, x, y):
        return loss(apply(phi, x.astype(dt)), y)

    def inner_loss(theta, phi, task):
        del theta
        return net_loss(phi, task.support_x, task.support_y)

    def outer_loss(theta, phi, task):
        del theta
        return net_loss(phi, task.query_x, task.query_y)

    def init_inner(theta, task):
        del task
        return theta

    return Problem(inner_loss=inner_loss, outer_loss=outer_loss, init_inner=init_inner, sample_task=sample_task,
                   step_sizes=step_sizes, theta0=theta0, name=name)


def _make_head_problem(features, head: str, loss, sample_task, theta0, step_sizes, dt, name) -> Problem:
    """inner="head" (ANIL; PZOBO's meta-learning setting): phi = theta[head] only, adapted on features(theta, x).

    V(theta, T) = theta[head]; L_in(theta, phi, T) = loss(features(theta, support) phi); L_out the same on the
    query set. theta enters L_in and L_out directly (through the features): in eq. (6) b1 != 0 and the mixed
    derivative d2 L_in / dtheta dphi is that of the features.
    """

    def net_loss(theta, phi, x, y):
        return loss(_linear(phi, features(theta, x.astype(dt))), y)

    def inner_loss(theta, phi, task):
        return net_loss(theta, phi, task.support_x, task.support_y)

    def outer_loss(theta, phi, task):
        return net_loss(theta, phi, task.query_x, task.query_y)

    def init_inner(theta, task):
        del task
        return theta[head]

    return Problem(inner_loss=inner_loss, outer_loss=outer_loss, init_inner=init_inner, sample_task=sample_task,
                   step_sizes=step_sizes, theta0=theta0, name=name)


def fewshot(sampler: TaskSampler, model: str = "conv4", m: int = 5, k: int = 1, k_query: int = 1, r: int = 10,
            alpha=0.4, seed: int = 0, dtype=None, *, filters: int = 64, norm: str = "batch", conv: str = "slices",
            hidden: Sequence[int] = (40, 40), inner: str = "all") -> Problem:
    """m-way k-shot classification as ABLO (MAML; Section 5.3): V = theta, L_in/L_out = mean CE on support/query;
    or, with ``inner="head"``, only the linear head adapts (ANIL; PZOBO's meta-learning experiment).

    Args:
      sampler: a `data.fewshot.TaskSampler` (glyphs, omniglot, cifar_fs split). Its images are closed over
        by ``sample_task`` (a constant of a jitted program; fine at Omniglot/CIFAR-FS sizes).
      model: ``"conv4"`` (MAML's network, see the module docstring) or ``"mlp"`` (flattened images).
      m, k, k_query: ways, shots, query examples per class (the UFOM/Reptile protocol uses k_query = 1).
      r: inner GD steps (paper: 10).
      alpha: inner step size, a number or r numbers. Default 0.4, MAML's Omniglot value for the mean CE.
        (The UFOM authors' released code used 0.005 with its own loss scaling, which we could not check.)
      seed: numpy seed of theta0.
      dtype: float dtype of theta and of the images inside the losses (None: JAX's default float).
      filters: channels of every conv block (64 in MAML; small values for tests).
      norm: ``"batch"`` (transductive, default), ``"layer"`` (per example) or ``"none"``: module docstring.
      conv: ``"slices"`` (default) or ``"xla"``: how conv4's convolutions are computed (`conv_s2_same`).
      hidden: widths of the MLP's hidden layers (model="mlp").
      inner: ``"all"`` (default, MAML): phi is the whole network, V(theta, T) = theta. ``"head"`` (ANIL-like,
        PZOBO's setting): theta is the whole network (feature extractor and the head's initialisation), phi
        only the linear head (conv4's "head", the MLP's "out" layer) with V(theta, T) = theta's head;
        L_in(theta, phi, T) = mean CE of phi on the features theta computes for the support set (L_out: query
        set), so theta enters L_in and L_out directly (module docstring).

    The meta-batch size is not part of the problem (a Problem describes one task distribution): pass it to
    `ufom_bench.estimators.meta_batch`.

    Returns:
      A `Problem` named like ``"fewshot/glyphs/train/conv4-batch/5w1s"``; theta0 is a dict of arrays.
    """
    if not isinstance(sampler, TaskSampler):
        raise UserError(f"sampler must be a data.fewshot.TaskSampler, got {type(sampler).__name__}")
    m, k = check_int("m", m, 2), check_int("k", k, 1)
    k_query, r = check_int("k_query", k_query, 1), check_int("r", r, 1)
    seed, filters = check_int("seed", seed, 0), check_int("filters", filters, 1)
    _check_norm(norm)
    if conv not in CONVS:
        raise UserError(f"conv must be one of {CONVS}, got conv = {conv!r}")
    if inner not in INNERS:
        raise UserError(f"inner must be one of {INNERS}, got inner = {inner!r}")
    dt = resolve_dtype(dtype)
    sample_task = sampler.task_fn(m, k, k_query)  # validates m, k, k_query against the split
    in_shape = sampler.image_shape
    if model == "conv4":
        theta0 = conv4_init(seed, in_shape, m, filters, norm, dtype=dt)

        def apply(params, x):
            return conv4_apply(params, x, norm, conv)

        def features(params, x):
            return conv4_features(params, x, norm, conv)

        label, head = f"conv4-{norm}", "head"
    elif model == "mlp":
        theta0 = mlp_init(seed, int(np.prod(in_shape)), m, hidden, dt)
        apply, features, label, head = mlp_apply, mlp_features, "mlp", "out"
    else:
        raise UserError(f"model must be 'conv4' or 'mlp', got model = {model!r}")
    alphas = _step_sizes(alpha, r, dt)
    if inner == "head":
        name = f"fewshot/{sampler.name or 'sampler'}/{label}-head/{m}w{k}s"
        return _make_head_problem(features, head, cross_entropy, sample_task, theta0, alphas, dt, name)
    name = f"fewshot/{sampler.name or 'sampler'}/{label}/{m}w{k}s"
    return _make_problem(apply, cross_entropy, sample_task, theta0, alphas, dt, name)


def sinusoid(k: int = 10, k_query: int | None = None, r: int = 10, alpha=0.01, seed: int = 0, dtype=None, *,
             hidden: Sequence[int] = (40, 40)) -> Problem:
    """MAML's sinusoid regression as ABLO: K-shot tasks y = A sin(x - b) (`data.fewshot.sinusoid`), the
    40-40 ReLU MLP, V = theta, L_in/L_out = mean squared error on support/query (alpha 0.01 as MAML)."""
    k = check_int("k", k, 1)
    k_query = k if k_query is None else check_int("k_query", k_query, 1)
    r, seed = check_int("r", r, 1), check_int("seed", seed, 0)
    dt = resolve_dtype(dtype)

    def sample_task(key):
        return sinusoid_task(key, k, k_query, dtype=dt)

    theta0 = mlp_init(seed, 1, 1, hidden, dt)
    return _make_problem(mlp_apply, _mse, sample_task, theta0, _step_sizes(alpha, r, dt), dt, f"sinusoid/{k}shot")
