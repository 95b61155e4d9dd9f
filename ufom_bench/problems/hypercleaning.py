"""Data hypercleaning (Section 5.2; Franceschi et al. 2017, Shaban et al. 2018): one weight per training example.

theta in R^n (n training examples, theta0 = 0, so every weight starts at sigma(0) = 1/2); phi = the
parameters of a two-layer ReLU network g(phi, x) = W2^T relu(W1^T x + b1) + b2 in R^C. One task
(|Omega_T| = 1) holding the data and the inner start phi_0:

    L_in(theta, phi, T)  = (1/n) sum_i sigma(theta_i) CCE(g(phi, X_i), Y_i)      (Y: corrupted labels)
    L_out(theta, phi, T) = (1/m) sum_k CCE(g(phi, Xval_k), Yval_k)                (clean validation set)
    V(theta, T)          = phi_0                                                   (independent of theta)

Normalisation: the paper writes L_in as a *sum* over the 5,000 examples with alpha = 1. With inputs in
[0, 1] the curvature of that sum grows like n (the Hessian is n times that of the mean), so GD with
alpha = 1 on the sum diverges; Shaban et al.'s setup (which the paper follows for r = 100, alpha = 1) is
stable because the loss is the per-example mean. We divide by n (not by sum_i sigma(theta_i)): the inner
problem's scale then no longer depends on n, alpha = 1 is a stable step (the weights are <= 1, so the
curvature is at most that of the plain mean cross-entropy), and theta keeps its meaning, since the
effective step alpha mean_i sigma(theta_i) may shrink when theta down-weights examples. The paper's sum
with step alpha equals ours with step n alpha.

Consequences of V and L_out not depending on theta (checked in tests/test_hypercleaning.py): in eq. (6)
only the D_j terms survive, and FOM (eqs. 10-11) is identically zero here: G_FO = dL_out/dtheta +
(dV/dtheta)^T dL_out/dphi = 0 + 0. Every bit of signal about theta comes through the mixed derivative
d2 L_in / dtheta dphi, which FOM drops.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufom_bench.problem import FROM_TASKS, Problem, inner_path, task_at
from ufom_bench.problems.synthetic import check_int, check_positive, resolve_dtype
from ufom_bench.errors import UserError

__all__ = [
    "HypercleaningTask",
    "HypercleaningMetrics",
    "hypercleaning",
    "hypercleaning_metrics",
    "mlp_init",
    "mlp_apply",
    "cross_entropy",
]


class HypercleaningTask(NamedTuple):
    """The single task (a row of ``Problem.tasks``, where every leaf has a leading axis of length 1).

    Attributes:
      X_train: (n, d) training inputs. y_train: (n,) int32 training labels (the corrupted ones).
      X_val: (m, d) validation inputs. y_val: (m,) int32 clean validation labels.
      phi0: the inner start V(theta, T) = phi_0, a dict W1 (d, h), b1 (h,), W2 (h, C), b2 (C,).
    """

    X_train: jax.Array
    y_train: jax.Array
    X_val: jax.Array
    y_val: jax.Array
    phi0: dict


class HypercleaningMetrics(NamedTuple):
    """Scores at one theta (classifier phi_r = U^(r)(theta, T)); see `hypercleaning_metrics`."""

    val_loss: jax.Array
    val_accuracy: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    train_clean_accuracy: jax.Array
    f1: jax.Array
    precision: jax.Array
    recall: jax.Array
    n_flagged: jax.Array


def mlp_init(seed: int, d: int, hidden: int, n_classes: int, dtype) -> dict:
    """phi_0 of the two-layer ReLU network, from a float64 numpy generator then cast (same for every dtype).

    W1 ~ N(0, 2/d) (He, for the ReLU layer), W2 ~ N(0, 1/hidden) (LeCun), biases 0.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d)
    w2 = rng.standard_normal((hidden, n_classes)) * np.sqrt(1.0 / hidden)
    return {
        "W1": jnp.asarray(w1, dtype),
        "b1": jnp.zeros((hidden,), dtype),
        "W2": jnp.asarray(w2, dtype),
        "b2": jnp.zeros((n_classes,), dtype),
    }


