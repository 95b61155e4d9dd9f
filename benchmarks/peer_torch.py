"""ufom-bench's few-shot meta-step against a straightforward PyTorch MAML loop, side by side in one process.

The workload is `benchmarks.fewshot`'s (conv4 with 64 filters and transductive batch norm, 5-way 1-shot, one
query example per class, meta-batch B = 5, r = 10, alpha = 0.4, float32). The peer is what a researcher writes
by hand (`torch_meta_grad`): a Python loop over the B tasks, r inner SGD steps with ``torch.autograd.grad``
(``create_graph=True`` for the exact second-order meta-gradient, without it for FOM), then the query loss's
gradient with respect to theta, averaged over the tasks. Its network is conv4 as `problems.fewshot` computes
it: 3x3 stride-2 convolutions with SAME padding (TensorFlow's: the odd pixel padded after), no bias, batch
norm with the batch's own statistics and a learned scale and offset, ReLU, a dense head on the features
flattened in (height, width, channel) order; the weights are copied from the JAX parameters and the tasks are
the ones the JAX meta-step draws from its key, so both compute the same meta-gradient (checked, and printed).

torch is not a dependency of ufom-bench: this module imports without it (torch is imported by `load`), asv skips `PeerTorch` with the reason
(`skip_reason`) and ``python -m benchmarks.peer_torch`` prints one line. With torch on the path
(``PYTHONPATH=$PWD:/path/to/torch``) the command prints the table: seconds per meta-step of each side,
minimum of ``REPEATS`` interleaved calls, torch on as many threads as the CPUs JAX runs on (and on one).
"""

from __future__ import annotations

import functools
import importlib.util
import os

from . import _common as C
from . import fewshot as F

# Imported by `load` when needed (not at module import: asv imports every module to discover it).
torch = None
HAVE_TORCH = importlib.util.find_spec("torch") is not None

ESTIMATES = ("exact", "fom")
REPEATS = 2 if C.TINY else 7
NO_TORCH = "torch is not installed; the PyTorch peer runs only where it is (it is not a dependency of ufom-bench)"


def skip_reason(class_name: str, params: dict) -> str | None:
    """NO_TORCH where torch is not installed, else None."""
    del class_name, params
    return None if HAVE_TORCH else NO_TORCH


def load() -> bool:
    """Import torch into this module's ``torch``; False where it is not installed."""
    global torch
    if HAVE_TORCH and torch is None:
        import torch as module

        torch = module
    return torch is not None


def threads() -> int:
    """The CPUs this process may run on (what XLA's CPU backend uses), for ``torch.set_num_threads``."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def to_torch(params: dict, dtype=None) -> list:
    """conv4's JAX parameters as a flat list of torch leaf tensors: per block the weight (HWIO -> OIHW), scale
    and offset, then the head's weight (features, m) and bias; ``requires_grad`` set."""
    import numpy as np

    n_blocks = len(params) - 1
    out = []
    for i in range(n_blocks):
        block = params[f"block{i}"]
        out += [np.asarray(block["w"]).transpose(3, 2, 0, 1), np.asarray(block["scale"]), np.asarray(block["offset"])]
    out += [np.asarray(params["head"]["w"]), np.asarray(params["head"]["b"])]
    return [torch.tensor(np.ascontiguousarray(a), dtype=dtype).requires_grad_() for a in out]


def from_torch(grads: list, like: dict) -> dict:
    """A flat list of torch tensors in `to_torch`'s order back as a pytree of numpy arrays shaped like ``like``."""
    n_blocks = len(like) - 1
    out, it = {}, iter(g.detach().numpy() for g in grads)
    for i in range(n_blocks):
        out[f"block{i}"] = {"w": next(it).transpose(2, 3, 1, 0), "scale": next(it), "offset": next(it)}
    out["head"] = {"w": next(it), "b": next(it)}
    return out


