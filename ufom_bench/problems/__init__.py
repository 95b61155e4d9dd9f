"""Problem factories: the synthetic ones (Theorem 2 counterexample, piecewise tasks, quadratic) and their
closed forms, and the real-data ones: hypercleaning (Section 5.2) and few-shot meta-learning (Section 5.3:
``fewshot`` on image task samplers, ``sinusoid`` regression)."""

from ufom_bench.problems.fewshot import (
    INNERS,
    NORMS,
    accuracy,
    conv4_apply,
    conv4_init,
    cross_entropy,
    fewshot,
    mlp_apply,
    mlp_init,
    sinusoid,
)
from ufom_bench.problems.hypercleaning import (
    HypercleaningMetrics,
    HypercleaningTask,
    hypercleaning,
    hypercleaning_metrics,
)
from ufom_bench.problems.piecewise import (
    CounterexampleParams,
    CounterexamplePoints,
    PiecewiseTask,
    counterexample,
    counterexample_parameters,
    counterexample_points,
    piecewise_bias_variance,
    piecewise_exact_gradient,
    piecewise_fo_gradient,
    piecewise_grad,
    piecewise_hess,
    piecewise_loss,
    piecewise_tasks,
)
from ufom_bench.problems.quadratic import (
    QuadraticForm,
    QuadraticTask,
    quadratic,
    quadratic_bias_variance,
    quadratic_exact_gradient,
    quadratic_fo_gradient,
    quadratic_inner_path,
    quadratic_meta_form,
    quadratic_meta_gradient,
    quadratic_meta_objective,
    quadratic_response,
    quadratic_stationary_point,
)
from ufom_bench.problems.regression import mlp_regression
from ufom_bench.problems.synthetic import BiasVariance

__all__ = [
    # few-shot (Section 5.3, MAML as ABLO)
    "fewshot",
    "sinusoid",
    "conv4_init",
    "conv4_apply",
    "mlp_init",
    "mlp_apply",
    "cross_entropy",
    "accuracy",
    "NORMS",
    "INNERS",
    # MAML-style MLP regression (the benchmarks' and the frontier's neural-network problem)
    "mlp_regression",
    "HypercleaningTask",
    "HypercleaningMetrics",
    "hypercleaning",
    "hypercleaning_metrics",
    "BiasVariance",
    # piecewise / counterexample (Section 5.1, Theorem 2)
    "PiecewiseTask",
    "piecewise_loss",
    "piecewise_grad",
    "piecewise_hess",
    "piecewise_tasks",
    "piecewise_fo_gradient",
    "piecewise_exact_gradient",
    "piecewise_bias_variance",
    "CounterexampleParams",
    "counterexample_parameters",
    "counterexample",
    "CounterexamplePoints",
    "counterexample_points",
    # quadratic
    "QuadraticTask",
    "QuadraticForm",
    "quadratic",
    "quadratic_inner_path",
    "quadratic_exact_gradient",
    "quadratic_fo_gradient",
    "quadratic_response",
    "quadratic_meta_objective",
    "quadratic_meta_gradient",
    "quadratic_bias_variance",
    "quadratic_meta_form",
    "quadratic_stationary_point",
]