def mlp_apply(phi: dict, X: jax.Array) -> jax.Array:
    """Logits g(phi, X) = relu(X W1 + b1) W2 + b2, shape (n, C)."""
    return jax.nn.relu(X @ phi["W1"] + phi["b1"]) @ phi["W2"] + phi["b2"]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example categorical cross-entropy -log softmax(logits)[y], shape (n,)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _inner_loss(theta, phi, task: HypercleaningTask):
    ce = cross_entropy(mlp_apply(phi, task.X_train), task.y_train)
    return jnp.sum(jax.nn.sigmoid(theta) * ce) / ce.shape[0]


def _outer_loss(theta, phi, task: HypercleaningTask):
    del theta
    return jnp.mean(cross_entropy(mlp_apply(phi, task.X_val), task.y_val))


def _init_inner(theta, task: HypercleaningTask):
    del theta
    return task.phi0


def _check_xy(name_x: str, X, name_y: str, y, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise UserError(f"{name_x} must be a non-empty 2-D array (n_examples, n_features), got {name_x}.shape = {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise UserError(f"{name_x} must hold finite numbers, got dtype {X.dtype}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise UserError(
            f"{name_y} must be 1-D with one label per row of {name_x} ({X.shape[0]}), got {name_y}.shape = {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{name_y} must hold integer labels, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise UserError(f"{name_y} must be in 0..{n_classes - 1}, got labels in [{y.min()}, {y.max()}]")
    return X, y


def hypercleaning(
    X_train,
    y_train,
    X_val,
    y_val,
    hidden: int = 100,
    r: int = 100,
    alpha: float = 1.0,
    seed: int = 0,
    n_classes: int = 10,
    dtype=jnp.float32,
) -> Problem:
    """The data-hypercleaning ABLO problem of Section 5.2 (see the module docstring for the formulas).

    Args:
      X_train: (n, d) training inputs (MNIST: d = 784, pixels in [0, 1]).
      y_train: (n,) training labels as the learner sees them (i.e. after `data.corrupt_labels`).
      X_val, y_val: (m, d), (m,) clean validation set; L_out is its mean cross-entropy.
      hidden: width of the hidden ReLU layer, >= 1 (the paper does not give it; 100 by default).
      r: inner GD steps, >= 1 (paper: 100).
      alpha: constant inner step size, > 0 (paper: 1; stable thanks to the 1/n normalisation).
      seed: numpy seed of phi_0 (stored in the task, so V(theta, T) = phi_0 is fixed), >= 0.
      n_classes: C, the number of outputs, >= 2 (labels must lie in 0..C-1).
      dtype: float dtype of every array (default float32, a workload; None means JAX's default float,
        float64 under x64). Labels are int32.

    Returns:
      A `Problem` named "hypercleaning": theta0 = zeros(n); ``tasks`` is a `HypercleaningTask` whose leaves
      have a leading axis of 1 (|Omega_T| = 1), and ``sample_task`` always returns that task. Memory: the
      data (n + m) d floats plus phi_0, held once.

    Raises:
      ValueError: naming the bad value (X and y lengths differ, feature counts differ, labels out of range,
        hidden < 1, r < 1, alpha <= 0, seed < 0, n_classes < 2, non-float dtype).
    """
    dt = resolve_dtype(dtype)
    n_classes = check_int("n_classes", n_classes, 2)
    X_train, y_train = _check_xy("X_train", X_train, "y_train", y_train, n_classes)
    X_val, y_val = _check_xy("X_val", X_val, "y_val", y_val, n_classes)
    if X_val.shape[1] != X_train.shape[1]:
        raise UserError(
            f"X_val has {X_val.shape[1]} features but X_train has {X_train.shape[1]}: X_val.shape = {X_val.shape}"
        )
    hidden = check_int("hidden", hidden, 1)
    r = check_int("r", r, 1)
    alpha = check_positive("alpha", alpha)
    seed = check_int("seed", seed, 0)

    phi0 = mlp_init(seed, X_train.shape[1], hidden, n_classes, dt)
    task = HypercleaningTask(
        X_train=jnp.asarray(X_train, dt),
        y_train=jnp.asarray(y_train, jnp.int32),
        X_val=jnp.asarray(X_val, dt),
        y_val=jnp.asarray(y_val, jnp.int32),
        phi0=phi0,
    )
    tasks = jax.tree_util.tree_map(lambda x: x[None], task)
    probs = jnp.ones((1,), dt)
    return Problem(
        inner_loss=_inner_loss,
        outer_loss=_outer_loss,
        init_inner=_init_inner,
        sample_task=FROM_TASKS,
        step_sizes=jnp.full((r,), alpha, dt),
        theta0=jnp.zeros((X_train.shape[0],), dt),
        tasks=tasks,
        task_probs=probs,
        name="hypercleaning",
    )


def hypercleaning_metrics(problem: Problem, theta: jax.Array, X_test, y_test, corrupted: jax.Array,
                          phi=None) -> HypercleaningMetrics:
    """Table 1's scores at theta: test accuracy and cross-entropy, accuracy on the clean part of the training
    set, and the F1 of flagging corrupted examples. Pure JAX (jittable; ``problem`` is a pytree).

    The classifier is phi_r = U^(r)(theta, T) (r inner GD steps from phi_0), or ``phi`` when given (e.g. a
    classifier retrained on the weights). Accuracy on the clean part of the training set (the paper's
    "TRAIN" row) is measured on the examples with ``corrupted`` False, whose labels as stored in the task are
    the true ones. An example is flagged as corrupted when its weight sigma(theta_i) < 1/2, i.e. theta_i < 0:
    the weight the outer problem gave it is below where it started (sigma(theta0) = 1/2). At theta0 nothing
    is flagged, so precision, recall and F1 are 0 (F1 = 2 TP / (#flagged + #corrupted), 0 when both are 0;
    precision 0 when nothing is flagged).

    Args:
      problem: a problem built by `hypercleaning`.
      theta: (n,) outer parameters.
      X_test, y_test: (k, d), (k,) held-out test set.
      corrupted: (n,) bool mask from `data.corrupt_labels`.
      phi: optional classifier parameters to score instead of phi_r.

    Returns:
      `HypercleaningMetrics` (accuracies in [0, 1], losses are mean cross-entropies).
    """
    task = task_at(problem, 0)
    if phi is None:
        phi = inner_path(problem, theta, task)
    X_test = jnp.asarray(X_test, task.X_val.dtype)
    y_test = jnp.asarray(y_test, jnp.int32)

    def acc_loss(X, y):
        logits = mlp_apply(phi, X)
        return jnp.mean(jnp.argmax(logits, -1) == y), jnp.mean(cross_entropy(logits, y))

    val_acc, val_loss = acc_loss(task.X_val, task.y_val)
    test_acc, test_loss = acc_loss(X_test, y_test)
    clean = ~jnp.asarray(corrupted, bool)
    right = jnp.argmax(mlp_apply(phi, task.X_train), -1) == task.y_train
    n_clean = jnp.sum(clean)
    train_clean = jnp.sum(right & clean) / jnp.maximum(n_clean, 1)
    flagged = theta < 0  # sigma(theta) < 1/2
    corrupt = ~clean
    tp = jnp.sum(flagged & corrupt)
    n_flag, n_corrupt = jnp.sum(flagged), jnp.sum(corrupt)
    f = lambda num, den: jnp.where(den > 0, num / jnp.maximum(den, 1), 0.0).astype(task.X_val.dtype)
    return HypercleaningMetrics(
        val_loss=val_loss,
        val_accuracy=val_acc,
        test_loss=test_loss,
        test_accuracy=test_acc,
        train_clean_accuracy=train_clean,
        f1=f(2 * tp, n_flag + n_corrupt),
        precision=f(tp, n_flag),
        recall=f(tp, n_corrupt),
        n_flagged=n_flag,
    )
