"""benchmarks/peer_torch.py: it imports and skips with its reason where torch is not installed; where torch is,
its hand-written PyTorch MAML loop computes ufom-bench's meta-gradient (exact and FOM) on a tiny conv4."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufom_bench import estimators
from ufom_bench.data.fewshot import TaskSampler
from ufom_bench.problems.fewshot import fewshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def peer(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import peer_torch

    return peer_torch


def test_imports_and_skips_with_its_reason_without_torch(peer, monkeypatch, capsys):
    """With torch absent: the skip rule gives NO_TORCH, asv's setup raises NotImplementedError with it (asv's
    skip), and the command prints that one line."""
    monkeypatch.setattr(peer, "HAVE_TORCH", False)
    monkeypatch.setattr(peer, "torch", None)
    assert peer.skip_reason("PeerTorch", {"estimator": "exact"}) == peer.NO_TORCH
    assert peer.NO_TORCH.startswith("torch is not installed")
    with pytest.raises(NotImplementedError, match="torch is not installed"):
        peer.PeerTorch().setup("exact")
    peer.main()
    assert capsys.readouterr().out.strip() == peer.NO_TORCH


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", ["exact", "fom"])
def test_torch_loop_computes_the_same_meta_gradient(peer, name):
    """float64, conv4 with 3 filters on 9x9 images (odd: SAME pads unevenly), 2-way 1-shot, B = 2, r = 2: the
    torch loop from the copied weights on the meta-step's own tasks equals `meta_batch`'s meta-gradient to
    relative 1e-10; the other order (FOM's loop against exact, and back) differs by more than 1e-4."""
    torch = pytest.importorskip("torch")
    assert peer.load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: OpenMP's threads only wait on each other on a loaded machine
    try:
        _check_same_meta_gradient(peer, torch, name)
    finally:
        torch.set_num_threads(threads)


def _check_same_meta_gradient(peer, torch, name):
    sampler = TaskSampler.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 3, 9, 9), dtype=np.uint8))
    problem = fewshot(sampler, m=2, k=1, k_query=1, r=2, alpha=0.4, filters=3, dtype=jnp.float64)
    key = jax.random.PRNGKey(3)
    est = estimators.meta_batch(estimators.get(name), 2)
    grad, _, _ = jax.jit(est.estimate)(problem, problem.theta0, None, key, ())
    params = peer.to_torch(problem.theta0)
    tasks = peer.meta_batch_tasks(problem, key, 2, dtype=torch.float64)
    for first_order in (False, True):
        got = peer.from_torch(peer.torch_meta_grad(params, tasks, 2, 0.4, first_order), problem.theta0)
        diff = peer.relative_difference(grad, got)
        if first_order == (name == "fom"):
            assert diff < 1e-10, (name, diff)
        else:
            assert diff > 1e-4, (name, first_order, diff)
