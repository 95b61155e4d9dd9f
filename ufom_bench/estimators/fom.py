"""FOM, the first-order method (Algorithm 3; eqs. 10-11): O(1) memory, r + 1 grad calls, biased."""

from __future__ import annotations

from ufom_bench.estimators import core
from ufom_bench.estimators.core import Estimator


def fom() -> Estimator:
    """G_FO(theta, T) = dL_out/dtheta + (dV/dtheta)^T dL_out/dphi at phi_r (eqs. 10-11).

    Drops the second-order terms D_j and the Jacobian chain (eqs. 7-9). Cost: r + 1 grad calls, 0 HVPs.
    """

    def estimate(problem, theta, task, key, state):
        del key
        g, _, _, calls, check = core.first_order(problem, theta, task)
        return g, core.info(g, calls, 0, False, 0.0, check), state

    return Estimator(core.no_state, estimate, "fom")
