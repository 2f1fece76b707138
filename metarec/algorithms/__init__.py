"""Meta-learning algorithms as pure functions over parameter dicts (``torch.func``).

The outer loop calls :func:`meta_loss_and_grads` once per meta-batch and :func:`adapt_batch`
plus :func:`predict_batch` to evaluate; :class:`AlgorithmConfig` picks the algorithm
(``maml``, ``fomaml``, ``reptile``, ``metasgd``, ``anil``, ``global``, ``finetune``) and
:func:`init_algorithm_state` creates its learnable state (Meta-SGD / MAML++ rates).
"""

from metarec.algorithms.inner import adapt, adapt_trajectory, set_loss
from metarec.algorithms.losses import (
    LOSSES,
    masked_bce,
    masked_bpr,
    masked_mse,
    masked_softmax,
)
from metarec.algorithms.meta import (
    adapt_batch,
    adapt_patterns,
    meta_loss_and_grads,
    predict_batch,
    task_weights,
)
from metarec.algorithms.state import init_algorithm_state, msl_weights
from metarec.config.algorithm import ALGORITHMS, AlgorithmConfig

__all__ = [
    "ALGORITHMS",
    "AlgorithmConfig",
    "init_algorithm_state",
    "msl_weights",
    "adapt",
    "adapt_trajectory",
    "set_loss",
    "LOSSES",
    "masked_mse",
    "masked_bce",
    "masked_bpr",
    "masked_softmax",
    "adapt_batch",
    "adapt_patterns",
    "meta_loss_and_grads",
    "predict_batch",
    "task_weights",
]