def _same_pad(size: int) -> tuple[int, int]:
    """SAME padding of a 3x3 stride-2 window (before, after), as XLA and `problems.fewshot.conv_s2_same` pad."""
    total = max(2 * (-(-size // 2) - 1) + 3 - size, 0)
    return total // 2, total - total // 2


def conv4(params: list, x):
    """Logits of conv4 (`problems.fewshot.conv4_apply`, norm="batch") on x [n, channels, H, W] in torch."""
    fn = torch.nn.functional
    n_blocks = (len(params) - 2) // 3
    for i in range(n_blocks):
        w, scale, offset = params[3 * i: 3 * i + 3]
        (top, bottom), (left, right) = _same_pad(x.shape[2]), _same_pad(x.shape[3])
        x = fn.conv2d(fn.pad(x, (left, right, top, bottom)), w, stride=2)
        x = fn.relu(fn.batch_norm(x, None, None, scale, offset, training=True, eps=1e-5))
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (h, w, c) order, as the JAX network flattens
    return x @ params[-2] + params[-1]


def torch_meta_grad(params: list, tasks: list, r: int, alpha: float, first_order: bool) -> list:
    """MAML's meta-gradient (1/B) sum_b dL_out/dtheta over ``tasks`` = [(support_x, support_y, query_x,
    query_y)], by r inner SGD steps per task: exact (``create_graph=True``) or first order (FOM)."""
    fn = torch.nn.functional
    total = [torch.zeros_like(p) for p in params]
    for sx, sy, qx, qy in tasks:
        phi = params
        for _ in range(r):
            grads = torch.autograd.grad(fn.cross_entropy(conv4(phi, sx), sy), phi, create_graph=not first_order)
            phi = [p - alpha * g for p, g in zip(phi, grads)]
        grads = torch.autograd.grad(fn.cross_entropy(conv4(phi, qx), qy), params)
        total = [t + g for t, g in zip(total, grads)]
    return [t / len(tasks) for t in total]


def meta_batch_tasks(problem, key, size: int, dtype=None) -> list:
    """The B tasks the JAX meta-step of `estimators.meta_batch` draws from ``key``, as torch tensors (NCHW)."""
    import jax
    import numpy as np

    k_tasks, _ = jax.random.split(key)
    tasks = jax.vmap(problem.sample_task)(jax.random.split(k_tasks, size))
    as_x = lambda a: torch.tensor(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)), dtype=dtype)
    as_y = lambda a: torch.tensor(np.asarray(a), dtype=torch.int64)
    return [(as_x(tasks.support_x[b]), as_y(tasks.support_y[b]), as_x(tasks.query_x[b]), as_y(tasks.query_y[b]))
            for b in range(size)]


def relative_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over every leaf of two pytrees of arrays."""
    import jax
    import numpy as np

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in zip(la, lb))
    return (num / sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in la)) ** 0.5


@functools.lru_cache(maxsize=None)
def sides(estimate: str):
    """{"ufom": (fn, args), "torch": (fn, args)} of one meta-step of ``estimate`` on the same tasks from the
    same weights, and the relative difference of their meta-gradients."""
    import jax

    torch.set_num_threads(threads())
    problem = F.build()
    est, compiled, _ = F.compiled_step(estimate)
    state = est.init(problem.theta0)
    key = jax.random.PRNGKey(0)
    params = to_torch(problem.theta0)
    tasks = meta_batch_tasks(problem, key, F.SIZES["meta_batch"])
    alpha = float(problem.step_sizes[0])

    def peer():
        return torch_meta_grad(params, tasks, F.R, alpha, first_order=estimate == "fom")

    grad, _ = jax.block_until_ready(compiled(problem.theta0, key, state))
    diff = relative_difference(grad, from_torch(peer(), problem.theta0))
    return {"ufom": (compiled, (problem.theta0, key, state)), "torch": (peer, ())}, diff


class PeerTorch:
    """Seconds per few-shot meta-step of the PyTorch loop and of ufom-bench (interleaved in setup), their ratio,
    and the relative difference of the two meta-gradients."""

    params = (list(ESTIMATES),)
    param_names = ("estimator",)
    timeout = 900

    def setup(self, estimator):
        if not load():
            raise NotImplementedError(NO_TORCH)
        calls, self.diff = sides(estimator)
        self.t = C.interleaved_min(calls, REPEATS)

    def track_torch_seconds(self, estimator):
        return self.t["torch"]

    track_torch_seconds.unit = "seconds"

    def track_ufom_seconds(self, estimator):
        return self.t["ufom"]

    track_ufom_seconds.unit = "seconds"

    def track_torch_over_ufom(self, estimator):
        return self.t["torch"] / self.t["ufom"]

    track_torch_over_ufom.unit = "ratio"

    def track_relative_difference(self, estimator):
        return self.diff

    track_relative_difference.unit = "ratio"


def with_threads(fn, n: int):
    """``fn`` run with torch on ``n`` threads (set at each call, so that differently threaded calls interleave)."""

    def call():
        torch.set_num_threads(n)
        return fn()

    return call


def main() -> None:
    """The table: each estimate's meta-step by torch on `threads` threads, and on 1 thread (what a loaded
    machine leaves OpenMP), and by ufom-bench, all interleaved."""
    if not load():
        print(NO_TORCH)
        return
    counts = sorted({threads(), 1}, reverse=True)
    calls, diffs = {}, {}
    for what in ESTIMATES:
        both, diffs[what] = sides(what)
        calls[what, "ufom"] = both["ufom"]
        for n in counts:
            calls[what, n] = (with_threads(both["torch"][0], n), ())
    t = C.interleaved_min(calls, REPEATS)
    print(f"conv4 few-shot meta-step: B = {F.SIZES['meta_batch']}, r = {F.R}, {F.SIZES['filters']} filters, float32; "
          f"torch {torch.__version__}; JAX on {threads()} CPUs; minimum of {REPEATS} interleaved calls")
    print("| estimator | torch threads | torch s | ufom-bench s | torch / ufom-bench | relative difference of the "
          "meta-gradients |")
    print("|---|---|---|---|---|---|")
    for what in ESTIMATES:
        for n in counts:
            a, b = t[what, n], t[what, "ufom"]
            print(f"| {what} | {n} | {a:.3f} | {b:.3f} | {a / b:.2f}x | {diffs[what]:.1e} |")


if __name__ == "__main__":
    main()
