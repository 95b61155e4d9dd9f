"""Theorems 1 and 2 on the counterexample: FOM-SGD stalls at |dM/dtheta| = sqrt(2D), UFOM-SGD does not."""

import math

import numpy as np

from ufom_bench.demo import counterexample_runs
import pytest

pytestmark = pytest.mark.usefixtures("x64")  # exactness checks in float64


def test_fom_stalls_and_ufom_converges():
    """Thresholds from the theory, not from a run.

    Theorem 2: for FOM, liminf E|dM/dtheta|^2 > D (here the fixed point has |dM/dtheta|^2 = 2D).
    Theorem 1: for UFOM, liminf E|dM/dtheta|^2 = 0, so it must end below FOM's floor D.
    Each mean is compared with its threshold at z = 4 (standard error over independent runs).
    """
    D = 0.06
    _, finals = counterexample_runs(D=D, steps=4000, runs=64, q=0.1, seed=1)
    fom, ufom = finals["fom"], finals["ufom(q=0.1)"]
    se = lambda x: x.std(ddof=1) / math.sqrt(x.size)
    assert (fom.mean() - D) / se(fom) > 4
    np.testing.assert_allclose(np.median(fom), 2 * D, rtol=0.1)  # they all sit at FOM's fixed point
    assert (D - ufom.mean()) / se(ufom) > 4
    assert ufom.mean() < fom.mean() / 10  # far lower
